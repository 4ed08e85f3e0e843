"""Calibration methods on known distributions, the cost model, the mixed-precision search."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from compiler.ir import Graph
from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, PassOptionError, parse_pass
from passes.quantization.calibration import (CalibrationError, TensorStats, calibrate_range,
                                             collect_stats, kl_threshold)
from passes.quantization.cost import cost_table, theoretical_speedup
from passes.quantization.quantize import act_qparams, quantize_weight

from tests.conftest import model_path


def _stats(values: np.ndarray) -> TensorStats:
    st = TensorStats()
    st.update(values, np.random.default_rng(0))
    return st


def test_minmax_and_percentile_of_a_known_normal():
    x = np.random.default_rng(1).standard_normal(200_000).astype(np.float32)
    st = _stats(x)
    lo, hi = calibrate_range(st, "minmax")
    assert lo == x.min() and hi == x.max()
    # 99th percentile of |N(0,1)| is 2.5758; of N(0,1) 2.3263
    lo, hi = calibrate_range(st, "percentile", symmetric=True, percentile=99.0)
    assert abs(hi - 2.5758) < 0.05 and abs(lo + 2.5758) < 0.05
    lo, hi = calibrate_range(st, "percentile", symmetric=False, percentile=99.0)
    assert abs(hi - 2.3263) < 0.05 and abs(lo + 2.3263) < 0.05


def test_entropy_clips_outliers_but_keeps_the_bulk():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(100_000), [60.0, -55.0]]).astype(np.float32)
    lo, hi = calibrate_range(_stats(x), "entropy", bits=8)
    assert 2.5 < hi < 20 and -20 < lo < -2.5  # far inside the outliers, beyond the bulk
    # a uniform distribution has nothing to clip
    u = rng.uniform(-1, 1, 100_000)
    assert kl_threshold(np.abs(u), 128) > 0.9


def test_entropy_on_relu_and_image_like_distributions():
    rng = np.random.default_rng(6)
    # ReLU output: 60 % exact zeros, the rest half-normal; the zero spike must not pull the
    # threshold down to the first candidate bins
    relu = np.concatenate([np.zeros(120_000), np.abs(rng.standard_normal(80_000))])
    relu = np.concatenate([relu, [12.0]]).astype(np.float32)
    for bits in (8, 5):
        lo, hi = calibrate_range(_stats(relu), "entropy", bits=bits)
        assert lo == 0.0 and 1.5 < hi < 12.0, (bits, hi)
    # a normalized image: 80 % background at -0.42, strokes spread over (0, 2.8]; one
    # side's spike must not clip the other side
    img = np.concatenate([np.full(160_000, -0.4242), rng.uniform(0.0, 2.82, 40_000)])
    lo, hi = calibrate_range(_stats(img.astype(np.float32)), "entropy", bits=5)
    assert hi > 2.5 and abs(lo + 0.4242) < 0.01


def test_mse_clipping_of_a_known_normal():
    """Least-MSE clipping of N(0, 1): about 2.5 sigma at 4 bits, wider at 8 bits (the known
    optimum for a uniform quantizer, Banner et al. 2019: 2.55 sigma at 4 bits)."""
    x = np.random.default_rng(7).standard_normal(200_000).astype(np.float32)
    st = _stats(x)
    lo4, hi4 = calibrate_range(st, "mse", bits=4, symmetric=True)
    assert 2.1 < hi4 < 3.0 and abs(lo4 + hi4) < 0.05  # a * [min, max]
    lo8, hi8 = calibrate_range(st, "mse", bits=8, symmetric=True)
    assert hi8 > hi4 + 0.5
    # and its error really is smaller than min-max's at 4 bits
    from passes.quantization.quantize import act_qparams

    def mse(lo, hi):
        ap = act_qparams(lo, hi, 4, True)
        q = np.clip(np.rint(x / ap.scale), ap.qmin, ap.qmax)
        return float(np.mean((q * ap.scale - x) ** 2))

    assert mse(lo4, hi4) < 0.5 * mse(float(x.min()), float(x.max()))


def test_per_channel_statistics_and_scaling():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 3, 40, 40)).astype(np.float32) * np.array([1.0, 0.1, 3.0],
                                                                           np.float32)[:, None, None]
    st = TensorStats()
    for part in np.split(x, 3):
        st.update(part, rng)
    np.testing.assert_allclose(st.ch_hi, x.max(axis=(0, 2, 3)))
    np.testing.assert_allclose(st.ch_lo, x.min(axis=(0, 2, 3)))
    gain = np.array([1.0, 10.0, 1 / 3])
    sc = st.scaled(gain)
    np.testing.assert_allclose(sc.ch_hi, x.max(axis=(0, 2, 3)) * gain, rtol=1e-6)
    assert abs(sc.hi - float((x.max(axis=(0, 2, 3)) * gain).max())) < 1e-5
    # the sampled values were scaled by their own channel's gain: every channel now has
    # about unit spread, so the sample's spread is ~1 (it was ~1.8 before)
    assert 0.9 < float(np.std(sc.values())) < 1.1 and float(np.std(st.values())) > 1.5


def test_act_qparams_symmetric_asymmetric_and_one_bit():
    ap = act_qparams(0.0, 6.0, 8, symmetric=False)
    assert (ap.qmin, ap.qmax, ap.zero_point) == (-128, 127, -128)
    assert abs(ap.scale - 6 / 255) < 1e-12
    ap = act_qparams(-1.0, 3.0, 4, symmetric=True)
    assert (ap.qmin, ap.qmax, ap.zero_point) == (-7, 7, 0) and abs(ap.scale - 3 / 7) < 1e-12
    ap = act_qparams(0.0, 1.0, 1, symmetric=True)  # 1-bit: {0, s}, always asymmetric
    assert (ap.qmin, ap.qmax, ap.zero_point) == (-1, 0, -1)


def test_weight_quantization_binary_and_per_channel():
    w = np.random.default_rng(3).standard_normal((4, 3, 3, 3))
    q, s = quantize_weight(w, 1)
    assert set(np.unique(q)) == {-1, 1}
    np.testing.assert_allclose(s, np.abs(w).reshape(4, -1).mean(axis=1))
    q, s = quantize_weight(w, 8)
    assert np.abs(q).max() == 127
    err = np.abs(q * s[:, None, None, None] - w).max(axis=(1, 2, 3))
    assert np.all(err <= s / 2 + 1e-12)
    q, s = quantize_weight(w, 8, per_channel=False)
    assert np.all(s == s[0])


def test_collect_stats_batches_and_errors():
    graph = import_model(model_path("resnet_tiny"))
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    stats = collect_stats(graph, [{"input": x}, {"input": x[:1]}])
    assert stats["input"].count == 6 * 3 * 32 * 32
    with pytest.raises(CalibrationError, match="calibration_data"):
        collect_stats(graph, None)
    with pytest.raises(CalibrationError, match="not a dict"):
        collect_stats(graph, [x])
    with pytest.raises(CalibrationError, match="disagree|expects"):
        collect_stats(graph, [{"input": x[..., :16]}])


def test_cost_model_matches_the_bit_formula():
    graph = import_model(model_path("resnet_tiny"))
    table = cost_table(graph)
    assert all(c.w_bits == 32 and c.a_bits == 32 for c in table)
    assert theoretical_speedup(table) == 1.0
    uniform = {c.name: (8, 8) for c in table}
    assert theoretical_speedup(graph, uniform) == pytest.approx(16.0)
    first = table[0].name
    mixed = {c.name: (1, 2) for c in table}
    mixed[first] = (8, 8)
    macs = np.array([c.macs for c in table], float)
    bits = np.array([64.0] + [2.0] * (len(table) - 1))
    assert theoretical_speedup(graph, mixed) == pytest.approx(macs.sum() * 1024 / (macs * bits).sum())


def test_mixed_precision_search_respects_the_budget():
    graph = import_model(model_path("resnet_tiny"))
    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((4, 3, 32, 32)).astype(np.float32)}]
    xs = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    from compiler.batching import with_batch_size
    from compiler.interpreter import Interpreter

    ref = Interpreter(with_batch_size(graph, 8)).run({"input": xs})[0]

    def agreement(g: Graph) -> float:  # a stand-in "accuracy": cosine similarity to float
        out = Interpreter(with_batch_size(g, 8)).run({"input": xs})[0]
        return float(np.sum(out * ref) / np.linalg.norm(out) / np.linalg.norm(ref))

    ctx = PassContext(calibration_data=calib, evaluate=agreement)
    result = parse_pass("mixed-precision{candidates=[8,2],budget=0.02}")(graph, ctx)
    st = result.stats
    assert st["score"] >= st["base_score"] - 0.02
    assert st["bits_per_layer"]["/stem/stem.0/Conv"] == 8
    assert any(b < 8 for b in st["bits_per_layer"].values())
    assert st["theoretical_speedup"] > 16
    with pytest.raises(CalibrationError, match="evaluate"):
        parse_pass("mixed-precision")(graph, PassContext(calibration_data=calib))
    with pytest.raises(PassOptionError):
        parse_pass("mixed-precision{candidates=[8,0]}")

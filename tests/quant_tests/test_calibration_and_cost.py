"""Calibration methods on known distributions, the cost model, the mixed-precision search."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from compiler.ir import Graph
from compiler.onnx_io import import_model
from compiler.passes import PassContext, PassOptionError, parse_pass
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

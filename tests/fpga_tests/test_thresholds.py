"""Threshold requantization (FINN hardware) equals multiplier/shift requantization.

Proved exhaustively: for every integer accumulator a layer can produce (the range
implied by its weights, input range and bias), the threshold count gives the same
int8 as `compiler.ops.quant.requantize_ref`, the interpreter's own reference.
"""
import warnings

import numpy as np
import pytest

import compiler
from compiler import PassContext
from compiler.ops.quant import qrange, quantize_multiplier, requantize_ref
from targets.fpga_sim.options import FpgaSimError
from targets.fpga_sim.thresholds import (apply_thresholds, derive_thresholds,
                                         requantize_thresholds)
from conftest import ROOT


def _acc_range(w: np.ndarray, xlo: int, xhi: int, bias: np.ndarray) -> tuple[int, int]:
    """Exact extremes of sum_j w_j x_j + b over x_j in [xlo, xhi], over all channels."""
    w = w.reshape(w.shape[0], -1).astype(np.int64)
    hi = np.where(w > 0, w * xhi, w * xlo).sum(1) + bias
    lo = np.where(w > 0, w * xlo, w * xhi).sum(1) + bias
    return int(lo.min()), int(hi.max())


def _check_exhaustive(mult, shift, zp, qmin, qmax, lo, hi, channels):
    acc = np.arange(lo, hi + 1, dtype=np.int64)
    acc2 = np.broadcast_to(acc[:, None], (acc.size, channels)).copy()
    t = derive_thresholds(mult, shift, zp, qmin, qmax, channels=channels)
    assert t.steps == qmax - qmin
    assert np.all(np.diff(t.values, axis=1) >= 0)  # ascending per channel
    want = requantize_ref(acc2, mult, shift, axis=1, zero_point=zp, qmin=qmin, qmax=qmax)
    got = apply_thresholds(acc2, t, axis=1)
    np.testing.assert_array_equal(got, want)
    return want


@pytest.mark.parametrize("act_bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("w_bits", [1, 2, 4, 8])
def test_thresholds_equal_requantize_over_the_whole_accumulator_range(act_bits, w_bits):
    rng = np.random.default_rng(act_bits * 10 + w_bits)
    channels, mw = 6, 18  # a 3x3 conv with 2 input channels
    wlo, whi = qrange(w_bits, symmetric=True)
    if w_bits == 1:  # binary weights: +-1
        w = rng.choice([-1, 1], size=(channels, mw))
    else:
        w = rng.integers(wlo, whi + 1, size=(channels, mw))
    xlo, xhi = qrange(act_bits, symmetric=False)
    x_zp = xlo  # unsigned input: x - zp in [0, 2**B - 1]
    bias = rng.integers(-50, 50, size=channels)
    lo, hi = _acc_range(w, 0, xhi - x_zp, bias)
    # per-channel factors spanning small and large rescales
    real = rng.uniform(0.5, 2.0, size=channels) * (2.0 ** (act_bits - 1)) / max(1, hi - lo)
    mult, shift = quantize_multiplier(real)
    y = _check_exhaustive(mult, shift, xlo, xlo, xhi, lo, hi, channels)
    assert len(np.unique(y)) > 1  # the range really exercised several output levels
    for zp, qmin in ((0, xlo), (xlo, min(xlo + 1, xhi))):  # offset zero point, ReLU-like clip
        _check_exhaustive(mult, shift, zp, qmin, xhi, lo, hi, channels)


def test_fused_relu6_and_per_channel_shifts():
    zp, qmin, qmax = -128, -128, -128 + round(6 / 0.03)  # ReLU6 at scale 0.03
    mult, shift = quantize_multiplier(np.array([1e-3, 3e-2, 0.7, 5e-9, 0.0]))
    assert mult[-1] == 0  # M == 0: constant output
    _check_exhaustive(mult, shift, zp, qmin, qmax, -20000, 20000, 5)


def test_bias_folded_into_thresholds_equals_adding_the_bias():
    mult, shift = quantize_multiplier(np.array([0.01, 0.02, 0.05]))
    bias = np.array([-300, 7, 1000])
    acc = np.arange(-5000, 5001, dtype=np.int64)[:, None].repeat(3, 1)
    t = derive_thresholds(mult, shift, 3, -8, 7, channels=3, bias=bias)
    want = requantize_ref(acc + bias, mult, shift, 1, 3, -8, 7)
    np.testing.assert_array_equal(apply_thresholds(acc, t, axis=1), want)


def test_thresholds_of_a_quantized_baseline_layer_match_exhaustively():
    """Thresholds read from a real quantized graph (lenet5 at 4-bit activations, 2-bit
    weights) reproduce its Requantize over every accumulator the layer can produce."""
    graph = compiler.import_model(ROOT / "baselines" / "lenet5_mnist.onnx")
    rng = np.random.default_rng(0)
    calib = [{graph.inputs[0].name: rng.random((4, 1, 28, 28), dtype=np.float32)}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, q, _ = compiler.optimize(graph, ["cleanup", "fold-bn", "quantize{bits=2,act_bits=4}"],
                                    ctx=PassContext(calibration_data=calib))
    checked = 0
    for node in q.topo_order():
        if node.op_type != "Requantize":
            continue
        prod = node.inputs[0].producer
        w, b = prod.inputs[1].const, prod.inputs[2].const
        zp = int(prod.attrs.get("x_zero_point", prod.attrs.get("a_zero_point", 0)))
        xq = prod.inputs[0].quant
        bits = xq.bits if xq is not None and getattr(xq, "bits", None) else 8
        xlo, xhi = qrange(bits, symmetric=False)
        lo, hi = _acc_range(w, xlo - zp, xhi - zp, b.astype(np.int64))
        mult, shift = (v.const for v in node.inputs[1:3])
        a = dict(node.attrs)
        _check_exhaustive(mult, shift, int(a["zero_point"]), int(a["qmin"]), int(a["qmax"]),
                          lo, hi, w.shape[0])
        t = requantize_thresholds(q, node)
        assert t.channels == w.shape[0] and t.steps == int(a["qmax"]) - int(a["qmin"])
        checked += 1
    assert checked == 5


def test_negative_multiplier_is_refused_with_the_channel():
    with pytest.raises(FpgaSimError, match="channel 1 has a negative multiplier"):
        derive_thresholds(np.array([5, -5]), np.array([3, 3]), 0, -8, 7, channels=2)

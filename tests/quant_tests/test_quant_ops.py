"""Every integer op: numpy kernel vs TVM bit-exact; the ONNX integer ops vs onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from compiler.ir import Graph
from compiler.ops.quant import quantize_multiplier, rescale, shared_multipliers

from .helpers import QUANT_TESTED_OPS, assert_bit_exact, run_interp, typed  # noqa: F401

rng = np.random.default_rng(0)


def _i8(*shape, lo=-128, hi=128):
    return rng.integers(lo, hi, shape).astype(np.int8)


@pytest.mark.parametrize("x_zp,pads,group", [(0, [1, 1, 1, 1], 1), (-5, [1, 0, 2, 1], 1),
                                             (7, [1, 1, 1, 1], 4)])
def test_conv_requantize_pools_add_concat_bit_exact(x_zp, pads, group):
    g = Graph()
    x = g.add_input("x", (2, 4, 9, 9), np.int8)
    w = g.add_constant("w", _i8(8, 4 // group, 3, 3, lo=-7, hi=8))
    b = g.add_constant("b", rng.integers(-1000, 1000, (8,)).astype(np.int32))
    acc = g.add_node("Conv", [x, w, b], dict(kernel_shape=[3, 3], strides=[2, 1], pads=pads,
                                             dilations=[1, 1], group=group, x_zero_point=x_zp),
                     domain="q").output
    m = g.add_constant("m", rng.integers(2 ** 30, 2 ** 31 - 1, (8,)).astype(np.int32))
    s = g.add_constant("s", rng.integers(33, 36, (8,)).astype(np.int32))
    y = g.add_node("Requantize", [acc, m, s], dict(axis=1, zero_point=3, qmin=-100, qmax=90),
                   domain="q").output
    p = g.add_node("AveragePool", [y], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                            ceil_mode=1, count_include_pad=0, zero_point=3),
                   domain="q").output
    p2 = g.add_node("AveragePool", [y], dict(kernel_shape=[2, 2], strides=[1, 2], pads=[0, 0, 1, 0],
                                             ceil_mode=0, count_include_pad=1, zero_point=3),
                    domain="q").output
    gp = g.add_node("GlobalAveragePool", [y], dict(zero_point=3), domain="q").output
    d = g.add_node("Dequantize", [p], dict(scale=0.05, zero_point=3), domain="q").output
    q2 = g.add_node("Quantize", [d], dict(scale=0.07, zero_point=-2, qmin=-8, qmax=7),
                    domain="q").output
    a = g.add_node("Add", [y, y], dict(a_zero_point=3, b_zero_point=3, a_multiplier=1 << 29,
                                       b_multiplier=3 << 28, shift=30, zero_point=1, qmin=1,
                                       qmax=127), domain="q").output
    mp = g.add_node("MaxPool", [y], dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
                                         dilations=[1, 1], ceil_mode=0, auto_pad="NOTSET",
                                         storage_order=0)).output
    c = g.add_node("Concat", [y, a], dict(axis=1, zero_points=[3, 1],
                                          multipliers=[1 << 30, 3 << 28], shift=30, zero_point=0,
                                          qmin=-128, qmax=127), domain="q").output
    cl = g.add_node("Clip", [y], dict(qmin=3, qmax=50), domain="q").output
    g.outputs += [acc, y, p, p2, gp, q2, a, mp, c, cl]
    typed(g)
    out = assert_bit_exact(g, {"x": _i8(2, 4, 9, 9)})
    assert out[1].min() >= -100 and out[1].max() <= 90 and len(np.unique(out[1])) > 20


@pytest.mark.parametrize("x_zp,pads,opad,group,strides,dilations", [
    (0, [0, 0, 0, 0], [0, 0], 1, [2, 2], [1, 1]),
    (-5, [1, 0, 0, 1], [1, 0], 1, [2, 2], [1, 1]),
    (7, [0, 1, 2, 0], [0, 1], 2, [3, 2], [1, 2]),
])
def test_conv_transpose_bit_exact_and_equal_to_onnxruntime(x_zp, pads, opad, group, strides,
                                                           dilations):
    """q.ConvTranspose = ONNX ConvTranspose of (x - zp) plus the bias, exactly (the float32
    sums of these small integers are exact), in the interpreter and in TVM."""
    from tests.conftest import ort_run

    x = _i8(2, 4, 5, 6)
    w = _i8(4, 6 // group, 3, 2, lo=-7, hi=8)
    bias = rng.integers(-1000, 1000, (6,)).astype(np.int32)
    attrs = dict(kernel_shape=[3, 2], strides=strides, pads=pads, dilations=dilations,
                 group=group, output_padding=opad)
    g = Graph()
    xv = g.add_input("x", x.shape, np.int8)
    acc = g.add_node("ConvTranspose", [xv, g.add_constant("w", w), g.add_constant("b", bias)],
                     dict(attrs, x_zero_point=x_zp), domain="q").output
    m = g.add_constant("m", rng.integers(2 ** 30, 2 ** 31 - 1, (6,)).astype(np.int32))
    s = g.add_constant("s", rng.integers(36, 39, (6,)).astype(np.int32))
    y = g.add_node("Requantize", [acc, m, s], dict(axis=1, zero_point=-3, qmin=-3, qmax=100),
                   domain="q").output
    g.outputs += [acc, y]
    typed(g)
    out = assert_bit_exact(g, {"x": x})
    model, feeds = _onnx_single("ConvTranspose", [
        ("x", (x.astype(np.float32) - x_zp)), ("w", w.astype(np.float32)),
        ("b", bias.astype(np.float32))], {"w", "b"}, attrs)
    expected = ort_run(model, feeds)[0]
    assert np.abs(expected).max() < 2 ** 24  # float32 holds these sums exactly
    np.testing.assert_array_equal(out[0], expected.astype(np.int32))
    assert len(np.unique(out[1])) > 20


@pytest.mark.parametrize("attrs,scales", [
    (dict(mode="linear", coordinate_transformation_mode="half_pixel"), [1, 1, 2, 2]),
    (dict(mode="linear", coordinate_transformation_mode="align_corners"), [1, 1, 1.5, 0.5]),
    (dict(mode="cubic", coordinate_transformation_mode="pytorch_half_pixel",
          cubic_coeff_a=-0.75), [1, 1, 2, 3]),
    (dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
     [1, 1, 2, 2]),
])
def test_resize_bit_exact_and_close_to_onnxruntime(attrs, scales):
    """q.Resize (integer interpolation matrices) vs TVM bit-exact, and vs onnxruntime's float
    Resize of the same integers: within rounding (exact for nearest and for the dyadic
    weights of a 2x linear half_pixel resize, up to the final rounding)."""
    from compiler.ops.quant import resize_matrices
    from tests.conftest import ort_run

    zp = -7
    x = _i8(2, 3, 6, 5)
    mh, mw = resize_matrices(attrs, x.shape, np.array(scales, np.float32))
    assert (mh.sum(axis=1) == 256).all() and (mw.sum(axis=1) == 256).all()
    g = Graph()
    xv = g.add_input("x", x.shape, np.int8)
    y = g.add_node("Resize", [xv, g.add_constant("mh", mh), g.add_constant("mw", mw)],
                   dict(shift=16, zero_point=zp), domain="q").output
    g.outputs.append(y)
    typed(g)
    out = assert_bit_exact(g, {"x": x})[0].astype(np.float64)
    model, feeds = _onnx_single("Resize", [("x", x.astype(np.float32) - zp),
                                           ("roi", np.zeros(0, np.float32)),
                                           ("scales", np.array(scales, np.float32))],
                                {"roi", "scales"}, attrs)
    ref = np.clip(ort_run(model, feeds)[0] + zp, -128, 127)
    assert out.shape == ref.shape
    tol = {"nearest": 0.0, "linear": 0.5 + 255 * 2 ** -9, "cubic": 1.5}[attrs["mode"]]
    assert np.abs(out - ref).max() <= tol + 1e-6
    if attrs["mode"] == "nearest":
        assert set(np.unique(out)) <= set(np.unique(x))


def test_gemm_matmul_dequantize_bit_exact():
    g = Graph()
    a = g.add_input("a", (3, 20), np.int8)
    bt = g.add_constant("bt", _i8(7, 20))
    bias = g.add_constant("bias", rng.integers(-500, 500, (7,)).astype(np.int32))
    y = g.add_node("Gemm", [a, bt, bias], dict(transB=1, a_zero_point=-9), domain="q").output
    y2 = g.add_node("Gemm", [a, g.add_constant("b", _i8(20, 5))], dict(transB=0, a_zero_point=4),
                    domain="q").output
    mm = g.add_node("MatMul", [a, g.add_constant("b3", _i8(20, 6))],
                    dict(a_zero_point=2, b_zero_point=-1), domain="q").output
    m = g.add_constant("m", np.array(1518500250, np.int32))
    s = g.add_constant("s", np.array(40, np.int32))
    r = g.add_node("Requantize", [y, m, s], dict(axis=1, zero_point=0, qmin=-128, qmax=127),
                   domain="q").output
    f = g.add_node("Dequantize", [y2], dict(scale=0.001, zero_point=0), domain="q").output
    g.outputs += [y, y2, mm, r, f]
    typed(g)
    out = assert_bit_exact(g, {"a": _i8(3, 20)})
    assert out[0].dtype == np.int32 and out[3].dtype == np.int8


def test_quantize_rounds_half_to_even_and_clamps():
    g = Graph()
    x = g.add_input("x", (8,), np.float32)
    y = g.add_node("Quantize", [x], dict(scale=0.5, zero_point=1, qmin=-8, qmax=7), domain="q").output
    g.outputs.append(y)
    typed(g)
    xs = np.array([0.25, 0.75, -0.25, -0.75, 100, -100, 1.0, 1.25], np.float32)
    out = assert_bit_exact(g, {"x": xs})[0]
    np.testing.assert_array_equal(out, [1, 3, 1, -1, 7, -8, 3, 3])


def test_fixed_point_multiplier_and_rescale():
    for real in [0.5, 0.123456, 1e-5, 0.999999, 3.7]:
        m, s = quantize_multiplier(real)
        assert 2 ** 30 <= int(m) < 2 ** 31
        assert abs(int(m) * 2.0 ** -int(s) - real) <= real * 2 ** -30
    v = np.arange(-1000, 1000)
    m, s = quantize_multiplier(0.25)
    got = rescale(v, m, s)
    np.testing.assert_array_equal(got, np.floor(v * 0.25 + 0.5).astype(np.int64))
    mults, shift = shared_multipliers([0.3, 1.7])
    assert max(mults) < 2 ** 31 and abs(mults[1] / 2 ** shift - 1.7) < 1e-8
    with pytest.raises(ValueError):
        quantize_multiplier(2.0 ** 31)


def _onnx_single(op, inputs, consts, attrs, n_out=1, out_types=None):
    names = [n for n, _ in inputs]
    node = helper.make_node(op, names, [f"y{i}" for i in range(n_out)], **attrs)
    ins, inits, feeds = [], [], {}
    for name, arr in inputs:
        if name in consts:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            ins.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                     arr.shape))
            feeds[name] = arr
    outs = [helper.make_empty_tensor_value_info(f"y{i}") for i in range(n_out)]
    graph = helper.make_graph([node], "t", ins, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, feeds


@pytest.mark.parametrize("case", ["qlinear", "dqlinear_axis", "dynq", "convint", "matmulint"])
def test_onnx_integer_ops_vs_ort_and_tvm(case):
    from compiler.onnx_io import import_model
    from tests.conftest import ort_run

    x4 = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    if case == "qlinear":
        model, feeds = _onnx_single("QuantizeLinear", [("x", x4 * 3), ("s", np.float32(0.05)),
                                                       ("z", np.int8(-3))], {"s", "z"}, {})
    elif case == "dqlinear_axis":
        model, feeds = _onnx_single("DequantizeLinear", [
            ("x", _i8(1, 3, 4, 4)), ("s", np.array([0.1, 0.2, 0.3], np.float32)),
            ("z", np.array([1, -2, 0], np.int8))], {"s", "z"}, {"axis": 1})
    elif case == "dynq":
        model, feeds = _onnx_single("DynamicQuantizeLinear", [("x", x4)], set(), {}, n_out=3)
    elif case == "convint":
        model, feeds = _onnx_single("ConvInteger", [
            ("x", rng.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8)),
            ("w", rng.integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)),
            ("xz", np.array(128, np.uint8)), ("wz", np.uint8(120))], {"w", "wz"},
            {"pads": [1, 0, 1, 2], "strides": [2, 1]})
    else:
        model, feeds = _onnx_single("MatMulInteger", [
            ("a", rng.integers(0, 256, (5, 9)).astype(np.uint8)),
            ("b", _i8(9, 4)), ("az", np.uint8(100)), ("bz", np.int8(3))], {"b", "az", "bz"}, {})
    expected = ort_run(model, feeds)
    graph = import_model(model)
    ours = run_interp(graph, feeds)
    for e, o in zip(expected, ours):
        np.testing.assert_array_equal(np.asarray(o), np.asarray(e))
    assert_bit_exact(graph, feeds)


@pytest.mark.parametrize("per_channel", [True, False])
def test_requantize_in_channel_groups_is_bit_exact(monkeypatch, per_channel):
    """Above `REQUANT_GROUP_BYTES` of int64 the rescale runs per channel group (sliced,
    rescaled, concatenated as int8): same results, and the groups are really there."""
    from targets.tvm.lowering import lower_graph
    from targets.tvm.lowering import quant as lq

    monkeypatch.setattr(lq, "REQUANT_GROUP_BYTES", 2 * 5 * 6 * 8 * 2)  # ~2 channels/group
    g = Graph()
    acc = g.add_input("acc", (2, 7, 5, 6), np.int32)
    n = 7 if per_channel else 1
    m = g.add_constant("m", rng.integers(2 ** 30, 2 ** 31 - 1, (n,)).astype(np.int32))
    s = g.add_constant("s", rng.integers(33, 36, (n,)).astype(np.int32))
    y = g.add_node("Requantize", [acc, m, s], dict(axis=1, zero_point=-3, qmin=-120, qmax=100),
                   domain="q").output
    g.outputs.append(y)
    typed(g)
    text = lower_graph(g).script()
    assert text.count("R.strided_slice") == 4 and "R.concat" in text
    out = assert_bit_exact(g, {"acc": rng.integers(-1200, 1200, (2, 7, 5, 6))
                               .astype(np.int32)})
    assert len(np.unique(out[0])) > 50

"""TVM lowering: single-op models vs onnxruntime, multi-node graphs, errors, export.

Each single-op case is an ONNX model with one node; onnxruntime gives the reference
outputs.  Ops the importer knows go through `import_model` -> `lower_graph`; ops the
op registry does not (yet) define are built by hand with the Graph API, with the
output types taken from onnxruntime.  Everything is compiled for the host CPU (with
AVX-512 where present, which is how a TVM 0.27 miscompile of ``R.tile`` was found).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from compiler.ir import Graph  # noqa: E402
from compiler.onnx_io import import_model  # noqa: E402
from compiler.ops.registry import UnsupportedOpError, supported_ops  # noqa: E402
from targets.tvm.build import (build, export_library, host_target, load_library,  # noqa: E402
                               profile_local, run, time_local)
from targets.tvm.lowering import (LOWERINGS, LoweringError, lower_graph,  # noqa: E402
                                  lower_graph_with_params)

RNG = np.random.default_rng(0)
_TARGET = host_target()


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def i64(*values):
    return np.array(values, dtype=np.int64)


# -- helpers --------------------------------------------------------------------------

def _single_model(op, inputs, attrs, consts, n_out, ref=None, opset=17):
    node = helper.make_node(op, [n if a is not None else "" for n, a in inputs],
                            [f"y{i}" for i in range(n_out)], **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                  a.shape)
                    for n, a in inputs if a is not None and n not in consts]
    inits = [numpy_helper.from_array(a, n) for n, a in inputs if a is not None and n in consts]
    if ref is None:
        outs = [helper.make_empty_tensor_value_info(f"y{i}") for i in range(n_out)]
    else:
        outs = [helper.make_tensor_value_info(f"y{i}", helper.np_dtype_to_tensor_dtype(r.dtype),
                                              r.shape) for i, r in enumerate(ref)]
    model = helper.make_model(helper.make_graph([node], "t", graph_inputs, outs, inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _ort(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _hand_graph(op, inputs, attrs, consts, ref):
    g = Graph("hand")
    values = []
    for name, array in inputs:
        if array is None:
            values.append(None)
        elif name in consts:
            values.append(g.add_constant(name, array))
        else:
            values.append(g.add_input(name, array.shape, array.dtype))
    node = g.add_node(op, values, dict(attrs), num_outputs=len(ref))
    for value, r in zip(node.outputs, ref):
        value.shape, value.dtype = r.shape, r.dtype
    g.outputs = list(node.outputs)
    return g


def check_op(op, inputs, attrs=None, consts=(), n_out=1, rtol=1e-5, atol=1e-5, opset=17):
    """Lower, build and run one op (an opset-``opset`` model); compare with onnxruntime."""
    attrs = attrs or {}
    feeds = {n: a for n, a in inputs if a is not None and n not in consts}
    ref = _ort(_single_model(op, inputs, attrs, consts, n_out, opset=opset), feeds)
    if op in supported_ops():
        graph = import_model(_single_model(op, inputs, attrs, consts, n_out, ref=ref,
                                           opset=opset))
    else:
        graph = _hand_graph(op, inputs, attrs, consts, ref)
    got = run(build(lower_graph(graph), _TARGET), [feeds[v.name] for v in graph.inputs])
    assert len(got) == len(ref)
    for out, expected in zip(got, ref):
        assert out.shape == expected.shape and out.dtype == expected.dtype
        np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol)


# -- single-op cases ----------------------------------------------------------------

X4 = f32(2, 3, 8, 9)
XI = (f32(2, 3, 8, 9) * 10).astype(np.int32)
CASES: list = []


def case(op, inputs, attrs=None, consts=(), n_out=1, id=None, **tol):
    CASES.append(pytest.param(op, inputs, attrs or {}, tuple(consts), n_out, tol,
                              id=id or f"{op}-{len([c for c in CASES if c.values[0] == op])}"))


# convolution
case("Conv", [("x", f32(1, 4, 7, 9)), ("w", f32(6, 2, 3, 3)), ("b", f32(6))],
     dict(group=2, pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2], kernel_shape=[3, 3]),
     ("w", "b"), id="Conv-grouped-asym-pads-dilated")
case("Conv", [("x", f32(1, 8, 10, 10)), ("w", f32(8, 1, 3, 3))],
     dict(group=8, pads=[1, 1, 1, 1], kernel_shape=[3, 3]), ("w",), id="Conv-depthwise")
case("Conv", [("x", f32(1, 3, 20)), ("w", f32(5, 3, 4)), ("b", f32(5))],
     dict(pads=[2, 1], strides=[3]), ("w", "b"), id="Conv-1d")
case("Conv", [("x", f32(1, 2, 5, 6, 7)), ("w", f32(3, 2, 2, 3, 2))],
     dict(pads=[1, 0, 1, 0, 1, 1]), ("w",), id="Conv-3d")
case("Conv", [("x", f32(1, 4, 7, 9)), ("w", f32(6, 4, 3, 3)), ("b", f32(6))],
     dict(auto_pad="SAME_UPPER", strides=[2, 2]), ("w", "b"), id="Conv-same-upper")
case("Conv", [("x", f32(1, 4, 7, 9)), ("w", f32(6, 4, 3, 3)), ("b", f32(6))],
     dict(auto_pad="SAME_LOWER", strides=[2, 2]), ("w", "b"), id="Conv-same-lower")
case("Conv", [("x", f32(1, 4, 7, 9)), ("w", f32(6, 4, 3, 3)), ("b", f32(6))],
     dict(pads=[1, 1, 1, 1]), id="Conv-runtime-weights")
case("ConvTranspose", [("x", f32(1, 4, 5, 6)), ("w", f32(4, 3, 3, 3)), ("b", f32(3))],
     dict(strides=[2, 2], pads=[1, 0, 1, 2], output_padding=[1, 0]), ("w", "b"),
     id="ConvTranspose-pads-outpad")
case("ConvTranspose", [("x", f32(1, 4, 5, 6)), ("w", f32(4, 2, 3, 2))],
     dict(group=2, strides=[3, 2], dilations=[2, 1], output_padding=[2, 1]), ("w",),
     id="ConvTranspose-group-dilated")
case("ConvTranspose", [("x", f32(1, 4, 5, 6)), ("w", f32(4, 2, 3, 3)), ("b", f32(2))],
     dict(strides=[2, 2], output_shape=[11, 14]), ("w", "b"), id="ConvTranspose-output-shape")
case("ConvTranspose", [("x", f32(1, 4, 5)), ("w", f32(4, 2, 3))], dict(strides=[2], pads=[1, 1]),
     ("w",), id="ConvTranspose-1d")
# normalization / activations
BN = [("x", X4), ("s", f32(3)), ("b", f32(3)), ("m", f32(3)), ("v", np.abs(f32(3)) + 0.1)]
case("BatchNormalization", BN, dict(epsilon=1e-3), ("s", "b", "m", "v"), id="BN-folded")
case("BatchNormalization", BN, dict(epsilon=1e-3), id="BN-runtime-stats")
case("Relu", [("x", X4)])
case("Clip", [("x", X4), ("lo", np.array(-0.5, np.float32)), ("hi", np.array(0.7, np.float32))],
     consts=("lo", "hi"))
case("Clip", [("x", X4), ("lo", None), ("hi", np.array(0.7, np.float32))], consts=("hi",),
     id="Clip-no-min")
case("Clip", [("x", X4), ("lo", np.array(-0.5, np.float32))], consts=("lo",), id="Clip-no-max")
case("Clip", [("x", X4)], id="Clip-none")
case("Clip", [("x", XI), ("lo", np.array(-3, np.int32)), ("hi", np.array(5, np.int32))],
     consts=("lo", "hi"), id="Clip-int")
case("Clip", [("x", X4), ("lo", np.array(0.5, np.float32)), ("hi", np.array(-0.5, np.float32))],
     consts=("lo", "hi"), id="Clip-min-above-max")
case("LeakyRelu", [("x", X4)], dict(alpha=0.3))
case("PRelu", [("x", X4), ("s", f32(3, 1, 1))], consts=("s",))
case("PRelu", [("x", X4), ("s", f32(9))], id="PRelu-runtime-slope")
for _op in ["Sigmoid", "Tanh", "HardSwish", "Floor", "Ceil", "Neg", "Abs", "Exp", "Identity"]:
    case(_op, [("x", X4 * 3)])
case("HardSigmoid", [("x", X4 * 3)], dict(alpha=0.3, beta=0.4))
case("Sqrt", [("x", np.abs(X4))])
case("Log", [("x", np.abs(X4) + 0.01)])
# elementwise binary / variadic
for _op in ["Add", "Sub", "Mul", "Div"]:
    case(_op, [("a", X4), ("b", f32(3, 1, 9))], id=f"{_op}-broadcast")
    case(_op, [("a", XI), ("b", np.array([[[3]], [[-4]], [[5]]], np.int32))], id=f"{_op}-int32")
case("Div", [("a", i64(7, -7, 7, -7, 0, -9)), ("b", i64(2, 2, -2, -2, 3, 3))], id="Div-truncates")
case("Div", [("a", np.array([200, 7, 255], np.uint8)), ("b", np.array([3, 2, 16], np.uint8))],
     id="Div-uint8")
case("Pow", [("a", np.abs(X4)), ("b", f32(3, 1, 1))])
case("Pow", [("a", X4), ("b", np.array(2, np.float32))], consts=("b",), id="Pow-square")
case("Pow", [("a", X4), ("b", np.array(3, np.int64))], id="Pow-int-exponent")
case("Pow", [("a", i64(2, 3, -4)), ("b", i64(3, 2, 3))], id="Pow-int")
case("Min", [("a", f32(3, 4)), ("b", f32(4)), ("c", f32(3, 1))])
case("Max", [("a", f32(3, 4)), ("b", f32(4))])
case("Sum", [("a", f32(3, 4)), ("b", f32(4)), ("c", f32(1))])
case("Sum", [("a", f32(3, 4))], id="Sum-one")
case("Where", [("c", f32(3, 4) > 0), ("a", f32(3, 1)), ("b", f32(4))])
# shape ops
case("Concat", [("a", f32(1, 2, 3)), ("b", f32(1, 4, 3)), ("c", f32(1, 1, 3))], dict(axis=-2))
case("Split", [("x", f32(2, 10, 3)), ("s", i64(3, 7))], dict(axis=1), ("s",), n_out=2)
case("Split", [("x", f32(2, 9, 3))], dict(axis=-2), n_out=3, id="Split-equal")
case("Slice", [("x", f32(5, 8, 6)), ("st", i64(1, -1, 10)), ("en", i64(4, -9, 0)),
               ("ax", i64(0, 1, 2)), ("sp", i64(2, -2, -3))], consts=("st", "en", "ax", "sp"),
     id="Slice-negative-steps")
case("Slice", [("x", f32(5, 8, 6)), ("st", i64(-100, 2)), ("en", i64(100, -1)),
               ("ax", i64(-1, 1))], consts=("st", "en", "ax"), id="Slice-clamped")
case("Slice", [("x", f32(5, 8, 6)), ("st", i64(3)), ("en", i64(-100)), ("ax", i64(0)),
               ("sp", i64(-1))], consts=("st", "en", "ax", "sp"), id="Slice-reverse-to-start")
case("Flatten", [("x", X4)], dict(axis=2))
case("Flatten", [("x", X4)], dict(axis=0), id="Flatten-axis0")
case("Reshape", [("x", X4), ("s", i64(0, -1, 3))], consts=("s",))
case("Transpose", [("x", X4)], dict(perm=[0, 2, 3, 1]))
case("Transpose", [("x", X4)], id="Transpose-default")
case("Squeeze", [("x", f32(1, 3, 1, 4)), ("a", i64(0, 2))], consts=("a",))
case("Squeeze", [("x", f32(1, 3, 1, 4))], id="Squeeze-all")
case("Unsqueeze", [("x", f32(3, 4)), ("a", i64(0, -1))], consts=("a",))
case("Expand", [("x", f32(3, 1)), ("s", i64(2, 1, 4))], consts=("s",))
case("Tile", [("x", f32(2, 3)), ("r", i64(2, 3))], consts=("r",))
case("Tile", [("x", f32(3, 4, 5)), ("r", i64(6, 4, 2))], consts=("r",),
     id="Tile-avx512-miscompile-shape")
case("Gather", [("x", f32(5, 4, 3)), ("i", i64(0, -1, 2, 2))], dict(axis=1), ("i",))
case("Gather", [("x", f32(5, 4, 3)), ("i", np.array([[0, -1], [4, -5]], np.int64))],
     dict(axis=0), id="Gather-runtime-negative")
case("Gather", [("x", f32(5, 4, 3)), ("i", np.array(-2, np.int64))], dict(axis=2), ("i",),
     id="Gather-scalar-const")
case("Gather", [("x", f32(5, 4, 3)), ("i", np.array(-2, np.int64))], dict(axis=2),
     id="Gather-scalar-runtime")
case("Gather", [("x", f32(5, 4, 3)), ("i", i64(1, 2, 3))], dict(axis=0), ("i",),
     id="Gather-contiguous-slice")
case("Cast", [("x", X4 * 3)], dict(to=TensorProto.INT32))
case("Cast", [("x", i64(1, 0, -2))], dict(to=TensorProto.FLOAT), id="Cast-int-float")
case("Cast", [("x", np.array([0.0, 0.5, -0.2, 2], np.float32))], dict(to=TensorProto.BOOL),
     id="Cast-bool")
case("Dropout", [("x", X4)])
# linear algebra
case("Gemm", [("a", f32(4, 5)), ("b", f32(6, 5)), ("c", f32(6))],
     dict(alpha=0.5, beta=2.0, transB=1), ("b", "c"))
case("Gemm", [("a", f32(5, 4)), ("b", f32(5, 6)), ("c", f32(4, 1))], dict(transA=1),
     id="Gemm-transA-runtime")
case("Gemm", [("a", f32(4, 5)), ("b", f32(5, 6))], id="Gemm-no-C")
case("MatMul", [("a", f32(2, 3, 4, 5)), ("b", f32(5, 6))])
case("MatMul", [("a", f32(5)), ("b", f32(3, 5, 6))], id="MatMul-1d-left")
case("MatMul", [("a", f32(3, 4, 5)), ("b", f32(5))], id="MatMul-1d-right")
case("MatMul", [("a", (f32(3, 4) * 5).astype(np.int32)), ("b", (f32(4, 2) * 5).astype(np.int32))],
     id="MatMul-int32")
case("Softmax", [("x", X4)], dict(axis=1))
case("Softmax", [("x", X4)], id="Softmax-default")
# pooling / reductions
case("MaxPool", [("x", f32(1, 2, 9, 10))], dict(kernel_shape=[3, 3], strides=[2, 2],
                                                pads=[1, 0, 0, 1]))
case("MaxPool", [("x", f32(1, 2, 9, 10))], dict(kernel_shape=[3, 2], strides=[2, 3], ceil_mode=1),
     id="MaxPool-ceil")
case("MaxPool", [("x", f32(1, 2, 9, 10))],
     dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
     id="MaxPool-dilated-ceil")
case("MaxPool", [("x", f32(1, 2, 9))], dict(kernel_shape=[3], strides=[2], pads=[1, 1]),
     id="MaxPool-1d")
case("AveragePool", [("x", f32(1, 2, 9, 10))], dict(kernel_shape=[3, 3], strides=[2, 2],
                                                    pads=[1, 0, 0, 1]))
case("AveragePool", [("x", f32(1, 2, 9, 10))],
     dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], count_include_pad=1),
     id="AveragePool-count-pad")
case("AveragePool", [("x", f32(1, 2, 9, 10))], dict(kernel_shape=[3, 2], strides=[2, 3],
                                                    ceil_mode=1), id="AveragePool-ceil")
case("AveragePool", [("x", f32(1, 2, 9, 10))],
     dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
          count_include_pad=1), id="AveragePool-ceil-count-pad")
case("AveragePool", [("x", f32(1, 2, 9, 10))],
     dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1,
          count_include_pad=1), id="AveragePool-ceil-count-pad-overhang")
case("GlobalAveragePool", [("x", X4)])
case("GlobalMaxPool", [("x", X4)])
case("ReduceMean", [("x", X4)], dict(axes=[1, -1], keepdims=0))
case("ReduceMax", [("x", X4)], dict(axes=[2]))
case("ReduceMax", [("x", X4)], dict(keepdims=0), id="ReduceMax-all")
case("ReduceSum", [("x", X4), ("a", i64(1, 3))], dict(keepdims=1), ("a",))
case("ReduceSum", [("x", X4)], dict(keepdims=0), id="ReduceSum-all")
case("ReduceSum", [("x", X4), ("a", np.zeros((0,), np.int64))], dict(noop_with_empty_axes=1),
     ("a",), id="ReduceSum-noop")
# Pad
case("Pad", [("x", X4), ("p", i64(0, 0, 1, 2, 0, 0, 2, 0)), ("v", np.array(1.5, np.float32))],
     consts=("p", "v"))
case("Pad", [("x", X4), ("p", i64(0, 0, 1, 2, 0, 0, 2, -3))], dict(mode="reflect"), ("p",),
     id="Pad-reflect-crop")
case("Pad", [("x", X4), ("p", i64(0, 0, 1, 2, 0, 0, 2, 3))], dict(mode="edge"), ("p",),
     id="Pad-edge")
case("Pad", [("x", X4), ("p", i64(0, 0, -1, 2, 0, 0, 2, -3))], consts=("p",),
     id="Pad-negative")
# Resize
R4 = f32(1, 2, 4, 5)
NO = ("roi", None)
case("Resize", [("x", R4), NO, ("s", np.array([1, 1, 2, 3], np.float32))], dict(mode="nearest"),
     ("s",), id="Resize-nearest-x2x3")
case("Resize", [("x", R4), NO, ("s", np.array([1, 1, 2, 3], np.float32))], dict(mode="linear"),
     ("s",), id="Resize-linear-x2x3")
case("Resize", [("x", R4), NO, ("s", np.array([1, 1, 0.6, 0.7], np.float32))],
     dict(mode="linear"), ("s",), id="Resize-linear-fractional-scales")
case("Resize", [("x", R4), NO, ("s", np.array([1, 1, 1.7, 2.3], np.float32))],
     dict(mode="nearest", nearest_mode="floor", coordinate_transformation_mode="asymmetric"),
     ("s",), id="Resize-nearest-floor-asymmetric")
case("Resize", [("x", R4), NO, ("s", None), ("sz", i64(1, 2, 7, 3))],
     dict(mode="linear", coordinate_transformation_mode="align_corners"), ("sz",),
     id="Resize-linear-align-corners")
case("Resize", [("x", R4), NO, ("s", None), ("sz", i64(1, 2, 9, 13))],
     dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"), ("sz",),
     id="Resize-linear-pytorch-half-pixel")
case("Resize", [("x", R4), NO, ("s", None), ("sz", i64(1, 2, 9, 13))],
     dict(mode="nearest", nearest_mode="round_prefer_ceil"), ("sz",),
     id="Resize-nearest-prefer-ceil")
case("Resize", [("x", R4), NO, ("s", None), ("sz", i64(1, 2, 9, 13))],
     dict(mode="nearest", nearest_mode="ceil", coordinate_transformation_mode="align_corners"),
     ("sz",), id="Resize-nearest-ceil-align-corners")
case("Resize", [("x", R4), NO, ("s", np.array([1, 1, 2, 2], np.float32))], dict(mode="cubic"),
     ("s",), id="Resize-cubic")
case("Resize", [("x", R4), NO, ("s", np.array([1, 1, 0.8, 1.6], np.float32))],
     dict(mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5), ("s",),
     id="Resize-cubic-exclude-outside")
case("Resize", [("x", R4), ("roi", np.array([0, 0, 0.2, 0.3, 1, 1, 0.9, 1.2], np.float32)),
                ("s", None), ("sz", i64(1, 2, 6, 7))],
     dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
          extrapolation_value=3.0), ("roi", "sz"), id="Resize-tf-crop-and-resize")
# ops that had a lowering before a registry entry (now imported like the others)
case("LogSoftmax", [("x", X4)], dict(axis=2))
case("Elu", [("x", X4)], dict(alpha=0.7))
for _op in ["Erf", "Sign", "Sin", "Cos", "Softplus", "Reciprocal"]:
    case(_op, [("x", X4 * 2)])
case("Round", [("x", np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.4, 2.6], np.float32))])
case("ReduceMin", [("x", X4)], dict(axes=[1, 2], keepdims=0))
case("ReduceProd", [("x", X4)], dict(axes=[3]))
case("ArgMax", [("x", X4)], dict(axis=2, keepdims=0))
case("ArgMin", [("x", X4)], dict(axis=-1))
case("Mean", [("a", f32(3, 4)), ("b", f32(4)), ("c", f32(3, 1))])
for _op in ["GreaterOrEqual", "LessOrEqual", "Equal", "Less", "Greater"]:
    case(_op, [("a", XI), ("b", np.array([[[3]], [[-4]], [[5]]], np.int32))])
for _op in ["And", "Or", "Xor"]:
    case(_op, [("a", f32(3, 4) > 0), ("b", f32(4) > 0)])
case("Not", [("x", f32(3, 4) > 0)])
# Gelu exists from opset 20 (onnxruntime runs it there)
case("Gelu", [("x", f32(2, 3, 8, 9, scale=3.0))], dict(approximate="none"), opset=20,
     id="Gelu-erf")
case("Gelu", [("x", f32(2, 3, 8, 9, scale=3.0))], dict(approximate="tanh"), opset=20,
     id="Gelu-tanh")


@pytest.mark.parametrize("op, inputs, attrs, consts, n_out, tol", CASES)
def test_op_matches_onnxruntime(op, inputs, attrs, consts, n_out, tol):
    check_op(op, inputs, attrs, consts, n_out, **tol)


def test_every_lowering_has_a_case():
    tested = {p.values[0] for p in CASES}
    from quant_tests.helpers import QUANT_TESTED_OPS  # integer ops are checked there

    assert sorted(set(LOWERINGS) - tested - QUANT_TESTED_OPS) == ["CastLike"]  # shares Cast's


# -- graphs ---------------------------------------------------------------------------

def _small_cnn():
    """conv-bn-relu-maxpool, a residual add, concat, global pool, flatten, gemm, softmax."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "s", "bb", "m", "v"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Add", ["c2", "p1"], ["a1"]),
        helper.make_node("Concat", ["a1", "p1"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"]),
    ]
    weights = {"w1": f32(8, 3, 3, 3), "b1": f32(8), "s": f32(8), "bb": f32(8), "m": f32(8),
               "v": np.abs(f32(8)) + 0.5, "w2": f32(8, 1, 3, 3), "fw": f32(10, 16),
               "fb": f32(10)}
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("p1", TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_small_cnn_two_outputs_matches_onnxruntime():
    model = _small_cnn()
    x = f32(1, 3, 16, 16)
    expected = _ort(model, {"x": x})
    graph = import_model(model)
    got = run(build(lower_graph(graph), _TARGET), [x])
    assert len(got) == 2
    for out, ref in zip(got, expected):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_params_as_function_parameters():
    model = _small_cnn()
    x = f32(1, 3, 16, 16)
    expected = _ort(model, {"x": x})
    graph = import_model(model)
    mod, params = lower_graph_with_params(graph)
    func = mod["main"]
    assert int(func.attrs["num_input"]) == 1
    assert len(func.params) == 1 + len(params) and len(params) >= 5
    assert [p.name for p in func.params[1:]] == list(params)
    got = run(build(mod, _TARGET), [x, *params.values()])
    for out, ref in zip(got, expected):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # and the default embeds them
    assert len(lower_graph(graph)["main"].params) == 1


def test_export_and_load_library(tmp_path):
    model = _small_cnn()
    x = f32(1, 3, 16, 16)
    executable = build(lower_graph(import_model(model)), _TARGET)
    path = export_library(executable, tmp_path / "cnn.so")
    loaded = load_library(path)
    for out, ref in zip(run(loaded, [x]), run(executable, [x])):
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("name", ["tinynet", "resnet_tiny", "dwsep_tiny", "concat_tiny",
                                  "unet_tiny", "mobilenet_v2", "ppocr_det"])
def test_prepared_model_matches_onnxruntime(name):
    """The project's models (scripts/setup.sh) end to end: ~0.3-3 s build each."""
    from conftest import assert_close, model_input, model_path, ort_run  # tests/conftest.py

    path = model_path(name)
    graph = import_model(path)
    x = model_input(name)
    expected = ort_run(path, {graph.inputs[0].name: x})
    got = run(build(lower_graph(graph), _TARGET), [x])
    assert len(got) == len(expected)
    for out, ref in zip(got, expected):
        assert_close(out, ref, what=f"{name} on TVM")


def test_constant_graph_output():
    g = Graph()
    x = g.add_input("x", (2,), np.float32)
    y = g.op("Relu", x)
    y.shape, y.dtype = (2,), np.dtype(np.float32)
    c = g.add_constant("c", np.arange(3, dtype=np.float32))
    g.outputs = [y, c]
    for as_constants in (True, False):
        mod, params = lower_graph_with_params(g, params_as_constants=as_constants)
        got = run(build(mod, _TARGET), [np.ones(2, np.float32), *params.values()])
        np.testing.assert_array_equal(got[1], np.arange(3, dtype=np.float32))


def test_cross_compile_and_export_for_cortex_a72(tmp_path):
    import shutil

    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ is not installed")
    target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
              "mattr": ["+neon"], "num-cores": 4}
    executable = build(lower_graph(import_model(_small_cnn())), target)
    path = Path(export_library(executable, tmp_path / "cnn_a72.so",
                               cross_compiler="aarch64-linux-gnu-g++"))
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # aarch64


def test_graph_input_passed_straight_to_output():
    g = Graph()
    x = g.add_input("x", (2, 3), np.float32)
    y = g.op("Relu", x)
    y.shape, y.dtype = (2, 3), np.dtype(np.float32)
    g.outputs = [y, x]
    a = f32(2, 3)
    got = run(build(lower_graph(g), _TARGET), [a])
    np.testing.assert_array_equal(got[0], np.maximum(a, 0))
    np.testing.assert_array_equal(got[1], a)


def test_host_target_is_not_generic():
    target = host_target()
    assert target["kind"] == "llvm" and target["mcpu"] not in ("", "generic", "native")


# -- errors ---------------------------------------------------------------------------

def _one_node(op, attrs=None, out_shape=(2, 3), inputs=None):
    g = Graph()
    x = g.add_input("x", (2, 3), np.float32)
    node = g.add_node(op, inputs(g, x) if inputs else [x], attrs or {}, name="n1")
    node.output.shape, node.output.dtype = out_shape, np.dtype(np.float32)
    g.outputs = [node.output]
    return g


def test_op_without_lowering_names_op_node_and_supported_ops():
    with pytest.raises(UnsupportedOpError) as info:
        lower_graph(_one_node("FancyOp"))
    text = str(info.value)
    assert "FancyOp" in text and "'n1'" in text and "Conv" in text and "Relu" in text


def test_shape_only_op_must_be_folded():
    g = _one_node("Shape", out_shape=(2,))
    g.outputs[0].dtype = np.dtype(np.int64)
    with pytest.raises(LoweringError, match="constant-folded"):
        lower_graph(g)


def test_unsupported_attribute_names_node_op_and_attribute():
    g = Graph()
    x = g.add_input("x", (1, 2, 4, 4), np.float32)
    consts = [g.add_constant(n, np.ones(2, np.float32)) for n in "sbmv"]
    node = g.add_node("BatchNormalization", [x, *consts], {"training_mode": 1}, name="bn7")
    node.output.shape, node.output.dtype = (1, 2, 4, 4), np.dtype(np.float32)
    g.outputs = [node.output]
    with pytest.raises(UnsupportedOpError, match=r"bn7.*BatchNormalization.*training_mode"):
        lower_graph(g)


def test_runtime_operand_that_must_be_constant():
    g = Graph()
    x = g.add_input("x", (2, 3), np.float32)
    r = g.add_input("r", (2,), np.int64)
    node = g.add_node("Tile", [x, r], {}, name="t1")
    node.output.shape, node.output.dtype = (4, 3), np.dtype(np.float32)
    g.outputs = [node.output]
    with pytest.raises(UnsupportedOpError, match=r"t1.*Tile.*repeats"):
        lower_graph(g)


def test_wrong_output_shape_is_caught():
    with pytest.raises(LoweringError, match=r"n1.*shape \(3, 2\)"):
        lower_graph(_one_node("Relu", out_shape=(3, 2)))


def test_missing_shape_is_a_clear_error():
    g = Graph()
    x = g.add_input("x", None, np.float32)
    g.outputs = [g.op("Relu", x)]
    with pytest.raises(LoweringError, match="static shape"):
        lower_graph(g)


# -- timing ---------------------------------------------------------------------------

def _report(request, lines):
    plugin = request.config.pluginmanager.get_plugin("tvm-summary")
    if plugin is None:
        class _Plugin:
            def __init__(self):
                self.lines = []

            def pytest_terminal_summary(self, terminalreporter):
                terminalreporter.section("TVM backend report")
                for line in self.lines:
                    terminalreporter.write_line(line)

        plugin = _Plugin()
        request.config.pluginmanager.register(plugin, "tvm-summary")
    plugin.lines.extend(lines)


def test_report_conv_build_and_run_time(request):
    """Print (not assert) the untuned cost of a 1x64x56x56 3x3 conv (64 -> 64)."""
    g = Graph()
    x = g.add_input("x", (1, 64, 56, 56), np.float32)
    w = g.add_constant("w", f32(64, 64, 3, 3, scale=0.05))
    b = g.add_constant("b", f32(64))
    node = g.add_node("Conv", [x, w, b], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                          "strides": [1, 1], "dilations": [1, 1], "group": 1})
    node.output.shape, node.output.dtype = (1, 64, 56, 56), np.dtype(np.float32)
    g.outputs = [node.output]
    data = f32(1, 64, 56, 56)
    t0 = time.perf_counter()
    mod = lower_graph(g)
    t1 = time.perf_counter()
    executable = build(mod, _TARGET)
    t2 = time.perf_counter()
    out = run(executable, [data])[0]
    t3 = time.perf_counter()
    samples = time_local(executable, [data], repeat=3, number=1)
    ref = _ort(_single_model("Conv", [("x", data), ("w", w.const), ("b", b.const)],
                             dict(pads=[1, 1, 1, 1]), ("w", "b"), 1), {"x": data})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    _report(request, [
        f"untuned 1x64x56x56 3x3 conv (64->64, pad 1) on {_TARGET['mcpu']}: "
        f"lower {1e3 * (t1 - t0):.0f} ms, build {t2 - t1:.2f} s, first run "
        f"{1e3 * (t3 - t2):.0f} ms, steady run {1e3 * float(np.median(samples)):.0f} ms "
        f"(median of {len(samples)})"])


def test_profile_local_attributes_time_to_kernels():
    """Per-kernel profile: a heavy conv next to a cheap add; the conv must dominate,
    every kernel is listed with its call count, the shares add up to one."""
    g = Graph()
    x = g.add_input("x", (1, 16, 32, 32), np.float32)
    w = g.add_constant("w", f32(16, 16, 3, 3, scale=0.1))
    conv = g.add_node("Conv", [x, w], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                       "strides": [1, 1], "dilations": [1, 1], "group": 1})
    conv.output.shape, conv.output.dtype = (1, 16, 32, 32), np.dtype(np.float32)
    add = g.add_node("Add", [conv.output, conv.output], {})
    add.output.shape, add.output.dtype = (1, 16, 32, 32), np.dtype(np.float32)
    g.outputs = [add.output]
    rows = profile_local(build(lower_graph(g), _TARGET), [f32(1, 16, 32, 32)], repeat=3)
    kernels = {r["kernel"]: r for r in rows}
    conv_rows = [r for name, r in kernels.items() if "conv2d" in name]
    assert conv_rows and all(r["calls"] >= 1 for r in rows), kernels
    assert rows[0]["kernel"] == conv_rows[0]["kernel"], rows  # the conv is the slowest
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-6


# -- the two registries ---------------------------------------------------------------

#: registered ops without a TVM lowering, on purpose: exporters' shape arithmetic, which
#: must constant-fold before lowering (the lowering reports them as such, see
#: test_shape_only_op_must_be_folded)
SHAPE_ONLY = {"Shape", "ConstantOfShape", "Range"}


def test_lowerings_and_op_registry_agree():
    """Every op that lowers is registered (else the importer rejects it and the lowering
    is dead code), and every registered op that is not shape_only lowers."""
    from compiler.ops.registry import OPS

    supported_ops()  # loads the built-in ops
    lowered = set(LOWERINGS)
    runtime = {key for key, op in OPS.items() if not op.shape_only}
    shape_only = {key for key, op in OPS.items() if op.shape_only}
    assert sorted(lowered - set(OPS)) == [], "lowerings of ops the registry does not define"
    assert sorted(runtime - lowered) == [], "registered (not shape_only) ops without a lowering"
    assert lowered == runtime
    assert shape_only == SHAPE_ONLY and not shape_only & lowered


def test_cast_like_matches_onnxruntime():
    """CastLike (its ONNX conformance cases all use an empty target_type tensor)."""
    check_op("CastLike", [("x", X4 * 3), ("t", np.zeros((1,), np.int32))])
    check_op("CastLike", [("x", i64(1, 0, -2)), ("t", np.zeros((2,), np.float16))], consts=("t",))
    check_op("CastLike", [("x", np.array([0.0, 0.5, -0.2, 2], np.float32)),
                          ("t", np.zeros((), np.bool_))])

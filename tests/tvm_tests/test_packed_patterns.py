"""Exporter patterns on the packed (NCHWc) layout: explicit Pad folded into the convs
(bit-exact), HardSwish / HardSigmoid / SiLU / Sigmoid gates, squeeze-excitation,
Split / Concat and Resize kept packed (no layout transform between the convs) and
matching onnxruntime."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import compiler  # noqa: E402
from benchmarks.pattern_models import lcnet_like, tfpad_net  # noqa: E402
from compiler.interpreter import run as interpret  # noqa: E402
from conftest import assert_close, ort_run  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tvm.layout import apply_layout, packed_conv_count  # noqa: E402

UNFUSED = ["remove-identity", "fold-constants", "dce"]   # cleanup without fold-pad


def _pads_model():
    """Pad [0,0,1,1] (TF-SAME, stride 2) -> Conv 3x3 s2; Pad 1 -> depthwise 3x3; a Pad of
    0.5 -> Conv 3x3 (must stay explicit); a Pad read by a Relu too (must stay)."""
    rng = np.random.default_rng(0)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def ints(name, v):
        return numpy_helper.from_array(np.array(v, np.int64), name)

    nodes = [
        helper.make_node("Pad", ["x", "p_asym"], ["xp"]),
        helper.make_node("Conv", ["xp", "w1", "b1"], ["c1"], strides=[2, 2], pads=[0, 0, 0, 0]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Pad", ["r1", "p_sym", "zero"], ["r1p"]),
        helper.make_node("Conv", ["r1p", "w2"], ["c2"], group=16),
        helper.make_node("Pad", ["c2", "p_sym", "half"], ["c2p"]),
        helper.make_node("Conv", ["c2p", "w3"], ["c3"]),
        helper.make_node("Pad", ["c3", "p_sym"], ["c3p"]),
        helper.make_node("Conv", ["c3p", "w4"], ["c4"]),
        helper.make_node("Relu", ["c3p"], ["r3"]),
        helper.make_node("ReduceMean", ["r3"], ["m"], axes=[2, 3], keepdims=1),
        helper.make_node("Add", ["c4", "m"], ["y"]),
    ]
    inits = [ints("p_asym", [0, 0, 0, 0, 0, 0, 1, 1]), ints("p_sym", [0, 0, 1, 1, 0, 0, 1, 1]),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             w("w1", 16, 4, 3, 3), w("b1", 16), w("w2", 16, 1, 3, 3), w("w3", 16, 16, 3, 3),
             w("w4", 16, 16, 3, 3)]
    graph = helper.make_graph(
        nodes, "pads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


X9 = np.random.default_rng(1).standard_normal((1, 4, 9, 9)).astype(np.float32)


def test_fold_pad_folds_zero_spatial_pads_only():
    _, graph, _ = compiler.optimize(_pads_model(), ["cleanup"])
    convs = {n.inputs[0].name: n for n in graph.find("Conv")}
    pads = sorted(tuple(n.attrs.get("pads", [0] * 4)) for n in graph.find("Conv"))
    # the asymmetric TF-SAME pad and the explicit zero one are folded; the 0.5 pad and
    # the one also read by a Relu stay
    assert len(graph.find("Pad")) == 2, graph.to_text(show_constants=False)
    assert (0, 0, 1, 1) in pads and (1, 1, 1, 1) in pads
    assert convs["x"].attrs["pads"] == [0, 0, 1, 1]
    # the interpreter gives the same numbers bit for bit
    _, unfused, _ = compiler.optimize(_pads_model(), UNFUSED)
    assert len(unfused.find("Pad")) == 4
    np.testing.assert_array_equal(interpret(graph, {"x": X9})[0], interpret(unfused, {"x": X9})[0])


def test_fold_pad_bit_exact_on_the_packed_build():
    host = get_target("host").with_layout("nchwc")
    folded = compiler.compile(_pads_model(), target=host, passes=["cleanup"], verify=False)
    unfused = compiler.compile(_pads_model(), target=host, passes=UNFUSED, verify=False)
    a, b = folded.run({"x": X9})[0], unfused.run({"x": X9})[0]
    np.testing.assert_array_equal(a, b)
    ref = ort_run(_pads_model(), {"x": X9})[0]
    assert np.max(np.abs(a - ref)) <= 1e-5 * np.max(np.abs(ref))


def _packed_module(model, int8: bool):
    passes = ["fold-bn", "cleanup"] + (["quantize{bits=8,act_bits=8}"] if int8 else [])
    ctx = None
    if int8:
        from compiler.pass_manager import PassContext

        ctx = PassContext()
        ctx.calibration_data = [{"input": np.random.default_rng(2).standard_normal(
            (2, 3, 16, 16)).astype(np.float32)}]
    _, graph, _ = compiler.optimize(model, passes, ctx=ctx)
    host = get_target("host")
    mod, layout = apply_layout(host.lower(graph), "nchwc", host.target_dict())
    return mod, layout


@pytest.mark.parametrize("name,int8", [("tfpad_net", False), ("lcnet_like", False),
                                       ("lcnet_like", True)])
def test_packed_module_has_layout_transforms_only_at_the_edges(name, int8):
    model = {"tfpad_net": tfpad_net, "lcnet_like": lcnet_like}[name](size=16, width=0.25)
    mod, layout = _packed_module(model, int8)
    assert layout == "nchwc"
    text = mod["main"].script()
    counts = packed_conv_count(mod)
    assert sum(counts.values()) >= 10, counts
    # one pack of the input, one unpack of the output (tfpad_net: before the Gemm); none
    # between Pad->Conv, the SE gate, Split/Concat, the gates or the Resize (in int8: nor
    # around the quantize clips and the zero-point pads of the depthwise convs)
    assert text.count("layout_transform") == 2, [
        line.strip()[:120] for line in text.splitlines() if "layout_transform" in line]


def test_packed_gates_match_onnxruntime():
    model = lcnet_like(size=16, width=0.5)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = ort_run(model, {"input": x})[0]
    cm = compiler.compile(model, target=get_target("host").with_layout("nchwc"),
                          passes=["fold-bn", "cleanup"], verify=False)
    out = cm.run({"input": x})[0]
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


def test_packed_resizes_match_onnxruntime():
    """Linear (TOPI resize2d on the packed data) and half-pixel nearest (kept in NCHW:
    TOPI's packed nearest samples elsewhere) resizes of a packed tensor, summed."""
    rng = np.random.default_rng(0)
    w = lambda name, *s: numpy_helper.from_array(  # noqa: E731
        (rng.standard_normal(s) * 0.3).astype(np.float32), name)
    sizes = numpy_helper.from_array(np.array([1, 16, 13, 11], np.int64), "sizes")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "", "sizes"], ["r1"], mode="linear"),
             helper.make_node("Resize", ["c", "", "", "sizes"], ["r2"], mode="nearest"),
             helper.make_node("Add", ["r1", "r2"], ["a"]),
             helper.make_node("Conv", ["a", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "resizes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 13, 11])],
        [w("w1", 16, 3, 3, 3), w("w2", 16, 16, 3, 3), sizes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = ort_run(model, {"x": x})[0]
    cm = compiler.compile(model, target=get_target("host").with_layout("nchwc"),
                          passes=["cleanup"], verify=False)
    out = cm.run({"x": x})[0]
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


# -- models that used to lose the packed layout entirely (issue #16) ----------------------

def _onnx_model(nodes, inits, x_shape, y_shape, extra_inputs=()):
    """A float ONNX model (opset 17) from nodes and initializers (numpy arrays by name):
    input ``x`` of ``x_shape``, output ``y`` of ``y_shape``."""
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y_shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _assert_keeps_packed_layout(model, x, int8: bool) -> dict:
    """``model`` (fp32, or int8 by the quantize pass calibrated on a seeded batch),
    prepared as the tuned build prepares it (lowered for fusion, `apply_layout` with the
    host target), keeps the packed layout (no fallback warning: a refusal used to turn
    the whole model to NCHW), and that module, fused and built, matches onnxruntime
    (fp32: 1e-4 of max|ref|) or is bit-exact with the int8 NCHW build; returns its packed
    conv counts."""
    import warnings

    from tvm import relax

    from compiler.pass_manager import PassContext
    from targets.tvm.build import build, run

    passes = "fold-bn,cleanup" + (",quantize{bits=8,act_bits=8}" if int8 else "")
    calib = [{"x": np.random.default_rng(2).standard_normal((4,) + x.shape[1:])
              .astype(np.float32)}] if int8 else None
    ctx = PassContext()
    ctx.calibration_data = calib
    _, graph, _ = compiler.optimize(model, passes, ctx=ctx, verify=False)
    host = get_target("host").with_layout("nchwc")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="packed conv layout")
        mod, arrays, recipe = host._prepare(graph, True)
    assert recipe["layout"] == "nchwc" and recipe["fused"]
    counts = packed_conv_count(mod)
    out = run(build(relax.get_pipeline("zero")(mod), host.target_dict()), [x, *arrays])[0]
    if int8:
        plain = compiler.compile(model, target=host.with_layout("nchw"), passes=passes,
                                 calibration_data=calib, verify=False)
        ref = plain.run({"x": x})[0]
        np.testing.assert_array_equal(out, ref)
    else:
        ref = ort_run(model, {"x": x})[0]
        assert_close(out, ref, rtol=1e-4, atol=0.0)
    assert np.abs(ref).max() > 0
    return counts


def _prelu_model():
    """MTCNN's pattern: Conv -> PRelu (per-channel slopes, some negative or above 1) on 10
    channels (the conv's outputs padded to 16 for the packed kernel, then cropped), Conv
    -> LeakyRelu, Conv -> PRelu with slopes in [0, 1]."""
    rng = np.random.default_rng(0)
    f = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "s1"], ["p1"]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["c2"], ["p2"], alpha=0.2),
             helper.make_node("Conv", ["p2", "w3"], ["c3"]),
             helper.make_node("PRelu", ["c3", "s3"], ["y"])]
    inits = {"w1": f(10, 3, 3, 3), "b1": f(10),
             "s1": np.linspace(-0.5, 1.5, 10, dtype=np.float32).reshape(10, 1, 1),
             "w2": f(16, 10, 3, 3), "w3": f(16, 16, 1, 1),
             "s3": np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(16, 1, 1)}
    return _onnx_model(nodes, inits, (1, 3, 12, 12), (1, 16, 12, 12))


X12 = np.random.default_rng(1).standard_normal((1, 3, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_prelu_and_leaky_relu_keep_the_packed_layout(int8):
    # PRelu / LeakyRelu used to be where(x < 0, ...): ConvertLayout unpacked the bool
    # mask, whose layout_transform TVM cannot legalize, and the whole model fell back to
    # NCHW (MTCNN, unet_tiny)
    counts = _assert_keeps_packed_layout(_prelu_model(), X12, int8)
    assert sum(counts.values()) == 3, counts


def test_conv_after_a_concat_of_smaller_blocks_keeps_the_packed_layout():
    # two convs of 24 outputs (packed by 8) concatenated to 48 channels, read by a conv
    # that would pick blocks of 16: ConvertLayout cannot repack 8 -> 16 ("Invalid layout
    # axis 16b", ddddocr_det), so the conv reads the data in blocks of 8
    rng = np.random.default_rng(0)
    f = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c1"], ["s1"]),
             helper.make_node("Conv", ["s1", "w2"], ["c2"]),
             helper.make_node("Conv", ["s1", "w3"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["c2", "c3"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w4"], ["y"])]
    inits = {"w1": f(16, 3, 3, 3), "w2": f(24, 16, 1, 1), "w3": f(24, 16, 3, 3),
             "w4": f(16, 48, 1, 1)}
    counts = _assert_keeps_packed_layout(
        _onnx_model(nodes, inits, (1, 3, 12, 12), (1, 16, 12, 12)), X12, int8=False)
    assert counts["conv"] >= 3, counts

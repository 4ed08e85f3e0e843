"""Packed (NCHWc) convolutions: same outputs as the NCHW build and onnxruntime (float) or
bit-exact (int8), and int8 convs that MetaSchedule tensorizes with x86 VNNI."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tvm
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import compiler  # noqa: E402
from conftest import assert_close, ort_run  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tvm.layout import pack_convolutions, packed_conv_count  # noqa: E402
from targets.tvm.lowering import lower_graph  # noqa: E402


def _model(path: Path, c_in: int = 3, size: int = 10) -> Path:
    """conv3x3(c_in->16)+relu, depthwise 3x3 s2 (asymmetric pads), 1x1 (16->24) and 3x3
    (16->24) summed, then a 1x1 to 8 channels: every packed kernel and block size."""
    rng = np.random.default_rng(0)

    def t(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], group=16, strides=[2, 2],
                         pads=[0, 1, 1, 0]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("Conv", ["r2", "w4"], ["c4"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "c4"], ["a"]),
        helper.make_node("Relu", ["a"], ["r3"]),
        helper.make_node("Conv", ["r3", "w5"], ["y"]),
    ]
    inits = [t("w1", 16, c_in, 3, 3), t("b1", 16), t("w2", 16, 1, 3, 3), t("w3", 24, 16, 1, 1),
             t("b3", 24), t("w4", 24, 16, 3, 3), t("w5", 8, 24, 1, 1)]
    out = size // 2
    graph = helper.make_graph(
        nodes, "packed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, out, out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _x(c_in=3, size=10, seed=1, n=1):
    return np.random.default_rng(seed).standard_normal((n, c_in, size, size)).astype(np.float32)


def test_float_nchwc_matches_nchw_and_onnxruntime(tmp_path):
    model = _model(tmp_path / "m.onnx")
    host = get_target("host")
    packed = compiler.compile(model, target=host.with_layout("nchwc"))
    plain = compiler.compile(model, target=host.with_layout("nchw"))
    x = {"x": _x()}
    ref = ort_run(model, x)[0]
    assert_close(packed.run(x)[0], ref, rtol=1e-4, atol=0.0)
    assert_close(plain.run(x)[0], ref, rtol=1e-4, atol=0.0)
    # every conv really went packed: 4 dense convs and the depthwise one
    mod = pack_convolutions(lower_graph(packed.graph), "nchwc")
    assert packed_conv_count(mod) == {"conv": 4, "u8s8": 0, "s8s8": 0, "depthwise": 1}


def _int8_packed_matches_plain(tmp_path, c_in: int):
    """The test model quantized to int8, built packed (nchwc) and plain (nchw): checks
    the two bit-exact (and non-trivial) on two inputs, returns the packed build."""
    model = _model(tmp_path / "m.onnx", c_in=c_in)
    calib = [{"x": _x(c_in=c_in, seed=2, n=8)}]
    host = get_target("host")
    passes = "fold-bn,cleanup,quantize{bits=8,act_bits=8}"
    packed = compiler.compile(model, target=host.with_layout("nchwc"), passes=passes,
                              calibration_data=calib)
    plain = compiler.compile(model, target=host.with_layout("nchw"), passes=passes,
                             calibration_data=calib)
    for seed in (1, 3):
        x = {"x": _x(c_in=c_in, seed=seed)}
        a, b = packed.run(x)[0], plain.run(x)[0]
        assert np.array_equal(a, b), np.max(np.abs(a - b))
        assert np.abs(a).max() > 0
    return packed


def test_int8_first_conv_with_three_channels_is_padded_to_the_vnni_kernel(tmp_path):
    # 3 input channels (RGB) and 16 outputs: padded to 4 channels with zero weights, the
    # conv takes the u8 x s8 kernel; results stay bit-exact with the NCHW int8 build
    packed = _int8_packed_matches_plain(tmp_path, c_in=3)
    counts = packed_conv_count(pack_convolutions(lower_graph(packed.graph), "nchwc"))
    # the first conv (3->16) is the one u8s8 kernel; 16->24 and 24->8 stay generic
    assert counts == {"conv": 3, "u8s8": 1, "s8s8": 0, "depthwise": 1}, counts


def test_int8_nchwc_is_bit_exact_and_uses_u8s8_kernels(tmp_path):
    packed = _int8_packed_matches_plain(tmp_path, c_in=4)
    mod = pack_convolutions(lower_graph(packed.graph), "nchwc")
    counts = packed_conv_count(mod)
    # 16->24 / 24->8 outputs are not multiples of 16: those stay generic packed kernels
    assert counts["u8s8"] >= 1 and counts["depthwise"] == 1, counts
    # activations stay packed from the first conv to the last: the only transform back
    # to NCHW is the model's output (clips and zero-point shifts used to unpack them)
    assert _unpacking_transforms(mod) == 1
    # and every conv takes uint8 (x + 128, shifted in its producer's epilogue): the four
    # after a ReLU (zero point -128) with zero padding and no correction, the first one
    # (the quantized input's zero point) with the correction in its bias -- so no
    # separate pack kernel is left
    assert _conv_data_dtypes(lower_graph(packed.graph)) == ["uint8"] * 5
    # a NEON target convolves signed data (s8 x s8): nothing shifted
    assert _conv_data_dtypes(lower_graph(packed.graph, int8_conv_data="int8")) == ["int8"] * 5
    assert not any(gv.name_hint.startswith("pack_u8") for gv, _ in mod.functions_items())


def _fused_int8_build_matches_untuned(model: Path, c_in: int, size: int) -> list[str]:
    """``model`` quantized to int8 and prepared as the tuned build prepares it (packed,
    lowered for fusion), then fused by TVM's tuning pipeline: checks that no requantize
    runs in a kernel of its own (every ``right_shift`` is in a conv's kernel: the int32
    accumulator is never stored) and that the fused build is bit-exact with the untuned
    (unfused) build and the interpreter on two inputs; returns the kernel names and the
    int8 graph."""
    from tvm import relax

    from compiler.interpreter import run as interpret
    from targets.tvm.build import build, run

    host = get_target("host")
    plain = compiler.compile(model, target=host, passes="fold-bn,cleanup,quantize{bits=8,"
                             "act_bits=8}",
                             calibration_data=[{"x": _x(c_in=c_in, size=size, seed=2, n=8)}])
    mod, arrays, recipe = host._prepare(plain.graph, True)
    assert recipe["layout"] == "nchwc" and recipe["fused"]
    fused = relax.get_pipeline("zero")(mod)
    kernels = [gv.name_hint for gv, f in fused.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc)]
    assert not [k for k in kernels if "right_shift" in k and "conv2d" not in k], kernels
    ex = build(fused, host.target_dict())  # (the default pipeline lowers the fused module)
    for seed in (1, 3):
        x = _x(c_in=c_in, size=size, seed=seed)
        got = run(ex, [x, *arrays])[0]
        ref = plain.run({"x": x})[0]
        assert np.array_equal(got, ref) and np.abs(ref).max() > 0
        assert np.array_equal(got, interpret(plain.graph, {"x": x})[0])
    return kernels, plain.graph


def test_tuned_int8_build_fuses_requantizes_above_the_group_size(tmp_path, monkeypatch):
    """Requantizes above `REQUANT_GROUP_BYTES` are split into channel groups in the
    unfused build (a bound on its int64 intermediates); the slices of those groups
    stopped TVM's fusion, so the tuned build lowers them whole: each in its conv's kernel
    (every packed kind: u8 x s8 dense, generic dense, depthwise)."""
    from targets.tvm.lowering import quant

    monkeypatch.setattr(quant, "REQUANT_GROUP_BYTES", 64)  # every one would be grouped
    kernels, graph = _fused_int8_build_matches_untuned(_model(tmp_path / "m.onnx", c_in=4),
                                                       c_in=4, size=10)
    host = get_target("host")
    # (the groups of the one unfused build: the untuned arena build)
    assert "R.strided_slice" in host.with_memory("arena").lower(graph).script()
    assert "R.strided_slice" not in host.lower(graph).script()
    assert "R.strided_slice" not in host.lower(graph, tuned=True).script()
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 5 and all("right_shift" in k for k in convs), convs


def _odd_channels_model(path: Path) -> Path:
    """conv 3x3 (4 -> 10, padded to 16 outputs in the packed build) + ReLU, conv 1x1
    (10 -> 16) + ReLU."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((10, 4, 3, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(10) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((16, 10, 1, 1)) * 0.3).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c1"], ["r1"]),
         helper.make_node("Conv", ["r1", "w2"], ["c2"]),
         helper.make_node("Relu", ["c2"], ["y"])], "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_tuned_int8_build_crops_padded_outputs_after_the_requantize(tmp_path):
    """A conv whose 10 outputs are padded to 16 for the packed kernels
    (`layout._pad_output_channels`) used to be cropped right after it, and the crop kept
    its bias + requantize out of its kernel; `keep_packed.sink_channel_crops` moves the
    crop after them, so they fuse (computing 6 throw-away channels) and only int8 is
    cropped."""
    kernels, _ = _fused_int8_build_matches_untuned(_odd_channels_model(tmp_path / "m.onnx"),
                                                   c_in=4, size=12)
    convs = [k for k in kernels if "conv2d" in k]
    assert len(convs) == 2 and all("right_shift" in k for k in convs), convs


def _conv_data_dtypes(mod) -> list[str]:
    from tvm import relax

    found = []

    def visit(node):
        if isinstance(node, relax.Call) and isinstance(node.op, tvm.ir.Op) and \
                node.op.name == "relax.nn.conv2d":
            found.append(str(node.args[0].ty.dtype))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found


def _unpacking_transforms(mod) -> int:
    """Layout transforms in ``main`` whose result is a plain 4-D (NCHW) tensor."""
    from tvm import relax

    found = []

    def visit(node):
        if isinstance(node, relax.Call) and len(node.args) >= 1 and isinstance(
                node.args[0], tvm.ir.GlobalVar) and \
                node.args[0].name_hint.startswith("te_layout_transform") and \
                len(node.ty.shape) == 4:
            found.append(node.args[0].name_hint)

    relax.analysis.post_order_visit(mod["main"], visit)
    return len(found)


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="unknown conv layout"):
        get_target("host").with_layout("nhwc4")


def _has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags


def _int8_conv_model(path: Path, c: int = 32, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, 3, 3)) * 0.2).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, size, size])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not _has_vnni(), reason="host CPU has no AVX512-VNNI")
def test_tuned_int8_conv_is_tensorized_with_vnni(tmp_path):
    tuned, db = _tuned_int8_conv_matching_the_host_nchw(tmp_path, "host", trials=12)
    # Records are only stored for candidates that built and ran: the conv task's
    # records (the ones MetaSchedule annotated for dot_16x4_vnni) were all tensorized
    # with it, so VNNI code was generated (the stock intrinsic failed LLVM's verifier).
    recs = _records_of_tasks_using(db, "dot_16x4_vnni")
    assert all('["Tensorize", ' in r and '["dot_16x4_vnni", true]' in r for r in recs)


def _tuned_int8_conv_matching_the_host_nchw(tmp_path, target: str, trials: int):
    """The int8 conv model tuned for ``target`` in its ``auto`` layout (packed: nchwc),
    checked bit-exact against the untuned NCHW host build; ``(tuned model, database)``."""
    model = _int8_conv_model(tmp_path / "c.onnx")
    calib = [{"x": _x(c_in=32, size=8, seed=2, n=4)}]
    passes = "fold-bn,cleanup,quantize{bits=8,act_bits=8}"
    db = tmp_path / "db.json"
    tuned = compiler.compile(model, target=target, passes=passes, calibration_data=calib,
                             tune={"trials": trials, "database": str(db), "progress": False})
    assert tuned.tuning["layout"] == "nchwc" and tuned.tuning["trials_measured_ok"] > 0
    plain = compiler.compile(model, target=get_target("host").with_layout("nchw"),
                             passes=passes, calibration_data=calib)
    x = {"x": _x(c_in=32, size=8)}
    assert np.array_equal(tuned.run(x)[0], plain.run(x)[0])
    return tuned, db


def _records_of_tasks_using(db: Path, intrin: str) -> list[str]:
    """Every tuning record of the tasks that have a record using ``intrin``."""
    section = next(iter(json.loads(db.read_text())["targets"].values()))
    tasks = {json.loads(r)[0] for r in section["records"] if intrin in r}
    assert tasks, f"no tuning record uses {intrin}"
    return [r for r in section["records"] if json.loads(r)[0] in tasks]


@pytest.mark.slow
def test_int8_conv_tuned_on_the_a72_board_uses_neon_and_matches_the_host(board, tmp_path):
    # tuned through the tracker on the emulated Cortex-A72: the conv is an s8 x s8 kernel
    # scheduled by our NEON template (every record of its task tensorized with TVM's
    # dot_4x4_i8i8s32_neon), and its outputs equal the host build's, bit for bit
    tuned, db = _tuned_int8_conv_matching_the_host_nchw(tmp_path, "cortex-a72", trials=8)
    assert tuned.tuning["emulated"] is True
    recs = _records_of_tasks_using(db, "dot_4x4_i8i8s32_neon")
    assert all('["Tensorize", ' in r and '"conv2d_nchwc_s8s8"' in r for r in recs)


def test_unet_style_convtranspose_and_concat_stay_correct(tmp_path):
    # A 2x2 / stride-2 ConvTranspose becomes a packed 1x1 conv + depth-to-space; a 3x3 one
    # (overlapping windows) stays TVM's NCHW conv2d_transpose (Relax's layout inference
    # cannot take it packed); the 16->11 head gets zero filters up to 16 outputs, sliced
    # off after it.  fp32 matches onnxruntime, int8 is bit-exact with the NCHW build.
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32),
                                       name)

    inits = [init("w1", (16, 4, 3, 3)), init("wt", (16, 8, 2, 2)), init("wt3", (16, 4, 3, 3)),
             init("w2", (16, 16, 3, 3)), init("wh", (11, 16, 1, 1)), init("bh", (11,))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "wt"], ["u"], strides=[2, 2]),
        helper.make_node("ConvTranspose", ["r1", "wt3"], ["v"], strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1]),
        helper.make_node("Concat", ["u", "x", "v"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "wh", "bh"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "unet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 11, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "u.onnx"
    onnx.save(model, path)
    cm = compiler.compile(path, target=get_target("host").with_layout("nchwc"))
    x = {"x": _x(c_in=4, size=8)}
    assert_close(cm.run(x)[0], ort_run(path, x)[0], rtol=1e-4, atol=0.0)
    mod = pack_convolutions(lower_graph(cm.graph), "nchwc")
    # c1, the 2x2 ConvTranspose as a 1x1 conv (16 -> 32 channels), c2 and the head
    assert packed_conv_count(mod)["conv"] == 4
    names = [gv.name_hint for gv, _ in mod.functions_items()]
    assert sum(n.startswith("conv2d_transpose") for n in names) == 1, names
    # the head's packed weights: one block of 16 inputs x 16 outputs (11 + 5 zero filters)
    head = "T.Buffer((T.int64(1), T.int64(1), T.int64(1), T.int64(1), T.int64(16), T.int64(16))"
    assert any(head in f.script() for _, f in mod.functions_items()
               if isinstance(f, tvm.tirx.PrimFunc)), "the 11-output head was not padded"
    assert any(n.startswith("strided_slice") for n in names)

    calib = [{"x": _x(c_in=4, size=8, seed=s, n=4)} for s in range(2)]
    passes = "fold-bn,cleanup,quantize{bits=8,act_bits=8}"
    outs = [compiler.compile(path, target=get_target("host").with_layout(layout),
                             passes=passes, calibration_data=calib).run(x)[0]
            for layout in ("nchw", "nchwc")]
    assert np.array_equal(outs[0], outs[1])

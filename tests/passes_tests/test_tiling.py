"""tile: spatial tiling of the stem is exact (interpreter, host TVM, int8) and says why not."""
import json

import numpy as np
import pytest

import compiler
from compiler.datasets import load_dataset
from compiler.interpreter import Interpreter
from compiler.pass_manager import PassContext, parse_pass
from conftest import ROOT
from passes.tiling import TilingError, estimate_peak, stage_of, tile_stage

UNET = ROOT / "baselines" / "unet_seg.onnx"
UNET_END = "/enc1/enc1.2/Relu_output_0"       # last value before the decoder's skip tap
DEEPLAB = ROOT / "baselines" / "deeplabv3plus_scenes.onnx"


def _prepared(path, passes=("fold-bn", "cleanup")):
    g = compiler.import_model(str(path))
    for spec in passes:
        g = parse_pass(spec)(g).graph
    return g


@pytest.fixture(scope="module")
def unet():
    return _prepared(UNET)


@pytest.fixture(scope="module")
def unet_x():
    return load_dataset("mnist-seg", "test").inputs(0, 1)


def test_unet_tiled_matches_untiled_in_the_interpreter(unet, unet_x):
    tiled = parse_pass(f"tile{{stage_end={UNET_END},n=4}}")(unet.clone(), PassContext())
    g = tiled.graph
    assert tiled.stats["n"] == 4 and tiled.stats["tiles"] == 16
    assert len(g.find("Conv")) == len(unet.find("Conv")) + 15  # the stem conv, 16 times
    assert g.value(UNET_END).producer.op_type == "Concat"
    ref = Interpreter(unet).run([unet_x])[0]
    got = Interpreter(g).run([unet_x])[0]
    assert np.max(np.abs(got - ref)) <= 1e-6
    # one conv reads overlapping input windows but computes each output pixel once
    assert tiled.stats["extra_macs"] == 0 and tiled.stats["macs_after"] == \
        tiled.stats["macs_before"]


def _stem_model():
    """A strided conv, a dilated depthwise conv and a residual Add at 32x32, then a 1x1
    conv: a stem whose halo grows through the stride and the dilation."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = {"w1": rng.standard_normal((8, 3, 3, 3)), "w2": rng.standard_normal((8, 1, 3, 3)),
         "w3": rng.standard_normal((4, 8, 1, 1)), "b1": rng.standard_normal(8)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                              strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], group=8,
                              dilations=[2, 2], pads=[2, 2, 2, 2]),
             helper.make_node("Add", ["c2", "r1"], ["stem"]),
             helper.make_node("Conv", ["stem", "w3"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    return compiler.import_model(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


@pytest.mark.slow
def test_tiled_stem_matches_untiled_on_host_tvm():
    g = _stem_model()
    result = parse_pass("tile{stage_end=stem,n=2}")(g.clone(), PassContext())
    # the dilated conv recomputes the strided conv's halo rows: extra MACs, same outputs
    assert result.stats["extra_macs"] > 0
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    ref = compiler.compile(g, target="host").run({"x": x})[0]
    got = compiler.compile(result.graph, target="host").run({"x": x})[0]
    assert got.shape == ref.shape == (1, 4, 16, 16)
    assert np.max(np.abs(got - ref)) <= 1e-6
    assert np.max(np.abs(Interpreter(result.graph).run([x])[0]
                         - Interpreter(g).run([x])[0])) <= 1e-6


def test_int8_tiling_is_bit_exact(unet, unet_x):
    calib = [{unet.inputs[0].name: x} for x in
             load_dataset("mnist-seg", "calib").inputs(0, 8).reshape(8, 1, 1, 64, 64)]
    q = parse_pass("quantize")(unet.clone(), PassContext(calibration_data=calib)).graph
    ends = [v.name for v in q.values if v.producer is not None and v.shape is not None
            and len(v.shape) == 4 and v.shape[2:] == (64, 64) and v.dtype == np.int8]
    end = None
    for name in reversed(ends):  # the deepest int8 stem value that is a valid stage end
        try:
            stage_of(q, q.value(name))
        except TilingError:
            continue
        end = name
        break
    assert end is not None, ends
    tiled = parse_pass(f"tile{{stage_end={end},n=4}}")(q.clone(), PassContext()).graph
    assert tiled.value(end).quant is not None
    ref = Interpreter(q).run([unet_x])
    got = Interpreter(tiled).run([unet_x])
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_bad_requests_name_the_value(unet):
    g = unet.clone()
    with pytest.raises(TilingError, match=r"n=3 does not divide the 64x64 feature map of "
                                          r"stage end '/enc1/enc1.2/Relu_output_0'"):
        tile_stage(g, UNET_END, 3)
    with pytest.raises(TilingError, match=r"n=65 exceeds the 64x64 feature map"):
        tile_stage(g, UNET_END, 65)
    # enc2's conv reads the pooled enc1 output, which the decoder also reads: not main path
    with pytest.raises(TilingError, match=r"stage end '/enc2/enc2.2/Relu_output_0' is not on "
                                          r"the main path: '/enc1/enc1.2/Relu_output_0'"):
        parse_pass("tile{stage_end=/enc2/enc2.2/Relu_output_0,n=2}")(g, PassContext())
    with pytest.raises(TilingError, match="stage_end='nope': no such value"):
        parse_pass("tile{stage_end=nope,n=2}")(g, PassContext())
    with pytest.raises(TilingError, match="graph input"):
        tile_stage(g, g.inputs[0].name, 2)
    assert g.to_text() == unet.to_text()  # a refused request changes nothing


@pytest.fixture(scope="module")
def deeplab():
    if not DEEPLAB.exists():
        pytest.fail(f"{DEEPLAB} is missing: run `python scripts/train_deeplab.py`")
    return _prepared(DEEPLAB)


@pytest.mark.slow
def test_deeplab_auto_tiling_lowers_the_peak_exactly(deeplab):
    """The automatic choice: a main-path stem end and n under the 5 % MAC cap, a lower
    planned peak, the estimate equal to the planned bound of the built graph, and the
    same outputs (the v3+ decoder tap inside features.3 limits the stage to features.2)."""
    result = parse_pass("tile")(deeplab.clone(), PassContext())
    s = result.stats
    assert s["n"] > 1 and s["peak_after"] < s["peak_before"], s
    assert 0 < s["mac_overhead"] <= 0.05
    chosen = [c for c in s["candidates"] if (c["stage_end"], c["n"]) == (s["stage_end"], s["n"])]
    assert chosen and chosen[0]["estimated_peak"] == s["peak_after"]
    assert "features.3" not in s["stage_end"] and "features.2" in s["stage_end"]
    x = load_dataset("seg-scenes-256", "test", n=1).inputs(0, 1)
    ref = Interpreter(deeplab).run([x])[0]
    got = Interpreter(result.graph).run([x])[0]
    assert np.max(np.abs(got - ref)) <= 1e-6
    print("\n" + json.dumps({k: v for k, v in s.items() if k != "candidates"}))

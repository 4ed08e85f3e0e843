"""tile{tail=...,labels=1}: the final upsample + ArgMax in bands is exact (interpreter,
onnxruntime, host TVM, int8), lowers the planned peak, and refuses what it cannot do."""
import numpy as np
import onnxruntime as ort
import pytest

import compiler
from compiler.interpreter import Interpreter
from compiler.memory_plan import lifetimes, lower_bound
from compiler.onnx_io import export_model
from compiler.pass_manager import PassContext, parse_pass
from conftest import ROOT
from passes.tail_tiling import band_bounds, find_tail
from passes.tiling import TilingError

DEEPLAB_513 = ROOT / "baselines" / "deeplabv3_scenes_513.onnx"


def _head(h=9, out=33, ctm="align_corners", mode="linear", scales=None, argmax=None,
          channels=5):
    """conv 3x3 (3 -> ``channels``) at h x h, then Resize to ``out`` x ``out`` (sizes, or
    ``scales`` when given), optionally an ArgMax over channels (``argmax`` = keepdims)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3))
                                     .astype(np.float32), "w")]
    resize_in = ["c", "", ""]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.array([1, 1, scales, scales], np.float32), "s"))
        resize_in[2] = "s"
        out = int(h * scales)
    else:
        inits.append(numpy_helper.from_array(np.array([1, channels, out, out], np.int64), "z"))
        resize_in.append("z")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Resize", resize_in, ["logits"], mode=mode,
                              coordinate_transformation_mode=ctm, nearest_mode="floor")]
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, channels, out, out])
    if argmax is not None:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1,
                                      keepdims=argmax))
        y = helper.make_tensor_value_info(
            "labels", TensorProto.INT64, [1, 1, out, out] if argmax else [1, out, out])
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, h])],
        [y], inits)
    return compiler.import_model(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))


def _x(g, seed=1):
    return np.random.default_rng(seed).standard_normal(g.inputs[0].shape).astype(np.float32)


def _ort(g, x, outputs=None, optimize=False):
    """Run ``g`` on onnxruntime.  Graph optimizations are off by default: with them, ORT
    rewrites the untiled head's Conv -> Resize into its NCHWc Upsample kernel (which
    rounds differently, 1 ulp), while the bands' Slice keeps the plain Resize kernel --
    a comparison of two different kernels, not of the tiling."""
    model = export_model(g)
    if outputs:  # expose values inside the graph (the band logits) as outputs too
        from onnx import helper
        for v in outputs:
            model.graph.output.append(helper.make_value_info(v.name, helper.make_tensor_type_proto(
                1, list(v.shape))))
    so = ort.SessionOptions()
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, {g.inputs[0].name: x})


def _tile(g, spec):
    return parse_pass(spec)(g.clone(), PassContext())


@pytest.mark.parametrize("kind", [
    dict(h=9, out=33, ctm="align_corners"),            # DeepLab's head: step 1/4
    dict(h=8, scales=2.0, ctm="half_pixel"),            # U-Net style x2, edge clamping
    dict(h=8, scales=4.0, ctm="asymmetric"),
    dict(h=8, scales=2.0, ctm="half_pixel", mode="nearest"),
])
def test_band_logits_equal_the_untiled_resize_bitwise(kind):
    """Every band's cropped Resize output equals the untiled Resize's rows bit for bit, on
    onnxruntime and in the interpreter; the labels equal ORT's argmax of its logits."""
    g = _head(**kind)
    result = _tile(g, "tile{tail=4,labels=1,stem=0}")
    t = result.graph
    assert result.stats["tail"]["bands"] == 4
    assert not any(tuple(v.shape) == tuple(g.outputs[0].shape) for v in t.values
                   if v.producer is not None), "the full-size logits still exist"
    x = _x(g)
    ref = _ort(g, x)[0]
    crops = [n.outputs[0] for n in t.topo_order() if n.name.endswith("_crop") or
             (n.op_type == "Resize" and n.outputs[0].consumers[0].op_type == "ArgMax")]
    assert len(crops) == 4
    got = _ort(t, x, crops)
    bounds = band_bounds(find_tail(_tile(g, "tile{tail=1,labels=1,stem=0}").graph,
                                   labels=True).resize, 4)
    interp = Interpreter(g).run([x])[0]
    rows = 0
    for (a, b), band in zip(zip(bounds, bounds[1:]), got[1:]):
        assert band.shape[2] == b - a
        assert np.array_equal(band, ref[:, :, a:b]), (a, b, np.max(np.abs(band - ref[:, :, a:b])))
        rows += b - a
    assert rows == ref.shape[2]
    assert np.array_equal(got[0], np.argmax(ref, axis=1)[:, None])
    optimized = _ort(g, x, optimize=True)[0]  # ORT's own rewrites: within 1e-6
    for (a, b), band in zip(zip(bounds, bounds[1:]), _ort(t, x, crops, optimize=True)[1:]):
        assert np.max(np.abs(band - optimized[:, :, a:b])) <= 1e-6
    t_interp = Interpreter(t).run([x])[0]
    assert np.array_equal(t_interp, np.argmax(interp, axis=1)[:, None])


def test_argmax_in_the_graph_is_tiled_as_is():
    g = _head(argmax=0)  # keepdims=0: labels [1, 33, 33], bands concatenated on axis 1
    result = _tile(g, "tile{tail=8,stem=0}")
    t = result.graph
    assert t.outputs[0].name == "labels" and tuple(t.outputs[0].shape) == (1, 33, 33)
    assert len(t.find("ArgMax")) == 8 and len(t.find("Resize")) == 8
    x = _x(g)
    assert np.array_equal(Interpreter(t).run([x])[0], Interpreter(g).run([x])[0])
    assert np.array_equal(_ort(t, x)[0], _ort(g, x)[0])


def test_planned_peak_goes_down():
    g = _head(h=17, out=129, channels=21)  # logits 21 x 129 x 129 fp32 = 1.33 MiB
    untiled = _tile(g, "tile{tail=1,labels=1,stem=0}").graph
    tiled = _tile(g, "tile{tail=8,labels=1,stem=0}")
    before, after = lower_bound(lifetimes(untiled)), lower_bound(lifetimes(tiled.graph))
    assert tiled.stats["tail"]["peak_before"] == lower_bound(lifetimes(g))
    assert tiled.stats["tail"]["peak_after"] == after
    # untiled: the full logits + labels; tiled: one band's logits + the label map twice
    # (the Concat's inputs and output are separate buffers in the plan)
    assert before >= 21 * 129 * 129 * 4 and after < before / 2, (before, after)


def test_int8_tail_is_bit_exact_for_any_ratio():
    """q.Resize bands slice the integer interpolation rows: exact even where a float
    Resize's band positions would round differently (16 -> 256 rows: step 1/17)."""
    g = _head(h=16, out=256)
    with pytest.raises(TilingError, match=r"16 -> 256 rows, align_corners, linear\) cannot "
                                          r"be computed in bands exactly.*1/17"):
        _tile(g, "tile{tail=4,labels=1,stem=0}")
    calib = [{"x": _x(g, seed)} for seed in range(4)]
    q = parse_pass("quantize")(g.clone(), PassContext(calibration_data=calib)).graph
    assert q.outputs[0].producer.op_type == "Dequantize"
    t = _tile(q, "tile{tail=5,labels=1,stem=0}").graph
    assert len(t.find("Resize")) == 5 and all(n.domain == "q" for n in t.find("Resize"))
    ref = _tile(q, "tile{tail=1,labels=1,stem=0}").graph
    x = _x(g, 7)
    a, b = Interpreter(t).run([x])[0], Interpreter(ref).run([x])[0]
    assert a.dtype == b.dtype == np.int64 and np.array_equal(a, b)
    logits = Interpreter(q).run([x])[0]
    assert np.array_equal(a, np.argmax(logits, axis=1)[:, None])


def test_bad_requests_name_the_problem():
    g = _head()
    text = g.to_text()
    with pytest.raises(TilingError, match="graph output 'logits' is the full-resolution "
                                          "resized map itself.*pass labels=1"):
        _tile(g, "tile{tail=4,stem=0}")
    with pytest.raises(TilingError, match=r"labels=1 asks for tiled labels: give the band "
                                          r"count too"):
        _tile(g, "tile{labels=1}")
    with pytest.raises(TilingError, match=r"tail=-2: the band count must be >= 1"):
        _tile(g, "tile{tail=-2}")
    with pytest.raises(TilingError, match=r"tail=9: Resize '.*' has 33 output rows whose "
                                          r"exact band boundaries are every 4 rows: at most 8"):
        _tile(g, "tile{tail=9,labels=1,stem=0}")
    with pytest.raises(TilingError, match="stem=0 and tail=0: nothing to tile"):
        _tile(g, "tile{stem=0}")
    with pytest.raises(TilingError, match="cubic"):
        _tile(_head(mode="cubic"), "tile{tail=2,labels=1,stem=0}")
    assert g.to_text() == text  # refusals change nothing
    no_resize = _head()
    no_resize.outputs[0] = no_resize.value("c")
    no_resize.remove_unused()
    with pytest.raises(TilingError, match=r"no graph output is a Resize.*'c' is computed by "
                                          r"node"):
        _tile(no_resize, "tile{tail=2,labels=1,stem=0}")


@pytest.mark.slow
def test_tail_matches_untiled_on_host_tvm():
    g = _head(h=9, out=33)
    x = _x(g)
    ref = compiler.compile(_tile(g, "tile{tail=1,labels=1,stem=0}").graph,
                           target="host").run({"x": x})[0]
    got = compiler.compile(_tile(g, "tile{tail=4,labels=1,stem=0}").graph,
                           target="host").run({"x": x})[0]
    assert got.shape == ref.shape == (1, 1, 33, 33)
    assert np.array_equal(got, ref)
    assert np.array_equal(got, np.argmax(_ort(g, x)[0], axis=1)[:, None])


@pytest.mark.slow
def test_int8_tail_matches_untiled_on_host_tvm():
    g = _head(h=16, out=256)
    q = parse_pass("quantize")(g.clone(), PassContext(
        calibration_data=[{"x": _x(g, seed)} for seed in range(4)])).graph
    x = _x(g, 7)
    ref = compiler.compile(_tile(q, "tile{tail=1,labels=1,stem=0}").graph,
                           target="host").run({"x": x})[0]
    got = compiler.compile(_tile(q, "tile{tail=8,labels=1,stem=0}").graph,
                           target="host").run({"x": x})[0]
    assert np.array_equal(got, ref)
    assert np.array_equal(got, Interpreter(_tile(q, "tile{tail=8,labels=1,stem=0}").graph)
                          .run([x])[0])


@pytest.mark.slow
def test_deeplab_513_tail_and_stem_lower_the_plan_and_keep_the_labels():
    """The shipped DeepLab v3 at 513x513: stem + tail tiling takes the planned peak far
    below the stem-only plan (the logits' 21.1 MiB), labels equal onnxruntime's argmax."""
    if not DEEPLAB_513.exists():
        pytest.fail(f"{DEEPLAB_513} is missing: run `python scripts/train_deeplab.py`")
    g = compiler.import_model(str(DEEPLAB_513))
    for spec in ("fold-bn", "cleanup"):
        g = parse_pass(spec)(g).graph
    result = _tile(g, "tile{tail=16,labels=1,stem=0}")
    tail = result.stats["tail"]
    assert tail["bands"] == 16 and tail["max_input_rows"] == 3  # 33 -> 513: 2 rows + 1
    t = result.graph
    x = _x(g)
    s = ort.InferenceSession(str(DEEPLAB_513), providers=["CPUExecutionProvider"])
    labels = np.argmax(s.run(None, {"input": x})[0], axis=1)[:, None]
    assert np.array_equal(_ort(t, x)[0], labels)
    assert np.array_equal(Interpreter(t).run([x])[0],
                          np.argmax(Interpreter(g).run([x])[0], axis=1)[:, None])
    stem = lower_bound(lifetimes(_tile(g, "tile").graph))  # automatic stem choice
    both = _tile(g, "tile{tail=16,labels=1}")
    # stem only: the 513x513x21 fp32 logits (21.1 MiB) are the peak; with the tail gone,
    # the automatic stem choice can go deeper (features.4, n=5, 3 % MACs): 8.6 MiB
    assert stem > 21 * 2 ** 20 and both.stats["peak_after"] < 10 * 2 ** 20, (stem, both.stats)
    assert both.stats["mac_overhead"] <= 0.05

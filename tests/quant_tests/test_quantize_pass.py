"""The quantize pass on whole models: interpreter vs TVM bit-exact, QDQ export vs
onnxruntime, accuracy sanity against the float model, bit widths, binary weights, options."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from compiler.interpreter import Interpreter
from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, PassOptionError, parse_pass
from compiler.qdq_export import export_qdq
from passes.quantization import CalibrationError, QuantizationWarning

from tests.conftest import model_path, ort_run
from .helpers import assert_bit_exact

MODELS = ["resnet_tiny", "dwsep_tiny", "concat_tiny", "unet_tiny"]


def _setup(name, seed=0):
    graph = import_model(model_path(name))
    shape = graph.inputs[0].shape
    rng = np.random.default_rng(seed)
    calib = [{graph.inputs[0].name: rng.standard_normal((8,) + shape[1:]).astype(np.float32)}]
    x = {graph.inputs[0].name: rng.standard_normal(shape).astype(np.float32)}
    return graph, calib, x


def _quantize(graph, calib, spec="quantize"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        return parse_pass(spec)(graph.clone(), PassContext(calibration_data=calib))


@pytest.mark.parametrize("name", MODELS)
def test_model_bit_exact_on_tvm_and_close_to_float_and_ort_qdq(name):
    graph, calib, x = _setup(name)
    result = _quantize(graph, calib)
    qg = result.graph
    assert result.stats["quantized_layers"] >= 8
    ops = {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in qg.topo_order()}
    assert "q.Conv" in ops and "q.Requantize" in ops and "Conv" not in ops
    ours = assert_bit_exact(qg, x)[0]
    ref = Interpreter(graph).run(x)[0]
    out_scale = qg.outputs[0].producer.attrs["scale"]
    assert np.abs(ours - ref).max() < 0.05 * np.abs(ref).max() + 4 * out_scale
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.999
    # QDQ export runs in onnxruntime and agrees within one output step (two at a few
    # outputs: onnxruntime rounds half to even where we round half up, at every integer
    # op of the chain)
    ort = ort_run(export_qdq(qg), x)[0]
    diff = np.abs(ort - ours)
    assert diff.max() <= 2 * out_scale * 1.001
    assert np.mean(diff > out_scale * 1.001) < 1e-3


def test_unet_keeps_uncovered_ops_float_with_a_warning_and_stat():
    graph, calib, x = _setup("unet_tiny")
    with pytest.warns(QuantizationWarning, match="HardSigmoid"):
        result = parse_pass("quantize")(graph.clone(), PassContext(calibration_data=calib))
    assert result.stats["float_ops"] == {"LeakyRelu": 1, "HardSigmoid": 1, "Mul": 2,
                                         "Sigmoid": 1}
    assert result.stats["dequantize_nodes"] >= 2 and result.stats["quantize_nodes"] >= 2
    # the transposed convolution and the (linear) Resize are integer
    ops = [f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in result.graph.topo_order()]
    assert "q.ConvTranspose" in ops and "ConvTranspose" not in ops
    assert "q.Resize" in ops and "Resize" not in ops
    for node in result.graph.topo_order():  # every float op is fed by a q.Dequantize
        if not node.domain and node.op_type in result.stats["float_ops"]:
            assert all(v.dtype == np.float32 for v in node.inputs if v is not None)


def _dw_model(small: float):
    """Conv(1->4) -> ReLU6 -> depthwise 3x3 -> ReLU -> 1x1 Conv(4->3); channel 1 of the
    first conv is ``small`` times the others and the depthwise filter makes up for it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    w1[1] *= small
    w2 = rng.standard_normal((4, 1, 3, 3)).astype(np.float32) * 0.5
    w2[1] /= small
    w3 = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "w1"), (rng.standard_normal(4).astype(np.float32) * 0.1, "b1"), (w2, "w2"),
        (w3, "w3"), (np.array(0, np.float32), "lo"), (np.array(6, np.float32), "hi")]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"])]
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return import_model(model)


def test_depthwise_channel_equalization_is_exact_and_recovers_small_channels():
    graph = _dw_model(0.03)
    rng = np.random.default_rng(5)
    calib = [{"x": rng.standard_normal((16, 1, 8, 8)).astype(np.float32)}]
    xs = rng.standard_normal((32, 1, 8, 8)).astype(np.float32)
    from compiler.batching import with_batch_size

    ref = Interpreter(with_batch_size(graph, 32)).run({"x": xs})[0]
    errors, results = {}, {}
    for mode in ("off", "depthwise"):
        result = _quantize(graph, calib, f"quantize{{bits=8,act_bits=5,equalize={mode}}}")
        out = Interpreter(with_batch_size(result.graph, 32)).run({"x": xs})[0]
        errors[mode] = float(np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
        results[mode] = result
    assert results["off"].stats["equalized_tensors"] == 0
    assert results["depthwise"].stats["equalized_tensors"] == 1  # only the depthwise input
    assert errors["depthwise"] < 0.5 * errors["off"], errors
    # exact in real arithmetic: per-channel weights absorb the gains, so the integer weights
    # and biases are the same; only weight scales and requantize multipliers moved
    convs = {mode: [n for n in r.graph.topo_order() if n.domain == "q" and n.op_type == "Conv"]
             for mode, r in results.items()}
    wq = {mode: [n.inputs[1] for n in nodes] for mode, nodes in convs.items()}
    for a, b in zip(convs["off"][:2], convs["depthwise"][:2]):
        for va, vb in zip(a.inputs[1:], b.inputs[1:]):  # integer weights (and bias)
            np.testing.assert_array_equal(va.const, vb.const)
    gain = wq["depthwise"][0].quant.scale / wq["off"][0].quant.scale
    assert gain[1] > 10 and np.all(gain >= 1 - 1e-9)
    np.testing.assert_allclose(wq["depthwise"][1].quant.scale * gain, wq["off"][1].quant.scale,
                               rtol=1e-9)
    assert_bit_exact(results["depthwise"].graph, {"x": xs[:1]})
    with pytest.raises(PassOptionError, match="equalize"):
        parse_pass("quantize{equalize=sometimes}")


@pytest.mark.parametrize("spec,on_tvm", [
    ("quantize{bits=4,act_bits=4,calibration=percentile}", False),
    ("quantize{bits=1,act_bits=2,first_layer_bits=8,calibration=entropy}", True),
    ("quantize{bits=6,act_bits=5,symmetric_acts=true,per_channel=false}", False),
    ("quantize{bits=2,act_bits=1}", True),
])
def test_low_bits_and_binary_bit_exact(spec, on_tvm):
    graph, calib, x = _setup("resnet_tiny")
    result = _quantize(graph, calib, spec)
    qg = result.graph
    if on_tvm:
        assert_bit_exact(qg, x)
    out = Interpreter(qg).run(x)[0]
    assert np.isfinite(out).all()
    opts = parse_pass(spec)
    for node in qg.topo_order():
        if node.domain == "q" and node.op_type == "Conv":
            w = node.inputs[1]
            wb = w.quant.bits
            lim = 1 if wb == 1 else 2 ** (wb - 1) - 1
            assert np.abs(w.const).max() <= lim
            if wb == 1:
                assert set(np.unique(w.const)) <= {-1, 1}
    if "first_layer_bits=8" in spec:
        layers = list(result.stats["layers"].values())
        assert layers[0] == [8, 8] and all(v == [1, 2] for v in layers[1:])
        assert result.stats["theoretical_speedup"] > 16
    else:
        assert result.stats["theoretical_speedup"] >= 1024 / (opts.bits * max(opts.act_bits, 1)) / 2


def test_mixed_precision_bits_per_layer_and_layers_option():
    graph, calib, x = _setup("resnet_tiny")
    spec = "quantize{bits_per_layer=[/layer1/conv1/Conv:4/6;/fc/Gemm:2]}"
    result = _quantize(graph, calib, spec)
    assert result.stats["layers"]["/layer1/conv1/Conv"] == [4, 6]
    assert result.stats["layers"]["/fc/Gemm"][0] == 2
    assert_bit_exact(result.graph, x)
    only = _quantize(graph, calib, "quantize{layers=[/fc/Gemm]}")
    assert only.stats["quantized_layers"] == 1
    assert [n.op_type for n in only.graph.topo_order() if n.domain == "q"] == \
        ["Quantize", "Gemm", "Requantize", "Dequantize"]
    ref = Interpreter(graph).run(x)[0]
    assert np.abs(Interpreter(only.graph).run(x)[0] - ref).max() < 0.05 * np.abs(ref).max()


def test_calibration_errors_are_clear():
    graph, calib, _ = _setup("resnet_tiny")
    with pytest.raises(CalibrationError, match=r"calibration_data=.*PassContext"):
        parse_pass("quantize")(graph.clone(), PassContext())
    with pytest.raises(CalibrationError, match=r"shape \(2, 3, 16, 16\).*expects \(1, 3, 32, 32\)"):
        parse_pass("quantize")(graph.clone(), PassContext(
            calibration_data=[{"input": np.zeros((2, 3, 16, 16), np.float32)}]))
    with pytest.raises(CalibrationError, match="does not have"):
        parse_pass("quantize")(graph.clone(), PassContext(
            calibration_data=[{"image": np.zeros((1, 3, 32, 32), np.float32)}]))


@pytest.mark.parametrize("spec", ["quantize{bits=0}", "quantize{bits=9}", "quantize{act_bits=16}",
                                  "quantize{first_layer_bits=12}",
                                  "quantize{bits_per_layer=[conv:9]}",
                                  "quantize{calibration=l2}"])
def test_bad_bits_raise_pass_option_error(spec):
    with pytest.raises(PassOptionError):
        parse_pass(spec)


def test_unknown_layer_names_raise():
    graph, calib, _ = _setup("resnet_tiny")
    with pytest.raises(PassOptionError, match="not nodes"):
        _quantize(graph, calib, "quantize{layers=[nope]}")


def test_compile_api_passes_calibration_data_to_quantize():
    import compiler

    graph, calib, x = _setup("dwsep_tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        cm = compiler.compile(model_path("dwsep_tiny"), passes=["quantize{bits=8}"],
                              calibration_data=calib, build=False)
    assert any(n.domain == "q" for n in cm.graph.topo_order())
    with pytest.raises(CalibrationError, match="calibration_data"):
        compiler.compile(model_path("dwsep_tiny"), passes=["quantize"], build=False)

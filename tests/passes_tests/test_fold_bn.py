"""fold-bn folds into Conv, ConvTranspose and Gemm, and leaves no BatchNormalization."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import import_model
from compiler.interpreter import Interpreter
from compiler.pass_manager import PassContext, VerifyInstrument, parse_pass
from conftest import SMALL_MODELS, assert_close, model_input, model_path, ort_run

RNG = np.random.default_rng(0)


def _bn_inits(prefix, c):
    return [numpy_helper.from_array(a.astype(np.float32), f"{prefix}_{n}") for n, a in [
        ("g", RNG.uniform(0.5, 2, c)), ("b", RNG.standard_normal(c)),
        ("m", RNG.standard_normal(c)), ("v", RNG.uniform(0.2, 3, c))]]


def _bn(prefix, x, y):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{n}" for n in "gbmv"], [y],
                            epsilon=1e-3)


def _fold(model):
    graph = import_model(model)
    data = RNG.standard_normal(graph.inputs[0].shape).astype(np.float32)
    before = Interpreter(graph).run([data])
    result = parse_pass("fold-bn")(graph, PassContext(instruments=[VerifyInstrument()]))
    after = Interpreter(result.graph).run([data])
    assert not result.graph.find("BatchNormalization")
    for a, b in zip(after, before):
        assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert_close(after[0], ort_run(model, {graph.inputs[0].name: data})[0], rtol=1e-5)
    return result


def _model(nodes, x_shape, inits):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph(nodes, "m", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("group, bias", [(1, True), (2, False), (8, True)])
def test_conv_bn(group, bias):
    w = numpy_helper.from_array(RNG.standard_normal((8, 8 // group, 3, 3)).astype(np.float32), "w")
    inits = [w] + _bn_inits("bn", 8)
    ins = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "b"))
        ins.append("b")
    model = _model([helper.make_node("Conv", ins, ["c"], group=group, pads=[1, 1, 1, 1]),
                    _bn("bn", "c", "y")], (1, 8, 6, 6), inits)
    result = _fold(model)
    assert result.stats == {"folded": 1, "as_mul_add": 0}
    assert [n.op_type for n in result.graph.topo_order()] == ["Conv"]
    assert result.graph.outputs[0].name == "y"


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_bn(group):
    w = numpy_helper.from_array(RNG.standard_normal((4, 6 // group, 3, 3)).astype(np.float32), "w")
    model = _model([helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=group,
                                     strides=[2, 2], output_padding=[1, 1]),
                    _bn("bn", "c", "y")], (1, 4, 5, 5), [w] + _bn_inits("bn", 6))
    assert _fold(model).stats["folded"] == 1


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_bn(trans_b):
    shape = (5, 6) if trans_b else (6, 5)
    w = numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), "w")
    c = numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "c")
    model = _model([helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=trans_b, beta=0.5,
                                     alpha=1.5),
                    _bn("bn", "g", "y")], (3, 6), [w, c] + _bn_inits("bn", 5))
    assert _fold(model).stats["folded"] == 1


def test_bn_without_foldable_producer_becomes_mul_add():
    model = _model([helper.make_node("Relu", ["x"], ["r"]), _bn("bn", "r", "y")], (1, 3, 4, 4),
                   _bn_inits("bn", 3))
    result = _fold(model)
    assert result.stats == {"folded": 0, "as_mul_add": 1}
    assert [n.op_type for n in result.graph.topo_order()] == ["Relu", "Mul", "Add"]


def test_shared_conv_output_is_not_folded_into():
    w = numpy_helper.from_array(RNG.standard_normal((3, 3, 1, 1)).astype(np.float32), "w")
    model = _model([helper.make_node("Conv", ["x", "w"], ["c"]), _bn("bn", "c", "n"),
                    helper.make_node("Add", ["c", "n"], ["y"])], (1, 3, 4, 4),
                   [w] + _bn_inits("bn", 3))
    assert _fold(model).stats == {"folded": 0, "as_mul_add": 1}


@pytest.mark.parametrize("name", SMALL_MODELS + ["ppocr_det"])
def test_models_lose_every_bn(name):
    graph = import_model(model_path(name))
    had = len(graph.find("BatchNormalization"))
    x = model_input(name)
    before = Interpreter(graph).run([x])
    result = parse_pass("fold-bn")(graph)
    assert not result.graph.find("BatchNormalization")
    assert result.modified == (had > 0)
    for a, b in zip(Interpreter(result.graph).run([x]), before):
        assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_no_bn_means_not_modified():
    graph = import_model(model_path("mobilenet_v2"))
    assert not graph.find("BatchNormalization")
    assert parse_pass("fold-bn")(graph).modified is False

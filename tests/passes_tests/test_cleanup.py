"""cleanup: identity/dropout removal, constant folding, dead code; modified only when it acts."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from compiler import import_model
from compiler.interpreter import Interpreter
from compiler.pass_manager import parse_pass
from conftest import SMALL_MODELS, model_path


def _model():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    c = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "c")
    nodes = [helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Dropout", ["i"], ["d"]),
             helper.make_node("Neg", ["c"], ["nc"]),  # constant subgraph
             helper.make_node("Add", ["d", "nc"], ["y"]),
             helper.make_node("Relu", ["x"], ["dead"])]
    m = helper.make_model(helper.make_graph(nodes, "m", [x], [y], [c]),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_cleanup_removes_identity_dropout_constants_and_dead_code():
    graph = import_model(_model(), fold=False)
    assert [n.op_type for n in graph.topo_order()] == ["Identity", "Dropout", "Neg", "Add", "Relu"]
    data = np.ones((1, 4), np.float32)
    result = parse_pass("cleanup")(graph)
    assert [n.op_type for n in result.graph.topo_order()] == ["Add"]
    assert result.stats == {"remove-identity": {"removed": 2}, "fold-constants": {"folded": 1},
                            "dce": {"removed": 2},  # the dead Relu and the constant only Neg read
                            "fold-pad": {"folded": 0}}
    np.testing.assert_array_equal(Interpreter(result.graph).run([data])[0], [[1, 0, -1, -2]])
    again = parse_pass("cleanup")(result.graph)
    assert again.modified is False


def test_cleanup_on_clean_models_reports_unmodified():
    for name in SMALL_MODELS:
        result = parse_pass("cleanup")(import_model(model_path(name)))
        assert result.modified is False, (name, result.stats)


def test_dedup_constants_merges_relu6_bounds_not_float_tensors():
    """mobilenet_fmnist exports a 0 and a 6 per Clip: dedup keeps one of each, outputs are
    unchanged, equal float tensors of rank >= 1 (trainable) stay apart."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    graph = import_model(str(root / "baselines" / "mobilenet_fmnist.onnx"))
    bounds = [v for n in graph.find("Clip") for v in n.inputs[1:]]
    assert len(bounds) == 18 and len({id(v) for v in bounds}) == 18
    zeros = graph.add_constant("zero_bias", np.zeros(10, np.float32))
    twin = graph.add_constant("zero_bias_twin", np.zeros(10, np.float32))
    out = graph.outputs[0]
    graph.outputs[0] = graph.op("Add", graph.op("Add", out, zeros), twin)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    before = Interpreter(graph).run([x])[0]
    n_constants = len(graph.constants)

    result = parse_pass("dedup-constants")(graph)
    assert result.stats == {"merged": 16} and result.modified
    bounds = [v for n in result.graph.find("Clip") for v in n.inputs[1:]]
    assert sorted({float(v.const) for v in bounds}) == [0.0, 6.0]
    assert len({id(v) for v in bounds}) == 2
    assert len(result.graph.constants) == n_constants - 16
    assert {"zero_bias", "zero_bias_twin"} <= {v.name for v in result.graph.constants}
    np.testing.assert_array_equal(Interpreter(result.graph).run([x])[0], before)
    assert parse_pass("dedup-constants")(result.graph).modified is False

"""cleanup: identity/dropout removal, constant folding, dead code; modified only when it acts."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from compiler import import_model
from compiler.interpreter import Interpreter
from compiler.passes import parse_pass
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
                            "dce": {"removed": 2}}  # the dead Relu and the constant only Neg read
    np.testing.assert_array_equal(Interpreter(result.graph).run([data])[0], [[1, 0, -1, -2]])
    again = parse_pass("cleanup")(result.graph)
    assert again.modified is False


def test_cleanup_on_clean_models_reports_unmodified():
    for name in SMALL_MODELS:
        result = parse_pass("cleanup")(import_model(model_path(name)))
        assert result.modified is False, (name, result.stats)

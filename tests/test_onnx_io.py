"""ONNX import/export: real and generated models, exporter shape chains, bad input."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import ModelImportError, UnsupportedOpError, export_model, import_model
from compiler.interpreter import InputError, Interpreter
from conftest import (REAL_MODELS, SMALL_MODELS, assert_close, model_input, model_path, ort_run)


@pytest.mark.parametrize("name", SMALL_MODELS + REAL_MODELS)
def test_interpreter_and_export_match_onnxruntime(name):
    path = model_path(name)
    graph = import_model(path)
    x = model_input(name)
    feed = {graph.inputs[0].name: x}
    expected = ort_run(path, feed)
    interp = Interpreter(graph)
    got = interp.run(feed)
    for a, e in zip(got, expected):
        assert_close(a, e, what=f"{name} interpreter")
    exported = export_model(graph)
    onnx.checker.check_model(exported)
    for a, e in zip(ort_run(exported, feed), expected):
        assert_close(a, e, what=f"{name} exported")
    assert interp.peak_bytes > 0


def _model(nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_exporter_shape_chain_folds_to_a_static_reshape():
    # x -> Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape(x): torch's flatten idiom
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["i0"], value=numpy_helper.from_array(np.array(0))),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Constant", [], ["ax"], value=numpy_helper.from_array(np.array([0]))),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
        helper.make_node("Constant", [], ["m1"], value=numpy_helper.from_array(np.array([-1]))),
        helper.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
        helper.make_node("Cast", ["shape"], ["shape64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "shape64"], ["y"]),
    ]
    model = _model(nodes, [x], [y])
    graph = import_model(model)
    assert [n.op_type for n in graph.topo_order()] == ["Reshape"]
    assert graph.outputs[0].shape == (2, 12)
    assert graph.topo_order()[0].inputs[1].const.tolist() == [2, -1]
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert_close(Interpreter(graph).run([data])[0], data.reshape(2, 12))


def test_old_opset_forms_are_adapted():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 2])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c")]
    nodes = [helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, split=[2, 4]),
             helper.make_node("Unsqueeze", ["s0"], ["a"], axes=[0]),
             helper.make_node("Squeeze", ["s1"], ["b0"], axes=[0]),
             helper.make_node("Softmax", ["b0"], ["b"], axis=1),
             helper.make_node("ReduceMean", ["x"], ["c"], axes=[2], keepdims=0)]
    model = _model(nodes, [x], outs, opset=11)
    data = np.random.default_rng(0).standard_normal((1, 6, 2)).astype(np.float32)
    graph = import_model(model)
    for got, exp in zip(Interpreter(graph).run([data]), ort_run(model, {"x": data})):
        assert_close(got, exp)


def test_opset18_forms_are_adapted():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("a", "b", "c", "d")]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "axes"),
             numpy_helper.from_array(np.array([1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array([2], np.int64), "pad_axes")]
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2),
             helper.make_node("ReduceMean", ["x", "axes"], ["c"], keepdims=1),
             helper.make_node("Pad", ["x", "pads", "", "pad_axes"], ["d"], mode="edge")]
    model = _model(nodes, [x], outs, inits, opset=18)
    data = np.random.default_rng(1).standard_normal((1, 6, 4)).astype(np.float32)
    graph = import_model(model)
    for got, exp in zip(Interpreter(graph).run([data]), ort_run(model, {"x": data})):
        assert_close(got, exp)


def test_auto_pad_is_resolved_to_explicit_pads():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 2, 3, 3))
                                .astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])
    model = _model([node], [x], [y], [w])
    graph = import_model(model)
    conv = graph.find("Conv")[0]
    assert conv.attrs["auto_pad"] == "NOTSET" and conv.attrs["pads"] == [1, 1, 1, 1]
    data = np.random.default_rng(2).standard_normal((1, 2, 7, 7)).astype(np.float32)
    assert_close(Interpreter(graph).run([data])[0], ort_run(model, {"x": data})[0])


# --- bad input ----------------------------------------------------------------------

def test_missing_empty_truncated_and_garbage_files(tmp_path):
    with pytest.raises(ModelImportError, match="ONNX file not found: .*nope.onnx"):
        import_model(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelImportError, match="empty.onnx: the file is empty"):
        import_model(empty)
    data = model_path("tinynet").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError, match="truncated.onnx: not a valid ONNX model"):
        import_model(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\xff" * 100 + b"hello")
    with pytest.raises(ModelImportError, match="garbage.onnx: not a valid ONNX model"):
        import_model(garbage)


def test_unsupported_op_names_op_node_and_supported_set():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model([helper.make_node("Relu", ["x"], ["r"], name="ok"),
                    helper.make_node("Hardmax", ["r"], ["y"], name="my_hardmax")], [x], [y])
    with pytest.raises(UnsupportedOpError,
                       match=r"unsupported op 'Hardmax' \(node 'my_hardmax'\); supported ops: .*Conv"):
        import_model(model)


def test_dynamic_input_needs_a_shape():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    with pytest.raises(ModelImportError, match=r"input 'x' has a dynamic dimension 'batch' "
                                               r"\(axis 0 of \[batch, 4\]\).*input_shapes"):
        import_model(model)
    graph = import_model(model, input_shapes={"x": (3, 4)})
    assert graph.outputs[0].shape == (3, 4)
    with pytest.raises(ModelImportError, match="unknown input"):
        import_model(model, input_shapes={"z": (3, 4)})
    with pytest.raises(ModelImportError, match="fixes it to"):
        import_model(model, input_shapes={"x": (3, 5)})


def test_run_time_inputs_are_checked():
    graph = import_model(model_path("tinynet"))
    interp = Interpreter(graph)
    name = graph.inputs[0].name
    with pytest.raises(InputError, match=rf"input '{name}' has shape \(1, 1, 27, 28\), the model "
                                         r"expects \(1, 1, 28, 28\)"):
        interp.run({name: np.zeros((1, 1, 27, 28), np.float32)})
    with pytest.raises(InputError, match="has dtype float64"):
        interp.run({name: np.zeros((1, 1, 28, 28))})
    with pytest.raises(InputError, match="missing"):
        interp.run({"other": np.zeros((1, 1, 28, 28), np.float32)})


def test_ppocr_constant_node_weights_become_constants():
    graph = import_model(model_path("ppocr_det"))
    assert not graph.find("Constant")
    conv = graph.find("Conv")[0]
    assert conv.inputs[1].is_constant and conv.inputs[1].const.ndim == 4


def test_split_without_sizes_gets_explicit_equal_sizes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in "abc"]
    model = _model([helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1)], [x], outs)
    graph = import_model(model)
    assert graph.find("Split")[0].inputs[1].const.tolist() == [2, 2, 2]
    data = np.arange(6, dtype=np.float32).reshape(1, 6)
    for got, exp in zip(Interpreter(graph).run([data]), ort_run(model, {"x": data})):
        assert_close(got, exp)
    bad = _model([helper.make_node("Split", ["x"], ["a", "b", "c", "d"], axis=1, name="sp")],
                 [x], outs + [helper.make_tensor_value_info("d", TensorProto.FLOAT, [1, 2])])
    with pytest.raises(ValueError, match="node 'sp' \\(Split\\): cannot split 6 elements evenly"):
        import_model(bad)

"""Import gaps the zoo exposed, on tiny hand-made models (fast, always run)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.onnx_io import import_model

from .conftest import assert_close, ort_run


def _opset9_model() -> onnx.ModelProto:
    """tf2onnx-style opset 9: NHWC input transposed, Conv with asymmetric (TF-SAME) pool
    pads, Softmax on 2-D logits; initializers also listed as graph inputs (old IR)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    fc = numpy_helper.from_array((rng.standard_normal((64, 5)) * 0.3).astype(np.float32), "fc")
    shape = numpy_helper.from_array(np.array([1, 64], np.int64), "shape")
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[0, 0, 1, 1]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["m"]),
             helper.make_node("Softmax", ["m"], ["y"])]
    inits = [w, fc, shape]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 3])]
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "tf_style", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)
    onnx.checker.check_model(model)
    return model


def test_opset9_model_is_upgraded_and_matches_onnxruntime():
    model = _opset9_model()
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 3)).astype(np.float32)
    ref = ort_run(model, {"x": x})
    graph = import_model(model)
    assert [v.name for v in graph.inputs] == ["x"]   # initializers are not inputs
    cm = compiler.compile(model, target="host")       # verify: built code vs interpreter
    assert_close(cm.run({"x": x})[0], ref[0], rtol=1e-4, atol=1e-6, what="opset 9 model")

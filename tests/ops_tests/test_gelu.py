"""Gelu (ONNX opset 20), the worked example of CONTRIBUTING's "Add an op", through every
layer against onnxruntime: import of an opset-20 model, the reference kernel, export,
the torch op, and pruning through it.  The TVM host build is checked with the other
lowerings in ``tests/tvm_tests/test_lowering.py`` (cases ``Gelu-erf``/``Gelu-tanh``);
the ONNX conformance cases (``test_gelu_*``) run in ``test_kernels.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compiler.interpreter import run  # noqa: E402
from compiler.onnx_io import ModelExportError, ModelImportError, export_model, import_model  # noqa: E402
from compiler.ops.registry import OpValidationError, UnsupportedOpError, op_traits  # noqa: E402

MODES = ["none", "tanh"]


def _gelu_model(mode: str | None, shape=(2, 3, 5, 7), dtype=np.float32, opset: int = 20,
                conv: bool = False) -> onnx.ModelProto:
    """x -> [Conv ->] Gelu{approximate} [-> Conv] (an opset-``opset`` model)."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    attrs = {} if mode is None else {"approximate": mode}
    nodes, inits = [], []
    src = "x"
    if conv:
        c = shape[1]
        rng = np.random.default_rng(1)
        inits += [numpy_helper.from_array(rng.standard_normal((8, c, 3, 3)).astype(dtype), "w1"),
                  numpy_helper.from_array(rng.standard_normal((4, 8, 1, 1)).astype(dtype), "w2")]
        nodes.append(helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]))
        src = "h"
    nodes.append(helper.make_node("Gelu", [src], ["g"], **attrs))
    out = "g"
    if conv:
        nodes.append(helper.make_node("Conv", ["g", "w2"], ["y"]))
        out = "y"
    out_shape = (shape[0], 4, *shape[2:]) if conv else shape
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info(out, elem, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return model


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _x(shape=(2, 3, 5, 7), dtype=np.float32) -> np.ndarray:
    x = (np.random.default_rng(2).standard_normal(shape) * 3).astype(dtype)
    x.flat[:4] = [0.0, -0.0, 12.0, -12.0]  # saturated tails and the origin
    return x


@pytest.mark.parametrize("mode", MODES + [None])
def test_import_and_kernel_match_onnxruntime(mode):
    model = _gelu_model(mode)
    x = _x()
    graph = import_model(model)
    node = graph.topo_order()[0]
    assert node.op_type == "Gelu" and node.attrs["approximate"] == (mode or "none")
    (got,) = run(graph, x)
    want = _ort(model, x)
    assert got.dtype == want.dtype == np.float32
    # the kernel computes in float64; onnxruntime's float32 tanh differs by up to ~4e-7
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_conv_gelu_conv_matches_onnxruntime(mode):
    model = _gelu_model(mode, conv=True)
    x = _x()
    (got,) = run(import_model(model), x)
    np.testing.assert_allclose(got, _ort(model, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_export_declares_opset_20_and_runs_in_onnxruntime(mode):
    model = _gelu_model(mode, conv=True)
    x = _x()
    graph = import_model(model)
    exported = export_model(graph)
    assert [o.version for o in exported.opset_import if o.domain == ""] == [20]
    onnx.checker.check_model(exported)
    np.testing.assert_allclose(_ort(exported, x), _ort(model, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_ort(exported, x), run(graph, x)[0], rtol=1e-5, atol=1e-4)


def test_graph_without_newer_ops_still_exports_at_opset_17():
    relu_model = export_model(import_model(_relu_model()))
    assert [o.version for o in relu_model.opset_import if o.domain == ""] == [17]
    assert relu_model.ir_version == 8


def _relu_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_export_refuses_a_graph_mixing_gelu_with_an_op_that_changed_after_17():
    """ReduceMean's axes moved from attribute to input at opset 18: one opset cannot hold
    both forms, so export names the ops instead of writing an invalid model."""
    nodes = [helper.make_node("Gelu", ["x"], ["g"]),
             helper.make_node("ReduceMean", ["g", "axes"], ["y"], keepdims=1)]
    graph = helper.make_graph(
        nodes, "mixed", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 1])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    imported = import_model(model)
    with pytest.raises(ModelExportError, match="Gelu.*ReduceMean"):
        export_model(imported)


def test_gelu_before_opset_20_is_refused_by_name():
    with pytest.raises((ModelImportError, UnsupportedOpError), match="Gelu.*17"):
        import_model(_gelu_model("none", opset=17))


def test_bad_approximate_is_a_validation_error():
    from compiler.folding import infer_node
    from compiler.ir import Graph

    g = Graph("bad")
    x = g.add_input("x", (2, 3), np.float32)
    node = g.add_node("Gelu", [x], {"approximate": "fast"})
    with pytest.raises(OpValidationError, match="approximate='fast'"):
        infer_node(node)


def test_integer_input_is_a_validation_error():
    from compiler.folding import infer_node
    from compiler.ir import Graph

    g = Graph("int")
    x = g.add_input("x", (2, 3), np.int32)
    node = g.add_node("Gelu", [x], {"approximate": "none"})
    with pytest.raises(OpValidationError, match="dtype"):
        infer_node(node)


@pytest.mark.parametrize("mode", MODES)
def test_torch_op_matches_onnxruntime(mode):
    torch = pytest.importorskip("torch")
    from compiler.torch import to_torch

    model = _gelu_model(mode, conv=True)
    x = _x()
    module = to_torch(import_model(model))
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    got = got[0] if isinstance(got, (list, tuple)) else got
    np.testing.assert_allclose(got.numpy(), _ort(model, x), rtol=1e-4, atol=1e-4)


def test_traits_and_pruning_through_gelu():
    """Gelu is a unary elementwise op, so pruning follows channels through it."""
    from passes.pruning import prune_graph

    traits = op_traits("Gelu")
    assert traits.elementwise == "unary" and traits.layout_preserving and traits.opset == 20
    graph = import_model(_gelu_model("tanh", conv=True))
    pruned, stats = prune_graph(graph, ratio=0.5, criterion="l1")
    first = pruned.topo_order()[0]
    assert first.op_type == "Conv" and first.inputs[1].shape[0] == 4  # 8 filters -> 4
    assert run(pruned, _x())[0].shape == (2, 4, 5, 7)

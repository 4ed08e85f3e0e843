"""Already-quantized ONNX into the integer IR: our own QDQ export round trip, and ddddocr's
``common_old.onnx`` (DynamicQuantizeLinear + ConvInteger, from PyPI ``ddddocr==1.6.1``)."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.interpreter import Interpreter
from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, parse_pass
from compiler.qdq_export import export_qdq
from passes.quantization import QuantizationWarning

from tests.conftest import model_path
from .helpers import assert_bit_exact


@pytest.mark.parametrize("spec,on_tvm", [("quantize", True), ("quantize{bits=4,act_bits=5}", False)])
def test_qdq_round_trip_back_to_the_same_integer_graph(spec, on_tvm):
    graph = import_model(model_path("concat_tiny"))
    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((8, 3, 32, 32)).astype(np.float32)}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        qg = parse_pass(spec)(graph, PassContext(calibration_data=calib)).graph
    back = import_model(export_qdq(qg))
    result = parse_pass("qdq-to-integer")(back, PassContext())
    assert result.stats["rewritten"] == {"Conv": 8, "Concat": 3, "Gemm": 1}
    ops = {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in result.graph.topo_order()}
    assert {"q.Conv", "q.Requantize", "q.Concat", "q.Gemm"} <= ops and "Conv" not in ops
    x = {"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ours = (assert_bit_exact(result.graph, x) if on_tvm else Interpreter(result.graph).run(x))[0]
    np.testing.assert_array_equal(ours, Interpreter(qg).run(x)[0])


def _ddddocr_model() -> Path:
    spec = importlib.util.find_spec("ddddocr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ddddocr is not installed: pip install --no-deps ddddocr==1.6.1")
    path = Path(list(spec.submodule_search_locations)[0]) / "common_old.onnx"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path


def _cut(path: Path, output: str, width: int = 64) -> onnx.ModelProto:
    from onnx.utils import Extractor

    sub = Extractor(onnx.load(str(path))).extract_model(["input1"], [output])
    for dim, v in zip(sub.graph.input[0].type.tensor_type.shape.dim, [1, 1, 64, width]):
        dim.Clear()
        dim.dim_value = v
    return sub


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input1": x})[0]


def test_ddddocr_dynamic_quantized_cnn_imports_and_matches_onnxruntime():
    path = _ddddocr_model()
    x = np.random.default_rng(0).random((1, 1, 64, 64)).astype(np.float32)
    # first layer: DynamicQuantizeLinear -> ConvInteger -> int32 bias -> rescale: exact
    first = _cut(path, "390")
    graph = import_model(first)
    ops = {n.op_type for n in graph.topo_order()}
    assert {"DynamicQuantizeLinear", "ConvInteger"} <= ops
    np.testing.assert_array_equal(Interpreter(graph).run({"input1": x})[0], _ort(first, x))
    # the whole CNN (21 ConvInteger) up to the LSTM: float ULPs of the sigmoids flip a few
    # dynamic-quantization roundings, so close, not exact
    cnn = _cut(path, "209")
    graph = import_model(cnn)
    assert sum(n.op_type == "ConvInteger" for n in graph.topo_order()) == 21
    ours = Interpreter(graph).run({"input1": x})[0]
    ref = _ort(cnn, x)
    assert np.abs(ours - ref).max() < 0.05 * np.abs(ref).max()
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.999

"""The integer ConvTranspose and Resize in torch (fine-tuning of quantized graphs): same
integers as the interpreter without training, and gradients reach the integer weights."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from compiler.interpreter import Interpreter
from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, parse_pass

from tests.conftest import model_path

torch = pytest.importorskip("torch")

from compiler.torch import from_torch, to_torch  # noqa: E402


def test_quantized_unet_in_torch_matches_the_interpreter_and_trains():
    graph = import_model(model_path("unet_tiny"))
    shape = tuple(graph.inputs[0].shape)
    rng = np.random.default_rng(0)
    calib = [{graph.inputs[0].name: rng.standard_normal((8,) + shape[1:]).astype(np.float32)}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qg = parse_pass("quantize{bits=4,act_bits=6}")(graph, PassContext(
            calibration_data=calib)).graph
    ops = {f"{n.domain}.{n.op_type}" for n in qg.topo_order() if n.domain}
    assert {"q.ConvTranspose", "q.Resize"} <= ops
    module = to_torch(qg)
    step = [n for n in qg.topo_order() if n.domain == "q" and n.op_type == "Dequantize"
            and n.output in qg.outputs][0].attrs["scale"]
    x = rng.standard_normal(shape).astype(np.float32)
    ref = Interpreter(qg).run([x])[0]
    got = module(torch.from_numpy(x))
    assert np.abs(got.detach().numpy() - ref).max() <= step * 1.0001
    got.square().sum().backward()
    ct = next(n for n in qg.topo_order() if n.domain == "q" and n.op_type == "ConvTranspose")
    key = module.names[id(ct.inputs[1])]
    assert key in module.qweights and getattr(module, key).grad.abs().sum() > 0
    back = from_torch(module, qg)
    for a, b in zip(back.constants, qg.constants):
        np.testing.assert_array_equal(a.const, b.const)

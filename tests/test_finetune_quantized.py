"""Fine-tuning of quantized graphs: STE fake quantization of the `q` ops in torch."""
import warnings

import numpy as np
import pytest

import compiler
from compiler.interpreter import Interpreter
from compiler.ops.quant import qrange
from compiler.pass_manager import PassContext, parse_pass
from conftest import ROOT

torch = pytest.importorskip("torch")

from compiler.torch import finetune, from_torch, to_torch  # noqa: E402


def _quantize(graph, calib, spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse_pass(spec)(graph.clone(), PassContext(calibration_data=calib)).graph


def _weights(graph):
    """(value, node) of the integer weights of the multiply layers."""
    return [(node.inputs[1], node) for node in graph.topo_order()
            if node.domain == "q" and node.op_type in ("Conv", "Gemm")]


@pytest.fixture(scope="module")
def resnet_q8():
    graph = compiler.import_model(ROOT / "models" / "resnet_tiny.onnx")
    shape = tuple(graph.inputs[0].shape)
    rng = np.random.default_rng(0)
    calib = [{graph.inputs[0].name: rng.standard_normal((8,) + shape[1:]).astype(np.float32)}]
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]
    return _quantize(graph, calib, "quantize{bits=8,act_bits=8}"), xs


def test_to_torch_matches_the_integer_interpreter(resnet_q8):
    graph, xs = resnet_q8
    ops = {f"{n.domain}.{n.op_type}" for n in graph.topo_order()}
    assert {"q.Conv", "q.Gemm", "q.Requantize", "q.Add", "q.Quantize", "q.Dequantize"} <= ops
    module = to_torch(graph).eval()
    step = [n for n in graph.topo_order() if n.op_type == "Dequantize" and n.domain == "q"
            and n.output in graph.outputs][0].attrs["scale"]
    for x in xs:
        ref = Interpreter(graph).run([x])[0]
        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() <= step * 1.0001, (np.abs(got - ref).max(), step)


def test_from_torch_without_training_is_bit_identical(resnet_q8):
    graph, _ = resnet_q8
    module = to_torch(graph)
    assert module.qweights  # the int8 weights became trainable shadows
    for key in module.qweights:
        assert getattr(module, key).requires_grad
    back = from_torch(module, graph)
    assert back.to_text() == graph.to_text()
    for a, b in zip(back.constants, graph.constants):
        assert a.name == b.name and a.const.dtype == b.const.dtype
        np.testing.assert_array_equal(a.const, b.const)


def test_binary_weights_round_trip_and_get_gradients():
    graph = compiler.import_model(ROOT / "models" / "resnet_tiny.onnx")
    shape = tuple(graph.inputs[0].shape)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    q = _quantize(graph, [{graph.inputs[0].name: x}], "quantize{bits=1,act_bits=8}")
    module = to_torch(q)
    out = module(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), Interpreter(q).run([x])[0], atol=0.05)
    out.sum().backward()
    assert any(getattr(module, k).grad is not None and getattr(module, k).grad.abs().sum() > 0
               for k in module.qweights)
    back = from_torch(module, q)
    for a, b in zip(back.constants, q.constants):
        np.testing.assert_array_equal(a.const, b.const)


def test_finetuning_recovers_low_bit_lenet():
    from compiler.datasets import load_dataset
    from compiler.evaluate import evaluate

    graph = compiler.import_model(ROOT / "baselines" / "lenet5_mnist.onnx")
    test = load_dataset("mnist", "test").subset(500, seed=0)
    train = load_dataset("mnist", "train").subset(6400, seed=0)
    calib = [{graph.inputs[0].name: load_dataset("mnist", "calib").inputs(0, 64)}]
    q = _quantize(graph, calib, "quantize{bits=2,act_bits=4}")
    base = evaluate(graph, test).value
    before = evaluate(q, test).value
    tuned = finetune(q, train, epochs=1, lr=3e-3, batch_size=64, max_batches=100)
    after = evaluate(tuned, test).value
    print(f"\nlenet5 top-1 on 500 test images: float {base:.3f}, w2/a4 post-training {before:.3f}, "
          f"after 100 STE batches of 64 {after:.3f}")
    assert before < base - 0.02
    assert after >= before + 0.02
    assert tuned.to_text() == q.to_text()  # structure unchanged
    lo, hi = qrange(2, True)
    changed = 0
    for (wt, node), (w0, _) in zip(_weights(tuned), _weights(q)):
        assert wt.const.dtype == np.int8 and lo <= wt.const.min() and wt.const.max() <= hi, node
        changed += int(np.sum(wt.const != w0.const))
    assert changed > 0
    for a, b in zip(tuned.constants, q.constants):  # scales, biases, multipliers untouched
        if a.name not in {w.name for w, _ in _weights(q)}:
            np.testing.assert_array_equal(a.const, b.const)

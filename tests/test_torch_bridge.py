"""IR -> torch -> IR is exact, and fine-tuning keeps structure and pruning masks."""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is installed by scripts/setup.sh")

import compiler  # noqa: E402
from compiler.interpreter import Interpreter  # noqa: E402
from compiler.torch import from_torch, to_torch  # noqa: E402
from conftest import REAL_MODELS, SMALL_MODELS, assert_close, model_input, model_path  # noqa: E402


@pytest.mark.parametrize("name", SMALL_MODELS + REAL_MODELS)
def test_round_trip_is_exact(name):
    graph = compiler.import_model(model_path(name))
    module = to_torch(graph).eval()
    x = model_input(name)
    expected = Interpreter(graph).run([x])
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        assert_close(g.numpy(), e, rtol=1e-5, atol=1e-5, what=f"{name} torch")
    back = from_torch(module, graph)
    assert back.to_text() == graph.to_text()
    for a, b in zip(back.constants, graph.constants):
        np.testing.assert_array_equal(a.const, b.const)


@pytest.mark.parametrize("name", ["resnet_tiny", "concat_tiny"])
def test_torch_module_takes_any_batch(name):
    graph = compiler.import_model(model_path(name))
    module = to_torch(graph).eval()
    x = np.concatenate([model_input(name, seed=s) for s in range(3)])
    with torch.no_grad():
        together = module(torch.from_numpy(x)).numpy()
    for i in range(3):
        assert_close(together[i:i + 1], Interpreter(graph).run([x[i:i + 1]])[0], rtol=1e-5)

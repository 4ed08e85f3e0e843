"""Multi-output and nested-tuple results on the emulated Cortex-A72 board (issue #16).

A detector-like model (a conv whose features feed two heads, one Sigmoid, one Softmax,
and are also an output themselves) must come back whole over RPC from run, benchmark,
a tuned build and a saved artifact, equal to the host build and to onnxruntime.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from targets import TargetUnavailableError, get_target  # noqa: E402


def _root_helpers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tests_root_conftest_mo",
                                                  ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _root_helpers()
assert_close, ort_run = _h.assert_close, _h.ort_run

OUTPUTS = ["scores", "probs", "feat"]


def two_head_model():
    """x -> Conv3x3 -> Relu = feat; feat -> Conv1x1 -> Sigmoid = scores;
    feat -> Softmax(axis=1) = probs; feat is an output too (a pass-through)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3)
                                     .astype(np.float32), "W"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "B"),
             numpy_helper.from_array((rng.standard_normal((4, 8, 1, 1)) * 0.3)
                                     .astype(np.float32), "W2")]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["feat"]),
             helper.make_node("Conv", ["feat", "W2"], ["h"]),
             helper.make_node("Sigmoid", ["h"], ["scores"]),
             helper.make_node("Softmax", ["feat"], ["probs"], axis=1)]
    shapes = {"scores": [1, 4, 8, 8], "probs": [1, 8, 8, 8], "feat": [1, 8, 8, 8]}
    graph = helper.make_graph(
        nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in OUTPUTS],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    import onnx

    path = tmp_path_factory.mktemp("mo") / "two_heads.onnx"
    model = two_head_model()
    onnx.save(model, path)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    return path, {"x": x}, ort_run(model, {"x": x})


def _check(outs, refs, what):
    assert len(outs) == len(refs) == 3, f"{what}: {len(outs)} outputs"
    for name, got, ref in zip(OUTPUTS, outs, refs):
        # sigmoid/softmax outputs in (0, 1): an absolute floor as well as the relative bound
        assert_close(got, ref, rtol=1e-4, atol=1e-6, what=f"{what} '{name}'")


@pytest.mark.slow
def test_two_output_model_runs_and_benchmarks_on_board(board, two_heads, tmp_path):
    path, x, ref = two_heads
    host = compiler.compile(path, target="host")
    a72 = compiler.compile(path, target="cortex-a72")
    assert host.output_names == a72.output_names == OUTPUTS
    host_out = host.run(x)
    _check(host_out, ref, "host vs onnxruntime")
    board_out = a72.run(x)
    _check(board_out, ref, "board vs onnxruntime")
    for name, got, want in zip(OUTPUTS, board_out, host_out):
        assert_close(got, want, rtol=1e-5, atol=1e-6, what=f"board vs host '{name}'")
    timing = a72.benchmark(repeat=2)
    assert timing.emulated and len(timing.samples) == 2 and min(timing.samples) > 0
    # the saved artifact (library linked at save) through the board as well
    loaded = compiler.CompiledModel.load(a72.save(tmp_path / "m"))
    _check(loaded.run(x), ref, "loaded artifact on the board")


@pytest.mark.slow
def test_nested_tuple_result_over_rpc(board):
    """A Relax function returning ((a, b), c): flattened depth-first, like the host."""
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from targets.tvm.build import build, run
    from targets.tvm.rpc import run_remote

    @tvm.script.ir_module
    class Nested:
        @R.function
        def main(x: R.Tensor((2, 3), "float32"), y: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                a = R.add(x, y)
                b = R.multiply(x, y)
                c = R.nn.relu(R.subtract(x, y))
                out = ((a, b), c)
                R.output(out)
            return out

    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2)]
    target = get_target("cortex-a72")
    remote = run_remote(board, build(Nested, target.target_dict()), xs,
                        cross_compiler=target.cross_compiler)
    host_exe = build(Nested, "llvm")
    raw = relax.VirtualMachine(host_exe, tvm.cpu())["main"](*[tvm.runtime.tensor(v) for v in xs])
    assert len(raw) == 2 and len(raw[0]) == 2  # really nested: ((a, b), c)
    local = run(host_exe, xs)
    expected = [xs[0] + xs[1], xs[0] * xs[1], np.maximum(xs[0] - xs[1], 0)]
    assert len(remote) == len(local) == 3
    for got, host, want in zip(remote, local, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6)
        np.testing.assert_array_equal(got, host)


@pytest.mark.slow
def test_tuned_two_output_model_on_board(board, two_heads):
    """MetaSchedule measures the model's kernels on the board (RPC runner, our f_export
    linker) with a tiny, bounded budget; the tuned build's outputs come back whole."""
    path, x, ref = two_heads
    a72 = compiler.compile(path, target="cortex-a72",
                           tune={"trials": 4, "max_seconds": 90, "progress": False})
    stats = a72.tuning
    assert stats["runner"].startswith("rpc EMULATED") and stats["trials"] >= 1
    assert stats["trials_measured_ok"] >= 1, stats
    _check(a72.run(x), ref, "tuned build on the board")

"""One arena per function (targets/tvm/arena.py): bit-identical outputs, one storage of
the planned size, and the peak-memory measurement on a model whose activations are known."""
import re
from pathlib import Path

import numpy as np
import pytest
import tvm
from onnx import TensorProto, helper
from tvm.relax import backend, transform

import compiler
from compiler import import_model
from targets import get_target
from targets.tvm.arena import PlanArena
from targets.tvm.build import build, export_library
from targets.tvm.lowering import lower_graph
from targets.tvm.peak_memory import measure_peak_memory

ROOT = Path(__file__).resolve().parents[2]


def _storages(mod, extra):
    pre = [backend.DispatchSampling(), backend.DispatchSortScan(), transform.LegalizeOps(),
           transform.RewriteDataflowReshape(), transform.ToNonDataflow(),
           transform.RemovePurityChecking(), transform.CallTIRRewrite()]
    with tvm.target.Target("llvm"):
        lowered = tvm.transform.Sequential(pre + extra + [transform.StaticPlanBlockMemory()])(mod)
    return [int(s) for s in re.findall(r"alloc_storage\(R\.shape\(\[(\d+)\]\)",
                                       lowered["main"].script())]


@pytest.mark.parametrize("path", ["examples/tinynet.onnx", "baselines/resnet_fmnist.onnx",
                                  "baselines/unet_seg.onnx"])
def test_arena_build_is_bit_identical_with_one_storage(path):
    g = import_model(str(ROOT / path))
    x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(np.float32)
    default = compiler.compile(g, target="host", passes=["fold-bn", "cleanup"])
    arena = compiler.compile(g, target=get_target("host").with_memory("arena"),
                             passes=["fold-bn", "cleanup"])
    name = g.inputs[0].name
    for a, b in zip(default.run({name: x}), arena.run({name: x})):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    planner = PlanArena()
    storages = _storages(lower_graph(arena.graph), [planner])
    (stats,) = planner.stats
    assert storages == [stats.arena_bytes]  # everything in one arena, outputs included
    assert stats.unplanned == 0 and stats.arena_bytes == stats.lower_bound
    assert sum(_storages(lower_graph(arena.graph), [])) >= stats.arena_bytes


def test_bad_memory_option_is_a_clear_error():
    with pytest.raises(ValueError, match="memory planner must be 'tvm' or 'arena', not 'x'"):
        get_target("host").with_memory("x")


def _chain(shape):
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("Abs", ["b"], ["y"])]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.slow
def test_peak_memory_of_a_chain_is_two_live_tensors(tmp_path):
    # Relu -> Neg -> Abs on 16 MiB tensors: at most two tensors are live at once (an op's
    # input and output), so running needs 32 MiB above the loaded model, whoever plans it.
    shape = [1, 16, 512, 512]
    mib = 2 ** 20
    g = import_model(_chain(shape))
    x = np.ones(shape, np.float32)
    mod = lower_graph(g)
    from targets.tvm.arena import arena_pipeline
    for name, pipeline in [("tvm", "default"), ("arena", arena_pipeline())]:
        lib = export_library(build(mod, "llvm", pipeline=pipeline), tmp_path / f"{name}.so")
        peak = measure_peak_memory(lib, [x], runs=1)
        assert 31.5 * mib <= peak.run_bytes <= 34 * mib, (name, str(peak))

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
def test_peak_memory_of_a_chain_is_what_was_planned(tmp_path):
    # Relu -> Neg -> Abs on 16 MiB tensors.  TVM's planner needs an op's input and
    # output (32 MiB above the loaded model); the arena runs all three in place in one
    # 16 MiB buffer.  From the second call on the VM still holds the previous call's
    # output, which `ArenaStats.steady_bytes` predicts (2 arenas here).
    shape = [1, 16, 512, 512]
    mib = 2 ** 20
    g = import_model(_chain(shape))
    x = np.ones(shape, np.float32)
    mod = lower_graph(g)
    from targets.tvm.arena import arena_pipeline
    planner = PlanArena()
    libs = {name: export_library(build(mod, "llvm", pipeline=pipeline), tmp_path / f"{name}.so")
            for name, pipeline in [("tvm", "default"), ("arena", arena_pipeline(planner))]}
    (stats,) = planner.stats
    assert stats.arena_bytes == 16 * mib and stats.in_place == 2
    tvm_peak = measure_peak_memory(libs["tvm"], [x], runs=1)
    assert tvm_peak.reset and 31.5 * mib <= tvm_peak.run_bytes <= 34 * mib, str(tvm_peak)
    once = measure_peak_memory(libs["arena"], [x], runs=1)
    assert 15.5 * mib <= once.run_bytes <= 18 * mib, str(once)
    repeated = measure_peak_memory(libs["arena"], [x], runs=3)
    assert abs(repeated.run_bytes - stats.steady_bytes) <= 2 * mib, str(repeated)


def _padded_conv():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 3, 3)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p", "w2", "b2"], ["y"], pads=[2, 2, 2, 2],
                              dilations=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "padded",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 8, 20, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.ravel())
                               for n, v in (("w", w), ("w2", w2), ("b2", b2))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_padded_convs_allocate_no_padded_copy_of_their_input():
    from targets.tvm.arena import InlineKernelIntermediates, kernel_buffers
    g = import_model(_padded_conv())
    with tvm.target.Target("llvm"):
        legal = transform.LegalizeOps()(lower_graph(g))
        before = kernel_buffers(legal)
        inline = InlineKernelIntermediates()
        after = kernel_buffers(inline(legal))
    assert sum(len(v) for v in before.values()) >= 3  # 2 conv pad_temps + the pool's pad
    assert max(n for v in before.values() for _b, n in v) == 8 * 24 * 24 * 4  # pads=2
    # the dense conv reads its input through the bounds check (no buffer); the
    # depthwise conv and the pool pad one channel plane at a time
    assert ("conv2d1", "pad_temp") in inline.inlined and "conv2d1" not in after
    assert {("conv2d", "pad_temp@channel"), ("max_pool2d", "pad_temp@channel")} <= set(inline.inlined)
    assert all(n <= 22 * 22 * 4 for v in after.values() for _b, n in v), after
    x = np.random.default_rng(1).standard_normal((1, 8, 20, 20)).astype(np.float32)
    default = compiler.compile(g, target="host", passes=[])
    arena = compiler.compile(g, target=get_target("host").with_memory("arena"), passes=[])
    assert np.array_equal(default.run({"x": x})[0], arena.run({"x": x})[0])


def test_memory_report_fields(tmp_path):
    g = import_model(str(ROOT / "examples/tinynet.onnx"))
    cm = compiler.compile(g, target=get_target("host").with_memory("arena"),
                          passes=["fold-bn", "cleanup"], verify=False)
    mem = cm.memory(runs=1)
    assert mem["memory_planner"] == "arena"
    assert 0 < mem["lower_bound"] <= mem["arena_bytes"] <= mem["tvm_default_bytes"] + \
        mem["arena_outputs_bytes"] + 64 * 8
    assert mem["graph_lower_bound"] <= mem["graph_arena_bytes"]
    assert mem["memory_order_lower_bound"] <= mem["graph_lower_bound"]
    assert mem["arena_workspace_bytes"] <= mem["tvm_workspace_bytes"]
    peak = mem["arena_peak_tensors"]  # the busiest step's tensors make up the bound
    assert peak and sum(-(-n // 64) * 64 for _s, _d, n in peak) == mem["lower_bound"]
    assert [n for _s, _d, n in peak] == sorted((n for _s, _d, n in peak), reverse=True)
    m = mem["measured"]
    assert m is not None and m["runs"] == 1 and m["peak"] >= m["after_load"] > m["after_import"]
    from compiler.api import format_memory
    assert "planned arena (built)" in format_memory(mem)
    assert "arena at its busiest step: float32[" in format_memory(mem)
    assert "live (plan)" in str(cm.report())
    assert cm.report(json=True)["planned_memory"]
    # a loaded model is measured from the library it was loaded from (TVM cannot export
    # a loaded library again: `benchmark --memory` on a saved model raised SaveToBytes)
    from compiler.artifact import CompiledModel

    loaded = CompiledModel.load(cm.save(tmp_path / "m"))
    again = loaded.memory(runs=1)
    assert again["arena_bytes"] == mem["arena_bytes"] and again["measured"]["runs"] == 1


def test_tuned_pipeline_with_the_arena_is_bit_identical(tmp_path):
    # MetaSchedule's own compile_relax, our tuned build and our tuned build with the
    # arena on one database (empty here: the kernels without records are the ones the
    # arena pipeline rewrites and the default schedule schedules).
    from tvm.s_tir import meta_schedule as ms

    from targets.tvm.build import run
    from targets.tvm.tuning import compile_tuned
    g = import_model(_padded_conv())
    mod = lower_graph(g)
    db = ms.database.JSONDatabase(str(tmp_path / "w.json"), str(tmp_path / "r.json"),
                                  allow_missing=True)
    target = tvm.target.Target("llvm")
    planner = PlanArena()
    plain = ms.relax_integration.compile_relax(db, mod, target, params=None)
    ours = compile_tuned(db, mod, target)
    arena = compile_tuned(db, mod, target, planner)
    x = np.random.default_rng(2).standard_normal((1, 8, 20, 20)).astype(np.float32)
    ref = run(plain, [x])[0]
    assert np.array_equal(ref, run(ours, [x])[0])
    assert np.array_equal(ref, run(arena, [x])[0])
    (stats,) = planner.stats
    assert stats.tensors >= 1 and stats.unplanned == 0


@pytest.mark.slow
def test_arena_on_the_emulated_board_is_bit_identical(board):
    path = str(ROOT / "examples/tinynet.onnx")
    g = import_model(path)
    x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(np.float32)
    default = compiler.compile(g, target="cortex-a72", passes=["fold-bn", "cleanup"])
    arena = compiler.compile(g, target=get_target("cortex-a72").with_memory("arena"),
                             passes=["fold-bn", "cleanup"])
    name = g.inputs[0].name
    for a, b in zip(default.run({name: x}), arena.run({name: x})):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    mem = arena.memory()
    assert mem["measured"] is None and "board" in mem["measured_note"]
    assert 0 < mem["lower_bound"] <= mem["arena_bytes"]


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_fused_arena_build_is_exact_and_keeps_kernel_intermediates_small(variant):
    # The untuned arena build through FuseOps (arena.fused_arena_pipeline): outputs equal
    # TVM's fused build without the arena (fp32: within onnxruntime's tolerance too; int8:
    # the interpreter's integers and today's unfused arena build), and every fused conv
    # kernel's intermediates (its int32 accumulator, the int64 requantize copies) are
    # one row or channel plane, not a full tensor of workspace outside the arena.
    from conftest import assert_close, ort_run

    from compiler.interpreter import Interpreter
    from compiler.pass_manager import PassContext, parse_pass
    from targets.tvm.arena import ArenaSchedule, arena_pipeline, fused_arena_pipeline
    from targets.tvm.build import host_target, run

    path = str(ROOT / "examples/tinynet.onnx")
    g = import_model(path)
    for spec in ("fold-bn", "cleanup"):
        g = parse_pass(spec)(g).graph
    rng = np.random.default_rng(3)
    x = rng.standard_normal(g.inputs[0].shape).astype(np.float32)
    if variant == "int8":
        calib = [{g.inputs[0].name: rng.standard_normal(g.inputs[0].shape).astype(np.float32)}
                 for _ in range(2)]
        g = parse_pass("quantize")(g, PassContext(calibration_data=calib)).graph
    planner, scheduler = PlanArena(workspace=True), ArenaSchedule()
    fused = lower_graph(g, fused=True)
    got = run(build(fused, host_target(), pipeline=fused_arena_pipeline(planner, scheduler)), [x])
    plain = run(build(fused, host_target()), [x])
    assert all(np.array_equal(a, b) for a, b in zip(got, plain))
    if variant == "fp32":
        assert_close(got[0], ort_run(path, {g.inputs[0].name: x})[0])
    else:
        assert np.array_equal(got[0], Interpreter(g).run([x])[0])
        unfused = run(build(lower_graph(g), host_target(), pipeline=arena_pipeline()), [x])
        assert np.array_equal(got[0], unfused[0])
    (stats,) = [s for s in planner.stats if s.function == "main"]
    assert stats.unplanned == 0
    convs = [k for k in planner.workspace if k.startswith("fused_conv2d")]
    assert convs and set(convs) <= set(scheduler.per_channel)
    for kernel in convs:  # tinynet's largest conv output: 8 x 28 x 28
        full = 8 * 28 * 28 * (8 if variant == "int8" else 4)
        assert max(n for _b, n in planner.workspace[kernel]) <= full // 8, kernel

"""The schedule templates for packed convs (targets/tvm/schedules.py): marked for the
targets they are written for (all packed convs with x86 VNNI; the s8 x s8 convs on an
aarch64 NEON target), one design space with its tile factors, and the extreme choices of
them build to code (VNNI dot products; NEON widening multiplies; 16-lane vector loops)
that matches the unscheduled kernel (bit-exact for int8) -- the NEON code run on the
emulated Cortex-A72 board."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "tuning_tests"))

import compiler  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tvm.layout import pack_convolutions  # noqa: E402
from targets.tvm.lowering import lower_graph  # noqa: E402
from targets.tvm.schedules import (S8S8_RULE, U8S8_RULE, dot_product,  # noqa: E402
                                   int8_conv_data, register_schedule_rules,
                                   schedule_conv2d_nchwc, schedule_conv2d_nchwc_s8s8,
                                   schedule_conv2d_nchwc_u8s8, schedule_depthwise_nchwc)
from test_layout import _has_vnni, _model, _x  # noqa: E402

A72 = get_target("cortex-a72").target_dict()
HOST = get_target("host").target_dict()


def _graph(tmp_path, quantized: bool = True):
    model = _model(tmp_path / "m.onnx", c_in=16, size=12)
    if not quantized:
        return compiler.compile(model, passes=["fold-bn", "cleanup"]).graph
    calib = [{"x": _x(c_in=16, size=12, seed=s)} for s in range(3)]
    cm = compiler.compile(model, passes=["fold-bn", "cleanup", "quantize{bits=8,act_bits=8}"],
                          calibration_data=calib)
    return cm.graph


def _tasks(mod, target, block: str):
    """The tuning tasks whose kernel holds a block named ``block``."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from targets.tvm.build import make_target

    tasks = ms.relax_integration.extract_tasks(relax.get_pipeline("zero")(mod),
                                               make_target(target))
    return [t for t in tasks if f'T.sblock("{block}")' in t.dispatched[0].script()]


def test_dot_product_detection():
    # the A72 (ARMv8.0) has NEON but no SDOT: s8 x s8 by widening multiplies
    assert dot_product(A72) == "neon" and int8_conv_data(A72) == "int8"
    assert dot_product(HOST) == ("vnni" if _has_vnni() else None)
    assert int8_conv_data(HOST) == "uint8"
    assert dot_product({"kind": "c"}) is None


def _kernel_scripts(mod, kind: str) -> list[str]:
    return [f.script() for _, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f"conv2d_nchwc_{kind}" in f.script()]


def test_template_is_marked_for_the_targets_it_is_written_for(tmp_path):
    graph = _graph(tmp_path)
    host = pack_convolutions(lower_graph(graph), "nchwc", HOST)
    scripts = _kernel_scripts(host, "u8s8")
    assert scripts, "the test model has a u8 x s8 conv"
    assert any(U8S8_RULE in s and "schedule_rule" in s for s in scripts) is _has_vnni()
    # on the A72 the data stays int8 and every int8 conv (16 -> 16 / 24 / 8 channels:
    # blocks of 16 and 8 outputs) is an s8 x s8 kernel marked for the NEON template;
    # nothing else is marked there (float and depthwise convs keep the generic search)
    a72 = pack_convolutions(lower_graph(graph, int8_conv_data="int8"), "nchwc", A72)
    assert not _kernel_scripts(a72, "u8s8")
    scripts = _kernel_scripts(a72, "s8s8")
    assert len(scripts) == 4 and all(f'"schedule_rule": "{S8S8_RULE}"' in s for s in scripts)
    marked = [f for _, f in a72.functions_items()
              if isinstance(f, tvm.tirx.PrimFunc) and "schedule_rule" in f.script()]
    assert len(marked) == 4


# kind -> (quantized graph?, conv block, template, tile samples in its space, what its
# code must contain per output-channel block)
TEMPLATES = {
    "u8s8": (True, "conv2d_nchwc_u8s8", schedule_conv2d_nchwc_u8s8, 2,
             {16: "vpdpbusd.512", 8: "vpdpbusd.256"}),
    "int8-depthwise": (True, "depthwise_conv2d_nchwc", schedule_depthwise_nchwc, 1,
                       {16: "T.vectorized(T.int64(16))"}),
    "fp32-conv": (False, "conv2d_nchwc", schedule_conv2d_nchwc, 1,
                  {16: "T.vectorized(T.int64(16))", 8: "T.vectorized(T.int64(8))"}),
    "fp32-depthwise": (False, "depthwise_conv2d_nchwc", schedule_depthwise_nchwc, 1,
                       {16: "T.vectorized(T.int64(16))"}),
}


@pytest.mark.skipif(not _has_vnni(), reason="host CPU has no AVX512-VNNI")
@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_template_space_and_tile_choices_match_the_unscheduled_kernel(tmp_path, kind):
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from targets.tvm.build import make_target
    from targets.tvm.tuning import _import_tensor_intrin

    quantized, block, template, samples, code = TEMPLATES[kind]
    _import_tensor_intrin()
    register_schedule_rules()
    tgt = make_target(HOST)
    mod = pack_convolutions(lower_graph(_graph(tmp_path, quantized)), "nchwc", HOST)
    tasks = _tasks(mod, HOST, block)
    assert tasks
    blocks = set()
    for task in tasks:
        kernel = task.dispatched[0]
        # MetaSchedule's space for the block is the template: one schedule, its factors
        ctx = ms.TuneContext(mod=kernel, target=tgt, space_generator="post-order-apply",
                             task_name=task.task_name)
        spaces = ctx.generate_design_space()
        assert len(spaces) == 1
        assert str(spaces[0].trace).count("sample_perfect_tile") == samples

        args = _random_args(kernel)
        reference = _run(kernel, args, tgt)
        _, _, oh, ow, ob = _conv_extents(kernel, block)
        blocks.add(ob)
        for reg_n, oh_f in {(1, 1), (ow, 2 if oh % 2 == 0 else 1)}:
            sch = s_tir.Schedule(kernel)
            conv = sch.get_sblock(block)
            if samples == 2:
                template(sch, conv, tiles=(reg_n, oh_f))
            else:
                template(sch, conv, reg_n=reg_n)
            root = sch.get_sblock("root")  # what MetaSchedule's own rules add
            sch.annotate(root, "meta_schedule.parallel", 32)
            sch.annotate(root, "meta_schedule.vectorize", 64)
            for post in ctx.space_generator.postprocs:
                assert post.apply(sch), type(post).__name__
            assert code[ob] in sch.mod.script()
            out = _run(sch.mod, args, tgt)
            if quantized:  # integer arithmetic: bit-exact
                assert np.array_equal(out, reference), (task.task_name, reg_n, oh_f)
            else:  # same summation order; FMA contraction may differ in the last bit
                np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    # the test model's 16->24 and 24->8 convs take the 8-wide dot product, 16-out the 16
    if kind == "u8s8":
        assert blocks == {8, 16}


def _conv_extents(kernel, block: str) -> list[int]:
    from tvm import s_tir

    sch = s_tir.Schedule(kernel)
    loops = sch.get_loops(sch.get_sblock(block))
    return [int(sch.get(loop).extent) for loop in loops[:5]]


def _buffers(kernel) -> list[tuple[list[int], str]]:
    import re

    head = next(line for line in kernel.script().splitlines() if "def main(" in line)
    return [([int(v) for v in re.findall(r"T\.int64\((\d+)\)", shape)], dtype)
            for shape, dtype in re.findall(
                r'T\.Buffer\(\(((?:T\.int64\(\d+\),?\s*)+)\), "(\w+)"\)', head)]


def _random_args(kernel) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for shape, dtype in _buffers(kernel):
        if dtype.startswith("float"):
            out.append(rng.standard_normal(shape).astype(dtype))
            continue
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if info.bits <= 8 else (-1000, 1000)
        if dtype == "int64":
            lo, hi = 1, 8  # multipliers and shifts of the requantize epilogue
        out.append(rng.integers(lo, hi + 1, shape).astype(dtype))
    return out


def _run(kernel, args, tgt) -> np.ndarray:
    lib = tvm.compile(kernel, target=tgt)
    dev = tvm.cpu()
    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    lib["main"](*tensors)
    return tensors[-1].numpy()


@pytest.mark.skipif(not _has_vnni(), reason="host CPU has no AVX512-VNNI")
def test_a_template_that_does_not_fit_falls_back_to_the_generic_search(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from targets.tvm.build import make_target
    from targets.tvm.tuning import _import_tensor_intrin

    _import_tensor_intrin()
    register_schedule_rules()
    mod = pack_convolutions(lower_graph(_graph(tmp_path, quantized=False)), "nchwc", HOST)
    kernel = _tasks(mod, HOST, "conv2d_nchwc")[0].dispatched[0]
    # a float conv block marked for the u8 x s8 template (whose loop nest it lacks)
    script = kernel.script().replace('"schedule_rule": "conv2d_nchwc"',
                                     f'"schedule_rule": "{U8S8_RULE}"')
    assert U8S8_RULE in script
    wrong = tvm.script.from_source(script)
    ctx = ms.TuneContext(mod=wrong, target=make_target(HOST),
                         space_generator="post-order-apply", task_name="wrong")
    with pytest.warns(UserWarning, match="does not fit block 'conv2d_nchwc'"):
        spaces = ctx.generate_design_space()
    # MetaSchedule's own multi-level tiling scheduled it instead
    assert spaces and all("schedule_template" not in str(s.trace) for s in spaces)
    assert any("tiling_structure" in str(s.trace) for s in spaces)


@pytest.mark.slow
def test_neon_template_tile_choices_run_bit_exact_on_the_board(board, tmp_path):
    """Every s8 x s8 conv of the test model, with the smallest and the largest register
    block the template allows, is tensorized with TVM's NEON intrinsic (smull / saddlp
    / addp in the aarch64 assembly) and returns on the emulated A72 exactly what the
    unscheduled kernel built for the host returns."""
    import os

    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from targets.tvm.build import export_library, make_target
    from targets.tvm.rpc import with_session
    from targets.tvm.tuning import _import_tensor_intrin

    _import_tensor_intrin()
    register_schedule_rules()
    tgt, host = make_target(A72), make_target(HOST)
    graph = _graph(tmp_path)
    mod = pack_convolutions(lower_graph(graph, int8_conv_data="int8"), "nchwc", A72)
    block = "conv2d_nchwc_s8s8"
    tasks = _tasks(mod, A72, block)
    assert len(tasks) == 4
    jobs = []
    for task in tasks:
        kernel = task.dispatched[0]
        ctx = ms.TuneContext(mod=kernel, target=tgt, space_generator="post-order-apply",
                             task_name=task.task_name)
        spaces = ctx.generate_design_space()
        assert len(spaces) == 1 and str(spaces[0].trace).count("sample_perfect_tile") == 2
        _, _, _, ow, ob = _conv_extents(kernel, block)
        widest = max(d for d in range(1, 64 // ob + 1) if ow % d == 0)
        for reg_n in sorted({1, widest}):
            sch = s_tir.Schedule(kernel)
            schedule_conv2d_nchwc_s8s8(sch, sch.get_sblock(block), tiles=(reg_n, 1))
            root = sch.get_sblock("root")  # what MetaSchedule's own rules add
            sch.annotate(root, "meta_schedule.parallel", 16)
            sch.annotate(root, "meta_schedule.vectorize", 32)
            for post in ctx.space_generator.postprocs:
                assert post.apply(sch), type(post).__name__
            lib = tvm.compile(sch.mod, target=tgt)
            asm = lib.mod.inspect_source("asm")
            assert all(op in asm for op in ("smull", "saddlp", "addp")), task.task_name
            path = export_library(lib, tmp_path / f"k{len(jobs)}.so",
                                  cross_compiler="aarch64-linux-gnu-g++")
            args = _random_args(kernel)
            jobs.append((task.task_name, reg_n, path, args, _run(kernel, args, host)))

    def run_all(session):
        dev = session.cpu()
        outs = []
        for _, _, path, args, _ in jobs:
            session.upload(path, target=os.path.basename(path))
            lib = session.load_module(os.path.basename(path))
            tensors = [tvm.runtime.tensor(a, dev) for a in args]
            lib["main"](*tensors)
            outs.append(tensors[-1].numpy())
        return outs

    for (name, reg_n, _, _, reference), out in zip(jobs, with_session(board, run_all)):
        assert np.array_equal(out, reference), (name, reg_n)

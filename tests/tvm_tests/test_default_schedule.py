"""The default schedule of kernels that tuning did not reach (targets/tvm/default_schedule.py):
it applies to every kernel of real exporter patterns (packed convs, depthwise, SE gates,
Split/Concat, Resize, the Gemm, int8 requantize), leaves every kernel's output exactly
as TVM's unscheduled kernel computes it, and a tuned build whose budget measured nothing
matches onnxruntime."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import compiler  # noqa: E402
from benchmarks.default_schedule import lower_to_kernels, random_args  # noqa: E402
from benchmarks.pattern_models import lcnet_like, tfpad_net  # noqa: E402
from conftest import ort_run  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tvm.build import make_target  # noqa: E402
from targets.tvm.default_schedule import CPUFallback, default_schedule  # noqa: E402
from targets.tvm.schedules import dot_product  # noqa: E402


def _fused_kernels(model, int8: bool) -> tvm.IRModule:
    """The fused kernels of ``model``'s packed build, as task extraction sees them."""
    calib = [{"input": np.random.default_rng(2).standard_normal((2, 3, 16, 16))
              .astype(np.float32)}]
    kernels, layout = lower_to_kernels(model, "int8" if int8 else "fp32", calib, "nchwc")
    assert layout == "nchwc"
    return kernels


def _outputs(lib, name: str, args: list[np.ndarray]) -> np.ndarray:
    tensors = [tvm.runtime.tensor(a, tvm.cpu()) for a in args]
    lib.mod[name](*tensors)
    return tensors[-1].numpy()


@pytest.mark.parametrize("name,int8", [("lcnet_like", False), ("lcnet_like", True),
                                       ("tfpad_net", False)])
def test_every_kernel_is_scheduled_and_computes_what_it_computed(name, int8):
    model = {"tfpad_net": tfpad_net, "lcnet_like": lcnet_like}[name](size=16, width=0.25)
    kernels = _fused_kernels(model, int8)
    target = make_target(None)
    scheduler = default_schedule()
    with target:
        scheduled = scheduler(kernels)
    # every kernel but the Resizes (`_gathers`: left unscheduled) is scheduled
    assert all("resize" in k for k in scheduler.left), scheduler.left
    assert len(scheduler.applied) + len(scheduler.left) == len(kernels.functions)
    assert len(scheduler.applied) > len(scheduler.left)
    # the packed convs run vectorized over their output channels (u8 x s8 ones as
    # dot products on VNNI hosts, else only their init and epilogue), parallel over
    # their output pixels when the work pays for waking the threads (the larger ones,
    # at 16x16)
    convs = [scheduled[gv].script() for gv, _ in scheduled.functions_items()
             if "conv2d_nchwc" in gv.name_hint]
    assert len(convs) >= 5
    assert any("T.parallel" in text for text in convs)
    assert all("T.vectorized" in text for text in convs)
    naive = tvm.compile(kernels, target=target)
    ours = tvm.compile(scheduled, target=target)
    rng = np.random.default_rng(0)
    for gv, func in kernels.functions_items():
        args = random_args(func, rng)
        a, b = _outputs(naive, gv.name_hint, args), _outputs(ours, gv.name_hint, args)
        if a.dtype.kind == "f":
            # float kernels: within an ulp of the naive kernel, not bit-identical: LLVM
            # contracts more of the naive nest's multiplies and adds into fused
            # multiply-adds (lcnet_like's conv + HardSwish at 16x16: 65 llvm.fmuladd
            # calls naive, 9 scheduled; 1-ulp differences in 14% of the outputs)
            scale = max(float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)), 1e-30)
            assert np.array_equal(np.isnan(a), np.isnan(b)), gv.name_hint
            assert np.nanmax(np.abs(a - b), initial=0.0) <= 2e-7 * scale, gv.name_hint
        else:
            assert np.array_equal(a, b), gv.name_hint


def test_u8s8_convs_are_tensorized_and_bit_identical():
    # the packed u8 x s8 convs (weights interleave 4 input channels in each output
    # channel: no loop is contiguous in every buffer, the generic rule leaves them
    # scalar) run as vpdpbusd dot products with a vectorized init, and every output
    # is the unscheduled kernel's, bit for bit: strided, 3x3 and 1x1 convs, 16 and
    # 8 output channels per block
    target = make_target(None)
    if dot_product(target) != "vnni":
        pytest.skip("host without AVX-512 VNNI: u8 x s8 convs keep the generic rule")
    kernels = _fused_kernels(lcnet_like(size=16, width=0.25), True)
    names = [gv.name_hint for gv, _ in kernels.functions_items() if "u8s8" in gv.name_hint]
    assert len(names) >= 5
    convs = tvm.IRModule({n: kernels[n] for n in names})
    scheduler = default_schedule()
    with target:
        scheduled = scheduler(convs)
    assert sorted(scheduler.applied) == sorted(names)
    for name in names:
        text = scheduled[name].script()
        assert "llvm.x86.avx512.vpdpbusd" in text and "T.vectorized" in text, name
    naive = tvm.compile(convs, target=target)
    ours = tvm.compile(scheduled, target=target)
    rng = np.random.default_rng(1)
    for name in names:
        # full-range operands: u8 up to 255, s8 down to -128 (random_args keeps them
        # small); the int32 sums do not overflow at these sizes
        args = [rng.integers(0, 256, a.shape).astype(a.dtype) if a.dtype == np.uint8 else
                rng.integers(-128, 128, a.shape).astype(a.dtype) if a.dtype == np.int8 else a
                for a in random_args(kernels[name], rng)]
        a, b = _outputs(naive, name, args), _outputs(ours, name, args)
        assert np.array_equal(a, b), name  # (a float epilogue too: the same code)


def test_pass_leaves_scheduled_kernels_alone():
    kernels = _fused_kernels(tfpad_net(size=16, width=0.25), False)
    name = next(gv.name_hint for gv, _ in kernels.functions_items())
    kernels[name] = kernels[name].with_attr("tirx.is_scheduled", True)
    scheduler = default_schedule()
    with make_target(None):
        out = scheduler(kernels)
    assert name not in scheduler.applied and len(scheduler.applied) == len(kernels.functions) - 1
    tvm.ir.assert_structural_equal(out[name], kernels[name])


def test_rule_declines_what_it_cannot_schedule():
    from tvm.script import tirx as T

    @T.prim_func(private=True)
    def opaque(a: T.Buffer((8,), "float32"), b: T.Buffer((8,), "float32")):
        for i in range(8):
            b[i] = a[i] * T.float32(2)   # no block: nothing to analyse

    with make_target(None):
        assert CPUFallback().apply(opaque, make_target(None), False) is None


def test_tuned_build_that_measured_nothing_matches_onnxruntime():
    # a budget that passes before any measurement: every kernel gets the default
    # schedule, none runs as a naive loop nest, the outputs match onnxruntime
    model = lcnet_like(size=16, width=0.25)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    ref = ort_run(model, {"input": x})[0]
    cm = compiler.compile(model, target=get_target("host").with_layout("nchwc"),
                          passes=["fold-bn", "cleanup"],
                          tune={"trials": 0, "progress": False})
    st = cm.tuning
    assert st["trials"] == 0 and st["kernels_unscheduled"] <= 1, st
    assert st["kernels_default_scheduled"] + st["kernels_unscheduled"] >= st["tasks"] > 10, st
    out = cm.run({"input": x})[0]
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))

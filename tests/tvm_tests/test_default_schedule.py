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
from benchmarks.pattern_models import lcnet_like, tfpad_net  # noqa: E402
from conftest import ort_run  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tvm.build import make_target  # noqa: E402
from targets.tvm.default_schedule import CPUFallback, default_schedule  # noqa: E402
from targets.tvm.layout import apply_layout  # noqa: E402
from compiler.pass_manager import PassContext  # noqa: E402


def _fused_kernels(model, int8: bool) -> tvm.IRModule:
    """The fused kernels of ``model``'s packed build, as task extraction sees them."""
    passes = ["fold-bn", "cleanup"] + (["quantize{bits=8,act_bits=8}"] if int8 else [])
    ctx = PassContext()
    if int8:
        ctx.calibration_data = [{"input": np.random.default_rng(2).standard_normal(
            (2, 3, 16, 16)).astype(np.float32)}]
    _, graph, _ = compiler.optimize(model, passes, ctx=ctx)
    host = get_target("host")
    mod, layout = apply_layout(host.lower(graph), "nchwc", host.target_dict())
    assert layout == "nchwc"
    fused = relax.get_pipeline("zero")(mod)
    return tvm.IRModule({gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
                         for gv, f in fused.functions_items()
                         if isinstance(f, tvm.tirx.PrimFunc)})


def _random_args(func, rng) -> list[np.ndarray]:
    args = []
    for p in func.params:
        shape, dtype = [int(d) for d in p.shape], str(p.dtype)
        if dtype.startswith("float"):
            args.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == "bool":
            args.append(rng.integers(0, 2, shape).astype(bool))
        else:
            args.append(rng.integers(0 if dtype.startswith("u") else -60, 60, shape)
                        .astype(dtype))
    return args


@pytest.mark.parametrize("name,int8", [("lcnet_like", False), ("lcnet_like", True),
                                       ("tfpad_net", False)])
def test_every_kernel_is_scheduled_and_computes_what_it_computed(name, int8):
    model = {"tfpad_net": tfpad_net, "lcnet_like": lcnet_like}[name](size=16, width=0.25)
    kernels = _fused_kernels(model, int8)
    target = make_target(None)
    scheduler = default_schedule()
    with target:
        scheduled = scheduler(kernels)
    assert scheduler.left == [] and len(scheduler.applied) == len(kernels.functions), \
        scheduler.left
    # the packed convs run vectorized over their output channels (u8 x s8 weights
    # interleave input channels: no vector load there), parallel over their output
    # pixels when the work pays for waking the threads (the larger ones, at 16x16)
    convs = [scheduled[gv].script() for gv, _ in scheduled.functions_items()
             if "conv2d_nchwc" in gv.name_hint]
    assert len(convs) >= 5
    assert any("T.parallel" in text for text in convs)
    if not int8:
        assert all("T.vectorized" in text for text in convs)
    naive = tvm.compile(kernels, target=target)
    ours = tvm.compile(scheduled, target=target)
    dev = tvm.cpu()
    rng = np.random.default_rng(0)
    for gv, func in kernels.functions_items():
        args = _random_args(func, rng)
        outs = []
        for lib in (naive, ours):
            tensors = [tvm.runtime.tensor(a, dev) for a in args]
            lib.mod[gv.name_hint](*tensors)
            outs.append(tensors[-1].numpy())
        assert np.array_equal(outs[0], outs[1], equal_nan=outs[0].dtype.kind == "f"), \
            gv.name_hint


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
    assert st["trials"] == 0 and st["kernels_unscheduled"] == 0, st
    assert st["kernels_default_scheduled"] >= st["tasks"] > 10, st
    out = cm.run({"input": x})[0]
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))

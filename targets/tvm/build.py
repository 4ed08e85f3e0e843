"""Compile, run, export and load Relax modules produced by `targets.tvm.lowering`.

All TVM imports of the project live under ``targets/tvm``.  Notes for TVM 0.27:
targets with flags must be dicts (``Target({"kind": "llvm", "mcpu": ...})``), and
``"mcpu": "native"`` silently falls back to a generic CPU, so `host_target` asks LLVM
for the host CPU name.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import tvm
from tvm import relax

__all__ = ["build", "fused_pipeline", "run", "time_local", "profile_local", "export_library", "load_library",
           "host_target", "make_target", "to_numpy", "to_tensors", "WeightsBuilt",
           "lift_constants", "fold_constants", "split_built", "params_digest"]

Executable = Any  # tvm.runtime.Executable or a loaded tvm.runtime.Module


@dataclass
class WeightsBuilt:
    """A built module whose weights are parameters of ``main`` (after its inputs), not
    constants in the library, and the arrays to pass for them.

    Why: a library that embeds its weights deploys them uncompressed whatever
    ``weights.bin`` holds, and duplicates model.onnx's weights.  This way the library is
    code only (and scalar literals), and the weights are derived, at load, from the
    graph's constants (decoded from weights.bin or read from model.onnx) by the same code
    that derived them at build (`lift_constants` of the packed, folded module);
    ``recipe`` says how (layout, folding, target) and holds ``params_digest`` of the
    arrays, checked at load.  ``executable`` is a built or loaded module, or, for a board,
    the library's path."""

    executable: Any
    params: list[np.ndarray]
    recipe: dict[str, Any] = field(default_factory=dict)


def split_built(built: Any) -> tuple[Any, list[np.ndarray]]:
    """``(executable, weight arrays to append to the inputs)`` of any built object."""
    if isinstance(built, WeightsBuilt):
        return built.executable, built.params
    return built, []


def params_digest(arrays: Sequence[np.ndarray]) -> str:
    """SHA-256 over the dtypes, shapes and bytes of ``arrays``, in order."""
    import hashlib

    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def fold_constants(mod: tvm.IRModule) -> tvm.IRModule:
    """The constant-folding prefix of TVM's tuning ("zero") pipeline: legalize, annotate,
    fold.  Run before `lift_constants` on tuned builds, so what MetaSchedule's pipeline
    would fold on constants (weight transposes, layout transforms) is still folded once
    at build (and at load) instead of each run; its own LegalizeOps/FoldConstant then
    find nothing left, and the extracted tuning tasks (the fused kernels) are the same
    as those of the embedded build, so tuning records keep matching."""
    return tvm.transform.Sequential([relax.transform.LegalizeOps(),
                                     relax.transform.AnnotateTIROpPattern(),
                                     relax.transform.FoldConstant()])(mod)


@relax.expr_functor.mutator
class _LiftConstants(relax.PyExprMutator):
    """Every tensor constant of rank >= 1 becomes a new `relax.Var` (one per constant
    object, in first-use order)."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.vars: list[relax.Var] = []
        self.arrays: list[np.ndarray] = []
        self._seen: list[tuple[Any, relax.Var]] = []

    def visit_generic_const_(self, const):
        value = const.value
        if not hasattr(value, "numpy") or len(value.shape) == 0:
            return const  # scalar literals stay in the code
        for seen, var in self._seen:
            if seen.same_as(const):
                return var
        var = relax.Var(f"w{len(self.vars)}", const.ty)
        self._seen.append((const, var))
        self.vars.append(var)
        self.arrays.append(value.numpy())
        return var


def lift_constants(mod: tvm.IRModule) -> tuple[tvm.IRModule, list[np.ndarray]]:
    """``mod`` with the tensor constants of ``main`` turned into parameters after its
    inputs (``num_input`` marks where they start), and their arrays in that order.
    The order depends only on ``mod``, so the same module always gives the same list."""
    func = mod["main"]
    lifter = _LiftConstants(mod)
    body = lifter.visit_expr(func).body
    new = relax.Function(list(func.params) + lifter.vars, body, func.ret_ty, func.is_pure,
                         func.attrs, func.span).with_attr("num_input", len(func.params))
    functions = {gv: (new if gv.name_hint == "main" else f) for gv, f in mod.functions_items()}
    return tvm.IRModule(functions, attrs=mod.attrs), lifter.arrays


def host_target(num_cores: int | None = None) -> dict[str, Any]:
    """The TVM target dict of this machine: LLVM with the host's real CPU name (so
    AVX-512/VNNI etc. are used; ``"mcpu": "native"`` would silently mean generic)."""
    return {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": int(num_cores or os.cpu_count() or 1)}


def make_target(target: Any) -> tvm.target.Target:
    """A `tvm.target.Target` from a Target, a dict, a kind string ("llvm") or None/"host"."""
    if target is None or (isinstance(target, str) and target in ("host", "native")):
        target = host_target()
    if isinstance(target, tvm.target.Target):
        return target
    return tvm.target.Target(target)


def fused_pipeline(database: Any = None, planner: Any = None, scheduler: Any = None
                   ) -> tvm.transform.Pass:
    """The one build pipeline of the project, tuned and untuned: TVM's operator fusion
    (``FuseOps`` + ``FuseTIR``, the same fusion as MetaSchedule's task extraction, so
    the tuning database's keys match), then with a ``database`` its records
    (``MetaScheduleApplyDatabase``), then `default_schedule.default_schedule` for every
    kernel no record scheduled (TVM's CPU pipelines leave them as naive loop nests: a
    3x3 conv of PP-OCR rec ran 67 ms so, 5.3 ms default-scheduled), and with a
    ``planner`` (the arena build) `arena.PlanArena` after ``CallTIRRewrite``.

    With the arena, tuned kernels are used as tuned (their pads already sit inside their
    tiles); the kernels without a record get `arena.inline_intermediates` before their
    default schedule.  ``scheduler``: the `default_schedule` pass to use (it records the
    kernels it scheduled)."""
    from tvm.relax import backend, transform

    from .arena import InlineUnscheduled
    from .default_schedule import default_schedule

    scheduler = scheduler if scheduler is not None else default_schedule()
    arena = [] if planner is None else [planner]
    inline = [] if planner is None else [InlineUnscheduled()]

    @tvm.transform.module_pass(opt_level=3, name="FusedPipeline")
    def _pipeline(m: tvm.IRModule, _ctx: Any) -> tvm.IRModule:
        m = tvm.transform.Sequential([
            backend.DispatchSampling(), backend.DispatchSortScan(),
            transform.LegalizeOps(), transform.AnnotateTIROpPattern(), transform.FoldConstant(),
            transform.FuseOps(), transform.FuseTIR()])(m)
        if database is not None:
            with database:
                m = transform.MetaScheduleApplyDatabase()(m)
        return tvm.transform.Sequential([
            *inline, scheduler, transform.RewriteDataflowReshape(),
            transform.ToNonDataflow(), transform.RemovePurityChecking(),
            transform.CallTIRRewrite(), *arena,
            transform.StaticPlanBlockMemory(), transform.LowerAllocTensor(),
            transform.KillAfterLastUse(), transform.LowerRuntimeBuiltin(),
            transform.ComputePrimValue(), transform.VMShapeLower(),
            transform.AttachGlobalSymbol()])(m)

    return _pipeline


def build(mod: tvm.IRModule, target: Any = None, *, pipeline: Any = None) -> Executable:
    """Compile ``mod`` with `fused_pipeline` (no tuning records), or with ``pipeline``:
    a pass (`fused_pipeline` with a database, `arena.arena_pipeline`) or the name of a
    TVM pipeline (``"default"``: TVM's own, for comparisons)."""
    tgt = make_target(target)
    if isinstance(pipeline, str):
        return tvm.compile(mod, target=tgt, relax_pipeline=pipeline)
    with tgt, tvm.transform.PassContext(opt_level=3):
        return relax.build(mod, target=tgt, relax_pipeline=pipeline or fused_pipeline())


def to_numpy(obj: Any) -> list[np.ndarray]:
    if isinstance(obj, (tvm.runtime.Tensor,)):
        return [obj.numpy()]
    if hasattr(obj, "numpy"):
        return [obj.numpy()]
    out: list[np.ndarray] = []
    for item in obj:  # tuple / Array of outputs
        out.extend(to_numpy(item))
    return out


def to_tensors(inputs: Sequence[np.ndarray], device: Any) -> list:
    # (np.ascontiguousarray would turn 0-d arrays into 1-d ones)
    arrays = [np.asarray(x) for x in inputs]
    return [tvm.runtime.tensor(x if x.flags.c_contiguous else x.copy(), device) for x in arrays]


def run(executable: Executable, inputs: Sequence[np.ndarray], device: Any = None,
        *, func: str = "main") -> list[np.ndarray]:
    """Run ``func`` of a built (or loaded) module on numpy inputs; returns numpy outputs."""
    executable, params = split_built(executable)
    device = device if device is not None else tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    return to_numpy(vm[func](*to_tensors([*inputs, *params], device)))


def time_local(executable: Executable, inputs: Sequence[np.ndarray], *, repeat: int = 10,
               number: int = 1, device: Any = None, func: str = "main") -> list[float]:
    """Seconds per call of ``func``, one sample per repeat (each the mean of ``number``
    calls), measured with the VM's ``time_evaluator`` on this machine."""
    executable, params = split_built(executable)
    device = device if device is not None else tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    vm.set_input(func, *to_tensors([*inputs, *params], device))
    timer = vm.time_evaluator("invoke_stateful", device, number=number, repeat=repeat)
    return [float(t) for t in timer(func).results]


def profile_local(executable: Executable, inputs: Sequence[np.ndarray], *, repeat: int = 10,
                  device: Any = None, func: str = "main") -> list[dict[str, Any]]:
    """Where the time goes: per kernel (the VM's call instructions, grouped by symbol),
    the median over ``repeat`` runs of its summed time per run, its call count and its
    share of the summed kernel time.  Measured with the VM's instrument hook (a host
    clock around each call), after one warm-up run; sorted slowest first."""
    from .vm_profile import profile_rows

    executable, params = split_built(executable)
    device = device if device is not None else tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    return profile_rows(vm, func, to_tensors([*inputs, *params], device), repeat)


def export_library(executable: Executable, path: str | os.PathLike,
                   cross_compiler: str | Callable | None = None, **kwargs: Any) -> str:
    """Write a shared library loadable by `load_library`.

    ``cross_compiler`` is a compiler command (``"aarch64-linux-gnu-g++"``) or an
    ``fcompile`` callable; None links with the host compiler.
    """
    path = os.fspath(path)
    executable = split_built(executable)[0]
    fcompile = cross_compiler
    if isinstance(cross_compiler, str):
        from tvm.support import cc

        fcompile = cc.cross_compiler(cross_compiler)
    with _EXPORT_LOCK:  # TVM frees twice when one module is exported from two threads
        executable.export_library(path, fcompile=fcompile, **kwargs)
    return path


_EXPORT_LOCK = threading.Lock()


def load_library(path: str | os.PathLike) -> tvm.runtime.Module:
    """Load a library written by `export_library`; pass the result to `run`."""
    return tvm.runtime.load_module(os.fspath(path))

"""`compile()`: ONNX in, a `CompiledModel` for a target out.

Everything that can be checked before work starts is checked first (target name, pass
names and options, the model file, input shapes), so a bad call fails fast and writes
nothing.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .artifact import CompiledModel
from .ir import Graph
from .onnx_io import import_model
from .pass_manager import (NumericsInstrument, Pass, PassContext, PassInstrument, VerifyInstrument,
                     parse_pipeline)

__all__ = ["compile", "optimize", "measure_latency_ms", "memory_report", "format_memory"]


def measure_latency_ms(graph: Graph, target: Any = "host", repeat: int = 20) -> float:
    """Median latency (ms) of ``graph`` compiled for ``target`` (no further passes)."""
    cm = compile(graph, target=target, passes=[])
    return cm.benchmark(repeat=repeat).median * 1e3


def optimize(model: Any, passes: "Iterable[str | Pass] | str | None" = None, *,
             input_shapes: Mapping[str, Sequence[int]] | None = None,
             ctx: PassContext | None = None, verify: bool = True,
             check_numerics: bool = False) -> tuple[Graph, Graph, Any]:
    """Import ``model`` (ONNX path/proto or a `Graph`) and run ``passes`` on a copy.

    Returns ``(original, optimized, pass_result)``.
    """
    pipeline = parse_pipeline(passes)
    original = model.clone() if isinstance(model, Graph) else import_model(model, input_shapes)
    ctx = ctx or PassContext()
    if ctx.measure_latency is None:
        options = ctx.options
        ctx.measure_latency = lambda g: measure_latency_ms(g, options.get("target", "host"))
    if verify and not any(isinstance(i, VerifyInstrument) for i in ctx.instruments):
        ctx.instruments.append(VerifyInstrument())
    if check_numerics:
        ctx.instruments.append(NumericsInstrument())
    result = pipeline(original.clone(), ctx)
    return original, result.graph, result


def compile(model: Any, target: Any = "host",
            passes: "Iterable[str | Pass] | str | None" = None, *,
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            ctx: PassContext | None = None, verify: bool = True,
            check_numerics: bool = False, build: bool = True,
            calibration_data: Sequence[Mapping[str, Any]] | None = None,
            evaluate: Any = None,
            tune: "Mapping[str, Any] | int | None" = None) -> CompiledModel:
    """Compile an ONNX model for ``target``.

    ``passes`` is a list of pass specs such as ``["fold-bn", "prune{ratio=0.5}"]`` or
    `Pass` objects; ``None`` runs the target's default passes, ``[]`` runs none.
    ``input_shapes`` fixes dynamic input dimensions by input name.
    ``calibration_data`` (a list of input dicts from real data) and ``evaluate`` (a
    callback ``graph -> score``) are handed to the passes through their `PassContext`.
    ``tune`` auto-tunes with MetaSchedule: ``{"trials": 64, "database": "tune.json"}``
    (an int means trials only; the target parses it: `Target.tune_options`).  Tasks the
    database already has records for are not measured again; the stats are in
    ``CompiledModel.tuning``.  For cortex-a72 candidates are measured on the board.
    ``verify`` (default on) checks the IR after each pass and then the built code
    against the interpreter on one seeded input (`compiler.verify`: bit-exact for
    integer outputs, the float tolerance otherwise); a mismatch raises
    `VerificationError` naming the first differing output.  Targets that run remotely
    are not run (``CompiledModel.verification`` says so).  ``verify=False`` skips both.
    """
    from targets import get_target

    tgt = get_target(target)
    if passes is None:
        passes = list(tgt.default_passes)
    pipeline = parse_pipeline(passes)  # validates names and options before any work
    if tune is not None and build:
        tune = tgt.tune_options(tune)  # the target parses its own options, before any work
    if calibration_data is not None or evaluate is not None:
        ctx = ctx or PassContext()
        if calibration_data is not None:
            ctx.calibration_data = list(calibration_data)
        if evaluate is not None:
            ctx.evaluate = evaluate
    original, graph, result = optimize(model, pipeline.passes, input_shapes=input_shapes,
                                       ctx=ctx, verify=verify, check_numerics=check_numerics)
    tuning = None
    if build and tune is not None:
        built, tuning = tgt.build_tuned(graph, tune)
    else:
        built = tgt.build(graph) if build else None
    verification = None
    if built is not None and verify:
        from .verify import verify_build

        verification = verify_build(graph, tgt, built)
    cm = CompiledModel(graph, tgt, built, original=original, pipeline=pipeline.spec(),
                       pass_stats=result.stats)
    cm.tuning = tuning
    cm.verification = verification
    return cm


def memory_report(cm: CompiledModel, *, measure: bool = True, runs: int = 3) -> dict:
    """Activation memory of a compiled model, planned and measured (bytes).

    * ``graph_arena_bytes`` / ``graph_lower_bound``: our IR's plan (`plan_memory`, views
      and in-place elementwise ops), in the graph's order; ``memory_order_lower_bound``
      with `memory_order` instead (equal when reordering does not help);
    * the target's own numbers (`TvmTarget.memory_stats`): from the untuned lowering
      ``arena_bytes``, ``lower_bound``, ``arena_steady_bytes``, ``tvm_default_bytes``,
      ``tvm_workspace_bytes`` ..., and ``measured``: the peak of a fresh process running
      the built library ``runs`` times (``run_bytes``: above the RSS after loading), or
      None with ``measured_note`` saying why.
    """
    from .memory_plan import plan_memory

    graph = cm.graph
    plan = plan_memory(graph, in_place=True)
    ordered = plan_memory(graph, in_place=True, order="memory")
    out: dict[str, Any] = {"target": cm.target.name,
                           "memory_planner": getattr(cm.target, "memory", None),
                           "graph_arena_bytes": plan.arena_bytes,
                           "graph_lower_bound": plan.lower_bound,
                           "memory_order_arena_bytes": ordered.arena_bytes,
                           "memory_order_lower_bound": ordered.lower_bound}
    stats = getattr(cm.target, "memory_stats", None)  # the target's plan and measurement
    if stats is None:
        out["measured"] = None
        out["measured_note"] = f"target '{cm.target.name}' reports no memory plan"
        return out
    if cm.built is None:
        measure = False
    out.update(stats(cm.built, graph, measure=measure, runs=runs))
    return out


def format_memory(report: Mapping[str, Any]) -> str:
    """`memory_report` as lines of MiB (for ``compiler benchmark --memory``)."""
    mib = 2 ** 20
    labels = [("graph_lower_bound", "lower bound (IR, max live bytes)"),
              ("graph_arena_bytes", "planned arena (IR)"),
              ("memory_order_arena_bytes", "planned arena, memory-aware order (IR)"),
              ("arena_bytes", "planned arena (built)"),
              ("lower_bound", "lower bound (built)"),
              ("arena_steady_bytes", "arena held at a run's peak, repeated calls"),
              ("tvm_default_bytes", "TVM default plan (storages)"),
              ("tvm_workspace_bytes", "TVM default: largest kernel workspace")]
    rows = [f"memory (planner: {report.get('memory_planner')})"]
    rows += [f"  {label:<44}{report[key] / mib:10.2f} MiB" for key, label in labels
             if report.get(key) is not None]
    m = report.get("measured")
    if m:
        rows.append(f"  {'measured peak while running (fresh process)':<44}"
                    f"{m['run_bytes'] / mib:10.2f} MiB  ({m['runs']} runs; "
                    f"{(m['peak'] - m['after_import']) / mib:.2f} MiB above the runtime import)")
    else:
        rows.append(f"  measured: {report.get('measured_note') or 'no'}")
    return "\n".join(rows)

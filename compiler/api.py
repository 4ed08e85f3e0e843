"""`compile()`: ONNX in, a `CompiledModel` for a target out.

Everything that can be checked before work starts is checked first (target name, pass
names and options, the model file, input shapes), so a bad call fails fast and writes
nothing.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

from .artifact import CompiledModel
from .ir import Graph
from .onnx_io import import_model
from .stage_size import StageSizeInstrument
from .pass_manager import (NumericsInstrument, Pass, PassContext, PassInstrument, VerifyInstrument,
                           check_budget, parse_pipeline)

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
    if ctx.budget is not None and pipeline.uses_budget:
        ctx.start_budget(original)  # the budget is measured against the original model
    if ctx.measure_latency is None:
        options = ctx.options
        ctx.measure_latency = lambda g: measure_latency_ms(g, options.get("target", "host"))
    if verify and not any(isinstance(i, VerifyInstrument) for i in ctx.instruments):
        ctx.instruments.append(VerifyInstrument())
    if not any(isinstance(i, StageSizeInstrument) for i in ctx.instruments):
        ctx.instruments.append(StageSizeInstrument())  # size per stage, for the report
    if check_numerics:
        ctx.instruments.append(NumericsInstrument())
    result = pipeline(original.clone(), ctx)
    return original, result.graph, result


def compile(model: Any, target: Any = "host",
            passes: "Iterable[str | Pass] | str | None" = None, *,
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            ctx: PassContext | None = None, verify: bool = True,
            check_numerics: bool = False, build: bool = True,
            calibration_data: "Sequence[Mapping[str, Any]] | str | os.PathLike | None" = None,
            evaluate: Any = None,
            tune: "Mapping[str, Any] | int | None" = None,
            eval_data: Any = None, metric: str | None = None, budget: float | None = None,
            preprocess: Any = None, calibration_samples: int | None = 256,
            eval_samples: int | None = 1000, train_data: Any = None,
            train_samples: int | None = None, seed: int = 0) -> CompiledModel:
    """Compile an ONNX model for ``target``.

    ``passes`` is a list of pass specs such as ``["fold-bn", "prune{ratio=0.5}"]`` or
    `Pass` objects; ``None`` runs the target's default passes, ``[]`` runs none.
    ``input_shapes`` fixes dynamic input dimensions by input name.
    ``calibration_data`` (a list of input dicts from real data) and ``evaluate`` (a
    callback ``graph -> score``) are handed to the passes through their `PassContext`.
    ``calibration_data`` may also name a source (`compiler.data_sources`: a folder of
    images, a ``.npy``/``.npz`` file, a data set name such as ``"mnist"``), as may
    ``eval_data``, which becomes ``evaluate`` scored by ``metric`` (``top1``, ``f1``,
    ``miou``; default by task).  ``preprocess`` (a `data_sources.Preprocess` or its
    fields as a dict) says how images become inputs; ``calibration_samples`` /
    ``eval_samples`` cap the samples used (a seeded subset, ``seed``; None: all).
    ``train_data`` (a source as above, labelled; a data set name defaults to its
    ``train`` split) is what ``finetune``, ``gradual-prune``, ``deep-compression`` and
    the passes' fine-tuning options train on (``PassContext.options["train_data"]``);
    ``train_samples`` caps it (default: all).
    ``seed`` also seeds the verification input.
    ``budget``: one accuracy budget for the whole pipeline (`PassContext.budget`),
    measured against the original model's score and shared by the accuracy-aware passes.
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
    if (isinstance(calibration_data, (str, os.PathLike)) or eval_data is not None
            or train_data is not None):
        model = model.clone() if isinstance(model, Graph) else import_model(model, input_shapes)
        input_shapes = None  # applied
        calibration_data, evaluate, train_data = _resolve_data(
            model, calibration_data, evaluate, eval_data, train_data, metric, preprocess,
            calibration_samples, eval_samples, train_samples, seed)
    if (calibration_data is not None or evaluate is not None or budget is not None
            or train_data is not None):
        ctx = ctx or PassContext()
        if calibration_data is not None:
            ctx.calibration_data = list(calibration_data)
        if evaluate is not None:
            ctx.evaluate = evaluate
        if budget is not None:
            ctx.budget = check_budget(budget)
        if train_data is not None:
            ctx.options["train_data"] = train_data
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

        verification = verify_build(graph, tgt, built, seed=seed)
    cm = CompiledModel(graph, tgt, built, original=original, pipeline=pipeline.spec(),
                       pass_stats=result.stats)
    cm.tuning = tuning
    cm.verification = verification
    return cm


def _resolve_data(graph: Graph, calibration: Any, evaluate: Any, eval_data: Any,
                  train_data: Any, metric: str | None, preprocess: Any,
                  calibration_samples: int | None, eval_samples: int | None,
                  train_samples: int | None, seed: int) -> tuple[Any, Any, Any]:
    """Named data sources -> (calibration input dicts, evaluate callback, training data)."""
    from . import data_sources as ds

    if isinstance(preprocess, Mapping):
        preprocess = ds.Preprocess(**preprocess)
    if isinstance(calibration, (str, os.PathLike)):
        samples = ds.resolve(calibration, graph, role="calibration", preprocess=preprocess,
                             limit=calibration_samples, seed=seed)
        calibration = ds.calibration_batches(samples, graph)
    if eval_data is not None:
        if evaluate is not None:
            raise ds.DataSourceError("give evaluate= or eval_data=, not both")
        samples = ds.resolve(eval_data, graph, role="eval", preprocess=preprocess,
                             limit=eval_samples, seed=seed)
        evaluate = ds.make_evaluator(samples, metric)
    if train_data is not None:
        train_data = ds.resolve(train_data, graph, role="train", preprocess=preprocess,
                                limit=train_samples, seed=seed)
    return calibration, evaluate, train_data


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
    loaded = {"library": cm.library_source} if cm.library_source is not None else {}
    out.update(stats(cm.built, graph, measure=measure, runs=runs, **loaded))
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
    peak = report.get("arena_peak_tensors")
    if peak:
        rows.append("  arena at its busiest step: " + ", ".join(
            f"{dtype}{list(shape)} {nbytes / mib:.2f} MiB" for shape, dtype, nbytes in peak[:4]))
    m = report.get("measured")
    if m:
        rows.append(f"  {'measured peak while running (fresh process)':<44}"
                    f"{m['run_bytes'] / mib:10.2f} MiB  ({m['runs']} runs; "
                    f"{(m['peak'] - m['after_import']) / mib:.2f} MiB above the runtime import)")
    else:
        rows.append(f"  measured: {report.get('measured_note') or 'no'}")
    return "\n".join(rows)

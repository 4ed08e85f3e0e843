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
from .stage_size import StageSizeInstrument
from .pass_manager import (NumericsInstrument, Pass, PassContext, PassInstrument, VerifyInstrument,
                     parse_pipeline)

__all__ = ["compile", "optimize", "measure_latency_ms"]


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

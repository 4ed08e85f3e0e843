"""mixed-precision: per-layer bit widths by sensitivity under an accuracy budget.

``mixed-precision{candidates=[8,6,4,2], budget=0.01, first_layer_bits=8, calibration=minmax,
per_channel=true}``

``budget`` None: what remains of the pipeline's accuracy budget (``PassContext.budget``,
measured against the model that entered the pipeline), else 0.01; given with a pipeline
budget, it caps this pass's share.

1. Quantize everything at ``candidates[0]`` bits (weights and input activations of every
   multiply layer) and score it with ``PassContext.evaluate`` (graph -> accuracy): ``base``.
2. Sensitivity of a layer: the score with only that layer at the lowest candidate.
3. Greedy, least sensitive layer first: lower that layer through the candidates while the
   score stays >= ``base - budget``; keep the last width that did.

The first multiply layer stays at ``first_layer_bits`` (0: searched like the others).
Calibration statistics are collected once and reused for every trial.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from compiler.ir import Graph
from compiler.pass_manager import Pass, PassContext, PassOptionError, PassResult, register_pass

from .calibration import HOW_TO_PASS, CalibrationError, collect_stats
from .quantize import Quantize, QuantizationWarning, check_bits, QuantRewriter

__all__ = ["MixedPrecision"]


@register_pass("mixed-precision")
@dataclass
class MixedPrecision(Pass):
    """Search per-layer bit widths (sensitivity-ordered greedy) under an accuracy budget."""

    candidates: list[int] = field(default_factory=lambda: [8, 6, 4, 2])
    budget: float | None = None
    first_layer_bits: int = 8
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    per_channel: bool = True
    exact = False
    requires: ClassVar[tuple[str, ...]] = ("fold-bn",)  # BN folded into the convs first

    def __post_init__(self) -> None:
        if not self.candidates:
            raise PassOptionError("pass 'mixed-precision': candidates must not be empty")
        for b in self.candidates:
            check_bits(b, "candidates")
        if self.first_layer_bits:
            check_bits(self.first_layer_bits, "first_layer_bits")
        self.candidates = sorted({int(b) for b in self.candidates}, reverse=True)
        if self.budget is not None and self.budget < 0:
            raise PassOptionError("pass 'mixed-precision': budget must be >= 0")

    uses_budget = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if ctx.evaluate is None:
            raise CalibrationError("pass 'mixed-precision' needs an accuracy callback: "
                                   "--eval-data on the command line, eval_data= in "
                                   "compiler.compile, or PassContext(evaluate=lambda graph: "
                                   "accuracy, ...)")
        ctx.start_budget(graph)
        if not ctx.calibration_data:
            raise CalibrationError(f"pass 'mixed-precision' needs calibration data; {HOW_TO_PASS}")
        stats = collect_stats(graph, ctx.calibration_data, pass_name=self.name)
        top = self.candidates[0]
        layers = [n.name for n in graph.topo_order() if QuantRewriter._is_layer(n)]
        if not layers:
            return PassResult(graph, False, {"layers": {}})
        fixed = {layers[0]: self.first_layer_bits} if self.first_layer_bits else {}
        searched = [name for name in layers if name not in fixed]
        evaluations = 0
        trials: list[list] = []  # [layer, bits, score, weight bits of the model]
        sizes = {n.name: sum(v.size for v in n.inputs[1:2] if v is not None)
                 for n in graph.topo_order() if n.name in layers}
        from compiler.logs import progress

        bar = progress(total=1 + len(searched) * len(self.candidates), desc="mixed-precision",
                       unit="trial")

        def build(assign: dict[str, int]) -> Graph:
            spec = {name: (b, b) for name, b in {**assign, **fixed}.items()}
            opts = Quantize(bits=top, act_bits=top, per_channel=self.per_channel,
                            calibration=self.calibration, bits_per_layer=spec)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantizationWarning)
                return QuantRewriter(opts, graph.clone(), stats, ctx).rewrite().graph

        def score(assign: dict[str, int], layer: str = "", bits: int = 0) -> float:
            nonlocal evaluations
            evaluations += 1
            value = float(ctx.evaluate(build(assign)))
            full = {**assign, **fixed}
            trials.append([layer, bits, round(value, 5),
                           int(sum(sizes[n] * b for n, b in full.items()))])
            bar.update(1)
            return value

        assign = {name: top for name in searched}
        base = score(assign)
        allowed = ctx.allowed_drop(base, self.budget)
        low = self.candidates[-1]
        sensitivity = {}
        if len(self.candidates) > 1:
            for name in searched:
                sensitivity[name] = base - score({**assign, name: low}, name, low)
        order = sorted(searched, key=lambda n: sensitivity.get(n, 0.0))
        current = base
        for name in order:
            for b in self.candidates[1:]:
                trial = score({**assign, name: b}, name, b)
                if trial >= base - allowed - 1e-9:
                    assign[name] = b
                    current = trial
                else:
                    break
        result = Quantize(bits=top, act_bits=top, per_channel=self.per_channel,
                          calibration=self.calibration,
                          bits_per_layer={n: (b, b) for n, b in {**assign, **fixed}.items()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QuantizationWarning)
            out = QuantRewriter(result, graph, stats, ctx).rewrite()
        bar.close()
        out.stats.update({"base_score": base, "score": current, "evaluations": evaluations,
                          "trials": trials,
                          "sensitivity": {k: round(v, 5) for k, v in sensitivity.items()},
                          "bits_per_layer": {n: b for n, b in {**assign, **fixed}.items()},
                          "max_drop": round(allowed, 6), **ctx.record_spent(self.name, current)})
        return out

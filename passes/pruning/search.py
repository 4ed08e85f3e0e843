"""prune-search: half-interval search for the largest pruning rate within an accuracy drop.

    prune-search{max_drop=0.01, method=structured}            # filter ratio
    prune-search{max_drop=0.01, method=magnitude, scope=global}
    prune-search{max_drop=0.01, method=structured, finetune_epochs=1, objective=macs}

Our reading of the research (CRV 2019): the pruning rate is found by bisection against
an accuracy constraint.  Starting from ``[low, high]`` (``low`` is assumed feasible),
each probe prunes a fresh copy of the graph at the midpoint (``prune`` or
``magnitude-prune``), optionally fine-tunes it, measures it with
`PassContext.evaluate` (``graph -> float``) and keeps the upper or the lower half;
after ``steps`` probes the best feasible probe is the result (the unchanged graph if
none is feasible).  Accuracy is assumed to fall monotonically with the rate.

Fine-tuning (``finetune_epochs > 0``) uses `compiler.torch.finetune` on
``ctx.options["train_data"]`` (a `compiler.datasets.Dataset`, required then).  Optional
``ctx.options`` keys: ``finetune_max_batches`` (batches per epoch cap, for quick runs),
``finetune_lr`` (default 1e-3), ``finetune_batch_size`` (64).  ``objective=latency``
measures with ``ctx.measure_latency`` (`compiler.optimize` sets one that builds for
``ctx.options["target"]``, default ``host``).  A fine-tuned probe has its BatchNormalization
folded (``fold-bn``) before training.

``objective`` (structured only): ``uniform`` -- the rate is the fraction of filters
removed from every group; ``params`` (memory) / ``macs`` (execution time) -- the rate is
the fraction of parameters / MACs removed, spent where it hurts least per unit of cost
(see `structured.Prune`); ``latency`` -- like ``macs``, and the result is also compiled
and timed on ``target`` (``latency_ms`` = medians before / after).

Stats: ``probes`` (``[rate, accuracy, within budget]`` per probe) and ``probe_costs`` (the
same with what the probe kept: ``params``, ``nonzero_params``, ``weight_bytes``, ``macs``,
and ``latency_ms`` with ``objective=latency``, every probe timed), with ``start`` the
graph's own sizes -- the report's accuracy-vs-compression/latency plot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from compiler.ir import Graph
from compiler.pass_manager import (Pass, PassContext, PassDataError, PassOptionError, PassResult,
                                  register_pass)

from .criteria import check_criterion
from .dependency import PruningError
from .magnitude import magnitude_prune
from .structured import prune_graph

__all__ = ["PruneSearch", "search_rate", "within_budget"]


def within_budget(base: float, acc: float, max_drop: float) -> bool:
    """Whether ``acc`` lost at most ``max_drop`` against ``base``.  Accuracies are
    ratios of image counts, so a drop of exactly the budget (25 of 5,000 images for
    0.5 %) must pass; in floats it computes as 0.00500000000000012, hence the slack,
    far below one image of any data set."""
    return base - acc <= max_drop + 1e-9


def search_rate(graph: Graph, evaluate, *, max_drop: float = 0.01,
                method: str = "structured", low: float = 0.0, high: float = 0.95,
                steps: int = 6, criterion: str = "mean_weight", objective: str = "uniform",
                scope: str = "layer", round_to: int = 1, protect: list[str] | None = None,
                finetune_epochs: int = 0, options: dict[str, Any] | None = None,
                baseline: float | None = None,
                measure_latency: Callable[[Graph], float] | None = None) -> tuple[Graph, dict]:
    """Bisection on the rate; returns ``(best graph, stats)`` (the input is not modified).

    ``measure_latency`` (graph -> ms) is needed for ``objective="latency"``: the pass gets it
    from ``PassContext.measure_latency`` (set by `compiler.compile`), so this module never
    compiles or builds anything itself."""
    options = options or {}
    if objective == "latency" and measure_latency is None:
        raise PassOptionError("prune-search: objective=latency needs a latency callback: "
                              "PassContext(measure_latency=lambda graph: ms), which "
                              "compiler.compile/optimize set by default")
    if method not in ("structured", "magnitude"):
        raise PruningError(f"prune-search: method '{method}' must be structured or magnitude")
    if not 0.0 <= low < high < 1.0:
        raise PruningError(f"prune-search: need 0 <= low < high < 1, got low={low} high={high}")
    if finetune_epochs > 0 and options.get("train_data") is None:
        raise PassOptionError("prune-search: finetune_epochs > 0 needs the training set in "
                              "PassContext.options['train_data']")
    base = float(evaluate(graph)) if baseline is None else baseline
    sel_objective = "macs" if objective == "latency" else objective

    def probe(rate: float) -> tuple[Graph, float, dict]:
        g = graph.clone()
        if method == "structured":
            g, st = prune_graph(g, ratio=rate, criterion=criterion, round_to=round_to,
                                protect=protect, objective=sel_objective)
        else:
            g, st = magnitude_prune(g, rate, scope)
        if finetune_epochs > 0:
            from compiler.pass_manager import PassContext
            from compiler.torch import finetune
            from passes.fold_bn import FoldBatchNorm

            # compiler.torch trains BN running statistics as parameters (torch refuses), so
            # BatchNormalization is folded into the convs first (exact, and what deployment
            # does anyway).
            g = FoldBatchNorm()(g, PassContext()).graph
            g = finetune(g, options["train_data"], epochs=finetune_epochs,
                         lr=float(options.get("finetune_lr", 1e-3)),
                         batch_size=int(options.get("finetune_batch_size", 64)),
                         max_batches=options.get("finetune_max_batches"))
        return g, float(evaluate(g)), st

    from compiler.logs import progress
    from compiler.stage_size import size_summary

    lo, hi = low, high
    best_graph, best_rate, best_acc, best_stats = graph.clone(), low, base, {}
    probes = []
    # what each probe kept (for the report's accuracy-vs-size/latency plots)
    start = size_summary(graph)
    costs: list[dict] = []
    bar = progress(total=max(0, int(steps)) + (low > 0), desc="prune-search", unit="probe")

    def record(rate: float, g: Graph, acc: float) -> bool:
        ok = within_budget(base, acc, max_drop)
        probes.append([round(rate, 4), round(acc, 5), ok])
        cost = {"rate": round(rate, 4), "accuracy": round(acc, 5), "ok": ok,
                **size_summary(g)}
        if objective == "latency":
            cost["latency_ms"] = round(measure_latency(g), 4)
        costs.append(cost)
        bar.update(1)
        bar.set_postfix(rate=f"{rate:.3f}", acc=f"{acc:.4f}")
        return ok

    try:
        if low > 0:
            g, acc, st = probe(low)
            if record(low, g, acc):
                best_graph, best_acc, best_stats = g, acc, st
        for _ in range(max(0, int(steps))):
            mid = (lo + hi) / 2
            g, acc, st = probe(mid)
            if record(mid, g, acc):
                lo, best_graph, best_rate, best_acc, best_stats = mid, g, mid, acc, st
            else:
                hi = mid
    finally:
        bar.close()
    stats = {"method": method, "baseline": round(base, 5), "rate": round(best_rate, 4),
             "accuracy": round(best_acc, 5), "drop": round(base - best_acc, 5),
             "probes": probes, "probe_costs": costs,
             "start": start}
    if method == "structured" and best_stats:
        stats.update(params=best_stats["params"], macs=best_stats["macs"])
    elif best_stats:
        stats["sparsity"] = best_stats["sparsity"]
    if objective == "latency":  # the best probe was timed already (unless none was kept)
        best_ms = next((c["latency_ms"] for c in costs if c["ok"] and c["rate"] ==
                        round(best_rate, 4)), None) if best_stats else None
        stats["latency_ms"] = [round(measure_latency(graph), 4),
                               best_ms if best_ms is not None
                               else round(measure_latency(best_graph), 4)]
    return best_graph, stats


@register_pass("prune-search")
@dataclass
class PruneSearch(Pass):
    """Half-interval search for the largest pruning rate within max_drop accuracy.

    ``max_drop`` None: what remains of the pipeline's accuracy budget
    (``PassContext.budget``), else 0.01; given with a budget, it caps this pass's share."""

    max_drop: float | None = None
    method: Literal["structured", "magnitude"] = "structured"
    finetune_epochs: int = 0
    criterion: str = "mean_weight"
    objective: Literal["uniform", "params", "macs", "latency"] = "uniform"
    scope: Literal["layer", "global"] = "layer"
    low: float = 0.0
    high: float = 0.95
    steps: int = 6
    round_to: int = 1
    protect: list[str] = field(default_factory=list)
    exact = False

    def __post_init__(self) -> None:
        check_criterion(self.criterion)
        if self.max_drop is not None and self.max_drop < 0:
            raise PruningError(f"prune-search: max_drop={self.max_drop} must be >= 0")
        if not 0.0 <= self.low < self.high < 1.0:
            raise PruningError(f"prune-search: need 0 <= low < high < 1, got low={self.low} "
                               f"high={self.high}")
        if self.method == "magnitude" and self.objective != "uniform":
            raise PruningError("prune-search: objective applies to method=structured only")

    uses_budget = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if ctx.evaluate is None:
            raise PassDataError("prune-search needs an accuracy callback: --eval-data on "
                                "the command line, eval_data= in compiler.compile, or "
                                "PassContext(evaluate=lambda graph: accuracy)")
        if self.finetune_epochs > 0:
            ctx.train_data("prune-search with finetune_epochs > 0")
        base = ctx.start_budget(graph)
        base = float(ctx.evaluate(graph)) if base is None else base
        max_drop = ctx.allowed_drop(base, self.max_drop)
        best, stats = search_rate(graph, ctx.evaluate, max_drop=max_drop, baseline=base,
                                  method=self.method, low=self.low, high=self.high,
                                  steps=self.steps, criterion=self.criterion,
                                  objective=self.objective, scope=self.scope,
                                  round_to=self.round_to, protect=self.protect,
                                  finetune_epochs=self.finetune_epochs, options=ctx.options,
                                  measure_latency=ctx.measure_latency)
        stats["max_drop"] = round(max_drop, 6)
        stats.update(ctx.record_spent(self.name, stats["accuracy"]))
        return PassResult(best, stats["rate"] > 0, stats)

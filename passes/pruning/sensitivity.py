"""Layer sensitivity and T-sensitive pruning (threshold-aware, layer-sensitive).

    t-sensitive{threshold=0.01, ratios=[0.1;0.2;0.3;0.4;0.5;0.6;0.7;0.8], criterion=mean_weight}

Our reading of the research (DSD 2022, "T-sensitive"): for every prunable group (a
layer, or layers coupled by a residual add / depthwise chain, see `dependency.py`)
prune that group alone at each candidate ratio and measure the accuracy drop with the
`PassContext.evaluate` callback (``graph -> float``, e.g. top-1 on a calibration
split); each group gets the *largest ratio whose drop stays within the threshold*;
then all groups are pruned together with those ratios in one structured rewrite.
Per-group drops are measured independently, so the combined drop can exceed the
threshold; it is measured and reported (``final_drop``).  Under a pipeline accuracy
budget (``PassContext.budget``, a promise) the threshold is what remains of the budget
(capped by ``threshold`` when given), and a combined result over it is retried with the
per-group threshold halved (at most ``BACKOFF`` times, the table is reused, one
evaluation each), else the graph is left unpruned.

`layer_sensitivity` is usable alone (it returns the whole ratio -> drop table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from compiler.ir import Graph
from compiler.pass_manager import Pass, PassContext, PassDataError, PassResult, register_pass

from .criteria import check_criterion
from .dependency import PruningError, analyze
from .structured import check_ratio, prune_graph

__all__ = ["layer_sensitivity", "choose_ratios", "TSensitive", "DEFAULT_RATIOS"]

DEFAULT_RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
BACKOFF = 4  # halvings of the per-group threshold when the combined drop exceeds a budget


def layer_sensitivity(graph: Graph, evaluate: Callable[[Graph], float],
                      ratios: list[float] = DEFAULT_RATIOS, *, criterion: str = "mean_weight",
                      round_to: int = 1, protect: list[str] | None = None,
                      stop_above: float | None = None,
                      baseline: float | None = None) -> tuple[float, dict[str, list]]:
    """``(baseline, {group: [(ratio, drop), ...]})`` -- each group pruned alone.

    With ``stop_above``, a group's scan stops after the first drop above it (the drop
    is assumed to grow with the ratio), which saves evaluations.
    """
    base = float(evaluate(graph)) if baseline is None else baseline
    from compiler.logs import progress

    dep = analyze(graph, protect=protect or [])
    table: dict[str, list] = {}
    for g in progress(dep.prunable_groups, desc="t-sensitive: layers", unit="layer"):
        rows = []
        for r in sorted(ratios):
            probe, stats = prune_graph(graph.clone(), ratios={g.name: r}, criterion=criterion,
                                       round_to=round_to, protect=protect)
            if stats["channels_removed"] == 0:
                rows.append((r, 0.0))
                continue
            drop = base - float(evaluate(probe))
            rows.append((r, drop))
            if stop_above is not None and drop > stop_above:
                break
        table[g.name] = rows
    return base, table


def choose_ratios(table: dict[str, list], threshold: float) -> dict[str, float]:
    """Per group, the largest ratio whose measured drop is within ``threshold``."""
    chosen = {}
    for name, rows in table.items():
        ok = [r for r, drop in rows if drop <= threshold]
        if ok and max(ok) > 0:
            chosen[name] = max(ok)
    return chosen


@register_pass("t-sensitive")
@dataclass
class TSensitive(Pass):
    """Threshold-aware layer-sensitive filter pruning (needs PassContext.evaluate).

    ``threshold`` None: what remains of the pipeline's accuracy budget, else 0.01."""

    threshold: float | None = None
    ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    criterion: str = "mean_weight"
    round_to: int = 1
    protect: list[str] = field(default_factory=list)
    exact = False

    def __post_init__(self) -> None:
        check_criterion(self.criterion)
        if not self.ratios:
            raise PruningError("t-sensitive: ratios is empty")
        for r in self.ratios:
            check_ratio(float(r), "ratios entry")
        if self.threshold is not None and self.threshold < 0:
            raise PruningError(f"t-sensitive: threshold={self.threshold} must be >= 0")

    uses_budget = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if ctx.evaluate is None:
            raise PassDataError("t-sensitive needs an accuracy callback: --eval-data on the "
                                "command line, eval_data= in compiler.compile, or "
                                "PassContext(evaluate=lambda graph: accuracy)")
        base = ctx.start_budget(graph)
        base = float(ctx.evaluate(graph)) if base is None else base
        threshold = ctx.allowed_drop(base, self.threshold)
        base, table = layer_sensitivity(graph, ctx.evaluate, [float(r) for r in self.ratios],
                                        criterion=self.criterion, round_to=self.round_to,
                                        protect=self.protect, stop_above=threshold,
                                        baseline=base)
        stats = {"baseline": round(base, 5), "threshold": round(threshold, 6),
                 "sensitivity": {k: [[r, round(d, 5)] for r, d in rows]
                                 for k, rows in table.items()}}
        group_threshold = threshold
        for attempt in range(BACKOFF + 1 if ctx.budget is not None else 1):
            chosen = choose_ratios(table, group_threshold)
            if not chosen:
                break
            pruned, pstats = prune_graph(graph.clone(), ratios=chosen, criterion=self.criterion,
                                         round_to=self.round_to, protect=self.protect)
            final = float(ctx.evaluate(pruned))
            if ctx.budget is None or base - final <= threshold + 1e-9:
                break
            group_threshold /= 2
            chosen = {}
        stats["ratios"] = chosen
        if not chosen:
            stats.update(final=round(base, 5), final_drop=0.0, channels_removed=0)
            stats.update(ctx.record_spent(self.name, base))
            return PassResult(graph, False, stats)
        stats.update(final=round(final, 5), final_drop=round(base - final, 5),
                     channels_removed=pstats["channels_removed"], params=pstats["params"],
                     macs=pstats["macs"], backoffs=attempt)
        stats.update(ctx.record_spent(self.name, final))
        return PassResult(pruned, pstats["channels_removed"] > 0, stats)

"""prune: structured filter pruning -- removes filters and every dependent slice.

    prune{ratio=0.5, criterion=mean_weight, round_to=1}
    prune{ratios={/conv1/Conv:0.3; /conv2/Conv:0.6}}      # per-layer (T-sensitive's output)
    prune{ratio=0.4, objective=macs}                       # remove 40 % of the MACs

The channel dependency analysis (`dependency.py`) splits the graph's channels into
*groups* (channels that are structurally parallel: one conv's filters, or a residual
stage's channels across all its convs, BNs and adds).  Within each prunable group the
components with the lowest criterion score (`criteria.py`) are removed, and every op
touching them is rewritten (filters, the consumers' input slices, BN parameters, Split
sizes, Gemm feature blocks, conv group counts...).  The result is a smaller, valid,
re-typed graph.

Options:

* ``ratio`` in [0, 1): fraction of each group's channels to remove (``objective=uniform``),
  or fraction of the model's params/MACs to remove (``objective=params|macs``).
* ``criterion``: ``l1 | l2 | mean_weight | bn_scale | random`` (``seed`` seeds random).
* ``round_to``: surviving channel counts per group are rounded *up* to a multiple of N
  (hardware-friendly vector widths); a group never loses all its channels.
* ``layers``: prune only the groups containing these layers (node or output names,
  fnmatch globs); every name must match.
* ``ratios``: per-layer ratios ``{layer: ratio; ...}``; a group gets the ratio of its
  layers named exactly (the smallest if several), else of a matching glob (``*``).
  Groups ``ratios`` does not name are left alone.
* ``protect``: layers whose output channels are never removed (graph outputs always are).
* ``objective``: ``uniform`` (each group loses ``ratio``), ``params`` (memory) or ``macs``
  (execution time): greedy over all groups, cheapest importance per unit of cost saved
  first, until the estimated cost reduction reaches ``ratio``.
* ``grouped``: ``prune`` removes whole conv groups of grouped/depthwise convs; ``skip``
  leaves every group touching a grouped conv alone (counted in the stats).

Ops without a pruning handler block the groups they touch (warning + ``skipped_ops``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from compiler.analysis import model_stats, node_cost
from compiler.ir import Graph, Node
from compiler.ops.registry import op_traits
from compiler.pass_manager import Pass, PassContext, PassResult, register_pass

from .criteria import ScoreInfo, check_criterion, group_scores
from .dependency import (Component, DependencyGraph, PruningError, PruningGroup, analyze,
                         apply_selection, match_layers)

__all__ = ["Prune", "prune_graph", "parse_ratios", "select_channels"]


def parse_ratios(spec: Any) -> dict[str, float]:
    """``{a:0.3; b:0.5}`` / ``[a=0.3,b=0.5]`` / a dict -> ``{"a": 0.3, "b": 0.5}``."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        if isinstance(spec, (list, tuple)):
            parts = [str(p) for p in spec]
        else:
            body = str(spec).strip()
            if body[:1] in "{[(" and body[-1:] in "}])":
                body = body[1:-1]
            parts = [p for p in body.replace(";", ",").split(",") if p.strip()]
        items = []
        for part in parts:
            sep = ":" if ":" in part else "=" if "=" in part else None
            if sep is None:
                raise PruningError(f"prune: ratios entry '{part}' is not layer:ratio")
            key, val = part.rsplit(sep, 1)
            items.append((key.strip().strip("'\""), val.strip()))
    out = {}
    for key, val in items:
        try:
            r = float(val)
        except (TypeError, ValueError):
            raise PruningError(f"prune: ratio {val!r} for layer '{key}' is not a number") from None
        check_ratio(r, f"ratios[{key}]")
        out[str(key)] = r
    return out


def check_ratio(r: float, what: str = "ratio") -> None:
    """A PruningError unless ``r`` is a pruning rate in [0, 1)."""
    if not (isinstance(r, (int, float)) and 0.0 <= float(r) < 1.0):
        raise PruningError(f"prune: {what}={r!r} must be in [0, 1) (a group keeps at least "
                           "one channel)")


def _group_ratio(group: PruningGroup, ratios: dict[str, float]) -> float | None:
    import fnmatch

    exact = [r for k, r in ratios.items() if k in group.layers]
    if exact:
        return min(exact)
    globbed = [r for k, r in ratios.items()
               if any(fnmatch.fnmatchcase(layer, k) for layer in group.layers)]
    return min(globbed) if globbed else None


def _grouped(node) -> bool:
    """A weight layer with a ``group`` attribute (op trait ``weight_layer.grouped``)."""
    opdef = op_traits(node)
    return opdef is not None and opdef.weight_layer is not None and opdef.weight_layer.grouped


def _touches_grouped_conv(group: PruningGroup) -> bool:
    for c in group.components[:1]:
        for v, _ in c.atoms:
            nodes = [v.producer] + v.consumers
            if any(n is not None and _grouped(n) and int(n.attrs.get("group", 1)) > 1
                   for n in nodes):
                return True
    return False


def _round_keep(n: int, remove: int, round_to: int) -> int:
    """Channels to remove so that the survivors are a multiple of round_to (rounded up)."""
    keep = n - remove
    keep = int(math.ceil(keep / round_to) * round_to) if round_to > 1 else keep
    keep = min(max(keep, 1), n)
    return n - keep


def _component_costs(dep: DependencyGraph, comps: list[Component], metric: str) -> np.ndarray:
    """Estimated params or MACs saved by removing each component alone."""
    cache: dict[int, float] = {}

    def cost(node: Node) -> float:
        if id(node) not in cache:
            c = node_cost(node)
            cache[id(node)] = float(c.macs if metric == "macs" else c.params)
        return cache[id(node)]

    out = []
    for comp in comps:
        per_value: dict[int, int] = {}
        values = {}
        for v, _ in comp.atoms:
            per_value[id(v)] = per_value.get(id(v), 0) + 1
            values[id(v)] = v
        fracs: dict[int, tuple[Node, float]] = {}
        for vid, v in values.items():
            f = per_value[vid] / max(dep.channels(v), 1)
            for node in [v.producer] + v.consumers:
                if node is not None:
                    prev = fracs.get(id(node), (node, 0.0))[1]
                    fracs[id(node)] = (node, max(prev, f))
        out.append(sum(cost(n) * f for n, f in fracs.values()))
    return np.array(out, dtype=np.float64)


def select_channels(dep: DependencyGraph, *, ratio: float = 0.5, criterion: str = "mean_weight",
                    round_to: int = 1, layers: list[str] | None = None,
                    ratios: dict[str, float] | None = None, objective: str = "uniform",
                    grouped: str = "prune", seed: int = 0,
                    stats: dict | None = None) -> list[Component]:
    """The components to remove (see `Prune` for the options)."""
    check_criterion(criterion)
    stats = stats if stats is not None else {}
    rng = np.random.default_rng(seed)
    info = ScoreInfo()
    only: set[str] | None = None
    if layers:
        only = {n.name for n in match_layers(dep.graph, layers, what="prune layers")}
    if ratios:
        match_layers(dep.graph, list(ratios), what="prune ratios")  # unknown names fail
    candidates: list[tuple[PruningGroup, float]] = []
    blocked, grouped_skipped = [], []
    for g in dep.groups:
        if not any(c.filters for c in g.components):
            continue
        if only is not None and not only & set(g.layers):
            continue
        r = _group_ratio(g, ratios) if ratios else ratio
        if r is None or r <= 0:
            continue
        if not g.prunable:
            blocked.append(g.name)
            continue
        if grouped == "skip" and _touches_grouped_conv(g):
            grouped_skipped.append(g.name)
            continue
        candidates.append((g, r))
    remove: list[Component] = []
    if objective == "uniform" or ratios:
        for g, r in candidates:
            n = g.size
            k = _round_keep(n, int(math.floor(n * r + 1e-9)), round_to)
            if k <= 0:
                continue
            scores = group_scores(g, criterion, rng, info)
            order = np.argsort(scores, kind="stable")[:k]
            remove.extend(g.components[i] for i in sorted(order))
    else:
        remove = _select_by_cost(dep, candidates, ratio, criterion, round_to, objective, rng, info)
    stats["groups_blocked"] = len(blocked)
    if blocked:
        stats["blocked_groups"] = blocked[:20]
    if grouped_skipped:
        stats["grouped_skipped"] = len(grouped_skipped)
    if info.fallbacks:
        stats["bn_scale_fallback"] = info.fallbacks
    return remove


def _select_by_cost(dep, candidates, ratio, criterion, round_to, objective, rng, info):
    metric = "macs" if objective == "macs" else "params"
    stats = model_stats(dep.graph)
    total = float(stats.macs if metric == "macs" else stats.params)
    entries = []  # (priority, cost, group index, component index)
    for gi, (g, _) in enumerate(candidates):
        scores = group_scores(g, criterion, rng, info)
        mean = float(np.mean(scores)) or 1.0
        costs = _component_costs(dep, g.components, metric)
        for ci, (s, c) in enumerate(zip(scores, costs)):
            if c > 0:
                entries.append((s / mean / c, c, gi, ci))
    entries.sort(key=lambda e: (e[0], e[2], e[3]))
    chosen: dict[int, list[int]] = {}
    saved = 0.0
    for _, c, gi, ci in entries:
        if saved >= ratio * total:
            break
        picked = chosen.setdefault(gi, [])
        if len(picked) + 1 > candidates[gi][0].size - 1:
            continue
        picked.append(ci)
        saved += c
    remove = []
    for gi, picked in chosen.items():
        g = candidates[gi][0]
        k = _round_keep(g.size, len(picked), round_to)
        remove.extend(g.components[i] for i in sorted(picked[:k]))
    return remove


def prune_graph(graph: Graph, *, ratio: float = 0.5, criterion: str = "mean_weight",
                round_to: int = 1, layers: list[str] | None = None,
                ratios: dict[str, float] | None = None, protect: list[str] | None = None,
                objective: str = "uniform", grouped: str = "prune",
                seed: int = 0) -> tuple[Graph, dict]:
    """Structured pruning of ``graph`` in place; returns ``(graph, stats)``."""
    check_ratio(ratio)
    if round_to < 1:
        raise PruningError(f"prune: round_to={round_to} must be >= 1")
    if objective not in ("uniform", "params", "macs"):
        raise PruningError(f"prune: objective '{objective}' must be uniform, params or macs")
    before = model_stats(graph)
    dep = analyze(graph, protect=protect or [])
    stats: dict[str, Any] = {"criterion": criterion, "groups": len(
        [g for g in dep.groups if any(c.filters for c in g.components)])}
    remove = select_channels(dep, ratio=ratio, criterion=criterion, round_to=round_to,
                             layers=layers, ratios=ratios, objective=objective,
                             grouped=grouped, seed=seed, stats=stats)
    sizes_before = {g.name: g.size for g in dep.groups}
    removed_by_group: dict[str, int] = {}
    ids = {id(c) for c in remove}
    for g in dep.groups:
        n = sum(1 for c in g.components if id(c) in ids)
        if n:
            removed_by_group[g.name] = n
    if remove:
        apply_selection(dep, remove)
    after = model_stats(graph)
    stats.update({
        "groups_pruned": len(removed_by_group),
        "channels_removed": len(remove),
        "layers": {name: f"{sizes_before[name]}->{sizes_before[name] - n}"
                   for name, n in removed_by_group.items()},
        "params": [before.params, after.params],
        "macs": [before.macs, after.macs],
    })
    if dep.skipped_ops:
        stats["skipped_ops"] = dict(dep.skipped_ops)
    return graph, stats


@register_pass("prune")
@dataclass
class Prune(Pass):
    """Structured filter pruning (removes filters and every dependent slice)."""

    ratio: float = 0.5
    criterion: str = "mean_weight"
    round_to: int = 1
    layers: list[str] = field(default_factory=list)
    ratios: str | None = None
    protect: list[str] = field(default_factory=list)
    objective: Literal["uniform", "params", "macs"] = "uniform"
    grouped: Literal["prune", "skip"] = "prune"
    seed: int = 0
    exact = False

    def __post_init__(self) -> None:
        check_ratio(self.ratio)
        check_criterion(self.criterion)
        if int(self.round_to) < 1:
            raise PruningError(f"prune: round_to={self.round_to} must be >= 1")
        self._ratios = parse_ratios(self.ratios)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        graph, stats = prune_graph(graph, ratio=self.ratio, criterion=self.criterion,
                                   round_to=int(self.round_to), layers=list(self.layers),
                                   ratios=self._ratios or None, protect=list(self.protect),
                                   objective=self.objective, grouped=self.grouped,
                                   seed=self.seed)
        return PassResult(graph, stats["channels_removed"] > 0, stats)

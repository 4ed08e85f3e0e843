"""gradual-prune and deep-compression: the Deep-Compression schedule as passes.

    gradual-prune{max_drop=0.005, epochs=2}
    deep-compression{max_drop=0.005, clusters=[4, 8, 16, 32], small_layer=2000}

``gradual-prune`` is iterative magnitude pruning with fine-tuning after every step.  The
largest weight layer keeps a density ``d`` of its weights, a layer n times smaller keeps
``d * n**alpha`` (capped at 1): small layers (first conv, classifier) cost little memory and
much accuracy, and one global threshold empties LeNet's second conv first.  ``d`` starts
at ``start`` and is multiplied by ``step`` while the accuracy (``ctx.evaluate``) stays
within ``max_drop`` of the baseline; then ``probes`` bisection probes (geometric
midpoints, each fine-tuned from the last feasible graph) between the last feasible and the
first infeasible density.  ``final_epochs`` retrain the chosen graph.

``deep-compression`` runs gradual-prune, then ``prune-unused`` (exact: the channels and
neurons whose every outgoing weight was pruned go, with their incoming weights and
biases; ``drop_unused=false`` keeps them), then the weight-sharing schedule (`share_search`:
the smallest k of ``clusters`` whose fine-tuned accuracy is within ``share_drop``), then
``dedup-constants``.  The lossless coder (`compiler.compression.compress_graph`) then
stores the result; these are the stages behind the README's compression ratios
(`benchmarks/compression.py`).

``max_drop`` (default 0.005) is the drop each may cost; under a pipeline accuracy budget
(``--budget``, `PassContext.budget`) an unset ``max_drop`` means what earlier passes left
of it (a set one caps it), and the result's score is charged to it (stats ``accuracy``,
``budget_left``), so ``deep-compression`` after ``prune-search`` shares one budget.

Both need ``ctx.evaluate`` (graph -> accuracy, e.g. on the ``calib`` split; ``--eval-data``)
and ``ctx.options["train_data"]`` (a `compiler.datasets.Dataset` or
`compiler.data_sources.Samples`; ``--train-data``).  Optional ``ctx.options``:
``baseline_accuracy`` (the accuracy the budgets are relative to; default
``ctx.evaluate(graph)``), ``finetune_max_batches`` (batches per epoch cap),
``finetune_teacher`` (keywords of `finetune` for distillation: ``teacher``, ``distill``,
``temperature``) and ``log`` (a callable taking one line of progress).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from compiler import Pass, PassContext, PassOptionError, PassResult, parse_pass, register_pass
from compiler.pass_manager import PassDataError
from compiler.ir import Graph
from passes.pruning.magnitude import magnitude_prune, weight_layers
from passes.pruning.search import within_budget
from passes.pruning.unused import prune_unused
from passes.weight_sharing import finetune_centroids, share_weights

Evaluate = Callable[[Graph], float]
#: ``max_drop`` of both passes when neither it nor a pipeline budget is given
DEFAULT_DROP = 0.005


def _finetune(*args: Any, **kwargs: Any) -> Graph:
    """`finetune` imported on use: torch is needed only by fine-tuning passes."""
    from compiler.torch import finetune

    return finetune(*args, **kwargs)


def layer_prune(graph: Graph, density: float, alpha: float = 0.5) -> tuple[Graph, dict]:
    """Magnitude pruning with a per-layer density: the largest layer keeps ``density`` of
    its weights, a layer ``n`` times smaller keeps ``density * n**alpha`` (capped at 1).
    Returns the graph and each layer's statistics of `magnitude_prune`."""
    nodes = weight_layers(graph)
    if not nodes:
        raise PassOptionError("gradual-prune: the graph has no weight layer (Conv, "
                              "ConvTranspose, Gemm, MatMul with a constant weight)")
    biggest = max(n.inputs[1].const.size for n in nodes)
    per_layer = {}
    for n in nodes:
        d = min(1.0, density * (biggest / n.inputs[1].const.size) ** alpha)
        graph, st = magnitude_prune(graph, 1 - d, "layer", [n.name])
        per_layer[n.name] = st["layers"][n.name]
    return graph, per_layer


def gradual_prune(graph: Graph, base_acc: float, evaluate: Evaluate, train: Any,
                  max_drop: float, *, epochs: int = 2, lr: float = 5e-4, start: float = 0.5,
                  factor: float = 0.5, probes: int = 2, alpha: float = 0.5,
                  max_batches: int | None = None, teacher: dict | None = None,
                  log: Callable[[str], None] | None = None) -> tuple[Graph, float, list]:
    """The pruning schedule: (pruned graph, rate of the largest layer, history of
    [density, accuracy] probes).  ``graph`` is not modified."""
    def step(g: Graph, density: float) -> tuple[Graph, float]:
        g, per_layer = layer_prune(g.clone(), density, alpha)
        g = _finetune(g, train, epochs=epochs, lr=lr, max_batches=max_batches,
                      **(teacher or {}))
        acc = evaluate(g)
        history.append([round(density, 5), round(acc, 5)])
        if log:
            log(f"    prune density {density:.4f} {per_layer}: calib {acc:.4f}")
        return g, acc

    history: list = []
    ok_d, ok_graph, fail_d = 1.0, graph, None
    density = start / factor
    while density > 1 / 1024:
        density *= factor
        g, acc = step(ok_graph, density)
        if within_budget(base_acc, acc, max_drop):
            ok_d, ok_graph = density, g
        else:
            fail_d = density
            break
    if fail_d is not None:
        lo, hi = fail_d, ok_d  # densities: lo infeasible, hi feasible
        for _ in range(probes):
            mid = math.sqrt(lo * hi)
            g, acc = step(ok_graph, mid)
            if within_budget(base_acc, acc, max_drop):
                hi, ok_d, ok_graph = mid, mid, g
            else:
                lo = mid
    return ok_graph, 1 - ok_d, history


def share_layers(graph: Graph, k: int, bias_clusters: int = 8, conv_clusters: int = 16,
                 small_layer: int = 0, small_clusters: int = 64) -> Graph:
    """k clusters for fully connected layers, max(k, ``conv_clusters``) for convolutions
    (Deep Compression also gives convs more bits), ``bias_clusters`` per bias vector (0:
    biases stay fp32); bfloat16 centroids.  A layer with at most ``small_layer`` weights
    (0: off) gets at least ``small_clusters``: its codebook costs little, and small layers
    (depthwise convs with folded BatchNorm, the first conv) lose the most from a coarse
    codebook."""
    groups: dict[int, list[str]] = {}
    for n in weight_layers(graph):
        kk = max(k, conv_clusters) if n.op_type in ("Conv", "ConvTranspose") else k
        if small_layer and n.inputs[1].const.size <= small_layer:
            kk = max(kk, small_clusters)
        groups.setdefault(min(kk, 256), []).append(n.name)
    g = graph
    for kk, names in sorted(groups.items()):
        g, _ = share_weights(g, clusters=kk, bias_clusters=bias_clusters, layers=names,
                             bf16=True)
    return g


def share_search(graph: Graph, base_acc: float, evaluate: Evaluate, train: Any,
                 max_drop: float, ks: tuple[int, ...] | list[int], *, epochs: int = 1,
                 lr: float = 1e-4, bias_clusters: int = 8, conv_clusters: int = 16,
                 small_layer: int = 0, small_clusters: int = 64,
                 max_batches: int | None = None, teacher: dict | None = None,
                 log: Callable[[str], None] | None = None) -> tuple[Graph, int, list]:
    """The sharing schedule: for k in ``ks`` (ascending), `share_layers` then ``epochs`` of
    centroid fine-tuning; the first k within ``max_drop`` of ``base_acc`` wins, else the most
    accurate.  Returns (graph, k, history of [k, accuracy])."""
    tried: list = []
    fallback = None
    for k in ks:
        g = share_layers(graph.clone(), k, bias_clusters, conv_clusters, small_layer,
                         small_clusters)
        g = finetune_centroids(g, train, epochs=epochs, lr=lr, max_batches=max_batches,
                               **(teacher or {}))
        acc = evaluate(g)
        tried.append([k, round(acc, 5)])
        if log:
            log(f"    share k={k}: calib {acc:.4f}")
        if within_budget(base_acc, acc, max_drop):
            return g, k, tried
        if fallback is None or acc > fallback[2]:
            fallback = (g, k, acc)
    return fallback[0], fallback[1], tried


def _needs(name: str, ctx: PassContext) -> tuple[Evaluate, Any]:
    if ctx.evaluate is None:
        raise PassDataError(f"{name} needs labelled evaluation data: --eval-data (CLI), "
                            "eval_data= (compiler.compile) or PassContext.evaluate")
    return ctx.evaluate, ctx.train_data(name)


def _budget(graph: Graph, ctx: PassContext, evaluate: Evaluate,
            own: float | None) -> tuple[float, float]:
    """(score of ``graph``, the drop this pass may cost): its ``max_drop``, or what is
    left of the pipeline's budget (`PassContext.allowed_drop`) when one is set."""
    base = ctx.start_budget(graph)
    if base is None:
        known = ctx.options.get("baseline_accuracy")
        base = float(evaluate(graph) if known is None else known)
    if own is None and ctx.budget is None:
        own = DEFAULT_DROP
    return base, ctx.allowed_drop(base, own)


def _charge(ctx: PassContext, name: str, graph: Graph, evaluate: Evaluate, stats: dict) -> None:
    """Score the result and charge it to the pipeline budget (when one is set)."""
    if ctx.budget is not None:
        stats["accuracy"] = round(float(evaluate(graph)), 5)
        stats.update(ctx.record_spent(name, stats["accuracy"]))


@register_pass("gradual-prune")
@dataclass
class GradualPrune(Pass):
    """Iterative magnitude pruning with fine-tuning, within an accuracy budget."""

    max_drop: float | None = None
    epochs: int = 2
    lr: float = 5e-4
    start: float = 0.5
    step: float = 0.5
    probes: int = 2
    alpha: float = 0.5
    final_epochs: int = 0
    final_lr: float = 3e-4
    exact = False

    def __post_init__(self) -> None:
        if not 0.0 < float(self.start) <= 1.0:
            raise PassOptionError(f"gradual-prune: start={self.start!r} must be in (0, 1]")
        if not 0.0 < float(self.step) < 1.0:
            raise PassOptionError(f"gradual-prune: step={self.step!r} must be in (0, 1)")
        if self.max_drop is not None and float(self.max_drop) < 0:
            raise PassOptionError(f"gradual-prune: max_drop={self.max_drop!r} must be >= 0")
        for opt in ("epochs", "probes", "final_epochs"):
            if int(getattr(self, opt)) < 0:
                raise PassOptionError(f"gradual-prune: {opt}={getattr(self, opt)!r} must be >= 0")

    uses_budget = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        evaluate, train = _needs("gradual-prune", ctx)
        o = ctx.options
        base, max_drop = _budget(graph, ctx, evaluate, self.max_drop)
        pruned, rate, history = gradual_prune(
            graph, base, evaluate, train, max_drop, epochs=int(self.epochs),
            lr=float(self.lr), start=float(self.start), factor=float(self.step),
            probes=int(self.probes), alpha=float(self.alpha),
            max_batches=o.get("finetune_max_batches"), teacher=o.get("finetune_teacher"),
            log=o.get("log"))
        if self.final_epochs:
            pruned = _finetune(pruned, train, epochs=int(self.final_epochs),
                               lr=float(self.final_lr),
                               max_batches=o.get("finetune_max_batches"),
                               **(o.get("finetune_teacher") or {}))
        stats = {"rate": rate, "baseline": base, "max_drop": round(max_drop, 6),
                 "history": history}
        _charge(ctx, self.name, pruned, evaluate, stats)
        return PassResult(pruned, pruned is not graph, stats)


@register_pass("deep-compression")
@dataclass
class DeepCompression(Pass):
    """gradual-prune -> prune-unused -> share-weights (smallest k within budget) ->
    dedup-constants."""

    max_drop: float | None = None
    prune_share: float = 1.0
    share_budget: float = 1.0
    epochs: int = 2
    lr: float = 5e-4
    start: float = 0.5
    step: float = 0.5
    final_epochs: int = 2
    clusters: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    share_epochs: int = 1
    share_lr: float = 1e-4
    bias_clusters: int = 8
    conv_clusters: int = 16
    small_layer: int = 0
    small_clusters: int = 64
    prune: bool = True
    drop_unused: bool = True
    exact = False

    def __post_init__(self) -> None:
        if not self.clusters or any(int(k) < 2 for k in self.clusters):
            raise PassOptionError(f"deep-compression: clusters={self.clusters!r} must be a "
                                  "non-empty list of integers >= 2")
        if self.max_drop is not None and float(self.max_drop) < 0:
            raise PassOptionError(f"deep-compression: max_drop={self.max_drop!r} must be >= 0")
        for opt in ("prune_share", "share_budget"):
            if not 0.0 <= float(getattr(self, opt)) <= 1.0:
                raise PassOptionError(f"deep-compression: {opt}={getattr(self, opt)!r} "
                                      "must be in [0, 1]")

    uses_budget = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        evaluate, train = _needs("deep-compression", ctx)
        o = ctx.options
        base, max_drop = _budget(graph, ctx, evaluate, self.max_drop)
        prune = GradualPrune(max_drop=float(self.prune_share) * max_drop,
                             epochs=self.epochs, lr=self.lr, start=self.start, step=self.step,
                             final_epochs=self.final_epochs)
        sub = PassContext(evaluate=evaluate, options={**o, "baseline_accuracy": base},
                          logger=ctx.logger)
        if self.prune:
            pr = prune(graph, sub)
            pruned, rate, prune_hist = pr.graph, pr.stats["rate"], pr.stats["history"]
        else:  # the graph was pruned before (e.g. a saved result): share and code only
            pruned, rate, prune_hist = graph, None, []
        if self.prune and self.final_epochs and o.get("log"):
            o["log"](f"    retrained {self.final_epochs} epochs: calib {evaluate(pruned):.4f}")
        unused = {}
        if self.drop_unused:
            pruned, unused = prune_unused(pruned.clone())
            if o.get("log") and unused["channels_removed"]:
                o["log"](f"    unread channels removed (exact): {unused['rounds']}")
        shared, k, share_hist = share_search(
            pruned, base, evaluate, train, float(self.share_budget) * max_drop,
            [int(k) for k in self.clusters], epochs=int(self.share_epochs),
            lr=float(self.share_lr), bias_clusters=int(self.bias_clusters),
            conv_clusters=int(self.conv_clusters), small_layer=int(self.small_layer),
            small_clusters=int(self.small_clusters), max_batches=o.get("finetune_max_batches"),
            teacher=o.get("finetune_teacher"), log=o.get("log"))
        shared = parse_pass("dedup-constants")(shared, PassContext()).graph
        stats = {"rate": rate, "clusters": k, "baseline": base,
                 "max_drop": round(max_drop, 6), "pruned": pruned, "unused": unused,
                 "history": {"prune": prune_hist, "share": share_hist}}
        _charge(ctx, self.name, shared, evaluate, stats)
        return PassResult(shared, True, stats)

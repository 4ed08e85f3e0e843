"""share-weights: k-means weight sharing (Deep Compression's second stage).

    share-weights{clusters=16}                           # a 16-entry codebook per layer
    share-weights{clusters=32, scope=global}             # one codebook for every layer
    share-weights{clusters=16, init=kmeans++, bias_clusters=8, finetune_epochs=1}

The weights of Conv, ConvTranspose, Gemm and MatMul (float constants of rank >= 2, and
the int8 weights of ``q.Conv``/``q.Gemm``/``q.MatMul`` after ``quantize``) are clustered
by 1-D k-means (Lloyd) into ``clusters`` centroids (2..256), initialized evenly over
[min, max] (``linear``, Deep Compression's best) or by ``kmeans++``; every weight becomes
its centroid.  Exact zeros (pruned weights) are not clustered and stay zero, so sharing
after ``magnitude-prune`` keeps the sparsity.  Integer weights get integer centroids
(rounded, inside the weights' range), so quantized kernels are unchanged.
``bias_clusters`` (0 = off) shares the 1-D float parameters (biases) of those layers the
same way, per layer.  ``bf16=true`` rounds float centroids to bfloat16 values (8-bit
mantissa), which the coder then stores in 2 bytes instead of 4 (losslessly: the low 16
bits are zero).

The constant keeps its ordinary data (``codebook[indices]``), so every kernel, lowering
and exporter works unchanged; ``value.meta["shared"]`` records ``codebook`` (entry 0 is
0 when the tensor has zeros) and ``indices`` (see `shared_weights`, which ignores a stale
annotation).  The lossless coder (`compiler.compression`) needs no annotation: it codes
any tensor with few distinct values as a codebook plus Huffman-coded indices.

``finetune_epochs > 0`` retrains the centroids on ``ctx.options["train_data"]`` (a
`compiler.datasets.Dataset`): the gradient of every weight is replaced by the sum of the
gradients of its cluster, so all members move together (`finetune_centroids`; optional
``ctx.options`` keys ``finetune_lr`` (1e-4), ``finetune_batch_size`` (64),
``finetune_max_batches``).  Float graphs only.

Stats: per layer the number of centroids, distinct values before/after and bits per
index (``layers``), and the mean squared change of the weights (``mse``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from compiler.ir import Graph, Value
from compiler.ops.registry import op_traits, ops_with
from compiler.pass_manager import Pass, PassContext, PassOptionError, PassResult, register_pass

__all__ = ["ShareWeights", "share_weights", "kmeans_1d", "shared_weights",
           "finetune_centroids", "to_bfloat16"]

# The multiply layers (op trait ``weight_layer``), float and integer.  q.ConvTranspose is
# left out: share-weights has never clustered its int8 weights (see the module docstring),
# and adding it would change the output of existing pipelines.
_NOT_SHARED = frozenset({"q.ConvTranspose"})
_WEIGHT_OPS = ops_with("weight_layer") - _NOT_SHARED


def kmeans_1d(values: np.ndarray, k: int, init: str = "linear", *, iters: int = 60,
              seed: int = 0) -> np.ndarray:
    """Sorted centroids of 1-D k-means (Lloyd) on ``values`` (at most ``k``)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        return np.zeros(0)
    distinct = np.unique(x)
    if distinct.size <= k:
        return distinct
    if init == "linear":
        c = np.linspace(x[0], x[-1], k)
    elif init == "kmeans++":
        rng = np.random.default_rng(seed)
        c = [x[rng.integers(x.size)]]
        for _ in range(k - 1):
            d2 = np.min((x[:, None] - np.array(c)[None, :]) ** 2, axis=1) \
                if x.size * len(c) < 4_000_000 else _nearest_d2(x, np.array(c))
            total = d2.sum()
            c.append(x[rng.choice(x.size, p=d2 / total)] if total > 0 else x[rng.integers(x.size)])
        c = np.sort(np.array(c))
    else:
        raise PassOptionError(f"share-weights: init '{init}' must be linear or kmeans++")
    csum = np.concatenate([[0.0], np.cumsum(x)])
    for _ in range(iters):
        c = np.unique(c)
        edges = np.searchsorted(x, (c[1:] + c[:-1]) / 2)  # x sorted: clusters are runs
        lo = np.concatenate([[0], edges])
        hi = np.concatenate([edges, [x.size]])
        count = hi - lo
        new = np.where(count > 0, (csum[hi] - csum[lo]) / np.maximum(count, 1), c)
        new = new[count > 0]
        if new.size == c.size and np.allclose(new, c, rtol=0, atol=1e-12):
            c = new
            break
        c = new
    return np.sort(c)


def _nearest_d2(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    c = np.sort(c)
    i = np.clip(np.searchsorted(c, x), 1, len(c) - 1) if len(c) > 1 else np.zeros(x.size, int)
    if len(c) == 1:
        return (x - c[0]) ** 2
    return np.minimum((x - c[i - 1]) ** 2, (x - c[i]) ** 2)


def _assign(x: np.ndarray, book: np.ndarray) -> np.ndarray:
    """Index of the nearest entry of sorted ``book`` for every element of ``x``."""
    if len(book) == 1:
        return np.zeros(x.shape, dtype=np.int64)
    mid = (book[1:] + book[:-1]) / 2
    return np.searchsorted(mid, x).astype(np.int64)


def _candidates(graph: Graph, layers: list[str] | None) -> list[tuple[Any, Value, bool]]:
    """(node, weight value, is_integer) for every multiply layer with a constant weight."""
    allowed = None
    if layers:
        from passes.pruning.dependency import match_layers

        allowed = {id(n) for n in match_layers(graph, layers, what="share-weights layers")}
    out, seen = [], set()
    for node in graph.topo_order():
        opdef = op_traits(node)
        if opdef is None or opdef.key not in _WEIGHT_OPS or len(node.inputs) < 2:
            continue
        if allowed is not None and id(node) not in allowed:
            continue
        slots = opdef.weight_layer.weight_inputs
        for slot in slots:
            w = node.inputs[slot]
            if w is None or w.const is None or w.const.ndim < 2 or id(w) in seen:
                continue
            if np.issubdtype(w.dtype, np.floating) and node.domain == "":
                out.append((node, w, False))
            elif w.dtype == np.int8 and node.domain == "q":
                out.append((node, w, True))
            else:
                continue
            seen.add(id(w))
    return out


def _bias_of(node) -> Value | None:
    opdef = op_traits(node)
    if node.domain != "" or opdef is None or opdef.weight_layer is None \
            or opdef.weight_layer.bias_input is None:
        return None
    slot = opdef.weight_layer.bias_input
    b = node.inputs[slot] if len(node.inputs) > slot else None
    if b is None or b.const is None or b.const.ndim != 1 \
            or not np.issubdtype(b.dtype, np.floating):
        return None
    return b


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 rounded (to nearest even) to the values bfloat16 can hold."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return rounded.view(np.float32).reshape(np.shape(x))


def _quantize_to(w: np.ndarray, book: np.ndarray, integer: bool,
                 bf16: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(new data, codebook (with 0 first when w has zeros), indices) for centroids ``book``."""
    zero = w == 0
    if integer:
        lo, hi = int(w.min()), int(w.max())
        book = np.unique(np.clip(np.round(book), lo, hi))
        book = book[book != 0]
    book = book.astype(w.dtype)
    if bf16 and w.dtype == np.float32:
        book = np.unique(to_bfloat16(book))
        book = book[book != 0]
    nz = ~zero
    idx = np.zeros(w.shape, dtype=np.int64)
    if nz.any() and book.size:
        idx[nz] = _assign(w[nz].astype(np.float64), book.astype(np.float64))
        # float rounding of a centroid may produce an exact 0: it becomes the zero entry
    codebook = np.concatenate([np.zeros(1, w.dtype), book]) if zero.any() else book
    indices = idx + 1 if zero.any() else idx
    indices[zero] = 0
    data = codebook[indices].astype(w.dtype)
    return data, codebook, indices.astype(np.uint16 if len(codebook) > 256 else np.uint8)


def share_weights(graph: Graph, clusters: int = 16, scope: str = "layer", init: str = "linear",
                  bias_clusters: int = 0, layers: list[str] | None = None,
                  seed: int = 0, bf16: bool = False) -> tuple[Graph, dict]:
    """Cluster the weights in place; returns ``(graph, stats)``."""
    _check_clusters(clusters, "clusters")
    if bias_clusters:
        _check_clusters(bias_clusters, "bias_clusters")
    if scope not in ("layer", "global"):
        raise PassOptionError(f"share-weights: scope '{scope}' must be layer or global")
    cands = _candidates(graph, layers)
    books: dict[int, np.ndarray] = {}
    if scope == "global":
        for integer in (False, True):
            group = [w for _, w, i in cands if i == integer]
            if group:
                pool = np.concatenate([w.const[w.const != 0].astype(np.float64).ravel()
                                       for w in group])
                book = kmeans_1d(pool, clusters, init, seed=seed)
                for w in group:
                    books[id(w)] = book
    stats_layers: dict[str, dict] = {}
    sq, count, changed = 0.0, 0, False
    jobs = [(node, w, integer, clusters) for node, w, integer in cands]
    if bias_clusters:
        jobs += [(node, b, False, bias_clusters) for node, _, _ in cands
                 if (b := _bias_of(node)) is not None]
    for node, w, integer, k in jobs:
        data = w.const
        book = books.get(id(w))
        if book is None:
            book = kmeans_1d(data[data != 0], k, init, seed=seed)
        new, codebook, indices = _quantize_to(data, book, integer, bf16)
        before = int(np.unique(data).size)
        if not np.array_equal(new.view(np.uint8), np.ascontiguousarray(data).view(np.uint8)):
            changed = True
            w.const = new
        w.meta["shared"] = {"codebook": codebook, "indices": indices, "bf16": bool(bf16)}
        nz = int(np.count_nonzero(codebook))
        sq += float(np.sum((new.astype(np.float64) - data.astype(np.float64)) ** 2))
        count += data.size
        stats_layers[w.name] = {"node": node.name, "centroids": nz, "distinct_before": before,
                                "bits": max(1, math.ceil(math.log2(max(len(codebook), 2))))}
    return graph, {"scope": scope, "layers": stats_layers, "changed": changed,
                   "mse": round(sq / count, 8) if count else 0.0}


def _check_clusters(k: Any, option: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= int(k) <= 256:
        raise PassOptionError(f"share-weights: option {option}={k!r} must be an integer in "
                              "2..256")


def shared_weights(value: Value) -> tuple[np.ndarray, np.ndarray] | None:
    """``(codebook, indices)`` of a shared constant, or None (also when the annotation no
    longer matches the data, e.g. after ordinary fine-tuning)."""
    info = value.meta.get("shared") if value.const is not None else None
    if not info:
        return None
    book, idx = np.asarray(info["codebook"]), np.asarray(info["indices"])
    if idx.shape != value.const.shape or idx.size and idx.max() >= len(book):
        return None
    if book.dtype != value.const.dtype or not np.array_equal(book[idx], value.const):
        return None
    return book, idx


def finetune_centroids(graph: Graph, dataset: Any, *, epochs: int = 1, lr: float = 1e-4,
                       batch_size: int = 64, max_batches: int | None = None,
                       seed: int = 0, teacher: Graph | None = None,
                       distill: float = 0.5, temperature: float = 4.0) -> Graph:
    """Retrain a shared graph: every weight's gradient is the sum over its cluster, so the
    members of a cluster stay equal (the centroid moves); zeros stay zero.  Other float
    parameters train normally.  Returns a new graph; codebooks are rewritten.  A
    ``teacher`` graph turns the loss into knowledge distillation (`training_loss`)."""
    from compiler.torch import import_torch, from_torch, to_torch, training_loss

    torch = import_torch()
    torch.manual_seed(seed)
    module = to_torch(graph)
    if module.qweights:
        raise PassOptionError("share-weights: centroid fine-tuning supports float graphs only "
                              "(fine-tune quantized graphs before sharing)")
    shared = {}
    for value in graph.constants:
        found = shared_weights(value)
        key = module.names.get(id(value))
        if found is None or key is None or key not in dict(module.named_parameters()):
            continue
        book, idx = found
        index = torch.from_numpy(idx.astype(np.int64).ravel())
        has_zero = bool(len(book) and book[0] == 0 and np.any(idx == 0))
        shared[key] = (value, book, idx, index, has_zero)

        def hook(grad, index=index, k=len(book), has_zero=has_zero):
            sums = torch.zeros(k, dtype=grad.dtype).index_add_(0, index, grad.reshape(-1))
            if has_zero:
                sums[0] = 0
            return sums[index].reshape(grad.shape)

        getattr(module, key).register_hook(hook)
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    steps = math.ceil(len(dataset) / batch_size)
    if max_batches is not None:
        steps = min(steps, max_batches)
    loss_fn = training_loss(teacher, distill, temperature)
    for epoch in range(epochs):
        for step, (x, y) in enumerate(dataset.batches(batch_size, shuffle=True,
                                                      seed=seed + epoch)):
            if step >= steps:
                break
            opt.zero_grad()
            inputs = torch.from_numpy(x)
            loss_fn(module(inputs), torch.from_numpy(y), inputs).backward()
            opt.step()
            module.apply_masks()
    module.eval()
    new = from_torch(module, graph)
    by_name = {v.name: v for v in new.constants}
    for key, (value, book, idx, _, has_zero) in shared.items():
        trained = getattr(module, key).detach().cpu().numpy().astype(np.float64).ravel()
        flat = idx.ravel().astype(np.int64)
        sums = np.bincount(flat, weights=trained, minlength=len(book))
        counts = np.bincount(flat, minlength=len(book))
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), book).astype(book.dtype)
        if value.meta["shared"].get("bf16") and centroids.dtype == np.float32:
            centroids = to_bfloat16(centroids)
        if has_zero:
            centroids[0] = 0
        target = by_name[value.name]
        target.const = centroids[idx].astype(value.dtype)
        target.meta["shared"] = {"codebook": centroids, "indices": idx,
                                 "bf16": bool(value.meta["shared"].get("bf16"))}
    return new


@register_pass("share-weights")
@dataclass
class ShareWeights(Pass):
    """k-means weight sharing: a codebook per layer (or global) and per-weight indices."""

    clusters: int = 16
    scope: Literal["layer", "global"] = "layer"
    init: Literal["linear", "kmeans++"] = "linear"
    bias_clusters: int = 0
    finetune_epochs: int = 0
    bf16: bool = False
    layers: list[str] = field(default_factory=list)
    exact = False

    def __post_init__(self) -> None:
        _check_clusters(self.clusters, "clusters")
        if self.bias_clusters:
            _check_clusters(self.bias_clusters, "bias_clusters")
        if self.finetune_epochs < 0:
            raise PassOptionError(f"share-weights: finetune_epochs={self.finetune_epochs} "
                                  "must be >= 0")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        if self.finetune_epochs:
            ctx.train_data("share-weights with finetune_epochs > 0")
        graph, stats = share_weights(graph, int(self.clusters), self.scope, self.init,
                                     int(self.bias_clusters), list(self.layers) or None,
                                     bf16=bool(self.bf16))
        changed = stats.pop("changed")
        if self.finetune_epochs:
            o = ctx.options
            graph = finetune_centroids(graph, o["train_data"], epochs=self.finetune_epochs,
                                       lr=float(o.get("finetune_lr", 1e-4)),
                                       batch_size=int(o.get("finetune_batch_size", 64)),
                                       max_batches=o.get("finetune_max_batches"))
            changed = True
        return PassResult(graph, changed, stats)

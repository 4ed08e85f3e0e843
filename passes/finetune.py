"""finetune: retrain the weights on the training set, as a step of the pipeline.

    finetune{epochs=1, lr=0.001, batch_size=64, max_batches=none, optimizer=adam, distill=0}

Pruning and low-bit quantization lose accuracy that a short retraining recovers; this
pass runs `compiler.torch.finetune` (torch, the optional extra) on the labelled training
set in ``PassContext.options["train_data"]`` (a `compiler.datasets.Dataset` or
`compiler.data_sources.Samples`: ``--train-data SRC`` on the command line,
``compile(..., train_data=SRC)`` in the API).  The graph's structure is unchanged: exact zeros stay zero (pruning masks
survive) and a quantized graph is trained with straight-through fake quantization, its
scales kept.  ``distill > 0`` adds knowledge distillation from the graph as it was before
this pass (the teacher).  BatchNormalization is folded first (``requires``): the torch
bridge trains weights, not running statistics.

Stats: ``epochs``, ``batches`` (per epoch), ``loss`` (mean training loss per epoch),
``seconds``, and ``before``/``after`` when ``PassContext.evaluate`` is set.  A tqdm bar
shows batches and the running loss on a terminal (off with ``--no-progress``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

from compiler.ir import Graph
from compiler.pass_manager import Pass, PassContext, PassOptionError, PassResult, register_pass

__all__ = ["Finetune"]


@register_pass("finetune")
@dataclass
class Finetune(Pass):
    """Retrain the weights on PassContext.options['train_data'] (needs torch)."""

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    max_batches: int | None = None
    optimizer: Literal["adam", "sgd"] = "adam"
    distill: float = 0.0
    seed: int = 0
    exact: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ("fold-bn",)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise PassOptionError(f"pass 'finetune': epochs={self.epochs} must be >= 1")
        if not self.lr > 0:
            raise PassOptionError(f"pass 'finetune': lr={self.lr} must be > 0")
        if self.batch_size < 1:
            raise PassOptionError(f"pass 'finetune': batch_size={self.batch_size} must be >= 1")
        if self.max_batches is not None and self.max_batches < 1:
            raise PassOptionError(f"pass 'finetune': max_batches={self.max_batches} must be "
                                  ">= 1 (or none)")
        if not 0.0 <= self.distill <= 1.0:
            raise PassOptionError(f"pass 'finetune': distill={self.distill} must be in [0, 1]")

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        data = ctx.train_data("pass 'finetune'")
        from compiler.torch import finetune

        before = float(ctx.evaluate(graph)) if ctx.evaluate is not None else None
        losses: list[float] = []
        start = time.perf_counter()
        extra = {"teacher": graph, "distill": self.distill} if self.distill > 0 else {}
        tuned = finetune(graph.clone(), data, epochs=self.epochs, lr=self.lr,
                         batch_size=self.batch_size, optimizer=self.optimizer,
                         max_batches=self.max_batches, seed=self.seed, losses=losses, **extra)
        steps = -(-len(data) // self.batch_size)
        if self.max_batches is not None:
            steps = min(steps, self.max_batches)
        stats = {"epochs": self.epochs, "batches": steps,
                 "loss": [round(l, 5) for l in losses],
                 "seconds": round(time.perf_counter() - start, 2)}
        if before is not None:
            stats.update(before=round(before, 5), after=round(float(ctx.evaluate(tuned)), 5))
        return PassResult(tuned, True, stats)

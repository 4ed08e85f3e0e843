"""Filter-importance criteria, computed per pruning group (one score per component).

A component's score reduces over its members: the filters that compute its channels
(``W[j]`` of every Conv / ConvTranspose / Gemm / MatMul producer in the component, e.g.
both convs feeding a residual add) -- the score is the *mean over members* of the
per-filter score, so members with a large fan-in do not drown the others.

* ``l1``: sum of absolute filter weights.
* ``l2``: Euclidean norm of the filter weights.
* ``mean_weight``: mean absolute filter weight, ``sum|w| / numel`` -- the *Mean Weight*
  criterion of the research (DSD 2022), our reading of "rank a filter by the mean
  magnitude of its weights".  Within one conv it orders filters like ``l1``; it differs
  when a group mixes layers of different fan-in and when ranking across groups.
* ``bn_scale``: ``|gamma|`` of the BatchNormalization(s) that scale the channel (Network
  Slimming); when a group has no BN the group falls back to ``mean_weight`` and the
  fallback is counted (``ScoreInfo.fallbacks``) and logged.
* ``random``: seeded uniform scores, the control every criterion must beat.

Lower scores are removed first.  Register another with `register_criterion`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .dependency import Component, PruningGroup, get_handler

__all__ = ["CRITERIA", "register_criterion", "group_scores", "ScoreInfo", "filter_score"]

log = logging.getLogger("compiler.passes.pruning")

FilterScore = Callable[[np.ndarray], float]

_FILTER_SCORES: dict[str, FilterScore] = {
    "l1": lambda w: float(np.abs(w).sum()),
    "l2": lambda w: float(np.sqrt(np.square(w.astype(np.float64)).sum())),
    "mean_weight": lambda w: float(np.abs(w).mean()) if w.size else 0.0,
}

CRITERIA: tuple[str, ...] = ("l1", "l2", "mean_weight", "bn_scale", "random")

_CUSTOM: dict[str, Callable[[PruningGroup, np.random.Generator], np.ndarray]] = {}


def register_criterion(name: str):
    """Decorator: ``fn(group, rng) -> scores`` (one float per component, low = prune)."""

    def decorate(fn):
        global CRITERIA
        _CUSTOM[name] = fn
        if name not in CRITERIA:
            CRITERIA = CRITERIA + (name,)
        return fn

    return decorate


@dataclass
class ScoreInfo:
    fallbacks: list[str] = field(default_factory=list)


def filter_score(component: Component, how: str) -> float:
    """Mean over the component's filters of the per-filter score ``how``."""
    fn = _FILTER_SCORES[how]
    scores = [fn(np.asarray(get_handler(node).filter_weights(node, j)))
              for node, j in component.filters]
    return float(np.mean(scores)) if scores else 0.0


def check_criterion(name: str) -> None:
    if name not in CRITERIA:
        raise ValueError(f"unknown pruning criterion '{name}'; choose one of "
                         f"{', '.join(CRITERIA)}")


def group_scores(group: PruningGroup, criterion: str, rng: np.random.Generator | None = None,
                 info: ScoreInfo | None = None) -> np.ndarray:
    """One importance score per component of ``group`` (low = less important)."""
    check_criterion(criterion)
    comps = group.components
    if criterion in _CUSTOM:
        return np.asarray(_CUSTOM[criterion](group, rng or np.random.default_rng(0)),
                          dtype=np.float64)
    if criterion == "random":
        rng = rng or np.random.default_rng(0)
        return rng.random(len(comps))
    if criterion == "bn_scale":
        if all(c.bn for c in comps):
            return np.array([np.mean([abs(float(node.inputs[1].const[j])) for node, j in c.bn])
                             for c in comps])
        if info is not None:
            info.fallbacks.append(group.name)
        log.info("pruning: group '%s' has no BatchNormalization; bn_scale falls back to "
                 "mean_weight", group.name)
        criterion = "mean_weight"
    return np.array([filter_score(c, criterion) for c in comps])

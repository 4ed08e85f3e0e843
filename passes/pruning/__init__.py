"""Pruning: channel dependency analysis, criteria, structured and unstructured pruning,
sensitivity analysis (T-sensitive) and accuracy-constrained rate search.

Passes: ``prune`` (structured.py), ``magnitude-prune`` (magnitude.py), ``t-sensitive``
(sensitivity.py), ``prune-search`` (search.py), ``prune-unused`` (unused.py).  Custom ops get a channel handler with
`register_handler` (dependency.py); custom criteria with `register_criterion`.
"""
from .dependency import (ChannelHandler, DependencyGraph, PruningError, PruningGroup,  # noqa: F401
                         analyze, register_handler)
from .criteria import CRITERIA, group_scores, register_criterion  # noqa: F401
from .structured import Prune, prune_graph  # noqa: F401
from .magnitude import MagnitudePrune, magnitude_prune  # noqa: F401
from .sensitivity import TSensitive, layer_sensitivity  # noqa: F401
from .search import PruneSearch, search_rate, within_budget  # noqa: F401
from .unused import PruneUnused, prune_unused  # noqa: F401

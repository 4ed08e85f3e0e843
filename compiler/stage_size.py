"""How big the model is after each pass: the data behind the report's "size per stage of
compression" plot.

`size_summary` measures a graph the way compression sees it: parameters, the nonzero ones
(what sparse coding keeps), MACs, and the weight bytes at the bits each weight really uses
(4-bit values in an int8 container count half a byte).  `StageSizeInstrument`, which
`compiler.optimize` installs, stores that summary in every leaf pass's stats as
``size_after``, so a saved model's ``pass_stats`` carry the whole history.
"""
from __future__ import annotations

import numpy as np

from .analysis import is_param, node_macs, weight_bits
from .ir import Graph
from .pass_manager import Pass, PassContext, PassInstrument, PassResult, Sequential

__all__ = ["size_summary", "StageSizeInstrument", "STATS_KEY"]

STATS_KEY = "size_after"


def size_summary(graph: Graph) -> dict:
    """``{"params", "nonzero_params", "weight_bytes", "macs"}`` of ``graph``."""
    params = [v for v in graph.constants if is_param(v) and v.uses]
    bits = sum(v.size * weight_bits(v) for v in params)
    return {"params": int(sum(v.size for v in params)),
            "nonzero_params": int(sum(np.count_nonzero(v.const) for v in params)),
            "weight_bytes": int(-(-bits // 8)),
            "macs": int(sum(node_macs(n) for n in graph.topo_order()))}


class StageSizeInstrument(PassInstrument):
    """After each pass (not the `Sequential` around them): ``stats["size_after"]``."""

    def after_pass(self, p: Pass, result: PassResult, ctx: PassContext) -> None:
        if not isinstance(p, Sequential) and isinstance(result.stats, dict):
            result.stats.setdefault(STATS_KEY, size_summary(result.graph))

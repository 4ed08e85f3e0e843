"""Lower a `compiler.ir.Graph` to a Relax `IRModule`, op by op.

The package mirrors `compiler/ops` file by file: `core` holds the lowering context, the
registry (`register_lowering`, `LOWERINGS`) and the graph walk (`lower_graph`, with the
type check of every emitted node); `nn`, `elementwise`, `tensor` and `shape_ops` hold the
lowerings of the ops defined in the `compiler/ops` module of the same name, `resize` the
lowering of Resize and `quant` those of the integer ops (`compiler/ops/quant.py`).
Importing the package registers every lowering.
"""
from __future__ import annotations

from .core import (LOWERINGS, LowerContext, LoweringError, lower_graph, lower_graph_with_params,
                   lowered_ops, register_lowering)
from . import elementwise, nn, quant, resize, shape_ops, tensor  # noqa: F401,E402  (register)

__all__ = ["LOWERINGS", "register_lowering", "lower_graph", "lower_graph_with_params",
           "LowerContext", "LoweringError", "lowered_ops"]

"""Imports the modules that register the built-in ops (see `registry._load_builtin_ops`)."""
from __future__ import annotations

from . import elementwise, nn, shape_ops, tensor  # noqa: F401  (register on import)
from . import quant  # noqa: F401  (integer ops: domain q, QuantizeLinear, ConvInteger...)

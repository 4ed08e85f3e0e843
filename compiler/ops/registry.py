"""One registry entry per op: its shape/dtype rule and its numpy reference kernel.

Adding an op to the compiler means one `register_op` call here (plus, if it must run
on TVM, one lowering in ``targets/tvm/lowering``).  The importer, the interpreter,
constant folding and shape inference all read this table, so they cannot disagree
about which ops exist.

Contract
--------
* ``kernel(attrs, *inputs) -> ndarray | tuple[ndarray, ...]`` computes the op on numpy
  arrays.  ``attrs`` holds *every* attribute of the op's ONNX opset-17 schema (defaults
  filled in by the importer, ``auto_pad`` already resolved to explicit ``pads``);
  omitted optional inputs arrive as ``None``.
* ``infer(node) -> list[(shape, dtype)]`` gives the output types from the input
  values' ``shape``/``dtype`` (and ``const`` where the op reads a constant operand such
  as Reshape's target shape).
* ``shape_only`` ops (Shape, ConstantOfShape, ...) exist so exporters' shape arithmetic
  can be imported; they must fold to constants before lowering to a backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..ir import Node, Shape

Kernel = Callable[..., Any]
InferFn = Callable[[Node], list[tuple[Shape, np.dtype]]]


class UnsupportedOpError(NotImplementedError):
    """An op (or an attribute value of an op) this compiler does not implement."""


class OpValidationError(ValueError):
    """A supported op used in a way its definition does not allow (bad shapes, attrs)."""


@dataclass(frozen=True)
class OpDef:
    op_type: str
    kernel: Kernel
    infer: InferFn
    shape_only: bool = False
    domain: str = ""
    doc: str = ""


OPS: dict[str, OpDef] = {}


def register_op(op_type: str, *, infer: InferFn, shape_only: bool = False,
                domain: str = "") -> Callable[[Kernel], Kernel]:
    """Decorator registering ``kernel`` as the reference implementation of ``op_type``."""

    def decorate(kernel: Kernel) -> Kernel:
        key = op_key(op_type, domain)
        if key in OPS:
            raise ValueError(f"op '{key}' is registered twice")
        OPS[key] = OpDef(op_type, kernel, infer, shape_only, domain, (kernel.__doc__ or "").strip())
        return kernel

    return decorate


def op_key(op_type: str, domain: str = "") -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def get_op(op_type: str, domain: str = "", *, node_name: str | None = None) -> OpDef:
    """The definition of an op, or an `UnsupportedOpError` that lists the supported set."""
    _load_builtin_ops()
    key = op_key(op_type, domain)
    try:
        return OPS[key]
    except KeyError:
        where = f" (node '{node_name}')" if node_name else ""
        raise UnsupportedOpError(
            f"unsupported op '{key}'{where}; supported ops: {', '.join(supported_ops())}"
        ) from None


def supported_ops() -> list[str]:
    _load_builtin_ops()
    return sorted(OPS)


_loaded = False


def _load_builtin_ops() -> None:
    """Import the modules that register the built-in ops (once, lazily, no cycles)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import _builtin  # noqa: F401  (registers on import)


# -- helpers shared by many shape rules -------------------------------------------

def same_as_input(index: int = 0) -> InferFn:
    """Output type equals input ``index``'s type (activations, BN, Identity...)."""

    def infer(node: Node) -> list[tuple[Shape, np.dtype]]:
        value = node.inputs[index]
        return [(value.shape, value.dtype)]

    return infer


def broadcast_shapes(*shapes: Sequence[int], node: Node | None = None) -> Shape:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        where = f" in node '{node.name}' ({node.op_type})" if node is not None else ""
        raise OpValidationError(f"shapes {[tuple(s) for s in shapes]} do not broadcast{where}")


def const_input(node: Node, index: int, what: str) -> np.ndarray | None:
    """The constant data of input ``index`` (None if omitted); error if it is not constant."""
    inputs = node.inputs
    value = inputs[index] if index < len(inputs) else None
    if value is None:
        return None
    if value.const is None:
        raise OpValidationError(
            f"node '{node.name}' ({node.op_type}): input {index} ({what}) must be a constant "
            f"known at compile time, but '{value.name}' is computed at run time")
    return value.const

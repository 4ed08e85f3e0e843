"""One registry entry per op: its shape/dtype rule and its numpy reference kernel.

The importer, the interpreter, constant folding and shape inference all read this
table, so they cannot disagree about which ops exist.  The entry also carries the op's
*traits* (elementwise, layout-preserving, weight layer and its channel axes, integer
counterpart, MACs rule, ...): the passes (pruning handler tables, quantization, cost
models, cleanup, folding) derive their op sets from them instead of keeping their own
lists, so a new op declares what it is once, here.  CONTRIBUTING.md ("Add an op") lists
the other layers an op needs (TVM lowering, torch op); ``tests/ops_tests/
test_op_coverage.py`` fails when one is missing.

Contract
--------
* ``kernel(attrs, *inputs) -> ndarray | tuple[ndarray, ...]`` computes the op on numpy
  arrays.  ``attrs`` holds *every* attribute of the op's ONNX schema at ``opset`` (defaults
  filled in by the importer, ``auto_pad`` already resolved to explicit ``pads``);
  omitted optional inputs arrive as ``None``.
* ``infer(node) -> list[(shape, dtype)]`` gives the output types from the input
  values' ``shape``/``dtype`` (and ``const`` where the op reads a constant operand such
  as Reshape's target shape).
* ``shape_only`` ops (Shape, ConstantOfShape, ...) exist so exporters' shape arithmetic
  can be imported; they must fold to constants before lowering to a backend.
* ``opset`` is the ONNX opset whose schema the IR form of the op follows: 17 for every
  op that exists there, the op's first version for newer ops (Gelu: 20).

Traits (keyword arguments of `register_op`; query with `op_traits` / `ops_with`)
------------------------------------------------------------------------------
* ``elementwise``: ``"unary"`` (one tensor in, same shape and dtype out, element by
  element) or ``"broadcast"`` (numeric inputs combined element by element under numpy
  broadcasting, output in the inputs' dtype).  Comparisons and logic ops, whose output is
  a mask, are not marked.
* ``layout_preserving``: output 0 has input 0's rank and channel axis, and channel ``j``
  of the output is computed from channel ``j`` of input 0 alone (extra inputs are scalars
  or per-channel parameters).  Unary elementwise ops are layout-preserving.
* ``weight_layer``: a `WeightLayer` -- the op multiplies activations by learned weights;
  which inputs hold them and which weight axes are the output/input channels.
* ``integer_counterpart``: the op key (``"q.Conv"``) of the integer op the ``quantize``
  pass turns this float op into; ``quantizable`` is true when it has one.
* ``int8_passthrough``: pure data movement or selection (Reshape, MaxPool, ...) that runs
  unchanged on int8 data, whose output keeps the input's scale and zero point.
* ``macs``: ``fn(node) -> int``, the multiply-accumulates of one node (cost models).
* ``identity_at_inference``: returns input 0 unchanged at inference (Identity, Dropout).
* ``foldable``: False for ops that constant folding must keep (QuantizeLinear carries
  quantization parameters later passes read).
* ``window``: has ONNX ``auto_pad``/``pads``/``strides`` window attributes, which the
  importer resolves to explicit ``pads``.
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


MacsFn = Callable[[Node], int]

IR_OPSET = 17  # the ONNX opset the IR's ops follow (compiler.onnx_io.CANONICAL_OPSET)


@dataclass(frozen=True)
class WeightLayer:
    """Where a multiply layer keeps its learned weights, and their channel axes.

    ``out_axis``/``in_axis`` index the weight tensor (input ``weight_inputs[-1]``):
    Conv's ``(Cout, Cin/g, k...)`` is ``out_axis=0, in_axis=1``; ConvTranspose's
    ``(Cin, Cout/g, k...)`` the reverse.  ``transposed_by`` names a 0/1 attribute that
    swaps the two (Gemm's ``transB``).  ``grouped`` ops have a ``group`` attribute that
    joins each group's input and output channels.  ``bias_input`` is the slot of the
    per-output-channel bias, if the op has one.
    """

    weight_inputs: tuple[int, ...] = (1,)
    out_axis: int = 0
    in_axis: int = 1
    transposed_by: str | None = None
    grouped: bool = False
    bias_input: int | None = None

    def channel_axes(self, attrs: dict) -> tuple[int, int]:
        """``(out_axis, in_axis)`` of the weight for a node with these attributes."""
        if self.transposed_by is not None and int(attrs.get(self.transposed_by, 0)):
            return self.in_axis, self.out_axis
        return self.out_axis, self.in_axis


@dataclass(frozen=True)
class OpDef:
    op_type: str
    kernel: Kernel
    infer: InferFn
    shape_only: bool = False
    domain: str = ""
    doc: str = ""
    opset: int = IR_OPSET
    # -- traits (see the module docstring) --
    elementwise: str | None = None
    layout_preserving: bool = False
    weight_layer: WeightLayer | None = None
    integer_counterpart: str | None = None
    int8_passthrough: bool = False
    macs: MacsFn | None = None
    identity_at_inference: bool = False
    foldable: bool = True
    window: bool = False

    @property
    def key(self) -> str:
        return op_key(self.op_type, self.domain)

    @property
    def quantizable(self) -> bool:
        """The ``quantize`` pass has an integer form for this op."""
        return self.integer_counterpart is not None


TRAITS = ("shape_only", "elementwise", "layout_preserving", "weight_layer", "integer_counterpart",
          "quantizable", "int8_passthrough", "macs", "identity_at_inference", "foldable", "window")

_ELEMENTWISE_KINDS = (None, "unary", "broadcast")

OPS: dict[str, OpDef] = {}


def register_op(op_type: str, *, infer: InferFn, shape_only: bool = False,
                domain: str = "", opset: int = IR_OPSET, elementwise: str | None = None,
                layout_preserving: bool | None = None, weight_layer: WeightLayer | None = None,
                integer_counterpart: str | None = None, int8_passthrough: bool = False,
                macs: MacsFn | None = None, identity_at_inference: bool = False,
                foldable: bool = True, window: bool = False) -> Callable[[Kernel], Kernel]:
    """Decorator registering ``kernel`` as the reference implementation of ``op_type``,
    with the op's traits (module docstring).  ``layout_preserving`` defaults to true for
    unary elementwise ops."""
    if elementwise not in _ELEMENTWISE_KINDS:
        raise ValueError(f"register_op('{op_type}'): elementwise={elementwise!r} is not one of "
                         f"{_ELEMENTWISE_KINDS}")
    if layout_preserving is None:
        layout_preserving = elementwise == "unary"

    def decorate(kernel: Kernel) -> Kernel:
        key = op_key(op_type, domain)
        if key in OPS:
            raise ValueError(f"op '{key}' is registered twice")
        OPS[key] = OpDef(op_type, kernel, infer, shape_only, domain, (kernel.__doc__ or "").strip(),
                         opset=opset, elementwise=elementwise,
                         layout_preserving=bool(layout_preserving), weight_layer=weight_layer,
                         integer_counterpart=integer_counterpart,
                         int8_passthrough=int8_passthrough, macs=macs,
                         identity_at_inference=identity_at_inference, foldable=foldable,
                         window=window)
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


def op_traits(op: "str | Node", domain: str = "") -> OpDef | None:
    """The registry entry (traits included) of an op key (``"Conv"``, ``"q.Conv"``) or of a
    node's op; None for an op that is not registered (a custom op a pass may still meet)."""
    _load_builtin_ops()
    if isinstance(op, Node):
        return OPS.get(op_key(op.op_type, op.domain))
    return OPS.get(op_key(op, domain))


def ops_with(trait: str, value: Any = None, *, domain: str | None = None) -> frozenset[str]:
    """Keys of the ops whose ``trait`` is truthy (or equals ``value`` when given);
    ``domain`` restricts to one domain (``""``: ONNX ops, ``"q"``: integer ops)."""
    _load_builtin_ops()
    if trait not in TRAITS:
        raise ValueError(f"unknown op trait '{trait}'; traits: {', '.join(TRAITS)}")
    found = set()
    for key, opdef in OPS.items():
        if domain is not None and opdef.domain != domain:
            continue
        got = _trait_value(opdef, trait)
        if (got == value) if value is not None else bool(got):
            found.add(key)
    return frozenset(found)


def _trait_value(opdef: OpDef, trait: str) -> Any:
    if trait not in TRAITS:
        raise ValueError(f"unknown op trait '{trait}'; traits: {', '.join(TRAITS)}")
    return getattr(opdef, trait)


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

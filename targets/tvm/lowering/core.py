"""The core of the TVM lowering: the `LowerContext`, the registry of lowerings and the
graph walk that lowers a `compiler.ir.Graph` to a Relax `IRModule`, op by op.  The
lowerings themselves live in the sibling modules (one per `compiler/ops` module); the
small helpers below (``_shape``, ``_attr``, ``_unsupported``...) are shared by them.

Every lowering follows ONNX opset-17 semantics exactly (see ``compiler/ops``): an
attribute value that Relax cannot express exactly raises `UnsupportedOpError` naming
the node, the op and the attribute, instead of silently computing something else.
The TVM ONNX frontend is deliberately not used: we build Relax ourselves so that
integer (quantized) ops can be lowered the same way later.

A lowering is ``fn(ctx, node, args) -> relax.Expr | list[relax.Expr]`` where ``args``
are the already-lowered inputs (``None`` for omitted optional inputs).  Constant
operands that an op needs at compile time (Reshape's shape, Slice's starts, Clip's
bounds...) are read from ``node.inputs[i].const``; static shapes come from the
`Value`s, which the importer has inferred.  After each node is emitted its Relax
type is checked against the output `Value`'s shape and dtype, so a lowering that
disagrees with the shape rules fails loudly at compile time.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tvm
from tvm import relax

from compiler.ir import Graph, Node, Value
from compiler.ops.conv_util import normalize_axis, resolve_auto_pad
from compiler.ops.registry import OpValidationError, UnsupportedOpError

__all__ = ["LOWERINGS", "register_lowering", "lower_graph", "lower_graph_with_params",
           "LowerContext", "LoweringError", "lowered_ops"]

LowerFn = Callable[["LowerContext", Node, list], Any]
LOWERINGS: dict[str, LowerFn] = {}


class LoweringError(RuntimeError):
    """A graph that cannot be lowered: missing types, an unfolded shape op, a type mismatch."""


def register_lowering(*op_types: str) -> Callable[[LowerFn], LowerFn]:
    """Decorator registering ``fn`` as the Relax lowering of one or more op types."""

    def decorate(fn: LowerFn) -> LowerFn:
        for op_type in op_types:
            if op_type in LOWERINGS:
                raise ValueError(f"lowering for '{op_type}' is registered twice")
            LOWERINGS[op_type] = fn
        return fn

    return decorate


def lowered_ops() -> list[str]:
    return sorted(LOWERINGS)


# ----------------------------------------------------------------------------------
# context
# ----------------------------------------------------------------------------------

class LowerContext:
    """State shared by the lowerings of one graph."""

    def __init__(self, bb: relax.BlockBuilder, graph: Graph, params_as_constants: bool = True,
                 int8_conv_data: str = "uint8", fused: bool = False):
        if int8_conv_data not in ("uint8", "int8"):
            raise ValueError(f"int8_conv_data must be 'uint8' or 'int8', not {int8_conv_data!r}")
        self.bb = bb
        self.graph = graph
        self.params_as_constants = params_as_constants
        # the type int8 conv data is convolved in (the target's dot-product operand):
        # "uint8" (x + 128, x86 VNNI's u8 x s8) or "int8" (NEON's s8 x s8)
        self.int8_conv_data = int8_conv_data
        # whether the module is built by a pipeline that fuses elementwise chains into
        # their producer's kernel (TVM's FuseOps: the tuned builds); lowerings that split
        # work only to bound unfused intermediates (`quant.REQUANT_GROUP_BYTES`) skip it,
        # since the split would stop the fusion
        self.fused = fused
        self.params: list[tuple[relax.Var, np.ndarray]] = []
        self._weights: dict[int, relax.Expr] = {}
        self._param_names: set[str] = set()

    # -- constants -------------------------------------------------------------
    def weight(self, array: np.ndarray, name: str = "w", key: Any = None) -> relax.Expr:
        """A tensor-valued weight: a `relax.const`, or a function parameter when
        ``params_as_constants`` is False.  ``key`` memoizes (e.g. ``id(value)``)."""
        if key is not None and key in self._weights:
            return self._weights[key]
        array = np.asarray(array)  # (not ascontiguousarray: it turns 0-d into shape (1,))
        if not array.flags.c_contiguous:
            array = array.copy()
        if self.params_as_constants:
            expr: relax.Expr = relax.const(array, _dtype_str(array.dtype))
        else:
            pname = _sanitize(name)
            base, i = pname, 1
            while pname in self._param_names:
                pname, i = f"{base}_{i}", i + 1
            self._param_names.add(pname)
            expr = relax.Var(pname, relax.TensorType(array.shape, _dtype_str(array.dtype)))
            self.params.append((expr, array))
        if key is not None:
            self._weights[key] = expr
        return expr

    def value_const(self, value: Value) -> relax.Expr:
        """The (memoized) Relax expression of a constant `Value`."""
        return self.weight(value.const, value.name, key=id(value))

    @staticmethod
    def scalar(value: Any, dtype: Any) -> tvm.ir.expr.Constant:
        """A literal scalar constant of ``dtype`` (always embedded, never a parameter)."""
        dtype = np.dtype(dtype)
        return relax.const(np.array(value).astype(dtype), _dtype_str(dtype))

    def emit(self, expr: relax.Expr, name: str = "") -> relax.Var:
        return self.bb.emit(expr, name)


# ----------------------------------------------------------------------------------
# the graph walk
# ----------------------------------------------------------------------------------

def lower_graph(graph: Graph, *, params_as_constants: bool = True,
                int8_conv_data: str = "uint8", fused: bool = False) -> tvm.IRModule:
    """Lower ``graph`` to an IRModule with a ``main`` function.

    ``main``'s parameters are the graph inputs (static shapes/dtypes).  Weights are
    embedded as constants; with ``params_as_constants=False`` they become extra
    parameters after the inputs instead (``main`` then carries the ``num_input``
    attribute) -- use `lower_graph_with_params` to also get their arrays.
    ``int8_conv_data``: the type int8 conv data is convolved in, the target's
    dot-product operand (`schedules.int8_conv_data`); the results are the same.
    ``fused``: the module will be built by a pipeline with TVM's operator fusion (the
    tuned builds); large requantizes are then emitted whole, so they fuse into their
    conv's kernel, instead of in channel groups (`quant.REQUANT_GROUP_BYTES`), which bound
    the unfused build's int64 intermediates; the results are the same.
    """
    return lower_graph_with_params(graph, params_as_constants=params_as_constants,
                                   int8_conv_data=int8_conv_data, fused=fused)[0]


def lower_graph_with_params(graph: Graph, *, params_as_constants: bool = False,
                            int8_conv_data: str = "uint8", fused: bool = False
                            ) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Like `lower_graph`, also returning ``{param_name: array}`` in parameter order
    (empty when ``params_as_constants``)."""
    bb = relax.BlockBuilder()
    ctx = LowerContext(bb, graph, params_as_constants, int8_conv_data, fused)
    env: dict[int, relax.Expr] = {}
    inputs: list[relax.Var] = []
    for value in graph.inputs:
        if value.shape is None or value.dtype is None:
            raise LoweringError(f"graph input '{value.name}' needs a static shape and dtype "
                                f"to be lowered to TVM (got {value.type_str()})")
        if value.dtype.kind not in "biuf":
            raise UnsupportedOpError(f"graph input '{value.name}': dtype {value.dtype} is not "
                                     "supported by the TVM lowering")
        var = relax.Var(_sanitize(value.name),
                        relax.TensorType(value.shape, _dtype_str(value.dtype)))
        env[id(value)] = var
        inputs.append(var)
    if not graph.outputs:
        raise LoweringError(f"graph '{graph.name}' has no outputs")

    with bb.function("main"):
        with bb.dataflow():
            for node in graph.topo_order():
                _lower_node(ctx, node, env)
            outs = []
            for value in graph.outputs:
                expr = _lookup(ctx, env, value, None)
                outs.append(bb.emit_output(expr))
        result = outs[0] if len(outs) == 1 else relax.Tuple(outs)
        params = inputs + [var for var, _ in ctx.params]
        bb.emit_func_output(result, params=params)
    mod = bb.get()
    func = mod["main"]
    weights: dict[str, np.ndarray] = {}
    if not params_as_constants:
        used = {v.name for v in relax.analysis.free_vars(func.body)}
        kept = [(var, arr) for var, arr in ctx.params if var.name in used]
        func = relax.Function(inputs + [var for var, _ in kept], func.body, func.ret_ty,
                              func.is_pure, func.attrs, func.span)
        func = func.with_attr("num_input", len(inputs))
        weights = {var.name: arr for var, arr in kept}
    func = func.with_attr("global_symbol", "main")
    # main as rebuilt above, with the kernels lowerings added to the builder
    # (`checks.nonzero_check`)
    kernels = {gv: f for gv, f in mod.functions_items() if gv.name_hint != "main"}
    mod = tvm.IRModule({"main": func})
    for gvar, kernel in kernels.items():
        mod[gvar] = kernel
    return mod, weights


def _lookup(ctx: LowerContext, env: dict[int, relax.Expr], value: Value | None,
            node: Node | None) -> relax.Expr | None:
    if value is None:
        return None
    expr = env.get(id(value))
    if expr is not None:
        return expr
    if value.is_constant:
        return ctx.value_const(value)
    where = f" (input of node '{node.name}')" if node is not None else " (graph output)"
    raise LoweringError(f"value '{value.name}'{where} has no producer, is not a constant and "
                        "not a graph input")


def _lower_node(ctx: LowerContext, node: Node, env: dict[int, relax.Expr]) -> None:
    key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    fn = LOWERINGS.get(key)
    if fn is None:
        if _is_shape_only(node):
            raise LoweringError(
                f"node '{node.name}' ({key}) is a shape-only op: it should have been "
                "constant-folded before lowering to TVM (run constant folding first)")
        raise UnsupportedOpError(
            f"op '{key}' (node '{node.name}') has no TVM lowering; ops that lower: "
            f"{', '.join(lowered_ops())}")
    for value in (*node.inputs, *node.outputs):
        if value is not None and value.dtype is not None and value.dtype.kind not in "biuf":
            raise UnsupportedOpError(f"node '{node.name}' ({key}): dtype {value.dtype} of "
                                     f"'{value.name}' is not supported by the TVM lowering")
    args = [_lookup(ctx, env, value, node) for value in node.inputs]
    try:
        result = fn(ctx, node, args)
    except (UnsupportedOpError, LoweringError):
        raise
    except (tvm.error.InternalError, tvm.error.DiagnosticError, ValueError, TypeError) as exc:
        # Relax rejected what we built: name the node
        raise LoweringError(f"lowering node '{node.name}' ({key}) failed in TVM: {exc}") from exc
    results = list(result) if isinstance(result, (list, tuple)) else [result]
    outputs = node.outputs
    if len(results) < len(outputs):
        raise LoweringError(f"lowering of node '{node.name}' ({key}) produced {len(results)} "
                            f"results for {len(outputs)} outputs")
    for value, expr in zip(outputs, results):
        if expr is None:
            if value.uses or value.is_graph_output:
                raise UnsupportedOpError(f"node '{node.name}' ({key}): output '{value.name}' "
                                         "is not supported by the TVM lowering")
            continue
        if not isinstance(expr, (relax.Var, tvm.ir.expr.Constant)):
            expr = ctx.emit(expr, _sanitize(value.name))
        _check_type(node, value, expr)
        env[id(value)] = expr


def _is_shape_only(node: Node) -> bool:
    try:
        from compiler.ops.registry import get_op
        return bool(get_op(node.op_type, node.domain).shape_only)
    except Exception:  # op unknown to the registry, or the registry not loadable
        return node.op_type in {"Shape", "Size", "ConstantOfShape", "Range", "NonZero"}


def _check_type(node: Node, value: Value, expr: relax.Expr) -> None:
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType):
        raise LoweringError(f"node '{node.name}' ({node.op_type}): output '{value.name}' lowered "
                            f"to a non-tensor {sinfo}")
    if value.dtype is not None and sinfo.dtype != _dtype_str(value.dtype):
        raise LoweringError(f"node '{node.name}' ({node.op_type}): output '{value.name}' has dtype "
                            f"{value.dtype} but the lowering produced {sinfo.dtype}")
    if value.shape is not None:
        got = _shape_of(expr)
        if got is None or tuple(got) != tuple(value.shape):
            raise LoweringError(f"node '{node.name}' ({node.op_type}): output '{value.name}' has "
                                f"shape {value.shape} but the lowering produced {got}")


# ----------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------

def _dtype_str(dtype: Any) -> str:
    return str(np.dtype(dtype))


def _sanitize(name: str) -> str:
    out = "".join(c if (c.isalnum() or c == "_") else "_" for c in name)
    if not out or out[0].isdigit():
        out = "v_" + out
    return out


def _shape_of(expr: relax.Expr) -> tuple[int, ...] | None:
    sinfo = expr.ty
    if not isinstance(sinfo, relax.TensorType) or sinfo.shape is None:
        return None
    try:
        return tuple(int(d) for d in sinfo.shape.values)
    except (AttributeError, TypeError):
        return None


def _in(node: Node, i: int) -> Value | None:
    ins = node.inputs
    return ins[i] if i < len(ins) else None


def _arg(args: list, i: int) -> relax.Expr | None:
    return args[i] if i < len(args) else None


def _shape(node: Node, value: Value | None) -> tuple[int, ...]:
    if value is None or value.shape is None:
        name = value.name if value is not None else "?"
        raise LoweringError(f"node '{node.name}' ({node.op_type}): value '{name}' needs a static "
                            "shape to be lowered to TVM")
    return value.shape


def _out_shape(node: Node, index: int = 0) -> tuple[int, ...]:
    return _shape(node, node.outputs[index])


def _unsupported(node: Node, what: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"node '{node.name}' ({node.op_type}): {what} is not supported by "
                              "the TVM lowering")


def _const_operand(node: Node, i: int, what: str) -> np.ndarray | None:
    """Constant data of input ``i`` (None if omitted); unsupported if computed at run time."""
    value = _in(node, i)
    if value is None:
        return None
    if value.const is None:
        raise _unsupported(node, f"a run-time (non-constant) {what} input '{value.name}'")
    return value.const


def _attr(node: Node, name: str, default: Any = None) -> Any:
    value = node.attrs.get(name, default)
    return default if value is None else value


def _ints(value: Any) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)] if value is not None else []


def _norm_axis(axis: int, rank: int, node: Node) -> int:
    """`compiler.ops.conv_util.normalize_axis` (the IR's rule), its error a `LoweringError`."""
    try:
        return normalize_axis(axis, rank, node)
    except OpValidationError as exc:
        raise LoweringError(str(exc)) from exc


def _is_int(dtype: Any) -> bool:
    return np.issubdtype(np.dtype(dtype), np.integer)


def _is_float(dtype: Any) -> bool:
    return np.issubdtype(np.dtype(dtype), np.floating)


def _spatial_attrs(node: Node, spatial: Sequence[int], kernel: Sequence[int]
                   ) -> tuple[list[int], list[int], list[int]]:
    """``(strides, dilations, pads)`` with ``auto_pad`` resolved by the IR's rule
    (`compiler.ops.conv_util.resolve_auto_pad`, shared with the reference kernels)."""
    rank = len(spatial)
    strides = _ints(_attr(node, "strides")) or [1] * rank
    dilations = _ints(_attr(node, "dilations")) or [1] * rank
    pads = _ints(_attr(node, "pads")) or [0] * (2 * rank)
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise LoweringError(f"node '{node.name}' ({node.op_type}): strides/dilations/pads do not "
                            f"match {rank} spatial dims")
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    try:
        return strides, dilations, resolve_auto_pad(auto_pad, spatial, kernel, strides,
                                                    dilations, pads)
    except UnsupportedOpError as exc:
        raise _unsupported(node, f"auto_pad={auto_pad!r} (expected the importer to resolve it)"
                           ) from exc


def _relax_pads(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1.., bn, e1.., en]`` is also Relax's order for conv/pool padding."""
    return list(pads)

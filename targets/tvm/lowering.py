"""Lower a `compiler.ir.Graph` to a Relax `IRModule`, op by op.

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

import math
from typing import Any, Callable, Sequence

import numpy as np
import tvm
from tvm import relax
from tvm.relax import op as R

from compiler.ir import Graph, Node, Value
from compiler.ops.registry import UnsupportedOpError

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
                 int8_conv_data: str = "uint8"):
        if int8_conv_data not in ("uint8", "int8"):
            raise ValueError(f"int8_conv_data must be 'uint8' or 'int8', not {int8_conv_data!r}")
        self.bb = bb
        self.graph = graph
        self.params_as_constants = params_as_constants
        # the type int8 conv data is convolved in (the target's dot-product operand):
        # "uint8" (x + 128, x86 VNNI's u8 x s8) or "int8" (NEON's s8 x s8)
        self.int8_conv_data = int8_conv_data
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
                int8_conv_data: str = "uint8") -> tvm.IRModule:
    """Lower ``graph`` to an IRModule with a ``main`` function.

    ``main``'s parameters are the graph inputs (static shapes/dtypes).  Weights are
    embedded as constants; with ``params_as_constants=False`` they become extra
    parameters after the inputs instead (``main`` then carries the ``num_input``
    attribute) -- use `lower_graph_with_params` to also get their arrays.
    ``int8_conv_data``: the type int8 conv data is convolved in, the target's
    dot-product operand (`schedules.int8_conv_data`); the results are the same.
    """
    return lower_graph_with_params(graph, params_as_constants=params_as_constants,
                                   int8_conv_data=int8_conv_data)[0]


def lower_graph_with_params(graph: Graph, *, params_as_constants: bool = False,
                            int8_conv_data: str = "uint8"
                            ) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Like `lower_graph`, also returning ``{param_name: array}`` in parameter order
    (empty when ``params_as_constants``)."""
    bb = relax.BlockBuilder()
    ctx = LowerContext(bb, graph, params_as_constants, int8_conv_data)
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
    mod = tvm.IRModule({"main": func})
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
    if not -max(rank, 1) <= axis < max(rank, 1):
        raise LoweringError(f"node '{node.name}' ({node.op_type}): axis {axis} out of range "
                            f"for rank {rank}")
    return axis + rank if axis < 0 else axis


def _is_int(dtype: Any) -> bool:
    return np.issubdtype(np.dtype(dtype), np.integer)


def _is_float(dtype: Any) -> bool:
    return np.issubdtype(np.dtype(dtype), np.floating)


def _spatial_attrs(node: Node, spatial: Sequence[int], kernel: Sequence[int]
                   ) -> tuple[list[int], list[int], list[int]]:
    """``(strides, dilations, pads)`` with ``auto_pad`` resolved (explicit pads expected)."""
    rank = len(spatial)
    strides = _ints(_attr(node, "strides")) or [1] * rank
    dilations = _ints(_attr(node, "dilations")) or [1] * rank
    pads = _ints(_attr(node, "pads")) or [0] * (2 * rank)
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise LoweringError(f"node '{node.name}' ({node.op_type}): strides/dilations/pads do not "
                            f"match {rank} spatial dims")
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("", "NOTSET"):
        return strides, dilations, pads
    if auto_pad == "VALID":
        return strides, dilations, [0] * (2 * rank)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(rank):
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i])
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        return strides, dilations, begin + end
    raise _unsupported(node, f"auto_pad={auto_pad!r} (expected the importer to resolve it)")


def _relax_pads(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1.., bn, e1.., en]`` is also Relax's order for conv/pool padding."""
    return list(pads)


# ----------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------

_CONV = {1: ("conv1d", "NCW", "OIW"), 2: ("conv2d", "NCHW", "OIHW"),
         3: ("conv3d", "NCDHW", "OIDHW")}
_CONVT = {1: ("conv1d_transpose", "NCW", "IOW"), 2: ("conv2d_transpose", "NCHW", "IOHW"),
          3: ("conv3d_transpose", "NCDHW", "IODHW")}


def _bias_add(ctx: LowerContext, node: Node, y: relax.Expr, bias_index: int, rank: int,
              args: list) -> relax.Expr:
    bias = _in(node, bias_index)
    if bias is None:
        return y
    shape = (1, _shape(node, bias)[0]) + (1,) * rank
    if bias.const is not None:
        b = ctx.weight(bias.const.reshape(shape), bias.name + "_bcast", key=("bias", id(bias)))
    else:
        b = ctx.emit(R.reshape(args[bias_index], shape))
    return R.add(ctx.emit(y), b)


def _conv_shapes(node: Node, supported: dict, what: str) -> tuple[list, list, int, list]:
    """X and W shapes, spatial rank and kernel of a Conv/ConvTranspose, checked."""
    x_shape = _shape(node, node.inputs[0])
    w_shape = _shape(node, node.inputs[1])
    rank = len(x_shape) - 2
    if rank not in supported:
        raise _unsupported(node, f"a {rank}-D {what}")
    kernel = _ints(_attr(node, "kernel_shape")) or list(w_shape[2:])
    if list(kernel) != list(w_shape[2:]):
        raise _unsupported(node, f"kernel_shape={kernel} differing from the weight shape {w_shape}")
    return x_shape, w_shape, rank, kernel


@register_lowering("Conv")
def _lower_conv(ctx: LowerContext, node: Node, args: list) -> relax.Expr:
    x_shape, w_shape, rank, kernel = _conv_shapes(node, _CONV, "convolution")
    strides, dilations, pads = _spatial_attrs(node, x_shape[2:], kernel)
    group = int(_attr(node, "group", 1))
    name, data_layout, kernel_layout = _CONV[rank]
    y = getattr(R.nn, name)(args[0], args[1], strides=strides, padding=_relax_pads(pads),
                            dilation=dilations, groups=group, data_layout=data_layout,
                            kernel_layout=kernel_layout,
                            out_dtype=_dtype_str(node.output.dtype or node.inputs[0].dtype))
    return _bias_add(ctx, node, y, 2, rank, args)


@register_lowering("ConvTranspose")
def _lower_conv_transpose(ctx: LowerContext, node: Node, args: list) -> relax.Expr:
    x_shape, w_shape, rank, kernel = _conv_shapes(node, _CONVT, "transposed convolution")
    strides = _ints(_attr(node, "strides")) or [1] * rank
    dilations = _ints(_attr(node, "dilations")) or [1] * rank
    pads = _ints(_attr(node, "pads")) or [0] * (2 * rank)
    out_pad = _ints(_attr(node, "output_padding")) or [0] * rank
    output_shape = _ints(_attr(node, "output_shape"))
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if output_shape or auto_pad not in ("", "NOTSET"):
        # the IR's rule (compiler.ops.conv_util), shared with the reference kernel
        from compiler.ops.conv_util import resolve_auto_pad_transpose
        pads = [int(p) for p in resolve_auto_pad_transpose(
            "NOTSET" if output_shape else auto_pad, x_shape[2:], kernel, strides, dilations,
            out_pad, output_shape or None, pads)]
    group = int(_attr(node, "group", 1))
    if any(p < 0 for p in pads[:rank]):
        raise _unsupported(node, f"negative begin pads {pads[:rank]}")
    # The output spans [begin, natural + output_padding - end) of the unpadded result;
    # rows past `natural` are zeros.  Relax wants output_padding < stride, so give it
    # only the crop and extend with zeros ourselves.
    end_pads = [max(0, pads[rank + i] - out_pad[i]) for i in range(rank)]
    extend = [max(0, out_pad[i] - pads[rank + i]) for i in range(rank)]
    name, data_layout, kernel_layout = _CONVT[rank]
    y = getattr(R.nn, name)(args[0], args[1], strides=strides,
                            padding=list(pads[:rank]) + end_pads, output_padding=[0] * rank,
                            dilation=dilations, groups=group, data_layout=data_layout,
                            kernel_layout=kernel_layout,
                            out_dtype=_dtype_str(node.output.dtype or node.inputs[0].dtype))
    if any(extend):
        width = [0, 0, 0, 0] + [v for e in extend for v in (0, e)]
        y = R.nn.pad(ctx.emit(y), width, "constant", 0.0)
    return _bias_add(ctx, node, y, 2, rank, args)


# ----------------------------------------------------------------------------------
# normalization and activations
# ----------------------------------------------------------------------------------

@register_lowering("BatchNormalization")
def _lower_batchnorm(ctx: LowerContext, node: Node, args: list) -> relax.Expr:
    if int(_attr(node, "training_mode", 0)):
        raise _unsupported(node, "training_mode=1")
    if len(node.outputs) > 1:
        raise _unsupported(node, "the running mean/var outputs (training mode)")
    x = node.inputs[0]
    rank = len(_shape(node, x))
    channels = _shape(node, x)[1] if rank > 1 else 1
    bshape = (1, channels) + (1,) * (rank - 2)
    eps = float(_attr(node, "epsilon", 1e-5))
    dtype = x.dtype
    consts = [v.const if v is not None else None for v in node.inputs[1:5]]
    if all(c is not None for c in consts):
        scale, bias, mean, var = (c.astype(np.float64) for c in consts)
        mul = scale / np.sqrt(var + eps)
        add = bias - mean * mul
        mul_c = ctx.weight(mul.astype(dtype).reshape(bshape), node.name + "_scale")
        add_c = ctx.weight(add.astype(dtype).reshape(bshape), node.name + "_shift")
        return R.add(ctx.emit(R.multiply(args[0], mul_c)), add_c)
    scale, bias, mean, var = (ctx.emit(R.reshape(a, bshape)) for a in args[1:5])
    denom = ctx.emit(R.sqrt(ctx.emit(R.add(var, ctx.scalar(eps, dtype)))))
    norm = ctx.emit(R.divide(ctx.emit(R.subtract(args[0], mean)), denom))
    return R.add(ctx.emit(R.multiply(norm, scale)), bias)


@register_lowering("Relu")
def _lower_relu(ctx, node, args):
    # NaN must propagate (ONNX/onnxruntime).  TVM lowers max(a, b) to
    # select(a > b, a, b), which returns b when either is NaN: with the constant first
    # a NaN x is returned as is (R.nn.relu(x) = max(x, 0) turned NaN into 0).  Still a
    # plain elementwise maximum, so layout conversion and fusion see through it.
    if node.inputs[0].dtype.kind == "f":
        return R.maximum(ctx.scalar(0, node.inputs[0].dtype), args[0])
    return R.nn.relu(args[0])


@register_lowering("Clip")
def _lower_clip(ctx, node, args):
    dtype = node.inputs[0].dtype
    y = args[0]
    lo = _in(node, 1)
    hi = _in(node, 2)
    # the bound first: max/min lower to select(a > b, a, b), so a NaN x propagates (see
    # _lower_relu)
    for value, arg, fn, what in ((lo, _arg(args, 1), R.maximum, "min"),
                                 (hi, _arg(args, 2), R.minimum, "max")):
        if value is None:
            continue
        bound = ctx.scalar(value.const.reshape(()), dtype) if value.const is not None else arg
        y = ctx.emit(fn(bound, y))
    if lo is None and hi is None:
        # opset < 11 attributes (the importer should have turned them into inputs)
        if "min" in node.attrs:
            y = ctx.emit(R.maximum(ctx.scalar(node.attrs["min"], dtype), y))
        if "max" in node.attrs:
            y = ctx.emit(R.minimum(ctx.scalar(node.attrs["max"], dtype), y))
    return y


@register_lowering("LeakyRelu")
def _lower_leaky_relu(ctx, node, args):
    alpha = float(_attr(node, "alpha", 0.01))
    dtype = node.inputs[0].dtype
    x = args[0]
    neg = ctx.emit(R.multiply(x, ctx.scalar(alpha, dtype)))
    return R.where(ctx.emit(R.less(x, ctx.scalar(0, dtype))), neg, x)


@register_lowering("PRelu")
def _lower_prelu(ctx, node, args):
    dtype = node.inputs[0].dtype
    x = args[0]
    neg = ctx.emit(R.multiply(x, args[1]))
    return R.where(ctx.emit(R.less(x, ctx.scalar(0, dtype))), neg, x)


@register_lowering("Sigmoid")
def _lower_sigmoid(ctx, node, args):
    return R.sigmoid(args[0])


@register_lowering("Tanh")
def _lower_tanh(ctx, node, args):
    return R.tanh(args[0])


def _hard_sigmoid(ctx, x, dtype, alpha, beta):
    y = ctx.emit(R.add(ctx.emit(R.multiply(x, ctx.scalar(alpha, dtype))), ctx.scalar(beta, dtype)))
    y = ctx.emit(R.minimum(ctx.scalar(1, dtype), y))  # bound first: NaN propagates
    return ctx.emit(R.maximum(ctx.scalar(0, dtype), y))


@register_lowering("HardSigmoid")
def _lower_hard_sigmoid(ctx, node, args):
    return _hard_sigmoid(ctx, args[0], node.inputs[0].dtype, float(_attr(node, "alpha", 0.2)),
                         float(_attr(node, "beta", 0.5)))


@register_lowering("HardSwish")
def _lower_hard_swish(ctx, node, args):
    gate = _hard_sigmoid(ctx, args[0], node.inputs[0].dtype, 1.0 / 6.0, 0.5)
    return R.multiply(args[0], gate)


_UNARY = {"Floor": R.floor, "Ceil": R.ceil, "Sqrt": R.sqrt, "Neg": R.negative, "Abs": R.abs,
          "Exp": R.exp, "Log": R.log, "Erf": R.erf, "Round": R.round,
          "Sin": R.sin, "Cos": R.cos, "Not": R.logical_not}


def _make_unary(fn):
    return lambda ctx, node, args: fn(args[0])


for _op, _fn in _UNARY.items():
    register_lowering(_op)(_make_unary(_fn))


@register_lowering("Sign")
def _lower_sign(ctx, node, args):
    # Sign(NaN) is NaN in onnxruntime; TVM's sign gives 0
    y = ctx.emit(R.sign(args[0]))
    if node.inputs[0].dtype.kind != "f":
        return y
    return R.where(ctx.emit(R.isnan(args[0])), args[0], y)


@register_lowering("Reciprocal")
def _lower_reciprocal(ctx, node, args):
    return R.divide(ctx.scalar(1, node.inputs[0].dtype), args[0])


@register_lowering("Softplus")
def _lower_softplus(ctx, node, args):
    return R.nn.softplus(args[0])


@register_lowering("Elu")
def _lower_elu(ctx, node, args):
    dtype = node.inputs[0].dtype
    alpha = float(_attr(node, "alpha", 1.0))
    x = args[0]
    em1 = ctx.emit(R.subtract(ctx.emit(R.exp(x)), ctx.scalar(1, dtype)))
    neg = ctx.emit(R.multiply(em1, ctx.scalar(alpha, dtype)))
    return R.where(ctx.emit(R.less(x, ctx.scalar(0, dtype))), neg, x)


# ----------------------------------------------------------------------------------
# elementwise binary / variadic
# ----------------------------------------------------------------------------------

def _lower_div(ctx, node, args):
    # R.divide on integers truncates toward zero (C semantics), which is ONNX's Div.
    dtype = node.inputs[0].dtype
    if dtype.kind not in "iu":
        return R.divide(args[0], args[1])
    # x / 0 and INT_MIN / -1 trap (SIGFPE) in the generated code.  The interpreter
    # refuses a zero divisor (as onnxruntime does); compiled code cannot raise, so it
    # divides by 1 there and returns 0 for x / 0, and -x (wrapping) for x / -1.
    a, b = args[0], args[1]
    zero = ctx.emit(R.equal(b, ctx.scalar(0, dtype)))
    unsafe = zero
    if dtype.kind == "i":
        minus_one = ctx.emit(R.equal(b, ctx.scalar(-1, dtype)))
        unsafe = ctx.emit(R.logical_or(zero, minus_one))
    safe_b = ctx.emit(R.where(unsafe, ctx.scalar(1, dtype), b))
    q = ctx.emit(R.divide(a, safe_b))
    if dtype.kind == "i":
        q = ctx.emit(R.where(minus_one, ctx.emit(R.subtract(ctx.scalar(0, dtype), a)), q))
    return R.where(zero, ctx.scalar(0, dtype), q)


_BINARY = {"Add": R.add, "Sub": R.subtract, "Mul": R.multiply,
           "Equal": R.equal, "Less": R.less, "Greater": R.greater,
           "LessOrEqual": R.less_equal, "GreaterOrEqual": R.greater_equal,
           "And": R.logical_and, "Or": R.logical_or, "Xor": R.logical_xor}


def _make_binary(fn):
    return lambda ctx, node, args: fn(args[0], args[1])


for _op, _fn in _BINARY.items():
    register_lowering(_op)(_make_binary(_fn))
register_lowering("Div")(_lower_div)


@register_lowering("Pow")
def _lower_pow(ctx, node, args):
    xv, yv = node.inputs[0], node.inputs[1]
    dtype = xv.dtype
    x, y = args
    if yv.const is not None and yv.const.size == 1:
        e = float(yv.const.reshape(()))
        if e == 1.0:
            return R.multiply(x, ctx.scalar(1, dtype))
        if e == 2.0:
            return R.multiply(x, x)
    if _is_float(dtype):
        if yv.dtype != dtype:
            y = ctx.emit(R.astype(y, _dtype_str(dtype)))
        return R.power(x, y)
    # integer base: computed in double and truncated back, like onnxruntime
    xf = ctx.emit(R.astype(x, "float64"))
    yf = ctx.emit(R.astype(y, "float64"))
    return R.astype(ctx.emit(R.power(xf, yf)), _dtype_str(dtype))


def _variadic(fn):
    nan_aware = fn in (R.maximum, R.minimum)

    def lower(ctx, node, args):
        present = [a for a in args if a is not None]
        if not present:
            raise LoweringError(f"node '{node.name}' ({node.op_type}) has no inputs")
        y = present[0]
        if len(present) == 1:
            return y
        step = fn
        if nan_aware and node.inputs[0].dtype.kind == "f":
            step = lambda a, b: _nan_propagating(ctx, fn, a, b)  # noqa: E731
        for a in present[1:-1]:
            y = ctx.emit(step(y, a))
        return step(y, present[-1])
    return lower


def _nan_propagating(ctx, fn, a, b):
    """``fn(a, b)`` (max or min) that is NaN when either operand is (ONNX/onnxruntime):
    TVM's select(a > b, a, b) drops a NaN ``a``; ``a + b`` is NaN exactly then."""
    either = ctx.emit(R.logical_or(ctx.emit(R.isnan(a)), ctx.emit(R.isnan(b))))
    return R.where(either, ctx.emit(R.add(a, b)), ctx.emit(fn(a, b)))


register_lowering("Sum")(_variadic(R.add))
register_lowering("Min")(_variadic(R.minimum))
register_lowering("Max")(_variadic(R.maximum))


@register_lowering("Mean")
def _lower_mean(ctx, node, args):
    present = [a for a in args if a is not None]
    total = _variadic(R.add)(ctx, node, present)
    if len(present) == 1:
        return total
    return R.divide(ctx.emit(total), ctx.scalar(len(present), node.output.dtype))


@register_lowering("Where")
def _lower_where(ctx, node, args):
    return R.where(args[0], args[1], args[2])


# ----------------------------------------------------------------------------------
# shape manipulation
# ----------------------------------------------------------------------------------

@register_lowering("Identity")
def _lower_identity(ctx, node, args):
    return args[0]


@register_lowering("Dropout")
def _lower_dropout(ctx, node, args):
    training = _in(node, 2)
    if training is not None:
        if training.const is None:
            raise _unsupported(node, "a run-time training_mode input")
        if bool(np.asarray(training.const).reshape(())):
            raise _unsupported(node, "training_mode=True")
    outs: list = [args[0]]
    if len(node.outputs) > 1:
        outs.append(R.ones(_out_shape(node, 1), "bool"))
    return outs


def _reshape_to_output(ctx, node, args):
    shape = _out_shape(node)
    if _shape_of(args[0]) == tuple(shape):
        return args[0]
    return R.reshape(args[0], shape)


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
    register_lowering(_op)(_reshape_to_output)


@register_lowering("Transpose")
def _lower_transpose(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    perm = _ints(_attr(node, "perm")) or list(range(rank - 1, -1, -1))
    return R.permute_dims(args[0], perm)


@register_lowering("Expand")
def _lower_expand(ctx, node, args):
    shape = _out_shape(node)
    if _shape_of(args[0]) == tuple(shape):
        return args[0]
    return R.broadcast_to(args[0], shape)


@register_lowering("Tile")
def _lower_tile(ctx, node, args):
    # x[a, b] tiled (r, s) == broadcast of x as [1, a, 1, b] to [r, a, s, b], reshaped.
    # (R.tile itself is miscompiled for AVX-512 targets in TVM 0.27 for some shapes.)
    repeats = _ints(_const_operand(node, 1, "repeats"))
    shape = _shape(node, node.inputs[0])
    if len(repeats) != len(shape):
        raise LoweringError(f"node '{node.name}' (Tile): {len(repeats)} repeats for rank "
                            f"{len(shape)}")
    if all(r == 1 for r in repeats):
        return args[0]
    inter = [v for d, r in zip(shape, repeats) for v in ((1, d) if r != 1 else (d,))]
    target = [v for d, r in zip(shape, repeats) for v in ((r, d) if r != 1 else (d,))]
    x = ctx.emit(R.reshape(args[0], inter))
    x = ctx.emit(R.broadcast_to(x, target))
    return R.reshape(x, [d * r for d, r in zip(shape, repeats)])


@register_lowering("Concat")
def _lower_concat(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    axis = _norm_axis(int(_attr(node, "axis")), rank, node)
    parts = [a for a, v in zip(args, node.inputs) if a is not None and 0 not in _shape(node, v)]
    if not parts:
        return R.zeros(_out_shape(node), _dtype_str(node.output.dtype))
    if len(parts) == 1:
        return parts[0]
    return R.concat(parts, axis=axis)


@register_lowering("Split")
def _lower_split(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    axis = _norm_axis(int(_attr(node, "axis", 0)), len(shape), node)
    sizes = [_shape(node, out)[axis] for out in node.outputs]
    split = _in(node, 1)
    if split is not None:
        given = _ints(_const_operand(node, 1, "split"))
        if given != sizes:
            raise LoweringError(f"node '{node.name}' (Split): split {given} disagrees with the "
                                f"output shapes {sizes}")
    if sum(sizes) != shape[axis]:
        raise LoweringError(f"node '{node.name}' (Split): output sizes {sizes} do not add up to "
                            f"{shape[axis]}")
    if len(sizes) == 1:
        return [args[0]]
    indices = list(np.cumsum(sizes)[:-1])
    parts = ctx.emit(R.split(args[0], [int(i) for i in indices], axis=axis))
    return [relax.TupleGetItem(parts, i) for i in range(len(sizes))]


@register_lowering("Slice")
def _lower_slice(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    starts = _ints(_const_operand(node, 1, "starts"))
    ends = _ints(_const_operand(node, 2, "ends"))
    axes = _ints(_const_operand(node, 3, "axes")) if _in(node, 3) is not None \
        else list(range(len(starts)))
    steps = _ints(_const_operand(node, 4, "steps")) if _in(node, 4) is not None \
        else [1] * len(starts)
    if not (len(starts) == len(ends) == len(axes) == len(steps)):
        raise LoweringError(f"node '{node.name}' (Slice): starts/ends/axes/steps lengths differ")
    x = args[0]
    fwd_axes, fwd_begin, fwd_end, fwd_step = [], [], [], []
    flip_axes = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = _norm_axis(axis, rank, node)
        dim = shape[axis]
        if step == 0:
            raise LoweringError(f"node '{node.name}' (Slice): step 0")
        # ONNX clamping (opset 17)
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start = min(max(start, 0), dim)
            end = min(max(end, 0), dim)
        else:
            start = min(max(start, 0), dim - 1)
            end = min(max(end, -1), dim - 1)
            # x[start:end:step] (step<0) == flip(x)[dim-1-start : dim-1-end : -step]
            flip_axes.append(axis)
            start, end, step = dim - 1 - start, dim - 1 - end, -step
        end = max(end, start)
        fwd_axes.append(axis)
        fwd_begin.append(start)
        fwd_end.append(end)
        fwd_step.append(step)
    for axis in sorted(set(flip_axes)):
        x = ctx.emit(R.flip(x, axis))
    if all(b == 0 and e == shape[a] and s == 1
           for a, b, e, s in zip(fwd_axes, fwd_begin, fwd_end, fwd_step)):
        return x
    return R.strided_slice(x, fwd_axes, fwd_begin, fwd_end, fwd_step, assume_inbound=True)


@register_lowering("Gather")
def _lower_gather(ctx, node, args):
    data_shape = _shape(node, node.inputs[0])
    axis = _norm_axis(int(_attr(node, "axis", 0)), len(data_shape), node)
    dim = data_shape[axis]
    iv = node.inputs[1]
    if iv.const is not None:
        idx = np.asarray(iv.const).astype(np.int64)
        if idx.size and (idx.min() < -dim or idx.max() >= dim):
            raise LoweringError(f"node '{node.name}' (Gather): index out of range for axis "
                                f"of size {dim}")
        idx = np.where(idx < 0, idx + dim, idx)
        if idx.ndim == 1 and idx.size == dim and np.array_equal(idx, np.arange(dim)):
            return args[0]
        if idx.ndim == 1 and idx.size > 0 and np.all(np.diff(idx) == 1):
            return R.strided_slice(args[0], [axis], [int(idx[0])], [int(idx[-1]) + 1],
                                   assume_inbound=True)
        if idx.ndim == 0:  # R.take mis-infers 0-d indices: slice + reshape instead
            y = ctx.emit(R.strided_slice(args[0], [axis], [int(idx)], [int(idx) + 1],
                                         assume_inbound=True))
            return R.reshape(y, _out_shape(node))
        indices = ctx.weight(idx, iv.name, key=("gather", id(iv)))
    else:
        itype = iv.dtype
        zero = ctx.scalar(0, itype)
        wrapped = ctx.emit(R.add(args[1], ctx.scalar(dim, itype)))
        indices = ctx.emit(R.where(ctx.emit(R.less(args[1], zero)), wrapped, args[1]))
        # run-time indices: "clip" so that a bad index cannot read outside the tensor
        if len(_shape(node, iv)) == 0:
            indices = ctx.emit(R.reshape(indices, (1,)))
            return R.reshape(ctx.emit(R.take(args[0], indices, axis=axis, mode="clip")),
                             _out_shape(node))
        return R.take(args[0], indices, axis=axis, mode="clip")
    return R.take(args[0], indices, axis=axis)


@register_lowering("Cast")
def _lower_cast(ctx, node, args):
    dtype = node.output.dtype
    if dtype is None:
        raise LoweringError(f"node '{node.name}' (Cast): output dtype unknown")
    src = node.inputs[0].dtype
    if dtype == src:
        return args[0]
    if dtype == np.bool_:
        return R.not_equal(args[0], ctx.scalar(0, src))
    return R.astype(args[0], _dtype_str(dtype))


@register_lowering("CastLike")
def _lower_cast_like(ctx, node, args):
    return _lower_cast(ctx, node, args[:1])


# ----------------------------------------------------------------------------------
# linear algebra
# ----------------------------------------------------------------------------------

@register_lowering("MatMul")
def _lower_matmul(ctx, node, args):
    return R.matmul(args[0], args[1], out_dtype=_dtype_str(node.output.dtype))


@register_lowering("Gemm")
def _lower_gemm(ctx, node, args):
    alpha = float(_attr(node, "alpha", 1.0))
    beta = float(_attr(node, "beta", 1.0))
    trans_a = int(_attr(node, "transA", 0))
    trans_b = int(_attr(node, "transB", 0))
    dtype = node.output.dtype
    a, b = args[0], args[1]
    if trans_a:
        a = ctx.emit(R.permute_dims(a, [1, 0]))
    bv = node.inputs[1]
    if trans_b:
        if bv.const is not None:
            b = ctx.weight(np.ascontiguousarray(bv.const.T), bv.name + "_T", key=("T", id(bv)))
        else:
            b = ctx.emit(R.permute_dims(b, [1, 0]))
    y = R.matmul(a, b, out_dtype=_dtype_str(dtype))
    if alpha != 1.0:
        y = R.multiply(ctx.emit(y), ctx.scalar(alpha, dtype))
    cv = _in(node, 2)
    if cv is None or beta == 0.0:
        return y
    if cv.const is not None:
        c = ctx.weight((cv.const * np.asarray(beta, cv.const.dtype)).astype(cv.const.dtype),
                       cv.name, key=("gemmC", id(cv), beta))
    else:
        c = args[2] if beta == 1.0 else ctx.emit(R.multiply(args[2], ctx.scalar(beta, dtype)))
    return R.add(ctx.emit(y), c)


@register_lowering("Softmax", "LogSoftmax")
def _lower_softmax(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    axis = _norm_axis(int(_attr(node, "axis", -1)), rank, node)
    fn = R.nn.softmax if node.op_type == "Softmax" else R.nn.log_softmax
    return fn(args[0], axis=axis)


# ----------------------------------------------------------------------------------
# pooling and reductions
# ----------------------------------------------------------------------------------

@register_lowering("MaxPool", "AveragePool")
def _lower_pool(ctx, node, args):
    if len(node.outputs) > 1 and (node.outputs[1].uses or node.outputs[1].is_graph_output):
        raise _unsupported(node, "the Indices output of MaxPool")
    x_shape = _shape(node, node.inputs[0])
    rank = len(x_shape) - 2
    if rank not in (1, 2, 3):
        raise _unsupported(node, f"{rank}-D pooling")
    kernel = _ints(_attr(node, "kernel_shape"))
    if len(kernel) != rank:
        raise LoweringError(f"node '{node.name}': kernel_shape {kernel} for {rank}-D pooling")
    strides, dilations, pads = _spatial_attrs(node, x_shape[2:], kernel)
    ceil_mode = bool(int(_attr(node, "ceil_mode", 0)))
    count_include_pad = bool(int(_attr(node, "count_include_pad", 0)))
    is_max = node.op_type == "MaxPool"
    # TOPI pools match onnxruntime also in ceil_mode (a last window starting in the end
    # padding is dropped; count_include_pad divides by the window clipped to input+pads);
    # the output-shape check after lowering guards the shape rule.
    fn = getattr(R.nn, f"{'max' if is_max else 'avg'}_pool{rank}d")
    layout = {1: "NCW", 2: "NCHW", 3: "NCDHW"}[rank]
    y = fn(args[0], pool_size=kernel, strides=strides, padding=_relax_pads(pads),
           dilation=dilations, ceil_mode=ceil_mode, count_include_pad=count_include_pad,
           layout=layout)
    outs = [y]
    if len(node.outputs) > 1:
        outs.append(None)
    return outs


@register_lowering("GlobalAveragePool")
def _lower_global_avg_pool(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    return R.mean(args[0], axis=list(range(2, rank)), keepdims=True)


@register_lowering("GlobalMaxPool")
def _lower_global_max_pool(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    return R.max(args[0], axis=list(range(2, rank)), keepdims=True)


_REDUCE = {"ReduceMean": R.mean, "ReduceMax": R.max, "ReduceSum": R.sum, "ReduceMin": R.min,
           "ReduceProd": R.prod}


@register_lowering(*_REDUCE)
def _lower_reduce(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    keepdims = bool(int(_attr(node, "keepdims", 1)))
    if _in(node, 1) is not None:
        axes = _ints(_const_operand(node, 1, "axes"))
    else:
        axes = _ints(_attr(node, "axes"))
    if not axes:
        if int(_attr(node, "noop_with_empty_axes", 0)):
            return args[0]
        axes = list(range(rank))
    axes = sorted({_norm_axis(a, rank, node) for a in axes})
    if node.op_type == "ReduceMean" and _is_int(node.inputs[0].dtype):
        raise _unsupported(node, "integer ReduceMean")
    if any(shape[a] == 0 for a in axes):
        raise _unsupported(node, "reducing an empty axis")
    x = args[0]
    if node.inputs[0].dtype == np.bool_:
        if node.op_type not in ("ReduceMax", "ReduceMin"):
            raise _unsupported(node, "a bool input")
        x = ctx.emit(R.astype(x, "uint8"))  # TOPI has no bool max/min
        y = ctx.emit(_REDUCE[node.op_type](x, axis=axes, keepdims=keepdims))
        return R.astype(y, "bool")
    return _REDUCE[node.op_type](x, axis=axes, keepdims=keepdims)


@register_lowering("ArgMax", "ArgMin")
def _lower_argmax(ctx, node, args):
    rank = len(_shape(node, node.inputs[0]))
    if int(_attr(node, "select_last_index", 0)):
        raise _unsupported(node, "select_last_index=1")
    axis = _norm_axis(int(_attr(node, "axis", 0)), rank, node)
    keepdims = bool(int(_attr(node, "keepdims", 1)))
    fn = R.argmax if node.op_type == "ArgMax" else R.argmin
    y = ctx.emit(fn(args[0], axis=axis, keepdims=keepdims))
    if _shape_of(y) is not None and y.ty.dtype != _dtype_str(node.output.dtype):
        return R.astype(y, _dtype_str(node.output.dtype))
    return y


# ----------------------------------------------------------------------------------
# Pad
# ----------------------------------------------------------------------------------

@register_lowering("Pad")
def _lower_pad(ctx, node, args):
    shape = _shape(node, node.inputs[0])
    rank = len(shape)
    mode = _attr(node, "mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _ints(_const_operand(node, 1, "pads")) if _in(node, 1) is not None \
        else _ints(_attr(node, "pads"))
    if _in(node, 3) is not None:
        axes = [_norm_axis(a, rank, node) for a in _ints(_const_operand(node, 3, "axes"))]
    else:
        axes = list(range(rank))
    if len(pads) != 2 * len(axes):
        raise LoweringError(f"node '{node.name}' (Pad): {len(pads)} pads for {len(axes)} axes")
    before = [0] * rank
    after = [0] * rank
    for i, axis in enumerate(axes):
        before[axis] = pads[i]
        after[axis] = pads[len(axes) + i]
    value = 0.0
    cv = _in(node, 2)
    if cv is not None:
        value = np.asarray(_const_operand(node, 2, "constant_value")).reshape(-1)
        value = value[0].item() if value.size else 0.0
    elif "value" in node.attrs:
        value = float(node.attrs["value"])
    relax_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if relax_mode is None:
        raise _unsupported(node, f"mode={mode!r}")
    x = args[0]
    # negative pads crop
    if any(b < 0 for b in before) or any(a < 0 for a in after):
        crop_axes = [a for a in range(rank) if before[a] < 0 or after[a] < 0]
        begin = [max(0, -before[a]) for a in crop_axes]
        end = [shape[a] - max(0, -after[a]) for a in crop_axes]
        x = ctx.emit(R.strided_slice(x, crop_axes, begin, end, assume_inbound=True))
        before = [max(0, b) for b in before]
        after = [max(0, a) for a in after]
    if not any(before) and not any(after):
        return x
    in_shape = _shape_of(x)
    if relax_mode == "reflect":
        for a in range(rank):
            if (before[a] or after[a]) and (before[a] >= in_shape[a] or after[a] >= in_shape[a]):
                raise _unsupported(node, f"reflect pads {before[a]},{after[a]} not smaller than "
                                   f"the axis size {in_shape[a]}")
    if relax_mode == "replicate" and any((b or a) and n == 0
                                         for b, a, n in zip(before, after, in_shape)):
        raise _unsupported(node, "edge-padding an empty axis")
    width = [v for a in range(rank) for v in (before[a], after[a])]
    return R.nn.pad(x, width, relax_mode, float(value) if relax_mode == "constant" else 0.0)


# ----------------------------------------------------------------------------------
# Resize
# ----------------------------------------------------------------------------------

def _resize_src_coords(mode: str, out_len: int, in_len: int, scale: float,
                       roi: tuple[float, float] | None) -> np.ndarray:
    """Source coordinate of every output index, like onnxruntime (float32 arithmetic)."""
    x = np.arange(out_len, dtype=np.float32)
    s = np.float32(scale)
    if mode == "half_pixel":
        return (x + np.float32(0.5)) / s - np.float32(0.5)
    if mode == "pytorch_half_pixel":
        return (x + np.float32(0.5)) / s - np.float32(0.5) if out_len > 1 \
            else np.zeros(out_len, np.float32)
    if mode == "align_corners":
        if out_len == 1:
            return np.zeros(1, np.float32)
        return x * np.float32(in_len - 1) / np.float32(out_len - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nn":
        return (x + np.float32(0.5)) / s
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_len > 1:
            return np.float32(start * (in_len - 1)) + x * np.float32((end - start) * (in_len - 1)
                                                                  / (out_len - 1))
        return np.full(out_len, 0.5 * (start + end) * (in_len - 1), np.float32)
    raise ValueError(mode)


def _nearest_index(coords: np.ndarray, nearest_mode: str, in_len: int) -> np.ndarray:
    if nearest_mode == "round_prefer_floor":
        idx = np.where(coords == np.floor(coords) + np.float32(0.5), np.floor(coords),
                       np.round(coords))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(coords + np.float32(0.5))
    elif nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    else:
        raise ValueError(nearest_mode)
    return np.clip(idx, 0, in_len - 1).astype(np.int64)


@register_lowering("Resize")
def _lower_resize(ctx, node, args):
    x_shape = _shape(node, node.inputs[0])
    out_shape = _out_shape(node)
    rank = len(x_shape)
    mode = _attr(node, "mode", "nearest")
    ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
    nearest_mode = _attr(node, "nearest_mode", "round_prefer_floor")
    mode, ctm, nearest_mode = (v.decode() if isinstance(v, bytes) else v
                               for v in (mode, ctm, nearest_mode))
    if int(_attr(node, "antialias", 0)):
        raise _unsupported(node, "antialias=1")
    if _attr(node, "axes") is not None:
        raise _unsupported(node, "the axes attribute (opset 18)")
    if _attr(node, "keep_aspect_ratio_policy", "stretch") not in ("stretch", b"stretch"):
        raise _unsupported(node, "keep_aspect_ratio_policy other than 'stretch'")
    if mode not in ("nearest", "linear", "cubic"):
        raise _unsupported(node, f"mode={mode!r}")
    if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                   "tf_half_pixel_for_nn", "tf_crop_and_resize"):
        raise _unsupported(node, f"coordinate_transformation_mode={ctm!r}")
    if mode == "nearest" and nearest_mode not in ("round_prefer_floor", "round_prefer_ceil",
                                                  "floor", "ceil"):
        raise _unsupported(node, f"nearest_mode={nearest_mode!r}")
    scales_c = _const_operand(node, 2, "scales") if _in(node, 2) is not None else None
    if scales_c is not None and scales_c.size == 0:
        scales_c = None
    if scales_c is not None:
        scales = [float(s) for s in np.asarray(scales_c, np.float32).reshape(-1)]
    else:
        scales = [o / i if i else 1.0 for o, i in zip(out_shape, x_shape)]
    roi_c = _const_operand(node, 1, "roi") if _in(node, 1) is not None else None
    roi = None
    if ctm == "tf_crop_and_resize":
        if roi_c is None or roi_c.size != 2 * rank:
            raise _unsupported(node, "tf_crop_and_resize without a full constant roi")
        roi = np.asarray(roi_c, np.float64).reshape(-1)
    resized = [a for a in range(rank) if out_shape[a] != x_shape[a] or scales[a] != 1.0
               or ctm in ("tf_crop_and_resize", "tf_half_pixel_for_nn")]
    if not resized:
        return args[0]
    exclude_outside = int(_attr(node, "exclude_outside", 0))
    cubic_a = float(_attr(node, "cubic_coeff_a", -0.75))
    extrapolation = float(_attr(node, "extrapolation_value", 0.0))

    if not _is_float(node.inputs[0].dtype) and mode != "nearest":
        raise _unsupported(node, f"{mode} resize of {node.inputs[0].dtype} (rounding of the "
                           "interpolated integers)")
    # TVM's resize2d computes the scale as in/out (float32): use it when that gives
    # exactly ONNX's sampling positions, else separable gathers computed here.
    if rank == 4 and set(resized) <= {2, 3} and ctm in (
            "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric") \
            and mode in ("nearest", "linear") and _resize2d_matches(
                mode, ctm, nearest_mode, [(x_shape[a], out_shape[a], scales[a]) for a in (2, 3)]):
        return R.image.resize2d(args[0], (out_shape[2], out_shape[3]), layout="NCHW",
                                method="linear" if mode == "linear" else "nearest_neighbor",
                                coordinate_transformation_mode=ctm,
                                rounding_method=nearest_mode if mode == "nearest" else "")
    # Otherwise: separable gathers with indices/weights computed here exactly as ONNX does.
    x = args[0]
    dtype = node.inputs[0].dtype
    for a in resized:
        n_in, n_out = x_shape[a], out_shape[a]
        coords = _resize_src_coords(ctm, n_out, n_in, scales[a],
                                    (roi[a], roi[rank + a]) if roi is not None else None)
        outside = (coords < 0) | (coords > n_in - 1) if ctm == "tf_crop_and_resize" else None
        if mode == "nearest":
            idx = _nearest_index(coords, nearest_mode, n_in)
            x = ctx.emit(R.take(x, ctx.weight(idx, f"{node.name}_idx{a}"), axis=a))
        else:
            if mode == "linear":
                c = np.clip(coords, 0, n_in - 1) if ctm != "tf_crop_and_resize" else coords
                base = np.floor(c).astype(np.int64)
                frac = (c - base).astype(np.float64)
                taps = [(base, 1.0 - frac), (base + 1, frac)]
            else:  # cubic
                base = np.floor(coords).astype(np.int64)
                t = (coords - base).astype(np.float64)
                A = cubic_a

                def w(d):
                    d = np.abs(d)
                    return np.where(d <= 1, ((A + 2) * d - (A + 3)) * d * d + 1,
                                    np.where(d < 2, ((A * d - 5 * A) * d + 8 * A) * d - 4 * A, 0.0))

                taps = [(base + k, w(t - k)) for k in (-1, 0, 1, 2)]
                if exclude_outside:
                    ws = [np.where((i >= 0) & (i < n_in), wt, 0.0) for i, wt in taps]
                    total = np.sum(ws, axis=0)
                    taps = [(i, wt / np.where(total == 0, 1, total)) for (i, _), wt in zip(taps, ws)]
            acc = None
            bshape = [1] * rank
            bshape[a] = n_out
            for i, wt in taps:
                if np.all(wt == 0):
                    continue
                gathered = ctx.emit(R.take(x, ctx.weight(np.clip(i, 0, n_in - 1),
                                                         f"{node.name}_idx{a}"), axis=a))
                term = ctx.emit(R.multiply(gathered, ctx.weight(
                    wt.astype(dtype).reshape(bshape), f"{node.name}_w{a}")))
                acc = term if acc is None else ctx.emit(R.add(acc, term))
            x = acc
        if outside is not None and outside.any():
            bshape = [1] * rank
            bshape[a] = n_out
            mask = ctx.weight(outside.reshape(bshape), f"{node.name}_mask{a}")
            x = ctx.emit(R.where(mask, ctx.scalar(extrapolation, dtype), x))
    return x


def _tvm_resize_coords(ctm: str, n_in: int, n_out: int, ftype) -> np.ndarray:
    """TOPI's ``get_inx`` evaluated in ``ftype`` (its scale is in/out, not ONNX's scale)."""
    x = np.arange(n_out).astype(ftype)
    scale = ftype(n_in) / ftype(n_out)
    if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and n_out > 1):
        return (x + ftype(0.5)) * scale - ftype(0.5)
    if ctm == "pytorch_half_pixel":
        return np.zeros(n_out, ftype)
    if ctm == "align_corners":
        return ftype(n_in - 1) / ftype(n_out - 1) * x if n_out > 1 else np.zeros(n_out, ftype)
    return scale * x  # asymmetric


def _tvm_nearest(coords: np.ndarray, rounding: str) -> np.ndarray:
    eps = coords.dtype.type(1e-5)
    if rounding == "round_prefer_floor":
        idx = np.ceil(coords - coords.dtype.type(0.5))
    elif rounding == "round_prefer_ceil":
        idx = np.floor(coords + coords.dtype.type(0.5))
    elif rounding == "floor":
        idx = np.floor(coords + eps)
    else:
        idx = np.ceil(coords - eps)
    return idx


def _resize2d_matches(mode: str, ctm: str, nearest_mode: str,
                      dims: list[tuple[int, int, float]]) -> bool:
    """Whether TOPI resize2d samples exactly where ONNX does on these axes."""
    for n_in, n_out, scale in dims:
        if n_out == 1 and ctm == "align_corners":
            return False  # TOPI divides by n_out - 1
        onnx = _resize_src_coords(ctm, n_out, n_in, scale, None)
        for ftype in (np.float32, np.float64):
            tvm_c = _tvm_resize_coords(ctm, n_in, n_out, ftype)
            if mode == "linear":
                if np.float32(scale) != np.float32(n_out / n_in):
                    return False
                if not np.allclose(tvm_c, onnx, rtol=0, atol=1e-5 * max(1, n_in)):
                    return False
            else:
                want = _nearest_index(onnx, nearest_mode, n_in)
                got = np.clip(_tvm_nearest(tvm_c, nearest_mode), 0, n_in - 1).astype(np.int64)
                if not np.array_equal(want, got):
                    return False
    return True

from . import lowering_quant  # noqa: E402,F401  (integer ops: q.* and the ONNX integer ops)

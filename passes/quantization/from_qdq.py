"""qdq-to-integer: turn imported QDQ patterns into the integer ops of `compiler.ops.quant`.

Already-quantized ONNX imports as is: ``QuantizeLinear``, ``DequantizeLinear``,
``DynamicQuantizeLinear``, ``ConvInteger`` and ``MatMulInteger`` are registered ops with
numpy kernels and TVM lowerings (ddddocr's ``common_old.onnx`` CNN runs that way).  This
pass then rewrites the QDQ *compute* patterns (int8, per-tensor activations, symmetric
weights) into the same integer IR the ``quantize`` pass produces:

    DQ(x_i8) [, DQ(W_i8 const, zp 0), bias] -> Conv | Gemm -> [Relu | Clip] -> Q(i8)
        => q.Conv | q.Gemm -> q.Requantize (fused clamp)
    DQ(a_i8), DQ(b_i8) -> Add -> [Relu | Clip] -> Q(i8)   => q.Add
    DQ(x_i) ... -> Concat -> Q(i8)                        => q.Concat
    DQ(x_i8) -> AveragePool | GlobalAveragePool -> Q(i8) (same scale and zero point)
        => q.AveragePool | q.GlobalAveragePool

uint8 QDQ patterns and anything else stay as imported (float ops between Q/DQ).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.folding import infer_node
from compiler.ir import Graph, Node, QuantParams, Value
from compiler.ops.quant import Q, quantize_multiplier, shared_multipliers
from compiler.ops.registry import ops_with
from compiler.pass_manager import Pass, PassContext, PassResult, register_pass

__all__ = ["QdqToInteger"]


def _dq_params(value: Value | None, *, per_channel: bool = False):
    """(int8 source value, scale array, zero point array, axis) of a DequantizeLinear output."""
    if value is None:
        return None
    node = value.producer
    if node is None or node.op_type != "DequantizeLinear" or node.domain:
        return None
    src = node.inputs[0]
    scale = node.inputs[1].const if node.inputs[1] is not None else None
    zpv = node.inputs[2] if len(node.inputs) > 2 else None
    if scale is None or (zpv is not None and zpv.const is None):
        return None
    if src.dtype not in (np.dtype(np.int8), np.dtype(np.int32)):
        return None
    zp = np.zeros_like(scale, dtype=np.int64) if zpv is None else zpv.const.astype(np.int64)
    if not per_channel and np.asarray(scale).size != 1:
        return None
    return src, np.asarray(scale, np.float64), zp, int(node.attrs.get("axis", 1))


# activations that fold into the requantization as a clamp (Relu, Clip)
_CLAMPS = ops_with("integer_counterpart", "q.Clip")


def _q_output(value: Value):
    """(QuantizeLinear node, activation node or None) consuming ``value``."""
    uses = value.uses
    if len(uses) != 1 or value.is_graph_output:
        return None
    user = uses[0][0]
    act = None
    if user.op_type in _CLAMPS and not user.domain:
        if user.op_type == "Clip" and any(v is not None and v.const is None
                                          for v in user.inputs[1:]):
            return None
        act = user
        uses = user.output.uses
        if len(uses) != 1 or user.output.is_graph_output:
            return None
        user = uses[0][0]
    if user.op_type != "QuantizeLinear" or user.domain:
        return None
    scale = user.inputs[1].const
    zpv = user.inputs[2] if len(user.inputs) > 2 else None
    if scale is None or np.asarray(scale).size != 1 or zpv is None or zpv.const is None \
            or zpv.const.dtype != np.int8:
        return None
    return user, act


def _clamp(act: Node | None, scale: float, zp: int) -> tuple[int, int]:
    qmin, qmax = -128, 127
    if act is None:
        return qmin, qmax
    if act.op_type == "Relu":
        return max(qmin, zp), qmax
    lo = act.inputs[1].const if len(act.inputs) > 1 and act.inputs[1] is not None else None
    hi = act.inputs[2].const if len(act.inputs) > 2 and act.inputs[2] is not None else None
    if lo is not None:
        qmin = max(qmin, min(qmax, zp + int(np.round(float(lo) / scale))))
    if hi is not None:
        qmax = min(qmax, max(qmin, zp + int(np.round(float(hi) / scale))))
    return qmin, qmax


@register_pass("qdq-to-integer")
@dataclass
class QdqToInteger(Pass):
    """Rewrite imported QDQ patterns (int8) into q.Conv/q.Gemm/q.Requantize/q.Add/... ops."""

    exact = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        counts: dict[str, int] = {}
        for node in list(graph.topo_order()):
            if node.graph is None or node.domain:
                continue
            done = None
            if node.op_type in ("Conv", "Gemm"):
                done = self._layer(graph, node)
            elif node.op_type in ("Add", "Concat"):
                done = self._rescale(graph, node)
            elif node.op_type in ("AveragePool", "GlobalAveragePool"):
                done = self._pool(graph, node)
            if done:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if counts:
            graph.remove_unused()
        return PassResult(graph, bool(counts), {"rewritten": counts})

    @staticmethod
    def _emit(graph: Graph, op: str, inputs: list, attrs: dict, name: str) -> Node:
        node = graph.add_node(op, inputs, attrs, name=name, domain=Q)
        infer_node(node)
        return node

    @staticmethod
    def _finish(graph: Graph, qnode: Node, new: Value, scale: float, zp: int) -> None:
        old = qnode.output
        name = old.name
        graph.replace_all_uses_with(old, new)
        graph.rename_value(old, graph.unique_name(name + "_qdq"))
        graph.rename_value(new, name)
        new.quant = QuantParams(8, np.array(scale), np.array(zp))

    def _layer(self, graph: Graph, node: Node) -> bool:
        x = _dq_params(node.inputs[0])
        w = _dq_params(node.inputs[1], per_channel=True)
        out = _q_output(node.output)
        if x is None or w is None or out is None or x[0].dtype != np.int8:
            return False
        if node.op_type == "Gemm" and (int(node.attrs.get("transA", 0))
                                       or float(node.attrs.get("alpha", 1.0)) != 1.0
                                       or float(node.attrs.get("beta", 1.0)) != 1.0):
            return False
        if node.op_type == "Conv" and len(node.inputs[0].shape) != 4:
            return False
        x_src, xs, xz, _ = x
        w_src, ws, wz, w_axis = w
        if w_src.const is None or w_src.dtype != np.int8 or np.any(wz != 0):
            return False
        qnode, act = out
        ys = float(qnode.inputs[1].const)
        yz = int(qnode.inputs[2].const)
        trans_b = int(node.attrs.get("transB", 0)) if node.op_type == "Gemm" else 1
        n_out = w_src.shape[0] if trans_b else w_src.shape[1]
        expected_axis = 0 if trans_b else 1
        if ws.size not in (1, n_out) or (ws.size > 1 and w_axis % w_src.const.ndim != expected_axis):
            return False
        acc_scale = float(xs.reshape(-1)[0]) * np.broadcast_to(ws.reshape(-1), (n_out,))
        inputs = [x_src, w_src]
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is not None:
            bp = _dq_params(b, per_channel=True)
            if bp is not None and bp[0].const is not None and bp[0].dtype == np.int32 \
                    and np.allclose(np.broadcast_to(bp[1].reshape(-1), (n_out,)), acc_scale,
                                    rtol=1e-6) and not np.any(bp[2]):
                bq = bp[0].const.astype(np.int32)
            elif b.const is not None:
                bq = np.clip(np.round(b.const.astype(np.float64).reshape(-1) / acc_scale),
                             -2 ** 31, 2 ** 31 - 1).astype(np.int32)
            else:
                return False
            inputs.append(graph.add_constant(f"{node.name}_bq", bq))
        xzp = int(xz.reshape(-1)[0])
        if node.op_type == "Conv":
            attrs = {k: node.attrs[k] for k in ("kernel_shape", "strides", "pads", "dilations",
                                                "group") if k in node.attrs}
            attrs["x_zero_point"] = xzp
            acc = self._emit(graph, "Conv", inputs, attrs, f"{node.name}_q")
        else:
            acc = self._emit(graph, "Gemm", inputs, dict(transB=trans_b, a_zero_point=xzp),
                             f"{node.name}_q")
        acc.meta["bits"] = (8, 8)
        acc.meta["float_name"] = node.name
        w_src.quant = QuantParams(8, np.broadcast_to(ws.reshape(-1), (n_out,)).copy(),
                                  np.zeros(n_out, np.int64), axis=expected_axis)
        mult, shift = quantize_multiplier(acc_scale / ys)
        qmin, qmax = _clamp(act, ys, yz)
        rq = self._emit(graph, "Requantize", [acc.output, graph.add_constant(f"{node.name}_mult", mult),
                                              graph.add_constant(f"{node.name}_shift", shift)],
                        dict(axis=1, zero_point=yz, qmin=qmin, qmax=qmax), f"{node.name}_requantize")
        self._finish(graph, qnode, rq.output, ys, yz)
        return True

    def _rescale(self, graph: Graph, node: Node) -> bool:
        params = [_dq_params(v) for v in node.inputs]
        out = _q_output(node.output)
        if out is None or any(p is None or p[0].dtype != np.int8 for p in params):
            return False
        qnode, act = out
        ys = float(qnode.inputs[1].const)
        yz = int(qnode.inputs[2].const)
        qmin, qmax = _clamp(act, ys, yz)
        reals = [float(p[1].reshape(-1)[0]) / ys for p in params]
        mults, shift = shared_multipliers(reals)
        zps = [int(p[2].reshape(-1)[0]) for p in params]
        srcs = [p[0] for p in params]
        if node.op_type == "Add":
            if len(srcs) != 2:
                return False
            new = self._emit(graph, "Add", srcs, dict(a_zero_point=zps[0], b_zero_point=zps[1],
                                                      a_multiplier=mults[0], b_multiplier=mults[1],
                                                      shift=shift, zero_point=yz, qmin=qmin,
                                                      qmax=qmax), f"{node.name}_q")
        else:
            new = self._emit(graph, "Concat", srcs, dict(axis=int(node.attrs.get("axis", 1)),
                                                         zero_points=zps, multipliers=mults,
                                                         shift=shift, zero_point=yz, qmin=qmin,
                                                         qmax=qmax), f"{node.name}_q")
        self._finish(graph, qnode, new.output, ys, yz)
        return True

    def _pool(self, graph: Graph, node: Node) -> bool:
        x = _dq_params(node.inputs[0])
        out = _q_output(node.output)
        if x is None or out is None or out[1] is not None or x[0].dtype != np.int8:
            return False
        qnode, _ = out
        ys, yz = float(qnode.inputs[1].const), int(qnode.inputs[2].const)
        xs, xz = float(x[1].reshape(-1)[0]), int(x[2].reshape(-1)[0])
        if not np.isclose(xs, ys, rtol=1e-6) or xz != yz or len(node.inputs[0].shape) != 4:
            return False
        if node.op_type == "AveragePool":
            if any(int(d) != 1 for d in node.attrs.get("dilations") or [1, 1]):
                return False
            attrs = {k: node.attrs[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode",
                                                "count_include_pad") if k in node.attrs}
            attrs["zero_point"] = xz
            new = self._emit(graph, "AveragePool", [x[0]], attrs, f"{node.name}_q")
        else:
            new = self._emit(graph, "GlobalAveragePool", [x[0]], dict(zero_point=xz),
                             f"{node.name}_q")
        self._finish(graph, qnode, new.output, ys, yz)
        return True

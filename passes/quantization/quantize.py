"""quantize: rewrite a float graph into explicit integer operations (ops of `compiler.ops.quant`).

``quantize{bits=8, act_bits=8, per_channel=true, calibration=minmax, first_layer_bits=0,
layers=[], bits_per_layer=[], symmetric_acts=false, percentile=99.99, output_bits=8,
equalize=depthwise}``

* BatchNormalization is folded first (``fold-bn``), then every float tensor is observed
  over ``PassContext.calibration_data`` (see `calibration`).
* Conv (2-D), ConvTranspose (2-D, group 1) and Gemm/MatMul with constant weights become
  ``q.Conv``/``q.ConvTranspose``/``q.Gemm`` (int8 x int8 -> int32, int32 bias) followed
  by ``q.Requantize`` to the next tensor's scale; a
  following Relu or Clip is fused as the requantize clamp.  Add and Concat become
  ``q.Add``/``q.Concat`` with rescaling, pools ``MaxPool`` on int8 / ``q.AveragePool`` /
  ``q.GlobalAveragePool``, data movement (Flatten, Reshape, Transpose, nearest Resize, ...)
  runs on int8, linear/cubic Resize becomes ``q.Resize`` (integer interpolation weights).
* Weights: symmetric, per output channel (``per_channel=true``) or per tensor, ``bits`` wide
  (``[-(2^(b-1)-1), 2^(b-1)-1]``); ``bits=1`` means binary weights ``a * sign(w)`` with a
  per-channel ``a = mean|w|``.  At 2..4 bits each channel's clipping ratio is chosen to
  minimize the weight's squared error (over 20 ratios in [0.3, 1]).
* Activations: ``act_bits`` wide, asymmetric (default) or ``symmetric_acts``; 1-bit
  activations are always asymmetric (``{0, s}``).  The bits of a tensor are those of the
  layer that reads it (``first_layer_bits`` for the first multiply layer's input and
  weights, ``bits_per_layer`` entries ``"name:w"`` or ``"name:w/a"``); graph outputs get
  at least ``output_bits``.
* ``equalize`` (``depthwise``, the default; ``all``; ``off``): channel equalization of the
  tensors between two quantized layers (``QuantRewriter._plan_equalization``): a channel whose
  calibrated range is a fraction of the tensor's is scaled up in the producer and down in
  the consumers (exact in real arithmetic), so per-tensor activation scales do not leave
  it a few levels.  ``depthwise`` does this for tensors read only by grouped/depthwise
  convolutions, where it costs nothing (per-channel weights absorb it exactly);
  MobileNet 5/5 went from 86.1 % to 92.5 % on 1,000 test images with it.
* ``layers``: when given, only these multiply layers (node names) are quantized.
* Ops it cannot cover stay float, with ``q.Dequantize``/``q.Quantize`` at the boundary, a
  warning and the ``float_ops`` stat.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from compiler.folding import infer_node
from compiler.ir import Graph, Node, QuantParams, Value
from compiler.ops.quant import Q, qrange, quantize_multiplier, shared_multipliers
from compiler.ops.registry import op_traits, ops_with
from compiler.pass_manager import Pass, PassContext, PassOptionError, PassResult, register_pass

from .calibration import CALIBRATION_METHODS, calibrate_range, collect_stats
from .cost import LayerCost, layer_macs, theoretical_speedup

__all__ = ["Quantize", "QuantizationWarning", "quantize_weight", "act_qparams", "ActParams"]


class QuantizationWarning(UserWarning):
    """Part of a model stays in float (an op the integer path does not cover)."""


@dataclass
class ActParams:
    scale: float
    zero_point: int
    qmin: int
    qmax: int
    bits: int

    def quant(self) -> QuantParams:
        return QuantParams(self.bits, np.array(self.scale, np.float64),
                           np.array(self.zero_point, np.int64))


def act_qparams(lo: float, hi: float, bits: int, symmetric: bool) -> ActParams:
    """Scale and zero point of an activation range (zero is always exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric and bits >= 2:
        qmin, qmax = qrange(bits, True)
        scale = max(abs(lo), abs(hi)) / qmax
        return ActParams(scale if scale > 0 else 1.0, 0, qmin, qmax, bits)
    qmin, qmax = qrange(bits, False)
    scale = (hi - lo) / (qmax - qmin)
    if scale <= 0:
        return ActParams(1.0, 0, qmin, qmax, bits)
    zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    return ActParams(scale, zp, qmin, qmax, bits)


def quantize_weight(w: np.ndarray, bits: int, per_channel: bool = True, axis: int = 0,
                    mse: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weight quantization: ``(w_q int8, scale per channel (float64))``.

    ``bits=1``: binary, ``w_q = sign(w)`` (+1 for 0) and ``scale = mean|w|`` per channel."""
    w = np.asarray(w, dtype=np.float64)
    moved = np.moveaxis(w, axis, 0)
    flat = moved.reshape(moved.shape[0], -1) if per_channel else moved.reshape(1, -1)
    if bits == 1:
        scale = np.abs(flat).mean(axis=1)
        q = np.where(flat >= 0, 1, -1)
    else:
        qmax = 2 ** (bits - 1) - 1
        top = np.abs(flat).max(axis=1)
        scale = top / qmax
        if mse if mse is not None else bits <= 4:
            best = np.full(flat.shape[0], np.inf)
            chosen = scale.copy()
            for ratio in np.linspace(0.3, 1.0, 20):
                s = np.maximum(top * ratio / qmax, 1e-12)
                err = ((np.clip(np.round(flat / s[:, None]), -qmax, qmax) * s[:, None] - flat) ** 2
                       ).sum(axis=1)
                better = err < best
                best = np.where(better, err, best)
                chosen = np.where(better, s, chosen)
            scale = chosen
        scale = np.where(scale > 0, scale, 1.0)
        q = np.clip(np.round(flat / scale[:, None]), -qmax, qmax)
    scale = np.where(scale > 0, scale, 1.0)
    if not per_channel:
        scale = np.full(moved.shape[0], scale[0])
    q = np.moveaxis(q.reshape(moved.shape), 0, axis).astype(np.int8)
    return q, scale


# The op sets this pass works with, from the op traits (compiler/ops/registry.py):
# data movement that runs unchanged on int8 (Flatten, Reshape, Transpose, Squeeze,
# Unsqueeze, Identity, Split, Slice, MaxPool, Dropout) ...
_TRANSPARENT = ops_with("int8_passthrough", domain="")
# ... activations that become a clamp of the producer's output (Relu, Clip) ...
_ACTS = ops_with("integer_counterpart", "q.Clip")
# ... and the channel-wise ops with an integer kernel that are not clamps: the averaging
# pools (AveragePool, GlobalAveragePool), whose output keeps the input's scale.
_POOLS = (ops_with("layout_preserving") & ops_with("quantizable")) - _ACTS
# the float multiply layers this pass can turn into q.* layers (Conv, ConvTranspose, Gemm,
# MatMul); `_Rewriter._is_layer` adds each op's conditions
_LAYER_OPS = ops_with("weight_layer", domain="") & ops_with("quantizable")


def check_bits(value: int, what: str) -> int:
    """``value`` as a bit width in 1..8, or a PassOptionError naming ``what``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 1 <= value <= 8:
        raise PassOptionError(f"pass 'quantize': {what}={value!r} is outside 1..8 (weights and "
                              "activations are stored in int8 containers)")
    return int(value)


@register_pass("quantize")
@dataclass
class Quantize(Pass):
    """Rewrite into integer ops (int8 storage, int32 accumulation) from calibration data."""

    bits: int = 8
    act_bits: int = 8
    per_channel: bool = True
    calibration: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    first_layer_bits: int = 0
    layers: list[str] = field(default_factory=list)
    bits_per_layer: list[str] = field(default_factory=list)
    symmetric_acts: bool = False
    percentile: float = 99.99
    output_bits: int = 8
    equalize: Literal["depthwise", "all", "off"] = "depthwise"
    exact = False
    requires: ClassVar[tuple[str, ...]] = ("fold-bn",)  # BN folded into the convs first

    def __post_init__(self) -> None:
        check_bits(self.bits, "bits")
        check_bits(self.act_bits, "act_bits")
        check_bits(self.output_bits, "output_bits")
        if self.first_layer_bits:
            check_bits(self.first_layer_bits, "first_layer_bits")
        if self.calibration not in CALIBRATION_METHODS:
            raise PassOptionError(f"pass 'quantize': calibration={self.calibration!r} must be one "
                                  f"of {', '.join(CALIBRATION_METHODS)}")
        if self.equalize not in ("depthwise", "all", "off"):
            raise PassOptionError(f"pass 'quantize': equalize={self.equalize!r} must be one of "
                                  "depthwise, all, off")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise PassOptionError(f"pass 'quantize': percentile={self.percentile} must be in (50, 100]")
        self._per_layer = self._parse_per_layer(self.bits_per_layer)

    @staticmethod
    def _parse_per_layer(spec: Any) -> dict[str, tuple[int | None, int | None]]:
        out: dict[str, tuple[int | None, int | None]] = {}
        items = spec.items() if isinstance(spec, dict) else [
            tuple(s.rsplit(":", 1)) if isinstance(s, str) and ":" in s else (s, None) for s in spec]
        for name, value in items:
            if value is None:
                raise PassOptionError(f"pass 'quantize': bits_per_layer entry {name!r} must be "
                                      "'layer:w_bits' or 'layer:w_bits/a_bits'")
            if isinstance(value, (tuple, list)):
                wb, ab = value
            elif isinstance(value, str) and "/" in value:
                wb, ab = value.split("/", 1)
            else:
                wb, ab = value, None
            try:
                wb = int(wb)
                ab = None if ab is None else int(ab)
            except ValueError:
                raise PassOptionError(f"pass 'quantize': bits_per_layer entry for {name!r} is "
                                      f"not an integer bit width: {value!r}") from None
            out[str(name)] = (check_bits(wb, f"bits_per_layer[{name}]"),
                              None if ab is None else check_bits(ab, f"bits_per_layer[{name}]"))
        return out

    # ------------------------------------------------------------------------------
    #: Under a pipeline accuracy budget (``PassContext.budget``) the quantized model is
    #: scored and what it cost is charged to the budget (quantize does not search: an
    #: overspend is logged as a warning and leaves nothing for the passes after it).
    uses_budget: ClassVar[bool] = True

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        stats = collect_stats(graph, ctx.calibration_data, pass_name=self.name)
        scored = ctx.budget is not None and ctx.evaluate is not None
        if scored:
            ctx.start_budget(graph)
        result = QuantRewriter(self, graph, stats, ctx).rewrite()
        if scored:
            score = float(ctx.evaluate(result.graph))
            result.stats.update(score=round(score, 5), **ctx.record_spent(self.name, score))
        return result


def _const(value: Value | None) -> np.ndarray | None:
    return None if value is None else value.const


def _clip_bounds(node: Node) -> tuple[float, float] | None:
    if node.op_type == "Relu":
        return 0.0, np.inf
    lo = _const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    hi = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if (len(node.inputs) > 1 and node.inputs[1] is not None and lo is None) or \
            (len(node.inputs) > 2 and node.inputs[2] is not None and hi is None):
        return None  # run-time bounds
    return (float(lo) if lo is not None else -np.inf, float(hi) if hi is not None else np.inf)


class QuantRewriter:
    """Rewrites a float graph into integer ops (shared by quantize and mixed-precision)."""

    def __init__(self, opts: Quantize, graph: Graph, stats, ctx: PassContext):
        self.o = opts
        self.g = graph
        self.stats = stats
        self.ctx = ctx
        self.qv: dict[int, Value] = {}          # float value -> its int8 value
        self.params: dict[int, ActParams] = {}  # int8 value -> its params
        self.replaced: set[int] = set()         # float values whose producer goes away
        self.deq: dict[int, Value] = {}
        self.counts = {"quantized_layers": 0, "quantize_nodes": 0, "dequantize_nodes": 0,
                       "int_ops": 0}
        self.float_ops: dict[str, int] = {}
        self.layer_bits: list[LayerCost] = []
        self.value_bits: dict[int, int] = {}
        self.fused: set[int] = set()
        # channel equalization: producer layer -> gain of its output channels,
        # consumer layer -> gain of its input channels (see `_plan_equalization`)
        self.gain_out: dict[int, np.ndarray] = {}
        self.gain_in: dict[int, np.ndarray] = {}
        self.counts["equalized_tensors"] = 0

    # -- planning ---------------------------------------------------------------------
    def _layers(self) -> list[Node]:
        found = []
        for node in self.g.topo_order():
            if self._is_layer(node) and (not self.o.layers or node.name in self.o.layers):
                found.append(node)
        unknown = sorted(set(self.o.layers) - {n.name for n in self.g.topo_order()})
        if unknown:
            raise PassOptionError(f"pass 'quantize': layers {unknown} are not nodes of the "
                                  f"graph; multiply layers: "
                                  f"{[n.name for n in self.g.topo_order() if self._is_layer(n)]}")
        unknown = sorted(set(self.o._per_layer) - {n.name for n in self.g.topo_order()})
        if unknown:
            raise PassOptionError(f"pass 'quantize': bits_per_layer names unknown layer(s) "
                                  f"{unknown}")
        return found

    @staticmethod
    def _is_layer(node: Node) -> bool:
        ins = node.inputs
        if node.domain or node.op_type not in _LAYER_OPS:
            return False
        if node.op_type == "Conv":
            return (len(ins[0].shape) == 4 and ins[1].const is not None
                    and (len(ins) < 3 or ins[2] is None or ins[2].const is not None))
        if node.op_type == "ConvTranspose":
            return (len(ins[0].shape) == 4 and ins[1].const is not None
                    and int(node.attrs.get("group", 1)) == 1
                    and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "")
                    and (len(ins) < 3 or ins[2] is None or ins[2].const is not None))
        if node.op_type == "Gemm":
            return (not int(node.attrs.get("transA", 0)) and ins[1].const is not None
                    and (len(ins) < 3 or ins[2] is None or ins[2].const is not None))
        if node.op_type == "MatMul":
            return (len(ins[0].shape) == 2 and ins[1].const is not None
                    and ins[1].const.ndim == 2)
        return False

    def _bits_of(self, node: Node, first: bool) -> tuple[int, int]:
        wb = self.o.first_layer_bits if (first and self.o.first_layer_bits) else self.o.bits
        ab = self.o.first_layer_bits if (first and self.o.first_layer_bits) else self.o.act_bits
        pw, pa = self.o._per_layer.get(node.name, (None, None))
        return (pw or wb), (pa or ab)

    def _source(self, value: Value) -> Value:
        while value.producer is not None and value.producer.op_type in _TRANSPARENT | _POOLS:
            value = value.producer.inputs[0]
        return value

    def _plan_bits(self, layers: list[Node]) -> dict[int, tuple[int, int]]:
        plan = {}
        for index, node in enumerate(layers):
            wb, ab = self._bits_of(node, index == 0)
            plan[id(node)] = (wb, ab)
            src = self._source(node.inputs[0])
            self.value_bits[id(src)] = max(self.value_bits.get(id(src), 0), ab)
        for out in self.g.outputs:
            src = self._source(out)
            self.value_bits[id(src)] = max(self.value_bits.get(id(src), self.o.act_bits),
                                           self.o.output_bits)
        return plan


    # -- channel equalization -----------------------------------------------------------
    # ops a positive per-channel gain passes through: channel-wise int8 pass-through ops
    # (MaxPool, Identity, Dropout) and the averaging pools
    _CHANNELWISE = (_TRANSPARENT & ops_with("layout_preserving")) | _POOLS
    MAX_GAIN = 256.0

    def _channel_consumers(self, value: Value, layer_ids: set[int]) -> list[Node] | None:
        """The Conv layers reading ``value`` (through channel-wise ops), or None if anything
        else reads it (another op, a graph output, a non-data input slot)."""
        if value.is_graph_output:
            return None
        found: list[Node] = []
        for user, index in value.uses:
            if user.domain or index != 0:
                return None
            if id(user) in layer_ids and user.op_type == "Conv":
                found.append(user)
            elif user.op_type in self._CHANNELWISE and len(user.outputs) == 1 and \
                    len(user.output.shape) == len(value.shape):
                more = self._channel_consumers(user.output, layer_ids)
                if more is None:
                    return None
                found += more
            else:
                return None
        return found

    def _plan_equalization(self, layers: list[Node]) -> None:
        """Per-channel gains for tensors between two quantized layers.

        A tensor produced by a Conv/Gemm layer (through a fused ReLU/Clip) and read only by
        Conv layers (``equalize=depthwise``: only grouped/depthwise ones) gets, per channel
        ``c`` with calibrated min-max range ``[lo_c, hi_c]`` inside the tensor's
        ``[lo, hi]``, the gain ``k_c = min(hi / hi_c, lo / lo_c)`` (>= 1, at most
        `MAX_GAIN`): the producer's output channel ``c`` (weights and bias) is multiplied by
        ``k_c`` and every consumer's input channel ``c`` divided by it.  In real arithmetic
        the function is unchanged (the fused clamp is never tighter than the calibrated
        range, which stays inside ``[lo, hi]``); small channels get the whole activation
        range instead of a few levels.  With per-channel weights the producer's integer
        weights and biases do not change (only its scales and requantize multipliers), nor
        do a depthwise consumer's."""
        if self.o.equalize == "off" or not self.o.per_channel:
            return
        layer_ids = {id(n) for n in layers}
        for node in layers:
            out = node.output
            act = self._fusable_act(out)
            final = act.output if act is not None else out
            consumers = self._channel_consumers(final, layer_ids)
            if not consumers or len(final.shape) != 4:
                continue
            if self.o.equalize == "depthwise" and \
                    not all(int(c.attrs.get("group", 1)) > 1 for c in consumers):
                continue
            st = self.stats.get(final.name)
            if st is None or st.ch_lo is None or not st.sample_ch or \
                    st.ch_lo.size != final.shape[1]:
                continue
            lo, hi = min(float(st.lo), 0.0), max(float(st.hi), 0.0)
            ch_lo, ch_hi = st.ch_lo.astype(np.float64), st.ch_hi.astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                up = np.where(ch_hi > 0, hi / ch_hi, np.inf)
                down = np.where(ch_lo < 0, lo / ch_lo, np.inf)
            gain = np.minimum(np.minimum(up, down), self.MAX_GAIN)
            gain = np.where(np.isfinite(gain) & (gain >= 1.0), gain, 1.0)
            if np.all(gain < 1.0 + 1e-6):
                continue
            self.stats[final.name] = st.scaled(gain)
            self.gain_out[id(node)] = gain
            for consumer in consumers:
                prev = self.gain_in.get(id(consumer))
                self.gain_in[id(consumer)] = gain if prev is None else prev * gain
            self.counts["equalized_tensors"] += 1

    def _apply_input_gain(self, node: Node, w: np.ndarray, axis_in: int) -> np.ndarray:
        gain = self.gain_in.get(id(node))
        if gain is None:
            return w
        if node.op_type == "Conv":
            group = int(node.attrs.get("group", 1))
            o, cg = w.shape[0], w.shape[1]
            # input channel g * cg + j feeds weight[g*o/group:(g+1)*o/group, j]
            per_weight = gain.reshape(group, cg)[np.repeat(np.arange(group), o // group)]
            return w / per_weight.reshape(o, cg, *([1] * (w.ndim - 2)))
        shape = [1] * w.ndim
        shape[axis_in] = -1
        return w / gain.reshape(shape)

    # -- values -----------------------------------------------------------------------
    def _act_params(self, value: Value) -> ActParams:
        bits = self.value_bits.get(id(value), self.o.act_bits)
        st = self.stats.get(value.name)
        if st is None:
            raise RuntimeError(f"quantize: no calibration statistics for '{value.name}'")
        symmetric = self.o.symmetric_acts and bits >= 2
        lo, hi = calibrate_range(st, self.o.calibration, bits=bits, symmetric=symmetric,
                                 percentile=self.o.percentile)
        return act_qparams(lo, hi, bits, symmetric)

    def _new(self, op: str, inputs: list, attrs: dict, name: str, domain: str = Q,
             num_outputs: int = 1) -> Node:
        node = self.g.add_node(op, inputs, attrs, name=name, domain=domain,
                               num_outputs=num_outputs)
        infer_node(node)
        return node

    def _set_q(self, fvalue: Value, qvalue: Value, ap: ActParams) -> None:
        self.qv[id(fvalue)] = qvalue
        self.params[id(qvalue)] = ap
        qvalue.quant = ap.quant()

    def get_q(self, value: Value) -> Value:
        if id(value) in self.qv:
            return self.qv[id(value)]
        ap = self._act_params(value)
        node = self._new("Quantize", [value], dict(scale=float(ap.scale), zero_point=ap.zero_point,
                                                   qmin=ap.qmin, qmax=ap.qmax, bits=ap.bits),
                         name=f"{value.name}_quantize")
        self.counts["quantize_nodes"] += 1
        self._set_q(value, node.output, ap)
        return node.output

    def get_f(self, value: Value) -> Value:
        if id(value) not in self.replaced:
            return value
        if id(value) not in self.deq:
            q = self.qv[id(value)]
            ap = self.params[id(q)]
            node = self._new("Dequantize", [q], dict(scale=float(ap.scale),
                                                     zero_point=ap.zero_point),
                             name=f"{value.name}_dequantize")
            self.counts["dequantize_nodes"] += 1
            self.deq[id(value)] = node.output
        return self.deq[id(value)]

    def _fusable_act(self, out: Value) -> Node | None:
        uses = out.uses
        if len(uses) != 1 or out.is_graph_output:
            return None
        user = uses[0][0]
        if user.op_type in _ACTS and not user.domain and uses[0][1] == 0 \
                and _clip_bounds(user) is not None:
            return user
        return None

    def _clamp(self, ap: ActParams, act: Node | None) -> tuple[int, int]:
        qmin, qmax = ap.qmin, ap.qmax
        if act is not None:
            lo, hi = _clip_bounds(act)
            if np.isfinite(lo):
                qmin = max(qmin, min(qmax, ap.zero_point + int(np.round(lo / ap.scale))))
            if np.isfinite(hi):
                qmax = min(qmax, max(qmin, ap.zero_point + int(np.round(hi / ap.scale))))
        return qmin, qmax

    # -- the walk ---------------------------------------------------------------------
    def rewrite(self) -> PassResult:
        g = self.g
        layers = self._layers()
        plan = self._plan_bits(layers)
        layer_ids = {id(n) for n in layers}
        self._plan_equalization(layers)
        for node in list(g.topo_order()):
            if id(node) in self.fused:
                continue
            if id(node) in layer_ids:
                self._layer(node, *plan[id(node)])
            elif self._try_int(node):
                pass
            else:
                self._keep_float(node)
        for i, out in enumerate(list(g.outputs)):
            if id(out) in self.replaced:
                name = out.name
                f = self.get_f(out)
                g.outputs[i] = f
                g.rename_value(out, g.unique_name(name + "_float"))
                g.rename_value(f, name)
        g.remove_unused()
        if self.float_ops:
            warnings.warn(f"quantize: ops left in float (with quantize/dequantize at the "
                          f"boundary): {self.float_ops}", QuantizationWarning, stacklevel=3)
        stats = dict(self.counts)
        stats["float_ops"] = dict(self.float_ops)
        stats["layers"] = {c.name: [c.w_bits, c.a_bits] for c in self.layer_bits}
        table = self._cost_table()
        stats["theoretical_speedup"] = round(theoretical_speedup(table), 3)
        stats["calibration"] = self.o.calibration
        g.meta["quantization"] = {"bits": self.o.bits, "act_bits": self.o.act_bits,
                                  "layers": stats["layers"]}
        return PassResult(g, True, stats)

    def _cost_table(self) -> list[LayerCost]:
        from .cost import multiply_layers

        table = list(self.layer_bits)
        done = {c.name for c in table}
        for node in multiply_layers(self.g):
            if not node.domain and node.name not in done:
                table.append(LayerCost(node.name, node.op_type, layer_macs(node)))
        return table

    def _keep_float(self, node: Node) -> None:
        changed = False
        for index, value in enumerate(node.inputs):
            if value is not None and id(value) in self.replaced:
                node.set_input(index, self.get_f(value))
                changed = True
        if changed or any(id(v) in self.qv for v in node.inputs if v is not None):
            key = node.op_type
            self.float_ops[key] = self.float_ops.get(key, 0) + 1

    def _replace(self, fvalue: Value, qvalue: Value, ap: ActParams) -> None:
        self._set_q(fvalue, qvalue, ap)
        self.replaced.add(id(fvalue))

    # -- multiply layers --------------------------------------------------------------------
    def _layer(self, node: Node, wb: int, ab: int) -> None:
        g = self.g
        x = node.inputs[0]
        xq = self.get_q(x)
        apx = self.params[id(xq)]
        out = node.output
        act = self._fusable_act(out)
        final = act.output if act is not None else out
        apo = self._act_params(final)
        qmin, qmax = self._clamp(apo, act)
        ins = node.inputs
        bias = ins[2].const.astype(np.float64) if len(ins) > 2 and ins[2] is not None else None
        out_gain = self.gain_out.get(id(node))
        trans_b = False
        if node.op_type == "Conv":
            w = self._apply_input_gain(node, ins[1].const.astype(np.float64), 1)
            if out_gain is not None:
                w = w * out_gain.reshape(-1, 1, 1, 1)
            wq, ws = quantize_weight(w, wb, self.o.per_channel, axis=0)
            n_out = w.shape[0]
        elif node.op_type == "ConvTranspose":  # W: (C_in, M, kh, kw), group 1
            w = ins[1].const.astype(np.float64)
            if out_gain is not None:
                w = w * out_gain.reshape(1, -1, 1, 1)
            wq, ws = quantize_weight(w, wb, self.o.per_channel, axis=1)
            n_out = w.shape[1]
        else:
            b = ins[1].const.astype(np.float64)
            trans_b = node.op_type == "Gemm" and int(node.attrs.get("transB", 0))
            if node.op_type == "Gemm":
                b = b * float(node.attrs.get("alpha", 1.0))
                if bias is not None:
                    bias = bias * float(node.attrs.get("beta", 1.0))
            wq, ws = quantize_weight(b, wb, self.o.per_channel, axis=0 if trans_b else 1)
            n_out = b.shape[0] if trans_b else b.shape[1]
            if bias is not None:
                bias = np.broadcast_to(bias.reshape(-1) if bias.size == n_out else bias,
                                       (n_out,)).copy()
        if out_gain is not None and bias is not None:
            bias = bias * out_gain
        acc_scale = apx.scale * ws  # per output channel
        wv = g.add_constant(f"{node.name}_wq", wq)
        w_axis = op_traits(node).weight_layer.channel_axes(node.attrs)[0]  # output channels
        wv.quant = QuantParams(wb, ws.copy(), np.zeros_like(ws, dtype=np.int64), axis=w_axis)
        inputs = [xq, wv]
        if bias is not None:
            bq = np.clip(np.round(bias / acc_scale), -2 ** 31, 2 ** 31 - 1).astype(np.int32)
            inputs.append(g.add_constant(f"{node.name}_bq", bq))
        if node.op_type == "Conv":
            attrs = {k: node.attrs[k] for k in ("kernel_shape", "strides", "pads", "dilations",
                                                "group") if k in node.attrs}
            attrs.setdefault("kernel_shape", list(w.shape[2:]))
            attrs["x_zero_point"] = apx.zero_point
            qnode = self._new("Conv", inputs, attrs, name=f"{node.name}_q")
        elif node.op_type == "ConvTranspose":
            from compiler.ops.nn import transpose_params

            kernel, strides, pads, dilations, opad = transpose_params(
                node.attrs, x.shape[2:], w.shape)
            qnode = self._new("ConvTranspose", inputs, dict(
                kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                dilations=list(dilations), group=1, output_padding=list(opad),
                x_zero_point=apx.zero_point), name=f"{node.name}_q")
        else:
            qnode = self._new("Gemm", inputs, dict(transB=int(bool(trans_b)),
                                                   a_zero_point=apx.zero_point),
                              name=f"{node.name}_q")
        qnode.meta["bits"] = (wb, ab)
        qnode.meta["float_name"] = node.name
        mult, shift = quantize_multiplier(acc_scale / apo.scale)
        mv = g.add_constant(f"{node.name}_mult", mult)
        sv = g.add_constant(f"{node.name}_shift", shift)
        rq = self._new("Requantize", [qnode.output, mv, sv],
                       dict(axis=1, zero_point=apo.zero_point, qmin=qmin, qmax=qmax),
                       name=f"{node.name}_requantize")
        ap_out = dataclasses.replace(apo)
        self._replace(final, rq.output, ap_out)
        if act is not None:
            self.fused.add(id(act))
            self.replaced.add(id(out))
        self.counts["quantized_layers"] += 1
        self.layer_bits.append(LayerCost(node.name, node.op_type, layer_macs(node), wb,
                                         apx.bits))

    # -- other integer ops ------------------------------------------------------------------
    def _try_int(self, node: Node) -> bool:
        if node.domain:
            return False
        op = node.op_type
        ins = [v for v in node.inputs if v is not None]
        if op == "Add" and len(ins) == 2 and all(v.const is None for v in ins) \
                and any(id(v) in self.qv for v in ins):
            return self._add(node)
        if op == "Concat" and all(v.const is None for v in ins) and any(id(v) in self.qv for v in ins):
            return self._concat(node)
        if not ins or id(node.inputs[0]) not in self.qv:
            return False
        xq = self.qv[id(node.inputs[0])]
        ap = self.params[id(xq)]
        if op in _TRANSPARENT:
            if any(v.const is None for v in node.inputs[1:] if v is not None):
                return False
            if op == "MaxPool" and len(node.outputs) > 1:
                return False
            new = self._new(op, [xq] + list(node.inputs[1:]), dict(node.attrs),
                            name=f"{node.name}_q", domain="", num_outputs=len(node.outputs))
            for fo, qo in zip(node.outputs, new.outputs):
                self._replace(fo, qo, ap)
            self.counts["int_ops"] += 1
            return True
        if op in _ACTS and _clip_bounds(node) is not None:
            qmin, qmax = self._clamp(ap, node)
            new = self._new("Clip", [xq], dict(qmin=qmin, qmax=qmax), name=f"{node.name}_q")
            self._replace(node.output, new.output, ap)
            self.counts["int_ops"] += 1
            return True
        if op == "Resize" and len(xq.shape) == 4:
            return self._resize(node, xq, ap)
        if op == "GlobalAveragePool" and len(xq.shape) == 4:
            new = self._new("GlobalAveragePool", [xq], dict(zero_point=ap.zero_point),
                            name=f"{node.name}_q")
            self._replace(node.output, new.output, ap)
            self.counts["int_ops"] += 1
            return True
        if op == "AveragePool" and len(xq.shape) == 4 and \
                all(int(d) == 1 for d in node.attrs.get("dilations") or [1, 1]):
            attrs = {k: node.attrs[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode",
                                                "count_include_pad") if k in node.attrs}
            attrs["zero_point"] = ap.zero_point
            new = self._new("AveragePool", [xq], attrs, name=f"{node.name}_q")
            self._replace(node.output, new.output, ap)
            self.counts["int_ops"] += 1
            return True
        return False

    def _resize(self, node: Node, xq: Value, ap: ActParams) -> bool:
        """Nearest: ONNX Resize on int8 (data movement); linear/cubic: ``q.Resize`` with the
        interpolation as integer matrices.  Same scale and zero point out as in."""
        from compiler.ops.quant import RESIZE_FRAC_BITS, resize_matrices

        consts = [v.const if v is not None else None for v in node.inputs[1:4]]
        consts += [None] * (3 - len(consts))
        if any(v is not None and c is None for v, c in zip(node.inputs[1:4], consts)):
            return False  # run-time roi/scales/sizes
        try:
            mh, mw = resize_matrices(node.attrs, node.inputs[0].shape, consts[1], consts[2])
        except (ValueError, NotImplementedError):  # what it cannot express stays float
            return False
        if node.attrs.get("mode", "nearest") == "nearest":
            new = self._new("Resize", [xq] + list(node.inputs[1:]), dict(node.attrs),
                            name=f"{node.name}_q", domain="")
        else:
            new = self._new("Resize", [xq, self.g.add_constant(f"{node.name}_mh", mh),
                                       self.g.add_constant(f"{node.name}_mw", mw)],
                            dict(shift=2 * RESIZE_FRAC_BITS, zero_point=ap.zero_point),
                            name=f"{node.name}_q")
        self._replace(node.output, new.output, ap)
        self.counts["int_ops"] += 1
        return True

    def _rescaled_output(self, node: Node):
        out = node.output
        act = self._fusable_act(out)
        final = act.output if act is not None else out
        apo = self._act_params(final)
        qmin, qmax = self._clamp(apo, act)
        return out, act, final, apo, qmin, qmax

    def _finish(self, node: Node, new: Node, out, act, final, apo) -> bool:
        self._replace(final, new.output, apo)
        if act is not None:
            self.fused.add(id(act))
            self.replaced.add(id(out))
        self.counts["int_ops"] += 1
        return True

    def _add(self, node: Node) -> bool:
        a, b = (self.get_q(v) for v in node.inputs[:2])
        pa, pb = self.params[id(a)], self.params[id(b)]
        out, act, final, apo, qmin, qmax = self._rescaled_output(node)
        (ma, mb), shift = shared_multipliers([pa.scale / apo.scale, pb.scale / apo.scale])
        new = self._new("Add", [a, b], dict(a_zero_point=pa.zero_point, b_zero_point=pb.zero_point,
                                           a_multiplier=ma, b_multiplier=mb, shift=shift,
                                           zero_point=apo.zero_point, qmin=qmin, qmax=qmax),
                        name=f"{node.name}_q")
        return self._finish(node, new, out, act, final, apo)

    def _concat(self, node: Node) -> bool:
        xs = [self.get_q(v) for v in node.inputs]
        ps = [self.params[id(x)] for x in xs]
        out, act, final, apo, qmin, qmax = self._rescaled_output(node)
        mults, shift = shared_multipliers([p.scale / apo.scale for p in ps])
        new = self._new("Concat", xs, dict(axis=int(node.attrs.get("axis", 1)),
                                          zero_points=[p.zero_point for p in ps],
                                          multipliers=mults, shift=shift,
                                          zero_point=apo.zero_point, qmin=qmin, qmax=qmax),
                        name=f"{node.name}_q")
        return self._finish(node, new, out, act, final, apo)

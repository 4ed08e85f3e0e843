"""Map the integer graph of the ``quantize`` pass onto FINN-style hardware stages.

One hardware stage per layer, as FINN's ``convert_to_hw_layers`` would build it:
``q.Conv`` -> [FMPadding] + [SWG] + MVAU (VVAU for depthwise), ``q.Gemm`` -> MVAU,
``q.ConvTranspose`` -> FMPixelPadding + SWG + MVAU (FINN's InferPixelPaddingDeconv),
a ``q.Requantize`` right after a conv/Gemm -> thresholds fused into that unit, max pool ->
StreamingMaxPool (or SWG + Pool), ``q.Add`` -> AddStreams and any fork -> DuplicateStreams,
``q.Concat`` -> StreamingConcat, ``q.GlobalAveragePool`` -> GlobalAccPool, the graph's
``q.Quantize``/``q.Dequantize`` -> input/output DMA.  Data layout ops (Flatten, Reshape,
...) cost nothing: FINN streams NHWC and permutes FC weights at compile time instead.
Linear ``q.Resize`` has no FINN unit: OUR `Interpolate` stage (marked as such).

Bits are read from the graph: weight bits from the weight's `QuantParams` (1 = binary
weights), input activation bits and sign from the producer's ``[qmin, qmax]`` and the
layer's zero point (``zp == qmin`` means ``x - zp`` is unsigned), output bits from the
fused requantize's range, index bits ``ceil(log2 k)`` from a ``share-weights`` codebook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from compiler.ir import Graph, Node, Value

from .options import FpgaSimError
from .stages import (IODMA, MVAU, SWG, VVAU, AddStreams, DuplicateStreams, FMPadding,
                     GlobalAccPool, Pool, Stage, StreamingConcat, StreamingMaxPool,
                     Thresholding, Upsample, _res)

__all__ = ["Pipeline", "map_graph", "SUPPORTED_OPS", "Interpolate"]

#: Ops with a hardware stage (or free data movement), as "domain.op" / "op".
SUPPORTED_OPS: tuple[str, ...] = (
    "q.Quantize", "q.Dequantize", "q.Conv", "q.ConvTranspose", "q.Gemm", "q.Requantize",
    "q.Clip", "q.Add", "q.Concat", "q.AveragePool", "q.GlobalAveragePool", "q.Resize",
    "MaxPool", "Resize (nearest)", "Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze")
_LAYOUT = {"Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze"}
_FLOAT_COMPUTE = {"Conv", "Gemm", "MatMul", "ConvTranspose", "Relu", "BatchNormalization",
                  "Add", "AveragePool", "GlobalAveragePool"}


@dataclass
class Interpolate(Stage):
    """Linear/cubic resize (``q.Resize``): OUR stage, FINN has none.  One output value per
    PE per cycle, ``OH*OW*C/PE``; two input rows buffered in LUTRAM (SWG's LUTRAM rule:
    ``300 + 2*A*PE*ceil(W_in*C/PE/64)`` LUTs) and one multiplier pair per PE."""

    ch: int = 1
    ifm_w: int = 1
    out: tuple[int, int] = (1, 1)
    a_bits: int = 8
    unit: ClassVar[str] = "Interpolate"
    folds: ClassVar[tuple[str, ...]] = ("PE",)

    @property
    def pe_range(self) -> int:
        return self.ch

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.out[0] * self.out[1] * self.ch // pe)

    def resources(self, pe: int = 1, simd: int = 1, res_type: str = "lut",
                  dsp_block: str = "DSP48E2") -> dict[str, Any]:
        a = self.a_bits
        rows = 2 * a * pe * math.ceil(self.ifm_w * self.ch / pe / 64)
        mult = 0 if res_type == "dsp" else 2 * (2 * math.ceil((a + a) / 6) - 1) * (a + a)
        return _res(300 + rows + pe * mult, dsp=2 * pe if res_type == "dsp" else 0)


@dataclass
class Pipeline:
    """Stages in stream order plus, per stage name, the names of the stages feeding it."""

    stages: list[Stage]
    preds: dict[str, list[str]] = field(default_factory=dict)
    finn_names: dict[str, str] = field(default_factory=dict)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.node == name:
                return s
        raise KeyError(name)


def _op(node: Node) -> str:
    return f"{node.domain}.{node.op_type}" if node.domain else node.op_type


def _bits(qmin: int, qmax: int) -> int:
    return max(1, math.ceil(math.log2(int(qmax) - int(qmin) + 1)))


def _range(value: Value) -> tuple[int, int]:
    """``[qmin, qmax]`` of an int8 activation: from the node that set it, walking up through
    data movement (max pool, flatten, pools, nearest resize keep the range)."""
    v = value
    for _ in range(1000):
        p = v.producer
        if p is None:
            break
        if "qmin" in p.attrs and "qmax" in p.attrs:
            return int(p.attrs["qmin"]), int(p.attrs["qmax"])
        if not p.inputs or p.inputs[0] is None:
            break
        v = p.inputs[0]
    if value.quant is not None:
        b = int(value.quant.bits)
        return -(2 ** (b - 1)), 2 ** (b - 1) - 1
    return -128, 127


def _act(value: Value, zero_point: int) -> tuple[int, bool]:
    """(A bits, signed) of the multiplier operand ``x - zp``."""
    qmin, qmax = _range(value)
    bits = _bits(qmin, qmax)
    if int(zero_point) == qmin:      # x - zp in [0, 2**b - 1]: unsigned, as after a ReLU
        return bits, False
    return bits, True                # signed b-bit x, zp folded into the bias


def _weight_bits(node: Node, w: Value) -> int:
    if w.quant is not None and getattr(w.quant, "bits", None):
        return int(w.quant.bits)
    meta = node.meta.get("bits")
    if meta:
        return int(meta[0])
    m = int(np.abs(w.const.astype(np.int64)).max()) if w.const is not None and w.const.size else 1
    return max(1, math.ceil(math.log2(m + 1)) + 1)


def _codebook(w: Value) -> int:
    from passes.weight_sharing import shared_weights  # annotation reader of share-weights

    shared = shared_weights(w)
    return int(len(shared[0])) if shared is not None else 0


def _check_quantized(graph: Graph) -> None:
    ops = [n for n in graph.topo_order()]
    has_q = any(n.domain == "q" for n in ops)
    floats = [n for n in ops if not n.domain and n.op_type in _FLOAT_COMPUTE
              and any(v is not None and v.dtype is not None and np.dtype(v.dtype).kind == "f"
                      for v in n.inputs[:1])]
    if not has_q or floats:
        what = f" (float node {floats[0].op_type} {floats[0].name!r})" if floats else ""
        raise FpgaSimError(f"fpga-sim needs an integer graph{what}: run the 'quantize' pass "
                           f"first (e.g. passes ['fold-bn', 'quantize'])")


class _Mapper:
    def __init__(self, graph: Graph, axi_bits: int, sparse_skip: bool):
        self.g = graph
        self.axi_bits = axi_bits
        self.sparse_skip = sparse_skip
        self.p = Pipeline([])
        self.src: dict[int, str] = {}      # id(value) -> name of the stage producing it
        self.fused: set[int] = set()       # ids of Requantize nodes fused into a unit
        self.count: dict[str, int] = {}

    # -- helpers -----------------------------------------------------------------------
    def add(self, stage: Stage, inputs: list[Value | None]) -> Stage:
        preds = [self.src[id(v)] for v in inputs
                 if v is not None and v.const is None and id(v) in self.src]
        return self._append(stage, preds)

    def chain(self, stage: Stage, prev: Stage) -> Stage:
        return self._append(stage, [prev.node])

    def _append(self, stage: Stage, preds: list[str]) -> Stage:
        """Add ``stage`` after ``preds`` and give it FINN's node name (``MVAU_hls_0``...)."""
        self.p.stages.append(stage)
        self.p.preds[stage.node] = preds
        finn = {"SWG": "ConvolutionInputGenerator"}.get(stage.unit, stage.unit)
        i = self.count.get(finn, 0)
        self.count[finn] = i + 1
        self.p.finn_names[stage.node] = f"{finn}_hls_{i}"
        return stage

    def produce(self, value: Value, stage: Stage) -> None:
        """Record the stage producing ``value``; a fork gets a DuplicateStreams."""
        self.src[id(value)] = stage.node
        n_cons = len(value.consumers)
        if n_cons > 1 and value.shape is not None:
            ch, pixels = _ch_pixels(value.shape)
            dup = self.chain(DuplicateStreams(f"{stage.node}/dup", ch=ch, pixels=pixels), stage)
            self.src[id(value)] = dup.node

    def fused_requant(self, acc: Value) -> tuple[Node | None, int | None]:
        cons = acc.consumers
        if len(cons) == 1 and _op(cons[0]) == "q.Requantize" and not acc.is_graph_output:
            rq = cons[0]
            return rq, _bits(rq.attrs["qmin"], rq.attrs["qmax"])
        return None, None

    # -- ops ---------------------------------------------------------------------------
    def run(self) -> Pipeline:
        _check_quantized(self.g)
        for node in self.g.topo_order():
            if id(node) in self.fused:
                continue
            op = _op(node)
            fn = getattr(self, "op_" + op.replace(".", "_"), None)
            if op in _LAYOUT or (op == "Resize" and node.inputs[0] is not None
                                 and node.attrs.get("mode", "nearest") == "nearest"
                                 and _same_pixels(node)):
                self.passthrough(node)
            elif fn is None:
                raise FpgaSimError(f"op {op} (node {node.name!r}) has no fpga-sim hardware stage; "
                                   f"supported: {', '.join(SUPPORTED_OPS)}")
            else:
                fn(node)
        return self.p

    def passthrough(self, node: Node) -> None:
        x = node.inputs[0]
        if x is not None and id(x) in self.src:
            self.src[id(node.outputs[0])] = self.src[id(x)]

    def op_q_Quantize(self, node: Node) -> None:
        out = node.outputs[0]
        bits = _bits(node.attrs["qmin"], node.attrs["qmax"])
        frame = int(np.prod(out.shape[1:])) * bits
        st = self.add(IODMA(f"{node.name}/idma", bits=frame, axi_bits=self.axi_bits), [])
        self.produce(out, st)

    def op_q_Dequantize(self, node: Node) -> None:
        x = node.inputs[0]
        if x.dtype is not None and np.dtype(x.dtype).itemsize == 4:
            bits = 32                      # raw accumulators leave the chip
        else:
            bits = _bits(*_range(x))
        frame = int(np.prod(x.shape[1:])) * bits
        self.add(IODMA(f"{node.name}/odma", bits=frame, axi_bits=self.axi_bits), [x])

    def _padding(self, node: Node, x: Value, kernel, strides, pads, transpose: bool
                 ) -> tuple[Stage | None, tuple[int, int], tuple[int, int]]:
        """The [FMPadding] in front of a conv's SWG: (stage or None, padded map, SWG stride).
        A transposed conv gets FINN's FMPixelPadding (stride-1 zeros between pixels plus
        k-1-pad borders), after which it is a stride-1 conv."""
        _, c, h, w = x.shape
        kh, kw = kernel
        if transpose:
            sh, sw = strides
            up = ((h - 1) * sh + 1, (w - 1) * sw + 1)
            padded = (up[0] + (kh - 1 - pads[0]) + (kh - 1 - pads[2]),
                      up[1] + (kw - 1 - pads[1]) + (kw - 1 - pads[3]))
            stage = self.add(FMPadding(f"{node.name}/pixelpad", ch=c, out=padded,
                                       pixel_padding=True), [x])
            return stage, padded, (1, 1)
        if any(pads):
            padded = (h + pads[0] + pads[2], w + pads[1] + pads[3])
            return self.add(FMPadding(f"{node.name}/pad", ch=c, out=padded), [x]), padded, strides
        return None, (h, w), strides

    def op_q_Conv(self, node: Node, transpose: bool = False) -> None:
        x, wv = node.inputs[0], node.inputs[1]
        out = node.outputs[0]
        wt = wv.const
        group = int(node.attrs.get("group", 1))
        kh, kw = [int(k) for k in node.attrs.get("kernel_shape", wt.shape[2:])]
        strides = tuple(int(s) for s in node.attrs.get("strides", (1, 1)))
        pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
        dil = tuple(int(d) for d in node.attrs.get("dilations", (1, 1)))
        _, c, h, w = x.shape
        _, m, oh, ow = out.shape
        zp = int(node.attrs.get("x_zero_point", 0))
        a_bits, a_signed = _act(x, zp)
        w_bits = _weight_bits(node, wv)
        k = _codebook(wv)
        mem_bits = max(1, math.ceil(math.log2(max(k, 2)))) if k else None
        rq, out_bits = self.fused_requant(out)
        if rq is not None:
            self.fused.add(id(rq))
        depthwise = group > 1 and group == c and (m == c)
        if group > 1 and not depthwise:
            raise FpgaSimError(f"node {node.name!r} ({_op(node)}): grouped conv with group={group}, "
                               f"C_in={c}, C_out={m} has no FINN unit (only group=1 or "
                               f"depthwise group=C_in=C_out)")
        prev, ifm, st = self._padding(node, x, (kh, kw), strides, pads, transpose)
        need_swg = not (kh == 1 and kw == 1 and st == (1, 1) and not transpose)
        if need_swg:
            swg = SWG(f"{node.name}/swg", ch=c, ifm=ifm, ofm=(oh, ow), kernel=(kh, kw), stride=st,
                      dilation=dil, a_bits=a_bits, depthwise=depthwise)
            prev = self.chain(swg, prev) if prev is not None else self.add(swg, [x])
        if depthwise:
            unit = VVAU(node.name, ch=c, k=kh * kw, nvec=oh * ow, w_bits=w_bits, a_bits=a_bits,
                        a_signed=a_signed, out_bits=out_bits, mem_bits=mem_bits, codebook=k)
        else:
            if transpose:   # [C_in, C_out, kh, kw] -> rows per output channel, (kh, kw, C_in)
                rows = np.flip(wt, axis=(2, 3)).transpose(1, 2, 3, 0).reshape(m, -1)
            else:           # FINN's SWG order: (kh, kw, C_in) with C innermost
                rows = wt.transpose(0, 2, 3, 1).reshape(m, -1)
            unit = MVAU(node.name, mw=kh * kw * c, mh=m, nvec=oh * ow, w_bits=w_bits,
                        a_bits=a_bits, a_signed=a_signed, out_bits=out_bits, mem_bits=mem_bits,
                        codebook=k, nonzero=rows != 0, sparse_skip=self.sparse_skip)
        unit = self.chain(unit, prev) if prev is not None else self.add(unit, [x])
        self.produce((rq or node).outputs[0], unit)

    def op_q_ConvTranspose(self, node: Node) -> None:
        if int(node.attrs.get("group", 1)) != 1:
            raise FpgaSimError(f"node {node.name!r} (q.ConvTranspose): group != 1 has no FINN unit")
        self.op_q_Conv(node, transpose=True)

    def op_q_Gemm(self, node: Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        out = node.outputs[0]
        wt = b.const
        if wt is None:
            raise FpgaSimError(f"node {node.name!r} (q.Gemm): B must be a constant weight")
        rows = wt if node.attrs.get("transB", 0) else wt.T   # [MH, MW]
        zp = int(node.attrs.get("a_zero_point", 0))
        a_bits, a_signed = _act(a, zp)
        k = _codebook(b)
        rq, out_bits = self.fused_requant(out)
        if rq is not None:
            self.fused.add(id(rq))
        unit = MVAU(node.name, mw=rows.shape[1], mh=rows.shape[0],
                    nvec=int(np.prod(a.shape[:-1])), w_bits=_weight_bits(node, b), a_bits=a_bits,
                    a_signed=a_signed, out_bits=out_bits,
                    mem_bits=max(1, math.ceil(math.log2(max(k, 2)))) if k else None, codebook=k,
                    nonzero=rows != 0, sparse_skip=self.sparse_skip)
        self.add(unit, [a])
        self.produce((rq or node).outputs[0], unit)

    def op_q_Requantize(self, node: Node) -> None:
        out = node.outputs[0]
        ch, pixels = _ch_pixels(out.shape)
        st = self.add(Thresholding(node.name, ch=ch, pixels=pixels,
                                   out_bits=_bits(node.attrs["qmin"], node.attrs["qmax"])),
                      [node.inputs[0]])
        self.produce(out, st)

    op_q_Clip = op_q_Requantize

    def op_q_Add(self, node: Node) -> None:
        out = node.outputs[0]
        ch, pixels = _ch_pixels(out.shape)
        st = self.add(AddStreams(node.name, ch=ch, pixels=pixels), list(node.inputs[:2]))
        self.produce(out, st)

    def op_q_Concat(self, node: Node) -> None:
        out = node.outputs[0]
        if int(node.attrs.get("axis", 1)) not in (1, -3) or len(out.shape) != 4:
            raise FpgaSimError(f"node {node.name!r} (q.Concat): only channel concat of NCHW maps "
                               f"to StreamingConcat")
        chs = tuple(int(v.shape[1]) for v in node.inputs)
        st = self.add(StreamingConcat(node.name, chs=chs, pixels=int(out.shape[2] * out.shape[3])),
                      list(node.inputs))
        self.produce(out, st)

    def op_MaxPool(self, node: Node) -> None:
        self._pool(node, is_max=True)

    def op_q_AveragePool(self, node: Node) -> None:
        self._pool(node, is_max=False)

    def _pool(self, node: Node, is_max: bool) -> None:
        x, out = node.inputs[0], node.outputs[0]
        _, c, h, w = x.shape
        _, _, oh, ow = out.shape
        kh, kw = [int(k) for k in node.attrs["kernel_shape"]]
        st = tuple(int(s) for s in node.attrs.get("strides", (1, 1)))
        pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
        qmin, qmax = _range(x)
        a = _bits(qmin, qmax)
        if is_max and kh == kw == st[0] == st[1] and not any(pads):
            stage = self.add(StreamingMaxPool(node.name, ch=c, ifm=(h, w), k=kh), [x])
        else:
            prev = None
            ifm = (h, w)
            if any(pads):
                ifm = (h + pads[0] + pads[2], w + pads[1] + pads[3])
                prev = self.add(FMPadding(f"{node.name}/pad", ch=c, out=ifm), [x])
            swg = SWG(f"{node.name}/swg", ch=c, ifm=ifm, ofm=(oh, ow), kernel=(kh, kw), stride=st,
                      a_bits=a, depthwise=True)
            swg = self.chain(swg, prev) if prev else self.add(swg, [x])
            stage = self.chain(Pool(node.name, ch=c, k_prod=kh * kw, out_pixels=oh * ow), swg)
        self.produce(out, stage)

    def op_q_GlobalAveragePool(self, node: Node) -> None:
        x = node.inputs[0]
        ch, pixels = _ch_pixels(x.shape)
        st = self.add(GlobalAccPool(node.name, ch=ch, pixels=pixels), [x])
        self.produce(node.outputs[0], st)

    def op_q_Resize(self, node: Node) -> None:
        x, out = node.inputs[0], node.outputs[0]
        qmin, qmax = _range(x)
        st = self.add(Interpolate(node.name, ch=int(x.shape[1]), ifm_w=int(x.shape[3]),
                                  out=(int(out.shape[2]), int(out.shape[3])),
                                  a_bits=_bits(qmin, qmax)), [x])
        self.produce(out, st)

    def op_Resize(self, node: Node) -> None:   # nearest upsampling of int8 (data movement)
        x, out = node.inputs[0], node.outputs[0]
        if node.attrs.get("mode", "nearest") != "nearest" or len(out.shape) != 4:
            raise FpgaSimError(f"node {node.name!r} (Resize): only nearest 4-D resize on int8 "
                               f"maps to Upsample")
        st = self.add(Upsample(node.name, ch=int(x.shape[1]),
                               out=(int(out.shape[2]), int(out.shape[3]))), [x])
        self.produce(out, st)


def _same_pixels(node: Node) -> bool:
    x, out = node.inputs[0], node.outputs[0]
    return x.shape is not None and out.shape is not None and tuple(x.shape) == tuple(out.shape)


def _ch_pixels(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) >= 3:
        return shape[1], int(np.prod(shape[2:]))
    return shape[-1], int(np.prod(shape[1:-1])) if len(shape) > 2 else 1


def map_graph(graph: Graph, *, axi_bits: int = 64, sparse_skip: bool = False) -> Pipeline:
    """The hardware stages of ``graph`` (an integer graph from ``quantize``).

    Raises FpgaSimError for a float graph (run ``quantize`` first) or an op without a
    hardware stage (names op and node, lists the supported ops)."""
    return _Mapper(graph, axi_bits, sparse_skip).run()

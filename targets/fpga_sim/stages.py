"""Hardware stages of a FINN-style dataflow accelerator: cycles and resources per layer.

One `Stage` per hardware unit.  ``cycles(pe, simd)`` is FINN's ``get_exp_cycles`` (the
unit's initiation interval per frame) and ``resources(pe, simd, ...)`` its
``node_res_estimation`` (LUT, BRAM_18K, URAM, DSP), transcribed from Xilinx/finn
@ 39f0c9a (file:line in each docstring; see /work/shared/notes/fpga-sim.md section 1).
FINN's defaults are used where a unit has a style choice: MVAU ``mem_mode =
internal_decoupled``, ``ram_style = auto`` (weights in BRAM), ``ram_style_thresholds =
block`` (FINN estimates no threshold memory for that style); SWG ``ram_style =
distributed`` (finn-examples' CNV choice).  ``check(pe, simd)`` applies FINN's folding
asserts (section 1.1) and raises `FpgaSimError` naming the layer, MH/MW and PE/SIMD.

What is OURS, not FINN (each says so again where it is computed):
* IODMA: FINN has no cycle model for it (``return 0``); we model ``ceil(bits / axi_bits)``
  cycles, i.e. one bus word per cycle, and no resources.
* thresholds memory: FINN's MVAU BRAM estimate covers weights only; we add the threshold
  bits ``MH * (2**B - 1) * acc_bits`` as capacity-bound BRAM18 (``bram_thresholds``).
* weight sharing: memory holds ``ceil(log2 k)``-bit indices and each PE*SIMD lane a
  k-entry LUTRAM codebook (``P*Q*W*ceil(k/64)`` LUTs, FINN's LUTRAM term).
* ``sparse_skip``: all-zero SIMD blocks of a weight row are skipped, so an MVAU takes
  ``nvec * sum over PE groups of max over the group's rows of non-zero blocks`` cycles.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .options import FpgaSimError

__all__ = ["Stage", "MVAU", "VVAU", "SWG", "Thresholding", "StreamingMaxPool", "Pool",
           "GlobalAccPool", "AddStreams", "DuplicateStreams", "StreamingConcat", "FMPadding",
           "Upsample", "LabelSelect", "IODMA", "divisors", "acc_bits_bound", "bram_ladder"]


def divisors(n: int) -> list[int]:
    """Ascending divisors of ``n`` (FINN's ``divisors`` in set_folding.py)."""
    n = int(n)
    return [d for d in range(1, n + 1) if n % d == 0]


def acc_bits_bound(mw: int, w: int, a: int, a_signed: bool, cap: int = 32) -> int:
    """Minimal accumulator width, arXiv 2301.13376, as FINN's MVAU lut_estimation uses it:
    ``alpha = log2(MW) + W + A - 1 - signed(A)``; ``ceil(alpha + log2(1 + 2**-alpha) + 1)``."""
    alpha = math.log(mw, 2) + w + a - 1 - int(a_signed)
    return int(min(cap, math.ceil(alpha + math.log(1 + 2.0 ** -alpha, 2) + 1)))


def bram_ladder(omega: float, mem_width: int, divs: tuple[int, int, int] = (18, 36, 9)) -> int:
    """FINN's RAMB18 count for a ``omega``-deep, ``mem_width``-wide memory (UG573 SDP modes;
    matrixvectoractivation.py:378).  ``divs`` = (18-wide, 36-wide, 9-wide) width divisors:
    (18, 36, 9) for the MVAU, (16, 32, 8) for the VVAU (vectorvectoractivation.py:309)."""
    d18, d36, d9 = divs
    if mem_width == 1:
        return math.ceil(omega / 16384)
    if mem_width == 2:
        return math.ceil(omega / 8192)
    if mem_width <= 4:
        return math.ceil(omega / 4096) * math.ceil(mem_width / 4)
    if mem_width <= 9:
        return math.ceil(omega / 2048) * math.ceil(mem_width / d9)
    if mem_width <= 18 or omega > 512:
        return math.ceil(omega / 1024) * math.ceil(mem_width / d18)
    return math.ceil(omega / 512) * math.ceil(mem_width / d36)


def _res(lut: float = 0, bram: float = 0, uram: float = 0, dsp: float = 0, **extra: Any
         ) -> dict[str, Any]:
    return {"LUT": int(lut), "BRAM_18K": int(bram), "URAM": int(uram), "DSP": int(dsp), **extra}


@dataclass
class Stage(abc.ABC):
    """A hardware unit.  ``folds`` names the attributes SetFolding may raise.  Subclasses
    give ``cycles`` (and ``resources`` when FINN has an estimate for the unit)."""

    node: str
    unit: ClassVar[str] = "Stage"
    folds: ClassVar[tuple[str, ...]] = ()

    # sizes of the folding axes (PE over pe_range, SIMD over simd_range)
    @property
    def pe_range(self) -> int:
        return 1

    @property
    def simd_range(self) -> int:
        return 1

    @property
    def MH(self) -> int:  # noqa: N802 - FINN's names
        return self.pe_range

    @property
    def MW(self) -> int:  # noqa: N802
        return self.simd_range

    def check(self, pe: int, simd: int) -> None:
        if "PE" not in self.folds and pe != 1 or "SIMD" not in self.folds and simd != 1:
            raise FpgaSimError(f"layer {self.node!r} ({self.unit}): folding PE={pe}, SIMD={simd} "
                               f"not allowed; this unit folds only {self.folds or 'nothing'}")
        if "PE" in self.folds and (pe < 1 or self.pe_range % pe):
            raise FpgaSimError(f"layer {self.node!r} ({self.unit}): PE={pe} must divide "
                               f"{self._pe_label()}={self.pe_range}")
        if "SIMD" in self.folds and (simd < 1 or self.simd_range % simd):
            raise FpgaSimError(f"layer {self.node!r} ({self.unit}): SIMD={simd} must divide "
                               f"{self._simd_label()}={self.simd_range}")

    def _pe_label(self) -> str:
        return "channels"

    def _simd_label(self) -> str:
        return "channels"

    @abc.abstractmethod
    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        """Expected cycles per frame at this folding (FINN ``get_exp_cycles``)."""

    def resources(self, pe: int = 1, simd: int = 1, res_type: str = "lut",
                  dsp_block: str = "DSP48E2") -> dict[str, Any]:
        return _res()

    # for the report
    weight_bits: int = field(default=0, init=False)
    acc_bits: int = field(default=0, init=False)


# ------------------------------------------------------------------------------ MVAU
@dataclass
class MVAU(Stage):
    """Matrix-vector-activation unit (conv as MW = K*K*Cin, MH = Cout, one vector per
    output pixel; Gemm as one vector).  Thresholds (requantize + activation) are fused in
    when ``out_bits`` is set (FINN noActivation=0).

    ``w_bits``/``a_bits``: multiplier operand widths; ``a_signed``: input sign;
    ``mem_bits``: bits per stored weight (``w_bits``, or the index width under weight
    sharing, OUR extension, with ``codebook`` entries); ``nz_blocks``: per-row non-zero
    mask [MH, MW] for ``sparse_skip`` (OUR extension).
    """

    mw: int = 1
    mh: int = 1
    nvec: int = 1
    w_bits: int = 8
    a_bits: int = 8
    a_signed: bool = True
    out_bits: int | None = None
    mem_bits: int | None = None
    codebook: int = 0
    nonzero: np.ndarray | None = field(default=None, repr=False)
    sparse_skip: bool = False
    unit: ClassVar[str] = "MVAU"
    folds: ClassVar[tuple[str, ...]] = ("PE", "SIMD")

    def __post_init__(self) -> None:
        self.weight_bits = self.mem_bits or self.w_bits
        self.acc_bits = acc_bits_bound(self.mw, self.w_bits, self.a_bits, self.a_signed)

    @property
    def pe_range(self) -> int:
        return self.mh

    @property
    def simd_range(self) -> int:
        return self.mw

    def _pe_label(self) -> str:
        return "MH"

    def _simd_label(self) -> str:
        return "MW"

    def check(self, pe: int, simd: int) -> None:
        # FINN calc_wmem (matrixvectoractivation.py:337): assert mh % pe == 0, mw % simd == 0
        if pe < 1 or simd < 1 or self.mh % pe or self.mw % simd:
            raise FpgaSimError(f"layer {self.node!r} (MVAU): folding breaks FINN's divisibility "
                               f"rule: MH={self.mh} % PE={pe} and MW={self.mw} % SIMD={simd} "
                               f"must both be 0")

    def wmem(self, pe: int, simd: int) -> int:
        return self.mw * self.mh // (pe * simd)

    def tmem(self, pe: int) -> int:
        return self.mh // pe

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        """FINN (matrixvectoractivation.py:445): ``(MH/PE) * (MW/SIMD) * nvec``.
        With ``sparse_skip`` (OUR extension) only non-zero SIMD blocks are visited."""
        if self.sparse_skip and self.nonzero is not None:
            blocks = self.nonzero.reshape(self.mh, self.mw // simd, simd).any(axis=2).sum(axis=1)
            per_group = blocks.reshape(self.mh // pe, pe).max(axis=1)
            return int(max(1, per_group.sum()) * self.nvec)
        return int((self.mh // pe) * (self.mw // simd) * self.nvec)

    def weight_bram(self, pe: int, simd: int) -> int:
        """FINN MVAU bram_estimation (internal_decoupled, ram_style auto): the ladder."""
        omega = self.wmem(pe, simd)
        return bram_ladder(omega, simd * self.weight_bits * pe, (18, 36, 9))

    def threshold_bits(self) -> int:
        if not self.out_bits:
            return 0
        return self.mh * (2 ** self.out_bits - 1) * self.acc_bits

    def resources(self, pe: int = 1, simd: int = 1, res_type: str = "lut",
                  dsp_block: str = "DSP48E2") -> dict[str, Any]:
        """LUT: FINN hls/matrixvectoractivation_hls.py:58 (FINN-R constants c0=300, c1=1.1;
        c2=0 for BRAM weights; threshold LUTs 0 for ram_style_thresholds=block).
        DSP: P*Q*ceil((W+A)/48) if res_type == "dsp" (:121)."""
        P, Q, W, A = pe, simd, self.w_bits, self.a_bits
        mult = 0 if res_type == "dsp" else Q * (2 * math.ceil((W + A) / 6) - 1) * (W + A)
        adder = (W + A) * (2 * Q - 1)
        lut = int(300 + 1.1 * (P * (mult + adder + self.acc_bits)) + 0)
        codebook_luts = P * Q * W * math.ceil(self.codebook / 64) if self.codebook else 0
        dsp = P * Q * math.ceil((W + A) / 48) if res_type == "dsp" else 0
        wb = self.weight_bram(pe, simd)
        tb = math.ceil(self.threshold_bits() / 18432)  # OUR addition: threshold memory
        return _res(lut + codebook_luts, wb + tb, 0, dsp, bram_weights=wb, bram_thresholds=tb,
                    lut_codebook=codebook_luts)


# ------------------------------------------------------------------------------ VVAU
@dataclass
class VVAU(Stage):
    """Vector-vector-activation unit: depthwise conv (PE over channels, SIMD over k_h*k_w).
    FINN vectorvectoractivation.py:389 (cycles), :309/:328 (BRAM), hls/...:51 (LUT)."""

    ch: int = 1
    k: int = 1  # k_h * k_w
    nvec: int = 1
    w_bits: int = 8
    a_bits: int = 8
    a_signed: bool = True
    out_bits: int | None = None
    mem_bits: int | None = None
    codebook: int = 0
    unit: ClassVar[str] = "VVAU"
    folds: ClassVar[tuple[str, ...]] = ("PE", "SIMD")

    def __post_init__(self) -> None:
        self.weight_bits = self.mem_bits or self.w_bits
        self.acc_bits = acc_bits_bound(self.k, self.w_bits, self.a_bits, self.a_signed)

    @property
    def pe_range(self) -> int:
        return self.ch

    @property
    def simd_range(self) -> int:
        return self.k

    def _simd_label(self) -> str:
        return "k_h*k_w"

    @property
    def MW(self) -> int:  # noqa: N802 - report k*k*ch like FINN's matrix view
        return self.k

    def wmem(self, pe: int, simd: int) -> int:
        return (self.k * self.ch // pe) // simd

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int((self.ch * self.k) / pe / simd * self.nvec)

    def resources(self, pe: int = 1, simd: int = 1, res_type: str = "lut",
                  dsp_block: str = "DSP48E2") -> dict[str, Any]:
        P, Q, W, A = pe, simd, self.w_bits, self.a_bits
        omega = self.wmem(pe, simd)
        lutram = omega <= 128  # ram_style auto: FINN uses LUTRAM when WMEM <= 128
        wb = 0 if lutram else bram_ladder(omega, Q * self.weight_bits * P, (16, 32, 8))
        c2 = P * Q * self.weight_bits * math.ceil(omega / 64) if lutram else 0
        mult = 0 if res_type == "dsp" else Q * (2 * math.ceil((W + A) / 6) - 1) * (W + A)
        adder = (W + A) * (2 * Q - 1)
        # thresholds (TMEM/64 LUTRAMs each) and comparators, counted whenever there is an
        # activation (hls/vectorvectoractivation_hls.py: "TODO - add ram_style_threshold")
        thr = comp = 0.0
        if self.out_bits:
            thr = (2 ** self.out_bits - 1) * self.acc_bits * (self.ch / pe) / 64
            comp = (2 ** self.out_bits - 1) * self.acc_bits
        lut = int(300 + 1.1 * (P * (mult + adder + self.acc_bits + thr + comp)) + c2)
        codebook_luts = P * Q * W * math.ceil(self.codebook / 64) if self.codebook else 0
        dsp = P * math.ceil((W + A) / 48) if res_type == "dsp" else 0
        return _res(lut + codebook_luts, wb, 0, dsp, bram_weights=wb, bram_thresholds=0,
                    lut_codebook=codebook_luts)


# ------------------------------------------------------------------------------ SWG
@dataclass
class SWG(Stage):
    """ConvolutionInputGenerator (HLS, 2-D): sliding windows out of the pixel stream.
    Cycles: hls/convolutioninputgenerator_hls.py:135; LUT/BRAM (ram_style distributed):
    :183/:242.  ``depthwise`` SWGs feed a VVAU (SIMD there is tied to the VVAU's PE)."""

    ch: int = 1
    ifm: tuple[int, int] = (1, 1)
    ofm: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    a_bits: int = 8
    depthwise: bool = False
    unit: ClassVar[str] = "SWG"
    folds: ClassVar[tuple[str, ...]] = ("SIMD",)

    @property
    def simd_range(self) -> int:
        return self.ch

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        cf = self.ch / simd
        kh, kw = self.kernel
        cw = self.ofm[1] * kw * kh * cf
        cr = self.stride[1] * self.ifm[1] * cf
        return int(self.ifm[1] * kh * self.dilation[0] * cf + self.ofm[0] * max(cw, cr))

    def resources(self, pe: int = 1, simd: int = 1, res_type: str = "lut",
                  dsp_block: str = "DSP48E2") -> dict[str, Any]:
        # FINN reads IFMDim[0], ConvKernelDim[0], Stride[0] (square maps assumed there)
        k, s = self.kernel[0], self.stride[0]
        ram_luts = (k + s) * simd * self.a_bits * math.ceil(self.ifm[0] * self.ch / simd / 64)
        return _res(300 + ram_luts)


# ------------------------------------------------------------------------------ PE units
@dataclass
class _Streaming(Stage):
    """A unit that streams ``pixels`` x ``ch`` values, ``PE`` channels per cycle."""

    ch: int = 1
    pixels: int = 1
    folds: ClassVar[tuple[str, ...]] = ("PE",)

    @property
    def pe_range(self) -> int:
        return self.ch

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.pixels * self.ch // pe)


@dataclass
class Thresholding(_Streaming):
    """Standalone thresholds (an activation / requantize not fused in an MVAU).  Cycles
    thresholding.py:193 (N*H*W*C/PE); LUT hls/thresholding_hls.py:99 (distributed:
    ``A*P + P*A*ceil(TMEM/64)``, A the output bits)."""

    out_bits: int = 8
    unit: ClassVar[str] = "Thresholding"

    def resources(self, pe: int = 1, simd: int = 1, res_type: str = "lut",
                  dsp_block: str = "DSP48E2") -> dict[str, Any]:
        a = self.out_bits
        return _res(a * pe + pe * a * math.ceil(self.ch // pe / 64))


@dataclass
class AddStreams(_Streaming):
    """Residual add of two streams (FINN AddStreams: N*H*W*C/PE cycles); no FINN resource
    estimate (returns 0)."""

    unit: ClassVar[str] = "AddStreams"


@dataclass
class DuplicateStreams(_Streaming):
    """Fork of a stream to several consumers (FINN DuplicateStreams: N*H*W*C/PE)."""

    unit: ClassVar[str] = "DuplicateStreams"


@dataclass
class GlobalAccPool(_Streaming):
    """Global average pool as FINN's GlobalAccPool: ``H*W*C/PE + C/PE`` cycles
    (globalaccpool.py get_exp_cycles: the folded input plus draining the sums); the
    division is folded into the next thresholds."""

    unit: ClassVar[str] = "GlobalAccPool"

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.pixels * self.ch // pe + self.ch // pe)


@dataclass
class StreamingMaxPool(Stage):
    """2-D max pool with kernel == stride (FINN streamingmaxpool.py:135): cycles
    ``int(ifm_dim**2 * (1 + 1/k**2))`` -- FINN's own "TODO: adjust inaccurate formula",
    which ignores C and PE; non-square maps use IFM_h*IFM_w.  No resource estimate in FINN."""

    ch: int = 1
    ifm: tuple[int, int] = (1, 1)
    k: int = 2
    unit: ClassVar[str] = "StreamingMaxPool"
    folds: ClassVar[tuple[str, ...]] = ("PE",)

    @property
    def pe_range(self) -> int:
        return self.ch

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.ifm[0] * self.ifm[1] * (1 + 1 / (self.k * self.k)))


@dataclass
class Pool(Stage):
    """Pool_Batch after a depthwise SWG (max pool with kernel != stride or padding,
    average pool): ``(C*k_prod/PE) * prod(out dims)`` (pool.py)."""

    ch: int = 1
    k_prod: int = 1
    out_pixels: int = 1
    unit: ClassVar[str] = "Pool"
    folds: ClassVar[tuple[str, ...]] = ("PE",)

    @property
    def pe_range(self) -> int:
        return self.ch

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.ch * self.k_prod / pe * self.out_pixels)


@dataclass
class FMPadding(Stage):
    """Zero padding before an SWG (FINN fmpadding.py:75): ``(C/SIMD) * OH_pad * OW_pad``.
    ``pixel_padding`` marks FINN's FMPixelPadding of a transposed conv (zeros inserted
    between pixels, then a stride-1 conv); same cycle formula on the padded map."""

    ch: int = 1
    out: tuple[int, int] = (1, 1)
    pixel_padding: bool = False
    unit: ClassVar[str] = "FMPadding"
    folds: ClassVar[tuple[str, ...]] = ("SIMD",)

    @property
    def simd_range(self) -> int:
        return self.ch

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.ch // simd * self.out[0] * self.out[1])


@dataclass
class StreamingConcat(Stage):
    """Channel concatenation (FINN StreamingConcat: one folded output word per cycle,
    ``pixels * sum(C) / SIMD``); SIMD must divide every input's channels."""

    chs: tuple[int, ...] = (1,)
    pixels: int = 1
    unit: ClassVar[str] = "StreamingConcat"
    folds: ClassVar[tuple[str, ...]] = ("SIMD",)

    @property
    def simd_range(self) -> int:
        return math.gcd(*self.chs)

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.pixels * sum(self.chs) // simd)


@dataclass
class Upsample(Stage):
    """Nearest-neighbour upsampling (FINN UpsampleNearestNeighbour: one output pixel of
    all channels per cycle, ``OH * OW``)."""

    ch: int = 1
    out: tuple[int, int] = (1, 1)
    unit: ClassVar[str] = "Upsample"

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.out[0] * self.out[1])


@dataclass
class LabelSelect(Stage):
    """Top-k label selection (FINN labelselect.py:182): ``Labels/PE`` cycles."""

    labels: int = 10
    unit: ClassVar[str] = "LabelSelect"
    folds: ClassVar[tuple[str, ...]] = ("PE",)

    @property
    def pe_range(self) -> int:
        return self.labels

    def _pe_label(self) -> str:
        return "Labels"

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(self.labels // pe)


@dataclass
class IODMA(Stage):
    """Input/output DMA between DRAM and the pipeline.  FINN has NO cycle model for IODMA
    (hwcustomop.py:181 returns 0); OUR model: ``ceil(bits / axi_bits)`` cycles (one bus
    word per cycle, no setup cost) and no resources estimated."""

    bits: int = 8
    axi_bits: int = 64
    unit: ClassVar[str] = "IODMA"

    def cycles(self, pe: int = 1, simd: int = 1) -> int:
        return int(math.ceil(self.bits / self.axi_bits))

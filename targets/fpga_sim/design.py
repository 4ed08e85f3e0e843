"""`build_design`: integer graph + `FpgaOptions` -> a simulated FINN-style dataflow design.

The graph is mapped to hardware stages (`mapping`), folded (user folding, else
SetFolding for ``target_fps``, else the fastest folding within ``budget``; `folding`),
and summarised as FINN's dataflow analysis does (analysis/fpgadataflow/
dataflow_performance.py, builder/build_dataflow_steps.py:489): II = max layer cycles,
FPS = fclk / II, latency = critical path = the largest sum of cycles along any path
(FINN's "very pessimistic" estimate: no overlap between layers), batch latency
``L + (N - 1) * II``.  All timings are SIMULATED estimates, not hardware measurements.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from compiler.ir import Graph

from .folding import (CHECKED_RESOURCES, Folding, apply_user_folding, fit_budget, set_folding,
                      target_cycles_for_fps, totals)
from .mapping import Pipeline, map_graph
from .options import RESOURCES, FpgaOptions, FpgaSimError
from .parts import Part, get_part

__all__ = ["LayerEstimate", "Design", "build_design", "design_from_pipeline"]


@dataclass
class LayerEstimate:
    """One hardware stage of the design with its folding, cycles and resources.

    ``MH``/``MW`` are FINN's matrix height/width for MVAU and VVAU (VVAU: channels and
    k_h*k_w); for other units the sizes of their PE and SIMD axes (channels, or 1).
    ``BRAM18`` = ``bram_weights`` (FINN's estimate) + ``bram_thresholds`` (ours)."""

    node: str
    unit: str
    MH: int
    MW: int
    PE: int
    SIMD: int
    cycles: int
    LUT: int
    BRAM18: int
    URAM: int
    DSP: int
    weight_bits: int
    acc_bits: int
    finn_name: str = ""
    bram_weights: int = 0
    bram_thresholds: int = 0


@dataclass
class Design:
    """A folded design on a part.  ``fits`` compares ``totals`` with ``limits`` (budget x part)."""

    layers: list[LayerEstimate]
    folding: Folding
    part: str
    fclk_mhz: float
    totals: dict[str, int]
    limits: dict[str, float]
    device: dict[str, float]
    fits: bool
    binding_resource: str | None
    folding_mode: str
    latency_cycles: int
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def ii_cycles(self) -> int:
        return max(l.cycles for l in self.layers)

    @property
    def bottleneck(self) -> str:
        return max(self.layers, key=lambda l: l.cycles).node

    @property
    def fps(self) -> float:
        return self.fclk_mhz * 1e6 / self.ii_cycles

    @property
    def latency_s(self) -> float:
        return self.latency_cycles / (self.fclk_mhz * 1e6)

    def batch_latency_s(self, n: int) -> float:
        """Time for ``n`` frames back to back: ``L + (n - 1) * II`` (SIMULATED)."""
        if n < 1:
            raise FpgaSimError(f"batch size must be >= 1, got {n}")
        return (self.latency_cycles + (n - 1) * self.ii_cycles) / (self.fclk_mhz * 1e6)

    @property
    def utilization(self) -> dict[str, float]:
        """Used fraction of the whole device per resource (0 when the part has none)."""
        return {r: (self.totals[r] / self.device[r]) if self.device.get(r) else 0.0
                for r in CHECKED_RESOURCES}

    def finn_folding(self) -> dict[str, dict[str, int]]:
        """The folding as a FINN-style ``folding_config.json`` dict (FINN node names such as
        ``MVAU_hls_0``); `FpgaOptions(folding=...)` accepts it back."""
        out: dict[str, dict[str, int]] = {"Defaults": {}}
        for l in self.layers:
            out[l.finn_name or l.node] = {"PE": l.PE, "SIMD": l.SIMD}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"timing": "SIMULATED", "part": self.part, "fclk_mhz": self.fclk_mhz,
                "folding_mode": self.folding_mode,
                "layers": [asdict(l) for l in self.layers], "folding": self.folding,
                "ii_cycles": self.ii_cycles, "fps": self.fps, "latency_cycles": self.latency_cycles,
                "latency_s": self.latency_s, "bottleneck": self.bottleneck,
                "totals": dict(self.totals), "limits": dict(self.limits),
                "device": dict(self.device),
                "utilization_pct": {r: round(100 * u, 2) for r, u in self.utilization.items()},
                "fits": self.fits, "binding_resource": self.binding_resource,
                "options": self.options}

    def table(self) -> str:
        cols = ["node", "unit", "MH", "MW", "PE", "SIMD", "cycles", "LUT", "BRAM18", "URAM",
                "DSP", "wbits", "acc"]
        rows = [[l.node, l.unit, l.MH, l.MW, l.PE, l.SIMD, l.cycles, l.LUT, l.BRAM18, l.URAM,
                 l.DSP, l.weight_bits or "", l.acc_bits or ""] for l in self.layers]
        t = self.totals
        rows.append(["TOTAL", "", "", "", "", "", "", t["LUT"], t["BRAM_18K"], t["URAM"], t["DSP"],
                     "", ""])
        pct = self.utilization
        rows.append(["% of part", "", "", "", "", "", "", f"{100 * pct['LUT']:.1f}",
                     f"{100 * pct['BRAM_18K']:.1f}", f"{100 * pct['URAM']:.1f}",
                     f"{100 * pct['DSP']:.1f}", "", ""])
        rows = [[str(c) for c in r] for r in rows]
        width = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        fmt = lambda r: "  ".join(c.rjust(w) if i > 1 else c.ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, width)))
        lines = [fmt(cols), fmt(["-" * w for w in width])] + [fmt(r) for r in rows]
        fit = "yes" if self.fits else "NO"
        over = [r for r in CHECKED_RESOURCES if self.totals[r] > self.limits[r]]
        lines += [
            f"part {self.part} at {self.fclk_mhz:g} MHz, folding: {self.folding_mode}; "
            f"fits the budget: {fit}" + (f" (over: {', '.join(over)})" if over else "")
            + (f"; binding resource: {self.binding_resource}" if self.binding_resource else ""),
            f"bottleneck: {self.bottleneck}  II {self.ii_cycles} cycles  "
            f"FPS {self.fps:,.1f} (SIMULATED)  latency {self.latency_cycles} cycles = "
            f"{self.latency_s * 1e3:.4f} ms (SIMULATED, critical path, no layer overlap)",
        ]
        return "\n".join(lines)


def _critical_path(pipeline: Pipeline, cycles: dict[str, int]) -> int:
    """FINN critical_path_cycles: latency(n) = cycles(n) + max latency of its predecessors."""
    lat: dict[str, int] = {}
    for s in pipeline.stages:          # stages are in topological order
        lat[s.node] = cycles[s.node] + max((lat[p] for p in pipeline.preds.get(s.node, [])
                                            if p in lat), default=0)
    return max(lat.values())


def design_from_pipeline(pipeline: Pipeline, folding: Folding, part: Part, options: FpgaOptions,
                         mode: str, binding: str | None = None) -> Design:
    layers = []
    for s in pipeline.stages:
        pe, simd = folding[s.node]["PE"], folding[s.node]["SIMD"]
        res = s.resources(pe, simd, res_type=options.res_type, dsp_block=part.dsp_block)
        layers.append(LayerEstimate(
            s.node, s.unit, s.MH, s.MW, pe, simd, s.cycles(pe, simd), res["LUT"], res["BRAM_18K"],
            res["URAM"], res["DSP"], s.weight_bits, s.acc_bits, pipeline.finn_names.get(s.node, ""),
            res.get("bram_weights", 0), res.get("bram_thresholds", 0)))
    used = totals(pipeline, folding, options.res_type, part.dsp_block)
    limits = part.limits(options.budget)
    over = [r for r in CHECKED_RESOURCES if used[r] > limits[r]]
    if binding is None and over:
        binding = max(over, key=lambda r: used[r] / max(limits[r], 1e-9))
    cyc = {l.node: l.cycles for l in layers}
    return Design(layers, {k: dict(v) for k, v in folding.items()}, part.name, options.fclk_mhz,
                  used, limits, dict(part.resources), not over, binding, mode,
                  _critical_path(pipeline, cyc), options.to_dict())


def build_design(graph: Graph, options: FpgaOptions | None = None) -> Design:
    """Map, fold and estimate ``graph`` (the integer graph of ``quantize``) on ``options.part``.

    Folding: ``options.folding`` if given; else SetFolding for ``options.target_fps``;
    else the fastest folding within ``options.budget``.  Raises FpgaSimError on a float
    graph, an unsupported op, a folding breaking divisibility, an unknown part or a
    design that fits no folding."""
    options = options or FpgaOptions()
    part = get_part(options.part)
    pipeline = map_graph(graph, axi_bits=part.axi_bits, sparse_skip=options.sparse_skip)
    binding = None
    if options.folding is not None:
        folding, mode = apply_user_folding(pipeline, options.folding), "user"
    elif options.target_fps is not None:
        t = target_cycles_for_fps(options.fclk_mhz, options.target_fps)
        folding = set_folding(pipeline, t, options.mvau_wwidth_max)
        mode = f"SetFolding(target_fps={options.target_fps:g}, {t} cycles)"
    else:
        r = fit_budget(pipeline, part, options.budget, res_type=options.res_type,
                       mvau_wwidth_max=options.mvau_wwidth_max)
        folding, binding = r.folding, r.binding_resource
        mode = f"budget (fastest fit, target {r.target_cycles} cycles)"
    d = design_from_pipeline(pipeline, folding, part, options, mode, binding)
    return d

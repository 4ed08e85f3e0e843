"""FPGA devices the simulator knows, with the resource counts a design must fit in.

Counts are FINN's own table (Xilinx/finn util/platforms.py ``compute_resources``:
LUT, FF, BRAM_18K, URAM, DSP), which FINN's floorplanner uses as the whole device;
see /work/shared/notes/fpga-sim.md section 5.  A user can give their own device as a
dict of resource counts (`custom_part`).  ``axi_bits`` is the width of the DMA bus
used by our IODMA stage (64 on Zynq-7000 HP ports, 128 on Zynq UltraScale+ and Alveo;
VTA's board configs use the same).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .options import RESOURCES, FpgaSimError, resource_name

__all__ = ["Part", "PARTS", "ALIASES", "get_part", "custom_part"]


@dataclass(frozen=True)
class Part:
    """One device: resource counts (keys of `RESOURCES`), DSP block type and DMA bus width."""

    name: str
    board: str
    resources: dict[str, float] = field(default_factory=dict)
    dsp_block: str = "DSP48E2"
    axi_bits: int = 128

    def limits(self, budget: Mapping[str, float]) -> dict[str, float]:
        """Usable count per resource: device count x budget fraction."""
        return {r: self.resources.get(r, 0) * budget.get(r, 1.0) for r in RESOURCES}


PARTS: dict[str, Part] = {
    # FINN Zynq7020_Platform (Pynq-Z1/Z2, xc7z020clg400-1)
    "xc7z020": Part("xc7z020", "PYNQ-Z1/Z2",
                    {"LUT": 53200, "FF": 106400, "BRAM_18K": 280, "URAM": 0, "DSP": 220},
                    dsp_block="DSP48E1", axi_bits=64),
    # FINN ZU3EG_Platform (Ultra96, xczu3eg-sbva484-1-e)
    "xczu3eg": Part("xczu3eg", "Ultra96",
                    {"LUT": 71000, "FF": 142000, "BRAM_18K": 412, "URAM": 0, "DSP": 360}),
    # FINN ZU7EV_Platform (ZCU104, xczu7ev-ffvc1156-2-e)
    "xczu7ev": Part("xczu7ev", "ZCU104",
                    {"LUT": 230000, "FF": 460000, "BRAM_18K": 610, "URAM": 92, "DSP": 1728}),
    # FINN Alveo_NxU250_Platform: 4 SLRs x [375000, 750000, 1152, 320, 2880]
    "xcu250": Part("xcu250", "Alveo U250",
                   {"LUT": 4 * 375000, "FF": 4 * 750000, "BRAM_18K": 4 * 1152, "URAM": 4 * 320,
                    "DSP": 4 * 2880}, axi_bits=512),
}

#: Board names accepted for a part (lower case).
ALIASES: dict[str, str] = {"pynq-z1": "xc7z020", "pynq-z2": "xc7z020", "ultra96": "xczu3eg",
                           "zcu104": "xczu7ev", "u250": "xcu250"}


def get_part(part: str | Mapping[str, Any] | Part) -> Part:
    """The `Part` for a name, board alias or dict of resource counts; else FpgaSimError."""
    if isinstance(part, Part):
        return part
    if isinstance(part, Mapping):
        return _custom_from(part)
    key = str(part).strip().lower()
    key = ALIASES.get(key, key)
    if key not in PARTS:
        raise FpgaSimError(f"unknown FPGA part {part!r}; known parts: "
                           + ", ".join(f"{p} ({PARTS[p].board})" for p in sorted(PARTS))
                           + " (or give a dict of resource counts)")
    return PARTS[key]


def custom_part(counts: Mapping[str, Any]) -> dict[str, float]:
    """Validate a user device ``{"LUT": n, "BRAM_18K": n, ...}`` (plus optional "name",
    "axi_bits", "dsp_block"); returns the normalised dict (kept in options as a dict)."""
    if not isinstance(counts, Mapping):
        raise FpgaSimError(f"option 'part': a custom part must be a dict of resource counts, "
                           f"got {type(counts).__name__}")
    out: dict[str, Any] = {}
    for k, v in counts.items():
        if k in ("name", "dsp_block"):
            out[k] = str(v)
            continue
        if k == "axi_bits":
            if not isinstance(v, int) or v < 8 or v % 8:
                raise FpgaSimError(f"option 'part': axi_bits={v!r} must be a multiple of 8")
            out[k] = v
            continue
        name = resource_name(k, option="part")
        try:
            n = float(v)
        except (TypeError, ValueError):
            raise FpgaSimError(f"option 'part': {k}={v!r} is not a number") from None
        if n < 0:
            raise FpgaSimError(f"option 'part': {k}={n} must be >= 0")
        out[name] = n
    missing = [r for r in ("LUT", "BRAM_18K") if r not in out]
    if missing:
        raise FpgaSimError(f"option 'part': a custom part needs at least LUT and BRAM_18K counts; "
                           f"missing {', '.join(missing)}")
    return out


def _custom_from(counts: Mapping[str, Any]) -> Part:
    c = custom_part(counts)
    res = {r: float(c.get(r, 0)) for r in RESOURCES}
    return Part(c.get("name", "custom"), "user budget", res,
                dsp_block=c.get("dsp_block", "DSP48E2"), axi_bits=int(c.get("axi_bits", 64)))

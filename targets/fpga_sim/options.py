"""Options of the ``fpga-sim`` target, validated once so every later stage can trust them.

`FpgaOptions` is frozen: ``configure(...)`` on the target builds a new one with
`FpgaOptions.from_mapping` (CLI strings such as ``"fclk_mhz=150"`` or
``"budget=lut:0.7,bram:0.8"`` are accepted as well as Python values) or `replace`.
Every problem raises `FpgaSimError` naming the option and what is allowed, so a bad
``--target-option`` fails before anything is built.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

__all__ = ["FpgaSimError", "FpgaOptions", "DEFAULT_BUDGET", "RESOURCES"]


class FpgaSimError(ValueError):
    """Base of every fpga-sim error: bad option, unsupported op, impossible folding..."""


#: Resource kinds, in FINN's order (util/platforms.py `compute_resources`).
RESOURCES: tuple[str, ...] = ("LUT", "FF", "BRAM_18K", "URAM", "DSP")

#: FINN's floorplanner headroom (util/platforms.py:40 DEFAULT_RES_LIMITS), fraction of the part.
DEFAULT_BUDGET: dict[str, float] = {"LUT": 0.7, "FF": 0.5, "BRAM_18K": 0.8, "URAM": 0.8, "DSP": 0.8}

_RES_ALIASES = {"lut": "LUT", "luts": "LUT", "ff": "FF", "bram": "BRAM_18K", "bram18": "BRAM_18K",
                "bram_18k": "BRAM_18K", "uram": "URAM", "dsp": "DSP"}
_RES_TYPES = ("lut", "dsp")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def resource_name(key: str, option: str = "budget") -> str:
    """Canonical resource name for ``key`` (``"bram"`` -> ``"BRAM_18K"``); else FpgaSimError."""
    canon = _RES_ALIASES.get(str(key).strip().lower())
    if canon is None:
        raise FpgaSimError(f"option {option!r}: unknown resource {key!r}; allowed: "
                           f"{', '.join(RESOURCES)} (aliases: {', '.join(sorted(_RES_ALIASES))})")
    return canon


def _parse_budget(value: Any) -> dict[str, float]:
    """``{"LUT": 0.7, ...}`` or ``"lut:0.7,bram:0.8"``; missing resources keep FINN's default."""
    if isinstance(value, str):
        items = {}
        for part in filter(None, (p.strip() for p in value.split(","))):
            if ":" not in part and "=" not in part:
                raise FpgaSimError(f"option 'budget': {part!r} is not 'resource:fraction' "
                                   f"(e.g. budget=lut:0.7,bram:0.8)")
            k, v = part.replace("=", ":").split(":", 1)
            items[k] = v
        value = items
    if not isinstance(value, Mapping):
        raise FpgaSimError(f"option 'budget': expected a mapping resource -> fraction or "
                           f"'lut:0.7,bram:0.8', got {type(value).__name__}")
    out = dict(DEFAULT_BUDGET)
    for k, v in value.items():
        name = resource_name(k)
        try:
            frac = float(v)
        except (TypeError, ValueError):
            raise FpgaSimError(f"option 'budget': {k}={v!r} is not a number") from None
        if not (0.0 < frac <= 1.0) or math.isnan(frac):
            raise FpgaSimError(f"option 'budget': {k}={frac} must be a fraction in (0, 1]")
        out[name] = frac
    return out


def _parse_folding(value: Any) -> dict[str, dict[str, int]] | str | None:
    """A node-name -> {"PE": .., "SIMD": ..} dict, or a path to a FINN folding JSON (checked to exist)."""
    if value is None:
        return None
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        if not Path(value).is_file():
            raise FpgaSimError(f"option 'folding': {value!r} is not a file (expected a path to a "
                               f"FINN-style folding JSON or a dict keyed by node name)")
        return value
    if not isinstance(value, Mapping):
        raise FpgaSimError(f"option 'folding': expected a dict keyed by node name or a JSON path, "
                           f"got {type(value).__name__}")
    out: dict[str, dict[str, int]] = {}
    for node, attrs in value.items():
        if not isinstance(attrs, Mapping):
            raise FpgaSimError(f"option 'folding': entry {node!r} must be a dict like "
                               f"{{'PE': 4, 'SIMD': 8}}, got {attrs!r}")
        entry = {}
        for k, v in attrs.items():
            if k in ("PE", "SIMD"):
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise FpgaSimError(f"option 'folding': {node}.{k}={v!r} must be a positive int")
                entry[k] = int(v)
            # Other FINN attributes (ram_style, mem_mode, ...) are accepted and ignored.
        out[str(node)] = entry
    return out


def _parse_positive(name: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise FpgaSimError(f"option {name!r}: {value!r} is not a number") from None
    if not (f > 0) or math.isinf(f):
        raise FpgaSimError(f"option {name!r}: {f} must be a positive finite number")
    return f


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise FpgaSimError(f"option {name!r}: {value!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class FpgaOptions:
    """Settings of one simulated FPGA design.

    ``part``: a known device name (see `targets.fpga_sim.parts.PARTS`) or a dict of resource
    counts ``{"LUT": 50000, "BRAM_18K": 200, ...}`` for a custom device.
    ``folding`` fixes PE/SIMD per node; else ``target_fps`` runs FINN's SetFolding; else the
    fastest folding that fits ``budget`` (fractions of the part, FINN's defaults) is searched.
    ``res_type`` "lut" counts multipliers in LUTs (FINN's HLS default), "dsp" in DSP slices.
    ``sparse_skip`` is OUR extension (not FINN): MVAUs skip all-zero SIMD blocks of weights.
    ``mvau_wwidth_max``: SetFolding's cap on SIMD * weight bits (FINN default 36).
    """

    part: str | dict[str, float] = "xc7z020"
    fclk_mhz: float = 100.0
    folding: dict[str, dict[str, int]] | str | None = None
    target_fps: float | None = None
    budget: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BUDGET))
    res_type: Literal["lut", "dsp"] = "lut"
    sparse_skip: bool = False
    mvau_wwidth_max: int = 36

    def __post_init__(self) -> None:
        # Validate and normalise even when constructed directly (not only via from_mapping).
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("part", _parse_part(self.part))
        set_("fclk_mhz", _parse_positive("fclk_mhz", self.fclk_mhz))
        set_("folding", _parse_folding(self.folding))
        if self.target_fps is not None:
            set_("target_fps", _parse_positive("target_fps", self.target_fps))
        set_("budget", _parse_budget(self.budget))
        rt = str(self.res_type).strip().lower()
        if rt not in _RES_TYPES:
            raise FpgaSimError(f"option 'res_type': {self.res_type!r}; allowed: {', '.join(_RES_TYPES)}")
        set_("res_type", rt)
        set_("sparse_skip", _parse_bool("sparse_skip", self.sparse_skip))
        try:
            w = int(str(self.mvau_wwidth_max))
        except ValueError:
            raise FpgaSimError(f"option 'mvau_wwidth_max': {self.mvau_wwidth_max!r} is not an int") from None
        if w < 1:
            raise FpgaSimError(f"option 'mvau_wwidth_max': {w} must be >= 1")
        set_("mvau_wwidth_max", w)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None = None, base: "FpgaOptions | None" = None
                     ) -> "FpgaOptions":
        """Options from ``d`` (Python values or CLI strings) on top of ``base`` (or the defaults).

        An unknown key raises FpgaSimError listing the known options.
        """
        d = dict(d or {})
        known = cls.field_names()
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise FpgaSimError(f"unknown fpga-sim option(s) {', '.join(map(repr, unknown))}; "
                               f"allowed: {', '.join(known)}")
        if "target_fps" in d and isinstance(d["target_fps"], str) and \
                d["target_fps"].strip().lower() in ("", "none"):
            d["target_fps"] = None
        if "folding" in d and isinstance(d["folding"], str) and d["folding"].strip().startswith("{"):
            try:
                d["folding"] = json.loads(d["folding"])
            except json.JSONDecodeError as e:
                raise FpgaSimError(f"option 'folding': inline JSON does not parse: {e}") from None
        if "part" in d and isinstance(d["part"], str) and d["part"].strip().startswith("{"):
            try:
                d["part"] = json.loads(d["part"])
            except json.JSONDecodeError as e:
                raise FpgaSimError(f"option 'part': inline JSON does not parse: {e}") from None
        base = base or cls()
        return dataclasses.replace(base, **d)

    def replace(self, **kw: Any) -> "FpgaOptions":
        """A copy with ``kw`` changed (validated like `from_mapping`)."""
        return self.from_mapping(kw, base=self)

    def to_dict(self) -> dict[str, Any]:
        return {f: (dict(v) if isinstance(v, dict) else v)
                for f in self.field_names() for v in [getattr(self, f)]}


def _parse_part(value: Any) -> str | dict[str, float]:
    """A known part name, a path to a JSON dict of resource counts, or such a dict."""
    from .parts import ALIASES, PARTS, custom_part  # local import: parts imports this module

    if isinstance(value, str):
        name = value.strip().lower()
        name = ALIASES.get(name, name)
        if name in PARTS:
            return name
        if name.endswith(".json") and Path(value).is_file():
            return custom_part(json.loads(Path(value).read_text()))
        raise FpgaSimError(f"option 'part': unknown part {value!r}; known parts: "
                           f"{', '.join(sorted(PARTS))}, boards {', '.join(sorted(ALIASES))} (or a dict / JSON file of resource counts)")
    if isinstance(value, Mapping):
        return custom_part(value)
    raise FpgaSimError(f"option 'part': expected a part name or a dict of resource counts, "
                       f"got {type(value).__name__}")

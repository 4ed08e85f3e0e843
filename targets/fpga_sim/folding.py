"""Folding (PE/SIMD per stage): given by the user, from a target FPS, or from a budget.

* `apply_user_folding`: a dict keyed by stage name, graph node name or FINN node name
  (``MVAU_hls_0``, the names of a FINN ``folding_config.json``; its ``"Defaults"`` entry
  and non-PE/SIMD attributes are ignored), validated with FINN's divisibility rules.
* `set_folding`: FINN's SetFolding (transformation/fpgadataflow/set_folding.py) for a
  target cycles-per-frame, with its two-pass relaxation (notes section 1.5).
* `fit_budget`: the fastest SetFolding result whose resources fit ``budget x part``:
  bisection over the target cycles (SetFolding's II only grows with the target, and
  resources shrink with it up to its discrete steps).  Reports the binding resource: the
  one the next faster folding would overflow.

FINN's node estimates have no flip-flop model, so FF is never checked.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .mapping import Pipeline
from .options import RESOURCES, FpgaSimError
from .parts import Part
from .stages import MVAU, SWG, VVAU, FMPadding, LabelSelect, Pool, Stage, StreamingConcat, divisors

__all__ = ["Folding", "apply_user_folding", "set_folding", "fit_budget", "totals", "max_cycles",
           "BudgetResult", "CHECKED_RESOURCES"]

Folding = dict[str, dict[str, int]]

#: Resources with a FINN estimate (no FF model in FINN's node_res_estimation).
CHECKED_RESOURCES: tuple[str, ...] = ("LUT", "BRAM_18K", "URAM", "DSP")


def _pe_simd(folding: Folding, stage: Stage) -> tuple[int, int]:
    f = folding.get(stage.node, {})
    return int(f.get("PE", 1)), int(f.get("SIMD", 1))


def max_cycles(pipeline: Pipeline, folding: Folding) -> int:
    return max(s.cycles(*_pe_simd(folding, s)) for s in pipeline.stages)


def totals(pipeline: Pipeline, folding: Folding, res_type: str = "lut",
           dsp_block: str = "DSP48E2") -> dict[str, int]:
    out = {r: 0 for r in RESOURCES}
    for s in pipeline.stages:
        res = s.resources(*_pe_simd(folding, s), res_type=res_type, dsp_block=dsp_block)
        for r in CHECKED_RESOURCES:
            out[r] += int(res.get(r, 0))
    return out


def unity(pipeline: Pipeline) -> Folding:
    return {s.node: {"PE": 1, "SIMD": 1} for s in pipeline.stages}


# ------------------------------------------------------------------------------ user
def apply_user_folding(pipeline: Pipeline, spec: Mapping[str, Any] | str | Path) -> Folding:
    """Validated folding from ``spec`` (dict or FINN folding JSON path); stages it does not
    name keep PE = SIMD = 1.  Unknown names or broken divisibility raise FpgaSimError."""
    if isinstance(spec, (str, Path)):
        try:
            spec = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FpgaSimError(f"option 'folding': cannot read folding JSON {str(spec)!r}: {e}") from None
    if not isinstance(spec, Mapping):
        raise FpgaSimError("option 'folding': expected a dict keyed by node name")
    by_name: dict[str, Stage] = {s.node: s for s in pipeline.stages}
    by_name.update({fn: pipeline.stage(sn) for sn, fn in pipeline.finn_names.items()})
    # a graph node name (e.g. the conv) selects its main unit (the stage named exactly so)
    folding = unity(pipeline)
    for key, attrs in spec.items():
        if key == "Defaults":
            continue
        stage = by_name.get(key)
        if stage is None:
            known = ", ".join(s.node for s in pipeline.stages)
            raise FpgaSimError(f"option 'folding': {key!r} names no hardware stage; stages: {known}"
                               f" (or FINN names {', '.join(pipeline.finn_names.values())})")
        pe, simd = int(attrs.get("PE", 1)), int(attrs.get("SIMD", 1))
        _check(stage, pe, simd)
        folding[stage.node] = {"PE": pe, "SIMD": simd}
    return folding


def _check(stage: Stage, pe: int, simd: int) -> None:
    # units that fold only one axis silently keep the other at 1 in FINN; refuse it here
    stage.check(pe if "PE" in stage.folds else 1, simd if "SIMD" in stage.folds else 1)
    if ("PE" not in stage.folds and pe != 1) or ("SIMD" not in stage.folds and simd != 1):
        raise FpgaSimError(f"layer {stage.node!r} ({stage.unit}): has no "
                           f"{'PE' if pe != 1 and 'PE' not in stage.folds else 'SIMD'} attribute "
                           f"(folds {', '.join(stage.folds) or 'nothing'}); got PE={pe}, SIMD={simd}")


# ------------------------------------------------------------------------------ SetFolding
def _optimize(stage: Stage, fold: dict[str, int], attr: str, max_val: int, target: int) -> None:
    """FINN ``optimize_attribute_val``: attr = 1, then ascending divisors of max_val until
    ``cycles < target`` (strictly); ends at max_val if none qualifies."""
    fold[attr] = 1
    for val in divisors(max_val):
        fold[attr] = val
        if stage.cycles(fold["PE"], fold["SIMD"]) < target:
            break


def _one_pass(pipeline: Pipeline, target: int, mvau_wwidth_max: int) -> Folding:
    folding = unity(pipeline)
    consumer_of: dict[str, Stage] = {}
    for s in pipeline.stages:
        for p in pipeline.preds.get(s.node, []):
            consumer_of.setdefault(p, s)
    producer = {s.node: pipeline.preds.get(s.node, []) for s in pipeline.stages}
    for s in pipeline.stages:
        fold = folding[s.node]
        if isinstance(s, MVAU):
            # SIMD first, capped by the weight stream width (mvau_wwidth_max), then PE
            for simd in divisors(s.mw):
                prev = fold["SIMD"]
                fold["SIMD"] = simd
                if s.cycles(1, simd) < target:
                    break
                if s.w_bits * simd > mvau_wwidth_max:
                    fold["SIMD"] = prev
                    break
            _optimize(s, fold, "PE", s.mh, target)
        elif isinstance(s, (VVAU, Pool)):
            _optimize(s, fold, "PE", s.pe_range, target)
            if isinstance(s, VVAU) and fold["PE"] == s.pe_range and s.cycles(fold["PE"], 1) >= target:
                _optimize(s, fold, "SIMD", s.simd_range, target)
            # the depthwise SWG feeding it streams PE channels: SIMD = PE
            for p in producer[s.node]:
                ps = pipeline.stage(p)
                if isinstance(ps, SWG) and ps.depthwise:
                    folding[p]["SIMD"] = fold["PE"]
        elif isinstance(s, SWG):
            if not s.depthwise:
                _optimize(s, fold, "SIMD", s.ch, target)
        elif isinstance(s, (FMPadding, StreamingConcat)):   # FINN simd_ops (+ concat: ours)
            _optimize(s, fold, "SIMD", s.simd_range, target)
        elif isinstance(s, LabelSelect) or s.folds == ("PE",) and s.unit != "StreamingMaxPool":
            _optimize(s, fold, "PE", s.pe_range, target)
        # StreamingMaxPool, IODMA, Upsample: FINN does not fold them
    # a depthwise SWG whose consumer never set it keeps SIMD = 1; all checked
    for s in pipeline.stages:
        _check(s, folding[s.node]["PE"], folding[s.node]["SIMD"])
    return folding


def set_folding(pipeline: Pipeline, target_cycles: int, mvau_wwidth_max: int = 36,
                two_pass_relaxation: bool = True) -> Folding:
    """FINN's SetFolding for ``target_cycles`` per frame.  With two-pass relaxation, a
    missed target reruns once with target = the achieved max cycles (balances the
    pipeline and lowers resources)."""
    if target_cycles < 1:
        raise FpgaSimError(f"target cycles per frame must be >= 1, got {target_cycles}")
    folding = _one_pass(pipeline, int(target_cycles), mvau_wwidth_max)
    if two_pass_relaxation:
        achieved = max_cycles(pipeline, folding)
        if achieved > target_cycles:
            folding = _one_pass(pipeline, achieved, mvau_wwidth_max)
    return folding


def target_cycles_for_fps(fclk_mhz: float, target_fps: float) -> int:
    """FINN build_dataflow_config.py:381: ``int(fclk / target_fps)``."""
    return max(1, int(fclk_mhz * 1e6 / target_fps))


# ------------------------------------------------------------------------------ budget
@dataclass
class BudgetResult:
    folding: Folding
    fits: bool
    binding_resource: str | None   # what a faster design overflows (None: none is faster)
    target_cycles: int


def _over(used: Mapping[str, int], limits: Mapping[str, float]) -> list[str]:
    return [r for r in CHECKED_RESOURCES if used.get(r, 0) > limits.get(r, 0)]


def fit_budget(pipeline: Pipeline, part: Part, budget: Mapping[str, float], *,
               res_type: str = "lut", mvau_wwidth_max: int = 36) -> BudgetResult:
    """Fastest SetFolding result that fits ``part`` within ``budget`` fractions.

    FpgaSimError if even the slowest folding (PE = SIMD = 1 everywhere) does not fit."""
    limits = part.limits(budget)
    slow = unity(pipeline)
    slow_used = totals(pipeline, slow, res_type, part.dsp_block)
    over = _over(slow_used, limits)
    if over:
        detail = ", ".join(f"{r} {slow_used[r]} > {limits[r]:.0f}" for r in over)
        raise FpgaSimError(f"the design fits no folding on {part.name} ({part.board}) within the "
                           f"budget: even PE=SIMD=1 everywhere needs {detail}")

    def trial(t: int) -> tuple[Folding, dict[str, int], int]:
        f = set_folding(pipeline, t, mvau_wwidth_max)
        return f, totals(pipeline, f, res_type, part.dsp_block), max_cycles(pipeline, f)

    fastest = trial(1)                         # every unit as fast as SetFolding goes
    if not _over(fastest[1], limits):
        return BudgetResult(fastest[0], True, None, 1)
    hi = max_cycles(pipeline, slow) + 1       # target met at PE=SIMD=1: slowest folding
    lo = 1                                     # invariant: target lo does not fit
    best = trial(hi)
    if _over(best[1], limits):                 # SetFolding at its slowest may still differ
        best = (slow, slow_used, max_cycles(pipeline, slow))
    best_t = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f, used, ii = trial(mid)
        if _over(used, limits):
            lo = mid
        else:
            hi = mid
            if ii <= best[2]:
                best, best_t = (f, used, ii), mid
    # what binds: the resource a faster design overflows -- the next faster target (lo,
    # the largest failing one) if it is faster, else SetFolding's fastest design; None when
    # no failing design is faster (the fit already has SetFolding's best II)
    binding = None
    _, used_lo, ii_lo = trial(lo)
    for used, ii in ((used_lo, ii_lo), (fastest[1], fastest[2])):
        if ii < best[2]:
            over = _over(used, limits)
            binding = max(over, key=lambda r: used[r] / max(limits[r], 1e-9))
            break
    return BudgetResult(best[0], True, binding, best_t)

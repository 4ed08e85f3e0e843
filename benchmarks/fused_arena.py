#!/usr/bin/env python
"""The untuned arena build, unfused (today's) against fused (TVM's operator fusion):
plan, kernel workspace, measured peak, latency, exactness, in one run.

Usage (repository root)::

    PYTHONPATH=. nice -n 10 python benchmarks/fused_arena.py [--model deeplabv3_scenes]
        [--size 256] [--variants fp32,int8] [--tile SPEC] [--builds arena,fused-arena]

``arena`` is ``TvmTarget(memory="arena")`` as it builds today (`arena.arena_pipeline`:
one kernel per op, ``q.Requantize`` in channel groups); ``fused-arena`` is the same graph
lowered with ``fused=True`` and built with `arena.fused_arena_pipeline` (FuseOps +
FuseTIR, the default schedule, then the arena: `tuning.compile_tuned` with no
database).  For each: the arena's plan (`PlanArena` stats of ``main``), the largest and
the summed kernel-internal buffers (largest: of one kernel, whose buffers are live together) (`arena.kernel_buffers` of the kernels as built:
what ``TVMBackendAllocWorkspace`` serves outside the arena), the measured run memory
(fresh process, 1 thread, 3 runs, `targets.tvm.peak_memory`), the median latency of 3
runs and the build time; then the largest difference between the builds' outputs on
the same input (0 = bit-identical).  ``--size`` picks the model file: 256 =
``baselines/NAME.onnx``, 513 = the ``file_513`` of baselines.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TVM_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from targets.tvm_target import TvmTarget  # noqa: E402

MIB = 2 ** 20
BUILDS = ("arena", "fused-arena")


@dataclass
class _Probe(TvmTarget):
    """``TvmTarget(memory="arena")`` whose build keeps its planner (stats, workspace);
    with ``fused_arena`` it lowers and builds fused (what `fused_arena_pipeline`'s
    docstring asks of `TvmTarget.build`)."""

    fused_arena: bool = False
    planner: Any = None

    def _fused(self, tuned: bool) -> bool:
        return True if self.fused_arena else super()._fused(tuned)

    def build(self, graph):
        from targets.tvm.arena import PlanArena, arena_pipeline, fused_arena_pipeline
        from targets.tvm.build import WeightsBuilt, build

        self.planner = PlanArena(workspace=True)
        pipeline = (fused_arena_pipeline if self.fused_arena else arena_pipeline)(self.planner)
        mod, arrays, recipe = self._prepare(graph, False)
        executable = build(mod, self.target_dict(), pipeline=pipeline)
        return WeightsBuilt(executable, arrays, recipe) if self.weights_as_params else executable


def _model_path(name: str, size: int) -> Path:
    if size == 513:
        records = json.loads((ROOT / "baselines" / "baselines.json").read_text())
        return ROOT / "baselines" / records[name]["file_513"]
    return ROOT / "baselines" / f"{name}.onnx"


def _one(graph, build: str, x: np.ndarray, repeat: int, tmp: Path) -> tuple[dict, list]:
    import dataclasses

    import compiler
    from targets import get_target
    from targets.tvm.build import run, split_built
    from targets.tvm.peak_memory import measure_peak_memory

    host = get_target("host").with_memory("arena")
    target = _Probe(**{f.name: getattr(host, f.name) for f in dataclasses.fields(host)},
                    fused_arena=build == "fused-arena")
    t0 = time.perf_counter()
    cm = compiler.compile(graph, target=target)
    build_s = time.perf_counter() - t0
    stats = [s for s in target.planner.stats if s.function == "main"]
    work = [(k, b, n) for k, bufs in target.planner.workspace.items() for b, n in bufs]
    biggest = sorted(work, key=lambda t: -t[2])[:3]
    # a kernel's buffers are live together (allocated for the whole call)
    per_kernel = {k: sum(n for _b, n in bufs) for k, bufs in target.planner.workspace.items()}
    out = cm.save(tmp / build)
    _, params = split_built(cm.built)
    peak = measure_peak_memory(Path(out) / "model.so", [x] + params, runs=3, timeout=1200)
    outputs = run(cm.built, [x])
    ms = cm.benchmark(repeat=repeat, inputs={graph.inputs[0].name: x}).median * 1e3 \
        if repeat else float("nan")
    row = {"build": build, "build_s": round(build_s, 1),
           "arena_mib": round(sum(s.arena_bytes for s in stats) / MIB, 2),
           "outputs_outside_mib": round(sum(s.output_bytes for s in stats) / MIB, 2),
           "steady_mib": round(sum(s.steady_bytes for s in stats) / MIB, 2),
           "arena_peak": [f"{d}{list(sh)} {n / MIB:.2f}" for s in stats
                          for sh, d, n in s.peak_tensors[:3]],
           "workspace_max_mib": round(max(per_kernel.values(), default=0) / MIB, 2),
           "workspace_sum_mib": round(sum(n for *_r, n in work) / MIB, 2),
           "workspace_top": [f"{k}:{b} {n / MIB:.2f}" for k, b, n in biggest],
           "peak_minus_load_mib": round((peak.peak - peak.after_load) / MIB, 1),
           "peak_minus_import_mib": round((peak.peak - peak.after_import) / MIB, 1),
           "ms": round(float(ms), 1)}
    return row, outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deeplabv3_scenes", help="a baselines/*.onnx name")
    ap.add_argument("--size", type=int, default=256, choices=(256, 513))
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--tile", default="", help="a tile{...} pass to run first")
    ap.add_argument("--builds", default=",".join(BUILDS))
    ap.add_argument("--repeat", type=int, default=3, help="latency repeats (0: skip)")
    args = ap.parse_args(argv)

    import compiler
    from compiler.datasets import load_scenes
    from compiler.pass_manager import PassContext, parse_pass
    from passes.tiling import TilingError

    builds = [b for b in args.builds.split(",") if b]
    for b in builds:
        if b not in BUILDS:
            ap.error(f"--builds: unknown build {b!r} (known: {', '.join(BUILDS)})")
    g = compiler.import_model(str(_model_path(args.model, args.size)))
    for spec in ("fold-bn", "cleanup"):
        g = parse_pass(spec)(g).graph
    scenes = load_scenes("calib", n=5, size=args.size)
    x = scenes.inputs(4, 5)
    for variant in args.variants.split(","):
        graph = g
        if variant == "int8":
            calib = [{g.inputs[0].name: scenes.inputs(i, i + 1)} for i in range(4)]
            graph = parse_pass("quantize")(g.clone(), PassContext(calibration_data=calib)).graph
        if args.tile:
            try:
                graph = parse_pass(args.tile)(graph.clone(), PassContext()).graph
            except TilingError as exc:
                print(json.dumps({"variant": variant, "tile": args.tile, "refused": str(exc)}))
                continue
        results = {}
        with tempfile.TemporaryDirectory(prefix="fused-arena-") as tmp:
            for build in builds:
                row, outputs = _one(graph, build, x, args.repeat, Path(tmp))
                results[build] = outputs
                print(json.dumps({"model": args.model, "size": args.size, "variant": variant,
                                  "tile": args.tile, **row}), flush=True)
        if len(results) == 2:
            a, b = results.values()
            diff = max(float(np.max(np.abs(p.astype(np.float64) - q.astype(np.float64))))
                       for p, q in zip(a, b))
            print(json.dumps({"model": args.model, "variant": variant, "tile": args.tile,
                              "max_abs_diff_between_builds": diff}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

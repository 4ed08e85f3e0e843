#!/usr/bin/env python
"""Peak memory of DeepLab v3 / v3+ at 513x513: our builds vs onnxruntime (vs LiteRT).

Usage (repository root)::

    PYTHONPATH=. nice -n 10 python benchmarks/memory.py [--models deeplabv3_scenes,...]
        [--variants fp32,int8] [--builds tvm,arena,arena+tiled] [--ort default,no-pattern]
        [--repeat 3] [--json out.json]

Models: the ``file_513`` ONNX files of the trained DeepLab entries in
``baselines/baselines.json`` (``scripts/train_deeplab.py``: MobileNetV2, OS16, 513x513).
Variants: ``fp32`` (``fold-bn,cleanup``) and ``int8`` (+ ``quantize``, calibrated on 4
``seg-scenes-256`` calib scenes rendered at 513x513).

Every number is measured in a **fresh process**, 1 thread, by the method of
``targets/tvm/peak_memory.py`` (``shared/notes/memory.md`` §2.4): RSS after importing the
runtime, RSS after loading the model, VmHWM after ``--repeat`` runs with the output kept
inside the runtime (no numpy copy).  Columns (MiB):

* ``peak-import``: VmHWM - RSS after import (weights + activations + runtime scratch), the
  figure the notes compare runtimes by;
* ``peak-load``: VmHWM - RSS after load (what running adds);
* ``plan`` (ours): the memory planner's lower bound for the graph as built (max bytes
  live at one step, `compiler.memory_plan`); ``ms``: median latency, 1 thread
  (ours: ``CompiledModel.benchmark``; onnxruntime: ``benchmarks.common.time_ort``).

Ours: ``tvm`` = TVM 0.27's default planning (StaticPlanBlockMemory), ``arena`` =
``TvmTarget.with_memory("arena")`` (one arena per function, targets/tvm/arena.py),
``arena+tiled`` = the arena plus the ``tile`` pass (automatic stage end and n under a 5 %
MAC cap), ``arena+tiled+tail`` = the same with ``tile{tail=16,labels=1}``: the final
upsample and an appended ArgMax run in 16 bands of output rows, so the model returns the
int64 label map (513x513, 2 MiB) and the full-resolution logits never exist
(`passes.tail_tiling`); its stem choice is made with the tail already tiled.  onnxruntime: ``default`` (CPU arena + memory pattern) and ``no-pattern``
(``enable_mem_pattern=False``); its int8 model is our quantized graph exported as QDQ
(`compiler.qdq_export`).  LiteRT is not measured: ``ai-edge-litert`` installs from PyPI,
but no ONNX/torch -> .tflite converter is installed here (litert-torch pulls jax,
transformers and a 70 MB converter wheel), so there is no .tflite of these models.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import fmt_table, median_ms, time_ort  # noqa: E402

MIB = 2 ** 20
MODELS = ("deeplabv3_scenes", "deeplabv3plus_scenes")
BUILDS = ("tvm", "arena", "arena+tiled", "arena+tiled+tail")
TAIL_BANDS = 16  # 513 rows: bands of 32 output rows (33 -> 513 anchors every 16 rows)
ORT_MODES = ("default", "no-pattern")

def _ort_peak(path: Path, x: np.ndarray, mode: str, runs: int) -> dict:
    """onnxruntime measured by the method ours is (`measure_peak_memory_onnxruntime`)."""
    from targets.tvm.peak_memory import measure_peak_memory_onnxruntime

    peak = measure_peak_memory_onnxruntime(path, [x], runs=runs,
                                           mem_pattern=mode != "no-pattern", timeout=900)
    return {"after_import": peak.after_import, "after_load": peak.after_load,
            "peak": peak.peak}


def _models(names: list[str]) -> list[tuple[str, Path]]:
    records = json.loads((ROOT / "baselines" / "baselines.json").read_text())
    out = []
    for name in names:
        if name not in records or "file_513" not in records[name]:
            raise SystemExit(f"{name}: no 513x513 DeepLab entry in baselines/baselines.json "
                             f"(run scripts/train_deeplab.py)")
        out.append((name, ROOT / "baselines" / records[name]["file_513"]))
    return out


def _graph(path: Path, variant: str, calib):
    import compiler
    from compiler.pass_manager import PassContext, parse_pass

    g = compiler.import_model(str(path))
    for spec in ("fold-bn", "cleanup"):
        g = parse_pass(spec)(g).graph
    if variant == "int8":
        g = parse_pass("quantize")(g, PassContext(calibration_data=calib)).graph
    return g


def _ours(g, build: str, x: np.ndarray, repeat: int, runs: int, tmp: Path) -> dict:
    import compiler
    from compiler.memory_plan import lifetimes, lower_bound
    from compiler.pass_manager import PassContext, parse_pass
    from targets import get_target
    from targets.tvm.build import split_built
    from targets.tvm.peak_memory import measure_peak_memory

    extra = {}
    if build.startswith("arena+tiled"):
        spec = f"tile{{tail={TAIL_BANDS},labels=1}}" if build.endswith("+tail") else "tile"
        result = parse_pass(spec)(g.clone(), PassContext())
        g = result.graph
        extra = {k: result.stats[k] for k in ("stage_end", "n", "mac_overhead", "peak_before",
                                               "peak_after")}
        if "tail" in result.stats:
            extra["tail_bands"] = result.stats["tail"]["bands"]
    target = get_target("host") if build == "tvm" else get_target("host").with_memory("arena")
    t0 = time.perf_counter()
    cm = compiler.compile(g, target=target)
    build_s = time.perf_counter() - t0
    out = cm.save(tmp / build.replace("+", "_"))
    _, params = split_built(cm.built)  # the library is code only: its weights are arguments
    peak = measure_peak_memory(Path(out) / "model.so", [x] + params, runs=runs,
                               timeout=2400)  # untuned v3+ at 513 on a loaded machine
    ms = cm.benchmark(repeat=repeat, inputs={g.inputs[0].name: x}).median * 1e3 \
        if repeat else float("nan")
    return {"after_import": peak.after_import, "after_load": peak.after_load,
            "peak": peak.peak, "plan": lower_bound(lifetimes(g)), "ms": float(ms),
            "build_s": round(build_s, 1), **extra}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--builds", default=",".join(BUILDS))
    ap.add_argument("--ort", default=",".join(ORT_MODES))
    ap.add_argument("--repeat", type=int, default=3, help="latency repeats (0: skip)")
    ap.add_argument("--runs", type=int, default=3, help="runs before reading VmHWM")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    from compiler.datasets import load_scenes

    builds = [b for b in args.builds.split(",") if b]
    modes = [m for m in args.ort.split(",") if m]
    for b in builds:
        if b not in BUILDS:
            ap.error(f"--builds: unknown build {b!r} (known: {', '.join(BUILDS)})")
    for m in modes:
        if m not in ORT_MODES:
            ap.error(f"--ort: unknown mode {m!r} (known: {', '.join(ORT_MODES)})")
    scenes = load_scenes("calib", n=5, size=513)
    x = scenes.inputs(4, 5)
    calib = [{"input": scenes.inputs(i, i + 1)} for i in range(4)]
    rows, results = [], []
    for name, path in _models(args.models.split(",")):
        for variant in args.variants.split(","):
            g = _graph(path, variant, calib)
            with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
                tmp = Path(tmp)
                ort_path = path
                if variant == "int8":
                    from compiler.qdq_export import export_qdq
                    ort_path = tmp / "qdq.onnx"
                    export_qdq(g, ort_path)
                for mode in modes:
                    r = _ort_peak(ort_path, x, mode, args.runs)
                    r["ms"] = median_ms(time_ort(ort_path, {"input": x}, args.repeat, 1)) \
                        if args.repeat else float("nan")
                    results.append({"model": name, "variant": variant,
                                    "runtime": f"onnxruntime {mode}", **r})
                    print(json.dumps(results[-1]), flush=True)
                for build in builds:
                    r = _ours(g, build, x, args.repeat, args.runs, tmp)
                    results.append({"model": name, "variant": variant,
                                    "runtime": f"ours {build}", **r})
                    print(json.dumps(results[-1]), flush=True)
    for r in results:
        rows.append([r["model"], r["variant"], r["runtime"],
                     f"{(r['peak'] - r['after_import']) / MIB:.1f}",
                     f"{(r['peak'] - r['after_load']) / MIB:.1f}",
                     f"{r['plan'] / MIB:.1f}" if "plan" in r else "-",
                     f"{r['ms']:.1f}",
                     (f"{r['stage_end'].split('/')[-2] if r['stage_end'] else '-'} "
                      f"n={r['n']} +{100 * r['mac_overhead']:.1f}% MACs"
                      + (f", tail {r['tail_bands']} bands" if "tail_bands" in r else "")
                      if "stage_end" in r else "")])
    print()
    print(fmt_table(["model", "variant", "runtime", "peak-import MiB", "peak-load MiB",
                     "plan MiB", "ms", "tiling"], rows))
    print("\nLiteRT: not measured (no ONNX/torch -> .tflite converter installed here).")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

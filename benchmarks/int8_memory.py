#!/usr/bin/env python
"""Why int8 builds need more activation memory than fp32 ones: plan and measurement side by side.

Usage (repository root)::

    PYTHONPATH=. nice -n 10 python benchmarks/int8_memory.py [--model deeplabv3_scenes]
        [--size 256] [--tile SPEC]

For the fp32 graph (``fold-bn,cleanup``) and its int8 version (+ ``quantize``, calibrated
on 4 ``seg-scenes`` calib scenes at ``--size``), optionally after a ``tile{...}`` pass:
our IR's lower bound, the lowered TVM module's arena plan (`targets.tvm.arena.planned_memory`:
arena, outputs left outside it, steady-state bytes, and the tensors live at the arena's
busiest step) and the measured run memory of the arena build (fresh process, 1 thread,
3 runs, `targets.tvm.peak_memory`).  The busiest-step tensors say *what* the peak is
made of (an int32 accumulator and its int64 rescale copy, a float output, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 2 ** 20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="deeplabv3_scenes", help="a baselines/*.onnx name")
    ap.add_argument("--size", type=int, default=256, help="input size of the model file")
    ap.add_argument("--tile", default="", help="a tile{...} pass to run first")
    ap.add_argument("--no-measure", action="store_true", help="plans only (no build)")
    args = ap.parse_args(argv)

    import compiler
    from compiler.datasets import load_scenes
    from compiler.memory_plan import lifetimes, lower_bound
    from compiler.pass_manager import PassContext, parse_pass
    from targets import get_target
    from targets.tvm.arena import planned_memory
    from targets.tvm.build import split_built
    from targets.tvm.peak_memory import measure_peak_memory
    from passes.tiling import TilingError

    path = ROOT / "baselines" / f"{args.model}.onnx"
    if not path.exists():
        raise SystemExit(f"{path} does not exist")
    g = compiler.import_model(str(path))
    for spec in ("fold-bn", "cleanup"):
        g = parse_pass(spec)(g).graph
    scenes = load_scenes("calib", n=5, size=args.size)
    x = scenes.inputs(4, 5)
    calib = [{g.inputs[0].name: scenes.inputs(i, i + 1)} for i in range(4)]
    q = parse_pass("quantize")(g.clone(), PassContext(calibration_data=calib)).graph
    target = get_target("host").with_memory("arena")
    for variant, graph in (("fp32", g), ("int8", q)):
        if args.tile:
            try:
                graph = parse_pass(args.tile)(graph.clone(), PassContext()).graph
            except TilingError as exc:  # e.g. a float tail whose bands cannot be exact
                print(json.dumps({"variant": variant, "tile": args.tile, "refused": str(exc)}))
                continue
        plan = planned_memory(target.lower(graph), target.target_dict())
        row = {"variant": variant, "ir_lower_bound_mib": round(lower_bound(lifetimes(graph)) / MIB, 2)}
        row.update({k.replace("_bytes", "_mib"): round(v / MIB, 2) for k, v in plan.items()
                    if k.endswith("_bytes")})
        row["arena_peak"] = [f"{dtype}{list(shape)} {nbytes / MIB:.2f} MiB"
                             for shape, dtype, nbytes in plan["arena_peak_tensors"][:4]]
        if not args.no_measure:
            cm = compiler.compile(graph, target=target)
            with tempfile.TemporaryDirectory(prefix="int8-memory-") as tmp:
                out = cm.save(Path(tmp) / variant)
                _, params = split_built(cm.built)
                peak = measure_peak_memory(Path(out) / "model.so", [x] + params, runs=3,
                                           timeout=2400)
            row["measured_peak_minus_load_mib"] = round((peak.peak - peak.after_load) / MIB, 1)
            row["measured_peak_minus_import_mib"] = round((peak.peak - peak.after_import) / MIB, 1)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

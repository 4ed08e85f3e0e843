"""Compiled model (TVM, host CPU) vs onnxruntime on the same inputs, in one process.

For every model: build with the given passes, check outputs agree, then time both
with the same number of threads; medians over repeats and their ratio.  No tuning
here: this shows where untuned TVM code stands.

    python benchmarks/bench_host.py [--models tinynet,resnet_tiny] [--repeat 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the repository importable

from benchmarks.common import input_spec, prepared_model, random_input, time_ort  # noqa: E402

DEFAULT_MODELS = ["tinynet", "resnet_tiny", "dwsep_tiny", "concat_tiny", "unet_tiny",
                  "mobilenet_v2", "ppocr_det"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--passes", default="fold-bn,cleanup")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))

    import compiler

    rows = []
    for name in args.models.split(","):
        path = prepared_model(name)
        if not path.exists():
            print(f"skip {name}: {path} missing (run scripts/prepare_models.py)")
            continue
        start = time.perf_counter()
        cm = compiler.compile(path, target="host", passes=args.passes)
        build_s = time.perf_counter() - start
        x = random_input(input_spec(path)[1])
        feed = {cm.input_names[0]: x}
        ours = cm.run(feed)[0]
        ort_s = time_ort(path, feed, args.repeat, args.threads)
        import onnxruntime as ort

        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        err = float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-6))
        timing = cm.benchmark(repeat=args.repeat, inputs=feed)
        rows.append((name, build_s, timing.median, float(np.median(ort_s)), err))
        print(f"{name}: build {build_s:.1f}s, tvm {timing}, ort {np.median(ort_s) * 1e3:.3f} ms",
              flush=True)

    print(f"\nhost CPU, {args.threads} threads, passes '{args.passes}', untuned TVM, "
          f"medians over {args.repeat} repeats")
    print(f"{'model':<14}{'build s':>9}{'TVM ms':>11}{'ORT ms':>10}{'TVM/ORT':>9}{'rel err':>10}")
    for name, build_s, tvm_s, ort_s, err in rows:
        print(f"{name:<14}{build_s:>9.1f}{tvm_s * 1e3:>11.3f}{ort_s * 1e3:>10.3f}"
              f"{tvm_s / ort_s:>8.1f}x{err:>10.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

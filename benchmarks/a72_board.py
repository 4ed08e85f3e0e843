"""Cortex-A72 builds timed on a board: what NEON tensorization of int8 convs changes.

By default the board is the project's EMULATED one (qemu-aarch64 under this x86 host);
``--tracker HOST:PORT --key KEY`` times them on a real board instead (a Raspberry Pi 4
running TVM's ``rpc_server``, see the README).

For every model, each tuned through the tracker on the board (``--trials`` each, its own
database under ``--db-dir``):

* ``fp32 tuned nchw``: the float model, MetaSchedule's generic search (the A72's ``auto``);
* ``int8 tuned nchw``: the int8 model in TVM's NCHW kernels, generic search (what the A72
  had before the NEON template);
* ``int8 tuned nchwc``: packed s8 x s8 convs, scheduled by our NEON template (each
  ``4o x 4i`` step TVM's ``dot_4x4_i8i8s32_neon``: ``smull`` / ``saddlp`` / ``addp``).

Outputs are checked on the board: fp32 against onnxruntime on the host (max error relative
to max|ref|), both int8 builds bit-exact against the int8 host build.  Timing is
interleaved (each round times every build once on the board, ``--number`` calls), medians
over ``--repeat`` rounds.

On the embedded board these are EMULATED timings: qemu translates each aarch64 instruction to x86 code, so a
ratio between two builds says how much less work (instructions) one does under the
emulator, not how much faster it is on a Cortex-A72 (no pipeline, cache or NEON-unit model).

    python benchmarks/a72_board.py --models plaincnn_fmnist --trials 48 \
        [--tune-seconds 600] [--repeat 7] [--db-dir out/a72-db] [--json out.json] \
        [--tracker HOST:9190 --key rpi4]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the repository importable

from benchmarks.common import MODELS, conv64_model, input_spec, ort_session  # noqa: E402

PLANS = (("fp32", "nchw"), ("int8", "nchw"), ("int8", "nchwc"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="plaincnn_fmnist")
    ap.add_argument("--trials", type=int, default=48, help="MetaSchedule trials per build")
    ap.add_argument("--tune-seconds", type=float, default=None)
    ap.add_argument("--repeat", type=int, default=7, help="interleaved timing rounds")
    ap.add_argument("--number", type=int, default=3, help="calls per timing sample")
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--db-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--tracker", default=None, help="a real board's tracker (HOST:PORT)")
    ap.add_argument("--key", default=None, help="its RPC key")
    args = ap.parse_args(argv)

    import compiler
    from targets import get_target
    from targets.board.testing import board_session
    from targets.tvm.layout import packed_conv_count

    a72 = get_target("cortex-a72")
    if args.tracker:
        a72 = a72.with_remote(args.tracker, args.key)
    work = Path(tempfile.mkdtemp(prefix="a72-emulated-"))
    db_dir = Path(args.db_dir) if args.db_dir else work
    db_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    session = contextlib.nullcontext(a72.remote()) if args.tracker else board_session()
    with session as spec:
        for model_name in args.models.split(","):
            path = MODELS[model_name] or conv64_model(work / "conv64.onnx")
            name, shape = input_spec(path)
            rng = np.random.default_rng(0)
            x = rng.standard_normal(shape).astype(np.float32)
            calib = [{name: rng.standard_normal((args.calib,) + shape[1:]).astype(np.float32)}]
            feed = {name: x}
            ref = ort_session(path, 1).run(None, feed)[0]
            scale = max(float(np.max(np.abs(ref))), 1e-6)
            host_int8 = compiler.compile(path, target="host", passes=_passes("int8"),
                                         calibration_data=calib).run(feed)[0]
            builds = []
            for variant, layout in PLANS:
                db = db_dir / f"{model_name}-{variant}-{layout}.json"
                t0 = time.monotonic()
                cm = compiler.compile(path, target=a72.with_layout(layout),
                                      passes=_passes(variant),
                                      calibration_data=calib if variant == "int8" else None,
                                      tune={"trials": args.trials, "database": str(db),
                                            "max_seconds": args.tune_seconds,
                                            "progress": False})
                secs = time.monotonic() - t0
                st = cm.tuning or {}
                out = cm.run(feed)[0]  # on the board
                if variant == "int8":
                    check = "bit-exact vs host int8" if np.array_equal(out, host_int8) else \
                        f"DIFFERS from host int8 by {np.max(np.abs(out - host_int8)):.3g}"
                else:
                    check = f"err vs onnxruntime {np.max(np.abs(out - ref)) / scale:.2e}"
                from targets.tvm.layout import apply_layout

                mod, _ = apply_layout(a72.lower(cm.graph), layout, a72.target_dict())
                label = f"{variant} tuned {layout}"
                info = {"model": model_name, "build": label, "check": check,
                        "trials": st.get("trials"), "tune_s": st.get("tune_seconds"),
                        "build_s": round(secs, 1), "packed_convs": packed_conv_count(mod)}
                print(f"{model_name}: {label}: {check}; {info}", flush=True)
                builds.append((label, cm, info))
            medians = interleaved_medians(spec, a72, [(label, cm) for label, cm, _ in builds],
                                          x, args.repeat, args.number)
            fp32 = medians[builds[0][0]]
            for label, _, info in builds:
                med = medians[label]
                info.update(board_ms=round(med * 1e3, 3), emulated=spec.emulated,
                            fp32_over_this=round(fp32 / med, 2))
                rows.append(info)
    if args.tracker:
        print(f"\nTimings on the board behind {args.tracker} (key {args.key})")
    else:
        print("\nEMULATED timings (qemu-aarch64 -cpu cortex-a72 on this x86 host; "
              "not A72 latency)")
    print("| model | build | board ms | fp32 / this | trials | tune s | check |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['build']} | {r['board_ms']} | {r['fp32_over_this']}x | "
              f"{r['trials']} | {r['tune_s']} | {r['check']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def interleaved_medians(spec, a72, builds, x: np.ndarray, repeat: int,
                        number: int = 3) -> dict[str, float]:
    """Median seconds per call of each ``(label, compiled model)`` on the board of
    ``spec``; every round times each build once (``number`` calls), so slow drifts of the
    host (other jobs, the emulator) hit every build alike."""
    from targets.tvm.rpc import time_remote

    samples: dict[str, list[float]] = {label: [] for label, _ in builds}
    for _ in range(repeat):
        for label, cm in builds:
            t = time_remote(spec, cm.built, [x], repeat=1, number=number,
                            cross_compiler=a72.cross_compiler)
            samples[label].append(t[0])
    return {label: float(np.median(v)) for label, v in samples.items()}


def _passes(variant: str) -> str:
    return "fold-bn,cleanup" + (",quantize{bits=8,act_bits=8}" if variant == "int8" else "")


if __name__ == "__main__":
    sys.exit(main())

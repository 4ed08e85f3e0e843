"""Our TVM builds (fp32 and int8, untuned and MetaSchedule-tuned) against onnxruntime
(fp32 and int8), same inputs, same threads, one process.

For every model: compile fp32 (passes ``fold-bn,cleanup``) and int8 (``+ quantize{bits=8,
act_bits=8}`` calibrated on the calibration batch), untuned (NCHW kernels) and tuned
(``--trials`` per build, in the target's ``auto`` layout unless ``--tuned-layout``
says otherwise: NCHW for fp32, packed ``nchwc`` with VNNI for int8); build
onnxruntime sessions for the fp32 model and for an int8 QDQ model made by
``onnxruntime.quantization.quantize_static`` (u8 activations, s8 weights, the same
calibration batch).  Outputs are checked (fp32 vs onnxruntime: max error relative to
max|ref|; int8 tuned vs int8 untuned: must be bit-exact... up to the float dequantize).
Timing is interleaved: each round times every variant once (TVM ``time_evaluator`` with
``--number`` calls, onnxruntime the same number of calls), medians over ``--repeat``
rounds, so machine load hits all variants alike.  Neither runtime busy-waits between
calls (onnxruntime ``allow_spinning=0``, ``TVM_THREAD_POOL_SPIN_COUNT=0``): spinning
threads of one would steal the cores from the variant timed next.

    python benchmarks/tvm_vs_ort.py --models resnet_fmnist,mobilenet_v2 --trials 200 \
        [--repeat 15] [--threads 2] [--db-dir out/tune-db] [--json out.json]

``--threads 1,2`` runs the whole comparison once per thread count, each in its own
process (``TVM_NUM_THREADS`` is read once, when TVM's thread pool starts; onnxruntime gets
``intra_op_num_threads``), the tuning database shared (the first count tunes, the others
reuse its records), then prints the thread scaling of every variant (ms at the first
count / ms at each other) and its ratios to onnxruntime at each count.

Models: the shipped baselines (``baselines/*.onnx``), ``mobilenet_v2``, ``tinynet``,
``conv64`` (one 3x3 conv 64->64 at 56x56 + ReLU, the notes' reference layer), the
exporter-pattern models ``tfpad_net`` / ``lcnet_like`` (`benchmarks/pattern_models.py`:
TF-style explicit Pads; HardSwish, squeeze-excitation, Split/Concat, Resize), and ``zoo``
(every model of scripts/prepare_models.py's ``ZOO``, or any of them by name; read from
``models/`` or ``$COMPILER_ZOO_MODELS``), e.g. ``--models zoo --no-tune --threads 1``.  Tuning
records go to ``--db-dir/<model>-<variant>.json`` (reused on a second run: the tuning
time then says so).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the repository importable

from benchmarks.common import MODELS, conv64_model, input_spec, ort_session  # noqa: E402,F401
from benchmarks.pattern_models import PATTERN_MODELS, write_pattern_model  # noqa: E402


def ort_int8(path: Path, name: str, calib: np.ndarray, out: Path) -> Path:
    """onnxruntime's own static quantization (QDQ, u8 activations, s8 weights)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    import onnx

    model = onnx.load(str(path))
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
        # per-channel QDQ needs DequantizeLinear's axis (opset 13); zoo models are 9-12
        from onnx import version_converter

        path = out.with_suffix(".opset13.onnx")
        onnx.save(version_converter.convert_version(model, 13), str(path))
    pre = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception:  # noqa: BLE001  (pre-processing is an optimization only)
        src = path
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=True)
    return out


def zoo_models() -> dict[str, Path]:
    """The model zoo of scripts/prepare_models.py (its ``ZOO`` table), read from ``models/``
    or from ``$COMPILER_ZOO_MODELS`` (the folder the zoo tests read)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_prepare_models",
                                                  ROOT / "scripts" / "prepare_models.py")
    prepare = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = prepare  # its dataclasses look their module up there
    spec.loader.exec_module(prepare)
    folder = Path(os.environ.get("COMPILER_ZOO_MODELS", ROOT / "models"))
    return {name: folder / f"{name}.onnx" for name in prepare.ZOO}


def select_models(spec: str) -> dict[str, "Path | None"]:
    """``--models``: comma-separated names of `MODELS`, zoo model names, or ``zoo`` (every
    zoo model); an unknown name is an error that lists the known ones."""
    zoo = zoo_models()
    chosen: dict[str, Path | None] = {}
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token == "zoo":
            chosen.update(zoo)
        elif token in MODELS:
            chosen[token] = MODELS[token]
        elif token in zoo:
            chosen[token] = zoo[token]
        elif token in PATTERN_MODELS:  # written by main() into its work folder
            chosen[token] = None
        else:
            raise SystemExit(f"--models: unknown model {token!r}; known: "
                             f"{', '.join([*MODELS, *PATTERN_MODELS, 'zoo', *zoo])}")
    return chosen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet_fmnist,mobilenet_v2")
    ap.add_argument("--trials", type=int, default=200, help="MetaSchedule trials per tuned build")
    ap.add_argument("--tune-seconds", type=float, default=None,
                    help="wall-clock budget per tuned build (stops at trials or seconds)")
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--number", type=int, default=0, help="calls per sample (0: auto)")
    ap.add_argument("--threads", default="2",
                    help="thread count, or a comma list (1,2): one run per count, then "
                         "the thread scaling")
    ap.add_argument("--calib", type=int, default=8, help="calibration inputs (seeded normal)")
    ap.add_argument("--variants", default="fp32,int8",
                    help="comma list of fp32,int8 (tuned and untuned of each)")
    ap.add_argument("--tune-variants", default=None,
                    help="variants that get tuned rows (default: all of --variants)")
    ap.add_argument("--tuned-layout", default="auto", choices=["auto", "nchw", "nchwc"],
                    help="conv layout of tuned builds (auto: the target's rule, nchw for "
                         "float graphs, packed nchwc for integer graphs)")
    ap.add_argument("--also-nchw-tuned", default="", metavar="VARIANTS",
                    help="also tune these variants (e.g. fp32,int8) with the plain NCHW "
                         "layout, for the layout comparison")
    ap.add_argument("--no-tune", action="store_true")
    ap.add_argument("--no-untuned", action="store_true",
                    help="only the tuned builds (skip the untuned NCHW rows)")
    ap.add_argument("--db-dir", default=None, help="tuning databases (default: a temp dir)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after the table, the N slowest kernels of each tuned build "
                         "(cm.profile: per-kernel time of the build that was timed)")
    args = ap.parse_args(argv)
    counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if len(counts) > 1:
        return run_thread_counts(argv if argv is not None else sys.argv[1:], args, counts)
    args.threads = counts[0]
    os.environ["TVM_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")

    import compiler
    from targets import get_target
    from targets.tvm.build import time_local

    host = get_target("host")
    work = Path(tempfile.mkdtemp(prefix="tvm-vs-ort-"))
    db_dir = Path(args.db_dir) if args.db_dir else work
    db_dir.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for model_name, path in select_models(args.models).items():
        if model_name in PATTERN_MODELS:
            path = write_pattern_model(model_name, work / f"{model_name}.onnx")
        if path is None:
            path = conv64_model(work / "conv64.onnx")
        if not path.exists():
            print(f"skip {model_name}: {path} missing")
            continue
        name, shape = input_spec(path)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        calib = rng.standard_normal((args.calib,) + shape[1:]).astype(np.float32)
        feed = {name: x}
        calib_data = [{name: calib}]
        variants = []   # (label, kind, callable timing one sample of `number` calls, info)

        ref = ort_session(path, args.threads).run(None, feed)[0]
        scale = max(float(np.max(np.abs(ref))), 1e-6)
        builds = []
        for v in args.variants.split(","):
            passes = "fold-bn,cleanup" + (",quantize{bits=8,act_bits=8}" if v == "int8" else "")
            plans = [] if args.no_untuned and not args.no_tune else [("untuned", "nchw", None)]
            tuned_variants = (args.tune_variants or args.variants).split(",")
            if not args.no_tune and v in tuned_variants:
                plans.append(("tuned", args.tuned_layout, args.trials))
                if v in args.also_nchw_tuned.split(",") and args.tuned_layout != "nchw":
                    plans.append(("tuned", "nchw", args.trials))
            for tag, layout, trials in plans:
                tgt = host.with_layout(layout)
                tune = None
                if trials is not None:
                    tune = {"trials": trials, "progress": False,
                            "max_seconds": args.tune_seconds,
                            "database": str(db_dir / f"{model_name}-{v}-{layout}.json")}
                t0 = time.monotonic()
                cm = compiler.compile(path, target=tgt, passes=passes, tune=tune,
                                      calibration_data=calib_data if v == "int8" else None)
                secs = time.monotonic() - t0
                out = cm.run(feed)[0]
                err = float(np.max(np.abs(out.astype(np.float64) - ref)) / scale)
                st = dict(cm.tuning or {})
                if tune is not None:
                    # a rerun reuses the database: report the run that did the tuning
                    side = Path(tune["database"] + ".bench.json")
                    if st.get("trials"):
                        side.write_text(json.dumps({k: st.get(k) for k in (
                            "trials", "tune_seconds", "tasks", "trials_measured_ok",
                            "stopped_by_time")}))
                    elif side.exists():
                        st.update(json.loads(side.read_text()), reused_database=True)
                if tune is not None:
                    layout = st.get("layout", layout)  # "auto" resolved by the target
                label = f"TVM {v} {tag} {layout}"
                info = {"build_s": round(secs, 1), "err_vs_ort_fp32": err,
                        "trials": st.get("trials"), "tasks": st.get("tasks"),
                        "tune_s": st.get("tune_seconds"),
                        "reused_db": bool(st.get("reused_database"))}
                builds.append((label, cm, out))
                print(f"{model_name}: {label}: built in {secs:.1f}s, err {err:.2e} "
                      f"{'' if not st else st}", flush=True)
                arrays = [feed[name]]
                built = cm.built
                variants.append((label, "tvm", (built, arrays), info))
        # onnxruntime fp32 and int8 (QDQ u8s8, same calibration batch)
        sess32 = ort_session(path, args.threads)
        variants.append(("ORT fp32", "ort", sess32, {}))
        if "int8" in args.variants:
            try:
                q = ort_int8(path, name, calib, work / f"{model_name}.int8.onnx")
                sess8 = ort_session(q, args.threads)
                q_out = sess8.run(None, feed)[0]
                variants.append(("ORT int8", "ort", sess8, {
                    "err_vs_ort_fp32": float(np.max(np.abs(q_out - ref)) / scale)}))
            except Exception as exc:  # noqa: BLE001
                print(f"{model_name}: onnxruntime int8 quantization failed: {exc}")

        for _, kind, obj, _ in variants:  # warm up (onnxruntime initializes lazily)
            if kind == "ort":
                for _ in range(5):
                    obj.run(None, feed)
        # calls per sample: ~30 ms of onnxruntime fp32 work, at least 1
        number = args.number
        if number <= 0:
            t0 = time.perf_counter()
            for _ in range(5):
                sess32.run(None, feed)
            number = max(1, min(200, int(0.03 / max((time.perf_counter() - t0) / 5, 1e-6))))
        samples = {label: [] for label, *_ in variants}
        for _ in range(args.repeat):
            for label, kind, obj, _ in variants:
                if kind == "tvm":
                    built, arrays = obj
                    samples[label].append(time_local(built, arrays, repeat=1, number=number)[0])
                else:
                    t0 = time.perf_counter()
                    for _ in range(number):
                        obj.run(None, feed)
                    samples[label].append((time.perf_counter() - t0) / number)
        med = {label: float(np.median(s)) for label, s in samples.items()}
        ort32 = med["ORT fp32"]
        ort8 = med.get("ORT int8")
        print(f"\n{model_name} {shape}: {args.threads} threads, medians over {args.repeat} "
              f"rounds of {number} calls, interleaved")
        print(f"| variant | ms | /ORT fp32 | /ORT int8 | trials | tasks | tune s | err vs ORT fp32 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, kind, obj, info in variants:
            ms = med[label] * 1e3
            r8 = f"{med[label] / ort8:.2f}x" if ort8 else "-"
            tr = info.get("trials")
            tune_s = info.get("tune_s")
            print(f"| {label} | {ms:.3f} | {med[label] / ort32:.2f}x | {r8} | "
                  f"{'-' if tr is None else tr} | {info.get('tasks') or '-'} | "
                  f"{'-' if tune_s is None else tune_s} | "
                  f"{info.get('err_vs_ort_fp32', 0.0):.1e} |", flush=True)
            all_rows.append({"model": model_name, "variant": label, "ms": ms,
                             "vs_ort_fp32": med[label] / ort32,
                             "vs_ort_int8": (med[label] / ort8) if ort8 else None,
                             "number": number, "repeat": args.repeat, **info})
        print()
        if args.profile:
            for label, cm, _ in builds:
                if " tuned " in label:
                    print_profile(label, cm.profile(repeat=args.repeat), args.profile)
    if args.json:
        Path(args.json).write_text(json.dumps(all_rows, indent=1))
    return 0


def run_thread_counts(argv: list[str], args, counts: list[int]) -> int:
    """One child run per thread count (same arguments, one shared ``--db-dir``), then
    the scaling table.  Children print their own tables as they go."""
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="tvm-vs-ort-threads-"))
    db_dir = args.db_dir or str(work / "db")
    rest, skip = [], False
    for a in argv:  # drop --threads / --json / --db-dir: set per child below
        if skip:
            skip = False
            continue
        if a in ("--threads", "--json", "--db-dir"):
            skip = True
            continue
        if a.startswith(("--threads=", "--json=", "--db-dir=")):
            continue
        rest.append(a)
    rows: dict[int, list[dict]] = {}
    for t in counts:
        out = work / f"t{t}.json"
        env = dict(os.environ, TVM_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t))
        print(f"== {t} thread(s) ==", flush=True)
        subprocess.run([sys.executable, __file__, *rest, "--threads", str(t), "--json",
                        str(out), "--db-dir", db_dir], env=env, check=True)
        rows[t] = json.loads(out.read_text())
    base = counts[0]
    key = lambda r: (r["model"], r["variant"])  # noqa: E731
    by = {t: {key(r): r for r in rs} for t, rs in rows.items()}
    head = " | ".join(f"ms {t}t | /ORT {t}t" for t in counts)
    scal = " | ".join(f"{base}->{t}" for t in counts[1:])
    print(f"\nthread scaling (ms at {base} thread(s) / ms at N; ratios: /ORT fp32 for fp32 "
          "rows, /ORT int8 for int8 rows, onnxruntime at the same thread count)")
    print(f"| model | variant | {head} | {scal} |")
    print("|" + " --- |" * (2 + 2 * len(counts) + len(counts) - 1))
    for r in rows[base]:
        k = key(r)
        cells = []
        for t in counts:
            rt = by[t].get(k)
            if rt is None:
                cells += ["-", "-"]
                continue
            ratio = rt["vs_ort_int8"] if "int8" in r["variant"] and rt["vs_ort_int8"] else \
                rt["vs_ort_fp32"]
            cells += [f"{rt['ms']:.3f}", f"{ratio:.2f}x"]
        sc = [f"{r['ms'] / by[t][k]['ms']:.2f}x" if k in by[t] else "-" for t in counts[1:]]
        print(f"| {k[0]} | {k[1]} | " + " | ".join(cells + sc) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({str(t): rs for t, rs in rows.items()}, indent=1))
    return 0


def print_profile(label: str, rows: list[dict], top: int) -> None:
    """Kernel times of one build (medians per run, summed over calls), slowest first."""
    total = sum(r["ms"] for r in rows)
    print(f"{label}: kernels sum to {total:.3f} ms per call; the {top} slowest:")
    print("| kernel | calls | ms | share |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows[:top]:
        print(f"| {r['kernel'][:70]} | {r['calls']} | {r['ms']:.4f} | {r['share']:.1%} |")
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())

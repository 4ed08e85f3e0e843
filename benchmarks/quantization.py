#!/usr/bin/env python
"""Quantization benchmark: accuracy / mIoU, theoretical speedup and host latency per bit width.

    python benchmarks/quantization.py [--quick] [--baselines baselines] [--only NAME ...]
                                      [--calib N] [--test N] [--out results.json]

For every trained baseline in ``<baselines>/baselines.json`` (written by
``scripts/train_baselines.py``): fold BN, calibrate on the data set's ``calib`` split
(``--calibration``, default percentile), quantize at each setting below, score on the ``test`` split with the reference
interpreter (the integer graph, bit-exact with its TVM build) and report

* the metric (top-1 accuracy, or mIoU for segmentation) of fp32 (onnxruntime, the file as
  shipped) and of every setting,
* the theoretical speedup ``sum(MACs*32*32) / sum(MACs*w_bits*a_bits)`` (research's definition,
  ``passes/quantization/cost.py``),
* measured host latency (TVM, untuned, this machine) of the 8/8 integer model vs the fp32
  build of the same graph, in one run, median of ``--repeat`` timings.

Settings (weights/activations): 8/8, 6/6, 5/5, 4/4, 2/2, binary weights with 8- and 2-bit
activations, and ``mixed``: binary weights / 2-bit activations with an 8-bit first layer
(the IMVIP 2017 configuration).

Every number above is post-training (PTQ: calibration only, no training).  With
``--qat-batches N`` the settings named by ``--qat-settings`` are also **fine-tuned**
(quantization-aware training, QAT): the integer graph of that setting is trained with
`compiler.torch.finetune` (straight-through rounding, integer weights through float
shadows; scales, zero points, biases and multipliers fixed) for ``N`` batches of
``--qat-batch-size`` images of the data set's ``train`` split (Adam, ``--qat-lr``, cosine
schedule, seed 0), then scored like the others; these are reported in a separate,
labelled table.

Without a ``baselines.json`` the script falls back to ``models/*.onnx`` with random inputs and
reports top-1 *agreement* with the float model (a smoke test of the pipeline, not accuracy).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import ort_session  # noqa: E402
from compiler.evaluate import confusion_matrix, evaluate  # noqa: E402
from compiler.onnx_io import import_model  # noqa: E402
from compiler.pass_manager import PassContext, parse_pass  # noqa: E402
from passes.quantization import QuantizationWarning  # noqa: E402

SETTINGS = [
    ("8/8", "quantize{bits=8,act_bits=8}"),
    ("6/6", "quantize{bits=6,act_bits=6}"),
    ("5/5", "quantize{bits=5,act_bits=5}"),
    ("4/4", "quantize{bits=4,act_bits=4}"),
    ("2/2", "quantize{bits=2,act_bits=2}"),
    ("1/8", "quantize{bits=1,act_bits=8}"),
    ("1/2", "quantize{bits=1,act_bits=2}"),
    ("mixed 1/2, first 8/8", "quantize{bits=1,act_bits=2,first_layer_bits=8}"),
]


QAT_DEFAULT = ["5/5", "4/4", "2/2", "1/8", "1/2", "mixed 1/2, first 8/8"]


def _quantize(graph, spec, calib, calibration="minmax"):
    if calibration != "minmax":
        spec = spec[:-1] + f",calibration={calibration}}}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantizationWarning)
        return parse_pass(spec)(graph.clone(), PassContext(calibration_data=calib))


def _ort_metric(path: Path, ds, limit: int, metric: str) -> float:
    sess = ort_session(path, 2)
    name = sess.get_inputs()[0].name
    k = ds.num_classes
    cm = np.zeros((k, k), np.int64)
    for i in range(limit):
        out = sess.run(None, {name: ds.inputs(i, i + 1)})[0]
        cm += confusion_matrix(ds.labels[i:i + 1], out.argmax(axis=1), k)
    from compiler.evaluate import _metric_value

    return _metric_value(metric, cm)


def _latency(float_graph, int_graph, x: np.ndarray, repeat: int) -> tuple[float, float]:
    from targets.tvm import build, lower_graph
    from targets.tvm.build import time_local

    results = []
    for graph in (float_graph, int_graph):
        ex = build(lower_graph(graph), "host")
        times = time_local(ex, [x], repeat=repeat, number=3)
        results.append(statistics.median(times) * 1e3)
    return results[0], results[1]


def bench_baseline(name: str, entry: dict, base_dir: Path, args) -> dict:
    from compiler.datasets import load_dataset

    path = base_dir / entry["file"]
    task = entry.get("task", "classification")
    metric = "miou" if task == "segmentation" else "top1"
    calib_ds = load_dataset(entry["dataset"], "calib")
    test_ds = load_dataset(entry["dataset"], "test")
    n_calib = min(args.calib, len(calib_ds))
    n_test = min(args.test, len(test_ds))
    if task == "segmentation":
        n_test = min(n_test, args.seg_test)
    calib = [{entry.get("input_name", "input"): calib_ds.inputs(i, min(i + 100, n_calib))}
             for i in range(0, n_calib, 100)]
    graph = import_model(path)
    row = {"model": name, "dataset": entry["dataset"], "metric": metric, "test_samples": n_test,
           "calib_samples": n_calib}
    t = time.perf_counter()
    row["fp32"] = _ort_metric(path, test_ds, n_test, metric)
    print(f"[{name}] fp32 {metric}={row['fp32']:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    row["settings"] = {}
    row["qat"] = {}
    int8 = None
    train_ds = None
    for label, spec in SETTINGS:
        if args.settings and label not in args.settings:
            continue
        t = time.perf_counter()
        result = _quantize(graph, spec, calib, args.calibration)
        value = evaluate(result.graph, test_ds, metric, limit=n_test, batch_size=100).value
        row["settings"][label] = {"value": value,
                                  "speedup": result.stats["theoretical_speedup"],
                                  "float_ops": result.stats["float_ops"]}
        if label == "8/8":
            int8 = result.graph
        print(f"[{name}] {label:22s} {metric}={value:.4f} theoretical x"
              f"{result.stats['theoretical_speedup']:.1f} ({time.perf_counter() - t:.0f} s)",
              flush=True)
        if args.qat_batches > 0 and label in args.qat_settings:
            from compiler.torch import finetune

            if train_ds is None:
                train_ds = load_dataset(entry["dataset"], "train")
            t = time.perf_counter()
            tuned = finetune(result.graph, train_ds, epochs=1, lr=args.qat_lr,
                             batch_size=args.qat_batch_size, max_batches=args.qat_batches, seed=0)
            q_value = evaluate(tuned, test_ds, metric, limit=n_test, batch_size=100).value
            row["qat"][label] = {"value": q_value, "ptq": value, "batches": args.qat_batches,
                                 "batch_size": args.qat_batch_size, "lr": args.qat_lr,
                                 "seconds": round(time.perf_counter() - t, 1)}
            print(f"[{name}] {label:22s} QAT ({args.qat_batches} x {args.qat_batch_size} train "
                  f"images) {metric}={q_value:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    if args.repeat > 0 and int8 is None:  # 8/8 not scored in this run: built for timing
        int8 = _quantize(graph, SETTINGS[0][1], calib, args.calibration).graph
    if args.repeat > 0 and int8 is not None:
        from passes.fold_bn import FoldBatchNorm

        fgraph = graph.clone()
        FoldBatchNorm().run(fgraph, PassContext())
        x = test_ds.inputs(0, 1)
        row["latency_fp32_ms"], row["latency_int8_ms"] = _latency(fgraph, int8, x, args.repeat)
        print(f"[{name}] host latency (TVM, untuned) fp32 {row['latency_fp32_ms']:.3f} ms, "
              f"int8 {row['latency_int8_ms']:.3f} ms", flush=True)
    return row


def bench_model_file(path: Path, args) -> dict:
    """Fallback without trained baselines: random data, top-1 agreement with the float model."""
    from compiler.batching import with_batch_size
    from compiler.interpreter import Interpreter

    graph = import_model(path)
    shape = graph.inputs[0].shape
    rng = np.random.default_rng(0)
    name = graph.inputs[0].name
    calib = [{name: rng.standard_normal((16,) + shape[1:]).astype(np.float32)}]
    n = 16 if args.quick else 64
    xs = rng.standard_normal((n,) + shape[1:]).astype(np.float32)
    ref = Interpreter(with_batch_size(graph, n)).run({name: xs})[0].argmax(axis=1)
    row = {"model": path.stem, "dataset": "random", "metric": "agreement", "test_samples": n,
           "calib_samples": 16, "fp32": 1.0, "settings": {}}
    int8 = None
    for label, spec in SETTINGS:
        result = _quantize(graph, spec, calib, args.calibration)
        out = Interpreter(with_batch_size(result.graph, n)).run({name: xs})[0].argmax(axis=1)
        row["settings"][label] = {"value": float(np.mean(out == ref)),
                                  "speedup": result.stats["theoretical_speedup"],
                                  "float_ops": result.stats["float_ops"]}
        if label == "8/8":
            int8 = result.graph
        print(f"[{path.stem}] {label:22s} agreement={row['settings'][label]['value']:.3f} "
              f"x{result.stats['theoretical_speedup']:.1f}", flush=True)
    if args.repeat > 0:
        from passes.fold_bn import FoldBatchNorm

        fgraph = graph.clone()
        FoldBatchNorm().run(fgraph, PassContext())
        row["latency_fp32_ms"], row["latency_int8_ms"] = _latency(fgraph, int8, xs[:1], args.repeat)
    return row


def table(rows: list[dict]) -> str:
    labels = [label for label, _ in SETTINGS if any(label in r["settings"] for r in rows)]
    head = "| model | metric | fp32 | " + " | ".join(labels) + " | host fp32 / int8 (ms) |"
    lines = [head, "|" + " --- |" * (len(labels) + 4)]
    for r in rows:
        cells = [f"{r['settings'][lab]['value']:.4f} (x{r['settings'][lab]['speedup']:.1f})"
                 if lab in r["settings"] else "-" for lab in labels]
        lat = (f"{r['latency_fp32_ms']:.2f} / {r['latency_int8_ms']:.2f}"
               if "latency_int8_ms" in r else "-")
        lines.append(f"| {r['model']} | {r['metric']} (n={r['test_samples']}) | {r['fp32']:.4f} | "
                     + " | ".join(cells) + f" | {lat} |")
    qat_labels = [lab for lab in labels if any(lab in r.get("qat", {}) for r in rows)]
    if qat_labels:
        lines += ["", "Fine-tuned (QAT on the train split; batches x batch size, lr): "
                  "PTQ -> QAT", "", "| model | fp32 | QAT budget | " + " | ".join(qat_labels)
                  + " |", "|" + " --- |" * (len(qat_labels) + 3)]
        for r in rows:
            if not r.get("qat"):
                continue
            first = next(iter(r["qat"].values()))
            cells = [(f"{r['qat'][lab]['ptq']:.4f} -> {r['qat'][lab]['value']:.4f}"
                      if lab in r.get("qat", {}) else "-") for lab in qat_labels]
            lines.append(f"| {r['model']} | {r['fp32']:.4f} | {first['batches']} x "
                         f"{first['batch_size']}, lr {first['lr']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's options parsed from ``argv`` with `main`'s defaults filled in, for
    `bench_baseline` from another script (benchmarks/seeds.py)."""
    return _finish(_parser(), _parser().parse_args(argv or []))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baselines", type=Path, default=ROOT / "baselines")
    ap.add_argument("--only", nargs="*", help="model names (baselines.json keys)")
    ap.add_argument("--quick", action="store_true", help="calib 200, test 1000 (seg 200), 5 timings")
    ap.add_argument("--calib", type=int, default=None)
    ap.add_argument("--test", type=int, default=None)
    ap.add_argument("--seg-test", type=int, default=None, dest="seg_test")
    ap.add_argument("--repeat", type=int, default=None, help="latency timings (0: skip)")
    ap.add_argument("--calibration", default="percentile",
                    choices=["minmax", "percentile", "entropy", "mse"],
                    help="activation ranges (default percentile: the best at 5/5 on the "
                         "full test sets, see benchmarks/README.md)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--qat-batches", type=int, default=0, dest="qat_batches",
                    help="also fine-tune (QAT) the --qat-settings for N train batches (0: off)")
    ap.add_argument("--qat-settings", default=";".join(QAT_DEFAULT), dest="qat_settings",
                    help=f"';'-separated setting labels to fine-tune (default: "
                         f"{';'.join(QAT_DEFAULT)})")
    ap.add_argument("--qat-lr", type=float, default=3e-3, dest="qat_lr")
    ap.add_argument("--qat-batch-size", type=int, default=64, dest="qat_batch_size")
    ap.add_argument("--settings", default=None,
                    help="';'-separated setting labels to run (default: all)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (interpreter convolutions, fine-tuning)")
    return ap


def _finish(ap: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Split the ';'-lists and fill the quick/full defaults (calib, test, repeat)."""
    args.qat_settings = [lab.strip() for lab in args.qat_settings.split(";") if lab.strip()]
    args.settings = ([lab.strip() for lab in args.settings.split(";") if lab.strip()]
                     if args.settings else None)
    unknown = sorted((set(args.qat_settings) | set(args.settings or []))
                     - {label for label, _ in SETTINGS})
    if unknown:
        ap.error(f"--settings/--qat-settings: unknown setting(s) {unknown}; settings: "
                 f"{', '.join(label for label, _ in SETTINGS)}")
    args.calib = args.calib or (200 if args.quick else 1000)
    args.test = args.test or (1000 if args.quick else 10_000)
    args.seg_test = args.seg_test or (200 if args.quick else 2000)
    args.repeat = args.repeat if args.repeat is not None else (5 if args.quick else 20)
    return args


def main(argv=None) -> int:
    ap = _parser()
    args = _finish(ap, ap.parse_args(argv))
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    rows = []
    json_path = args.baselines / "baselines.json"
    if json_path.exists():
        entries = json.loads(json_path.read_text())
        for name, entry in entries.items():
            if args.only and name not in args.only:
                continue
            rows.append(bench_baseline(name, entry, args.baselines, args))
    else:
        print(f"{json_path} not found: falling back to models/*.onnx with random data "
              "(agreement with float, not accuracy)", flush=True)
        for path in sorted((ROOT / "models").glob("*_tiny.onnx")):
            if args.only and path.stem not in args.only:
                continue
            rows.append(bench_model_file(path, args))
    print()
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

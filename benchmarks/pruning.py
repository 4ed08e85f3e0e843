"""Pruning on the trained Fashion-MNIST baselines: accuracy, size, MACs and latency.

    python benchmarks/pruning.py [--quick] [--models resnet_fmnist,vgg_fmnist]
                                 [--datasets fashion-mnist,mnist] [--repeat 30]
                                 [--baselines baselines/baselines.json] [--json out.json]

For every classification model of ``--datasets`` (default Fashion-MNIST) listed in
``baselines/baselines.json``:

1. structured filter pruning (``prune``, Mean Weight) at several ratios: test accuracy
   without and with fine-tuning, params, MACs, host latency against the unpruned model
   measured the same way in the same run: our build (TVM, ``fold-bn``, untuned) and
   onnxruntime on the exported graph, ``--threads`` threads each, median of ``--repeat``
   runs.  Untuned TVM kernels are far from optimal and their speed varies erratically with
   channel counts, so its speedups can exceed the MACs ratio; onnxruntime's column is the
   speedup on a well-optimized runtime;
2. the largest filter-pruning ratio within 1 % accuracy drop (``prune-search``, half-interval
   search on the ``calib`` split, with and without fine-tuning), its test accuracy and
   measured speedup;
3. the largest magnitude sparsity within 1 % (``prune-search{method=magnitude}``, global);
4. Mean Weight vs L1 vs L2 vs BN scale vs random at the same budget (ratio 0.5);
5. T-sensitive (per-group ratios within a 1 % threshold).

Selection and searches use the ``calib`` split (``load_fashion_mnist("calib")``); reported
accuracies use ``test``; fine-tuning uses ``train`` (``--ft-epochs`` epochs, Adam at
``--ft-lr`` with a cosine schedule, BN folded first; every fine-tuned number in the tables,
including each fine-tuned search probe, gets this budget).  ``--quick`` uses subsets
(calib 1000, test 2000) and 100 fine-tuning batches; full runs drive the searches
with ``--calib`` images and score the full test set.  When ``baselines.json`` is missing the script says so and trains a stand-in
(a small VGG-style CNN trained here on Fashion-MNIST) so the pipeline still runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the repository importable

import compiler  # noqa: E402
from benchmarks.common import fmt_table, load_baselines, time_ort  # noqa: E402
from compiler.analysis import model_stats  # noqa: E402
from compiler.datasets import load_dataset  # noqa: E402
from compiler.evaluate import evaluate  # noqa: E402
from compiler.pass_manager import PassContext  # noqa: E402
from compiler.torch import finetune  # noqa: E402
from passes.fold_bn import FoldBatchNorm  # noqa: E402
from passes.pruning import layer_sensitivity, prune_graph, search_rate  # noqa: E402
from passes.pruning.sensitivity import choose_ratios  # noqa: E402


def stand_in(train, quick: bool):
    """A small VGG-style CNN (conv-relu x2, pool, conv-relu x2, pool, Flatten-Gemm-Gemm)
    built with onnx.helper and trained here; only used while baselines/ is missing."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def param(name, shape, fan_in):
        a = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(a, name))
        return name

    def zeros(name, n):
        inits.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
        return name

    x, cin = "input", 1
    for i, (cout, pool) in enumerate([(16, False), (16, True), (32, False), (32, True)]):
        w = param(f"conv{i}.weight", (cout, cin, 3, 3), cin * 9)
        nodes.append(helper.make_node("Conv", [x, w, zeros(f"conv{i}.bias", cout)], [f"c{i}"],
                                      name=f"conv{i}", kernel_shape=[3, 3], pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x, cin = f"r{i}", cout
        if pool:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], name=f"pool{i}",
                                          kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{i}"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flat", param("fc1.weight", (64, 32 * 49), 32 * 49),
                                           zeros("fc1.bias", 64)], ["h"], name="fc1", transB=1))
    nodes.append(helper.make_node("Relu", ["h"], ["hr"], name="relu_fc"))
    nodes.append(helper.make_node("Gemm", ["hr", param("fc2.weight", (10, 64), 64),
                                           zeros("fc2.bias", 10)], ["logits"], name="fc2",
                                  transB=1))
    model = helper.make_model(helper.make_graph(
        nodes, "vgg_standin", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                             [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    g = compiler.import_model(model)
    return finetune(g, train, epochs=1 if quick else 3, lr=2e-3,
                    max_batches=400 if quick else None)


class Bench:
    """Data splits of one data set plus the measurements every table uses."""

    def __init__(self, args, dataset: str = "fashion-mnist", scorer=None):
        """``scorer(graph, dataset) -> float`` (default: `evaluate`'s top-1, the
        interpreter); benchmarks/seeds.py passes the faster torch-module scorer."""
        self.args = args
        self.scorer = scorer or (lambda g, data: evaluate(g, data).value)
        self.quick = args.quick
        self.dataset = dataset
        calib = load_dataset(dataset, "calib")
        test = load_dataset(dataset, "test")
        self.train = load_dataset(dataset, "train")
        n_calib = 1000 if self.quick else args.calib
        self.calib = calib.subset(n_calib, seed=0) if n_calib < len(calib) else calib
        self.test = test.subset(2000, seed=0) if self.quick else test
        self.ft_batches = 100 if self.quick else None  # None: whole epochs
        self.ft_epochs = 1 if self.quick else args.ft_epochs
        self.ctx_options = {"train_data": self.train, "finetune_max_batches": self.ft_batches,
                            "finetune_lr": args.ft_lr}

    def acc(self, g, data=None) -> float:
        return self.scorer(g, data or self.test)

    def acc_calib(self, g) -> float:
        return self.scorer(g, self.calib)

    def tune(self, g):
        g = FoldBatchNorm()(g.clone(), PassContext()).graph
        return finetune(g, self.train, epochs=self.ft_epochs, lr=self.args.ft_lr,
                        max_batches=self.ft_batches)

    def latency(self, g) -> "Latency":
        """`host_latency` of ``g`` on the first test image."""
        return host_latency(g, self.test.inputs(0, 1), self.args.repeat, self.args.threads)


def host_latency(g, x: np.ndarray, repeat: int, threads: int) -> "Latency":
    """Median host latency of ``g`` compiled by us (TVM, untuned, ``fold-bn``) and run by
    onnxruntime (the exported graph), same input ``x``, same thread count."""
    import tempfile

    cm = compiler.compile(g, target="host", passes=["fold-bn"])
    feed = {cm.input_names[0]: x}
    cm.benchmark(repeat=3, inputs=feed)  # warm-up
    tvm_ms = cm.benchmark(repeat=repeat, inputs=feed).median * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        path = cm.export_onnx(Path(tmp) / "pruned.onnx")
        ort_ms = float(np.median(time_ort(path, feed, repeat, threads))) * 1e3
    return Latency(tvm_ms, ort_ms)


class Latency:
    """Milliseconds on the host: our TVM build and onnxruntime on the same graph."""

    def __init__(self, tvm_ms: float, ort_ms: float):
        self.tvm, self.ort = tvm_ms, ort_ms

    def __str__(self) -> str:
        return f"{self.tvm:.3f} / {self.ort:.3f}"

    def speedup(self, base: "Latency") -> str:
        return f"{base.tvm / self.tvm:.2f}x / {base.ort / self.ort:.2f}x"

    def to_dict(self) -> dict:
        return {"latency_ms": self.tvm, "ort_latency_ms": self.ort}


LAT, SPEED = "latency ms TVM / ORT", "speedup TVM / ORT"


def _speedups(base: dict, row: dict) -> str:
    return (f"{base['latency_ms'] / row['latency_ms']:.2f}x / "
            f"{base['ort_latency_ms'] / row['ort_latency_ms']:.2f}x")


def pct(x) -> str:
    return f"{100 * x:.2f}"


def bench_model(b: Bench, name: str, graph) -> dict:
    t0 = time.time()
    out = {"model": name}
    base_test, base_calib = b.acc(graph), b.acc_calib(graph)
    st0 = model_stats(graph)
    lat0 = b.latency(graph)
    out.update(base_test=base_test, base_calib=base_calib, params=st0.params, macs=st0.macs,
               **lat0.to_dict())
    print(f"\n## {name}: test top-1 {pct(base_test)} %, calib {pct(base_calib)} %, "
          f"params {st0.params}, MACs {st0.macs}, host latency TVM / ORT {lat0} ms", flush=True)

    sections = b.args.sections
    rt = b.args.round_to
    # 1. ratio sweep
    ratios = ([0.25, 0.5, 0.75] if b.quick else b.args.ratios) if "sweep" in sections else []
    rows = [["0 (unpruned)", pct(base_test), "-", st0.params, st0.macs, str(lat0), "1.00x"]]
    sweep = []
    for r in ratios:
        g, st = prune_graph(graph.clone(), ratio=r, criterion="mean_weight", round_to=rt)
        a = b.acc(g)
        a_ft = b.acc(b.tune(g))
        lat = b.latency(g)
        sweep.append(dict(ratio=r, acc=a, acc_ft=a_ft, params=st["params"][1],
                          macs=st["macs"][1], **lat.to_dict()))
        rows.append([r, pct(a), pct(a_ft), st["params"][1], st["macs"][1], str(lat),
                     lat.speedup(lat0)])
        print(f"  ratio {r}: {pct(a)} / ft {pct(a_ft)}", flush=True)
    if sweep:
        out["sweep"] = sweep
        print(f"\nFilter pruning (Mean Weight, uniform ratio per group, round_to={rt}); "
              "accuracy = test top-1 %")
        print(fmt_table(["ratio", "acc", "acc fine-tuned", "params", "MACs", LAT, SPEED], rows))

    # 2. largest filter ratio within 1 % (on calib), without / with fine-tuning
    steps = 4 if b.quick else b.args.steps
    srows = []
    searches = [(0, "uniform"), (1, "uniform")] + [(1, o) for o in b.args.objectives]
    for ft, objective in searches if "search" in sections else []:
        best, st = search_rate(graph, b.acc_calib, max_drop=0.01, method="structured",
                               steps=steps, finetune_epochs=ft * b.ft_epochs,
                               objective=objective, options=b.ctx_options, round_to=rt,
                               baseline=base_calib)
        a = b.acc(best)
        lat = b.latency(best)
        label = "structured" + (f" round_to={rt}" if rt > 1 else "") + (
            " + fine-tune" if ft else "") + (
            f" (objective={objective}: rate = MACs removed)" if objective != "uniform" else "")
        srows.append([label, st["rate"], pct(a),
                      pct(base_test - a), st.get("params", [0, st0.params])[1],
                      st.get("macs", [0, st0.macs])[1], str(lat), lat.speedup(lat0)])
        key = f"search_structured_ft{ft}" + ("" if objective == "uniform" else f"_{objective}")
        out[key] = dict(rate=st["rate"], acc=a, **lat.to_dict(), probes=st["probes"],
                        params=st.get("params", [0, st0.params])[1],
                        macs=st.get("macs", [0, st0.macs])[1])
    # 3. magnitude sparsity within 1 %
    for ft in (0, 1) if "magnitude" in sections else ():
        best, st = search_rate(graph, b.acc_calib, max_drop=0.01, method="magnitude",
                               scope="global", steps=steps + 1,
                               finetune_epochs=ft * b.ft_epochs,
                               options=b.ctx_options, baseline=base_calib)
        a = b.acc(best)
        srows.append([f"magnitude (global){' + fine-tune' if ft else ''}",
                      st.get("sparsity", 0.0), pct(a), pct(base_test - a), st0.params,
                      st0.macs, "-", "-"])
        out[f"search_magnitude_ft{ft}"] = dict(rate=st["rate"], sparsity=st.get("sparsity", 0),
                                               acc=a, probes=st["probes"])
    if srows:
        print("\nLargest rate within 1 % top-1 drop (half-interval search on calib; test "
              "reported; magnitude rate = achieved sparsity, shapes unchanged)")
        print(fmt_table(["method", "rate", "test acc", "drop (pts)", "params", "MACs", LAT,
                         SPEED], srows))

    # 4. criteria at the same budget
    crow = []
    for crit in ("mean_weight", "l1", "l2", "bn_scale", "random") if "criteria" in sections else ():
        g, st = prune_graph(graph.clone(), ratio=0.5, criterion=crit, seed=0)
        a = b.acc(g)
        a_ft = b.acc(b.tune(g)) if crit in b.args.ft_criteria else None
        crow.append([crit, pct(a), "-" if a_ft is None else pct(a_ft), st["params"][1],
                     st["macs"][1]])
        out.setdefault("criteria", {})[crit] = dict(acc=a, acc_ft=a_ft)
    if crow:
        print("\nCriteria at ratio 0.5 (same budget); test top-1 %")
        print(fmt_table(["criterion", "acc", "acc fine-tuned", "params", "MACs"], crow))

    # 5. T-sensitive
    tr = [0.25, 0.5, 0.75] if b.quick else b.args.ratios
    chosen = None
    if "tsens" in sections:
        base, table = layer_sensitivity(graph, b.acc_calib, tr, stop_above=0.01,
                                        baseline=base_calib)
        chosen = choose_ratios(table, 0.01)
    if chosen:
        g, st = prune_graph(graph.clone(), ratios=chosen)
        a, lat = b.acc(g), b.latency(g)
        print(f"\nT-sensitive (threshold 1 %, ratios {tr}): {len(chosen)}/{len(table)} groups "
              f"pruned, test {pct(a)} % (drop {pct(base_test - a)} pts), params "
              f"{st['params'][1]}, MACs {st['macs'][1]}, latency TVM / ORT {lat} ms "
              f"({lat.speedup(lat0)})")
        out["t_sensitive"] = dict(ratios=chosen, acc=a, params=st["params"][1],
                                  macs=st["macs"][1], **lat.to_dict())
    elif chosen is not None:
        print("\nT-sensitive (threshold 1 %): no group can be pruned within the threshold")
    print(f"({name}: {time.time() - t0:.0f} s)", flush=True)
    return out


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's options parsed from ``argv`` (defaults for the rest), for `Bench`
    from another script (benchmarks/seeds.py) without running `main`."""
    return _parser().parse_args(argv or [])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="subsets, fewer ratios, short tuning")
    ap.add_argument("--models", default="", help="comma-separated names from baselines.json")
    ap.add_argument("--baselines", default=str(ROOT / "baselines" / "baselines.json"))
    ap.add_argument("--datasets", default="fashion-mnist",
                    help="data sets whose baselines to run (e.g. fashion-mnist,mnist)")
    ap.add_argument("--repeat", type=int, default=30, help="latency repeats (median)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads of both runtimes in the latency columns")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--ft-epochs", type=int, default=1, dest="ft_epochs",
                    help="fine-tuning epochs on the train split (Adam, cosine schedule)")
    ap.add_argument("--ft-lr", type=float, default=3e-3, dest="ft_lr")
    ap.add_argument("--ratios", type=lambda s: [float(r) for r in s.split(",")],
                    default=[0.25, 0.5, 0.75], help="sweep / T-sensitive ratios")
    ap.add_argument("--steps", type=int, default=4, help="half-interval search probes")
    ap.add_argument("--round-to", type=int, default=1, dest="round_to",
                    help="surviving channel counts rounded up to a multiple of this (sweep "
                         "and structured searches)")
    ap.add_argument("--sections", default="sweep,search,magnitude,criteria,tsens",
                    type=lambda s: set(s.split(",")),
                    help="which tables to compute (default: all)")
    ap.add_argument("--calib", type=int, default=2000,
                    help="calib images that drive the searches (full runs)")
    ap.add_argument("--objectives", default=[], type=lambda s: [o for o in s.split(",") if o],
                    help="extra fine-tuned structured searches with objective=params|macs")
    ap.add_argument("--ft-criteria", default="mean_weight,random", dest="ft_criteria",
                    type=lambda s: s.split(","),
                    help="criteria that also get a fine-tuned column at ratio 0.5")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TVM_NUM_THREADS", str(args.threads))
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    path = Path(args.baselines)
    jobs = []
    if path.exists():
        for name, f, ds in load_baselines(path, datasets):
            if args.models and name not in args.models.split(","):
                continue
            if not f.exists():
                print(f"skip {name}: {f} is missing")
                continue
            jobs.append((name, f, ds))
    benches: dict[str, Bench] = {}
    results = []
    if not jobs:
        print(f"NOTE: no baselines for {datasets} in {path}; training a stand-in (a small "
              "VGG-style CNN trained on Fashion-MNIST train) so the pipeline runs.")
        b = benches.setdefault("fashion-mnist", Bench(args, "fashion-mnist"))
        jobs.append(("vgg_standin", stand_in(b.train, b.quick), "fashion-mnist"))
    for name, model, ds in jobs:
        b = benches.get(ds) or benches.setdefault(ds, Bench(args, ds))
        print(f"\n# {name} on {ds} ({'quick' if b.quick else 'full'}: calib {len(b.calib)}, "
              f"test {len(b.test)}; fine-tuning {b.ft_epochs} epoch(s), lr {args.ft_lr}"
              + (f", capped at {b.ft_batches} batches of 64)" if b.ft_batches else ")"))
        graph = model if isinstance(model, compiler.Graph) else compiler.import_model(model)
        results.append(bench_model(b, name, graph))
    summary = []
    for r in results:
        if "search_structured_ft0" not in r or "search_magnitude_ft0" not in r:
            continue
        s0, s1 = r["search_structured_ft0"], r["search_structured_ft1"]
        m0, m1 = r["search_magnitude_ft0"], r["search_magnitude_ft1"]
        summary.append([r["model"], pct(r["base_test"]),
                        f"{s0['rate']} ({_speedups(r, s0)})", f"{s1['rate']} ({_speedups(r, s1)})",
                        f"{100 * m0['sparsity']:.1f} %", f"{100 * m1['sparsity']:.1f} %"])
    if summary:
        print("\nSummary: largest rate within 1 % drop (measured host speedup: our untuned TVM "
              "build / onnxruntime)")
        print(fmt_table(["model", "base acc", "filter ratio", "filter ratio + ft",
                         "magnitude sparsity", "magnitude + ft"], summary))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

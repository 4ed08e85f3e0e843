"""Deep-Compression-style pipeline on the trained baselines: prune -> share -> code.

    python benchmarks/compression.py [--quick] [--models lenet5_mnist,vgg_fmnist]
                                     [--objective size|speed] [--json out.json]

For each classification baseline of ``baselines/baselines.json`` (LeNet-5 on MNIST and the
four Fashion-MNIST models by default):

1. ``fold-bn`` (exact), then **prune**: iterative magnitude pruning with ``--epochs``
   epochs of fine-tuning after every step.  The largest layer keeps a density ``d`` of its
   weights, a layer n times smaller keeps ``d * sqrt(n)`` (small layers cost little memory
   and much accuracy; global thresholds emptied LeNet's second conv first).  ``d`` halves
   per step (50 %, 25 %, 12.5 %, ...) while the ``calib`` accuracy stays within the pruning
   budget (``--prune-share`` of ``max_drop``) of the baseline's (``--start``, ``--step``,
   ``--epochs``, ``--lr`` set the schedule); then a half-interval search
   (2 probes, geometric midpoints, each fine-tuned) between the last feasible and the
   first infeasible ``d``.  ``max_drop`` is 0.5 % for MNIST and 1 %
   for Fashion-MNIST (the issue's targets).
   The chosen graph is retrained ``--final-epochs`` more epochs, then ``prune-unused``
   removes (exactly) the channels and neurons whose every outgoing weight was pruned.
2. **share**: ``share-weights`` per layer, k = 4, 8, 16, 32 clusters for fully connected
   layers and max(k, 16) for convolutions (``--conv-clusters``), ``bias_clusters=8``
   (``--bias-clusters``; 0 keeps fp32 biases), ``bf16=true``; with ``--small-layer N`` a
   layer of at most N weights gets at least ``--small-clusters`` (64) entries (the first
   conv and MobileNet's depthwise convs, whose weights span a wide range after folding
   BatchNorm and suffer from a 16-entry codebook, cost little at any k), and ``--share-epochs`` epochs of
   centroid fine-tuning each (rate ``--share-lr``); the smallest k whose ``calib``
   accuracy is within ``--share-budget`` of ``max_drop`` is kept.  (Both budgets default
   to the whole ``max_drop``; the best of several noisy ``calib`` probes can overstate the
   ``test`` accuracy, so lower them to be conservative.)
3. **code**: ``dedup-constants`` (one ``0`` and one ``6`` for all of ReLU6's ``Clip`` bounds),
   then the lossless container of `compiler.compression` over every constant of the
   graph (weights, codebooks, indices, biases, shape operands, names, checksum); it is
   decoded again and checked bit for bit.

Sizes per stage (the table's columns):

* ``fp32``: the parameter bytes of the original ONNX model (every float weight, bias and BN
  tensor, 4 bytes each) -- the numerator of the ratio;
* ``pruned``: after pruning, stored as Deep Compression's fixed-width sparse format (8-bit
  relative index + 32-bit value per kept weight, fillers for longer gaps; dense when
  smaller), biases as fp32;
* ``shared``: the same with ceil(log2 k)-bit values plus the codebooks;
* ``coded``: the real container's byte count.  **ratio = fp32 / coded.**

Selection uses the ``calib`` split; fine-tuning uses ``train``; reported accuracies are
top-1 on the full ``test`` split (10,000 images) computed with the torch module of the
graph (`compiler.torch.to_torch`, the same function as the interpreter; the
baseline column is measured the same way).  ``--quick``: 2,000 test and 1,000 calib images,
at most 100 fine-tuning batches per step, k in (8, 16) -- a smoke run, not the table.

``--channels r`` first removes ``r`` of the parameters as whole channels (structured
filter pruning, ``prune{objective=params, criterion=l1}``) and fine-tunes ``--channel-epochs``
epochs; the budgets stay relative to the unpruned baseline.  ``--distill w`` makes every
fine-tuning (channels, pruning steps, final retrain, centroids) distil from the BN-folded
original model (weight ``w`` on the soft labels, ``--temperature``).  ``--save-pruned DIR``
keeps each pruned, retrained graph; ``--from-pruned DIR`` starts from it (sharing and coding
only, to compare sharing options on one pruning result).

``--objective speed`` runs the other end of the memory/time trade-off: structured filter
pruning (``prune-search{method=structured, objective=macs}``, fine-tuned) + ``quantize{bits=8}``
+ the same coder, and reports host latency (TVM) of the fp32 and the result next to the size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: make the repository importable

import compiler  # noqa: E402,F401
from benchmarks.common import fmt_table, load_baselines  # noqa: E402
from compiler.analysis import model_stats  # noqa: E402
from compiler.compression import compress_graph, decode_container, sparse_bytes  # noqa: E402
from compiler.datasets import load_dataset  # noqa: E402
from compiler.onnx_io import export_model, import_model  # noqa: E402
from compiler.pass_manager import PassContext, parse_pass  # noqa: E402
from compiler.torch import finetune, to_torch  # noqa: E402
from passes.gradual_prune import DeepCompression  # noqa: E402
from passes.pruning import search_rate  # noqa: E402

DEFAULT_MODELS = ["lenet5_mnist", "vgg_fmnist", "resnet_fmnist", "mobilenet_fmnist",
                  "plaincnn_fmnist"]
MAX_DROP = {"mnist": 0.005, "fashion-mnist": 0.01}


def accuracy(graph, dataset, limit: int | None = None, batch: int = 500,
             metric: str = "top1") -> float:
    """``metric`` (top-1 or macro F1) of ``graph`` on the first ``limit`` samples, by its
    torch module (no grad; several times faster than the interpreter on float graphs)."""
    import torch

    from compiler.evaluate import _metric_value, confusion_matrix

    module = to_torch(graph).eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    k = dataset.num_classes
    cm = np.zeros((k, k), np.int64)
    with torch.no_grad():
        for start in range(0, n, batch):
            x = torch.from_numpy(dataset.inputs(start, min(start + batch, n)))
            cm += confusion_matrix(dataset.labels[start:start + len(x)],
                                   module(x).argmax(1).numpy(), k)
    return _metric_value(metric, cm)


def stage_bytes(graph, stage: str) -> dict[str, int]:
    """Per constant: fp32 dense bytes (``dense``) or fixed-width sparse bytes."""
    out = {}
    for v in graph.constants:
        if not (v.uses or v.is_graph_output):
            continue
        if stage == "pruned":  # kept values at full width
            out[v.name] = sparse_bytes(v.const, 8, v.dtype.itemsize * 8)
        else:
            out[v.name] = sparse_bytes(v.const, 8)
    return out


def channel_stage(graph, ratio, train, epochs, lr, ft_batches, evaluate, log,
                  teacher: dict | None = None):
    """Structured filter pruning before magnitude pruning: ``prune{objective=params,
    criterion=l1}`` removes ``ratio`` of the parameters as whole channels (a channel takes
    its filter, bias, depthwise filter and consumers' input slices with it, none of which
    the sparse coder would store for free), then ``epochs`` of fine-tuning."""
    from passes.pruning.structured import prune_graph

    graph, st = prune_graph(graph.clone(), ratio=ratio, objective="params", criterion="l1")
    log(f"    channels {st['layers']} params {st['params']}: calib {evaluate(graph):.4f}")
    if epochs:
        graph = finetune(graph, train, epochs=epochs, lr=lr, max_batches=ft_batches,
                         **(teacher or {}))
    acc = evaluate(graph)
    log(f"    channels fine-tuned {epochs} epochs: calib {acc:.4f}")
    return graph, {"ratio": ratio, "layers": st["layers"], "params": st["params"],
                   "calib": round(acc, 5)}


def setup(onnx_path, ds_name, args):
    """(fp32 bytes, fold-bn graph, train, test, test limit, fine-tuning batch cap, max_drop,
    calib evaluate callback, baseline test accuracy)."""
    original = import_model(onnx_path)
    fp32 = model_stats(original).param_bytes
    graph = parse_pass("fold-bn")(original.clone(), PassContext()).graph
    train = load_dataset(ds_name, "train")
    calib, test = load_dataset(ds_name, "calib"), load_dataset(ds_name, "test")
    calib_n = 1000 if args.quick else None
    # ``full_test`` (seeds.py): a quick schedule still scored on the whole test split
    test_n = 2000 if args.quick and not getattr(args, "full_test", False) else None
    ft = 100 if args.quick else args.finetune_batches
    evaluate = lambda g: accuracy(g, calib, calib_n)  # noqa: E731
    return (fp32, graph, train, test, test_n, ft, MAX_DROP[ds_name], evaluate,
            accuracy(graph, test, test_n))


def run_size(name, onnx_path, ds_name, args, log) -> dict:
    """The size objective's JSON-ready result (see `compress`)."""
    return compress(name, onnx_path, ds_name, args, log)[0]


def compress(name, onnx_path, ds_name, args, log):
    """``(result, pruned graph, shared graph)``: the whole size pipeline on one model
    (``args``: this script's options; benchmarks/seeds.py builds them with `options`)."""
    t0 = time.time()
    fp32, graph, train, test, test_n, ft, max_drop, evaluate, base_test = \
        setup(onnx_path, ds_name, args)
    base_calib = evaluate(graph)
    log(f"{name}: fp32 {fp32} B, test {base_test:.4f}, calib {base_calib:.4f}")
    teacher = ({"teacher": graph, "distill": args.distill, "temperature": args.temperature}
               if args.distill else None)  # fine-tuning keywords: distil from the original
    channels = None
    if args.from_pruned:  # re-run sharing and coding on a saved pruning result
        graph = import_model(Path(args.from_pruned) / f"{name}.onnx")
        log(f"    pruned graph from {args.from_pruned}: calib {evaluate(graph):.4f}")
    elif args.channels:
        graph, channels = channel_stage(graph, args.channels, train, args.channel_epochs,
                                        args.lr, ft, evaluate, log, teacher)
    ks = (8, 16) if args.quick else (4, 8, 16, 32)
    dc = DeepCompression(max_drop=max_drop, prune_share=args.prune_share,
                         share_budget=args.share_budget, epochs=args.epochs, lr=args.lr,
                         start=args.start, step=args.step, final_epochs=args.final_epochs,
                         clusters=list(ks), share_epochs=args.share_epochs,
                         share_lr=args.share_lr, bias_clusters=args.bias_clusters,
                         conv_clusters=args.conv_clusters, small_layer=args.small_layer,
                         small_clusters=args.small_clusters, prune=not args.from_pruned)
    ctx = PassContext(evaluate=evaluate,
                      options={"train_data": train, "finetune_max_batches": ft,
                               "finetune_teacher": teacher, "baseline_accuracy": base_calib,
                               "log": log})
    res = dc(graph, ctx)
    shared, pruned, k = res.graph, res.stats["pruned"], res.stats["clusters"]
    rate, prune_hist = res.stats["rate"], res.stats["history"]["prune"]
    share_hist = res.stats["history"]["share"]
    if args.save_pruned and not args.from_pruned:
        Path(args.save_pruned).mkdir(parents=True, exist_ok=True)
        export_model(pruned, Path(args.save_pruned) / f"{name}.onnx")
    pruned_test = accuracy(pruned, test, test_n)
    layer_stats: dict = {}
    blob = compress_graph(shared, layer_stats)
    decoded = decode_container(blob, name)
    for v in shared.constants:  # the coder is lossless: check it bit for bit
        if v.name in decoded:
            assert decoded[v.name].tobytes() == v.const.tobytes(), v.name
    final_test = accuracy(shared, test, test_n)
    sizes = {"fp32": fp32, "pruned": sum(stage_bytes(pruned, "pruned").values()),
             "shared": sum(stage_bytes(shared, "shared").values()), "coded": len(blob)}
    weights = [v for v in shared.constants if v.const.ndim >= 2]
    nz = sum(int(np.count_nonzero(v.const)) for v in weights)
    total = sum(v.const.size for v in weights)
    per_layer = {n: {"fp32": int(original_bytes), "pruned": stage_bytes(pruned, "pruned").get(n),
                     "shared": stage_bytes(shared, "shared").get(n),
                     "coded": layer_stats[n]["bytes"], "method": layer_stats[n]["method"]}
                 for n, original_bytes in ((v.name, v.const.nbytes) for v in shared.constants)
                 if n in layer_stats}
    return {"model": name, "dataset": ds_name, "objective": "size", "sizes": sizes,
            "ratio": round(fp32 / len(blob), 2), "sparsity": round(1 - nz / total, 4),
            "prune_rate": None if rate is None else round(rate, 5), "clusters": k,
            "test": {"baseline": base_test, "pruned": pruned_test, "final": final_test},
            "drop": round(base_test - final_test, 5), "max_drop": max_drop,
            "test_samples": test_n or len(test),
            "channels": channels, "unused": res.stats.get("unused"),
            "history": {"prune": prune_hist, "share": share_hist}, "layers": per_layer,
            "seconds": round(time.time() - t0, 1)}, pruned, shared


def run_speed(name, onnx_path, ds_name, args, log) -> dict:
    """Structured pruning (MACs) + int8, coded; latency on host next to size."""
    from compiler.api import measure_latency_ms

    t0 = time.time()
    fp32, graph, train, test, test_n, ft, max_drop, evaluate, base_test = \
        setup(onnx_path, ds_name, args)
    calib = load_dataset(ds_name, "calib")
    pruned, st = search_rate(graph, evaluate, max_drop=args.prune_share * max_drop,
                             method="structured", objective="macs", steps=3 if args.quick else 4,
                             finetune_epochs=1,
                             options={"train_data": train, "finetune_max_batches": ft})
    log(f"    structured probes {st['probes']}")
    calib_data = [{graph.inputs[0].name: calib.inputs(i, i + 1)} for i in range(64)]
    q = parse_pass("quantize{bits=8}")(pruned.clone(), PassContext(calibration_data=calib_data)).graph
    from compiler.evaluate import evaluate as ref_evaluate

    final_test = ref_evaluate(q, test, limit=test_n or 2000).value
    q = parse_pass("dedup-constants")(q, PassContext()).graph
    blob = compress_graph(q)
    lat = [measure_latency_ms(graph), measure_latency_ms(q)]
    return {"model": name, "dataset": ds_name, "objective": "speed",
            "sizes": {"fp32": fp32, "coded": len(blob)}, "ratio": round(fp32 / len(blob), 2),
            "structured_rate": st["rate"], "macs": [model_stats(graph).macs, model_stats(q).macs],
            "latency_ms_host": [round(x, 3) for x in lat],
            "test": {"baseline": base_test, "final": final_test},
            "test_samples_final": test_n or 2000, "seconds": round(time.time() - t0, 1)}


def options(argv: list[str] | None = None) -> argparse.Namespace:
    """This script's options parsed from ``argv`` (defaults for the rest): the same flags
    from another script (benchmarks/seeds.py) without running `main`."""
    return _parser().parse_args(argv or [])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--objective", choices=["size", "speed"], default="size")
    ap.add_argument("--prune-share", type=float, default=1.0,
                    help="fraction of max_drop the pruning stage may use (calib)")
    ap.add_argument("--share-budget", type=float, default=1.0,
                    help="fraction of max_drop the shared model may lose in total (calib)")
    ap.add_argument("--share-epochs", type=int, default=1, help="centroid fine-tuning epochs")
    ap.add_argument("--share-lr", type=float, default=1e-4, help="centroid fine-tuning rate")
    ap.add_argument("--bias-clusters", type=int, default=8, help="clusters per bias vector")
    ap.add_argument("--conv-clusters", type=int, default=16,
                    help="least clusters per convolution")
    ap.add_argument("--small-layer", type=int, default=0,
                    help="layers with at most this many weights get --small-clusters (0: off)")
    ap.add_argument("--small-clusters", type=int, default=64,
                    help="least clusters of a small layer (--small-layer)")
    ap.add_argument("--channels", type=float, default=0.0,
                    help="fraction of the parameters removed as whole channels first (0: off)")
    ap.add_argument("--channel-epochs", type=int, default=4,
                    help="fine-tuning epochs after the channel pruning")
    ap.add_argument("--distill", type=float, default=0.0,
                    help="weight of knowledge distillation from the unpruned model in every "
                         "fine-tuning (0: plain cross-entropy)")
    ap.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    ap.add_argument("--save-pruned", default=None,
                    help="directory: write each model's pruned, retrained graph (MODEL.onnx)")
    ap.add_argument("--from-pruned", default=None,
                    help="directory written by --save-pruned: skip the channel and pruning "
                         "stages and share/code that graph")
    ap.add_argument("--final-epochs", type=int, default=2,
                    help="epochs of retraining at the chosen sparsity, before sharing")
    ap.add_argument("--finetune-batches", type=int, default=None,
                    help="cap on fine-tuning batches per step (default: a full epoch)")
    ap.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per pruning step")
    ap.add_argument("--start", type=float, default=0.5, help="first density of the largest layer")
    ap.add_argument("--step", type=float, default=0.5, help="density factor per pruning step")
    ap.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate (pruning)")
    ap.add_argument("--baselines", default=str(ROOT / "baselines" / "baselines.json"))
    ap.add_argument("--json", default=None)
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import torch

    torch.set_num_threads(1)
    wanted = [m for m in args.models.split(",") if m]
    found = {n: (p, ds) for n, p, ds in load_baselines(Path(args.baselines),
                                                       ["mnist", "fashion-mnist"])}
    missing = [m for m in wanted if m not in found]
    if missing:
        print(f"unknown or non-classification models: {missing}; have {sorted(found)}")
        return 2
    log = lambda s: print(s, flush=True)  # noqa: E731
    results = []
    for name in wanted:
        path, ds = found[name]
        run = run_size if args.objective == "size" else run_speed
        results.append(run(name, path, ds, args, log))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    if args.objective == "size":
        rows = [[r["model"], f"{r['sizes']['fp32']:,}", f"{r['sizes']['pruned']:,}",
                 f"{r['sizes']['shared']:,}", f"{r['sizes']['coded']:,}", f"{r['ratio']:.1f}x",
                 f"{100 * r['sparsity']:.1f}%", str(r["clusters"]),
                 f"{100 * r['test']['baseline']:.2f}", f"{100 * r['test']['pruned']:.2f}",
                 f"{100 * r['test']['final']:.2f}", f"{100 * r['drop']:+.2f}"] for r in results]
        print(fmt_table(["model", "fp32 B", "pruned B", "shared B", "coded B", "ratio",
                         "sparsity", "k", "base %", "pruned %", "final %", "drop"], rows))
        for r in results[:1]:
            lrows = [[n, str(l["fp32"]), str(l["pruned"]), str(l["shared"]), str(l["coded"]),
                      l["method"]] for n, l in r["layers"].items()]
            print(f"\n{r['model']} per tensor (bytes)")
            print(fmt_table(["tensor", "fp32", "pruned", "shared", "coded", "coding"], lrows))
    else:
        rows = [[r["model"], f"{r['sizes']['fp32']:,}", f"{r['sizes']['coded']:,}",
                 f"{r['ratio']:.1f}x", f"{r['structured_rate']:.3f}",
                 f"{r['macs'][0]:,} -> {r['macs'][1]:,}",
                 f"{r['latency_ms_host'][0]} -> {r['latency_ms_host'][1]}",
                 f"{100 * r['test']['baseline']:.2f}", f"{100 * r['test']['final']:.2f}"]
                for r in results]
        print(fmt_table(["model", "fp32 B", "coded B", "ratio", "filter rate", "MACs",
                         "host ms", "base %", "final %"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

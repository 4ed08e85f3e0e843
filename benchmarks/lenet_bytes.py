#!/usr/bin/env python
"""Container bytes of Caffe LeNet-5 against the density pruning reaches (no training).

    python benchmarks/lenet_bytes.py [--densities 0.05,0.02,0.01,0.005] [--k 4]

For each density ``d`` of the largest layer (`passes.gradual_prune.layer_prune`: a layer n
times smaller keeps ``d * sqrt(n)``): magnitude pruning, `prune_unused` (exact), weight
sharing as the ``deep-compression`` pass does it (`share_layers`: k for the fully connected
layers, max(k, 16) for the convolutions, 8 per bias vector, bfloat16 centroids), then the
lossless container.  No fine-tuning: the bytes depend on how many weights survive and where,
not on their trained values, so this says which density a ratio needs -- whether the
accuracy survives that density is what ``compression.py`` / ``seeds.py`` measure.  The
numerator is the fp32 parameter bytes of the ONNX file, as in ``compression.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.analysis import model_stats  # noqa: E402
from compiler.compression import compress_graph  # noqa: E402
from compiler.pass_manager import PassContext, parse_pass  # noqa: E402
from passes.gradual_prune import layer_prune, share_layers  # noqa: E402
from passes.pruning.unused import prune_unused  # noqa: E402

MODEL = ROOT / "baselines" / "lenet_caffe_mnist.onnx"


def sizes(density: float, k: int, graph=None) -> dict:
    """Bytes of the container after pruning to ``density``, prune-unused and sharing."""
    original = compiler.import_model(MODEL)
    fp32 = model_stats(original).param_bytes
    g = parse_pass("fold-bn")(original.clone(), PassContext()).graph if graph is None else graph
    g, _ = layer_prune(g.clone(), density)
    nz_before = sum(int(np.count_nonzero(n.inputs[1].const)) for n in g.nodes
                    if n.op_type in ("Conv", "Gemm"))
    g, unused = prune_unused(g)
    g = share_layers(g, k)
    g = parse_pass("dedup-constants")(g, PassContext()).graph
    coded = len(compress_graph(g))
    nz = sum(int(np.count_nonzero(n.inputs[1].const)) for n in g.nodes
             if n.op_type in ("Conv", "Gemm"))
    return {"density": density, "k": k, "nonzero_before_unused": nz_before, "nonzero": nz,
            "channels_removed": unused["channels_removed"], "coded": coded,
            "ratio": round(fp32 / coded, 1),
            "bits_per_nonzero": round(8 * coded / nz, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--densities", default="0.1,0.05,0.035,0.02,0.01,0.0075,0.005")
    ap.add_argument("--k", type=int, default=4)
    args = ap.parse_args(argv)
    print("| density | k | non-zeros (after prune-unused) | channels removed | container B | "
          "ratio | bits / non-zero |")
    print("|---|---|---|---|---|---|---|")
    for d in (float(x) for x in args.densities.split(",")):
        r = sizes(d, args.k)
        print(f"| {d:g} | {r['k']} | {r['nonzero_before_unused']:,} ({r['nonzero']:,}) | "
              f"{r['channels_removed']} | {r['coded']:,} | {r['ratio']}x | "
              f"{r['bits_per_nonzero']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

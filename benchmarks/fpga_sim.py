"""The simulated FPGA (fpga-sim analytical model) on the shipped baselines.

    python benchmarks/fpga_sim.py [--quick] [--parts xc7z020,xczu7ev] [--no-host]
                                  [--json out.json]

1. every ``baselines/*.onnx`` quantized at 8/8 (``quantize``), 4/4
   (``quantize{bits=4,act_bits=4}``) and binary weights (``quantize{bits=1}``, 8-bit
   activations) on each part: the fastest folding within FINN's default budget
   (0.7 LUT / 0.8 BRAM, URAM, DSP), its II, FPS and latency at 100 MHz, resources in %
   of the part, and the binding resource;
2. the VGG pruning comparison (the seed paper reports VGG16 pruned 14.5x costing 1.6x
   less on a CPU and 4.8x less on an FPGA): ``vgg_fmnist`` unpruned vs
   ``prune{ratio=...}``, both quantized 8/8: params ratio, simulated FPGA work ratio
   (sum of layer cycles at PE=SIMD=1) and II ratio under the budget, and (unless
   ``--no-host``; off with ``--quick``) the host latency ratio of the TVM builds
   (``compiler.compile(target="host")`` + ``benchmark()``);
3. CNV-W1A1 (finn-examples folding) rebuilt in our IR beside a published measurement.

Calibration uses random normal inputs (hardware cost depends on shapes, bits and zeros,
not on the scales).  Every FPGA time here is SIMULATED by the analytical model.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler import PassContext  # noqa: E402
from compiler.onnx_io import import_model  # noqa: E402

from targets.fpga_sim.cnv import FINN_EXAMPLES_FOLDING, build_cnv_w1a1  # noqa: E402
from targets.fpga_sim.design import build_design, design_from_pipeline  # noqa: E402
from targets.fpga_sim.folding import apply_user_folding, max_cycles, unity  # noqa: E402
from targets.fpga_sim.mapping import map_graph  # noqa: E402
from targets.fpga_sim.options import FpgaOptions, FpgaSimError  # noqa: E402
from targets.fpga_sim.parts import get_part  # noqa: E402

CONFIGS = {"8/8": "quantize", "4/4": "quantize{bits=4,act_bits=4}", "w1/a8": "quantize{bits=1}"}

#: Xilinx/BNN-PYNQ issue #26 (2018): the prebuilt CNV (W1A1, CIFAR-10) overlay on a PYNQ
#: board at 100 MHz, one image: "Inference took 1584 microseconds ... 631.31 images per
#: second" (includes the PS-side driver call).  BNN-PYNQ's CNV folding is the one
#: finn-examples ships (its config.h latencies equal our per-layer cycles).
PUBLISHED_CNV = {"source": "github.com/Xilinx/BNN-PYNQ/issues/26", "board": "PYNQ-Z1",
                 "fclk_mhz": 100, "batch1_latency_s": 1584e-6, "batch1_fps": 631.31}


def calib_for(graph, n=2, seed=0):
    rng = np.random.default_rng(seed)
    shape = tuple(graph.inputs[0].shape[1:])
    return [{graph.inputs[0].name: rng.standard_normal((n,) + shape).astype(np.float32)}]


def quantize(model, passes: list[str]):
    """``model`` (an ONNX path or a `Graph`) after ``passes``, calibrated on `calib_for`."""
    g = model if isinstance(model, compiler.Graph) else import_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = g if isinstance(model, compiler.Graph) else str(model)
        return compiler.optimize(src, passes, ctx=PassContext(calibration_data=calib_for(g)))[1]


def work_cycles(qgraph, sparse_skip: bool = False) -> int:
    """Simulated FPGA work of a quantized graph: the sum of its layers' cycles at
    PE=SIMD=1 (folding-independent); ``sparse_skip`` skips all-zero weight blocks (our
    extension of FINN's MVAU, see targets/fpga_sim/stages.py)."""
    return int(sum(s.cycles(1, 1) for s in map_graph(qgraph, sparse_skip=sparse_skip).stages))


def params(graph) -> int:
    return int(sum(v.const.size for v in graph.constants if v.const is not None and v.const.ndim >= 2))


def section_baselines(parts, quick):
    rows = []
    models = sorted((ROOT / "baselines").glob("*.onnx"))
    for path in models:
        for cfg, qspec in CONFIGS.items():
            t0 = time.time()
            g = quantize(path, ["fold-bn", qspec])
            for part in parts:
                try:
                    d = build_design(g, FpgaOptions(part=part))
                    u = d.utilization
                    rows.append([path.stem, cfg, part, "yes", d.bottleneck.split("/")[-1][:28],
                                 d.ii_cycles, f"{d.fps:,.0f}", f"{d.latency_s * 1e3:.3f}",
                                 f"{100 * u['LUT']:.0f}", f"{100 * u['BRAM_18K']:.0f}",
                                 f"{100 * u['URAM']:.0f}", f"{100 * u['DSP']:.0f}",
                                 d.binding_resource or "none (fastest SetFolding fits)"])
                except FpgaSimError as e:
                    rows.append([path.stem, cfg, part, "NO", "", "", "", "", "", "", "", "",
                                 str(e).split(": even ")[-1][:60]])
            print(f"  {path.stem} {cfg}: {time.time() - t0:.1f} s", file=sys.stderr)
    head = ["model", "bits", "part", "fits", "bottleneck", "II cycles", "FPS (SIM)",
            "latency ms (SIM)", "LUT %", "BRAM18 %", "URAM %", "DSP %", "binding resource"]
    return head, rows


def section_vgg(parts, ratios, host: bool, repeat: int):
    path = ROOT / "baselines" / "vgg_fmnist.onnx"
    base_passes = ["fold-bn", "quantize"]
    dense = quantize(path, base_passes)
    host_dense = None
    if host:
        host_dense = _host_latency(path, base_passes, repeat)
    rows = []
    for r in ratios:
        passes = ["fold-bn", f"prune{{ratio={r}}}", "quantize"]
        pruned = quantize(path, passes)
        work = work_cycles(dense) / work_cycles(pruned)
        row = [f"prune{{ratio={r}}}", f"{params(dense) / params(pruned):.2f}x", f"{work:.2f}x"]
        for part in parts:
            try:
                a = build_design(dense, FpgaOptions(part=part))
                b = build_design(pruned, FpgaOptions(part=part))
                row.append(f"{a.ii_cycles / b.ii_cycles:.2f}x ({a.ii_cycles}->{b.ii_cycles})")
            except FpgaSimError as e:
                row.append(f"no fit ({str(e)[-40:]})")
        if host_dense is not None:
            hp = _host_latency(path, passes, repeat)
            row.append(f"{host_dense / hp:.2f}x ({host_dense * 1e3:.3f}->{hp * 1e3:.3f} ms)")
        else:
            row.append("not measured (--no-host)")
        rows.append(row)
    head = ["VGG (8/8)", "params ratio", "FPGA work ratio (SIM, PE=SIMD=1)"] + \
           [f"II ratio {p} budget (SIM)" for p in parts] + ["host latency ratio (TVM, measured)"]
    return head, rows


def _host_latency(path: Path, passes, repeat: int) -> float:
    g = import_model(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cm = compiler.compile(str(path), target="host", passes=passes,
                              calibration_data=calib_for(g))
    return float(cm.benchmark(repeat=repeat).median)


def section_cnv():
    g = build_cnv_w1a1()
    p = map_graph(g)
    f = apply_user_folding(p, FINN_EXAMPLES_FOLDING)
    d = design_from_pipeline(p, f, get_part("xc7z020"), FpgaOptions(), "finn-examples")
    pub = PUBLISHED_CNV
    head = ["design", "II cycles", "FPS (SIM, 100 MHz)", "latency ms (SIM)",
            "published batch-1 latency ms", "SIM/published latency", "SIM FPS / published FPS",
            "LUT", "BRAM18"]
    rows = [["CNV-W1A1 finn-examples folding, xc7z020", d.ii_cycles, f"{d.fps:,.1f}",
             f"{d.latency_s * 1e3:.3f}", f"{pub['batch1_latency_s'] * 1e3:.3f} ({pub['source']})",
             f"{d.latency_s / pub['batch1_latency_s']:.2f}",
             f"{d.fps / pub['batch1_fps']:.2f} (published is 1 image incl. driver)",
             d.totals["LUT"], d.totals["BRAM_18K"]]]
    return head, rows


def md(head, rows) -> str:
    out = ["| " + " | ".join(map(str, head)) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip host builds, one pruning ratio")
    ap.add_argument("--parts", default="xc7z020,xczu7ev")
    ap.add_argument("--no-host", action="store_true", help="skip the TVM host latency builds")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    parts = a.parts.split(",")
    for p in parts:
        get_part(p)
    t0 = time.time()
    out = {}
    print("## fpga-sim: baselines, fastest folding within FINN's default budget "
          "(all timings SIMULATED, 100 MHz)\n")
    out["baselines"] = section_baselines(parts, a.quick)
    print(md(*out["baselines"]) + "\n")
    print("## VGG pruning: pruned vs unpruned (both quantized 8/8)\n")
    ratios = [0.5] if a.quick else [0.5, 0.75]
    out["vgg"] = section_vgg(parts, ratios, host=not (a.quick or a.no_host), repeat=a.repeat)
    print(md(*out["vgg"]) + "\n")
    print("## CNV-W1A1 (FINN's CIFAR-10 CNV rebuilt in our IR) vs a published measurement\n")
    out["cnv"] = section_cnv()
    print(md(*out["cnv"]) + "\n")
    print(f"(total {time.time() - t0:.0f} s)")
    if a.json:
        a.json.write_text(json.dumps({k: {"head": h, "rows": r} for k, (h, r) in out.items()},
                                     indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

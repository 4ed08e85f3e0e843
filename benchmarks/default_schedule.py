"""Per-kernel effect of the default CPU schedule (`targets/tvm/default_schedule.py`): every
fused kernel of a model, unscheduled (TVM's naive loop nest) vs default-scheduled, timed
one kernel at a time and checked bit for bit.

The model is lowered as the tuned build lowers it (`compile_tuned`'s input): passes
``fold-bn,cleanup`` (fp32) or ``+ quantize{bits=8,act_bits=8}`` calibrated on seeded
normal inputs (int8), `TvmTarget.lower` with ``tuned=True``, the conv layout of a tuned
build (``--layout auto``: the target's rule; ``nchwc`` on a VNNI host), then Relax's
``zero`` pipeline (the fusion task extraction sees).  Each fused PrimFunc is then built
twice on the host target, alone: as it is, and after `default_schedule`.  ``--top N``
keeps the N kernels with the most block iterations (loop-nest work, a stand-in for their
naive time, known before timing anything).

Columns: ``naive ms`` / ``default ms``: median of ``--repeat`` timings (TVM
``time_evaluator``, ``--number`` calls each, 0 = enough calls for ~20 ms) on the same
seeded random arguments, the two builds' samples interleaved (machine load hits both
alike; the JSON also has each build's fastest sample); ``ratio``: naive / default; ``exact``: both builds wrote
bit-identical outputs (NaN equal to NaN) from those arguments; ``main block``: how the
scheduled kernel runs its block of most iterations (`main_block_code`: ``dot``,
``vector`` or ``scalar``).
Threads: ``--threads`` (``TVM_NUM_THREADS``, set before TVM's thread pool starts; the
default is 1, so a ratio is the schedule's, not the cores').

    PYTHONPATH=. python3 benchmarks/default_schedule.py --model models/ppocr_rec.onnx \
        --variant int8 --top 10 [--threads 1] [--repeat 5] [--json out.json]
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


def lower_to_kernels(model, variant: str, calibration, layout: str = "auto"):
    """``model``'s fused kernels (an IRModule of PrimFuncs, each under its own name as
    global symbol), lowered as the tuned build lowers it; ``calibration``: the int8
    variant's calibration feeds (a list of ``{input: array}``).  Returns ``(kernels,
    layout)``."""
    import tvm
    from tvm import relax

    import compiler
    from compiler.pass_manager import PassContext
    from targets import get_target
    from targets.tvm.layout import apply_layout

    if variant not in ("fp32", "int8"):
        raise ValueError(f"variant must be fp32 or int8, not {variant!r}")
    passes = ["fold-bn", "cleanup"] + (["quantize{bits=8,act_bits=8}"] if variant == "int8"
                                       else [])
    ctx = PassContext()
    if variant == "int8":
        ctx.calibration_data = calibration
    _, graph, _ = compiler.optimize(model, passes, ctx=ctx)
    host = get_target("host")
    if layout == "auto":
        layout = host._layout(True, graph)  # the tuned build's choice on this target
    mod, layout = apply_layout(host.lower(graph, tuned=True), layout, host.target_dict())
    fused = relax.get_pipeline("zero")(mod)
    kernels = tvm.IRModule({gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
                            for gv, f in fused.functions_items()
                            if isinstance(f, tvm.tirx.PrimFunc)})
    return kernels, layout


def random_args(func, rng) -> list[np.ndarray]:
    """Seeded arguments for every parameter of ``func`` (inputs and outputs alike):
    standard normal floats, booleans, integers in [-60, 60) ([0, 60) unsigned), small
    enough that no int8 product sum overflows what the kernel would see in a model."""
    args = []
    for p in func.params:
        shape, dtype = [int(d) for d in p.shape], str(p.dtype)
        if dtype.startswith("float"):
            args.append(rng.standard_normal(shape).astype(dtype))
        elif dtype == "bool":
            args.append(rng.integers(0, 2, shape).astype(bool))
        else:
            args.append(rng.integers(0 if dtype.startswith("u") else -60, 60, shape)
                        .astype(dtype))
    return args


def _iterations(sch, block) -> int:
    """The product of ``block``'s loop extents (symbolic ones count 1)."""
    n = 1
    for loop in sch.get_loops(block):
        ext = sch.get(loop).extent
        n *= int(ext) if hasattr(ext, "value") else 1
    return n


def block_work(func) -> int:
    """Iterations of every block of ``func`` (summed over the root's blocks): the
    loop-nest work, to pick the largest kernels before timing."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    return sum(_iterations(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root")))


def main_block_code(naive, scheduled) -> str:
    """How the scheduled kernel runs the block with the most iterations of ``naive``
    (a conv's or matmul's reduction, usually): ``dot`` (a tensorized call, such as
    ``vpdpbusd``), ``vector`` (under a vectorized loop) or ``scalar``."""
    from tvm import s_tir, tirx

    sch = s_tir.Schedule(naive)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    main = sch.get(max(blocks, key=lambda b: _iterations(sch, b))).name_hint
    ours = s_tir.Schedule(scheduled)
    code = "scalar"
    for block in ours.get_child_blocks(ours.get_sblock("root")):
        stmt = ours.get(block)
        if not stmt.name_hint.startswith(main) or stmt.name_hint.endswith("_init"):
            continue  # (a reduction's init, decomposed: not the work)
        if "call_llvm_pure_intrin" in str(stmt.body) or "call_llvm_intrin" in str(stmt.body):
            return "dot"
        if any(ours.get(lp).kind == tirx.ForKind.VECTORIZED for lp in ours.get_loops(block)):
            code = "vector"
    return code


def _timers(lib, name: str, args: list[np.ndarray], dev, number: int):
    """A callable timing one sample of ``number`` calls (0: enough for ~20 ms)."""
    import tvm

    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    f = lib.mod[name]
    f(*tensors)  # warm up
    if number <= 0:
        t0 = time.perf_counter()
        f(*tensors)
        one = max(time.perf_counter() - t0, 1e-6)
        number = max(1, min(1000, int(0.02 / one)))
    timer = lib.mod.time_evaluator(name, dev, number=number, repeat=1)
    return lambda: float(timer(*tensors).results[0])


def _outputs(lib, name: str, args: list[np.ndarray], dev) -> np.ndarray:
    import tvm

    tensors = [tvm.runtime.tensor(a, dev) for a in args]
    lib.mod[name](*tensors)
    return tensors[-1].numpy()


def measure(kernels, names: list[str], number: int, repeat: int, seed: int = 0) -> list[dict]:
    """One row per kernel of ``names``: naive and default-scheduled time, exactness."""
    import tvm

    from targets.tvm.build import make_target
    from targets.tvm.default_schedule import default_schedule

    target = make_target(None)
    dev = tvm.cpu()
    rows = []
    for name in names:
        one = tvm.IRModule({name: kernels[name]})
        scheduler = default_schedule()
        with target:
            scheduled = scheduler(one)
        naive_lib = tvm.compile(one, target=target)
        ours_lib = tvm.compile(scheduled, target=target)
        args = random_args(kernels[name], np.random.default_rng(seed))
        a, b = _outputs(naive_lib, name, args, dev), _outputs(ours_lib, name, args, dev)
        exact = bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
        # interleaved samples: load from other processes hits both builds alike
        timers = [_timers(lib, name, args, dev, number) for lib in (naive_lib, ours_lib)]
        samples: list[list[float]] = [[], []]
        for _ in range(repeat):
            for timer, out in zip(timers, samples):
                out.append(timer())
        t_naive, t_ours = (float(np.median(s)) for s in samples)
        rows.append({"kernel": name, "shape": [int(d) for d in kernels[name].params[-1].shape],
                     "naive_ms": t_naive * 1e3, "default_ms": t_ours * 1e3,
                     "naive_min_ms": min(samples[0]) * 1e3,
                     "default_min_ms": min(samples[1]) * 1e3,
                     "ratio": t_naive / t_ours, "exact": exact,
                     "scheduled": name in scheduler.applied,
                     "main_block": main_block_code(kernels[name], scheduled[name]),
                     "work": block_work(kernels[name])})
        print(f"  {_short(name)}: {t_naive * 1e3:.3f} -> {t_ours * 1e3:.3f} ms "
              f"({t_naive / t_ours:.1f}x){'' if exact else '  NOT EXACT'}", flush=True)
    return rows


def _short(name: str, ops: int = 3) -> str:
    """A kernel's name cut to its first ``ops`` fused ops (the JSON has it whole)."""
    parts = name.split("_")
    keep, count = [], 0
    for part in parts:
        keep.append(part)
        count += part[-1:].isdigit()  # (an op's name ends with its counter)
        if count >= ops:
            break
    return "_".join(keep) + ("_..." if len(keep) < len(parts) else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "ppocr_rec.onnx"))
    ap.add_argument("--variant", default="int8", choices=["fp32", "int8"])
    ap.add_argument("--layout", default="auto", choices=["auto", "nchw", "nchwc"])
    ap.add_argument("--top", type=int, default=10,
                    help="only the N kernels with the most block iterations (0: all)")
    ap.add_argument("--kernels", default="",
                    help="comma list of substrings: only kernels whose name holds one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--number", type=int, default=0, help="calls per sample (0: ~20 ms)")
    ap.add_argument("--calib", type=int, default=4, help="calibration inputs (seeded normal)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # before TVM's thread pool starts
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")

    from benchmarks.common import input_spec

    path = Path(args.model)
    if not path.exists():
        raise SystemExit(f"--model {path}: no such file")
    t0 = time.monotonic()
    name, shape = input_spec(path)
    calib = np.random.default_rng(0).standard_normal((args.calib,) + shape[1:]) \
        .astype(np.float32)
    kernels, layout = lower_to_kernels(str(path), args.variant, [{name: calib}], args.layout)
    funcs = {gv.name_hint: f for gv, f in kernels.functions_items()}
    names = sorted(funcs, key=lambda k: -block_work(funcs[k]))
    if args.kernels:
        keys = [k for k in args.kernels.split(",") if k]
        names = [n for n in names if any(k in n for k in keys)]
    if args.top > 0:
        names = names[:args.top]
    print(f"{path.name} {args.variant} ({layout}): {len(funcs)} kernels, timing {len(names)}, "
          f"{args.threads} thread(s), median of {args.repeat}", flush=True)
    rows = measure(kernels, names, args.number, args.repeat)
    naive = sum(r["naive_ms"] for r in rows)
    ours = sum(r["default_ms"] for r in rows)
    print(f"\n{path.name} {args.variant} ({layout}), {args.threads} thread(s), "
          f"{time.monotonic() - t0:.0f} s")
    print("| kernel | naive ms | default ms | ratio | exact | main block |")
    print("| --- | ---: | ---: | ---: | :---: | :---: |")
    for r in rows:
        print(f"| {_short(r['kernel'])} {'x'.join(map(str, r['shape']))} | {r['naive_ms']:.3f} | {r['default_ms']:.3f} | "
              f"{r['ratio']:.1f}x | {'yes' if r['exact'] else 'NO'} | "
              f"{r['main_block']} |")
    print(f"| total ({len(rows)} kernels) | {naive:.3f} | {ours:.3f} | "
          f"{naive / max(ours, 1e-9):.1f}x | {'yes' if all(r['exact'] for r in rows) else 'NO'}"
          f" | |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": path.name, "variant": args.variant, "layout": layout,
            "threads": args.threads, "repeat": args.repeat, "kernels": len(funcs),
            "rows": rows}, indent=1))
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Hostile-user probes (issue #22's recount): bad inputs and faults, each classified.

Run::

    PYTHONPATH=. python benchmarks/hostile_probes.py [--seed 0] [--jobs 2] [--timeout 60] [--json FILE]

A few generators make ~110 seeded probes in seven categories: malformed models, bad
options / command lines, damaged artifacts (model.so bit flips and truncation, meta.json,
weights.bin), odd numerics (NaN, +-Inf, denormals, float max, integer division and modulo
by zero), tensor names that look like paths, concurrent saves to one folder, and
``kill -9`` during a save.  Faults of the emulated board and the RPC tracker are probed
with ``--board`` (``--board-only``: only them): one at a time, each on a fresh private
board (its own ``COMPILER_BOARD_DIR``, never the board other users share), a tinynet
artifact for cortex-a72 run by ``compiler run`` while the board is held by another
session, or its tracker or qemu server is killed in the middle of the run, or the board
died before the run.  Each board start takes tens of seconds: about 5 minutes in all.

Every probe is one subprocess (the ``compiler`` command line, or this script's
``--child`` mode, which reports like the command line does) under a timeout, classified
from what it did, never from what it says it did:

* **clear error**: exit 2 with exactly one ``error:`` line on stderr (ours, or argparse's
  ``PROG: error:`` after its usage line) and no traceback;
* **works**: exit 0 and outputs equal to the reference -- onnxruntime on the same model
  and input (NaN where it has NaN, the same infinities, else within 1e-4 relative), or,
  for damaged artifacts, the undamaged artifact's outputs; for concurrency and kill
  probes, "works" means the folder loads whole and no temporary is left behind;
* **crash**: a traceback, a signal, exit 1 (our "internal error"), or exit 2 without
  exactly one ``error:`` line;
* **hang**: the timeout (or exit 124 from a ``--child`` mode whose inner command ran past
  its bound, coreutils ``timeout``'s convention);
* **silent wrong**: exit 0 with outputs that differ from the reference, an invalid model
  (one onnxruntime refuses) accepted without a word, or a file written outside the
  folder it was meant for.

The table printed at the end counts outcomes per category; ``--json`` also writes every
probe's outcome and detail.  Bounded: about 2-4 minutes with 2 jobs on the 2-core
development host (the time is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import zip_longest as _zip_longest
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("clear error", "works", "crash", "hang", "silent wrong")
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TVM_NUM_THREADS="1")


@dataclass
class Probe:
    category: str
    name: str
    argv: list[str]                       # the subprocess (run from a scratch folder)
    check: Callable[["Probe", subprocess.CompletedProcess], tuple[str, str]] | None = None
    timeout: float = 60.0
    stdin: bytes | None = None
    workdir: Path | None = None
    result: str = ""
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# -- classification ------------------------------------------------------------------

def classify_exit(proc: subprocess.CompletedProcess) -> tuple[str, str] | None:
    """The outcome decided by the exit alone (None: exit 0, to be checked)."""
    err = proc.stderr.decode(errors="replace")
    if proc.returncode < 0:
        return "crash", f"signal {signal.Signals(-proc.returncode).name}"
    if proc.returncode == 124:  # a --child mode's inner command past its bound
        return "hang", (proc.stdout.decode(errors="replace").strip().splitlines() or [""])[-1]
    if "Traceback (most recent call last)" in err:
        return "crash", "traceback: " + err.strip().splitlines()[-1][:160]
    if proc.returncode == 2:
        # ours: "error: ..."; argparse's: "usage: ..." then "PROG: error: ..."
        lines = [l for l in err.splitlines()
                 if l.startswith("error:") or re.match(r"^[\w .-]+: error: ", l)]
        if len(lines) == 1:
            return "clear error", lines[0][:160]
        return "crash", f"exit 2 with {len(lines)} error: lines: {err.strip()[-160:]}"
    if proc.returncode != 0:
        return "crash", f"exit {proc.returncode}: {err.strip().splitlines()[-1:]}"
    return None


def same_outputs(got: list[np.ndarray], ref: list[np.ndarray], rtol: float = 1e-4
                 ) -> tuple[bool, str]:
    if len(got) != len(ref):
        return False, f"{len(got)} outputs, reference has {len(ref)}"
    for i, (a, b) in enumerate(zip(got, ref)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False, f"output {i}: shape {a.shape} vs {b.shape}"
        if a.dtype.kind in "iub" or b.dtype.kind in "iub":
            if not np.array_equal(a, b):
                return False, f"output {i}: integers differ at {int((a != b).sum())} places"
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.array_equal(np.isnan(a64), np.isnan(b64)):
            return False, (f"output {i}: NaN at {int(np.isnan(a64).sum())} places, reference "
                           f"{int(np.isnan(b64).sum())}")
        fin = np.isfinite(b64)
        if not np.array_equal(np.isinf(a64), np.isinf(b64)) or \
                not np.array_equal(a64[np.isinf(b64)], b64[np.isinf(b64)]):
            return False, f"output {i}: infinities differ"
        if fin.any():
            scale = max(1.0, float(np.max(np.abs(b64[fin]))))
            err = float(np.max(np.abs(a64[fin] - b64[fin])))
            if not err <= rtol * scale:
                return False, f"output {i}: max error {err:.3g} (scale {scale:.3g})"
    return True, "outputs equal the reference"


def read_outputs(folder: Path) -> list[np.ndarray]:
    return [np.load(f) for f in sorted(folder.glob("*.npy"))]


# -- the child mode (API probes that report like the command line) -------------------

def child(argv: list[str]) -> int:
    """``--child KIND JSON``: do one API-level thing; exit 2 + one error line on our
    clear error types, a traceback (exit 1) on anything else."""
    import compiler
    from compiler.cli import _is_user_error

    kind, args = argv[0], json.loads(argv[1])
    try:
        if kind == "compile_run":  # `compiler compile` then `compiler run`, in one process
            cm = compiler.compile(args["model"], passes=args.get("passes", ["fold-bn", "cleanup"]))
            out = Path(args["out"])
            out.mkdir(parents=True, exist_ok=True)
            feeds = {k: np.load(v) for k, v in args["inputs"].items()}
            for i, y in enumerate(cm.run(feeds)):
                np.save(out / f"{i:03d}.npy", y)
        elif kind == "save":  # compile once, then save (compress or not) to args["dest"]
            cm = compiler.compile(args["model"], passes=["fold-bn"])
            if args.get("hold"):  # for kill -9: signal readiness, then save slowly
                Path(args["hold"]).write_text("ready")
            for _ in range(int(args.get("repeat", 1))):
                cm.save(args["dest"], compress=bool(args.get("compress")))
        elif kind == "load_check":  # the folder loads whole; nothing hidden left beside it
            dest = Path(args["dest"])
            cm = compiler.CompiledModel.load(dest)
            x = np.load(args["input"])
            np.save(args["out"], cm.run([x])[0])
            left = [p.name for p in dest.parent.iterdir()
                    if p.name.startswith(f".{dest.name}") and p.is_dir()]
            if left:
                print(f"LEFT: {left}")
        elif kind == "board_fault":
            return board_fault(args)
        else:
            raise SystemExit(f"unknown child kind {kind}")
    except Exception as exc:  # noqa: BLE001
        if not _is_user_error(exc):  # exactly the rule of the command line's one line
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# -- reference outputs ---------------------------------------------------------------

def ort_outputs(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """onnxruntime's outputs in a child (it may itself die on integer division by zero),
    or None when it refuses the model or dies."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "feeds.npz", **feeds)
        code = ("import sys, numpy as np, onnxruntime as ort\n"
                "f = dict(np.load(sys.argv[2]))\n"
                "s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
                "o = s.run(None, f)\n"
                "np.savez(sys.argv[3], *o)\n")
        out = Path(tmp) / "out.npz"
        proc = subprocess.run([sys.executable, "-c", code, str(model), str(Path(tmp) / "feeds.npz"),
                               str(out)], capture_output=True, timeout=60, env=ENV)
        if proc.returncode != 0 or not out.exists():
            return None
        data = np.load(out)
        return [data[f"arr_{i}"] for i in range(len(data.files))]


# -- models --------------------------------------------------------------------------

def op_model(path: Path, op: str, dtype: str = "float32", attrs: dict | None = None,
             consts: dict | None = None, shape=(1, 4, 4, 4), two_inputs: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t = {"float32": TensorProto.FLOAT, "int32": TensorProto.INT32}[dtype]
    inputs = [helper.make_tensor_value_info("x", t, list(shape))]
    names = ["x"]
    inits = []
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("y", t, list(shape)))
        names.append("y")
    for name, value in (consts or {}).items():
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        names.append(name)
    node = helper.make_node(op, names, ["out"], **(attrs or {}))
    graph = helper.make_graph([node], op.lower(), inputs,
                              [helper.make_tensor_value_info("out", t, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def named_output_model(path: Path, name: str) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], [name])], "named",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


# -- the probes ----------------------------------------------------------------------

CLI = [sys.executable, "-m", "compiler"]


def _run_check(ref, out: Path, *, need_ref: bool = True):
    """exit 0 -> works if the saved outputs equal ``ref`` (a list, or a callable giving
    it, evaluated only then); no reference -> silent wrong (we accepted what onnxruntime
    refuses)."""
    def check(probe, proc):
        nonlocal ref
        if callable(ref):
            ref = ref()
        if ref is None:
            return ("silent wrong" if need_ref else "works",
                    "accepted a model onnxruntime refuses" if need_ref else "ran")
        ok, why = same_outputs(read_outputs(out), ref)
        return ("works" if ok else "silent wrong"), why
    return check


def malformed_models(rng: random.Random, work: Path, n: int) -> list[Probe]:
    """Truncations, byte flips and field mutations of tinynet, through `compile` then
    `run` (one subprocess: compile && run)."""
    import onnx

    base = onnx.load(str(ROOT / "examples" / "tinynet.onnx"))
    base.ir_version = min(base.ir_version, 8)
    raw = base.SerializeToString()
    x = np.random.default_rng(0).standard_normal(
        [d.dim_value for d in base.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    probes = []
    kinds = ["truncate", "flip", "dims", "dtype", "op_type", "drop_node", "rename_input",
             "empty_graph", "no_outputs", "int64_weight", "attr", "init_data"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        m = onnx.ModelProto()
        m.CopyFrom(base)
        g = m.graph
        data: bytes | None = None
        if kind == "truncate":
            data = raw[:rng.randrange(1, len(raw))]
        elif kind == "flip":
            b = bytearray(raw)
            for _ in range(rng.randint(1, 6)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            data = bytes(b)
        elif kind == "dims":
            init = rng.choice(list(g.initializer))
            init.dims[rng.randrange(len(init.dims))] = rng.choice([0, 2, 3, 999])
        elif kind == "dtype":
            rng.choice(list(g.initializer)).data_type = rng.choice(
                [onnx.TensorProto.DOUBLE, onnx.TensorProto.STRING, 0, 99, onnx.TensorProto.INT8])
        elif kind == "op_type":
            rng.choice(list(g.node)).op_type = rng.choice(["NoSuchOp", "Conv", "Relu", ""])
        elif kind == "drop_node":
            del g.node[rng.randrange(len(g.node))]
        elif kind == "rename_input":
            node = rng.choice(list(g.node))
            node.input[rng.randrange(len(node.input))] = rng.choice(["missing", "", "../x"])
        elif kind == "empty_graph":
            del g.node[:]
        elif kind == "no_outputs":
            del g.output[:]
        elif kind == "int64_weight":
            from onnx import numpy_helper

            init = rng.choice([t for t in g.initializer if len(t.dims) == 4] or list(g.initializer))
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.round(arr * 10).astype(np.int64), init.name))
        elif kind == "attr":
            node = rng.choice([nd for nd in g.node if nd.attribute] or list(g.node))
            if node.attribute:
                a = rng.choice(list(node.attribute))
                if a.ints:
                    a.ints[rng.randrange(len(a.ints))] = rng.choice([-1, 0, 7, 1 << 20])
                elif a.type == onnx.AttributeProto.INT:
                    a.i = rng.choice([-5, 0, 99])
                else:
                    a.name = "bogus_attr"
        elif kind == "init_data":
            init = rng.choice(list(g.initializer))
            if init.raw_data:
                init.raw_data = init.raw_data[:len(init.raw_data) // 2]
            else:
                del init.float_data[len(init.float_data) // 2:]
        model = work / f"mal{i}.onnx"
        model.write_bytes(data if data is not None else m.SerializeToString())
        np.save(work / f"mal{i}_x.npy", x)
        out = work / f"mal{i}_out"
        ref = (lambda model=model: ort_outputs(model, {"input": x}))
        in_name = base.graph.input[0].name
        arg = json.dumps({"model": str(model), "out": str(out),
                          "inputs": {in_name: str(work / f"mal{i}_x.npy")}})
        probes.append(Probe("malformed models", f"{kind} #{i}",
                            [sys.executable, __file__, "--child", "compile_run", arg],
                            check=_run_check(ref, out), timeout=90))
    return probes


def bad_options(work: Path, tiny_art: Path, tiny_model: Path) -> list[Probe]:
    """Option and command-line mistakes."""
    garbage = work / "garbage.npy"
    garbage.write_bytes(b"not an npy file")
    wrong_shape = work / "wrong_shape.npy"
    np.save(wrong_shape, np.zeros((2, 3), np.float32))
    wrong_dtype = work / "wrong_dtype.npy"
    np.save(wrong_dtype, np.zeros((1, 1, 28, 28), np.int64))
    a_file = work / "a_file"
    a_file.write_text("x")
    huge = work / "huge.npy"
    np.save(huge, np.zeros((1, 1, 28, 28), np.float32))
    M, A = str(tiny_model), str(tiny_art)
    cases = [
        ("unknown pass", ["compile", M, "-o", str(work / "o1"), "--passes", "no-such-pass"]),
        ("bad pass option", ["compile", M, "-o", str(work / "o2"), "--passes", "magnitude-prune{sparsity=2}"]),
        ("unknown pass option", ["compile", M, "-o", str(work / "o3"), "--passes", "magnitude-prune{nope=1}"]),
        ("duplicated pass option", ["compile", M, "-o", str(work / "o4"), "--passes",
                                    "magnitude-prune{sparsity=0.5,sparsity=0.6}"]),
        ("malformed pass spec", ["compile", M, "-o", str(work / "o5"), "--passes", "fold-bn{"]),
        ("unknown target", ["compile", M, "-o", str(work / "o6"), "--target", "gpu9000"]),
        ("input-shape zero", ["compile", M, "-o", str(work / "o7"), "--input-shape", "input=0,1,28,28"]),
        ("input-shape negative", ["compile", M, "-o", str(work / "o8"), "--input-shape", "input=-1,1,28,28"]),
        ("input-shape text", ["compile", M, "-o", str(work / "o9"), "--input-shape", "input=a,b"]),
        ("input-shape no name", ["compile", M, "-o", str(work / "o10"), "--input-shape", "1,1,28,28"]),
        ("input-shape unknown name", ["compile", M, "-o", str(work / "o11"), "--input-shape", "nope=1,1,28,28"]),
        ("output is a file", ["compile", M, "-o", str(a_file)]),
        ("missing model file", ["compile", str(work / "nope.onnx"), "-o", str(work / "o12")]),
        ("model is a folder", ["compile", str(work), "-o", str(work / "o13")]),
        ("run: garbage --input", ["run", A, "--input", f"input={garbage}"]),
        ("run: wrong-shape --input", ["run", A, "--input", f"input={wrong_shape}"]),
        ("run: wrong-dtype --input", ["run", A, "--input", f"input={wrong_dtype}"]),
        ("run: missing --input file", ["run", A, "--input", f"input={work / 'none.npy'}"]),
        ("run: --input without name", ["run", A, "--input", str(huge)]),
        ("run: --input unknown name", ["run", A, "--input", f"nope={huge}"]),
        ("run: --save is a file", ["run", A, "--save", str(a_file)]),
        ("run: --tracker on host model", ["run", A, "--tracker", "127.0.0.1:1"]),
        ("run: not an artifact", ["run", str(work)]),
        ("benchmark: --repeat 0", ["benchmark", A, "--repeat", "0"]),
        ("benchmark: --repeat text", ["benchmark", A, "--repeat", "many"]),
        ("compile: --tune text", ["compile", M, "-o", str(work / "o14"), "--tune", "lots"]),
        ("compile: --tune negative", ["compile", M, "-o", str(work / "o15"), "--tune", "-3"]),
        ("unknown command", ["frobnicate"]),
        ("report: missing", ["report", str(work / "nope")]),
    ]
    probes = []
    for name, args in cases:
        def check(probe, proc):
            # exit 0 on a mistake is only "works" when it did the right thing anyway
            return "silent wrong", "exit 0 on a bad option: " + proc.stdout.decode()[-120:]
        if name in ("benchmark: --repeat 0",):
            check = None
        probes.append(Probe("bad options / CLI", name, CLI + args, check=check))
    # output piped into a reader that stops at once
    probes.append(Probe("bad options / CLI", "report piped into head -1",
                        ["bash", "-c", f"set -o pipefail; {' '.join(CLI)} report {A} | head -1 "
                         f">/dev/null; echo rc=${{PIPESTATUS[0]}} >&2; exit ${{PIPESTATUS[0]}}"],
                        check=lambda p, proc: ("works", "quiet exit 0")))
    return probes


def damaged_artifacts(rng: random.Random, work: Path, src: Path, x: Path,
                      ref: list[np.ndarray], n_flips: int) -> list[Probe]:
    probes = []

    def add(name, damage):
        dest = work / f"dmg_{len(probes)}"
        shutil.copytree(src, dest)
        damage(dest)
        out = work / f"dmg_{len(probes)}_out"
        probes.append(Probe("damaged artifacts", name,
                            CLI + ["run", str(dest), "--input", f"input={x}", "--save", str(out)],
                            check=_run_check(ref, out)))

    def flip(name, offset_frac=None):
        def damage(dest):
            f = dest / name
            b = bytearray(f.read_bytes())
            pos = int(offset_frac * len(b)) if offset_frac is not None else rng.randrange(len(b))
            b[pos] ^= 1 << rng.randrange(8)
            f.write_bytes(bytes(b))
        return damage

    def truncate(name, frac):
        def damage(dest):
            f = dest / name
            f.write_bytes(f.read_bytes()[:int(frac * f.stat().st_size)])
        return damage

    def write(name, data):
        def damage(dest):
            (dest / name).write_bytes(data)
        return damage

    def meta_edit(fn):
        def damage(dest):
            meta = json.loads((dest / "meta.json").read_text())
            fn(meta)
            (dest / "meta.json").write_text(json.dumps(meta))
        return damage

    for i in range(n_flips):
        add(f"model.so bit flip #{i}", flip("model.so"))
    for frac in (0.0, 0.1, 0.5, 0.9, 0.999):
        add(f"model.so truncated to {frac:.1%}", truncate("model.so", frac))
    add("model.so garbage", write("model.so", bytes(rng.randrange(256) for _ in range(4096))))
    for i in range(4):
        add(f"weights.bin bit flip #{i}", flip("weights.bin"))
    add("weights.bin truncated", truncate("weights.bin", 0.5))
    add("model.onnx bit flip", flip("model.onnx"))
    add("model.onnx missing", lambda d: (d / "model.onnx").unlink())
    add("model.so missing", lambda d: (d / "model.so").unlink())
    add("meta.json truncated", truncate("meta.json", 0.5))
    add("meta.json empty", write("meta.json", b""))
    add("meta.json not an object", write("meta.json", b"[1, 2]"))
    add("meta.json future version", meta_edit(lambda m: m.update(format_version=99)))
    add("meta.json target unknown", meta_edit(lambda m: m.update(target="gpu9000")))
    add("meta.json library ../x", meta_edit(lambda m: m.update(library="../model.so")))
    add("meta.json files dropped", meta_edit(lambda m: m.pop("files")))
    add("meta.json params digest", meta_edit(lambda m: m["params"].update(sha256="0" * 64)))
    add("meta.json params layout", meta_edit(lambda m: m["params"].update(layout="nchwc")))
    add("meta.json params garbage", meta_edit(lambda m: m.update(params={"target": 1})))
    add("meta.json inputs shape", meta_edit(lambda m: m["inputs"][0].update(shape=[2, 2])))
    add("meta.json tensors swapped", meta_edit(lambda m: m["weights"].update(
        tensors=dict(reversed(list(m["weights"]["tensors"].items()))))))
    return probes


def odd_numerics(work: Path, prepare: Callable[[Path, str], Path]) -> list[Probe]:
    """Special float inputs through single-op models and tinynet; integer division and
    modulo by zero."""
    f32 = np.finfo(np.float32)
    specials = {"nan": [np.nan], "+-inf": [np.inf, -np.inf], "denormal": [1e-40, -1e-40],
                "+-float max": [float(f32.max), -float(f32.max)]}
    models = {
        "Relu": dict(op="Relu"), "Clip": dict(op="Clip", consts={"lo": np.float32(-1), "hi": np.float32(1)}),
        "Sigmoid": dict(op="Sigmoid"), "Softmax": dict(op="Softmax", attrs={"axis": -1}),
        "MaxPool": dict(op="MaxPool", attrs={"kernel_shape": [2, 2]}),
        "Div": dict(op="Div", consts={"d": np.full((1, 4, 4, 4), 3.0, np.float32)}),
        "Exp": dict(op="Exp"), "Sqrt": dict(op="Sqrt"),
    }
    probes = []
    for op, spec in models.items():
        onnx_file = op_model(work / f"num_{op}.onnx", **spec)
        art = prepare(onnx_file, f"num_{op}")
        for label, value in specials.items():
            x = np.random.default_rng(1).standard_normal((1, 4, 4, 4)).astype(np.float32)
            for k, v in enumerate(value):
                x.reshape(-1)[k::3 * len(value)] = np.float32(v)
            xf = work / f"num_{op}_{label}.npy"
            np.save(xf, x)
            out = work / f"num_{op}_{label}_out"
            ref = (lambda f=onnx_file, x=x: ort_outputs(f, {"x": x}))
            probes.append(Probe("odd numerics", f"{op} with {label}",
                                CLI + ["run", str(art), "--input", f"x={xf}", "--save", str(out)],
                                check=_run_check(ref, out)))
    # integer division / modulo by zero (ONNX leaves it undefined: a defined value or a
    # clear error, never a signal); reference: onnxruntime if it survives, else the
    # interpreter
    for op, attrs in (("Div", {}), ("Mod", {"fmod": 0})):
        onnx_file = op_model(work / f"int_{op}.onnx", op, "int32", attrs=attrs, two_inputs=True)
        art = prepare(onnx_file, f"int_{op}")
        if art is None:  # the op does not compile: the command line must say so clearly
            probes.append(Probe("odd numerics", f"int32 {op}: compile",
                                CLI + ["compile", str(onnx_file), "-o", str(work / f"int_{op}_o")]))
            continue
        for label in ("some zeros", "all zeros", "INT_MIN / -1"):
            a = np.arange(-32, 32, dtype=np.int32).reshape(1, 4, 4, 4)
            b = np.where(np.arange(64).reshape(1, 4, 4, 4) % 3 == 0, 0, 2).astype(np.int32)
            if label == "all zeros":
                b = np.zeros_like(b)
            elif label == "INT_MIN / -1":
                a = np.full_like(a, np.iinfo(np.int32).min)
                b = np.full_like(b, -1)
            xa, xb = work / f"int_{op}_{label[:3]}_a.npy", work / f"int_{op}_{label[:3]}_b.npy"
            np.save(xa, a)
            np.save(xb, b)
            out = work / f"int_{op}_{label[:3]}_out"
            def ref(f=onnx_file, a=a, b=b):
                got = ort_outputs(f, {"x": a, "y": b})
                if got is None:
                    from compiler.interpreter import Interpreter
                    from compiler.onnx_io import import_model

                    got = Interpreter(import_model(f)).run({"x": a, "y": b})
                return got
            probes.append(Probe("odd numerics", f"int32 {op}: {label}",
                                CLI + ["run", str(art), "--input", f"x={xa}", "--input",
                                       f"y={xb}", "--save", str(out)],
                                check=_run_check(ref, out)))
        probes.append(Probe("odd numerics", f"int32 {op}: default random input",
                            CLI + ["run", str(art)], check=lambda p, proc: ("works", "ran")))
    return probes


def names_as_paths(work: Path, prepare: Callable[[Path, str], Path]) -> list[Probe]:
    probes = []
    for i, name in enumerate(["../../escaped", "/tmp/abs_escaped_probe", "a/b/c", "..", ".",
                              ".hidden", "con", "x" * 300, "out put", "C:\\evil"]):
        onnx_file = named_output_model(work / f"name{i}.onnx", name)
        art = prepare(onnx_file, f"name{i}")
        if art is None:  # refused at compile: the command line must say so clearly
            probes.append(Probe("names as paths", repr(name)[:40],
                                CLI + ["compile", str(onnx_file), "-o", str(work / f"name{i}_o")]))
            continue
        out = work / f"name{i}_sandbox" / "out"
        out.parent.mkdir()
        x = np.array([[-1, 0, 1, 2]], np.float32)
        xf = work / f"name{i}_x.npy"
        np.save(xf, x)

        def check(probe, proc, out=out, x=x):
            outside = [p for p in out.parent.rglob("*") if out not in p.parents and p != out]
            if outside or Path("/tmp/abs_escaped_probe.npy").exists():
                return "silent wrong", f"wrote outside the --save folder: {outside[:2]}"
            ok, why = same_outputs(read_outputs(out), [np.maximum(x, 0)])
            return ("works" if ok else "silent wrong"), why

        probes.append(Probe("names as paths", repr(name)[:40],
                            CLI + ["run", str(art), "--input", f"x={xf}", "--save", str(out)],
                            check=check, workdir=out.parent))
    return probes


def concurrent_saves(work: Path, model: Path, x: Path, n: int) -> list[Probe]:
    """n processes saving one model to one folder at once, then a load check."""
    probes = []
    for i in range(n):
        dest = work / f"conc{i}" / "m"
        dest.parent.mkdir()
        writers = 4 + i % 3
        child_cmd = [sys.executable, __file__, "--child", "save"]
        arg = json.dumps({"model": str(model), "dest": str(dest), "compress": bool(i % 2),
                          "repeat": 2})
        check_arg = json.dumps({"dest": str(dest), "input": str(x),
                                "out": str(work / f"conc{i}_out.npy")})
        script = (f"for k in $(seq {writers}); do {' '.join(child_cmd)} '{arg}' & done; "
                  f"fail=0; for j in $(jobs -p); do wait $j || fail=$?; done; "
                  f"[ $fail = 0 ] || exit $fail; "
                  f"{sys.executable} {__file__} --child load_check '{check_arg}'")

        def check(probe, proc, i=i):
            if b"LEFT:" in proc.stdout:
                return "silent wrong", proc.stdout.decode().strip()[-120:]
            return "works", "every save succeeded, the folder loads whole"

        probes.append(Probe("concurrent saves", f"{writers} writers, compress={bool(i % 2)}",
                            ["bash", "-c", script], check=check, timeout=240))
    return probes


def kill_during_save(work: Path, model: Path, x: Path, delays: list[float]) -> list[Probe]:
    """SIGKILL a save at a seeded moment, then save again and load: the folder must be
    whole (old or new) and no temporary left."""
    probes = []
    for i, delay in enumerate(delays):
        dest = work / f"kill{i}" / "m"
        dest.parent.mkdir()
        hold = work / f"kill{i}.ready"
        save = json.dumps({"model": str(model), "dest": str(dest), "compress": bool(i % 2),
                           "repeat": 50, "hold": str(hold)})
        again = json.dumps({"model": str(model), "dest": str(dest), "compress": False})
        check_arg = json.dumps({"dest": str(dest), "input": str(x),
                                "out": str(work / f"kill{i}_out.npy")})
        me = f"{sys.executable} {__file__} --child"
        script = (f"{me} save '{save}' & pid=$!; "
                  f"while [ ! -e {hold} ]; do sleep 0.05; kill -0 $pid 2>/dev/null || exit 3; done; "
                  f"sleep {delay:.3f}; kill -9 $pid; wait $pid 2>/dev/null; "
                  f"{me} save '{again}' && {me} load_check '{check_arg}'")

        def check(probe, proc):
            if b"LEFT:" in proc.stdout:
                return "silent wrong", "temporary left behind: " + proc.stdout.decode()[-100:]
            return "works", "re-save after kill -9 loads whole, nothing left behind"

        probes.append(Probe("kill -9 during save", f"kill after {delay:.2f} s, compress={bool(i % 2)}",
                            ["bash", "-c", script], check=check, timeout=240))
    return probes


# -- board and tracker faults (--board) ----------------------------------------------

BOARD_FAULTS = {  # fault -> the bound (s) on the `compiler run` it is done to
    "none": 150.0,
    "board busy": 90.0,            # COMPILER_BOARD_WAIT=15: the error within the wait + start
    "tracker killed mid-run": 150.0,
    "qemu killed mid-run": 150.0,
    "board died before the run": 240.0,  # the command restarts it (a board start)
}


def board_env(board: Path) -> dict:
    """The probes' environment on the private board folder ``board`` (no tracker or key
    of a real board inherited)."""
    env = {k: v for k, v in ENV.items()
           if k not in ("COMPILER_TRACKER", "COMPILER_RPC_KEY", "COMPILER_BOARD")}
    return dict(env, COMPILER_BOARD_DIR=str(board))


def board_faults(work: Path, art: Path, x: Path, ref: list[np.ndarray]) -> list[Probe]:
    """One probe per `BOARD_FAULTS` entry: ``compiler run ART --input x --save OUT`` on
    the cortex-a72 artifact ``art`` under the fault; works if the outputs equal ``ref``."""
    from targets.board.testing import private_board_dir

    board = private_board_dir(work / "board")
    probes = []
    for i, (fault, bound) in enumerate(BOARD_FAULTS.items()):
        out = work / f"board{i}_out"
        args = json.dumps({"fault": fault, "board": str(board), "bound": bound, "wait": 15,
                           "argv": CLI + ["run", str(art), "--input", f"input={x}",
                                          "--save", str(out)]})
        probes.append(Probe("board / tracker faults", fault,
                            [sys.executable, __file__, "--child", "board_fault", args],
                            check=_run_check(ref, out), timeout=bound + 300))
    return probes


def _board_state(board: Path) -> dict:
    return json.loads((board / "run" / "state.json").read_text())


def _kill_groups(pids: list[int]) -> None:
    for pid in pids:
        if not pid or pid <= 1:  # (killpg(0) is our own group)
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def board_fault(args: dict) -> int:
    """``--child board_fault``: a fresh private board (``compiler board start``, not part
    of the probe's outcome), then ``args["argv"]`` run under ``args["fault"]``; exits with
    the command's code and its stderr (124 past ``args["bound"]`` seconds).  The board
    is left running for `stop_board` or the next probe's restart."""
    board = Path(args["board"])
    env = board_env(board)
    fault, bound = args["fault"], float(args["bound"])
    subprocess.run(CLI + ["board", "stop", "--force"], env=env, capture_output=True, timeout=120)
    started = subprocess.run(CLI + ["board", "start", "--timeout", "240"], env=env,
                             capture_output=True, timeout=300)
    if started.returncode != 0:
        print("setup: the private board did not start: "
              + started.stderr.decode(errors="replace").strip()[-300:], file=sys.stderr)
        return 1
    state = _board_state(board)
    os.environ["COMPILER_BOARD_DIR"] = str(board)
    from targets.board import remote_spec
    from targets.tvm.rpc import _request, tracker_summary

    spec = remote_spec(state, request_timeout=30.0)
    holder = None
    if fault == "board busy":
        holder = _request(spec)  # the board's one slot, held until the command is done
        env["COMPILER_BOARD_WAIT"] = str(args["wait"])
    elif fault == "board died before the run":
        _kill_groups([state["tracker_pid"], *state["server_pids"]])
    t0 = time.monotonic()
    proc = subprocess.Popen(args["argv"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    if fault.endswith("mid-run"):
        # mid-run: once the command holds the board's slot (uploading or running)
        while proc.poll() is None and time.monotonic() - t0 < bound:
            try:
                if tracker_summary(spec)["queue_info"][spec.key]["free"] == 0:
                    break
            except Exception:  # noqa: BLE001  (a tracker that is still starting)
                pass
            time.sleep(0.1)
        victims = ([state["tracker_pid"]] if fault.startswith("tracker")
                   else list(state["server_pids"]))
        if proc.poll() is None:
            _kill_groups(victims)
            print(f"note: killed the {fault.split()[0]} {time.monotonic() - t0:.1f} s "
                  "into the run, while it held the board")
        else:
            print("note: the command ended before it held the board (no fault done)")
    try:
        out, err = proc.communicate(timeout=max(1.0, bound - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        _kill_groups([proc.pid])
        proc.communicate()
        print(f"hang: `compiler run` gave no answer within {bound:g} s ({fault})")
        return 124
    finally:
        holder = None  # noqa: F841  (releases the held slot)
    sys.stdout.write(out.decode(errors="replace"))
    sys.stderr.write(err.decode(errors="replace"))
    print(f"note: `compiler run` took {time.monotonic() - t0:.1f} s")
    if proc.returncode < 0:
        print(f"killed by {signal.Signals(-proc.returncode).name}", file=sys.stderr)
        return 128 - proc.returncode
    return proc.returncode


def stop_board(board: Path) -> None:
    """Stop the private board of the board probes (whatever state the faults left)."""
    subprocess.run(CLI + ["board", "stop", "--force"], env=board_env(board),
                   capture_output=True, timeout=120)
    try:
        state = _board_state(board) or {}
    except (OSError, ValueError):
        return
    _kill_groups([state.get("tracker_pid") or 0, *state.get("server_pids", [])])


# -- running -------------------------------------------------------------------------

def run_probe(probe: Probe) -> Probe:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(probe.argv, capture_output=True, timeout=probe.timeout, env=ENV,
                              cwd=probe.workdir or None, input=probe.stdin,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        probe.result, probe.detail = "hang", f"no exit within {probe.timeout:g} s"
    else:
        # ``note: ...`` lines of a --child mode (what a board fault did, and when)
        probe.extra["notes"] = [line[6:] for line in proc.stdout.decode(errors="replace")
                                .splitlines() if line.startswith("note: ")]
        verdict = classify_exit(proc)
        if verdict is None:
            if probe.check is None:
                verdict = ("works", "exit 0")
            else:
                try:
                    verdict = probe.check(probe, proc)
                except Exception as exc:  # noqa: BLE001  (a check that cannot read outputs)
                    verdict = ("silent wrong", f"exit 0 but no usable outputs ({exc})")
        probe.result, probe.detail = verdict
    probe.seconds = time.monotonic() - t0
    return probe


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per probe")
    ap.add_argument("--json", help="also write every probe's outcome here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds after which no new probe starts (0: none)")
    ap.add_argument("--board", action="store_true",
                    help="also probe board and tracker faults (a private emulated board)")
    ap.add_argument("--board-only", action="store_true", help="only the board probes")
    args = ap.parse_args(argv)
    args.board = args.board or args.board_only
    rng = random.Random(args.seed)
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hostile-probes-"))
    try:
        import compiler

        tiny_model = ROOT / "examples" / "tinynet.onnx"

        def prepare(onnx_file: Path, name: str, compress: bool = False) -> Path | None:
            try:
                cm = compiler.compile(onnx_file, passes=["cleanup"])
            except Exception as exc:  # noqa: BLE001
                print(f"(setup: {name} does not compile: {exc})", file=sys.stderr)
                return None
            return cm.save(work / f"{name}_art", compress=compress)

        board_probes: list[Probe] = []
        if args.board:
            xt = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
            np.save(work / "xt.npy", xt)
            a72 = compiler.compile(tiny_model, target="cortex-a72", passes=["fold-bn"])
            board_probes = board_faults(work, a72.save(work / "tiny_a72"), work / "xt.npy",
                                        ort_outputs(tiny_model, {"input": xt}))
        probes: list[Probe] = []
        if args.board_only:
            lenet = None
        else:
            lenet = compiler.compile(ROOT / "baselines" / "lenet5_mnist.onnx", passes=[
            "fold-bn", "magnitude-prune{sparsity=0.8}", "share-weights{clusters=16}"])
        if lenet is not None:
            lenet_art = lenet.save(work / "lenet_art", compress=True)
            x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
            xf = work / "x.npy"
            np.save(xf, x)
            lenet_ref = lenet.run([x])
            tiny_art = compiler.compile(tiny_model, passes=["fold-bn"]).save(work / "tiny_art")
            probes += malformed_models(rng, work, 20)
            probes += bad_options(work, tiny_art, tiny_model)
            probes += damaged_artifacts(rng, work, lenet_art, xf, lenet_ref, n_flips=8)
            probes += odd_numerics(work, prepare)
            probes += names_as_paths(work, prepare)
            probes += concurrent_saves(work, tiny_model, xf, 3)
            probes += kill_during_save(work, tiny_model, xf,
                                       [rng.uniform(0.0, 0.6) for _ in range(4)])
        setup_s = time.monotonic() - t0
        for p in probes:
            p.timeout = min(max(p.timeout, args.timeout), 240)
        # categories interleaved, so that a run stopped by --budget covers each of them
        by_cat: dict[str, list[Probe]] = {}
        for p in probes:
            by_cat.setdefault(p.category, []).append(p)
        order = [p for group in _zip_longest(*by_cat.values()) for p in group if p]
        deadline = t0 + args.budget if args.budget else None
        done: list[Probe] = []

        def one(p: Probe) -> Probe | None:
            if deadline is not None and time.monotonic() > deadline:
                return None
            run_probe(p)
            done.append(p)
            notes = "".join(f"; {n}" for n in p.extra.get("notes", []))
            print(f"[{len(done):>3}/{len(order)}] {p.result:<13} {p.category}: {p.name}: "
                  f"{p.detail[:110]} ({p.seconds:.0f} s{notes})", flush=True)
            return p

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(one, order))
        if board_probes:  # one at a time: one private board
            order += board_probes
            try:
                for p in board_probes:
                    p.timeout = max(p.timeout, args.timeout)
                    one(p)
            finally:
                stop_board(work / "board")
        total_s = time.monotonic() - t0
        print()
        if len(done) < len(order):
            print(f"(stopped by --budget: {len(done)} of {len(order)} probes ran)")
        cats = list(dict.fromkeys(p.category for p in done))
        print(f"{'category':<24}" + "".join(f"{o:>14}" for o in OUTCOMES) + f"{'total':>8}")
        for c in cats + ["all"]:
            rows = [p for p in done if c in ("all", p.category)]
            print(f"{c:<24}" + "".join(f"{sum(p.result == o for p in rows):>14}"
                                       for o in OUTCOMES) + f"{len(rows):>8}")
        bad = [p for p in done if p.result in ("crash", "hang", "silent wrong")]
        if bad:
            print("\nnot clear and not working:")
            for p in bad:
                print(f"  [{p.result}] {p.category}: {p.name}: {p.detail}")
        print(f"\n{len(done)} probes, seed {args.seed}, {args.jobs} jobs: setup {setup_s:.0f} s, "
              f"total {total_s:.0f} s; board/tracker faults "
              + ("probed" if board_probes else "not probed (--board)"))
        if args.json:
            Path(args.json).write_text(json.dumps(
                [{"category": p.category, "name": p.name, "result": p.result,
                  "detail": p.detail, "seconds": round(p.seconds, 2),
                  "notes": p.extra.get("notes", [])} for p in done], indent=1))
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

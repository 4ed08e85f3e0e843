"""The ``compiler`` command line; each verb mirrors an API call.

    compiler compile MODEL.onnx -o OUT [--target host] [--passes "fold-bn,cleanup"]
    compiler run OUT [--input name=file.npy ...]
    compiler benchmark OUT [--repeat 20]
    compiler report OUT|MODEL.onnx [--passes ...] [--json]
    compiler show MODEL.onnx [--passes ...]
    compiler passes | compiler targets
    compiler board start|stop|status [--boards N]  (the local emulated Cortex-A72 board)

cortex-a72 models run/benchmark on a board through a TVM RPC tracker: --tracker HOST:PORT
--key KEY (or COMPILER_TRACKER / COMPILER_RPC_KEY), else on the local EMULATED board.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


class CLIError(ValueError):
    """A bad command line (option, file) found by the CLI itself: ``error:`` line, exit 2."""


def _parse_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]] | None:
    if not items:
        return None
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        if not sep:
            raise CLIError(f"--input-shape expects name=d0,d1,..., got '{item}'")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d)
        except ValueError:
            raise CLIError(f"--input-shape '{item}': dimensions must be integers") from None
        if not shape or any(d <= 0 for d in shape):
            raise CLIError(f"--input-shape '{item}': give positive dimensions, e.g. "
                           f"{name or 'input'}=1,3,224,224")
        if name in shapes:
            raise CLIError(f"--input-shape gives '{name}' twice (give it once)")
        shapes[name] = shape
    return shapes


def _load_inputs(model, items: Sequence[str] | None, seed: int) -> dict[str, np.ndarray]:
    from .interpreter import random_inputs

    arrays = random_inputs(model.graph, seed=seed)
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise CLIError(f"--input expects name=file.npy, got '{item}'")
        if name not in arrays:
            raise CLIError(f"--input '{item}': the model has no input '{name}'; its inputs: "
                           f"{', '.join(arrays)}")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise CLIError(f"--input '{item}': {path} is not a readable .npy array "
                           f"({type(exc).__name__}: {exc}); save it with numpy.save") from None
        if not isinstance(arrays[name], np.ndarray):
            raise CLIError(f"--input '{item}': {path} holds several arrays (.npz); give "
                           "one .npy file per input")
    return arrays


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


def output_file(directory: Path, name: str, used: set[str]) -> Path:
    """The file ``directory/<name>.npy`` for an output, with ``name`` sanitized: a tensor
    name is data from the model, never a path (``../../x`` or ``/abs/x`` would leave the
    folder).  Characters outside [A-Za-z0-9._-] become ``_``; leading dots are dropped;
    clashes get a numeric suffix.  The result is checked to lie inside ``directory``."""
    stem = _SAFE_NAME.sub("_", name).lstrip(".") or "output"
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    file = directory / f"{candidate}.npy"
    if file.resolve().parent != directory.resolve():
        raise CLIError(f"output '{name}' would be saved outside {directory}")
    return file


def _passes_arg(text: str | None):
    if text is None:
        return None
    return [] if text.strip() in ("", "none") else text


def cmd_compile(args: argparse.Namespace) -> int:
    from .api import compile

    from .artifact import check_destination

    check_destination(args.output)  # before the (long) build: a bad -o must cost nothing
    tune = None
    if args.tune is not None:
        tune = {"trials": args.tune, "database": args.tune_db,
                "max_seconds": args.tune_seconds}
    cm = compile(args.model, target=_target_arg(args), passes=_passes_arg(args.passes),
                 input_shapes=_parse_shapes(args.input_shape), tune=tune,
                 verify=not args.no_verify)
    out = cm.save(args.output, compress=getattr(args, "compress", False))
    print(cm.report() if args.verbose else _summary(cm))
    v = cm.verification
    if v is None:
        print("verify: off (--no-verify)")
    elif v["status"] == "skipped":
        print(f"verify: skipped ({v['reason']})")
    else:
        print("verify: the built code matches the interpreter on a seeded input")
    print(f"saved {out}")
    return 0


def _target_arg(args: argparse.Namespace):
    """The target, configured by ``--target-option`` and pointed at ``--tracker``/``--key``."""
    options = getattr(args, "target_option", None)
    if not (getattr(args, "tracker", None) or getattr(args, "key", None) or options):
        return args.target
    from targets import get_target

    target = get_target(args.target)
    if options:
        if not hasattr(target, "configure"):
            raise CLIError(f"target '{target.name}' takes no --target-option")
        pairs = {}
        for item in options:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise CLIError(f"--target-option expects key=value, got '{item}'")
            pairs[key.strip()] = value.strip()
        target = target.configure(**pairs)
    if not (getattr(args, "tracker", None) or getattr(args, "key", None)):
        return target
    if not hasattr(target, "with_remote") or getattr(target, "runs_locally", True):
        raise CLIError(f"target '{target.name}' runs on this machine: --tracker/--key do not "
                       "apply (drop them, or use --target cortex-a72)")
    return target.with_remote(args.tracker, args.key)


def _load_for_target(args: argparse.Namespace):
    from .artifact import CompiledModel

    cm = CompiledModel.load(args.model)
    if args.tracker or args.key:
        if not hasattr(cm.target, "with_remote") or getattr(cm.target, "runs_locally", True):
            raise CLIError(f"{args.model} is a '{cm.target.name}' model that runs on this "
                           "machine: --tracker/--key do not apply (drop them)")
        cm.target = cm.target.with_remote(args.tracker, args.key)
    return cm


def _summary(cm) -> str:
    report = cm.report()
    lines = str(report).split("\n\nlayer")[0]
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    cm = _load_for_target(args)
    save_dir = None
    if args.save:
        save_dir = Path(args.save)
        if save_dir.exists() and not save_dir.is_dir():
            raise CLIError(f"--save {save_dir}: exists and is not a directory")
        save_dir.mkdir(parents=True, exist_ok=True)
    outputs = cm.run(_load_inputs(cm, args.input, args.seed))
    used: set[str] = set()
    for name, array in zip(cm.output_names, outputs):
        print(f"{name}: shape={list(array.shape)} dtype={array.dtype} "
              f"mean={float(array.mean()):.6g} first={array.reshape(-1)[:5].tolist()}")
        if save_dir is not None:
            np.save(output_file(save_dir, name, used), array)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    cm = _load_for_target(args)
    print(cm.benchmark(repeat=args.repeat, number=args.number))
    if args.profile:
        rows = cm.profile(repeat=args.repeat)
        print(f"{'kernel':<48} {'ms':>9} {'calls':>5} {'share':>6}")
        for row in rows[:args.profile]:
            print(f"{row['kernel'][:48]:<48} {row['ms']:9.3f} {row['calls']:5d} "
                  f"{100 * row['share']:5.1f}%")
    if args.memory:
        from .api import format_memory

        print(format_memory(cm.memory()))
    return 0


def cmd_board(args: argparse.Namespace) -> int:
    import time

    from targets import board

    if args.action == "start":
        t0 = time.monotonic()
        status = board.start(timeout=args.timeout, boards=args.boards)
        print(status)
        print(f"ready in {time.monotonic() - t0:.1f} s; timings from this board are EMULATED "
              "(qemu), never Cortex-A72 latency")
    elif args.action == "stop":
        result = board.stop(force=args.force)
        if result.startswith("in use"):
            print(f"board: {result}: it stops when the last of them exits (no longer kept "
                  "by `compiler board start`; --force stops it now)")
        else:
            print("board: stopped" if result == "stopped" else "board: was not running")
    else:
        status = board.status()
        print(status)
        if not board.installed():
            print(f"board: not installed in {board.board_dir()} (bash scripts/setup.sh)")
        return 0 if status.running else 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .api import compile
    from .artifact import CompiledModel

    path = Path(args.model)
    if path.is_dir():
        cm = CompiledModel.load(path)
    else:
        cm = compile(path, target=_target_arg(args), passes=_passes_arg(args.passes),
                     input_shapes=_parse_shapes(args.input_shape), build=False)
    report = cm.report()
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .api import optimize

    _, graph, _ = optimize(args.model, _passes_arg(args.passes) or [],
                           input_shapes=_parse_shapes(args.input_shape))
    print(graph.to_text(show_constants=not args.no_constants))
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    import dataclasses

    from .pass_manager import get_pass, registered_passes

    for name in registered_passes():
        cls = get_pass(name)
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls)
                         if f.init and f.default is not dataclasses.MISSING)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:<20} {doc}" + (f"  [{opts}]" if opts else ""))
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from targets import get_target, registered_targets

    for name in registered_targets():
        print(f"{name:<14} {get_target(name).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compiler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_opts(p: argparse.ArgumentParser, target: bool = True) -> None:
        p.add_argument("--passes", help="comma-separated pass specs, e.g. "
                       "'fold-bn,prune{ratio=0.5}' ('none' for no passes; default: the "
                       "target's defaults)")
        p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="static shape for a dynamic input (repeatable)")
        if target:
            p.add_argument("--target", default="host", help="target name (see 'targets')")
            p.add_argument("--target-option", action="append", metavar="KEY=VALUE",
                           help="target setting, repeatable (fpga-sim: part=xczu7ev, "
                                "fclk_mhz=200, target_fps=1000, budget=lut:0.7, ...)")

    def remote_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracker", metavar="HOST:PORT", help="TVM RPC tracker of a real board "
                       "(default: $COMPILER_TRACKER, else the local emulated board)")
        p.add_argument("--key", help="RPC key of the board at the tracker "
                       "(default: $COMPILER_RPC_KEY, else the target name)")

    p = sub.add_parser("compile", help="compile an ONNX model and save it")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("-v", "--verbose", action="store_true", help="print the per-layer report")
    p.add_argument("--compress", action="store_true",
                   help="store the weights losslessly coded in weights.bin (Huffman, sparse)")
    p.add_argument("--tune", type=int, metavar="TRIALS",
                   help="auto-tune with MetaSchedule within TRIALS measured candidates")
    p.add_argument("--tune-seconds", type=float, metavar="S",
                   help="also stop tuning after S seconds (records so far are kept)")
    p.add_argument("--tune-db", metavar="FILE.json",
                   help="persistent tuning database (reused: known tasks are not re-tuned)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip checking the built code against the interpreter on one "
                        "seeded input")
    model_opts(p)
    remote_opts(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a compiled model once")
    p.add_argument("model", help="compiled model directory")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    p.add_argument("--seed", type=int, default=0, help="seed of random inputs not given")
    p.add_argument("--save", help="directory to save outputs as .npy")
    remote_opts(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("benchmark", help="time a compiled model on its target")
    p.add_argument("model", help="compiled model directory")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--number", type=int, default=1)
    p.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="N",
                   help="also print the N slowest kernels (local targets; default 15)")
    p.add_argument("--memory", action="store_true",
                   help="also print the planned arena, its lower bound, TVM's default plan "
                        "and the measured peak (a fresh process)")
    remote_opts(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("board", help="start/stop/status of the local emulated Cortex-A72 board")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait at start")
    p.add_argument("--boards", type=int, default=1,
                   help="emulated boards behind the one tracker (a farm: tuning measures on "
                        "all of them in parallel)")
    p.add_argument("--force", action="store_true",
                   help="stop: stop the board even while other commands are using it")
    p.set_defaults(func=cmd_board)

    p = sub.add_parser("report", help="size, MACs, memory per layer")
    p.add_argument("model", help="compiled model directory or ONNX file")
    p.add_argument("--json", action="store_true")
    model_opts(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("show", help="print the IR (after optional passes)")
    p.add_argument("model")
    p.add_argument("--no-constants", action="store_true")
    model_opts(p, target=False)
    p.set_defaults(func=cmd_show)

    sub.add_parser("passes", help="list registered passes").set_defaults(func=cmd_passes)
    sub.add_parser("targets", help="list registered targets").set_defaults(func=cmd_targets)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Our exception types for bad input: each prints one ``error:`` line, exit 2."""
    from targets import user_error_types

    from .artifact import ArtifactError
    from .compression import CompressionError
    from .interpreter import InputError
    from .ir import IRError
    from .onnx_io import ModelImportError
    from .ops.registry import OpValidationError, UnsupportedOpError
    from .pass_manager import PassOptionError
    from .verify import VerificationError

    errors = [CLIError, ModelImportError, UnsupportedOpError, OpValidationError,
              PassOptionError, InputError, ArtifactError, IRError, CompressionError,
              VerificationError, *user_error_types()]
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 2 for a bad model/option/file (one ``error:`` line), 1 for an
    internal bug (a traceback only with ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the verb
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    try:
        try:
            return args.func(args)
        except _user_errors() as exc:
            if args.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except MemoryError:
            if args.debug:
                raise
            print("error: out of memory (an input or model too large for this machine; "
                  "use a smaller input shape)", file=sys.stderr)
            return 2
        except BrokenPipeError:
            raise
        except OSError as exc:  # a file we were told to read or write
            if args.debug:
                raise
            print(f"error: {exc.strerror or exc}"
                  + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
            return 2
        except Exception as exc:
            if args.debug:
                raise
            print(f"internal error: {type(exc).__name__}: {exc} (a bug: please report it "
                  "with the output of --debug)", file=sys.stderr)
            return 1
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: stop quietly, without Python's second
        # "Exception ignored" message when stdout is flushed at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

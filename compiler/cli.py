"""The ``compiler`` command line; each verb mirrors an API call.

    compiler compile MODEL.onnx -o OUT [--target host] [--passes "fold-bn,cleanup"]
    compiler compile --config recipe.toml [flags that override the recipe]
        data for the passes: --calibration SRC --eval-data SRC --train-data SRC
        [--metric top1|f1|miou] [--budget 0.01]; SRC is a folder of images, a .npy/.npz file or a data set name
    compiler run OUT [--input name=file.npy ...]
    compiler benchmark OUT [--repeat 20]
    compiler report OUT|MODEL.onnx [--passes ...] [--json] [--html page.html]
    compiler export-onnx OUT|MODEL.onnx -o model.onnx [--integer]
    compiler show MODEL.onnx [--passes ...]
    compiler passes | compiler targets
    compiler board start|stop|status [--boards N]  (the local emulated Cortex-A72 board)

cortex-a72 models run/benchmark on a board through a TVM RPC tracker: --tracker HOST:PORT
--key KEY (or COMPILER_TRACKER / COMPILER_RPC_KEY), else on the local EMULATED board.
--load module.py (anywhere on the line, repeatable) imports a module that registers
custom passes or targets first.  --target takes options: "cortex-a72 -mattr=+neon".

Exit codes: 0 success; 2 a user error (bad option, model, file, data; one "error:" line);
1 an internal error (a bug; --debug shows the traceback), and `board status` when the
board is not running.
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


#: compile options a recipe may set, with their defaults when neither file nor flag does
COMPILE_DEFAULTS = {"target": "host", "seed": 0, "compress": False, "no_verify": False,
                    "calibration_samples": 256, "eval_samples": 1000}


def _apply_recipe(args: argparse.Namespace) -> None:
    """Fill the options not given on the command line from ``--config``, then defaults."""
    if args.config:
        from .recipe import load_recipe

        recipe = load_recipe(args.config)
        if args.target is not None:  # another target: the file's options were for its own
            recipe.pop("target_option", None)
        for dest, value in recipe.items():
            if dest == "target_option":  # the file's first, the command line's win
                args.target_option = value + (args.target_option or [])
            elif getattr(args, dest, None) is None:
                setattr(args, dest, value)
    _fill_defaults(args)
    if not args.model:
        raise CLIError("compile needs a model: MODEL.onnx or --config recipe.toml with "
                       "model = \"...\"")
    if not args.output:
        raise CLIError("compile needs an output folder: -o DIR (or output = \"...\" in the "
                       "recipe)")


def _fill_defaults(args: argparse.Namespace) -> None:
    for dest, value in COMPILE_DEFAULTS.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)


def _data_args(args: argparse.Namespace) -> dict:
    """The data keywords of `compiler.compile` from --calibration/--eval-data/...."""
    from .data_sources import Preprocess

    if args.budget is not None and args.eval_data is None:
        raise CLIError("--budget needs --eval-data (the budget is a drop of its score)")
    if args.metric is not None and args.eval_data is None:
        raise CLIError("--metric needs --eval-data")
    pre = {k: getattr(args, k) for k in ("mean", "std", "resize", "channels", "layout")
           if getattr(args, k) is not None}
    if args.train_samples is not None and args.train_data is None:
        raise CLIError("--train-samples needs --train-data")
    for key, n in (("calibration_samples", args.calibration_samples),
                   ("eval_samples", args.eval_samples),
                   ("train_samples", args.train_samples)):
        if n is not None and n < 1:
            raise CLIError(f"--{key.replace('_', '-')} must be >= 1, got {n}")
    return {"calibration_data": args.calibration, "eval_data": args.eval_data,
            "metric": args.metric, "budget": args.budget,
            "preprocess": Preprocess(**pre) if pre else None,
            "calibration_samples": args.calibration_samples,
            "eval_samples": args.eval_samples, "train_data": args.train_data,
            "train_samples": args.train_samples, "seed": args.seed}


def _tune_trials(text: str) -> "int | str":
    if text == "default":  # --tune without a number (argparse passes the const through)
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tune takes a number of trials, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--tune trials must be >= 0, got {value}")
    return value


def cmd_compile(args: argparse.Namespace) -> int:
    from .api import compile

    from .artifact import check_destination

    _apply_recipe(args)
    check_destination(args.output)  # before the (long) build: a bad -o must cost nothing
    tune = None
    if args.tune is not None or args.tune_db is not None:
        # --tune alone: the target's default budget (None) on the database shared by all
        # models (a layer tuned for one model is reused by the next); --tune-db alone
        # applies the records it has (0 new trials)
        trials = 0 if args.tune is None else None if args.tune == "default" else int(args.tune)
        tune = {"trials": trials, "database": args.tune_db or "default",
                "max_seconds": args.tune_seconds, "seed": args.seed}
    cm = compile(args.model, target=_target_arg(args), passes=_passes_arg(args.passes),
                 input_shapes=_parse_shapes(args.input_shape), tune=tune,
                 verify=not args.no_verify, **_data_args(args))
    out = cm.save(args.output, compress=bool(args.compress))
    print(cm.report() if args.verbose else _summary(cm))
    for line in _budget_lines(cm.pass_stats):
        print(line)
    v = cm.verification
    if v is None:
        print("verify: off (--no-verify)")
    elif v["status"] == "skipped":
        print(f"verify: skipped ({v['reason']})")
    else:
        print("verify: the built code matches the interpreter on a seeded input")
    print(f"saved {out}")
    return 0


def _budget_lines(pass_stats: dict) -> list[str]:
    """One line per pass that spent the pipeline's accuracy budget (score, what is left)."""
    lines = []
    for name, stats in pass_stats.items():
        if isinstance(stats, dict) and "budget_left" in stats:
            spent = stats["budget"] - stats["budget_left"]
            lines.append(f"budget: after {name}: {spent:.4f} of {stats['budget']:.4f} spent "
                         f"(original score {stats['pipeline_baseline']:.4f})")
    return lines


def _target_arg(args: argparse.Namespace):
    """The target of ``--target "NAME -key=value ..."``, pointed at ``--tracker``/``--key``
    and configured by its inline options and ``--target-option`` (those win); the options
    are recorded in the saved model (`compiler.target_options`)."""
    from targets import get_target

    from .target_options import configure_target, parse_target_spec

    name, pairs = parse_target_spec(args.target or "host")
    for item in getattr(args, "target_option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--target-option expects key=value, got '{item}'")
        pairs[key.strip()] = value.strip()
    target = get_target(name)
    if getattr(args, "tracker", None) or getattr(args, "key", None):
        if not hasattr(target, "with_remote") or getattr(target, "runs_locally", True):
            raise CLIError(f"target '{target.name}' runs on this machine: --tracker/--key do "
                           "not apply (drop them, or use --target cortex-a72)")
        target = target.with_remote(args.tracker, args.key)
    return configure_target(target, pairs)


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
    inputs = _load_inputs(cm, None, args.seed)
    print(cm.benchmark(repeat=args.repeat, number=args.number, inputs=inputs))
    if args.profile:
        rows = cm.profile(repeat=args.repeat, inputs=inputs)
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
        _fill_defaults(args)
        cm = compile(path, target=_target_arg(args), passes=_passes_arg(args.passes),
                     input_shapes=_parse_shapes(args.input_shape), build=False,
                     **_data_args(args))
    from .cli_output import write_report_files

    written = write_report_files(cm, args)
    report = cm.report()
    if args.json or not written:
        print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    for file in written:
        print(f"wrote {file}", file=sys.stderr)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .api import compile

    _fill_defaults(args)
    graph = compile(args.model, passes=_passes_arg(args.passes) or [],
                    input_shapes=_parse_shapes(args.input_shape), build=False,
                    **_data_args(args)).graph
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
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--load", action="append", metavar="MODULE.py",
                        help="import a module that registers custom passes/targets first "
                             "(repeatable; accepted anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_opts(p: argparse.ArgumentParser, target: bool = True) -> None:
        p.add_argument("--passes", help="comma-separated pass specs, e.g. "
                       "'fold-bn,prune{ratio=0.5}' ('none' for no passes; default: the "
                       "target's defaults)")
        p.add_argument("--input-shape", action="append", metavar="NAME=D0,D1,...",
                       help="static shape for a dynamic input (repeatable)")
        if target:
            p.add_argument("--target", default=None,
                           help="target name (see 'targets'; default host), with options: "
                                "\"cortex-a72 -mattr=+neon\"")
            p.add_argument("--target-option", action="append", metavar="KEY=VALUE",
                           help="target setting, repeatable (fpga-sim: part=xczu7ev, "
                                "fclk_mhz=200, target_fps=1000, budget=lut:0.7, ...)")

    def data_opts(p: argparse.ArgumentParser) -> None:
        """--calibration/--eval-data/... for the verbs that run passes (compile, report, show)."""
        p.add_argument("--seed", type=int, default=None,
                       help="seed of data subsets, tuning and the verification input (0)")
        data = p.add_argument_group(
            "data for the passes (SRC: a folder of PNG/JPEG images, labelled by subfolder; a "
            ".npy batch; an .npz with x[,y] or inputs[,labels]; a data set name: mnist, "
            "fashion-mnist, mnist-seg, optionally NAME:SPLIT)")
        data.add_argument("--calibration", metavar="SRC",
                          help="calibration inputs (quantize, mixed-precision)")
        data.add_argument("--eval-data", metavar="SRC",
                          help="labelled data the accuracy-aware passes score on (prune-search, "
                               "t-sensitive, mixed-precision)")
        data.add_argument("--train-data", metavar="SRC",
                          help="labelled training data for fine-tuning (finetune, "
                               "gradual-prune, deep-compression, finetune_epochs=...; a data "
                               "set name means its train split)")
        data.add_argument("--metric", choices=["top1", "f1", "miou"],
                          help="score of --eval-data (default: top1, miou for segmentation)")
        data.add_argument("--budget", type=float, metavar="DROP",
                          help="one accuracy budget for the whole pipeline: the largest drop of "
                               "the score against the original model (0.01 = one point), shared "
                               "by the accuracy-aware passes")
        data.add_argument("--calibration-samples", type=int, metavar="N",
                          help="calibration samples used (a seeded subset; default 256)")
        data.add_argument("--eval-samples", type=int, metavar="N",
                          help="evaluation samples used (a seeded subset; default 1000)")
        data.add_argument("--train-samples", type=int, metavar="N",
                          help="training samples used (a seeded subset; default all)")
        data.add_argument("--mean", metavar="M[,M,M]",
                          help="images: per-channel mean in pixel/255 units (default 0)")
        data.add_argument("--std", metavar="S[,S,S]",
                          help="images: per-channel std in pixel/255 units (default 1)")
        data.add_argument("--resize", metavar="H,W",
                          help="images: size to resize to (default: the model input's)")
        data.add_argument("--channels", choices=["rgb", "bgr", "gray"],
                          help="images: channel order (default: from the model input)")
        data.add_argument("--layout", choices=["nchw", "nhwc"],
                          help="images: tensor layout (default: from the model input)")

    def remote_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tracker", metavar="HOST:PORT", help="TVM RPC tracker of a real board "
                       "(default: $COMPILER_TRACKER, else the local emulated board)")
        p.add_argument("--key", help="RPC key of the board at the tracker "
                       "(default: $COMPILER_RPC_KEY, else the target name)")

    p = sub.add_parser("compile", help="compile an ONNX model and save it")
    p.add_argument("model", nargs="?", help="the ONNX model (or model = ... in --config)")
    p.add_argument("-o", "--output", help="output directory (or output = ... in --config)")
    p.add_argument("--config", metavar="RECIPE.toml",
                   help="a pipeline file (model, target, passes, data, tuning, output); "
                        "flags given here override it (see compiler/recipe.py)")
    data_opts(p)
    p.add_argument("--compress", action="store_true", default=None,
                   help="store the weights losslessly coded in weights.bin (Huffman, sparse)")
    p.add_argument("--tune", type=_tune_trials, nargs="?", const="default", metavar="TRIALS",
                   help="auto-tune with MetaSchedule within TRIALS measured candidates "
                        "(no number: the default budget, about 5 minutes per model)")
    p.add_argument("--tune-seconds", type=float, metavar="S",
                   help="also stop tuning after S seconds (records so far are kept)")
    p.add_argument("--tune-db", metavar="FILE.json",
                   help="persistent tuning database (reused: known tasks are not re-tuned; "
                        "default: one shared by all models in the user cache, "
                        "~/.cache/embedded-cnn-compiler/tuning-db.json or $COMPILER_TUNE_DB)")
    p.add_argument("--no-verify", action="store_true", default=None,
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
    p.add_argument("--seed", type=int, default=0, help="seed of the random input timed")
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
    p.add_argument("--html", metavar="FILE.html", help="also write a self-contained HTML page "
                   "(per-layer table, pass history, plots)")
    p.add_argument("--profile", action="store_true",
                   help="--html: time the kernels on the target (local targets) for the page")
    model_opts(p)
    data_opts(p)
    p.set_defaults(func=cmd_report)

    from .cli_output import cmd_export_onnx

    p = sub.add_parser("export-onnx", help="write standard ONNX (QDQ when quantized) for "
                       "onnxruntime / Netron")
    p.add_argument("model", help="compiled model directory or ONNX file")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--integer", action="store_true",
                   help="our exact integer graph (private q domain) instead of QDQ")
    model_opts(p)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("show", help="print the IR (after optional passes)")
    p.add_argument("model")
    p.add_argument("--no-constants", action="store_true")
    model_opts(p, target=False)
    data_opts(p)
    p.set_defaults(func=cmd_show)

    sub.add_parser("passes", help="list registered passes").set_defaults(func=cmd_passes)
    sub.add_parser("targets", help="list registered targets").set_defaults(func=cmd_targets)
    for p in sub.choices.values():  # the output options, accepted after every verb
        p.add_argument("-v", "--verbose", action="count", default=0,
                       help="more output: -v info (compile: the per-layer report), -vv debug")
        p.add_argument("-q", "--quiet", action="count", default=0,
                       help="less output: -q errors only")
        p.add_argument("--no-progress", action="store_true",
                       help="no progress bars (they are off anyway when stderr is not a "
                            "terminal)")
    return parser


def version_text() -> str:
    """``compiler X (apache-tvm Y)`` from the installed distributions' metadata."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (f"compiler {version('embedded-cnn-compiler')} (apache-tvm {version('apache-tvm')}, "
            f"onnx {version('onnx')})")


def load_user_modules(paths: Sequence[str]) -> None:
    """Import each ``--load`` file (``module.py``) or module name, so that the passes and
    targets it registers exist before the command parses its options."""
    import importlib
    import importlib.util

    for item in paths:
        path = Path(item)
        if path.suffix == ".py" or path.exists():
            if not path.is_file():
                raise CLIError(f"--load {item}: no such file")
            name = f"compiler_user_{_SAFE_NAME.sub('_', path.stem)}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise CLIError(f"--load {item}: not a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            sys.path.insert(0, str(path.resolve().parent))  # its own imports
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(name, None)
                raise LoadError(f"--load {item}: importing it failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        else:
            try:
                importlib.import_module(item)
            except ImportError as exc:
                raise CLIError(f"--load {item}: no such file or importable module ({exc})") \
                    from None


class LoadError(CLIError):
    """A ``--load`` module raised while being imported (its traceback with --debug)."""


def _split_global(argv: list[str]) -> tuple[list[str], bool, list[str]]:
    """``--debug`` and ``--load X`` are accepted anywhere on the line: (rest, debug, loads)."""
    rest, loads, debug = [], [], False
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--debug":
            debug = True
        elif a == "--load":
            if i + 1 >= len(argv):
                raise CLIError("--load needs a module file: --load my_passes.py")
            loads.append(argv[i + 1])
            i += 1
        elif a.startswith("--load="):
            loads.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return rest, debug, loads


def _is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of our bad-input types (one ``error:`` line, exit 2).  The
    targets' own types are looked up only for an exception raised from ``targets`` (that
    lookup imports TVM, tens of seconds on a loaded machine, for every other error)."""
    if isinstance(exc, _user_errors()):
        return True
    if type(exc).__module__.split(".")[0] == "targets":
        from targets import (TargetUnavailableError, TuningUnsupportedError,
                             UnknownTargetError, user_error_types)

        if isinstance(exc, (UnknownTargetError, TargetUnavailableError,
                            TuningUnsupportedError)):  # no TVM import for these
            return True
        return isinstance(exc, user_error_types())
    return False


def _user_errors() -> tuple[type[BaseException], ...]:
    """Our exception types for bad input, but the targets' (`_is_user_error` adds them)."""
    from .artifact import ArtifactError
    from .compression import CompressionError
    from .datasets import DatasetError
    from .evaluate import EvaluationError
    from .interpreter import InputError
    from .recipe import RecipeError
    from .target_options import TargetOptionError
    from .ir import IRError
    from .onnx_io import ModelImportError
    from .ops.registry import OpValidationError, UnsupportedOpError
    from .pass_manager import PassOptionError
    from .verify import VerificationError

    errors = [CLIError, ModelImportError, UnsupportedOpError, OpValidationError,
              PassOptionError, InputError, ArtifactError, IRError, CompressionError,
              VerificationError, RecipeError, TargetOptionError, DatasetError,
              EvaluationError]
    return tuple(errors)


def _print_error(exc: Exception) -> int:
    """One line on stderr for ``exc``; the exit code: 2 bad input, 1 a bug."""
    if _is_user_error(exc):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, MemoryError):
        print("error: out of memory (an input or model too large for this machine; "
              "use a smaller input shape)", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):  # a file we were told to read or write
        print(f"error: {exc.strerror or exc}"
              + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return 2
    print(f"internal error: {type(exc).__name__}: {exc} (a bug: please report it "
          "with the output of --debug)", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 on success, 2 for a bad model/option/file (one ``error:`` line), 1 for an
    internal bug (a traceback only with ``--debug``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the verb
    try:
        argv, debug, loads = _split_global(argv)
        load_user_modules(loads)  # before parsing: --passes/--target may name their names
    except CLIError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    args.debug = debug
    from .logs import set_progress, setup_logging

    restore_logging = setup_logging(args.verbose - args.quiet)
    if args.no_progress:
        set_progress(False)
    try:
        return _dispatch(args)
    finally:
        restore_logging()
        if args.no_progress:
            set_progress(None)


def _dispatch(args: argparse.Namespace) -> int:
    """Run the verb; map errors to exit codes (see `main`)."""
    try:
        try:
            return args.func(args)
        except BrokenPipeError:
            raise
        except Exception as exc:
            if args.debug:
                raise
            return _print_error(exc)
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: stop quietly, without Python's second
        # "Exception ignored" message when stdout is flushed at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())

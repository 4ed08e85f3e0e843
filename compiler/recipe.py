"""Pipeline files: a whole ``compiler compile`` job kept in a TOML recipe.

    compiler compile --config examples/int8-a72.toml [flags that override the file]

The keys (every one optional except ``model``; an unknown key is an error naming it)::

    model = "tinynet.onnx"              # the ONNX model
    output = "../out/tinynet"           # the compiled model's folder (-o)
    passes = ["fold-bn", "prune-search{max_drop=0.01}"]   # or one "a,b" string, or
                                        # tables: {name = "quantize", bits = 8}
    seed = 0                            # data subsets, verification input (--seed)
    compress = false                    # weights.bin (--compress)
    verify = true                       # check the build against the interpreter
    input_shape = { input = [1, 1, 28, 28] }

    [target]                            # or: target = "cortex-a72 -mattr=+neon"
    name = "cortex-a72"
    options = { mattr = "+neon" }       # --target-option KEY=VALUE
    tracker = "pi:9190"                 # a real board (--tracker/--key)
    key = "rpi4"

    [data]
    calibration = "mnist"               # a folder of images, .npy/.npz, a data set name
    eval = "mnist"                      # --eval-data
    train = "mnist"                     # --train-data (a data set name: its train split)
    metric = "top1"                     # top1 | f1 | miou
    budget = 0.01                       # one accuracy budget for the whole pipeline
    calibration_samples = 256
    eval_samples = 1000
    train_samples = 5000                # default: all
    [data.preprocess]                   # image folders: --mean/--std/--resize/...
    mean = [0.1307]
    std = [0.3081]
    resize = [28, 28]
    channels = "gray"                   # rgb | bgr | gray
    layout = "nchw"                     # nchw | nhwc

    [tuning]
    trials = 64                         # --tune
    seconds = 600                       # --tune-seconds
    database = "tune-a72.json"          # --tune-db

Paths in a recipe (model, output, tuning database, data files and folders) are relative
to the recipe's own folder, so a recipe works from any working directory; a data value
that is a data set name (``mnist``, ``mnist:test``) stays a name.  Flags given on the
command line win over the file (their paths are relative to the working directory).
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["RecipeError", "load_recipe", "SCHEMA"]


class RecipeError(ValueError):
    """A recipe file that cannot be read or has a bad key/value (names file and key)."""


_NUM = (int, float)
#: table -> key -> (accepted types, the CLI option's dest).  ``None`` dest: handled below.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], str | None]]] = {
    "": {"model": ((str,), "model"), "output": ((str,), "output"),
         "passes": ((str, list), None), "seed": ((int,), "seed"),
         "compress": ((bool,), "compress"), "verify": ((bool,), None),
         "input_shape": ((dict,), None), "target": ((str, dict), None),
         "data": ((dict,), None), "tuning": ((dict,), None)},
    "target": {"name": ((str,), None), "options": ((dict,), None),
               "tracker": ((str,), "tracker"), "key": ((str,), "key")},
    "data": {"calibration": ((str,), "calibration"), "eval": ((str,), "eval_data"),
             "train": ((str,), "train_data"), "train_samples": ((int,), "train_samples"),
             "metric": ((str,), "metric"), "budget": (_NUM, "budget"),
             "calibration_samples": ((int,), "calibration_samples"),
             "eval_samples": ((int,), "eval_samples"), "preprocess": ((dict,), None)},
    "data.preprocess": {"mean": ((list,) + _NUM, "mean"), "std": ((list,) + _NUM, "std"),
                        "resize": ((list, int), "resize"), "channels": ((str,), "channels"),
                        "layout": ((str,), "layout")},
    "tuning": {"trials": ((int,), "tune"), "seconds": (_NUM, "tune_seconds"),
               "database": ((str,), "tune_db")},
}
_PATH_KEYS = {"model", "output", "tune_db"}


def _check_table(table: dict, section: str, file: Path) -> None:
    allowed = SCHEMA[section]
    where = f"[{section}] " if section else ""
    for key, value in table.items():
        if key not in allowed:
            raise RecipeError(f"{file}: unknown key {where}'{key}'; known keys"
                              f"{' in [' + section + ']' if section else ''}: "
                              f"{', '.join(sorted(allowed))}")
        types = allowed[key][0]
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = " or ".join("table" if t is dict else "array" if t is list else t.__name__
                                for t in types)
            raise RecipeError(f"{file}: {where}'{key}' must be {names}, got "
                              f"{type(value).__name__} {value!r}")


def _pass_spec(item: Any, file: Path) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        opts = dict(item)
        name = opts.pop("name", None)
        if not isinstance(name, str):
            raise RecipeError(f"{file}: a pass table needs name = \"...\", got {item!r}")

        def fmt(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, list):
                return "[" + ";".join(fmt(x) for x in v) + "]"
            return str(v)

        body = ",".join(f"{k}={fmt(v)}" for k, v in opts.items())
        return name + ("{" + body + "}" if body else "")
    raise RecipeError(f"{file}: 'passes' entries are strings or tables, got {item!r}")


def _rebase(value: str, folder: Path) -> str:
    return value if os.path.isabs(value) else os.path.normpath(str(folder / value))


def load_recipe(path: "str | os.PathLike") -> dict[str, Any]:
    """The recipe at ``path`` as values keyed by the ``compiler compile`` option they set
    (``dest`` names of the CLI parser); paths made relative to the working directory."""
    from .data_sources import is_dataset_name

    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise RecipeError(f"--config {file}: cannot read it ({exc.strerror or exc})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{file}: not valid TOML ({exc})") from None
    folder = file.parent
    out: dict[str, Any] = {}
    _check_table(doc, "", file)
    for section in ("target", "data", "tuning"):
        if isinstance(doc.get(section), dict):
            _check_table(doc[section], section, file)
    preprocess = (doc.get("data") or {}).get("preprocess")
    if preprocess is not None:
        _check_table(preprocess, "data.preprocess", file)
    tables = {"": doc, "data.preprocess": preprocess or {}}
    for section in ("target", "data", "tuning"):
        if isinstance(doc.get(section), dict):
            tables[section] = doc[section]
    for section, table in tables.items():
        for key, value in table.items():
            dest = SCHEMA[section][key][1]
            if dest is not None:
                out[dest] = value
    for dest in _PATH_KEYS & set(out):
        out[dest] = _rebase(out[dest], folder)
    for dest in ("calibration", "eval_data", "train_data"):
        if dest in out and not is_dataset_name(out[dest]):
            out[dest] = _rebase(out[dest], folder)
    if "passes" in doc:
        passes = doc["passes"]
        out["passes"] = passes if isinstance(passes, str) else \
            ",".join(_pass_spec(p, file) for p in passes)
    if "verify" in doc:
        out["no_verify"] = not doc["verify"]
    if "input_shape" in doc:
        shapes = []
        for name, dims in doc["input_shape"].items():
            if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
                raise RecipeError(f"{file}: input_shape.{name} must be an array of integers, "
                                  f"got {dims!r}")
            shapes.append(f"{name}={','.join(str(d) for d in dims)}")
        out["input_shape"] = shapes
    target = doc.get("target")
    if isinstance(target, str):
        out["target"] = target
    elif isinstance(target, dict):
        if "name" in target:
            out["target"] = target["name"]
        if "options" in target:
            from .target_options import option_text

            out["target_option"] = [f"{k}={option_text(v)}"
                                    for k, v in target["options"].items()]
    for key in ("mean", "std", "resize"):
        if isinstance(out.get(key), list):
            out[key] = ",".join(str(v) for v in out[key])
        elif key in out:
            out[key] = str(out[key])
    return out

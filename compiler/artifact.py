"""`CompiledModel`: the result of `compiler.compile`, and its on-disk form.

A compiled model keeps the optimized IR (for reports and re-export), the target it was
built for and the target's built code.  ``save`` writes a directory::

    meta.json    format version, target, inputs/outputs, pass pipeline and stats
    model.onnx   the optimized graph as standard ONNX (opset 17) that onnxruntime and
                 Netron open: the QDQ form of a quantized graph (`compiler.qdq_export`)
    model.q.onnx a quantized graph only: our exact integer graph (ops of the private ``q``
                 domain), the one ``load`` reads (``graph_file`` in meta.json)
    model.so     the target library (when the target can export one)
    weights.bin  with ``save(path, compress=True)``: every constant of the graph in the
                 checked container of `compiler.compression` (codebooks, Huffman-coded
                 indices and sparse gaps); model.onnx then holds the structure only, its
                 initializers marked external, and ``load`` restores them bit for bit

Format version 2 added ``weights.bin``; version 3 records the SHA-256 of every file in
``meta.json`` (``files``) and ``load`` refuses a directory whose files do not match (a
flipped bit in model.so would otherwise give wrong logits silently); versions 1 and 2
still load (unchecked).  Version 4: a quantized graph is kept in ``model.q.onnx`` with a
standard (QDQ) ``model.onnx`` beside it; and the library of a TVM target is code only, its
weights parameters of ``main`` (``meta.json`` ``params``: how they are derived from the
graph and their digest); ``load`` derives them from the graph just read -- from
weights.bin when compressed, else from the graph file -- and binds them, so a compressed
directory deploys compressed (the report's deployed bytes are library + weights.bin).
Every artifact of those targets is built this way, compressed or not: the build
happens in ``compile``, before ``save`` knows whether it will compress, and an
uncompressed directory then no longer holds its weights twice (model.onnx and
model.so).  Directories of versions <= 3 (weights embedded) still load.

The directory appears whole or not at all (it is assembled beside the destination and
renamed into place).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .analysis import ModelStats, model_stats, planned_memory_column
from .interpreter import check_inputs
from .logs import filtered_native_stderr
from .ir import Graph
from .target_options import configure_target, target_options

FORMAT_VERSION = 4
WEIGHTS_FILE = "weights.bin"
INTEGER_GRAPH_FILE = "model.q.onnx"  # a quantized graph, exact (q domain); see the docstring

__all__ = ["CompiledModel", "Report", "ArtifactError", "check_destination"]


class ArtifactError(ValueError):
    """A saved model directory that cannot be read back."""


class CompiledModel:
    def __init__(self, graph: Graph, target: Any, built: Any, *, original: Graph | None = None,
                 pipeline: str = "", pass_stats: dict | None = None):
        self.graph = graph
        self.target = target
        self.built = built
        self.original_stats: ModelStats | None = model_stats(original) if original else None
        self.pipeline = pipeline
        self.pass_stats = pass_stats or {}
        self.timing = None
        self.tuning: dict | None = None  # MetaSchedule stats when compiled with tune=...
        self.compression: dict | None = None  # weights.bin stats of a compressed save/load
        self.verification: dict | None = None  # compiler.verify result of compile()
        # a loaded model's library file and weights recipe: TVM cannot serialize a
        # loaded library again, so `save` copies the file it came from
        self.library_source: Path | None = None
        self.params_recipe: Any = None

    # -- execution ------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.graph.outputs]

    def run(self, inputs: "Mapping[str, Any] | Sequence[Any] | np.ndarray") -> list[np.ndarray]:
        """Run on the target; inputs by name or in order, checked against the model."""
        arrays = check_inputs(self.graph, inputs)
        if self.built is None:
            raise ArtifactError("this model has no built code (compiled with build=False, "
                                "or its meta.json names no library): compile it again")
        return self.target.run(self.built, [arrays[v.name] for v in self.graph.inputs])

    def benchmark(self, *, repeat: int = 10, number: int = 1,
                  inputs: "Mapping[str, Any] | None" = None):
        """Time the model on the target (median and spread over ``repeat`` runs)."""
        from .interpreter import InputError, random_inputs

        for name, n in (("repeat", repeat), ("number", number)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise InputError(f"benchmark: {name} must be a positive integer, got {n!r}")

        arrays = check_inputs(self.graph, inputs if inputs is not None else random_inputs(self.graph))
        self.timing = self.target.measure(self.built, [arrays[v.name] for v in self.graph.inputs],
                                          repeat=repeat, number=number)
        return self.timing

    def profile(self, *, repeat: int = 10,
                inputs: "Mapping[str, Any] | None" = None) -> list[dict]:
        """Where the time goes on the target: one row per kernel (``kernel``, median
        ``ms`` per run, ``calls``, ``share`` of the kernel total), slowest first.  Local
        targets only (a board's kernels are timed as a whole by `benchmark`)."""
        from .interpreter import random_inputs

        arrays = check_inputs(self.graph, inputs if inputs is not None else random_inputs(self.graph))
        return self.target.profile(self.built, [arrays[v.name] for v in self.graph.inputs],
                                   repeat=repeat)

    def memory(self, *, measure: bool = True, runs: int = 3) -> dict:
        """Planned activation memory (our arena, its lower bound, TVM's default plan)
        and the measured peak of a fresh process running the model: `api.memory_report`."""
        from .api import memory_report

        return memory_report(self, measure=measure, runs=runs)

    # -- files ----------------------------------------------------------------
    def export_onnx(self, path: "str | os.PathLike", *, integer: bool = False) -> Path:
        """Standard ONNX (QDQ for a quantized graph) that onnxruntime and Netron open;
        ``integer=True``: our exact integer graph (private ``q`` domain) instead."""
        from .onnx_io import export_model
        from .qdq_export import export_standard

        (export_model if integer else export_standard)(self.graph, path)
        return Path(path)

    def save(self, path: "str | os.PathLike", *, compress: bool = False) -> Path:
        """Write the model directory atomically; returns its path.

        ``compress=True`` stores the weights losslessly coded in ``weights.bin`` (see the
        module docstring) and fills ``self.compression`` (bytes per tensor).  Refuses a
        destination that is not ours (`check_destination`); concurrent saves to one
        folder are serialized by a lock, and temporaries of killed saves are removed."""
        dest = Path(path)
        check_destination(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _save_lock(dest):
            check_destination(dest)  # another save may have finished while we waited
            _remove_stale_temporaries(dest)
            return self._save_locked(dest, compress)

    def _save_locked(self, dest: Path, compress: bool) -> Path:
        from .onnx_io import export_model
        from .qdq_export import is_integer_graph

        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_TMP_MARK}", dir=dest.parent))
        try:
            weights = None
            graph_file = INTEGER_GRAPH_FILE if is_integer_graph(self.graph) else "model.onnx"
            if compress:
                weights = _write_compressed(self.graph, tmp, graph_file)
                self.compression = weights
            else:
                export_model(self.graph, tmp / graph_file)
            if graph_file != "model.onnx":
                _write_standard_onnx(self.graph, tmp / "model.onnx")
            library = None
            if self.built is not None:
                library = "model" + self.target.library_suffix
                self._write_library(tmp / library)
            meta = {
                "format_version": FORMAT_VERSION,
                "target": self.target.name,
                "target_options": target_options(self.target),
                "library": library,
                "graph_file": graph_file,
                "pipeline": self.pipeline,
                "pass_stats": _jsonable(self.pass_stats),
                "inputs": [_spec(v) for v in self.graph.inputs],
                "outputs": [_spec(v) for v in self.graph.outputs],
                "original_stats": _jsonable(self.original_stats.to_dict())
                if self.original_stats else None,
            }
            if self.tuning is not None:
                meta["tuning"] = _jsonable(self.tuning)
            recipe = None
            if library is not None and self.library_source is not None:
                recipe = self.params_recipe
            elif library is not None:
                recipe_of = getattr(self.target, "weights_recipe", None)
                recipe = recipe_of(self.built) if recipe_of else None
            if recipe is not None:
                meta["params"] = _jsonable(recipe)
            if weights is not None:
                # what a device receives: the library plus weights.bin (a library that
                # embeds the weights, e.g. fpga-sim's functional model, is said to)
                lib_bytes = (tmp / library).stat().st_size if library else 0
                weights["deployed_bytes"] = lib_bytes + weights["bytes"]
                weights["library_bytes"] = lib_bytes
                weights["library_embeds_weights"] = library is not None and recipe is None
                meta["weights"] = _jsonable(weights)
            meta["files"] = {f.name: _sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            if dest.exists():
                old = dest.with_name(f".{dest.name}{_TMP_MARK}old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    def _write_library(self, file: Path) -> None:
        """Export the built code to ``file``, or copy the library a loaded model came from
        (checked against the checksum it was loaded with)."""
        if self.library_source is None:
            with filtered_native_stderr():  # TVM's "Scope Saving" lines
                self.target.export(self.built, file)
            return
        try:
            shutil.copyfile(self.library_source, file)
        except OSError as exc:
            raise ArtifactError(f"{self.library_source}: the library this model was loaded "
                                f"from cannot be copied ({exc.strerror or exc}); load it "
                                "again or re-create it with `compiler compile`") from None

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "CompiledModel":
        from targets import get_target

        from .onnx_io import import_model

        path = Path(path)
        meta_file = path / "meta.json"
        if not meta_file.exists():
            raise ArtifactError(f"{path}: not a compiled model directory (no meta.json)")
        meta = _read_meta(meta_file)
        _check_files(path, meta)
        weights = meta.get("weights")
        graph_file = meta.get("graph_file") or "model.onnx"
        try:
            if weights:
                graph = _read_compressed(path, weights, graph_file)
            else:
                graph = import_model(path / graph_file, fold=False)
        except ArtifactError:
            raise
        except Exception as exc:  # ModelImportError and friends: say which directory
            raise ArtifactError(f"{path}: {graph_file} cannot be read ({exc})") from None
        try:
            target = configure_target(get_target(meta["target"]),
                                      meta.get("target_options") or {})
        except ValueError as exc:  # UnknownTargetError, TargetOptionError
            raise ArtifactError(f"{meta_file}: {exc}") from None
        built = None
        if meta.get("library"):
            library = path / meta["library"]
            if not library.exists():
                raise ArtifactError(f"{path}: library {meta['library']} is missing")
            if getattr(target, "runs_locally", True):
                try:
                    with filtered_native_stderr():  # TVM's "Scope Loaded" lines
                        built = target.load(library)
                except Exception as exc:
                    raise ArtifactError(f"{library}: the library cannot be loaded "
                                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                        "re-create it with `compiler compile`") from None
            else:
                built = library
            if meta.get("params") is not None:
                built = _bind_weights(target, built, graph, meta, path)
            elif meta["format_version"] >= 4 and getattr(target, "weights_as_params", False):
                # its library takes the weights as parameters: without the recipe it
                # cannot be called
                raise ArtifactError(f"{meta_file}: corrupt metadata (no 'params' for a "
                                    f"'{target.name}' library); re-create the directory "
                                    "with `compiler compile`")
        model = cls(graph, target, built, pipeline=meta.get("pipeline", ""),
                    pass_stats=meta.get("pass_stats") or {})
        model.tuning = meta.get("tuning")
        model.compression = weights or None
        if built is not None:
            model.library_source = path / meta["library"]
            model.params_recipe = meta.get("params")
        if meta.get("original_stats"):
            stats = dict(meta["original_stats"])
            stats.pop("layers", None)
            try:
                model.original_stats = ModelStats(**stats, layers=[])
            except TypeError as exc:
                raise ArtifactError(f"{meta_file}: corrupt metadata (original_stats: "
                                    f"{exc})") from None
        return model

    # -- reporting -------------------------------------------------------------
    def report(self, json: bool = False) -> "Report | dict":
        """The report (``str()`` is a table); ``json=True`` returns its JSON-able dict.
        A target may add a section (`Target.report_extra`: fpga-sim adds its design)."""
        report = Report(self.target.name, self.pipeline, model_stats(self.graph),
                        self.original_stats, self.pass_stats, self.timing)
        report.tuning = self.tuning
        report.compression = self.compression
        report.memory = planned_memory_column(self.graph)
        extra = getattr(self.target, "report_extra", None)
        report.extra = extra(self.built, self.graph) if extra else None
        return report.to_dict() if json else report

    def __repr__(self) -> str:
        return f"CompiledModel(target='{self.target.name}', nodes={len(self.graph)})"


@dataclass
class Report:
    target: str
    pipeline: str
    stats: ModelStats
    original: ModelStats | None = None
    pass_stats: dict = field(default_factory=dict)
    timing: Any = None
    tuning: dict | None = None
    compression: dict | None = None
    extra: dict | None = None  # a target's own section: {"title", "text", "data"}
    memory: dict | None = None  # layer -> (planned live bytes, arena offset)

    def to_dict(self) -> dict:
        return _jsonable({"target": self.target, "pipeline": self.pipeline,
                          "tuning": self.tuning,
                          "compression": self.compression,
                          "stats": self.stats.to_dict(),
                          "original": self.original.to_dict() if self.original else None,
                          "pass_stats": self.pass_stats,
                          "latency": None if self.timing is None else {
                              "median_s": self.timing.median, "samples_s": self.timing.samples,
                              "device": self.timing.device, "emulated": self.timing.emulated,
                              "simulated": getattr(self.timing, "simulated", False)},
                          "target_report": self.extra["data"] if self.extra else None,
                          "planned_memory": self.memory})

    def __str__(self) -> str:
        s, o = self.stats, self.original
        rows = [f"target: {self.target}", f"passes: {self.pipeline or '(none)'}", ""]
        header = f"{'':<24}{'compiled':>16}" + (f"{'original':>16}{'ratio':>9}" if o else "")
        rows.append(header)
        for label, new, old, fmt in [
                ("parameters", s.params, o.params if o else None, format_count),
                ("weights size", s.param_bytes, o.param_bytes if o else None, format_bytes),
                ("MACs", s.macs, o.macs if o else None, format_count),
                ("peak activations", s.peak_activation_bytes,
                 o.peak_activation_bytes if o else None, format_bytes),
                ("nodes", s.nodes, o.nodes if o else None, format_count)]:
            line = f"{label:<24}{fmt(new):>16}"
            if o:
                ratio = f"{old / new:.2f}x" if new else "-"
                line += f"{fmt(old):>16}{ratio:>9}"
            rows.append(line)
        if self.compression:
            c = self.compression
            rows.append(f"{'weights.bin (archive)':<24}{format_bytes(c['bytes']):>16}"
                        + (f"{format_bytes(o.param_bytes):>16}{o.param_bytes / c['bytes']:>8.1f}x"
                           if o and c["bytes"] else ""))
            if c.get("library_bytes") and not c.get("library_embeds_weights"):
                rows.append(f"{'library (code only)':<24}{format_bytes(c['library_bytes']):>16}")
            if c.get("deployed_bytes"):
                d = c["deployed_bytes"]
                rows.append(f"{'deployed (lib+weights)':<24}{format_bytes(d):>16}"
                            + (f"{format_bytes(o.param_bytes):>16}{o.param_bytes / d:>8.2f}x"
                               if o else ""))
            if c.get("library_embeds_weights"):
                rows.append("  (the library still embeds the full weights: the deployment "
                            "is not compressed; weights.bin is a compressed archive)")
        if self.tuning:
            t = self.tuning
            rows.append(f"{'tuning':<24}{t.get('trials', 0)} trials this build, "
                        f"{t.get('tasks_with_records', 0)}/{t.get('tasks', 0)} tasks tuned "
                        f"({t.get('tasks_from_database', 0)} from the database), "
                        f"{t.get('seconds', 0)} s")
        if self.timing is not None:
            label = "latency (EMULATED)" if getattr(self.timing, "emulated", False) else "latency"
            label = "latency (SIMULATED)" if getattr(self.timing, "simulated", False) else label
            rows.append(f"{label:<24}{str(self.timing)}")
        if self.extra:
            rows += ["", self.extra["title"], self.extra["text"]]
        mem = self.memory or {}
        width = max([len("layer")] + [len(l.name) for l in s.layers]) + 2  # full names
        rows += ["", f"{'layer':<{width}}{'op':<20}{'output':<20}{'MACs':>12}{'params':>10}"
                     f"{'bits':>6}{'sparsity':>10}"
                 + (f"{'live (plan)':>13}{'offset':>11}" if mem else "")]
        for l in s.layers:
            shape = "x".join(str(d) for d in l.output_shape)
            bits = str(l.bits) if l.bits else ("-" if not l.params else "float")
            sparsity = f"{100 * l.sparsity:.1f}%" if l.params else "-"
            line = (f"{l.name:<{width}}{l.op_type[:19]:<20}{shape[:19]:<20}"
                    f"{format_count(l.macs):>12}{format_count(l.params):>10}{bits:>6}{sparsity:>10}")
            if l.name in mem:
                live, offset = mem[l.name]
                line += f"{format_bytes(live):>13}{offset if offset >= 0 else '-':>11}"
            rows.append(line)
        return "\n".join(rows)


def format_count(n: int) -> str:
    """1234567 -> '1.23M' (reports: text and HTML)."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_bytes(n: int) -> str:
    """1536 -> '1.50 KiB' (reports: text and HTML)."""
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


_TMP_MARK = ".tmp-"  # hidden siblings `.NAME.tmp-*` are save() temporaries


def check_destination(dest: "str | os.PathLike") -> None:
    """Refuse, before any work, a save destination we must not or cannot write.

    ``dest`` may be missing, an empty directory or one of our model directories (it has
    a meta.json); anything else (a file, a foreign directory) is refused so that a typo
    in ``-o`` never deletes someone's data.  The nearest existing parent must be a
    writable directory."""
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise ArtifactError(f"{dest}: exists and is not a compiled model directory; "
                            "refusing to replace it (choose another -o)")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / "meta.json").is_file():
        raise ArtifactError(f"{dest}: is a directory that is not a compiled model (no "
                            "meta.json); refusing to replace it (choose another -o)")
    parent = dest.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ArtifactError(f"{dest}: cannot be created ({parent} is not a directory)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"{dest}: cannot write to {parent} (permission denied); "
                            "choose another -o")


class _save_lock:
    """An exclusive flock on the hidden ``.NAME.lock`` beside the destination: concurrent
    saves to one folder take turns (the loser waits) instead of racing on the rename.
    The lock file stays (removing it would let a waiter lock an unlinked inode)."""

    def __init__(self, dest: Path):
        self.file = dest.parent / f".{dest.name}.lock"
        self.fd = -1

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def _remove_stale_temporaries(dest: Path) -> None:
    """Temporaries of saves killed mid-way (we hold the lock, so none is live)."""
    import re

    legacy = re.compile(re.escape(f".{dest.name}.") + r"[a-z0-9_]{8}$")  # format <= 2 mkdtemp
    for entry in dest.parent.iterdir():
        name = entry.name
        if not entry.is_dir() or entry.is_symlink():
            continue
        if (name.startswith(f".{dest.name}{_TMP_MARK}") or legacy.match(name)
                or name == f"{dest.name}.old"):
            shutil.rmtree(entry, ignore_errors=True)


def _sha256(file: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_META_KEYS = {"format_version": int, "target": str}


def _read_meta(meta_file: Path) -> dict:
    """meta.json parsed and its required keys type-checked (an ArtifactError otherwise)."""
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{meta_file}: corrupt metadata ({exc}); re-create the "
                            "directory with `compiler compile`") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_file}: corrupt metadata (not a JSON object)")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ArtifactError(f"{meta_file}: format version {version!r} is not supported "
                            f"(this compiler reads up to {FORMAT_VERSION})")
    for key, typ in _META_KEYS.items():
        if not isinstance(meta.get(key), typ):
            raise ArtifactError(f"{meta_file}: corrupt metadata ('{key}' is missing or not "
                                f"a {typ.__name__})")
    for key, typ in (("library", str), ("graph_file", str), ("weights", dict), ("files", dict),
                     ("params", dict),
                     ("pass_stats", dict), ("pipeline", str), ("original_stats", dict),
                     ("tuning", dict)):
        if meta.get(key) is not None and not isinstance(meta[key], typ):
            raise ArtifactError(f"{meta_file}: corrupt metadata ('{key}' is not a "
                                f"{typ.__name__})")
    for key in ("library", "graph_file"):
        name = meta.get(key)
        if name is not None and (Path(name).name != name or name in ("", ".", "..")):
            raise ArtifactError(f"{meta_file}: '{key}' {name!r} is not a file name in the "
                                "directory")
    if version >= 3 and not isinstance(meta.get("files"), dict):
        raise ArtifactError(f"{meta_file}: corrupt metadata (no 'files' checksums)")
    return meta


def _check_files(path: Path, meta: dict) -> None:
    """Every file listed in meta.json exists and has its recorded SHA-256 (weights.bin is
    checked by `_read_compressed`, after its header, so a future container version is
    reported as such rather than as damage)."""
    weights_file = (meta.get("weights") or {}).get("file", WEIGHTS_FILE) if meta.get("weights") else None
    for name, digest in (meta.get("files") or {}).items():
        if name == weights_file:
            continue
        if Path(name).name != name or name in ("", ".", "..", "meta.json"):
            raise ArtifactError(f"{path / 'meta.json'}: corrupt metadata (bad file "
                                f"name {name!r})")
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{path}: {name} is missing (re-create the directory "
                                "with `compiler compile`)")
        if _sha256(file) != digest:
            raise ArtifactError(f"{file}: checksum does not match meta.json (the file was "
                                "replaced or corrupted); re-create the directory with "
                                "`compiler compile`")


def _bind_weights(target: Any, built: Any, graph: Graph, meta: dict, path: Path) -> Any:
    """The loaded library with its weights, derived from ``graph`` (`TvmTarget.bind_weights`)."""
    bind = getattr(target, "bind_weights", None)
    recipe = meta["params"]
    if bind is None or not isinstance(recipe.get("target"), dict) \
            or not isinstance(recipe.get("layout"), str):
        raise ArtifactError(f"{path / 'meta.json'}: corrupt metadata ('params' cannot be "
                            f"used by target '{target.name}'); re-create the directory "
                            "with `compiler compile`")
    try:
        return bind(built, graph, recipe)
    except Exception as exc:  # WeightsMismatchError, or TVM refusing the recorded recipe
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: the library's weights cannot be restored ({msg}); "
                            "re-create the directory with `compiler compile`") from None


def _spec(value) -> dict:
    return {"name": value.name, "shape": list(value.shape), "dtype": str(value.dtype)}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def _write_standard_onnx(graph: Graph, file: Path) -> None:
    """``file``: the QDQ form of an integer graph, for onnxruntime and Netron.  A graph
    with an integer op that has no QDQ form gets none (a warning says which op);
    ``load`` never needs it."""
    import logging

    from .qdq_export import export_qdq

    try:
        export_qdq(graph, file)
    except Exception as exc:  # QDQExportError (an op without QDQ form) or an exporter bug:
        # the artifact is complete without it, so the save goes on and says why
        logging.getLogger("compiler.artifact").warning(
            "no standard model.onnx in the saved directory: %s: %s (the exact integer graph "
            "is in %s)", type(exc).__name__, exc, INTEGER_GRAPH_FILE)


def _write_compressed(graph: Graph, directory: Path, graph_file: str = "model.onnx") -> dict:
    """``graph_file`` without tensor data + weights.bin; returns the meta.json entry."""
    import hashlib

    import onnx

    from .compression import compress_graph
    from .onnx_io import export_model

    per_tensor: dict = {}
    blob = compress_graph(graph, per_tensor)
    proto = export_model(graph, None)
    for init in proto.graph.initializer:
        if init.name not in per_tensor:
            continue
        stub = onnx.TensorProto(name=init.name, data_type=init.data_type, dims=init.dims)
        stub.data_location = onnx.TensorProto.EXTERNAL
        entry = stub.external_data.add()
        entry.key, entry.value = "location", WEIGHTS_FILE
        init.CopyFrom(stub)
    (directory / graph_file).write_bytes(proto.SerializeToString())
    (directory / WEIGHTS_FILE).write_bytes(blob)
    return {"file": WEIGHTS_FILE, "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "tensors": {k: v for k, v in per_tensor.items()}}


def _read_compressed(path: Path, weights: dict, graph_file: str = "model.onnx") -> Graph:
    """The graph of a compressed directory, its constants decoded from weights.bin."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    from .compression import CompressionError, decode_container, load_weights_into
    from .onnx_io import import_model

    file = path / str(weights.get("file", WEIGHTS_FILE))
    if not file.exists():
        raise ArtifactError(f"{file}: compressed weights file is missing")
    blob = file.read_bytes()
    try:
        tensors = decode_container(blob, str(file))
    except CompressionError as exc:
        raise ArtifactError(str(exc)) from None
    if weights.get("sha256") and hashlib.sha256(blob).hexdigest() != weights["sha256"]:
        raise ArtifactError(f"{file}: checksum does not match meta.json (the file was "
                            "replaced or corrupted)")
    model_file = path / graph_file
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as exc:
        raise ArtifactError(f"{model_file}: corrupt model structure ({exc})") from None
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            if init.name not in tensors:
                raise ArtifactError(f"{file}: tensor '{init.name}' of {graph_file} is missing")
            init.CopyFrom(numpy_helper.from_array(tensors[init.name], init.name))
    graph = import_model(proto, fold=False)
    try:  # the constants are the decoded arrays themselves (no round trip through protobuf)
        load_weights_into(graph, tensors, str(file))
    except CompressionError as exc:
        raise ArtifactError(str(exc)) from None
    return graph

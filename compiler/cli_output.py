"""The command-line verbs that write a file for other tools: ``export-onnx`` and the HTML
page of ``report --html``.  `compiler.cli` holds their argparse lines only.

``compiler export-onnx DIR|MODEL.onnx -o OUT.onnx`` writes standard ONNX that
onnxruntime and Netron open (QDQ for a quantized graph); ``--integer`` writes our exact
integer graph (private ``q`` domain) instead.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

__all__ = ["cmd_export_onnx", "write_report_files", "load_or_compile"]


def load_or_compile(args: argparse.Namespace, build: bool = False):
    """A `CompiledModel` from a saved directory, or from an ONNX file and ``--passes``
    (not built unless ``build``)."""
    from .api import compile
    from .artifact import CompiledModel
    from .cli import _parse_shapes, _passes_arg, _target_arg

    path = Path(args.model)
    if path.is_dir():
        return CompiledModel.load(path)
    return compile(path, target=_target_arg(args), passes=_passes_arg(args.passes),
                   input_shapes=_parse_shapes(args.input_shape), build=build)


def _write_atomic(dest: Path, write) -> Path:
    """``write(tmp)`` then rename onto ``dest``: a failed write leaves ``dest`` as it
    was.  ``dest`` must not be a directory or the input model."""
    dest = Path(dest)
    if dest.is_dir():
        from .cli import CLIError

        raise CLIError(f"-o {dest}: is a directory (give a file name)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary only
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from .cli import CLIError

    out = Path(args.output)
    if _same_file(out, Path(args.model)):
        raise CLIError(f"-o {out}: is the input model; refusing to overwrite it")
    cm = load_or_compile(args)
    dest = _write_atomic(out, lambda tmp: cm.export_onnx(tmp, integer=args.integer))
    from .qdq_export import is_integer_graph

    form = ("integer graph (q domain: our tools only)" if args.integer
            else "QDQ (standard ONNX)" if is_integer_graph(cm.graph) else "standard ONNX")
    print(f"wrote {dest} ({form})")
    return 0


def write_report_files(cm, args: argparse.Namespace) -> list[Path]:
    """``--html FILE``: the self-contained page (`compiler.report_html`); the written
    files."""
    written = []
    if getattr(args, "html", None):
        from .report_html import render_html

        profile = None
        if getattr(args, "profile", False):
            profile = cm.profile(repeat=5)
        page = render_html(cm, profile=profile, title=str(args.model))
        written.append(_write_atomic(Path(args.html),
                                     lambda tmp: tmp.write_text(page, encoding="utf-8")))
    return written

"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

The bytes go to a unique temporary file in the destination's directory (same file system,
so the rename is atomic), are flushed to disk, get ordinary permissions (``mode`` masked by
the umask; ``mkstemp`` would leave 0600) and are renamed over the destination.  On any
failure the temporary file is removed and the destination is untouched.  Concurrent
writers of one path do not collide: each has its own temporary name, the last rename wins.

`atomic_path` is the same for code that insists on writing a path itself (``onnx.save``,
``torch.save``); the other helpers cover bytes, text and JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "atomic_write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike", mode: int = 0o666) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: "str | os.PathLike", data: bytes, mode: int = 0o666) -> int:
    """Write ``data`` to ``path`` atomically; returns the number of bytes written."""
    with atomic_path(path, mode) as tmp:
        tmp.write_bytes(data)
    return len(data)


def atomic_write_text(path: "str | os.PathLike", text: str, mode: int = 0o666,
                      encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding), mode)


def atomic_write_json(path: "str | os.PathLike", obj: Any, indent: int | None = 1,
                      mode: int = 0o666) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent), mode)

"""Test helpers: the embedded board for a test session, and private board folders."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from . import BoardError, board_dir, installed, lease


@contextlib.contextmanager
def board_session(timeout: float = 180.0) -> Iterator:
    """Yield the `RemoteSpec` of the emulated board under a lease of this process: it is
    started if not running and stopped afterwards unless something else holds it (another
    command, or ``compiler board start``)."""
    if not installed():
        raise BoardError("emulated board not installed: run `bash scripts/setup.sh`")
    with lease(timeout) as spec:
        yield spec


def private_board_dir(path: Path) -> Path:
    """A board folder of its own at ``path`` (its ``run/`` state, tracker and servers are
    separate) sharing the installed aarch64 python and TVM wheels (``py``/``site``
    symlinked from `board_dir`): tests that start and stop boards set
    ``COMPILER_BOARD_DIR`` to it and never touch the board other users share."""
    source = board_dir()
    if not installed(source):
        raise BoardError(f"emulated board not installed in {source}: run "
                         "`bash scripts/setup.sh`")
    path.mkdir(parents=True, exist_ok=True)
    for name in ("py", "site"):
        link = path / name
        if not link.exists():
            os.symlink((source / name).resolve(), link)
    return path

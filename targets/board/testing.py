"""Test helper: the embedded board for a test session (started if needed, then stopped)."""
from __future__ import annotations

import contextlib
from typing import Iterator

from . import BoardError, installed, start, status, stop


@contextlib.contextmanager
def board_session(timeout: float = 180.0) -> Iterator:
    """Yield the `RemoteSpec` of the emulated board; start it if it is not running and
    stop it afterwards (a board that was already running is left running)."""
    from . import remote_spec

    if not installed():
        raise BoardError("emulated board not installed: run `bash scripts/setup.sh`")
    current = status()
    started = not (current.running and current.registered)
    if started:
        start(timeout=timeout)
    try:
        yield remote_spec()
    finally:
        if started:
            stop()

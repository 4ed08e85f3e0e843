"""What the compiler prints besides its results: log levels, native noise, progress bars.

Three jobs, one policy ("quiet by default"):

* `setup_logging` gives the ``compiler`` logger one stderr handler at the level the command
  line asks for (``-q`` errors only, default warnings, ``-v`` info, ``-vv`` debug).
* `filtered_native_stderr` stops TVM's C++ logging from flooding the terminal.  TVM 0.27
  writes ``executable.cc:340: Warning: Scope Loaded:`` (and ``Scope Saving:``) once per
  constant when an executable is loaded or saved, straight to file descriptor 2 from C++;
  no environment variable filters LOG(WARNING) (``TVM_LOG_DEBUG`` only enables VLOG), so
  the descriptor itself is redirected into a temporary file around the call and every
  line is handed to the ``compiler.native`` logger afterwards: known noise at DEBUG (seen
  with ``-vv``), anything else at WARNING (so a real native warning still shows).
* `progress` is tqdm for long steps (tuning, search probes, calibration, fine-tuning),
  shown only on a terminal and unless `set_progress(False)` (``--no-progress``) or
  ``COMPILER_NO_PROGRESS=1``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = ["setup_logging", "filtered_native_stderr", "progress", "set_progress",
           "progress_enabled", "NATIVE_NOISE"]

#: Lines of native (C++) logging that carry no information for a user: TVM 0.27's VM
#: prints one per constant scope on every executable load and save.
NATIVE_NOISE: tuple[re.Pattern, ...] = (
    re.compile(r"executable\.cc:\d+: Warning: Scope (Loaded|Saving):"),
)

_LEVELS = {-2: logging.CRITICAL, -1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO,
           2: logging.DEBUG}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test's capture,
    a redirected stream), never to a stream object that may have been closed since."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbosity: int = 0) -> "Callable[[], None]":
    """Configure the ``compiler`` logger for a command: ``verbosity`` is the number of
    ``-v`` minus the number of ``-q``.  Returns a function that restores the previous
    configuration (the CLI calls it on exit, so an in-process ``main()`` -- tests, a
    notebook -- leaves logging as it found it)."""
    logger = logging.getLogger("compiler")
    before = (logger.level, logger.propagate)
    level = _LEVELS[max(-2, min(2, int(verbosity)))]
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # a library's root handler must not print our lines twice

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return restore


_redirect_lock = threading.RLock()
_redirect_depth = 0


@contextlib.contextmanager
def filtered_native_stderr(noise: Sequence[re.Pattern] = NATIVE_NOISE,
                           logger: logging.Logger | None = None) -> Iterator[None]:
    """Run the block with file descriptor 2 captured; then log what native code wrote
    (noise at DEBUG, the rest at WARNING).  Nested uses capture once.  Python's own
    ``sys.stderr`` is flushed first so nothing written before the block is lost."""
    global _redirect_depth
    logger = logger or logging.getLogger("compiler.native")
    with _redirect_lock:
        if _redirect_depth:
            _redirect_depth += 1
            try:
                yield
            finally:
                _redirect_depth -= 1
            return
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        capture = tempfile.TemporaryFile(mode="w+b")
        _redirect_depth = 1
        try:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
        finally:
            _redirect_depth = 0
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            capture.close()
            _forward(text, noise, logger)


def _forward(text: str, noise: Sequence[re.Pattern], logger: logging.Logger) -> None:
    dropped = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        if any(p.search(line) for p in noise):
            dropped += 1
            continue
        logger.warning("%s", line)
    if dropped:
        logger.debug("%d lines of TVM native logging (Scope Loaded/Saving) suppressed", dropped)


_progress_override: bool | None = None


def set_progress(enabled: bool | None) -> None:
    """Force progress bars on/off for this process (``None``: decide per terminal)."""
    global _progress_override
    _progress_override = enabled


def progress_enabled(stream: Any = None) -> bool:
    """Bars only on an interactive stderr, and never with ``--no-progress`` or
    ``COMPILER_NO_PROGRESS=1``."""
    if _progress_override is not None:
        return _progress_override
    if os.environ.get("COMPILER_NO_PROGRESS", "").strip() not in ("", "0"):
        return False
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it", leave: bool = False, enabled: bool | None = None) -> Any:
    """A tqdm bar over ``iterable`` (or a manual one when ``iterable`` is None: call
    ``update``/``close``), disabled off-terminal (see `progress_enabled`)."""
    from tqdm import tqdm

    show = progress_enabled() if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not show,
                dynamic_ncols=True)

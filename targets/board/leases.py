"""Leases on the embedded board: who is using it, so nobody stops it under another.

A lease is a small JSON file in ``<board dir>/run/leases/``.  A *process* lease names a
pid and that process's start time (``/proc/PID/stat`` field 22, so a recycled pid does
not keep a dead holder alive); it is live while that process runs.  The *explicit* lease
(``compiler board start``) names no process and lives until ``compiler board stop``.
The board started on demand stops when its last live lease is released.  The caller
holds the board's lock around every function here (they read and write the folder).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

__all__ = ["EXPLICIT", "acquire", "release", "live", "process_start_time"]

EXPLICIT = "explicit"


def _dir(run_dir: Path) -> Path:
    d = run_dir / "leases"
    d.mkdir(parents=True, exist_ok=True)
    return d


def process_start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started, or None if it does not exist
    (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of the whole line: starttime


def acquire(run_dir: Path, explicit: bool = False, pid: int | None = None) -> Path:
    """Write a lease; returns its path (the explicit lease is one file, idempotent)."""
    d = _dir(run_dir)
    if explicit:
        path = d / f"{EXPLICIT}.json"
        record = {"kind": EXPLICIT, "pid": None}
    else:
        pid = pid or os.getpid()
        path = d / f"pid-{pid}.json"
        record = {"kind": "process", "pid": pid, "start": process_start_time(pid)}
    record.update(created=time.time(), argv=" ".join(sys.argv)[:200])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return path


def release(path: Path) -> None:
    path.unlink(missing_ok=True)


def _is_live(record: dict) -> bool:
    if record.get("kind") == EXPLICIT:
        return True
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    started = process_start_time(pid)
    return started is not None and (record.get("start") is None or started == record["start"])


def live(run_dir: Path) -> list[dict]:
    """The live leases (dead holders' files are removed on the way: a holder killed
    with SIGKILL could not release its own)."""
    out = []
    for path in sorted(_dir(run_dir).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            record = {}
        if _is_live(record):
            out.append(record)
        else:
            path.unlink(missing_ok=True)
    return out

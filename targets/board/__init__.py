"""The embedded default board: a local TVM RPC tracker and an *emulated* Cortex-A72.

When no real board is named (``--tracker``/``--key`` or ``COMPILER_TRACKER``/
``COMPILER_RPC_KEY``), cortex-a72 code runs on a board the project starts itself:

* a TVM RPC tracker on 127.0.0.1 (host python), and
* a TVM RPC server under ``qemu-aarch64-static -cpu cortex-a72`` running an aarch64
  python 3.11 with the aarch64 TVM *runtime* wheels, registered under key ``cortex-a72``.

Both are installed by ``targets/board/install.sh`` (called by ``scripts/setup.sh``) into
``$COMPILER_BOARD_DIR`` (default ``~/.cache/embedded-cnn-compiler/board``), listen on
127.0.0.1 only, run detached (so ``compiler board start`` outlives the command) and are
recorded in ``<dir>/run/state.json`` for ``status``/``stop``.  Results match the host
build; timings are EMULATED (qemu is 28-117x slower than native) and never A72 latency.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from compiler.fileio import atomic_write_json, atomic_write_text

from ..base import TargetUnavailableError

__all__ = ["BoardError", "BoardStatus", "board_dir", "installed", "install", "start", "stop",
           "status", "ensure_running", "remote_spec", "BOARD_KEY"]

BOARD_KEY = "cortex-a72"
HOST = "127.0.0.1"
_HERE = Path(__file__).resolve().parent
QEMU = "qemu-aarch64-static"


class BoardError(TargetUnavailableError):
    """The emulated board is not installed, or failed to start."""


def board_dir() -> Path:
    return Path(os.environ.get("COMPILER_BOARD_DIR")
                or Path.home() / ".cache" / "embedded-cnn-compiler" / "board")


def _python(d: Path) -> Path:
    return d / "py" / "usr" / "bin" / "python3.11"


def installed(d: Path | None = None) -> bool:
    d = d or board_dir()
    return (_python(d).exists() and (d / "site" / "tvm" / "__init__.py").exists()
            and _which(QEMU) is not None)


def install() -> None:
    """Run ``install.sh`` (idempotent; needs root for apt the first time)."""
    env = dict(os.environ, COMPILER_BOARD_DIR=str(board_dir()))
    subprocess.run(["bash", str(_HERE / "install.sh")], check=True, env=env)


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


@dataclass
class BoardStatus:
    running: bool
    tracker: str | None = None
    key: str = BOARD_KEY
    registered: int = 0
    free: int = 0
    pids: dict | None = None
    detail: str = ""

    def __str__(self) -> str:
        if not self.running:
            return f"board: stopped{' (' + self.detail + ')' if self.detail else ''}"
        return (f"board: running (EMULATED Cortex-A72: qemu-aarch64 -cpu cortex-a72), tracker "
                f"{self.tracker}, key '{self.key}', servers registered {self.registered}, "
                f"free {self.free}, pids {self.pids}")


# -- state ------------------------------------------------------------------------

def _run_dir() -> Path:
    d = board_dir() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with open(_run_dir() / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state() -> dict | None:
    try:
        return json.loads((_run_dir() / "state.json").read_text())
    except (OSError, ValueError):
        return None


def _write_state(state: dict | None) -> None:
    path = _run_dir() / "state.json"
    if state is None:
        path.unlink(missing_ok=True)
        return
    atomic_write_json(path, state, indent=2)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def remote_spec(state: dict | None = None, **overrides: Any):
    """The `RemoteSpec` of the running board (emulated=True)."""
    from ..tvm.rpc import RemoteSpec

    state = state or _read_state()
    if not state:
        raise BoardError("the emulated board is not running (compiler board start)")
    # Emulation is slow: allow long sessions; the board has one slot.
    opts = dict(emulated=True, request_timeout=120.0, session_timeout=900.0)
    opts.update(overrides)
    return RemoteSpec(HOST, int(state["tracker_port"]), state.get("key", BOARD_KEY), **opts)


def status(timeout: float = 5.0) -> BoardStatus:
    state = _read_state()
    if not state:
        return BoardStatus(False)
    pids = {"tracker": state.get("tracker_pid"), "servers": _server_pids(state)}
    if not _alive(pids["tracker"]) or not all(_alive(p) for p in pids["servers"]):
        return BoardStatus(False, detail="stale state: a board process has exited", pids=pids)
    from ..tvm.rpc import RpcError, registered_keys, tracker_summary

    spec = remote_spec(state, connect_timeout=timeout)
    try:
        summary = tracker_summary(spec)
    except RpcError as exc:
        return BoardStatus(False, tracker=spec.tracker, detail=str(exc), pids=pids)
    free = summary.get("queue_info", {}).get(spec.key, {}).get("free", 0)
    return BoardStatus(True, spec.tracker, spec.key, registered_keys(summary).get(spec.key, 0),
                       free, pids)


def _spawn(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(_run_dir()),
                                start_new_session=True)  # own process group: stop kills all


def _kill_group(pid: int | None, timeout: float = 5.0) -> None:
    if not pid:
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != pid:  # only groups we created (start_new_session makes pid the leader)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not _alive(pid):
                return
            time.sleep(0.1)


def _server_pids(state: dict) -> list[int]:
    pids = state.get("server_pids")
    if pids is None:  # state written before farms existed
        pids = [state["server_pid"]] if state.get("server_pid") else []
    return [int(p) for p in pids]


def spawn_server(tracker_port: int, key: str = BOARD_KEY, log: Path | None = None,
                 d: Path | None = None) -> subprocess.Popen:
    """Start one emulated Cortex-A72 RPC server that registers ``key`` at the local
    tracker on ``tracker_port`` (detached, its own process group).  `start` uses it for
    each board of the farm; tests use it for a board they may kill."""
    d = d or board_dir()
    run = _run_dir()
    launcher = run / "aarch64-python"
    script = f'#!/bin/sh\nexec {QEMU} -L / -cpu cortex-a72 "{_python(d)}" "$@"\n'
    try:
        current = launcher.read_text()
    except OSError:
        current = None
    if current != script:
        # Replaced atomically, never rewritten in place: a board started a moment ago may
        # still be reading it (a truncated launcher is an empty script: that board exited
        # silently and never registered -- seen with two boards spawned back to back).
        atomic_write_text(launcher, script, mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(d / "site"), TVM_USE_RUNTIME_LIB="1",
               PYTHONDONTWRITEBYTECODE="1", COMPILER_BOARD_LAUNCHER=str(launcher))
    extra = d / "site" / "tvm" / "lib" / "libtvm_runtime_extra.so"
    port = _free_port()
    return _spawn([str(launcher), str(_HERE / "server_main.py"), "--host", HOST,
                   "--port", str(port), "--port-end", str(port + 1),
                   f"--tracker={HOST}:{tracker_port}", f"--key={key}",
                   f"--load-library={extra}"], log or run / f"server-{key}-{port}.log", env=env)


def start(timeout: float = 120.0, verbose: bool = False, boards: int = 1) -> BoardStatus:
    """Start the local tracker and ``boards`` emulated boards under one key (a farm:
    tuning measures on all of them in parallel); a no-op when that many are already
    running.  Returns once every board has registered with the tracker."""
    if not isinstance(boards, int) or not 1 <= boards <= 16:
        raise BoardError(f"boards={boards!r}: choose 1..16 emulated boards")
    with _locked():
        current = status()
        if current.running and current.registered >= boards:
            return current
        _stop_unlocked()
        d = board_dir()
        if not installed(d):
            raise BoardError(f"the emulated Cortex-A72 board is not installed in {d}: run "
                             "`bash scripts/setup.sh` (or `bash targets/board/install.sh`)")
        t0 = time.monotonic()
        run = _run_dir()
        tracker_port = _free_port()
        tracker = _spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", HOST,
                          "--port", str(tracker_port), "--port-end", str(tracker_port + 1)],
                         run / "tracker.log")
        # The server gives up on a tracker that is not listening yet for 5 s: wait for it.
        from ..tvm.rpc import RpcError, RemoteSpec, tracker_summary, wait_for_key

        probe = RemoteSpec(HOST, tracker_port, BOARD_KEY, connect_timeout=1.0)
        while True:
            try:
                tracker_summary(probe)
                break
            except RpcError:
                if not _alive(tracker.pid) or time.monotonic() - t0 > 30:
                    _stop_unlocked_pids(tracker.pid)
                    raise BoardError("the local RPC tracker did not start; see "
                                     f"{run / 'tracker.log'}") from None
                time.sleep(0.2)
        servers = [spawn_server(tracker_port, BOARD_KEY, run / f"server{i}.log", d)
                   for i in range(boards)]
        state = {"tracker_pid": tracker.pid, "server_pids": [p.pid for p in servers],
                 "tracker_port": tracker_port, "key": BOARD_KEY, "boards": boards,
                 "started": time.time()}
        _write_state(state)

        spec = remote_spec(state, connect_timeout=2.0)
        deadline = time.monotonic() + timeout
        while True:
            if not all(_alive(p.pid) for p in servers) or not _alive(tracker.pid):
                _stop_unlocked()
                raise BoardError("an emulated board exited while starting; see "
                                 f"{run}/server*.log and {run / 'tracker.log'}")
            try:
                wait_for_key(spec, timeout=min(2.0, max(0.0, deadline - time.monotonic())),
                             count=boards)
                break
            except RpcError as exc:
                if time.monotonic() >= deadline:
                    _stop_unlocked()
                    raise BoardError(f"{boards} emulated board(s) did not register within "
                                     f"{timeout:g} s ({exc}); see {run}/server*.log") from None
        state["start_seconds"] = round(time.monotonic() - t0, 2)
        _write_state(state)
        if verbose:
            print(f"board started in {state['start_seconds']} s", file=sys.stderr)
        return status()


def _stop_unlocked() -> None:
    state = _read_state()
    if state:
        for pid in _server_pids(state):
            _kill_group(pid)
        _kill_group(state.get("tracker_pid"))
    _write_state(None)


def _stop_unlocked_pids(*pids: int) -> None:
    for pid in pids:
        _kill_group(pid)


def stop() -> bool:
    """Stop the board and the tracker; True if something was running."""
    with _locked():
        was = _read_state() is not None
        _stop_unlocked()
        return was


_AUTOSTARTED = False


def ensure_running(timeout: float = 120.0):
    """The `RemoteSpec` of the embedded board, starting it if needed.

    A board started here (on demand) is stopped when this process exits; one started
    with `start` / ``compiler board start`` keeps running until `stop`.
    ``COMPILER_BOARD=off`` disables the embedded board (a clear error instead)."""
    global _AUTOSTARTED
    if os.environ.get("COMPILER_BOARD", "").lower() in ("off", "0", "no", "false"):
        raise BoardError("target 'cortex-a72' code needs a cortex-a72 device reached through "
                         "a TVM RPC tracker: none named (--tracker HOST:PORT / "
                         "COMPILER_TRACKER) and the emulated board is disabled (COMPILER_BOARD)")
    st = status()
    if not (st.running and st.registered):
        if not installed():
            raise BoardError("target 'cortex-a72' code needs a cortex-a72 device reached "
                             "through a TVM RPC tracker: none named (--tracker HOST:PORT / "
                             "COMPILER_TRACKER) and the emulated board is not installed in "
                             f"{board_dir()} (bash scripts/setup.sh)")
        print("starting the emulated Cortex-A72 board (stopped at exit; `compiler board "
              "start` keeps one running)", file=sys.stderr)
        start(timeout=timeout)
        if not _AUTOSTARTED:
            import atexit

            atexit.register(stop)
            _AUTOSTARTED = True
    return remote_spec()

"""The embedded default board: a local TVM RPC tracker and an *emulated* Cortex-A72.

When no real board is named (``--tracker``/``--key`` or ``COMPILER_TRACKER``/
``COMPILER_RPC_KEY``), cortex-a72 code runs on a board the project starts itself:

* a TVM RPC tracker on 127.0.0.1 (host python), and
* a TVM RPC server under ``qemu-aarch64-static -cpu cortex-a72`` running an aarch64
  python 3.11 with the aarch64 TVM *runtime* wheels, registered under key ``cortex-a72``.

Both are installed by ``targets/board/install.sh`` (called by ``scripts/setup.sh``) into
``$COMPILER_BOARD_DIR`` (default ``~/.cache/embedded-cnn-compiler/board``), listen on
127.0.0.1 only, run detached and are recorded in ``<dir>/run/state.json``.  Results match
the host build; timings are EMULATED (qemu is 28-117x slower than native), never A72
latency.

Who stops it: every process using the board holds a *lease* (`leases`: a file naming its
pid); ``compiler board start`` holds the explicit lease, which outlives the command.  A
board is stopped when its last live lease is released (a process's exit, SIGTERM/SIGHUP
included), never under another command still using it.  Extra servers started with the
board (e.g. a simulator beside the A72s) are `ServerSpec`s given to `register_server`:
they are started, watched and stopped with it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from compiler.fileio import atomic_write_json, atomic_write_text

from ..base import TargetUnavailableError
from . import leases

__all__ = ["BoardError", "BoardStatus", "ServerSpec", "board_dir", "installed", "install",
           "start", "stop", "status", "ensure_running", "release", "lease", "remote_spec",
           "register_server", "busy_wait_seconds", "BOARD_KEY"]

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
    leases: list | None = None  # live holders (see `leases`)

    def __str__(self) -> str:
        if not self.running:
            return f"board: stopped{' (' + self.detail + ')' if self.detail else ''}"
        return (f"board: running (EMULATED Cortex-A72: qemu-aarch64 -cpu cortex-a72), tracker "
                f"{self.tracker}, key '{self.key}', servers registered {self.registered}, "
                f"free {self.free}, pids {self.pids}; {self._holders()}")

    def _holders(self) -> str:
        held = self.leases or []
        pids = [str(r["pid"]) for r in held if r.get("kind") != leases.EXPLICIT]
        explicit = any(r.get("kind") == leases.EXPLICIT for r in held)
        parts = (["kept by `compiler board start`"] if explicit else []) + (
            [f"used by pid(s) {', '.join(pids)}"] if pids else [])
        return ", ".join(parts) or "no holders"


# -- state ------------------------------------------------------------------------

def _run_dir() -> Path:
    d = board_dir() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


_THREAD_LOCK = threading.RLock()
_LOCK_DEPTH = [0]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """The board's lock (between processes: flock on ``run/lock``).  Re-entrant within
    this process, so a signal handler that releases our lease while the main thread is
    inside a locked section (e.g. starting the board) does not deadlock on itself."""
    with _THREAD_LOCK:
        if _LOCK_DEPTH[0]:
            _LOCK_DEPTH[0] += 1
            try:
                yield
            finally:
                _LOCK_DEPTH[0] -= 1
            return
        with open(_run_dir() / "lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            _LOCK_DEPTH[0] = 1
            try:
                yield
            finally:
                _LOCK_DEPTH[0] = 0
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


def busy_wait_seconds() -> float:
    """How long a command waits for the busy board (all its servers in sessions) before
    a clear error: ``COMPILER_BOARD_WAIT`` seconds, default 60.  One wait, not retried
    (waiting again would not free a board that stayed busy that long)."""
    text = os.environ.get("COMPILER_BOARD_WAIT", "").strip()
    if not text:
        return 60.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise BoardError(f"COMPILER_BOARD_WAIT={text!r}: give a positive number of seconds")
    return value


def remote_spec(state: dict | None = None, **overrides: Any):
    """The `RemoteSpec` of the running board (emulated=True)."""
    from ..tvm.rpc import RemoteSpec

    state = state or _read_state()
    if not state:
        raise BoardError("the emulated board is not running (compiler board start)")
    # Emulation is slow: allow long sessions; the board has one slot.
    opts = dict(emulated=True, request_timeout=busy_wait_seconds(), session_timeout=900.0)
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
    holders = leases.live(_run_dir())  # (lease files are replaced atomically: no lock)
    return BoardStatus(True, spec.tracker, spec.key, registered_keys(summary).get(spec.key, 0),
                       free, pids, leases=holders)


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
    return [int(p) for p in pids] + [int(x["pid"]) for x in state.get("extra_servers", [])]


@dataclass(frozen=True)
class ServerSpec:
    """An extra RPC server started (and stopped) with the board, e.g. a simulator.

    ``spawn(tracker_port, log)`` starts it detached in its own process group (use
    `_spawn`), registering ``count`` servers under ``key`` at the local tracker; `start`
    waits for them like for the A72 boards, `status` watches the pid and `stop` kills
    its group."""

    name: str
    key: str
    spawn: Callable[[int, Path], subprocess.Popen]
    count: int = 1


_EXTRA_SERVERS: list[ServerSpec] = []


def register_server(spec: ServerSpec) -> None:
    """Start ``spec`` with every board started from now on (by name: registering the
    same name again replaces it)."""
    _EXTRA_SERVERS[:] = [s for s in _EXTRA_SERVERS if s.name != spec.name] + [spec]


def _spawn_fpga_sim(tracker_port: int, log: Path) -> subprocess.Popen:
    from ..fpga_sim.server import SIM_KEY, spawn_server as spawn_simulator

    return spawn_simulator(tracker_port, log.parent, key=SIM_KEY)


# The FPGA simulator (targets/fpga_sim) serves beside the emulated A72 at the same tracker.
register_server(ServerSpec("fpga-sim", "fpga-sim", _spawn_fpga_sim))


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
    """``compiler board start``: the board kept running by the explicit lease (it
    outlives this process, until `stop`), with ``boards`` emulated boards under one key
    (a farm: tuning measures on all of them in parallel).  Reuses a running board that
    has that many; returns once every server has registered with the tracker."""
    if not isinstance(boards, int) or not 1 <= boards <= 16:
        raise BoardError(f"boards={boards!r}: choose 1..16 emulated boards")
    with _locked():
        path = leases.acquire(_run_dir(), explicit=True)
        try:
            return _start_unlocked(timeout, verbose, boards)
        except BaseException:
            leases.release(path)
            raise


def _start_unlocked(timeout: float, verbose: bool, boards: int) -> BoardStatus:
    current = status()
    if not current.running and current.pids and current.detail and "stale" not in \
            current.detail:
        # Every process is alive but the tracker did not answer in 5 s: a loaded machine,
        # not a dead board.  Ask again, longer, before restarting it under its users.
        current = status(timeout=30.0)
    if current.running and current.registered >= boards:
        return current
    if current.running:  # too few boards: a restart would stop them under their users
        users = [str(r["pid"]) for r in leases.live(_run_dir())
                 if r.get("kind") != leases.EXPLICIT and r.get("pid") != os.getpid()]
        if users:
            raise BoardError(f"the emulated board runs {current.registered} board(s) and is in "
                             f"use by pid(s) {', '.join(users)}: {boards} boards need a "
                             "restart, which would stop it under them; retry when they have "
                             "exited (or `compiler board stop --force` first)")
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
    # Recorded at once: whatever stops the board from now on (a signal included) finds
    # every process started so far.
    state = {"tracker_pid": tracker.pid, "server_pids": [], "extra_servers": [],
             "tracker_port": tracker_port, "key": BOARD_KEY, "boards": boards,
             "leased": True, "started": time.time()}
    _write_state(state)
    # The server gives up on a tracker that is not listening yet for 5 s: wait for it.
    from ..tvm.rpc import RpcError, RemoteSpec, tracker_summary, wait_for_key

    probe = RemoteSpec(HOST, tracker_port, BOARD_KEY, connect_timeout=1.0)
    while True:
        try:
            tracker_summary(probe)
            break
        except RpcError:
            # the start's own timeout: importing TVM alone takes 30 s on a loaded machine
            if not _alive(tracker.pid) or time.monotonic() - t0 > timeout:
                _stop_unlocked()
                raise BoardError(f"the local RPC tracker did not start within {timeout:g} s; "
                                 f"see {run / 'tracker.log'}") from None
            time.sleep(0.2)
    for i in range(boards):
        state["server_pids"].append(
            spawn_server(tracker_port, BOARD_KEY, run / f"server{i}.log", d).pid)
        _write_state(state)
    for extra in list(_EXTRA_SERVERS):
        proc = extra.spawn(tracker_port, run / f"server-{extra.name}.log")
        state["extra_servers"].append({"name": extra.name, "key": extra.key,
                                       "count": extra.count, "pid": proc.pid})
        _write_state(state)

    waits = [(BOARD_KEY, boards)] + [(x["key"], x["count"]) for x in state["extra_servers"]]
    deadline = time.monotonic() + timeout
    for key, count in waits:
        import dataclasses

        spec = dataclasses.replace(remote_spec(state, connect_timeout=2.0), key=key)
        while True:
            if not all(_alive(p) for p in _server_pids(state)) or not _alive(tracker.pid):
                _stop_unlocked()
                raise BoardError("a board server exited while starting; see "
                                 f"{run}/server*.log and {run / 'tracker.log'}")
            try:
                wait_for_key(spec, timeout=min(2.0, max(0.0, deadline - time.monotonic())),
                             count=count)
                break
            except RpcError as exc:
                if time.monotonic() >= deadline:
                    _stop_unlocked()
                    raise BoardError(f"{count} server(s) under key '{key}' did not register "
                                     f"within {timeout:g} s ({exc}); see {run}/server*.log"
                                     ) from None
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


def stop(force: bool = False) -> str:
    """``compiler board stop``: drop the explicit lease and stop the board if no command
    is using it (``force``: stop it regardless).  Returns ``"stopped"``, ``"not
    running"`` or ``"in use by pid(s) ..."`` (then the board stops when the last of
    them exits)."""
    with _locked():
        run = _run_dir()
        leases.release(run / "leases" / f"{leases.EXPLICIT}.json")
        if _read_state() is None:
            return "not running"
        holders = [str(r["pid"]) for r in leases.live(run)]
        if holders and not force:
            return f"in use by pid(s) {', '.join(holders)}"
        _stop_unlocked()
        return "stopped"


# -- on-demand use: one process lease, released at exit or on a signal ----------------

_LEASE: list[Path] = []  # this process's lease, if it holds one
_HOOKED = [False]


def release() -> None:
    """Release this process's lease; stop the board if it was the last live one and the
    board is lease-managed (a board left by an older version is never stopped here)."""
    with _locked():
        if not _LEASE or _LEASE[0].name != f"pid-{os.getpid()}.json":
            return  # nothing held (or a forked child: its parent holds the lease)
        leases.release(_LEASE.pop())
        state = _read_state()
        if state and state.get("leased") and not leases.live(_run_dir()):
            _stop_unlocked()


def _on_signal(signum: int, _frame: Any) -> None:
    try:
        release()
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # die of the signal as the default handler would


def _install_exit_hooks() -> None:
    if _HOOKED[0]:
        return
    import atexit

    atexit.register(release)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
    # SIGINT raises KeyboardInterrupt, so the interpreter exits through atexit.
    _HOOKED[0] = True


def ensure_running(timeout: float = 120.0):
    """The `RemoteSpec` of the embedded board, starting it if needed.

    This process takes a lease (once): the board is not stopped while it runs, and a
    board nobody else holds is stopped when it exits (normally, on SIGTERM/SIGHUP or
    Ctrl-C), unless ``compiler board start`` keeps it.
    ``COMPILER_BOARD=off`` disables the embedded board (a clear error instead)."""
    if os.environ.get("COMPILER_BOARD", "").lower() in ("off", "0", "no", "false"):
        raise BoardError("target 'cortex-a72' code needs a cortex-a72 device reached through "
                         "a TVM RPC tracker: none named (--tracker HOST:PORT / "
                         "COMPILER_TRACKER) and the emulated board is disabled (COMPILER_BOARD)")
    _install_exit_hooks()
    with _locked():
        if not _LEASE or not _LEASE[0].exists():
            _LEASE[:] = [leases.acquire(_run_dir())]
        try:
            st = status()
            if not (st.running and st.registered):
                if not installed():
                    raise BoardError("target 'cortex-a72' code needs a cortex-a72 device "
                                     "reached through a TVM RPC tracker: none named "
                                     "(--tracker HOST:PORT / COMPILER_TRACKER) and the "
                                     "emulated board is not installed in "
                                     f"{board_dir()} (bash scripts/setup.sh)")
                print("starting the emulated Cortex-A72 board (stopped when the last command "
                      "using it exits; `compiler board start` keeps one running)",
                      file=sys.stderr)
                _start_unlocked(timeout, False, 1)
        except BaseException:
            release()
            raise
        return remote_spec()


@contextlib.contextmanager
def lease(timeout: float = 120.0) -> Iterator:
    """``with lease() as spec:`` the board for a block (tests, benchmarks): started if
    needed, and stopped afterwards if nothing else holds it."""
    spec = ensure_running(timeout)
    try:
        yield spec
    finally:
        release()

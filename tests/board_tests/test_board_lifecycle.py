"""The embedded board across processes (issue #22, item 4): leases, signals, busy waits.

Every test that starts a board does it in a private board folder (`private_board_dir`:
its own run/ state, tracker and qemu server; the installed aarch64 python and TVM
shared by symlink), so the board other users share is never started, used or stopped.
The busy-board test needs no emulation at all: a host tracker and a host RPC server.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from targets import board as board_mod  # noqa: E402
from targets import get_target  # noqa: E402
from targets.board import leases  # noqa: E402
from targets.tvm.rpc import BoardBusyError, RemoteSpec, RpcError, tracker_summary  # noqa: E402

WORKER = Path(__file__).with_name("board_worker.py")
TINYNET = ROOT / "examples" / "tinynet.onnx"


def _alive(pid: int) -> bool:
    return leases.process_start_time(pid) is not None


def _board_pids(state: dict) -> list[int]:
    return ([state["tracker_pid"]] + list(state["server_pids"])
            + [x["pid"] for x in state.get("extra_servers", [])])


class Board:
    """A private board folder and the commands (worker processes) that use it."""

    def __init__(self, tmp: Path):
        from targets.board.testing import private_board_dir

        if not board_mod.installed():
            pytest.skip("emulated board not installed (bash scripts/setup.sh)")
        self.dir = private_board_dir(tmp / "board")
        self.control = tmp / "control"
        self.control.mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("COMPILER_TRACKER", "COMPILER_RPC_KEY", "COMPILER_BOARD")}
        self.env.update(COMPILER_BOARD_DIR=str(self.dir), PYTHONPATH=str(ROOT))
        self.procs: list[subprocess.Popen] = []

    def state(self) -> dict | None:
        try:
            return json.loads((self.dir / "run" / "state.json").read_text())
        except (OSError, ValueError):
            return None

    def worker(self, name: str, artifact: Path | None = None,
               extra_key: str | None = None) -> subprocess.Popen:
        cmd = [sys.executable, str(WORKER), str(self.control), name]
        env = dict(self.env, **({"EXTRA_SERVER_KEY": extra_key} if extra_key else {}))
        proc = subprocess.Popen(cmd + ([str(artifact)] if artifact else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=open(self.control /
                                                                       f"{name}.err", "w"))
        self.procs.append(proc)
        return proc

    def wait_file(self, name: str, proc: subprocess.Popen, timeout: float = 300) -> Path:
        path = self.control / name
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert proc.poll() is None, (f"worker exited ({proc.returncode}): " +
                                         (self.control / f"{name.split('.')[0]}.err")
                                         .read_text()[-2000:])
            assert time.monotonic() < deadline, f"no {name} within {timeout} s"
            time.sleep(0.2)
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "compiler", *args], env=self.env,
                              capture_output=True, text=True, timeout=300, cwd=str(ROOT))

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        state = self.state()
        if state:  # whatever a failing test left behind: ours, in our private folder
            from targets.board import _kill_group

            for pid in _board_pids(state):
                _kill_group(pid)


@pytest.fixture
def private_board(tmp_path):
    b = Board(tmp_path)
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="module")
def tiny_a72(tmp_path_factory):
    """tinynet built for cortex-a72 (saved; the library is cross-linked) and its input,
    with the host build's outputs as the reference."""
    out = tmp_path_factory.mktemp("art")
    a72 = compiler.compile(TINYNET, target="cortex-a72").save(out / "tiny")
    host = compiler.compile(TINYNET, target="host")
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    return Path(a72), x, host.run({host.input_names[0]: x})


def _wait_dead(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running after {timeout} s: " + str(
            [p for p in pids if _alive(p)])
        time.sleep(0.2)


def _check_outputs(b: Board, name: str, reference) -> None:
    with np.load(b.control / f"{name}.out.npz") as got:
        outs = [got[k] for k in got.files]
    assert len(outs) == len(reference)
    for o, r in zip(outs, reference):
        np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_on_demand_board_outlives_its_starter_and_sigterm_stops_it(private_board, tiny_a72):
    """A starts the board on demand (with an extra server, as a simulator would be), B
    joins; A exits: B still runs the model on it.  Then SIGTERM to B, the last holder:
    no tracker, qemu or extra server is left behind."""
    from targets.tvm.rpc import registered_keys

    b = private_board
    artifact, x, reference = tiny_a72
    np.save(b.control / "input.npy", x)
    a = b.worker("A", extra_key="extra-sim")
    state = json.loads(b.wait_file("A.ready", a).read_text())
    assert state["leased"] and all(_alive(p) for p in _board_pids(state))
    # the fpga-sim simulator is registered with every board (targets/board), then ours
    assert [x["name"] for x in state["extra_servers"]] == ["fpga-sim", "extra-sim"]
    spec = RemoteSpec("127.0.0.1", state["tracker_port"], "cortex-a72")
    assert registered_keys(tracker_summary(spec)) == {"cortex-a72": 1, "fpga-sim": 1,
                                                      "extra-sim": 1}
    w = b.worker("B", artifact)
    assert json.loads(b.wait_file("B.ready", w).read_text())["tracker_pid"] == \
        state["tracker_pid"], "B started a second board instead of joining A's"

    (b.control / "A.quit").touch()
    assert a.wait(timeout=60) == 0
    assert all(_alive(p) for p in _board_pids(state)), "A's exit stopped the board B uses"
    (b.control / "B.go").touch()
    b.wait_file("B.out.npz", w, timeout=240)
    _check_outputs(b, "B", reference)

    w.send_signal(signal.SIGTERM)
    assert w.wait(timeout=60) == -signal.SIGTERM
    _wait_dead(_board_pids(state), timeout=30)
    assert b.state() is None and not list((b.dir / "run" / "leases").glob("*.json"))


@pytest.mark.slow
def test_board_start_is_an_explicit_lease_and_stop_waits_for_users(private_board, tiny_a72):
    """`compiler board start` keeps the board past the commands that use it; `compiler
    board stop` while one still runs leaves it to that command, whose exit stops it."""
    b = private_board
    artifact, x, reference = tiny_a72
    np.save(b.control / "input.npy", x)
    started = b.cli("board", "start")
    assert started.returncode == 0, started.stderr
    state = b.state()
    assert state and all(_alive(p) for p in _board_pids(state))

    a = b.worker("A")
    b.wait_file("A.ready", a)
    (b.control / "A.quit").touch()
    assert a.wait(timeout=60) == 0
    assert all(_alive(p) for p in _board_pids(state)), "a command stopped an explicit board"

    w = b.worker("B", artifact)
    b.wait_file("B.ready", w)
    stopped = b.cli("board", "stop")
    assert stopped.returncode == 0 and f"in use by pid(s) {w.pid}" in stopped.stdout, \
        stopped.stdout + stopped.stderr
    assert all(_alive(p) for p in _board_pids(state)), "`board stop` stopped a board in use"
    (b.control / "B.go").touch()
    b.wait_file("B.out.npz", w, timeout=240)
    _check_outputs(b, "B", reference)
    (b.control / "B.quit").touch()
    assert w.wait(timeout=60) == 0
    _wait_dead(_board_pids(state), timeout=30)
    assert "stopped" in b.cli("board", "status").stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plain_rpc_board(tmp_path):
    """A host tracker and one plain ``tvm.exec.rpc_server`` (host python, no emulation,
    no project code) under a key of its own: a one-slot board that starts in seconds."""
    from targets.board import _kill_group, _spawn
    from targets.tvm.rpc import wait_for_key

    port, key = _free_port(), f"plain-{os.getpid()}"
    procs = []
    try:
        procs.append(_spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host",
                             "127.0.0.1", "--port", str(port), "--port-end", str(port + 1)],
                            tmp_path / "tracker.log"))
        time.sleep(1.0)
        procs.append(_spawn([sys.executable, "-m", "tvm.exec.rpc_server", "--host",
                             "127.0.0.1", f"--tracker=127.0.0.1:{port}", f"--key={key}"],
                            tmp_path / "server.log"))
        spec = RemoteSpec("127.0.0.1", port, key)
        wait_for_key(spec, timeout=60)
        yield spec
    finally:
        for p in procs:
            _kill_group(p.pid)


def test_busy_board_error_within_the_wait(plain_rpc_board, monkeypatch):
    """One wait for a busy board, as long as COMPILER_BOARD_WAIT says, stated in the
    error; not retried."""
    from targets.tvm.rpc import _request

    spec = plain_rpc_board
    session = _request(spec)  # the one slot is now busy
    cm = compiler.compile(TINYNET, target=get_target("cortex-a72")
                          .with_remote(spec.tracker, spec.key))
    monkeypatch.setenv("COMPILER_BOARD_WAIT", "2")
    t0 = time.monotonic()
    with pytest.raises(BoardBusyError, match=r"no free board under key .* within 2 s.*"
                                             r"COMPILER_BOARD_WAIT"):
        cm.run({cm.input_names[0]: np.zeros((1, 1, 28, 28), np.float32)})
    elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed < 2.0 + 8.0, f"busy error after {elapsed:.1f} s"
    del session


def test_profile_on_a_plain_rpc_server_is_a_clear_error(plain_rpc_board):
    """A board whose server is plain tvm.exec.rpc_server has no profiler: say so (and how
    to get one) at once, without retrying."""
    from targets.tvm.rpc import NoRemoteProfilerError

    spec = plain_rpc_board
    cm = compiler.compile(TINYNET, target=get_target("cortex-a72")
                          .with_remote(spec.tracker, spec.key))
    t0 = time.monotonic()
    with pytest.raises(NoRemoteProfilerError, match="compiler.board.vm_profile.*no profiler"
                                                    ".*server_main.py"):
        cm.profile(repeat=1)
    assert time.monotonic() - t0 < 20


def test_busy_wait_setting(monkeypatch):
    monkeypatch.delenv("COMPILER_BOARD_WAIT", raising=False)
    assert board_mod.busy_wait_seconds() == 60.0  # what the README states
    monkeypatch.setenv("COMPILER_BOARD_WAIT", "soon")
    with pytest.raises(board_mod.BoardError, match="COMPILER_BOARD_WAIT='soon'"):
        board_mod.busy_wait_seconds()


def test_embedded_board_error_does_not_blame_a_tracker_option():
    """No --tracker was given for the embedded board: the error must not ask to fix one."""
    spec = RemoteSpec("127.0.0.1", _free_port(), "cortex-a72", emulated=True,
                      connect_timeout=2.0)
    with pytest.raises(RpcError) as info:
        tracker_summary(spec)
    text = str(info.value)
    assert "--tracker" not in text and "compiler board start" in text and "emulated" in text
    named = RemoteSpec("127.0.0.1", spec.port, "rpi4", connect_timeout=2.0)
    with pytest.raises(RpcError, match="fix --tracker"):
        tracker_summary(named)


def test_leases_ignore_dead_and_recycled_pids(tmp_path):
    run = tmp_path / "run"
    mine = leases.acquire(run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leases.acquire(run, pid=dead.pid)
    (run / "leases" / "pid-1.json").write_text(json.dumps(
        {"kind": "process", "pid": 1, "start": -5}))  # pid 1 with another start time
    assert [r["pid"] for r in leases.live(run)] == [os.getpid()]
    leases.acquire(run, explicit=True)
    assert sorted(r["kind"] for r in leases.live(run)) == ["explicit", "process"]
    leases.release(mine)
    assert [r["kind"] for r in leases.live(run)] == ["explicit"]


def test_start_with_more_boards_refuses_to_restart_a_board_in_use(tmp_path, monkeypatch):
    """`board start --boards 2` on a running one-board board that another command uses
    would restart (stop) it under that command: a clear error instead, nothing changed."""
    monkeypatch.setenv("COMPILER_BOARD_DIR", str(tmp_path))
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leases.acquire(board_mod._run_dir(), pid=user.pid)
        board_mod._write_state({"tracker_pid": user.pid, "server_pids": [],
                                "tracker_port": 1, "leased": True})
        monkeypatch.setattr(board_mod, "status", lambda timeout=5.0: board_mod.BoardStatus(
            True, "127.0.0.1:1", registered=1))
        with pytest.raises(board_mod.BoardError, match=f"in use by pid\\(s\\) {user.pid}"):
            board_mod.start(boards=2)
        assert _alive(user.pid) and board_mod._read_state()["tracker_pid"] == user.pid
        assert [r["pid"] for r in leases.live(board_mod._run_dir())] == [user.pid]
    finally:
        user.kill()
        user.wait()

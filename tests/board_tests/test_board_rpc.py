"""The emulated Cortex-A72 board through a local RPC tracker: results, timings, errors.

The board (qemu-aarch64 -cpu cortex-a72 + aarch64 TVM runtime) is started by the
``board`` fixture if it is not running, on 127.0.0.1 only.  Its timings are EMULATED.
"""
from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.cli import main as cli_main  # noqa: E402
from targets import TargetUnavailableError, get_target  # noqa: E402
from targets.tvm.rpc import RemoteSpec, RpcError, tracker_summary  # noqa: E402



def _root_helpers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tests_root_conftest",
                                                  ROOT / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _root_helpers()
assert_close, model_input, model_path = _h.assert_close, _h.model_input, _h.model_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the with-block ends


@pytest.mark.slow
def test_board_run_matches_host_and_timing_is_emulated(board, tmp_path):
    path = model_path("resnet_tiny")
    host = compiler.compile(path, target="host")
    name = host.input_names[0]
    x = {name: model_input("resnet_tiny")}
    a72 = compiler.compile(path, target="cortex-a72")
    t0 = time.monotonic()
    out = a72.run(x)
    run_s = time.monotonic() - t0
    for got, ref in zip(out, host.run(x)):
        assert_close(got, ref, rtol=1e-4, atol=1e-5, what="board vs host")
    timing = a72.benchmark(repeat=3)
    assert timing.emulated and "EMULATED" in str(timing) and len(timing.samples) == 3
    report = a72.report()
    assert "EMULATED" in str(report) and report.to_dict()["latency"]["emulated"] is True
    # the session was released: the one-slot board is free again at once
    assert tracker_summary(board)["queue_info"][board.key]["free"] == 1
    assert run_s < 60, f"a board run took {run_s:.1f} s"

    # saved model (library cross-linked at save) through the CLI
    out_dir = a72.save(tmp_path / "m")
    loaded = compiler.CompiledModel.load(out_dir)
    for got, ref in zip(loaded.run(x), host.run(x)):
        assert_close(got, ref, what="loaded library on the board")


@pytest.mark.slow
def test_cli_run_and_benchmark_on_board(board, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert cli_main(["compile", str(model_path("tinynet")), "-o", str(out),
                     "--target", "cortex-a72"]) == 0
    assert cli_main(["run", str(out)]) == 0
    assert cli_main(["benchmark", str(out), "--repeat", "3"]) == 0
    text = capsys.readouterr().out
    assert "logits" in text or "shape=" in text
    assert "EMULATED" in text
    # explicit tracker/key of the same (local) board work like a real one
    assert cli_main(["run", str(out), "--tracker", board.tracker, "--key", board.key]) == 0
    assert cli_main(["board", "status"]) == 0


@pytest.mark.slow
def test_integer_division_by_zero_on_board_is_one_error_line(board, tmp_path, capsys):
    """The run-time check's failure comes back inside an RPC error string: the same
    `OpValidationError` naming the node as on the host, at once (no retries), the board
    free afterwards; nonzero divisors give onnxruntime's outputs (#22)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_runtime_checks", ROOT / "tests" / "tvm_tests" / "test_runtime_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    a72 = compiler.compile(checks.div_model(), target="cortex-a72", passes=[])
    a = checks.A
    np.testing.assert_array_equal(a72.run({"a": a, "b": checks.B_OK})[0],
                                  _h.ort_run(checks.div_model(), {"a": a, "b": checks.B_OK})[0])
    np.testing.assert_array_equal(  # INT_MIN / -1 wraps, no signal on the board either
        a72.run({"a": np.full(6, -2**31, np.int32), "b": np.full(6, -1, np.int32)})[0],
        np.full(6, -2**31, np.int32))
    zeros = np.array([0, 2, 0, -2, 3, -1], np.int32)
    t0 = time.monotonic()
    with pytest.raises(compiler.OpValidationError, match=re.escape(checks.MESSAGE)):
        a72.run({"a": a, "b": zeros})
    assert time.monotonic() - t0 < 60
    assert tracker_summary(board)["queue_info"][board.key]["free"] == 1
    out = a72.save(tmp_path / "div")
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", zeros)
    capsys.readouterr()
    assert cli_main(["run", str(out), "--input", f"a={tmp_path / 'a.npy'}",
                     "--input", f"b={tmp_path / 'b.npy'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: " + checks.MESSAGE), err


def test_unreachable_tracker_is_a_clear_error_quickly():
    spec = RemoteSpec("127.0.0.1", _closed_port(), "cortex-a72", connect_timeout=2.0)
    t0 = time.monotonic()
    with pytest.raises(RpcError, match="unreachable"):
        tracker_summary(spec)
    assert time.monotonic() - t0 < 5


def test_unreachable_tracker_through_the_target(tmp_path):
    target = get_target("cortex-a72").with_remote(f"127.0.0.1:{_closed_port()}", "rpi4")
    cm = compiler.compile(model_path("tinynet"), target=target)
    t0 = time.monotonic()
    with pytest.raises(TargetUnavailableError, match="unreachable"):
        cm.run({cm.input_names[0]: model_input("tinynet")})
    with pytest.raises(TargetUnavailableError, match="unreachable"):
        cm.benchmark(repeat=2)
    assert time.monotonic() - t0 < 20


def test_cli_unreachable_tracker_exit_code(tmp_path, capsys):
    out = tmp_path / "tiny"
    assert cli_main(["compile", str(model_path("tinynet")), "-o", str(out),
                     "--target", "cortex-a72"]) == 0
    assert cli_main(["run", str(out), "--tracker", f"127.0.0.1:{_closed_port()}"]) == 2
    assert "unreachable" in capsys.readouterr().err


@pytest.mark.slow
def test_unknown_key_is_a_clear_error_within_timeout(board):
    target = get_target("cortex-a72").with_remote(board.tracker, "no-such-board")
    cm = compiler.compile(model_path("tinynet"), target=target)
    t0 = time.monotonic()
    with pytest.raises(TargetUnavailableError, match="no RPC server is registered under key "
                       "'no-such-board'.*cortex-a72"):
        cm.run({cm.input_names[0]: model_input("tinynet")})
    assert time.monotonic() - t0 < 15


def test_bad_remote_arguments():
    target = get_target("cortex-a72")
    with pytest.raises(TargetUnavailableError, match="HOST:PORT"):
        target.with_remote("nohostport")
    with pytest.raises(TargetUnavailableError, match="without a tracker"):
        target.with_remote(key="rpi4").remote()


@pytest.mark.slow
def test_per_kernel_profile_on_board(board):
    """Per-kernel times measured on the board by its server's profiler (TVM 0.27's VM has
    none, and RPC cannot pass our timing callback): the same kernels as the host build."""
    path = model_path("tinynet")
    host_rows = compiler.compile(path, target="host").profile(repeat=2)
    rows = compiler.compile(path, target="cortex-a72").profile(repeat=2)
    assert {r["kernel"] for r in rows} == {r["kernel"] for r in host_rows}
    assert all(r["ms"] >= 0 and r["calls"] >= 1 for r in rows)
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-6
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert any("conv" in r["kernel"] for r in rows)


def test_host_target_is_not_remote():
    cm = compiler.compile(model_path("tinynet"), target="host")
    assert not cm.benchmark(repeat=2).emulated


def _extra_boards(board, key: str, n: int):
    """``n`` more emulated boards registered under ``key`` at the fixture's tracker."""
    from targets.board import spawn_server
    from targets.tvm.rpc import wait_for_key

    servers = [spawn_server(board.port, key) for _ in range(n)]
    spec = RemoteSpec(board.host, board.port, key, emulated=True, request_timeout=10.0,
                      session_timeout=300.0, retries=1)
    try:
        wait_for_key(spec, timeout=240, count=n)
    except BaseException:  # the caller's cleanup has not started yet: no board outlives us
        _kill(servers)
        raise
    return servers, spec


def _wait_for_busy_board(servers, deadline: float):
    """The server that holds a session: TVM's RPC server runs each session in a child
    process of its own."""
    import subprocess

    while time.monotonic() < deadline:
        for s in servers:
            children = subprocess.run(["pgrep", "-P", str(s.pid)], capture_output=True,
                                      text=True).stdout.split()
            if children:
                return s
        time.sleep(0.2)
    raise AssertionError("no board took the session")


def _kill(servers) -> None:
    from targets.board import _kill_group

    for s in servers:
        _kill_group(s.pid)


@pytest.mark.slow
def test_board_farm_parallel_sessions_then_boards_die_mid_measurement(board):
    """Two boards behind one tracker serve two sessions at once; when every board dies
    in the middle of a measurement the caller gets a clear RpcError quickly, no hang."""
    from concurrent.futures import ThreadPoolExecutor

    from targets.tvm.rpc import board_count, time_remote

    servers, spec = _extra_boards(board, f"farm-{time.monotonic_ns()}", 2)
    try:
        assert board_count(spec) == 2
        a72 = compiler.compile(model_path("resnet_tiny"), target="cortex-a72")
        host = compiler.compile(model_path("resnet_tiny"), target="host")
        x = model_input("resnet_tiny")
        target = get_target("cortex-a72")
        from targets.tvm.rpc import run_remote

        with ThreadPoolExecutor(2) as pool:
            outs = list(pool.map(lambda _: run_remote(spec, a72.built, [x],
                                                      cross_compiler=target.cross_compiler),
                                 range(2)))
        for out in outs:
            assert_close(out[0], host.run([x])[0], what="farm board vs host")

        # A measurement of ~6 s; the board holding its session is killed halfway: the
        # session is retried on the other board.  Then the last board dies the same way.
        one = float(np.median(time_remote(spec, a72.built, [x], repeat=3,
                                          cross_compiler=target.cross_compiler)))
        repeat = max(3, int(np.ceil(6.0 / max(one, 1e-3))))
        alive = list(servers)
        for survivors in (1, 0):
            with ThreadPoolExecutor(1) as pool:
                t0 = time.monotonic()
                job = pool.submit(time_remote, spec, a72.built, [x], repeat=repeat,
                                  cross_compiler=target.cross_compiler)
                busy = _wait_for_busy_board(alive, deadline=t0 + 60)
                time.sleep(1.5)
                assert not job.done()
                _kill([busy])
                alive.remove(busy)
                if survivors:
                    samples = job.result(timeout=240)
                    assert len(samples) == repeat
                else:
                    with pytest.raises(RpcError, match=f"key '{spec.key}'"):
                        job.result(timeout=120)
                assert time.monotonic() - t0 < 240
    finally:
        _kill(servers)

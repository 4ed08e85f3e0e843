"""The FPGA simulator as a TVM RPC server registered under the key ``fpga-sim``.

The simulator is reached exactly like a board: a client asks the tracker for a
``fpga-sim`` session, uploads the functional model (the integer graph lowered by TVM for
the simulator's host), runs it through the session and asks the server for the
simulated time of the uploaded design (`simulate`).  A user with several simulator
servers, or a real board later, uses the same path.

A Python simulator cannot be reached with ``python -m tvm.exec.rpc_server`` (it has no
hook to register Python functions; ``load_library`` only loads shared libraries), so
this module is its own launcher: ``python -m targets.fpga_sim.server --tracker H:P``
builds ``tvm.rpc.Server(..., server_init_callback=register_functions)``.  The callback
runs in the server's worker before it listens, and every session is forked from it,
so the registrations are inherited (TVM's default fork mode; spawn would lose them).

The embedded default: `ensure_running` attaches a simulator server to the local tracker
of the emulated board (`targets.board`), starting the board if needed (and stopping
what it started at exit); `targets.board.start` (``compiler board start``) starts one
with the board through `targets.board.register_server` (`spawn_server`).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

__all__ = ["SIM_KEY", "VERSION", "simulated_seconds", "register_functions", "spawn_server",
           "ensure_running", "main"]

SIM_KEY = "fpga-sim"
VERSION = "fpga-sim 1 (FINN-style dataflow cycle model)"
_ROOT = Path(__file__).resolve().parents[2]  # the project root (importable by the server)
_STATE = "fpga-sim.json"


def simulated_seconds(design: Mapping[str, Any], batch: int = 1) -> dict[str, Any]:
    """Simulated time of ``batch`` frames through the pipeline: FINN's estimate
    ``latency + (batch - 1) * II`` cycles at ``fclk_mhz`` (dataflow_performance.py; the
    latency is FINN's pessimistic critical path).  ``design`` is ``Design.to_dict()``."""
    batch = int(batch)
    if batch < 1:
        raise ValueError(f"batch {batch} must be >= 1")
    try:
        ii = int(design["ii_cycles"])
        latency = int(design["latency_cycles"])
        fclk = float(design["fclk_mhz"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an fpga-sim design (needs ii_cycles, latency_cycles, "
                         f"fclk_mhz): {exc}") from None
    cycles = latency + (batch - 1) * ii
    return {"cycles": cycles, "ii_cycles": ii, "latency_cycles": latency, "batch": batch,
            "fclk_mhz": fclk, "seconds": cycles / (fclk * 1e6), "simulator": VERSION}


def _simulate(design_json: str, batch: int) -> str:
    return json.dumps(simulated_seconds(json.loads(design_json), int(batch)))


def register_functions() -> None:
    """Register the simulator's functions in this process (the server's init callback)."""
    import tvm

    tvm.register_global_func("fpga_sim.version", lambda: VERSION, override=True)
    tvm.register_global_func("fpga_sim.simulate", _simulate, override=True)


# -- process management ------------------------------------------------------------

def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn_server(tracker_port: int, run_dir: Path, key: str = SIM_KEY,
                 host: str = "127.0.0.1") -> subprocess.Popen:
    """Start one simulator server (host python, detached in its own process group, log
    in ``run_dir``) that registers ``key`` at the tracker ``host:tracker_port``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port(host)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "targets.fpga_sim.server", "--host", host, "--port", str(port),
           "--port-end", str(port + 1), f"--tracker={host}:{tracker_port}", f"--key={key}"]
    with open(run_dir / f"server-{key}-{port}.log", "wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(run_dir),
                                start_new_session=True)


_STARTED: list[int] = []


def ensure_running(timeout: float = 60.0):
    """The `RemoteSpec` of a simulator registered at the embedded board's tracker.

    Starts the board (tracker + emulated A72 + simulator, stopped at exit) when it is not
    running; attaches a simulator server to a running board that has none (that server
    is stopped when this process exits).  ``COMPILER_BOARD=off`` gives a clear error."""
    from .. import board
    from ..tvm.rpc import RemoteSpec, RpcError, registered_keys, tracker_summary, wait_for_key
    if os.environ.get("COMPILER_BOARD", "").lower() in ("off", "0", "no", "false"):
        raise board.BoardError("target 'fpga-sim' needs a simulator server reached through a "
                               "TVM RPC tracker: none named (tracker= option / "
                               "COMPILER_FPGA_TRACKER) and the embedded board is disabled "
                               "(COMPILER_BOARD)")
    # A lease on the board (started if needed; a board it starts runs a simulator too,
    # see board.register_server), so no other command's exit stops it under this one.
    state = board._read_state()
    started = not (state and board._alive(state.get("tracker_pid")))
    board.ensure_running()
    state = board._read_state()
    spec = RemoteSpec(board.HOST, int(state["tracker_port"]), SIM_KEY, connect_timeout=2.0,
                      request_timeout=30.0, session_timeout=300.0)
    try:
        have = registered_keys(tracker_summary(spec)).get(SIM_KEY, 0)
    except RpcError as exc:
        raise board.BoardError(f"the embedded board's tracker {spec.tracker} does not answer: "
                           f"{exc}") from None
    if started or not have:
        if not have and not started:
            _remember(spawn_server(spec.port, board._run_dir()).pid)
        try:
            wait_for_key(spec, timeout=timeout)
        except RpcError as exc:
            raise board.BoardError(f"the fpga-sim simulator server did not register at "
                                   f"{spec.tracker} within {timeout:g} s ({exc}); see "
                                   f"{board._run_dir()}/server-{SIM_KEY}-*.log") from None
    return spec


def _remember(pid: int) -> None:
    """Stop the simulator server ``pid`` at exit (only the one this process started)."""
    if not _STARTED:
        import atexit

        atexit.register(_stop_started)
    _STARTED.append(pid)


def _stop_started() -> None:
    from .. import board

    for pid in _STARTED:
        board._kill_group(pid)
    _STARTED.clear()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m targets.fpga_sim.server",
                                description="TVM RPC server of the fpga-sim simulator")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9091)
    p.add_argument("--port-end", type=int, default=9199)
    p.add_argument("--tracker", required=True, help="HOST:PORT of the RPC tracker")
    p.add_argument("--key", default=SIM_KEY)
    args = p.parse_args(argv)
    from tvm import rpc

    from ..tvm.rpc import parse_tracker

    tracker = parse_tracker(args.tracker)
    server = rpc.Server(args.host, args.port, args.port_end, tracker_addr=tracker,
                        key=args.key, server_init_callback=register_functions)
    print(f"fpga-sim server on {args.host}:{server.port}, key '{args.key}', tracker "
          f"{args.tracker}", flush=True)
    try:
        server.proc.join()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()

"""Run and time cross-compiled libraries on a board reached through a TVM RPC tracker.

Every network wait has a timeout (TVM's own tracker client retries for 60 s on a
closed port and waits forever for a key nobody serves, so the tracker protocol is
spoken here with socket timeouts).  A session is requested, the library uploaded,
loaded and run, and the session released *deterministically* (every remote handle is
dropped and collected before returning): a session that stays referenced keeps a
one-slot board busy until its session timeout.  Failed sessions are retried a bounded
number of times; what cannot be done raises `RpcError` (a `TargetUnavailableError`)
naming the tracker, the key and what went wrong.
"""
from __future__ import annotations

import gc
import json
import os
import socket
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..base import TargetUnavailableError
from .checks import check_failure

__all__ = ["RpcError", "BoardBusyError", "RemoteSpec", "parse_tracker", "tracker_summary", "wait_for_key",
           "check_key", "board_count", "run_remote", "time_remote", "with_session",
           "remote_outputs", "profile_remote", "NoRemoteProfilerError", "library_file",
           "remote_vm"]

# The tracker protocol (tvm.rpc.base): int32 magic handshake, then [int32 length][json].
_TRACKER_MAGIC = 0x2F271
_SUCCESS, _REQUEST, _SUMMARY = 0, 4, 6


class RpcError(TargetUnavailableError):
    """A tracker or board that cannot be reached or used (named in the message)."""


class BoardBusyError(RpcError):
    """Every board under the key stayed in other sessions for the whole wait."""


class NoRemoteProfilerError(RpcError):
    """The board's RPC server does not provide ``compiler.board.vm_profile``."""


PROFILER_FUNC = "compiler.board.vm_profile"


@dataclass(frozen=True)
class RemoteSpec:
    """Where a board is: a tracker address and the key its RPC server registered."""

    host: str
    port: int
    key: str
    emulated: bool = False          # True for the project's qemu board
    connect_timeout: float = 5.0    # TCP connect / each tracker reply
    request_timeout: float = 60.0   # waiting for a free board of `key`
    session_timeout: float = 600.0  # server-side limit of one session
    retries: int = 2                # extra attempts after a failed session

    @property
    def tracker(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        where = f"key '{self.key}' via tracker {self.tracker}"
        return f"EMULATED board (qemu, {where})" if self.emulated else where


def parse_tracker(text: str) -> tuple[str, int]:
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"tracker address must be HOST:PORT, got '{text}'")
    return host, int(port)


# -- tracker protocol with timeouts -------------------------------------------------

def _send(sock: socket.socket, value: Any) -> None:
    data = json.dumps(value).encode()
    sock.sendall(struct.pack("<i", len(data)) + data)


def _recvall(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionError("connection closed by the tracker")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    size = struct.unpack("<i", _recvall(sock, 4))[0]
    return json.loads(_recvall(sock, size).decode())


def _open_tracker(spec: RemoteSpec) -> socket.socket:
    try:
        sock = socket.create_connection((spec.host, spec.port), timeout=spec.connect_timeout)
    except OSError as exc:
        if spec.emulated:  # the embedded board: the user named no tracker, so no --tracker
            raise RpcError(f"the emulated board's RPC tracker {spec.tracker} is unreachable "
                           f"({exc.strerror or exc}): the board was stopped or has crashed; "
                           "see `compiler board status` (its logs are in the board's run/ "
                           "folder) and start it again with `compiler board start`") from None
        raise RpcError(f"RPC tracker {spec.tracker} is unreachable ({exc.strerror or exc}); "
                       "start it (python -m tvm.exec.rpc_tracker) or fix --tracker") from None
    try:
        sock.sendall(struct.pack("<i", _TRACKER_MAGIC))
        magic = struct.unpack("<i", _recvall(sock, 4))[0]
    except (OSError, ConnectionError) as exc:
        sock.close()
        raise RpcError(f"{spec.tracker} did not answer as an RPC tracker ({exc})") from None
    if magic != _TRACKER_MAGIC:
        sock.close()
        raise RpcError(f"{spec.tracker} is not a TVM RPC tracker")
    return sock


def tracker_summary(spec: RemoteSpec) -> dict:
    """The tracker's summary: ``{"queue_info": {key: {free, pending}}, "server_info": [...]}``."""
    sock = _open_tracker(spec)
    try:
        _send(sock, [_SUMMARY])
        reply = _recv(sock)
    except (OSError, ConnectionError) as exc:
        raise RpcError(f"RPC tracker {spec.tracker}: no summary ({exc})") from None
    finally:
        sock.close()
    if not isinstance(reply, list) or reply[0] != _SUCCESS:
        raise RpcError(f"RPC tracker {spec.tracker}: bad summary reply {reply!r}")
    return reply[1]


def registered_keys(summary: dict) -> dict[str, int]:
    """key -> number of servers registered under it."""
    counts: dict[str, int] = {}
    for info in summary.get("server_info", []):
        key = str(info.get("key", ""))
        if key.startswith("server:"):
            counts[key[7:]] = counts.get(key[7:], 0) + 1
    return counts


def check_key(spec: RemoteSpec) -> dict:
    """Fail clearly (and at once) when no server is registered under ``spec.key``."""
    summary = tracker_summary(spec)
    keys = registered_keys(summary)
    if keys.get(spec.key, 0) == 0:
        known = ", ".join(f"'{k}' ({n})" for k, n in sorted(keys.items())) or "none"
        raise RpcError(f"no RPC server is registered under key '{spec.key}' at tracker "
                       f"{spec.tracker} (registered keys: {known}); start one with "
                       f"python -m tvm.exec.rpc_server --tracker={spec.tracker} --key={spec.key}")
    return summary


def wait_for_key(spec: RemoteSpec, timeout: float, poll: float = 0.5,
                 count: int = 1) -> dict:
    """Poll the tracker until ``count`` servers are registered under ``spec.key``
    (or raise `RpcError` at ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            summary = check_key(spec)
            have = registered_keys(summary).get(spec.key, 0)
            if have >= count:
                return summary
            if time.monotonic() >= deadline:
                raise RpcError(f"only {have} of {count} RPC servers registered under key "
                               f"'{spec.key}' at tracker {spec.tracker}")
        except RpcError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(poll)


def board_count(spec: RemoteSpec) -> int:
    """How many servers (boards) are registered under ``spec.key``: the farm size that
    tuning can measure on in parallel."""
    return registered_keys(tracker_summary(spec)).get(spec.key, 0)


def _request(spec: RemoteSpec):
    """One session from the tracker; waits at most ``request_timeout`` for a free board."""
    from tvm import rpc

    check_key(spec)
    sock = _open_tracker(spec)
    try:
        sock.settimeout(spec.request_timeout)
        _send(sock, [_REQUEST, spec.key, "", 1])
        reply = _recv(sock)
    except socket.timeout:
        raise BoardBusyError(f"no free board under key '{spec.key}' at tracker {spec.tracker} "
                             f"within {spec.request_timeout:g} s: all its boards stayed busy "
                             "with other sessions (wait: COMPILER_BOARD_WAIT seconds)") from None
    except (OSError, ConnectionError) as exc:
        raise RpcError(f"RPC tracker {spec.tracker}: request for '{spec.key}' failed "
                       f"({exc})") from None
    finally:
        sock.close()  # the tracker forgets a pending request when its client leaves
    if not isinstance(reply, list) or reply[0] != _SUCCESS:
        raise RpcError(f"RPC tracker {spec.tracker}: bad reply {reply!r} for '{spec.key}'")
    url, port, matchkey = reply[1]
    return rpc.connect(url, port, matchkey, session_timeout=int(spec.session_timeout))


def with_session(spec: RemoteSpec, fn: Callable[[Any], Any], *, what: str = "run") -> Any:
    """``fn(session)`` on a fresh session, retried ``spec.retries`` times; the session
    and everything ``fn`` created on it are released before this returns."""
    errors: list[str] = []
    for attempt in range(spec.retries + 1):
        session = failed = None
        try:
            session = _request(spec)
            return fn(session)
        except (BoardBusyError, NoRemoteProfilerError):
            raise                          # waited the whole timeout / will not appear
        except RpcError as exc:
            if "no RPC server is registered" in str(exc) or "unreachable" in str(exc):
                raise                      # retrying will not help
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001  (TVM raises plain RuntimeError/TVMError)
            failed = check_failure(exc)  # the input's fault: the same on every attempt
            if failed is None:
                errors.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}")
        finally:
            session = None
            gc.collect()                   # drop remote handles: frees the board now
        if failed is not None:
            # raised here, not in the except clause: as the context of ``exc`` its
            # traceback would keep fn's frames, and with them the session, the board busy
            raise failed
        if attempt < spec.retries:
            time.sleep(min(1.0 * (attempt + 1), 3.0))
    raise RpcError(f"could not {what} on {spec.describe()} after {spec.retries + 1} "
                   f"attempts: " + " | ".join(errors))


# -- upload / run / time -----------------------------------------------------------

def library_file(built: Any, cross_compiler: str | Callable | None, tmpdir: str) -> str:
    from .build import split_built

    built = split_built(built)[0]
    if isinstance(built, (str, os.PathLike)):
        return os.fspath(built)
    from .build import export_library

    return export_library(built, os.path.join(tmpdir, "model.so"), cross_compiler=cross_compiler)


def remote_vm(session: Any, lib_path: str):
    from tvm import relax

    name = f"model_{os.getpid()}_{time.monotonic_ns()}.so"
    session.upload(lib_path, target=name)
    rlib = session.load_module(name)
    dev = session.cpu()
    return relax.VirtualMachine(rlib, dev), dev


def _with_weights(built: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The inputs followed by the weights of a `build.WeightsBuilt` (copied to the board
    once per session: ``set_input`` keeps them there for every timed repeat)."""
    from .build import split_built

    return [*inputs, *split_built(built)[1]]


def run_remote(spec: RemoteSpec, built: Any, inputs: Sequence[np.ndarray], *,
               cross_compiler: str | Callable | None = None, func: str = "main"
               ) -> list[np.ndarray]:
    """Upload ``built`` (an executable, exported with ``cross_compiler``, or a library
    path, either possibly a `build.WeightsBuilt`), run ``func`` once on the board,
    return numpy outputs."""
    from .build import to_tensors

    inputs = _with_weights(built, inputs)

    with tempfile.TemporaryDirectory(prefix="rpc-") as tmp:
        lib = library_file(built, cross_compiler, tmp)

        def job(session):
            vm, dev = remote_vm(session, lib)
            return remote_outputs(vm, func, to_tensors(inputs, dev))

        return with_session(spec, job, what="run the model")


def remote_outputs(vm: Any, func: str, args: Sequence[Any]) -> list[np.ndarray]:
    """Call ``func`` of a VM on a remote session and fetch its outputs as numpy arrays,
    flattened depth-first (the order `build.run` returns on the host).

    ``vm[func](...)`` cannot be used over RPC when the result is a tuple: the remote
    tuple comes back as an opaque ``RPCObjectRef`` (not iterable; issue #16).  The VM's
    stateful interface walks the result on the board instead: ``invoke_stateful`` keeps
    it there and ``get_outputs`` fetches each leaf tensor by its index path, so single
    tensors, tuples and nested tuples all arrive whole."""
    vm.set_input(func, *args)
    vm.invoke_stateful(func)
    from .build import to_numpy

    return to_numpy(vm.get_outputs(func))


def time_remote(spec: RemoteSpec, built: Any, inputs: Sequence[np.ndarray], *,
                repeat: int = 10, number: int = 1, cross_compiler: str | Callable | None = None,
                func: str = "main") -> list[float]:
    """Seconds per call on the board (``vm.time_evaluator("invoke_stateful")``)."""
    from .build import to_tensors

    inputs = _with_weights(built, inputs)

    with tempfile.TemporaryDirectory(prefix="rpc-") as tmp:
        lib = library_file(built, cross_compiler, tmp)

        def job(session):
            vm, dev = remote_vm(session, lib)
            vm.set_input(func, *to_tensors(inputs, dev))
            timer = vm.time_evaluator("invoke_stateful", dev, number=number, repeat=repeat)
            return [float(t) for t in timer(func).results]

        return with_session(spec, job, what="time the model")


def profile_remote(spec: RemoteSpec, built: Any, inputs: Sequence[np.ndarray], *,
                   repeat: int = 10, cross_compiler: str | Callable | None = None,
                   func: str = "main") -> list[dict]:
    """Per-kernel times measured *on the board* (its clock around each VM call; rows as
    `build.profile_local`), by the board server's ``compiler.board.vm_profile`` (the
    project's ``targets/board/server_main.py``; a plain ``tvm.exec.rpc_server`` has no
    profiler and gives `NoRemoteProfilerError`)."""
    from .build import to_tensors

    inputs = _with_weights(built, inputs)

    with tempfile.TemporaryDirectory(prefix="rpc-") as tmp:
        lib = library_file(built, cross_compiler, tmp)

        def job(session):
            try:
                profile = session.get_function(PROFILER_FUNC)
            except Exception:  # noqa: BLE001  (TVM: AttributeError / RuntimeError)
                profile = None
            if profile is None:
                raise NoRemoteProfilerError(
                    f"per-kernel profiling on {spec.describe()} needs the board's RPC server "
                    f"to provide {PROFILER_FUNC}: TVM 0.27's VM has no profiler and RPC cannot "
                    "pass a timing callback to the board. Start the server with the project's "
                    "targets/board/server_main.py (next to targets/tvm/vm_profile.py) instead "
                    "of python -m tvm.exec.rpc_server, or use `benchmark` for the whole "
                    "model's time")
            name = f"model_{os.getpid()}_{time.monotonic_ns()}.so"
            session.upload(lib, target=name)
            rlib = session.load_module(name)
            text = profile(rlib, func, int(repeat), *to_tensors(inputs, session.cpu()))
            return json.loads(str(text))

        return with_session(spec, job, what="profile the model")

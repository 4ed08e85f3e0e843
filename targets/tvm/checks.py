"""Run-time checks inside the built code, and their failures as our own error.

Why: some inputs make an op undefined where the interpreter and onnxruntime refuse
them (integer ``x / 0``: onnxruntime fails with "Integer division by zero").  Compiled
code cannot inspect values at compile time, so the lowering puts a small TIR kernel
in front of the op (`nonzero_check`): it copies the checked tensor and fails with a
message naming the node on the first offending element.  The copy is what the op
then reads, so the check cannot be dropped as dead code and always runs first; the
kernel is marked opaque (``op_pattern`` 8: never fused, never run in place by the
arena) and already scheduled (`SCHEDULED`: tuning leaves it out of its tasks).

A failed check reaches Python as TVM's error, on the host directly and from a board
inside an RPC error string: `check_failure` finds our message in either (it starts
with `MARKER`) and returns it as the `OpValidationError` the interpreter raises for
the same input, so ``compiler run`` prints one ``error:`` line for both.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from compiler.ops.registry import OpValidationError

__all__ = ["MARKER", "nonzero_check", "check_failure", "mapped_check_failures"]

MARKER = "run-time check failed: "
_FOUND = re.compile(re.escape(MARKER) + r"([^\n\r]*)")
SCHEDULED = "tirx.is_scheduled"  # a kernel no tuning should touch (`tuning.tune_and_build`)
_OPAQUE = 8  # relay's OpPatternKind.kOpaque (AnnotateTIROpPattern keeps a set pattern)


def _plain(text: str) -> str:
    """``text`` on one line (names come from the model file)."""
    return " ".join(str(text).split())


def nonzero_check_func(shape: Sequence[int], dtype: str, message: str) -> Any:
    """A PrimFunc ``(x, out)`` copying ``x`` into ``out`` that fails with ``MARKER +
    message`` (a ``ValueError`` on the host) at the first zero element of ``x``."""
    import tvm
    from tvm import s_tir, tirx

    x = tirx.decl_buffer(tuple(int(n) for n in shape), dtype, "x")
    out = tirx.decl_buffer(x.shape, dtype, "out")
    idx = [tirx.Var(f"i{k}", "int64") for k in range(len(shape))]
    load = tirx.BufferLoad(x, idx)
    # (TVM 0.27's AssertStmt constructor takes (condition, kind, parts), whatever its
    # Python signature says)
    body: Any = tirx.SeqStmt([
        tirx.AssertStmt(load != tirx.const(0, dtype), tvm.ir.StringImm("ValueError"),
                        [tvm.ir.StringImm(MARKER + _plain(message))]),
        tirx.BufferStore(out, load, idx)])
    for var, extent in reversed(list(zip(idx, x.shape))):
        body = tirx.For(var, tirx.const(0, "int64"), tirx.const(int(extent), "int64"),
                        tirx.ForKind.SERIAL, body)
    # a root block: Relax passes (RewriteDataflowReshape) expect one
    body = s_tir.SBlockRealize([], True, s_tir.SBlock([], [], [], "root", body))
    func = tirx.PrimFunc([x, out], body)
    return func.with_attrs({"op_pattern": _OPAQUE, "tirx.noalias": True,
                            SCHEDULED: True})


def nonzero_check(ctx: Any, expr: Any, shape: Sequence[int], dtype: str, message: str,
                  name: str) -> Any:
    """``expr`` passed through `nonzero_check_func` (emitted on ``ctx``, a
    `lowering.LowerContext`): read the result instead of ``expr``."""
    from tvm import relax

    gvar = ctx.bb.add_func(nonzero_check_func(shape, dtype, message), name)
    return ctx.emit(relax.call_tir(gvar, [expr], relax.TensorType(tuple(shape), dtype)))


def check_failure(exc: BaseException) -> OpValidationError | None:
    """The `OpValidationError` for ``exc`` if it is (or wraps, as an RPC error string
    does) a failed run-time check; None for any other error."""
    if isinstance(exc, OpValidationError):
        return exc
    found = _FOUND.search(str(exc))
    return OpValidationError(found.group(1).strip()) if found else None


@contextmanager
def mapped_check_failures() -> Iterator[None]:
    """Re-raise a failed run-time check as its `OpValidationError` (no TVM traceback)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001  (TVM raises ValueError, RPCError, TVMError...)
        mapped = check_failure(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from None

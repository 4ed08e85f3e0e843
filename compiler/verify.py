"""The built code checked against the reference interpreter after `compile` builds it.

The pass instruments compare passes in the interpreter only; nothing else compares what
TVM generated with what the IR means, which is how a lowering that turns NaN into 0
shipped.  One seeded input is cheap (one interpreter run, one target run) and catches a
wrong lowering before the artifact is saved.  Integer outputs must be bit-exact; float
outputs within the float op set's tolerance (relative to the reference's magnitude); NaN
and +-Inf must sit at the same positions.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .ir import Graph

__all__ = ["VerificationError", "verify_build", "RTOL", "ATOL"]

log = logging.getLogger("compiler.verify")

# the float op set's tolerance: what tests/conftest.assert_close allows against onnxruntime
RTOL, ATOL = 1e-4, 1e-5


class VerificationError(ValueError):
    """The built code disagrees with the interpreter on the verification input."""


def first_mismatch(name: str, got: np.ndarray, want: np.ndarray) -> str | None:
    """Why ``got`` differs from the reference ``want`` (None when it does not)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"output '{name}': shape {got.shape}, the interpreter gives {want.shape}"
    if want.dtype.kind not in "fc":
        if got.dtype != want.dtype or not np.array_equal(got, want):
            bad = int(np.sum(got != want)) if got.dtype.kind == want.dtype.kind else got.size
            return (f"output '{name}': {bad} of {want.size} integer values differ from the "
                    f"interpreter (bit-exact expected)")
        return None
    g, w = got.astype(np.float64), want.astype(np.float64)
    nan_g, nan_w = np.isnan(g), np.isnan(w)
    if not np.array_equal(nan_g, nan_w):
        return (f"output '{name}': NaN at {int(np.sum(nan_g))} positions, the interpreter "
                f"has {int(np.sum(nan_w))}")
    inf_w = np.isinf(w)
    if not np.array_equal(np.isinf(g), inf_w) or not np.array_equal(g[inf_w], w[inf_w]):
        return f"output '{name}': +-Inf positions differ from the interpreter"
    finite = ~(nan_w | inf_w)
    if not finite.any():
        return None
    scale = max(float(np.max(np.abs(w[finite]))), 1e-6)
    err = float(np.max(np.abs(g[finite] - w[finite])))
    if err > ATOL + RTOL * scale:
        return (f"output '{name}': max abs error {err:.3g} exceeds {ATOL} + {RTOL} * "
                f"{scale:.3g} against the interpreter")
    return None


def verify_build(graph: Graph, target: Any, built: Any, *, seed: int = 0) -> dict:
    """Run ``built`` and the interpreter on one seeded input; raise `VerificationError`
    naming the first differing output.  Returns ``{"status": "passed"|"skipped", ...}``.

    A target that does not run locally (cortex-a72: a board behind RPC) is skipped with a
    log line: running there needs a board, and the host build of the same graph is a
    second full build (not cheap) that checks the lowering but not the target's code."""
    from .interpreter import Interpreter, random_inputs

    if not getattr(target, "runs_locally", True):
        reason = (f"target '{target.name}' runs remotely; its code is not run at compile "
                  "time (run it on the board with `compiler run`)")
        log.info("verify: skipped: %s", reason)
        return {"status": "skipped", "reason": reason}
    inputs = random_inputs(graph, seed=seed)
    want = Interpreter(graph).run(inputs)
    got = target.run(built, [inputs[v.name] for v in graph.inputs])
    for value, g, w in zip(graph.outputs, got, want):
        why = first_mismatch(value.name, g, w)
        if why:
            raise VerificationError(f"the {target.name} build disagrees with the interpreter "
                                    f"on a seeded input (seed {seed}): {why}; this is a "
                                    "compiler bug (compile with verify=False / --no-verify "
                                    "to keep the artifact anyway)")
    return {"status": "passed", "seed": seed, "outputs": len(want)}

"""Per-kernel times of a Relax VM function, measured where the VM runs.

One job: run ``func`` with the VM's instrument hook timing each call instruction with
that machine's clock, and summarise per kernel.  It imports nothing from the project
and only numpy and the VM object's own methods, so the same code runs on the host
(`build.profile_local`) and on the emulated board's RPC server (registered there as
``compiler.board.vm_profile`` by ``targets/board/server_main.py``): over RPC the hook
cannot be a host callback (TVM cannot pass a function to the remote).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np


def profile_rows(vm: Any, func: str, args: Sequence[Any], repeat: int) -> list[dict]:
    """Per kernel (the VM's call instructions, grouped by symbol): the median over
    ``repeat`` runs of its summed time per run, its call count and its share of the
    summed kernel time; after one uninstrumented warm-up run; slowest first."""
    per_run: list[dict[str, float]] = []
    calls: dict[str, int] = {}
    started: list[float] = []

    def instrument(_func, symbol, before_run, _ret, *_args):
        if before_run:
            started.append(time.perf_counter())
        else:
            name = str(symbol)
            per_run[-1][name] = per_run[-1].get(name, 0.0) + time.perf_counter() - started.pop()
            if len(per_run) == 1:
                calls[name] = calls.get(name, 0) + 1
        return 0  # VMInstrumentReturnKind.NO_OP: run the call as usual

    vm[func](*args)  # warm-up, uninstrumented
    vm.set_instrument(instrument)
    for _ in range(max(1, int(repeat))):
        per_run.append({})
        vm[func](*args)
    names = list(per_run[0])
    med = {n: float(np.median([r.get(n, 0.0) for r in per_run])) for n in names}
    total = sum(med.values()) or 1.0
    rows = [{"kernel": n, "ms": med[n] * 1e3, "calls": calls.get(n, 0),
             "share": med[n] / total} for n in names]
    return sorted(rows, key=lambda r: -r["ms"])

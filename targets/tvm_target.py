"""`TvmTarget`: a target whose code comes from Apache TVM (host CPU, Cortex-A72, ...).

It is a TVM target dict plus defaults; the work is done in ``targets/tvm/`` (lowering
to Relax, building, exporting, timing), imported lazily so that choosing a target
costs nothing until a build happens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compiler.ir import Graph

from .base import Target, TargetUnavailableError, Timing


@dataclass
class TvmTarget(Target):
    """``tvm_target`` returns the TVM target dict (a callable: host detection is lazy)."""

    tvm_target: Callable[[], dict[str, Any]] = field(default=lambda: {"kind": "llvm"})
    runs_locally: bool = True
    cross_compiler: str | None = None  # e.g. "aarch64-linux-gnu-g++"

    def target_dict(self) -> dict[str, Any]:
        return self.tvm_target()

    def build(self, graph: Graph) -> Any:
        from .tvm.build import build
        from .tvm.lowering import lower_graph

        return build(lower_graph(graph), self.target_dict())

    def _require_local(self, what: str) -> None:
        if not self.runs_locally:
            raise TargetUnavailableError(
                f"target '{self.name}' code cannot {what} on this machine: it needs a "
                f"{self.name} device reached through a TVM RPC tracker")

    def run(self, built: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self._require_local("run")
        from .tvm.build import run

        return run(built, inputs)

    def export(self, built: Any, path: Path) -> None:
        from .tvm.build import export_library

        export_library(built, str(path), cross_compiler=self.cross_compiler)

    def load(self, path: Path) -> Any:
        self._require_local("be loaded")
        from .tvm.build import load_library

        return load_library(str(path))

    def measure(self, built: Any, inputs: list[np.ndarray], *, repeat: int = 10,
                number: int = 1) -> Timing:
        self._require_local("be timed")
        from .tvm.build import time_local

        samples = time_local(built, inputs, repeat=repeat, number=number)
        return Timing(samples, device=f"{self.name} (local CPU)", number=number)

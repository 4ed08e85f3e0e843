"""`Target`: what a piece of hardware means to the compiler, and the target registry.

A target names a device, the passes it runs by default, and how a graph becomes
something that runs there (``build``), runs (``run``), is saved (``export``) and is
timed (``measure``).  Targets that lower through TVM share `targets.tvm_target.TvmTarget`;
a user adds a target by subclassing and calling `register_target` (see CONTRIBUTING.md).
Nothing in this module imports TVM.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from compiler.ir import Graph

__all__ = ["Target", "Timing", "register_target", "get_target", "registered_targets",
           "UnknownTargetError", "TargetUnavailableError", "TuningUnsupportedError",
           "user_error_types"]


class UnknownTargetError(ValueError):
    """No target is registered under the requested name."""


class TuningUnsupportedError(ValueError):
    """The target has no auto-tuner (only TVM targets tune)."""


class TargetUnavailableError(RuntimeError):
    """The target exists but cannot do this here (no board reachable, no cross linker...)."""


@dataclass
class Timing:
    """Latency samples in seconds; ``device`` says where they were measured."""

    samples: list[float]
    device: str
    emulated: bool = False
    number: int = 1
    simulated: bool = False  # computed by a simulator's model (fpga-sim), not measured

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def spread(self) -> tuple[float, float]:
        return float(np.min(self.samples)), float(np.max(self.samples))

    def __str__(self) -> str:
        lo, hi = self.spread
        tag = " (EMULATED: not real-device latency)" if self.emulated else ""
        if self.simulated:
            tag = " (SIMULATED: cycle model at fclk, not a hardware measurement)"
        return (f"{self.median * 1e3:.3f} ms median over {len(self.samples)} repeats "
                f"[{lo * 1e3:.3f}-{hi * 1e3:.3f}] on {self.device}{tag}")


@dataclass
class Target:
    """Base class of targets.  Subclasses implement build/run/export/measure."""

    name: str
    description: str = ""
    default_passes: Sequence[str] = ("cleanup", "fold-bn")
    capabilities: frozenset[str] = frozenset()

    def build(self, graph: Graph) -> Any:
        raise NotImplementedError(f"target '{self.name}' cannot build")

    def run(self, built: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError(f"target '{self.name}' cannot run")

    def export(self, built: Any, path: Path) -> None:
        raise NotImplementedError(f"target '{self.name}' cannot export a library")

    def load(self, path: Path) -> Any:
        raise NotImplementedError(f"target '{self.name}' cannot load a library")

    def measure(self, built: Any, inputs: list[np.ndarray], *, repeat: int = 10,
                number: int = 1) -> Timing:
        raise NotImplementedError(f"target '{self.name}' cannot measure")

    def profile(self, built: Any, inputs: list[np.ndarray], *, repeat: int = 10) -> list[dict]:
        """Per-kernel time (rows: kernel, ms, calls, share), slowest first."""
        raise NotImplementedError(f"target '{self.name}' cannot profile kernels")

    def report_extra(self, built: Any, graph: Graph | None = None) -> dict | None:
        """A target-specific section of `CompiledModel.report()` (``{"title", "text",
        "data"}``), or None."""
        return None

    def tune_options(self, tune: Any) -> Any:
        """Validate ``tune`` (a mapping, an int of trials or the target's own options type)
        before any work and return the target's parsed options.  The default target cannot
        tune; targets that can override this and `build_tuned`."""
        raise TuningUnsupportedError(f"target '{self.name}' does not support auto-tuning")

    def build_tuned(self, graph: Graph, tune: Any) -> tuple[Any, dict]:
        """Build with auto-tuning; returns ``(built, tuning stats)``."""
        raise TuningUnsupportedError(f"target '{self.name}' does not support auto-tuning")

    @property
    def library_suffix(self) -> str:
        return ".so"


_TARGETS: dict[str, Callable[[], Target]] = {}


def register_target(name: str, factory: "Callable[[], Target] | Target") -> None:
    """Make ``name`` resolvable by `get_target` (``factory`` may be an instance)."""
    if isinstance(factory, Target):
        instance = factory
        factory = lambda: instance  # noqa: E731
    _TARGETS[name] = factory


def get_target(target: "str | Target") -> Target:
    if isinstance(target, Target):
        return target
    _load_builtin_targets()
    try:
        return _TARGETS[target]()
    except KeyError:
        raise UnknownTargetError(f"unknown target '{target}'; registered targets: "
                                 f"{', '.join(sorted(_TARGETS))}") from None


def registered_targets() -> list[str]:
    _load_builtin_targets()
    return sorted(_TARGETS)


_loaded = False


def _load_builtin_targets() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import host, cortex_a72  # noqa: F401  (register on import)
        from .fpga_sim import target as _fpga_sim  # noqa: F401


def remote_copy(target: "Target", tracker: str | None, key: str | None) -> "Target":
    """A copy of ``target`` (a dataclass target with ``tracker`` and ``rpc_key`` fields)
    that reaches its device through the tracker ``HOST:PORT`` under ``key``; a malformed
    tracker address is a `TargetUnavailableError` naming it."""
    import dataclasses

    if tracker is not None:
        from .tvm.rpc import parse_tracker

        try:
            parse_tracker(tracker)
        except ValueError as exc:
            raise TargetUnavailableError(str(exc)) from None
    return dataclasses.replace(target, tracker=tracker or target.tracker,
                               rpc_key=key or target.rpc_key)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types targets raise for bad input (an option, a model a target
    cannot take, an unreachable device): a front end reports them as one error line.
    Each target family's own types are found here, so the CLI need not import them."""
    from .fpga_sim.options import FpgaSimError
    from .tvm.lowering import LoweringError

    return (UnknownTargetError, TargetUnavailableError, TuningUnsupportedError, LoweringError,
            FpgaSimError)

"""The ``host`` target: this machine's own CPU, detected (never LLVM's generic CPU)."""
from __future__ import annotations

from .base import register_target
from .tvm_target import TvmTarget


def host_target_dict() -> dict:
    from .tvm.build import host_target

    return host_target()


register_target("host", lambda: TvmTarget(
    name="host", description="this machine's CPU (LLVM, detected -mcpu)",
    tvm_target=host_target_dict, runs_locally=True, weights_as_params=True))

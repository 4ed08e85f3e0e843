"""The ``cortex-a72`` target: aarch64 Cortex-A72 (Raspberry Pi 4 class), NEON, 4 cores.

Code is cross-compiled on the host and linked with ``aarch64-linux-gnu-g++``; it runs
only on a board reached over TVM RPC: a real one (``target.with_remote("pi:9190",
"rpi4")``, ``--tracker``/``--key`` or ``COMPILER_TRACKER``/``COMPILER_RPC_KEY``) or, by
default, the project's emulated board (`targets.board`), whose timings are EMULATED.
"""
from __future__ import annotations

from .base import register_target
from .tvm_target import TvmTarget

CORTEX_A72 = {
    "kind": "llvm",
    "mtriple": "aarch64-linux-gnu",
    "mcpu": "cortex-a72",
    "mattr": ["+neon"],
    "num-cores": 4,
}

register_target("cortex-a72", lambda: TvmTarget(
    name="cortex-a72", description="Arm Cortex-A72 (aarch64, NEON, 4 cores), via TVM RPC",
    tvm_target=lambda: dict(CORTEX_A72), runs_locally=False,
    cross_compiler="aarch64-linux-gnu-g++", board_key="cortex-a72", weights_as_params=True,
    capabilities=frozenset({"rpc", "neon"})))

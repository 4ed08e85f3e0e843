"""Entry point of the emulated board's RPC server; runs under the *aarch64* python.

TVM's RPC server starts its worker with ``sys.executable``.  Under qemu user-mode
emulation that is an aarch64 ELF the host kernel cannot exec (binfmt_misc is not
mounted), so ``sys.executable`` is pointed at the launcher script that execs qemu with
the aarch64 python (``COMPILER_BOARD_LAUNCHER``) before the server starts.  Usage::

    qemu-aarch64-static -L / -cpu cortex-a72 .../python3.11 server_main.py [rpc_server args]

Imports nothing from the project (the board has only the TVM runtime).
"""
import os
import runpy
import sys

if __name__ == "__main__":
    launcher = os.environ.get("COMPILER_BOARD_LAUNCHER")
    if launcher:
        sys.executable = launcher
    sys.argv = ["tvm.exec.rpc_server"] + sys.argv[1:]
    runpy.run_module("tvm.exec.rpc_server", run_name="__main__", alter_sys=True)

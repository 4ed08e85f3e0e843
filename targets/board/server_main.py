"""Entry point of the emulated board's RPC server; runs under the *aarch64* python.

TVM's RPC server starts its worker with ``sys.executable``.  Under qemu user-mode
emulation that is an aarch64 ELF the host kernel cannot exec (binfmt_misc is not
mounted), so ``sys.executable`` is pointed at the launcher script that execs qemu with
the aarch64 python (``COMPILER_BOARD_LAUNCHER``) before the server starts.  Usage::

    qemu-aarch64-static -L / -cpu cortex-a72 .../python3.11 server_main.py [rpc_server args]

The server also provides ``compiler.board.vm_profile`` (per-kernel times measured on the
board, ``targets/tvm/vm_profile.py``): TVM 0.27's VM has no profiler and RPC cannot pass
our timing callback to the board, so the timing code has to live here.  It is registered
through ``server_init_callback`` in the RPC server's worker process.  The same file works
on a real board with the TVM runtime (copy ``targets/board/server_main.py`` and
``targets/tvm/vm_profile.py`` keeping that layout).  Imports nothing else from the project.
"""
import os
import runpy
import sys

_PROFILER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "tvm", "vm_profile.py")


def _register_profiler(path=_PROFILER):
    """Runs in the server's worker (sent there by cloudpickle, by value)."""
    import importlib.util
    import json

    import tvm
    import tvm_ffi
    from tvm.runtime.vm import VirtualMachine

    spec = importlib.util.spec_from_file_location("_compiler_vm_profile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    @tvm_ffi.register_global_func("compiler.board.vm_profile", override=True)
    def vm_profile(lib, func, repeat, *inputs):
        vm = VirtualMachine(lib, tvm.cpu())
        return json.dumps(module.profile_rows(vm, str(func), list(inputs), int(repeat)))


if __name__ == "__main__":
    launcher = os.environ.get("COMPILER_BOARD_LAUNCHER")
    if launcher:
        sys.executable = launcher
    if os.path.exists(_PROFILER):
        import tvm.rpc

        _Server = tvm.rpc.Server

        class _ProfilingServer(_Server):
            def __init__(self, *args, **kwargs):
                kwargs.setdefault("server_init_callback", _register_profiler)
                super().__init__(*args, **kwargs)

        tvm.rpc.Server = _ProfilingServer  # what tvm.exec.rpc_server calls below
    sys.argv = ["tvm.exec.rpc_server"] + sys.argv[1:]
    runpy.run_module("tvm.exec.rpc_server", run_name="__main__", alter_sys=True)

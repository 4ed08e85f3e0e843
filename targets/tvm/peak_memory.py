"""Peak memory of a built library, measured in a fresh process.

Why a fresh process: the resident-set high-water mark (``VmHWM``) only grows, so a
number taken in a process that has already compiled a model (or imported TVM's
compiler, 392 MiB) says nothing about deployment.  The child imports only TVM's
runtime (``TVM_USE_RUNTIME_LIB=1``), loads the library, and reports RSS after import,
after load and the high-water mark after three runs; the run's memory is the peak
minus the RSS after load (``shared/notes/memory.md`` 2.4).  Outputs are kept inside
the runtime (not copied into numpy), so the copy does not count.

The high-water mark is reset after loading (``/proc/self/clear_refs``): loading a
library deserializes its weights through a temporary copy, and that transient (26 MiB
above the settled RSS for MobileNetV2) was the whole "run" peak before, hiding every
change to the run's own memory.  ``load_peak`` keeps it for the record.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["PeakMemory", "measure_peak_memory", "measure_peak_memory_onnxruntime"]

# What both children share: reading the kernel's RSS figures, resetting the peak.
_PROBE = r"""
import json, os, sys
import numpy as np

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(key)

def reset_peak():
    # Loading deserializes the weights through a temporary copy: that transient sets the
    # high-water mark before the first run.  Reset the mark (Linux: clear_refs "5") so
    # the peak after it is the run's own; where that is not allowed the load's peak
    # stays in (False).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
"""

_CHILD = _PROBE + r"""
lib_path, inputs_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = np.load(inputs_path)
arrays = [data[f"arg{i}"] for i in range(len(data.files))]
import tvm
from tvm import runtime
after_import = status("VmRSS")
lib = runtime.load_module(lib_path)
vm = lib["vm_load_executable"]()
alloc = 2  # pooled allocator
vm["vm_initialization"](1, 0, alloc, 1, 0, alloc)  # kDLCPU 0, and the host device
dev = tvm.cpu(0)
args = [runtime.tensor(a, dev) for a in arrays]
main = vm["main"]
load_peak = status("VmHWM")
reset = reset_peak()
after_load = status("VmRSS")
kept = None
for _ in range(runs):
    kept = None  # free the previous outputs first: a run's peak, not two runs' outputs
    kept = main(*args)
print(json.dumps({"after_import": after_import, "after_load": after_load,
                  "peak": status("VmHWM"), "load_peak": load_peak, "reset": reset}))
"""


@dataclass
class PeakMemory:
    """Bytes: RSS after importing the runtime, after loading the model, and the peak."""

    after_import: int
    after_load: int
    peak: int
    load_peak: int = 0  # the high-water mark while loading (a transient weights copy)
    reset: bool = True  # False: the high-water mark could not be reset after loading,
    # so ``peak`` may be the load's transient rather than the run's

    @property
    def run_bytes(self) -> int:
        """What running the model added: peak - RSS after load."""
        return self.peak - self.after_load

    @property
    def above_import(self) -> int:
        """Peak - RSS after importing the runtime (the model's weights included)."""
        return self.peak - self.after_import

    def __str__(self) -> str:
        mib = 2 ** 20
        return (f"peak {self.peak / mib:.1f} MiB RSS: {self.above_import / mib:.2f} MiB above the "
                f"runtime import, {self.run_bytes / mib:.2f} MiB while running")


def measure_peak_memory(library: "str | os.PathLike", inputs: Sequence[np.ndarray], *,
                        runs: int = 3, timeout: float = 600.0) -> PeakMemory:
    """Run ``library`` (a host library written by ``export_library``) in a fresh
    process, one thread, and return its `PeakMemory`."""
    library = Path(library)
    if not library.is_file():
        raise FileNotFoundError(f"no library at {library}")
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1", OMP_NUM_THREADS="1", TVM_NUM_THREADS="1")
    return _run_child(_CHILD, library, inputs, [str(runs)], env, timeout,
                      f"peak-memory run of {library}")


def _run_child(script: str, subject: Path, inputs: Sequence[np.ndarray], args: list[str],
               env: dict, timeout: float, what: str) -> PeakMemory:
    """Run a child script on ``subject`` with ``inputs`` (as ``arg{i}`` of an .npz) and
    read the `PeakMemory` it prints last."""
    with tempfile.TemporaryDirectory(prefix="peakmem-") as tmp:
        npz = Path(tmp) / "inputs.npz"
        np.savez(npz, **{f"arg{i}": np.asarray(x) for i, x in enumerate(inputs)})
        proc = subprocess.run([sys.executable, "-c", script, str(subject), str(npz), *args],
                              capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        err = proc.stderr.strip()
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): "
                           f"{err.splitlines()[-1] if err else ''}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    return PeakMemory(r["after_import"], r["after_load"], r["peak"], r["load_peak"], r["reset"])


_ORT_CHILD = _PROBE + r"""
model, inputs_path, runs, mem_pattern = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
data = np.load(inputs_path)
import onnxruntime as ort
after_import = status("VmRSS")
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
opts.enable_mem_pattern = mem_pattern
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
binding = sess.io_binding()
for i, inp in enumerate(sess.get_inputs()):
    binding.bind_cpu_input(inp.name, data[f"arg{i}"])
for out in sess.get_outputs():
    binding.bind_output(out.name)  # kept in onnxruntime's allocator: no numpy copy
load_peak = status("VmHWM")
reset = reset_peak()
after_load = status("VmRSS")
for _ in range(runs):
    sess.run_with_iobinding(binding)
print(json.dumps({"after_import": after_import, "after_load": after_load,
                  "peak": status("VmHWM"), "load_peak": load_peak, "reset": reset}))
"""


def measure_peak_memory_onnxruntime(model: "str | os.PathLike", inputs: Sequence[np.ndarray], *,
                                    runs: int = 3, mem_pattern: bool = True,
                                    timeout: float = 600.0) -> PeakMemory:
    """The same measurement for onnxruntime (CPU, one thread, outputs bound to its own
    allocator), so ``run_bytes`` compares with `measure_peak_memory`'s."""
    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"no ONNX model at {model}")
    return _run_child(_ORT_CHILD, model, inputs, [str(runs), "1" if mem_pattern else "0"],
                      dict(os.environ, OMP_NUM_THREADS="1"), timeout,
                      f"onnxruntime peak-memory run of {model}")

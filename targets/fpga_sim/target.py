"""The ``fpga-sim`` target: a simulated FINN-style dataflow accelerator, reached over TVM RPC.

``build(graph)`` does three things, in an order that makes every bad input fail before
anything is written or lowered:

1. the design: the integer graph is mapped to hardware stages, folded and estimated
   (`design.build_design`: raises `FpgaSimError` for a float graph, an op with no
   hardware stage, a folding that breaks FINN's divisibility rules, a design that fits
   no folding, an unknown part);
2. the functional model: the same integer graph lowered by TVM for the simulator's host
   (`targets.tvm_target.TvmTarget`'s host build: "TVM lowers for the FPGA"), whose
   outputs are bit-identical to the interpreter's (the requantize it runs equals the
   hardware's thresholds, `thresholds.py`);
3. nothing else: `run`/`measure` open a session at a tracker under the key ``fpga-sim``
   (`server.py`; the embedded default is started on demand), upload the library, run
   it there and ask the simulator for the design's time.  Every time is SIMULATED
   (cycles / fclk from FINN's model), never a hardware measurement.

`export` writes the library and, beside it, ``<stem>.fpga.json`` (the design with the
folding chosen and the options); `load` reads both back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.ir import Graph

from ..base import Target, TargetUnavailableError, Timing, register_target, remote_copy
from .options import FpgaOptions, FpgaSimError

__all__ = ["FpgaSimTarget", "FpgaBuilt", "design_file"]

SIM_KEY = "fpga-sim"  # = server.SIM_KEY (not imported: keep TVM out of target selection)


def design_file(library: Path) -> Path:
    """The design JSON saved beside an exported library (``model.so`` -> ``model.fpga.json``)."""
    library = Path(library)
    return library.with_name(library.stem + ".fpga.json")


@dataclass
class FpgaBuilt:
    """What `FpgaSimTarget.build` returns: the functional model and the design.

    ``functional`` is a TVM executable (after build) or a library path (after load);
    ``design`` is ``Design.to_dict()`` (what the simulator times and the report shows);
    ``table`` the design's per-layer table."""

    functional: Any
    design: dict
    table: str = ""


@dataclass
class FpgaSimTarget(Target):
    """Simulated FPGA; ``options`` fix the part, clock and folding (see `FpgaOptions`)."""

    options: FpgaOptions = field(default_factory=FpgaOptions)
    tracker: str | None = None   # "HOST:PORT"; None: $COMPILER_FPGA_TRACKER, else embedded
    rpc_key: str | None = None   # default "fpga-sim"
    runs_locally: bool = True    # the library is loadable here; execution still goes via RPC

    # -- configuration ------------------------------------------------------------
    def configure(self, **options: Any) -> "FpgaSimTarget":
        """A new target with ``options`` (Python values or CLI strings) over the current
        ones; raises `FpgaSimError` naming a bad or unknown option."""
        tracker = options.pop("tracker", self.tracker)
        key = options.pop("key", self.rpc_key)
        new = dataclasses.replace(self, options=FpgaOptions.from_mapping(options, base=self.options))
        return new.with_remote(tracker, key) if (tracker, key) != (self.tracker, self.rpc_key) \
            else new

    def with_remote(self, tracker: str | None = None, key: str | None = None) -> "FpgaSimTarget":
        """A copy that reaches the simulator through the tracker ``HOST:PORT`` under ``key``."""
        return remote_copy(self, tracker, key)

    def remote(self):
        """The `RemoteSpec` of the simulator (starting the embedded one if none is named)."""
        from ..tvm.rpc import RemoteSpec, parse_tracker

        tracker = self.tracker or os.environ.get("COMPILER_FPGA_TRACKER")
        if tracker:
            try:
                host, port = parse_tracker(tracker)
            except ValueError as exc:
                raise TargetUnavailableError(str(exc)) from None
            return RemoteSpec(host, port, self.rpc_key or SIM_KEY, connect_timeout=3.0,
                              request_timeout=30.0, session_timeout=300.0, retries=1)
        if self.rpc_key:
            raise TargetUnavailableError(f"an RPC key ('{self.rpc_key}') was given without a "
                                         "tracker (--tracker HOST:PORT or COMPILER_FPGA_TRACKER)")
        from .server import ensure_running

        return ensure_running()

    # -- build ----------------------------------------------------------------------
    def design(self, graph: Graph):
        """The `Design` of ``graph`` under this target's options (no TVM, no files)."""
        from .design import build_design

        return build_design(graph, self.options)

    def _functional_target(self):
        from ..host import host_target_dict
        from ..tvm_target import TvmTarget

        return TvmTarget(name="fpga-sim (functional model, host)", tvm_target=host_target_dict,
                         runs_locally=True, layout="nchw")

    def build(self, graph: Graph) -> FpgaBuilt:
        design = self.design(graph)  # every FpgaSimError is raised here, before lowering
        functional = self._functional_target().build(graph)
        return FpgaBuilt(functional, json.loads(json.dumps(design.to_dict(), default=_plain)),
                         design.table())

    # -- files ----------------------------------------------------------------------
    def export(self, built: FpgaBuilt, path: Path) -> None:
        from ..tvm.build import export_library

        path = Path(path)
        if isinstance(built.functional, (str, os.PathLike)):
            import shutil

            shutil.copyfile(built.functional, path)
        else:
            export_library(built.functional, str(path))
        design_file(path).write_text(json.dumps({"design": built.design, "table": built.table},
                                                indent=2))

    def load(self, path: Path) -> FpgaBuilt:
        path = Path(path)
        meta = design_file(path)
        if not meta.exists():
            raise FpgaSimError(f"{path.parent}: {meta.name} (the fpga-sim design saved with "
                               f"the library) is missing")
        try:
            saved = json.loads(meta.read_text())
            design, table = saved["design"], saved.get("table", "")
        except (ValueError, KeyError) as exc:
            raise FpgaSimError(f"{meta}: corrupt fpga-sim design ({exc})") from None
        return FpgaBuilt(path, design, table)

    # -- execution over RPC -----------------------------------------------------------
    def _session_job(self, built: FpgaBuilt, inputs: list[np.ndarray] | None, batch: int,
                     repeat: int):
        """(outputs or None, [simulator replies]) from one session at the simulator."""
        from ..tvm.build import to_tensors, to_numpy
        from ..tvm.rpc import library_file, remote_vm, with_session

        spec = self.remote()
        design_json = json.dumps(built.design)
        with tempfile.TemporaryDirectory(prefix="fpga-sim-") as tmp:
            lib = library_file(built.functional, None, tmp)

            def job(session):
                try:
                    simulate = session.get_function("fpga_sim.simulate")
                except Exception:  # noqa: BLE001  (a plain TVM server: no simulator there)
                    return None
                outputs = None
                if inputs is not None:
                    vm, dev = remote_vm(session, lib)
                    outputs = to_numpy(vm["main"](*to_tensors(inputs, dev)))
                replies = [json.loads(simulate(design_json, batch)) for _ in range(repeat)]
                return outputs, replies

            result = with_session(spec, job, what="run the model on the FPGA simulator")
        if result is None:
            raise TargetUnavailableError(
                f"the RPC server under key '{spec.key}' at tracker {spec.tracker} is not an "
                "fpga-sim simulator (no fpga_sim.simulate): start one with "
                "`python -m targets.fpga_sim.server --tracker HOST:PORT`")
        return spec, result

    def run(self, built: FpgaBuilt, inputs: list[np.ndarray]) -> list[np.ndarray]:
        _, (outputs, _replies) = self._session_job(built, inputs, 1, 1)
        return outputs

    def measure(self, built: FpgaBuilt, inputs: list[np.ndarray], *, repeat: int = 10,
                number: int = 1) -> Timing:
        """SIMULATED seconds per frame: ``number`` frames back to back (FINN's
        ``L + (number-1)*II``, divided by ``number``), ``repeat`` simulator replies; the
        functional model runs once in the same session (its outputs are not timed)."""
        spec, (_, replies) = self._session_job(built, inputs, int(number), int(repeat))
        d = built.design
        samples = [r["seconds"] / r["batch"] for r in replies]
        device = (f"fpga-sim {d.get('part')} @ {d.get('fclk_mhz'):g} MHz, II "
                  f"{d.get('ii_cycles')} cycles, via RPC tracker {spec.tracker} key '{spec.key}'")
        return Timing(samples, device=device, number=number, simulated=True)

    # -- report -------------------------------------------------------------------------
    def report_extra(self, built: Any, graph: Graph | None = None) -> dict | None:
        """The design section of `CompiledModel.report()`: ``{"title", "text", "data"}``.
        Without a build (``compiler report MODEL.onnx --target fpga-sim``) the design is
        computed from ``graph``."""
        if isinstance(built, FpgaBuilt):
            design, table = built.design, built.table
        elif graph is not None:
            d = self.design(graph)
            design, table = json.loads(json.dumps(d.to_dict(), default=_plain)), d.table()
        else:
            return None
        return {"title": "FPGA design (fpga-sim, SIMULATED estimates, FINN models)",
                "text": table, "data": design}


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


register_target(SIM_KEY, lambda: FpgaSimTarget(
    name=SIM_KEY, description="simulated FPGA dataflow accelerator (FINN models), via TVM RPC; "
    "timings SIMULATED", default_passes=("cleanup", "fold-bn"),
    capabilities=frozenset({"rpc", "simulated"})))

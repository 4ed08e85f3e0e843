"""`TvmTarget`: a target whose code comes from Apache TVM (host CPU, Cortex-A72, ...).

It is a TVM target dict plus defaults; the work is done in ``targets/tvm/`` (lowering
to Relax, building, exporting, timing), imported lazily so that choosing a target
costs nothing until a build happens.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compiler.ir import Graph

from .base import Target, TargetUnavailableError, Timing, TuningUnsupportedError, remote_copy


class TuneOptionError(TuningUnsupportedError):
    """A bad ``tune`` option (negative trials, an unknown key): a user error, reported by
    front ends as one line like the other `targets.user_error_types`."""


class WeightsMismatchError(ValueError):
    """Weights derived from a saved graph that differ from those the library was built
    with (`TvmTarget.bind_weights`)."""


@dataclass
class TvmTarget(Target):
    """``tvm_target`` returns the TVM target dict (a callable: host detection is lazy)."""

    tvm_target: Callable[[], dict[str, Any]] = field(default=lambda: {"kind": "llvm"})
    runs_locally: bool = True
    cross_compiler: str | None = None  # e.g. "aarch64-linux-gnu-g++"
    # A board reached through a TVM RPC tracker (targets that do not run locally):
    # "HOST:PORT" and key; None means COMPILER_TRACKER / COMPILER_RPC_KEY, else the
    # project's embedded emulated board (started on demand, EMULATED timings).
    tracker: str | None = None
    rpc_key: str | None = None
    board_key: str | None = None  # the key the embedded emulated board serves
    # Convolution layout: "nchw" (TVM's default kernels), "nchwc" (packed activations,
    # weights packed at build time, int8 convs shaped for dot-product instructions; see
    # targets/tvm/layout.py) or "auto": nchwc when tuning on a target with our schedule
    # templates (targets/tvm/schedules.py: conv 64->64 fp32 at 1.10 ms vs 1.33 ms for
    # MetaSchedule's best NCHW schedule) or tuning an integer (quantized) graph, whose
    # convs then use dot products; nchw otherwise (measured without templates: at 64
    # trials a tuned fp32 conv was 3.5x faster in nchw than in nchwc, benchmarks/README.md).
    layout: str = "auto"
    # Who places the intermediate tensors: "tvm" (TVM 0.27's StaticPlanBlockMemory, one
    # storage per reusable token) or "arena" (one arena per function, offsets from
    # compiler.memory_plan; targets/tvm/arena.py), untuned and tuned builds alike.
    memory: str = "tvm"
    # Weights as parameters of the built module (`build.WeightsBuilt`: the library is
    # code only, `load` derives the weights from the saved graph) or embedded in it as
    # constants (the fpga-sim functional model, whose library is not the deployment).
    weights_as_params: bool = False

    def target_dict(self) -> dict[str, Any]:
        return self.tvm_target()

    def with_remote(self, tracker: str | None = None, key: str | None = None) -> "TvmTarget":
        """A copy that runs through the tracker ``HOST:PORT`` under ``key``."""
        return remote_copy(self, tracker, key)

    def remote(self):
        """The `RemoteSpec` this target runs on (starting the embedded board if that
        is the one).  Raises `TargetUnavailableError` when none can be reached."""
        tracker = self.tracker or os.environ.get("COMPILER_TRACKER")
        key = self.rpc_key or os.environ.get("COMPILER_RPC_KEY")
        from .tvm.rpc import RemoteSpec, parse_tracker

        if tracker:
            try:
                host, port = parse_tracker(tracker)
            except ValueError as exc:
                raise TargetUnavailableError(str(exc)) from None
            from .board import busy_wait_seconds

            return RemoteSpec(host, port, key or self.board_key or self.name,
                              request_timeout=busy_wait_seconds())
        if key:
            raise TargetUnavailableError(f"an RPC key ('{key}') was given without a tracker "
                                         "(--tracker HOST:PORT or COMPILER_TRACKER)")
        from . import board

        return board.ensure_running()

    def with_layout(self, layout: str) -> "TvmTarget":
        """A copy whose convolutions use ``layout`` (``nchw``, ``nchwc`` or ``auto``)."""
        from .tvm.layout import check_layout

        return dataclasses.replace(self, layout=check_layout(layout))

    def with_memory(self, memory: str) -> "TvmTarget":
        """A copy whose intermediate tensors are placed by ``memory`` (``tvm`` or ``arena``)."""
        if memory not in ("tvm", "arena"):
            raise ValueError(f"memory planner must be 'tvm' or 'arena', not '{memory}'")
        return dataclasses.replace(self, memory=memory)

    def _layout(self, tuned: bool, graph: Graph) -> str:
        if self.layout != "auto":
            return self.layout
        if not tuned:
            return "nchw"
        from .tvm.schedules import dot_product

        integer = any(node.domain == "q" for node in graph.nodes)
        return "nchwc" if integer or dot_product(self.target_dict()) == "vnni" else "nchw"

    def _fused(self, tuned: bool) -> bool:
        """Whether the build goes through TVM's operator fusion (`build.fused_pipeline`):
        every build but the untuned arena one (whose planner runs unfused kernels in
        place).  The lowering then emits ``q.Requantize`` whole, for the conv's kernel,
        instead of in the memory-capping channel groups of the unfused build."""
        return tuned or self.memory != "arena"

    def lower(self, graph: Graph, tuned: bool = False) -> Any:
        """``graph`` as the Relax module this target builds from (before layouts); with
        ``tuned``, as the tuned build lowers it."""
        return self._lower(graph, self.target_dict(), self._fused(tuned))

    @staticmethod
    def _lower(graph: Graph, target: Any, fused: bool) -> Any:
        from .tvm.lowering import lower_graph
        from .tvm.schedules import int8_conv_data

        return lower_graph(graph, int8_conv_data=int8_conv_data(target), fused=fused)

    def _prepare(self, graph: Graph, tuned: bool, recipe: dict | None = None
                 ) -> tuple[Any, list[np.ndarray], dict]:
        """The module to build and, with ``weights_as_params``, its weight arrays and
        the recipe that derived them: lowering, conv layout, (tuned builds) constant
        folding, then `build.lift_constants`.  With a ``recipe`` (from meta.json) the same
        derivation is replayed on a loaded graph, with the recorded target and layout.

        Why a replay rather than storing the derived arrays: what a device receives is
        then the library (code) plus the graph's own constants, which ``weights.bin``
        stores compressed; the derived arrays (packed, padded, transposed) exist only in
        memory.  The recipe's ``sha256`` makes a replay that would differ from the build
        (another compiler version) an error instead of wrong outputs."""
        from .tvm.build import fold_constants, lift_constants, params_digest
        from .tvm.layout import apply_layout

        if recipe is None:
            target = self.target_dict()
            layout_target = target if tuned else None
            layout = self._layout(tuned, graph)
            fold, fused = tuned, self._fused(tuned)
        else:
            target, layout_target = recipe["target"], recipe.get("layout_target")
            layout, fold = recipe["layout"], bool(recipe.get("folded"))
            fused = bool(recipe.get("fused"))  # (absent: written before it existed, unfused)
        mod = self._lower(graph, target, fused)
        if recipe is None:
            mod, layout = apply_layout(mod, layout, layout_target)
        else:
            from .tvm.layout import pack_convolutions

            mod = pack_convolutions(mod, layout, layout_target)
        if not self.weights_as_params and recipe is None:
            return mod, [], {"layout": layout}
        if fold:
            mod = fold_constants(mod)
        mod, arrays = lift_constants(mod)
        made = {"target": target, "layout_target": layout_target, "layout": layout,
                "folded": fold, "fused": fused, "count": len(arrays),
                "bytes": int(sum(a.nbytes for a in arrays)), "sha256": params_digest(arrays)}
        return mod, arrays, made

    def build(self, graph: Graph) -> Any:
        from .tvm.build import WeightsBuilt, build

        pipeline: Any = None  # build.fused_pipeline
        if self.memory == "arena":
            from .tvm.arena import arena_pipeline

            pipeline = arena_pipeline()
        mod, arrays, recipe = self._prepare(graph, False)
        executable = build(mod, self.target_dict(), pipeline=pipeline)
        return WeightsBuilt(executable, arrays, recipe) if self.weights_as_params else executable

    def weights_recipe(self, built: Any) -> dict | None:
        """How the weights of ``built`` are derived (for meta.json), None when the
        library embeds them."""
        from .tvm.build import WeightsBuilt

        return built.recipe if isinstance(built, WeightsBuilt) else None

    def bind_weights(self, built: Any, graph: Graph, recipe: dict) -> Any:
        """A loaded library (or, for a board, its path) with the weights of ``graph``
        derived by ``recipe`` (`_prepare`); `WeightsMismatchError` when they differ
        from the build's."""
        from .tvm.build import WeightsBuilt

        _, arrays, made = self._prepare(graph, False, recipe)
        if made["sha256"] != recipe.get("sha256") or made["count"] != recipe.get("count"):
            raise WeightsMismatchError(
                f"the weights derived from the saved graph ({made['count']} arrays, sha256 "
                f"{made['sha256'][:12]}) are not those the library was built with "
                f"({recipe.get('count')} arrays, sha256 {str(recipe.get('sha256'))[:12]}): "
                "the directory was written by another compiler version or edited")
        return WeightsBuilt(built, arrays, made)

    def tune_options(self, tune: Any) -> Any:
        """``tune`` as a `targets.tvm.tuning.TuneOptions` (clear error on a bad option)."""
        from .tvm.tuning import TuneOptions

        try:
            return TuneOptions.from_any(tune)
        except (ValueError, TypeError) as exc:
            raise TuneOptionError(str(exc)) from None

    def build_tuned(self, graph: Graph, tune: Any) -> tuple[Any, dict]:
        """Build with MetaSchedule tuning (``tune``: ``{"trials": N, "database": path}``);
        returns ``(built, tuning stats)``.  Measures locally, or on the board."""
        from .tvm.build import WeightsBuilt
        from .tvm.tuning import tune_and_build

        opts = self.tune_options(tune)  # validate before any work
        remote = None if self.runs_locally else self.remote()
        mod, arrays, recipe = self._prepare(graph, True)
        built, stats = tune_and_build(mod, self.target_dict(), opts, remote=remote,
                                      cross_compiler=self.cross_compiler, memory=self.memory)
        stats["layout"] = recipe["layout"]
        if self.weights_as_params:
            built = WeightsBuilt(built, arrays, recipe)
        return built, stats

    def _require_local(self, what: str) -> None:
        if not self.runs_locally:
            raise TargetUnavailableError(
                f"target '{self.name}' code cannot {what} on this machine: it needs a "
                f"{self.name} device reached through a TVM RPC tracker")

    def run(self, built: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The outputs; a failed run-time check of the built code (integer division by
        zero, `targets.tvm.checks`) is the `OpValidationError` the interpreter raises."""
        from .tvm.checks import mapped_check_failures

        with mapped_check_failures():
            if not self.runs_locally:
                from .tvm.rpc import run_remote

                return run_remote(self.remote(), built, inputs,
                                  cross_compiler=self.cross_compiler)
            from .tvm.build import run

            return run(built, inputs)

    def export(self, built: Any, path: Path) -> None:
        from .tvm.build import export_library

        # (-s: no symbol table or debug info, a third of a small model's library; TVM
        # finds its functions through the dynamic symbols, which stay)
        export_library(built, str(path), cross_compiler=self.cross_compiler, options=["-s"])

    def load(self, path: Path) -> Any:
        self._require_local("be loaded")
        from .tvm.build import load_library

        return load_library(str(path))

    def profile(self, built: Any, inputs: list[np.ndarray], *, repeat: int = 10) -> list[dict]:
        if not self.runs_locally:
            from .tvm.rpc import profile_remote

            return profile_remote(self.remote(), built, inputs, repeat=repeat,
                                  cross_compiler=self.cross_compiler)
        from .tvm.build import profile_local

        return profile_local(built, inputs, repeat=repeat)

    def memory_stats(self, built: Any, graph: Graph, *, measure: bool = True,
                     runs: int = 3, library: Path | None = None) -> dict:
        """Planned bytes of ``graph``'s untuned lowering by TVM's planner and by our arena
        (`targets.tvm.arena.planned_memory`), and, when ``measure``, the peak RSS of a
        fresh process running ``built`` (`targets.tvm.peak_memory`; local targets).
        ``library``: the exported file of ``built`` when there is one (a loaded model's
        library cannot be exported again: TVM has no SaveToBytes for it)."""
        import tempfile

        from compiler.interpreter import random_inputs

        from .tvm.arena import planned_memory

        out: dict[str, Any] = planned_memory(self.lower(graph), self.target_dict())
        out["measured"], out["measured_note"] = None, ""
        if not measure:
            out["measured_note"] = "not measured"
        elif not self.runs_locally:
            out["measured_note"] = (f"peak memory is measured on this host only; '{self.name}' "
                                    "code runs on a board")
        else:
            from .tvm.build import split_built
            from .tvm.peak_memory import measure_peak_memory

            inputs = random_inputs(graph)
            with tempfile.TemporaryDirectory(prefix="memory-") as tmp:
                lib = Path(library) if library is not None else Path(tmp) / "model.so"
                if library is None:
                    self.export(built, lib)
                _, params = split_built(built)  # weights as parameters: passed like inputs
                peak = measure_peak_memory(lib, [inputs[v.name] for v in graph.inputs] + params,
                                           runs=runs)
            out["measured"] = {"after_import": peak.after_import, "after_load": peak.after_load,
                               "peak": peak.peak, "run_bytes": peak.run_bytes,
                               "load_peak": peak.load_peak, "reset": peak.reset, "runs": runs}
        return out

    def measure(self, built: Any, inputs: list[np.ndarray], *, repeat: int = 10,
                number: int = 1) -> Timing:
        if not self.runs_locally:
            from .tvm.rpc import time_remote

            spec = self.remote()
            samples = time_remote(spec, built, inputs, repeat=repeat, number=number,
                                  cross_compiler=self.cross_compiler)
            device = (f"{self.name} EMULATED under qemu-aarch64 on this x86 host via RPC "
                      f"{spec.tracker}" if spec.emulated else
                      f"{self.name} via RPC tracker {spec.tracker} key '{spec.key}'")
            return Timing(samples, device=device, emulated=spec.emulated, number=number)
        from .tvm.build import time_local

        samples = time_local(built, inputs, repeat=repeat, number=number)
        return Timing(samples, device=f"{self.name} (local CPU)", number=number)

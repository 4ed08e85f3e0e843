"""ONNX node conformance cases through import -> interpreter and import -> TVM.

For every op with a TVM lowering, ONNX's own single-node test cases
(``tests/onnx_cases.py``) are imported with `compiler.onnx_io.import_model`, run in the
reference interpreter, and lowered with `targets.tvm.lowering.lower_graph`, compiled
for the host and run; every output of both backends must match the case's expected
output within the case's rtol/atol (and have the same dtype and shape).  The summary
printed at the end of the session gives, per op, the cases run and passed by each.

* Operands that this compiler requires to be compile-time constants (Reshape's shape,
  Slice's starts..., Resize's scales/sizes, Pad's pads, Split's split, axes inputs...)
  are graph inputs in many ONNX cases; they are turned into initializers holding the
  case's data before import (`STATIC_SLOTS`).  Data operands are never baked in.
* A case the importer refuses (an unsupported attribute, an op version or dtype we do
  not implement), or one the lowering reports as `UnsupportedOpError`, is *skipped*
  with its reason; anything else that goes wrong is a failure.
* Compiling costs ~0.05-1 s per case; to bound the run time at most `CAP` importable
  cases run per op, chosen deterministically (sorted by name, evenly spaced); the
  summary says how many were left out ("capped").  With CAP=40 no op is capped today
  and the whole file takes ~30 s on 2 cores.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from compiler.interpreter import Interpreter  # noqa: E402
from compiler.onnx_io import import_model  # noqa: E402
from compiler.ops.registry import UnsupportedOpError  # noqa: E402
from onnx_cases import Case, collect_cases  # noqa: E402
from targets.tvm.build import build, host_target, run  # noqa: E402
from targets.tvm.lowering import LOWERINGS, lower_graph  # noqa: E402

CAP = 40

# (op, input slot) the compiler needs as constants: graph inputs there become initializers.
STATIC_SLOTS: dict[str, set[int]] = {
    "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3},
    "Split": {1}, "Tile": {1}, "Expand": {1}, "Squeeze": {1}, "Unsqueeze": {1},
    "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1}, "ReduceMin": {1},
    "ReduceProd": {1}, "Dropout": {1, 2}, "Clip": {1, 2},
}

OPS = sorted(LOWERINGS)

# Cases whose stored expected output comes from ONNX's reference implementation where it
# disagrees with onnxruntime and with our documented semantics: compared against
# onnxruntime instead (still run, still must match).
ORT_INSTEAD: dict[str, str] = {
    "test_resize_downsample_scales_linear_align_corners":
        "align_corners with a fractional in*scale: the ONNX reference divides by "
        "in*scale-1, onnxruntime and compiler.ops by the integer output length-1",
    "test_resize_downsample_scales_cubic_align_corners":
        "align_corners with a fractional in*scale (as above)",
}


@dataclass
class OpResult:
    total: int = 0
    interp_ran: int = 0
    interp_passed: int = 0
    ran: int = 0
    passed: int = 0
    capped: int = 0
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> case names
    vs_ort: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)


_RESULTS: dict[str, OpResult] = {}
_CASES: dict[str, list[Case]] | None = None
_TARGET = None


def _cases() -> dict[str, list[Case]]:
    global _CASES
    if _CASES is None:
        _CASES = collect_cases(OPS)
    return _CASES


def _target():
    global _TARGET
    if _TARGET is None:
        _TARGET = host_target()
    return _TARGET


def _bake_static_operands(case: Case) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The case's model with compile-time operands as initializers, and the remaining feeds."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    feeds = dict(zip(case.input_names, case.inputs))
    node = model.graph.node[0]
    slots = STATIC_SLOTS.get(node.op_type, set())
    baked = {name for i, name in enumerate(node.input) if i in slots and name in feeds}
    if baked:
        keep = [vi for vi in model.graph.input if vi.name not in baked]
        for name in sorted(baked):
            model.graph.initializer.append(onnx.numpy_helper.from_array(
                np.asarray(feeds.pop(name)), name))
        del model.graph.input[:]
        model.graph.input.extend(keep)
    return model, feeds


def _reason(exc: BaseException, case: Case) -> str:
    """A short, case-independent reason, so that equal reasons group together."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for name in sorted({case.name.split("#")[0], case.model.graph.name}, key=len, reverse=True):
        if name:
            text = text.replace(f"{name}: ", "").replace(name, "<case>")
    text = re.sub(r" \(?node '[^']*'\)?", "", text)
    text = text.split("; supported ops:")[0].split("; ops that lower:")[0]
    text = text.split(", e.g. input_shapes")[0]
    return f"{type(exc).__name__}: {text[:140]}"


def _select(items: list, cap: int) -> list:
    if len(items) <= cap:
        return items
    picks = sorted({round(i * (len(items) - 1) / (cap - 1)) for i in range(cap)})
    return [items[i] for i in picks]


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _compare(case: Case, got: list[np.ndarray], expected: list[np.ndarray]) -> str | None:
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for i, (out, ref) in enumerate(zip(got, expected)):
        ref = np.asarray(ref)
        if out.dtype != ref.dtype:
            return f"output {i}: dtype {out.dtype}, expected {ref.dtype}"
        if out.shape != ref.shape:
            return f"output {i}: shape {out.shape}, expected {ref.shape}"
        try:
            np.testing.assert_allclose(out, ref, rtol=case.rtol, atol=case.atol)
        except AssertionError as exc:
            lines = [l for l in str(exc).splitlines() if "Max" in l or "Mismatched" in l]
            return f"output {i}: " + "; ".join(l.strip() for l in lines)
    return None


def run_op(op: str) -> OpResult:
    result = OpResult()
    cases = sorted(_cases().get(op, []), key=lambda c: c.name)
    result.total = len(cases)
    start = time.perf_counter()
    importable = []
    for case in cases:
        try:
            model, feeds = _bake_static_operands(case)
            graph = import_model(model)
        except Exception as exc:  # the importer's domain: refusal == skip
            result.skip("import rejected: " + _reason(exc, case), case.name)
            continue
        if not graph.nodes:
            result.skip("folded to a constant at import (nothing left for TVM)", case.name)
            continue
        importable.append((case, graph, feeds, model))
        result.interp_ran += 1
        expected = _ort(model, feeds) if case.name in ORT_INSTEAD else case.outputs
        try:
            problem = _compare(case, Interpreter(graph).run(feeds), expected)
        except Exception as exc:
            problem = f"interpreter failed: {_reason(exc, case)}"
        if problem:
            result.failures.append(f"{case.name}: interpreter: {problem}")
        else:
            result.interp_passed += 1
    chosen = _select(importable, CAP)
    result.capped = len(importable) - len(chosen)
    for case, graph, feeds, model in chosen:
        try:
            mod = lower_graph(graph)
        except UnsupportedOpError as exc:
            result.skip("lowering unsupported: " + _reason(exc, case), case.name)
            continue
        except Exception as exc:
            result.failures.append(f"{case.name}: lowering failed: {_reason(exc, case)}")
            continue
        result.ran += 1
        try:
            executable = build(mod, _target())
            got = run(executable, [feeds[v.name] for v in graph.inputs])
        except Exception as exc:
            result.failures.append(f"{case.name}: build/run failed: {_reason(exc, case)}")
            continue
        expected = case.outputs
        if case.name in ORT_INSTEAD:
            expected = _ort(model, feeds)
            result.vs_ort.append(case.name)
        problem = _compare(case, got, expected)
        if problem:
            result.failures.append(f"{case.name}: {problem}")
        else:
            result.passed += 1
    result.seconds = time.perf_counter() - start
    return result


class _SummaryPlugin:
    """Prints collected lines in pytest's terminal summary (shown also under -q and with
    output capture on).  Registered at run time: a conftest.py in tests/tvm would clash
    with tests/conftest.py, which other tests import as ``conftest``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("TVM backend report")
            for line in self.lines:
                terminalreporter.write_line(line)


def print_at_end(config, lines: list[str]) -> None:
    plugin = config.pluginmanager.get_plugin("tvm-summary")
    if plugin is None:
        plugin = _SummaryPlugin()
        config.pluginmanager.register(plugin, "tvm-summary")
    plugin.lines.extend(lines)


@pytest.fixture(scope="module")
def summary(request):
    yield _RESULTS
    lines = [f"TVM conformance (ONNX node cases; at most {CAP} importable cases per op, "
             "sorted by name and evenly spaced; compile-time operands baked as initializers)",
             f"{'op':<20}{'cases':>6}{'interp ran':>11}{'pass':>5}{'tvm ran':>8}{'pass':>5}"
             f"{'fail':>5}{'skip':>5}{'capped':>7}{'sec':>7}"]
    tot = OpResult()
    for op in sorted(_RESULTS):
        r = _RESULTS[op]
        nskip = sum(len(v) for v in r.skipped.values())
        lines.append(f"{op:<20}{r.total:>6}{r.interp_ran:>11}{r.interp_passed:>5}{r.ran:>8}"
                     f"{r.passed:>5}{len(r.failures):>5}{nskip:>5}{r.capped:>7}"
                     f"{r.seconds:>7.1f}")
        for reason, names in sorted(r.skipped.items()):
            shown = ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
            lines.append(f"    skip {len(names)}: {reason} [{shown}]")
        for name in r.vs_ort:
            lines.append(f"    vs onnxruntime (not the stored output): {name}: {ORT_INSTEAD[name]}")
        for failure in r.failures:
            lines.append(f"    FAIL {failure}")
        tot.total += r.total
        tot.interp_ran += r.interp_ran
        tot.interp_passed += r.interp_passed
        tot.ran += r.ran
        tot.passed += r.passed
        tot.capped += r.capped
        tot.seconds += r.seconds
        tot.failures += r.failures
        for reason, names in r.skipped.items():
            tot.skipped.setdefault(reason, []).extend(names)
    lines.append(f"{'TOTAL':<20}{tot.total:>6}{tot.interp_ran:>11}{tot.interp_passed:>5}"
                 f"{tot.ran:>8}{tot.passed:>5}{len(tot.failures):>5}"
                 f"{sum(len(v) for v in tot.skipped.values()):>5}{tot.capped:>7}"
                 f"{tot.seconds:>7.1f}")
    print_at_end(request.config, lines)


@pytest.mark.parametrize("op", OPS)
def test_conformance(op: str, summary) -> None:
    result = run_op(op)
    summary[op] = result
    if result.total == 0:
        pytest.skip(f"ONNX has no single-node conformance cases for {op}")
    assert not result.failures, f"{op}: {len(result.failures)} mismatches:\n" + \
        "\n".join(result.failures)
    if result.ran == 0:
        reasons = "; ".join(sorted(result.skipped))
        pytest.skip(f"{op}: no case ran ({reasons[:300]})")

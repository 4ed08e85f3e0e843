"""ONNX's node conformance cases, generated offline, as single-node test cases.

``collect_cases({"Conv", "Relu"})`` returns ``{"Conv": [Case, ...], "Relu": [...]}``
built from `onnx.backend.test.case.node.collect_testcases` (which runs ONNX's case
generators, ~4 s; the result is cached for the process).  Only cases whose model graph
has exactly one node are kept, and the ``*_expanded`` function-body variants are dropped
(some of them inline to a single node of another op, e.g. CastLike -> Cast).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["Case", "collect_cases", "model_opset"]


@dataclass
class Case:
    name: str
    op_type: str
    model: onnx.ModelProto
    inputs: list[np.ndarray]    # one array per graph input, in graph-input order
    outputs: list[np.ndarray]   # one array per graph output, in graph-output order
    rtol: float = 1e-3
    atol: float = 1e-7
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)

    @property
    def node(self) -> onnx.NodeProto:
        return self.model.graph.node[0]

    @property
    def opset(self) -> int:
        return model_opset(self.model, self.node.domain)


def model_opset(model: onnx.ModelProto, domain: str = "") -> int:
    """The model's opset version for ``domain`` ("" and "ai.onnx" are the same)."""
    def norm(d: str) -> str:
        return "" if d in ("", "ai.onnx") else d

    for entry in model.opset_import:
        if norm(entry.domain) == norm(domain):
            return int(entry.version)
    return int(onnx.defs.onnx_opset_version())


_ALL: list | None = None


def _all_testcases() -> list:
    global _ALL
    if _ALL is None:
        from onnx.backend.test.case.node import collect_testcases

        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            _ALL = list(collect_testcases())
    return _ALL


def _as_array(value):
    """ndarray for tensors (TensorProto data sets are converted); other values (the
    lists/None of sequence and optional cases) are returned unchanged."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (np.generic, int, float, bool)):
        return np.asarray(value)
    return value


def collect_cases(op_types: Iterable[str] | None = None) -> dict[str, list[Case]]:
    """Single-node conformance cases grouped by op type (all ops if ``op_types`` is None).

    A test case with several data sets yields one `Case` per data set (suffix ``#i``).
    """
    wanted = None if op_types is None else set(op_types)
    result: dict[str, list[Case]] = {}
    for tc in _all_testcases():
        if tc.kind != "node" or tc.model is None or "_expanded" in tc.name:
            continue  # _expanded: a function body inlined, not the op itself
        graph = tc.model.graph
        if len(graph.node) != 1:
            continue
        node = graph.node[0]
        if wanted is not None and node.op_type not in wanted:
            continue
        for i, (inputs, outputs) in enumerate(tc.data_sets):
            name = tc.name if len(tc.data_sets) == 1 else f"{tc.name}#{i}"
            result.setdefault(node.op_type, []).append(Case(
                name=name, op_type=node.op_type, model=tc.model,
                inputs=[_as_array(v) for v in inputs],
                outputs=[_as_array(v) for v in outputs],
                rtol=float(tc.rtol), atol=float(tc.atol),
                input_names=[v.name for v in graph.input],
                output_names=[v.name for v in graph.output]))
    return result

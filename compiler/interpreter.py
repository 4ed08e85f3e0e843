"""The numpy reference executor: every other backend is tested against it.

Written in torch.fx's Interpreter style: `run` walks the nodes in topological order
and calls `run_node`, which subclasses override to observe or change execution (the
calibration observer of the quantizer is such a subclass).  Each value is freed right
after its last use, so the interpreter also measures the peak of live activations.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .folding import evaluate_node
from .ir import Graph, Node, Value

__all__ = ["Interpreter", "InputError", "run", "random_inputs", "check_inputs"]


class InputError(ValueError):
    """Inputs given at run time do not match the graph's inputs (names, shapes, dtypes)."""


def check_inputs(graph: Graph, inputs: "Mapping[str, Any] | Sequence[Any] | np.ndarray"
                 ) -> dict[str, np.ndarray]:
    """Normalize run-time inputs to a name -> array dict, with clear errors on mismatch."""
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        missing = [v.name for v in graph.inputs if v.name not in inputs]
        extra = sorted(set(inputs) - {v.name for v in graph.inputs})
        if missing or extra:
            raise InputError(f"inputs do not match the model: missing {missing}, unexpected "
                             f"{extra}; expected {[v.name for v in graph.inputs]}")
        arrays = {v.name: inputs[v.name] for v in graph.inputs}
    else:
        inputs = list(inputs)
        if len(inputs) != len(graph.inputs):
            raise InputError(f"the model takes {len(graph.inputs)} input(s) "
                             f"{[v.name for v in graph.inputs]}, got {len(inputs)}")
        arrays = {v.name: a for v, a in zip(graph.inputs, inputs)}
    checked = {}
    for value in graph.inputs:
        array = np.asarray(arrays[value.name])
        if tuple(array.shape) != tuple(value.shape):
            raise InputError(f"input '{value.name}' has shape {tuple(array.shape)}, the model "
                             f"expects {tuple(value.shape)}")
        if array.dtype != value.dtype:
            raise InputError(f"input '{value.name}' has dtype {array.dtype}, the model expects "
                             f"{value.dtype}")
        checked[value.name] = array
    return checked


def random_inputs(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the right shape and dtype (normal floats, small integers in
    [1, 8): never 0, so that a default input cannot divide by zero)."""
    rng = np.random.default_rng(seed)
    out = {}
    for value in graph.inputs:
        if np.issubdtype(value.dtype, np.floating):
            out[value.name] = rng.standard_normal(value.shape).astype(value.dtype)
        elif value.dtype == np.bool_:
            out[value.name] = rng.integers(0, 2, value.shape).astype(bool)
        else:
            out[value.name] = rng.integers(1, 8, value.shape).astype(value.dtype)
    return out


class Interpreter:
    """Executes a `Graph` on numpy arrays."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.peak_bytes = 0

    def run(self, inputs: "Mapping[str, Any] | Sequence[Any] | np.ndarray",
            *, keep_all: bool = False) -> list[np.ndarray]:
        """Returns the graph outputs in order; ``keep_all`` keeps every value in ``self.env``."""
        graph = self.graph
        arrays = check_inputs(graph, inputs)
        env: dict[int, np.ndarray] = {}
        for value in graph.inputs:
            env[id(value)] = arrays[value.name]
        order = graph.topo_order()
        last_use = self._last_uses(order)
        outputs = {id(v) for v in graph.outputs}
        live = sum(a.nbytes for a in env.values())
        self.peak_bytes = live
        for step, node in enumerate(order):
            args = []
            for value in node.inputs:
                if value is None:
                    args.append(None)
                elif value.is_constant:
                    args.append(value.const)
                else:
                    args.append(env[id(value)])
            results = self.run_node(node, args)
            for value, array in zip(node.outputs, results):
                self._check_output(node, value, array)
                env[id(value)] = array
                live += array.nbytes
            self.peak_bytes = max(self.peak_bytes, live)
            if not keep_all:
                for value in {id(v): v for v in node.inputs if v is not None}.values():
                    if (last_use.get(id(value)) == step and id(value) not in outputs
                            and id(value) in env):
                        live -= env.pop(id(value)).nbytes
                for value in node.outputs:  # outputs nobody reads
                    if id(value) not in last_use and id(value) not in outputs:
                        live -= env.pop(id(value)).nbytes
        self.env = env
        return [v.const if v.is_constant else env[id(v)] for v in graph.outputs]

    def run_node(self, node: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
        """Compute one node (override to observe or replace execution)."""
        return evaluate_node(node, args)

    @staticmethod
    def _last_uses(order: list[Node]) -> dict[int, int]:
        last: dict[int, int] = {}
        for step, node in enumerate(order):
            for value in node.inputs:
                if value is not None and not value.is_constant:
                    last[id(value)] = step
        return last

    @staticmethod
    def _check_output(node: Node, value: Value, array: np.ndarray) -> None:
        if value.shape is not None and tuple(array.shape) != tuple(value.shape):
            raise AssertionError(f"node '{node.name}' ({node.op_type}) produced shape "
                                 f"{array.shape} for '{value.name}', inferred {value.shape}")
        if value.dtype is not None and array.dtype != value.dtype:
            raise AssertionError(f"node '{node.name}' ({node.op_type}) produced dtype "
                                 f"{array.dtype} for '{value.name}', inferred {value.dtype}")


def run(graph: Graph, inputs: "Mapping[str, Any] | Sequence[Any] | np.ndarray") -> list[np.ndarray]:
    """Run ``graph`` once in the reference interpreter."""
    return Interpreter(graph).run(inputs)

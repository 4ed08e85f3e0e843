"""Shared helpers of the quantization tests (interpreter vs TVM, tiny graphs)."""
from __future__ import annotations

import numpy as np

from compiler.folding import infer_node
from compiler.interpreter import Interpreter
from compiler.ir import Graph

# the ops this directory checks (for tests/ops_tests' "every op has a check" rule)
QUANT_TESTED_OPS = {"q.Quantize", "q.Dequantize", "q.Clip", "q.Conv", "q.ConvTranspose", "q.Gemm",
                    "q.MatMul", "q.Resize",
                    "q.Requantize", "q.Add", "q.Concat", "q.AveragePool", "q.GlobalAveragePool",
                    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                    "MatMulInteger"}


def typed(graph: Graph) -> Graph:
    for node in graph.topo_order():
        infer_node(node)
    return graph


def run_interp(graph: Graph, inputs: dict) -> list[np.ndarray]:
    return Interpreter(graph).run(inputs)


def run_tvm(graph: Graph, inputs: dict) -> list[np.ndarray]:
    from targets.tvm import build, lower_graph, run

    ex = build(lower_graph(graph), "llvm")
    return run(ex, [inputs[v.name] for v in graph.inputs])


def assert_bit_exact(graph: Graph, inputs: dict) -> list[np.ndarray]:
    ref = run_interp(graph, inputs)
    got = run_tvm(graph, inputs)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.dtype == g.dtype and r.shape == g.shape
        np.testing.assert_array_equal(g, r)
    return ref

"""Multiply-accumulate rules of the multiply layers (the ``macs`` op trait).

One rule per op family, shared by the float op, its ``q``-domain counterpart and the
ONNX integer op, so that the cost model of mixed precision
(`passes.quantization.cost`) and the static analysis (`compiler.analysis`) count the
same thing.  A node without inferred shapes counts 0.
"""
from __future__ import annotations

import numpy as np

from ..ir import Node

__all__ = ["conv_macs", "conv_transpose_macs", "gemm_macs", "matmul_macs"]


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _out_shape(node: Node):
    return node.outputs[0].shape if node.outputs else None


def conv_macs(node: Node) -> int:
    """Conv ``(N, Cout, *out) x (Cout, Cin/g, *k)``: every output element reads Cin/g*k."""
    out = _out_shape(node)
    if out is None:
        return 0
    return _prod(out) * _prod(node.inputs[1].shape[1:])


def conv_transpose_macs(node: Node) -> int:
    """ConvTranspose, weights ``(Cin, Cout/g, *k)``: every input element scatters Cout/g*k."""
    return _prod(node.inputs[0].shape) * _prod(node.inputs[1].shape[1:])


def gemm_macs(node: Node) -> int:
    """Gemm ``(M, K) x (K, N)``: M*N*K (K is A's axis 0 when ``transA``)."""
    out = _out_shape(node)
    if out is None:
        return 0
    a = node.inputs[0].shape
    k = a[0] if int(node.attrs.get("transA", 0)) else a[1]
    return _prod(out) * int(k)


def matmul_macs(node: Node) -> int:
    """MatMul ``(..., M, K) x (K, N)``: every output element reads K (A's last axis)."""
    out = _out_shape(node)
    if out is None:
        return 0
    return _prod(out) * int(node.inputs[0].shape[-1])

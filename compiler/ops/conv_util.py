"""Helpers shared by the op modules: window arithmetic for Conv/ConvTranspose/pooling
(output sizes, ``auto_pad`` resolution, sliding-window views) and the small shape
helpers every ``infer`` rule needs (input shapes, axis normalisation, error messages).

Pads are always in ONNX layout: ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..ir import Node, Shape
from .registry import OpValidationError, UnsupportedOpError

__all__ = [
    "resolve_auto_pad", "resolve_auto_pad_transpose", "conv_output_shape",
    "pool_output_shape", "conv_transpose_output_shape", "window_params",
    "strided_window", "input_shape", "input_dtype", "normalize_axis", "unsupported",
    "invalid", "compute_dtype", "has_input", "ceil_div", "prod",
]


# -- generic infer helpers ---------------------------------------------------------

def _where(node: Node | None) -> str:
    return f"node '{node.name}' ({node.op_type})" if node is not None else "op"


def unsupported(node: Node | None, attr: str, value: Any, why: str = "") -> UnsupportedOpError:
    """An `UnsupportedOpError` naming the node, op and the attribute value."""
    text = f"{_where(node)}: {attr}={value!r} is not supported"
    return UnsupportedOpError(text + (f" ({why})" if why else ""))


def invalid(node: Node | None, message: str) -> OpValidationError:
    """An `OpValidationError` naming the node.  A kernel sees arrays, not its node
    (``node=None``): the error then keeps ``message`` as ``unnamed_detail``, so
    `compiler.folding.evaluate_node` can raise it again with the node's name."""
    exc = OpValidationError(f"{_where(node)}: {message}")
    if node is None:
        exc.unnamed_detail = message
    return exc


def input_shape(node: Node, index: int, what: str = "") -> Shape:
    """Shape of input ``index``; an `OpValidationError` if it is omitted or unknown."""
    inputs = node.inputs
    value = inputs[index] if index < len(inputs) else None
    if value is None:
        raise invalid(node, f"required input {index} {what}".rstrip() + " is missing")
    if value.shape is None:
        raise invalid(node, f"input {index} ('{value.name}') has no known shape")
    return tuple(value.shape)


def input_dtype(node: Node, index: int) -> np.dtype:
    value = node.inputs[index]
    if value is None or value.dtype is None:
        raise invalid(node, f"input {index} has no known dtype")
    return np.dtype(value.dtype)


def has_input(node: Node, index: int) -> bool:
    inputs = node.inputs
    return index < len(inputs) and inputs[index] is not None


def normalize_axis(axis: int, rank: int, node: Node | None = None, what: str = "axis") -> int:
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise invalid(node, f"{what} {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a float kernel computes in: float16 is widened to float32."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


# -- window arithmetic ---------------------------------------------------------------

def window_params(attrs: dict[str, Any], nd: int, kernel: Sequence[int] | None = None
                  ) -> tuple[list[int], list[int], list[int], list[int]]:
    """``(kernel, strides, pads, dilations)`` from attrs with ONNX defaults filled."""
    k = list(attrs.get("kernel_shape") or (kernel or []))
    strides = list(attrs.get("strides") or [1] * nd)
    pads = list(attrs.get("pads") or [0] * (2 * nd))
    dilations = list(attrs.get("dilations") or [1] * nd)
    if len(k) != nd or len(strides) != nd or len(pads) != 2 * nd or len(dilations) != nd:
        raise OpValidationError(
            f"window attributes do not match {nd} spatial dims: kernel_shape={k}, "
            f"strides={strides}, pads={pads}, dilations={dilations}")
    k, strides, pads, dilations = ([int(v) for v in vs] for vs in (k, strides, pads, dilations))
    if min(k + strides + dilations, default=1) < 1:
        # a zero stride would divide by zero in the shape rule (found by tests/test_fuzz.py);
        # pads may be negative (ConvTranspose's output_shape derives such pads)
        raise OpValidationError(
            f"window attributes must be kernel_shape, strides, dilations >= 1, "
            f"got kernel_shape={k}, strides={strides}, pads={pads}, dilations={dilations}")
    return k, strides, pads, dilations


def conv_output_shape(in_spatial: Sequence[int], kernel: Sequence[int],
                      strides: Sequence[int], pads: Sequence[int],
                      dilations: Sequence[int]) -> list[int]:
    """Spatial output size of Conv: ``floor((in + pb + pe - ((k-1)*d+1)) / s) + 1``."""
    nd = len(in_spatial)
    out = []
    for i in range(nd):
        eff = (kernel[i] - 1) * dilations[i] + 1
        out.append((in_spatial[i] + pads[i] + pads[nd + i] - eff) // strides[i] + 1)
    return out


def pool_output_shape(in_spatial: Sequence[int], kernel: Sequence[int],
                      strides: Sequence[int], pads: Sequence[int],
                      dilations: Sequence[int], ceil_mode: bool = False) -> list[int]:
    """Spatial output size of MaxPool/AveragePool.

    With ``ceil_mode`` the division is rounded up, but a last window that would start
    inside the end padding is dropped (ONNX reference / PyTorch / onnxruntime rule).
    """
    nd = len(in_spatial)
    out = []
    for i in range(nd):
        eff = (kernel[i] - 1) * dilations[i] + 1
        span = in_spatial[i] + pads[i] + pads[nd + i] - eff
        if ceil_mode:
            size = -(-span // strides[i]) + 1
            if (size - 1) * strides[i] >= in_spatial[i] + pads[i]:
                size -= 1
        else:
            size = span // strides[i] + 1
        out.append(size)
    return out


def resolve_auto_pad(auto_pad: str, in_spatial: Sequence[int], kernel: Sequence[int],
                     strides: Sequence[int] | None = None,
                     dilations: Sequence[int] | None = None,
                     pads: Sequence[int] | None = None) -> list[int]:
    """Explicit ``pads`` for Conv/MaxPool/AveragePool given ``auto_pad``.

    * ``NOTSET``: the given ``pads`` (zeros if absent);
    * ``VALID``: zeros;
    * ``SAME_UPPER`` / ``SAME_LOWER``: output size ``ceil(in / stride)``; total padding
      ``max(0, (out - 1) * stride + ((k - 1) * dilation + 1) - in)``, split in halves
      with the odd element at the end (UPPER) or at the beginning (LOWER).
    """
    nd = len(in_spatial)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("NOTSET", ""):
        return [int(p) for p in pads] if pads else [0] * (2 * nd)
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOpError(f"auto_pad={auto_pad!r} is not a valid ONNX auto_pad value")
    begins, ends = [], []
    for i in range(nd):
        out = -(-int(in_spatial[i]) // int(strides[i]))
        eff = (int(kernel[i]) - 1) * int(dilations[i]) + 1
        total = max(0, (out - 1) * int(strides[i]) + eff - int(in_spatial[i]))
        small, large = total // 2, total - total // 2
        if auto_pad == "SAME_UPPER":
            begins.append(small)
            ends.append(large)
        else:
            begins.append(large)
            ends.append(small)
    return begins + ends


def conv_transpose_output_shape(in_spatial: Sequence[int], kernel: Sequence[int],
                                strides: Sequence[int], pads: Sequence[int],
                                dilations: Sequence[int],
                                output_padding: Sequence[int]) -> list[int]:
    """``stride * (in - 1) + output_padding + ((k - 1) * d + 1) - pad_begin - pad_end``."""
    nd = len(in_spatial)
    return [strides[i] * (in_spatial[i] - 1) + output_padding[i]
            + (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[nd + i] for i in range(nd)]


def resolve_auto_pad_transpose(auto_pad: str, in_spatial: Sequence[int],
                               kernel: Sequence[int],
                               strides: Sequence[int] | None = None,
                               dilations: Sequence[int] | None = None,
                               output_padding: Sequence[int] | None = None,
                               output_shape: Sequence[int] | None = None,
                               pads: Sequence[int] | None = None) -> list[int]:
    """Explicit ``pads`` for ConvTranspose (ONNX opset-17 spec formulas).

    If ``output_shape`` is given (the spatial part; a full N,C,... shape is accepted too)
    or ``auto_pad`` is SAME_*, the pads are derived from the target output size
    (``in * stride`` for SAME_*)::

        total = stride * (in - 1) + output_padding + ((k - 1) * d + 1) - output_size
        SAME_UPPER:       begin = total // 2,          end = total - total // 2
        otherwise:        begin = total - total // 2,  end = total // 2

    A negative ``total`` (the requested output is larger than the natural one) is
    returned as a negative *end* pad, i.e. the output is extended with zeros (+ bias) at
    the end, as onnxruntime does.  Otherwise ``NOTSET`` returns the given pads and
    ``VALID`` zeros.  The result may contain negative end pads; the ConvTranspose
    kernel and shape rule accept them.
    """
    nd = len(in_spatial)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    output_padding = list(output_padding or [0] * nd)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise UnsupportedOpError(f"auto_pad={auto_pad!r} is not a valid ONNX auto_pad value")
    target: list[int] | None = None
    if output_shape:
        target = [int(v) for v in output_shape][-nd:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [int(in_spatial[i]) * strides[i] for i in range(nd)]
    if target is None:
        if auto_pad == "VALID":
            return [0] * (2 * nd)
        return [int(p) for p in pads] if pads else [0] * (2 * nd)
    begins, ends = [], []
    for i in range(nd):
        natural = (strides[i] * (int(in_spatial[i]) - 1) + output_padding[i]
                   + (int(kernel[i]) - 1) * dilations[i] + 1)
        total = natural - target[i]
        if total < 0:
            begins.append(0)
            ends.append(total)
        elif auto_pad == "SAME_UPPER":
            begins.append(total // 2)
            ends.append(total - total // 2)
        else:
            begins.append(total - total // 2)
            ends.append(total // 2)
    return begins + ends


def strided_window(x: np.ndarray, offsets: Sequence[int], strides: Sequence[int],
                   counts: Sequence[int], first_axis: int = 2) -> np.ndarray:
    """View of ``x`` taking, on each spatial axis i, ``counts[i]`` elements from
    ``offsets[i]`` with step ``strides[i]`` (the input pixels one kernel tap sees)."""
    index: list[slice] = [slice(None)] * first_axis
    for off, step, count in zip(offsets, strides, counts):
        index.append(slice(off, off + (count - 1) * step + 1, step) if count > 0
                     else slice(0, 0))
    return x[tuple(index)]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def prod(values: Sequence[int]) -> int:
    return int(math.prod(int(v) for v in values))

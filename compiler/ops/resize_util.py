"""Resize coordinate maths, the one home of ONNX's ``coordinate_transformation_mode`` and
``nearest_mode`` rules (opset 13).

Shared by the float kernel (`compiler.ops.nn.resize`), the integer kernel's interpolation
matrices (`compiler.ops.quant.resize_matrices`, built from the float kernel's weights) and
the TVM lowering (`targets.tvm.lowering.resize`, which computes its index and weight tables
and decides whether TOPI's ``resize2d`` samples at the same positions).  The arithmetic is
done in a caller-chosen float type: the reference kernels use float64, the lowering float32
(onnxruntime's type), so each keeps its exact sampling positions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .registry import UnsupportedOpError

__all__ = ["COORD_MODES", "NEAREST_MODES", "source_coords", "nearest_index"]

COORD_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
               "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coords(ctm: str, out_len: int, in_len: int, scale: float, roi_start: float = 0.0,
                  roi_end: float = 1.0, dtype: Any = np.float64) -> np.ndarray:
    """Fractional input coordinate of every output index along one axis, in ``dtype``.

    ``scale`` is the axis's ONNX scale (``out / in`` when ``sizes`` was given);
    ``roi_start``/``roi_end`` are only read by ``tf_crop_and_resize``.  Every formula is
    onnxruntime's (``upsamplebase.h``), operation for operation.
    """
    dtype = np.dtype(dtype)
    f = dtype.type
    y = np.arange(out_len, dtype=dtype)
    half = f(0.5)
    if ctm == "half_pixel":
        return (y + half) / f(scale) - half
    if ctm == "pytorch_half_pixel":
        return (y + half) / f(scale) - half if out_len > 1 else np.zeros(out_len, dtype)
    if ctm == "asymmetric":
        return y / f(scale)
    if ctm == "tf_half_pixel_for_nn":
        return (y + half) / f(scale)
    if ctm == "align_corners":
        # length_resized is the integer output length (spec text, onnxruntime, PyTorch);
        # the ONNX reference implementation uses the fractional in_len * scale instead
        return y * f(in_len - 1) / f(out_len - 1) if out_len > 1 else np.zeros(out_len, dtype)
    if ctm == "tf_crop_and_resize":
        if out_len > 1:
            start, end, n = f(roi_start), f(roi_end), f(in_len - 1)
            return start * n + y * (end - start) * n / f(out_len - 1)
        return np.full(out_len, 0.5 * (roi_start + roi_end) * (in_len - 1), dtype)
    raise UnsupportedOpError(f"coordinate_transformation_mode={ctm!r}")


def nearest_index(coords: np.ndarray, nearest_mode: str, in_len: int) -> np.ndarray:
    """The input index (int64, clamped to ``[0, in_len - 1]``) that nearest-mode Resize
    reads for each source coordinate.  ``round_prefer_floor`` is ``ceil(c - 0.5)``: a tie
    ``k + 0.5`` goes to ``k`` (``c - 0.5`` is exact for the coordinates Resize makes)."""
    half = coords.dtype.type(0.5)
    if nearest_mode == "round_prefer_floor":
        idx = np.ceil(coords - half)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(coords + half)
    elif nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    else:
        raise UnsupportedOpError(f"nearest_mode={nearest_mode!r}")
    return np.clip(idx, 0, in_len - 1).astype(np.int64)

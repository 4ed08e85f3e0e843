"""TVM lowering of ONNX Resize (the op is in `compiler/ops/nn.py`): ``R.image.resize2d``
where TOPI samples exactly where ONNX does, else separable gathers with index and
weight tables computed at compile time.  The ONNX coordinate maths (sampling positions,
nearest rounding) is `compiler.ops.resize_util`'s, the reference kernel's own, evaluated in
float32 like onnxruntime; ``_tvm_resize_coords``/``_tvm_nearest`` model what TOPI computes.
"""
from __future__ import annotations

import numpy as np
from tvm.relax import op as R

from compiler.ops.resize_util import COORD_MODES, NEAREST_MODES, nearest_index, source_coords

from .core import (_attr, _const_operand, _in, _is_float, _out_shape, _shape, _unsupported,
                   register_lowering)

__all__: list[str] = []


@register_lowering("Resize")
def _lower_resize(ctx, node, args):
    x_shape = _shape(node, node.inputs[0])
    out_shape = _out_shape(node)
    rank = len(x_shape)
    mode = _attr(node, "mode", "nearest")
    ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
    nearest_mode = _attr(node, "nearest_mode", "round_prefer_floor")
    mode, ctm, nearest_mode = (v.decode() if isinstance(v, bytes) else v
                               for v in (mode, ctm, nearest_mode))
    if int(_attr(node, "antialias", 0)):
        raise _unsupported(node, "antialias=1")
    if _attr(node, "axes") is not None:
        raise _unsupported(node, "the axes attribute (opset 18)")
    if _attr(node, "keep_aspect_ratio_policy", "stretch") not in ("stretch", b"stretch"):
        raise _unsupported(node, "keep_aspect_ratio_policy other than 'stretch'")
    if mode not in ("nearest", "linear", "cubic"):
        raise _unsupported(node, f"mode={mode!r}")
    if ctm not in COORD_MODES:
        raise _unsupported(node, f"coordinate_transformation_mode={ctm!r}")
    if mode == "nearest" and nearest_mode not in NEAREST_MODES:
        raise _unsupported(node, f"nearest_mode={nearest_mode!r}")
    scales_c = _const_operand(node, 2, "scales") if _in(node, 2) is not None else None
    if scales_c is not None and scales_c.size == 0:
        scales_c = None
    if scales_c is not None:
        scales = [float(s) for s in np.asarray(scales_c, np.float32).reshape(-1)]
    else:
        scales = [o / i if i else 1.0 for o, i in zip(out_shape, x_shape)]
    roi_c = _const_operand(node, 1, "roi") if _in(node, 1) is not None else None
    roi = None
    if ctm == "tf_crop_and_resize":
        if roi_c is None or roi_c.size != 2 * rank:
            raise _unsupported(node, "tf_crop_and_resize without a full constant roi")
        roi = np.asarray(roi_c, np.float64).reshape(-1)
    resized = [a for a in range(rank) if out_shape[a] != x_shape[a] or scales[a] != 1.0
               or ctm in ("tf_crop_and_resize", "tf_half_pixel_for_nn")]
    if not resized:
        return args[0]
    exclude_outside = int(_attr(node, "exclude_outside", 0))
    cubic_a = float(_attr(node, "cubic_coeff_a", -0.75))
    extrapolation = float(_attr(node, "extrapolation_value", 0.0))

    if not _is_float(node.inputs[0].dtype) and mode != "nearest":
        raise _unsupported(node, f"{mode} resize of {node.inputs[0].dtype} (rounding of the "
                           "interpolated integers)")
    # TVM's resize2d computes the scale as in/out (float32): use it when that gives
    # exactly ONNX's sampling positions, else separable gathers computed here.
    if rank == 4 and set(resized) <= {2, 3} and ctm in (
            "half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric") \
            and mode in ("nearest", "linear") and _resize2d_matches(
                mode, ctm, nearest_mode, [(x_shape[a], out_shape[a], scales[a]) for a in (2, 3)]):
        return R.image.resize2d(args[0], (out_shape[2], out_shape[3]), layout="NCHW",
                                method="linear" if mode == "linear" else "nearest_neighbor",
                                coordinate_transformation_mode=ctm,
                                rounding_method=nearest_mode if mode == "nearest" else "")
    # Otherwise: separable gathers with indices/weights computed here exactly as ONNX does.
    x = args[0]
    dtype = node.inputs[0].dtype
    for a in resized:
        n_in, n_out = x_shape[a], out_shape[a]
        roi_a = (roi[a], roi[rank + a]) if roi is not None else (0.0, 1.0)
        coords = source_coords(ctm, n_out, n_in, scales[a], *roi_a, dtype=np.float32)
        outside = (coords < 0) | (coords > n_in - 1) if ctm == "tf_crop_and_resize" else None
        if mode == "nearest":
            idx = nearest_index(coords, nearest_mode, n_in)
            x = ctx.emit(R.take(x, ctx.weight(idx, f"{node.name}_idx{a}"), axis=a))
        else:
            if mode == "linear":
                c = np.clip(coords, 0, n_in - 1) if ctm != "tf_crop_and_resize" else coords
                base = np.floor(c).astype(np.int64)
                frac = (c - base).astype(np.float64)
                taps = [(base, 1.0 - frac), (base + 1, frac)]
            else:  # cubic
                base = np.floor(coords).astype(np.int64)
                t = (coords - base).astype(np.float64)
                A = cubic_a

                def w(d):
                    d = np.abs(d)
                    return np.where(d <= 1, ((A + 2) * d - (A + 3)) * d * d + 1,
                                    np.where(d < 2, ((A * d - 5 * A) * d + 8 * A) * d - 4 * A, 0.0))

                taps = [(base + k, w(t - k)) for k in (-1, 0, 1, 2)]
                if exclude_outside:
                    ws = [np.where((i >= 0) & (i < n_in), wt, 0.0) for i, wt in taps]
                    total = np.sum(ws, axis=0)
                    taps = [(i, wt / np.where(total == 0, 1, total)) for (i, _), wt in zip(taps, ws)]
            acc = None
            bshape = [1] * rank
            bshape[a] = n_out
            for i, wt in taps:
                if np.all(wt == 0):
                    continue
                gathered = ctx.emit(R.take(x, ctx.weight(np.clip(i, 0, n_in - 1),
                                                         f"{node.name}_idx{a}"), axis=a))
                term = ctx.emit(R.multiply(gathered, ctx.weight(
                    wt.astype(dtype).reshape(bshape), f"{node.name}_w{a}")))
                acc = term if acc is None else ctx.emit(R.add(acc, term))
            x = acc
        if outside is not None and outside.any():
            bshape = [1] * rank
            bshape[a] = n_out
            mask = ctx.weight(outside.reshape(bshape), f"{node.name}_mask{a}")
            x = ctx.emit(R.where(mask, ctx.scalar(extrapolation, dtype), x))
    return x


def _tvm_resize_coords(ctm: str, n_in: int, n_out: int, ftype) -> np.ndarray:
    """TOPI's ``get_inx`` evaluated in ``ftype`` (its scale is in/out, not ONNX's scale)."""
    x = np.arange(n_out).astype(ftype)
    scale = ftype(n_in) / ftype(n_out)
    if ctm == "half_pixel" or (ctm == "pytorch_half_pixel" and n_out > 1):
        return (x + ftype(0.5)) * scale - ftype(0.5)
    if ctm == "pytorch_half_pixel":
        return np.zeros(n_out, ftype)
    if ctm == "align_corners":
        return ftype(n_in - 1) / ftype(n_out - 1) * x if n_out > 1 else np.zeros(n_out, ftype)
    return scale * x  # asymmetric


def _tvm_nearest(coords: np.ndarray, rounding: str) -> np.ndarray:
    eps = coords.dtype.type(1e-5)
    if rounding == "round_prefer_floor":
        idx = np.ceil(coords - coords.dtype.type(0.5))
    elif rounding == "round_prefer_ceil":
        idx = np.floor(coords + coords.dtype.type(0.5))
    elif rounding == "floor":
        idx = np.floor(coords + eps)
    else:
        idx = np.ceil(coords - eps)
    return idx


def _resize2d_matches(mode: str, ctm: str, nearest_mode: str,
                      dims: list[tuple[int, int, float]]) -> bool:
    """Whether TOPI resize2d samples exactly where ONNX does on these axes."""
    for n_in, n_out, scale in dims:
        if n_out == 1 and ctm == "align_corners":
            return False  # TOPI divides by n_out - 1
        onnx = source_coords(ctm, n_out, n_in, scale, dtype=np.float32)
        for ftype in (np.float32, np.float64):
            tvm_c = _tvm_resize_coords(ctm, n_in, n_out, ftype)
            if mode == "linear":
                if np.float32(scale) != np.float32(n_out / n_in):
                    return False
                if not np.allclose(tvm_c, onnx, rtol=0, atol=1e-5 * max(1, n_in)):
                    return False
            else:
                want = nearest_index(onnx, nearest_mode, n_in)
                got = np.clip(_tvm_nearest(tvm_c, nearest_mode), 0, n_in - 1).astype(np.int64)
                if not np.array_equal(want, got):
                    return False
    return True

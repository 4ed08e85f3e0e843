"""`compiler.ops.resize_util` (the one home of Resize's coordinate maths) against
onnxruntime: a nearest-mode Resize of ``arange(n_in)`` returns the input index ORT samples
at every output position, so ``nearest_index(source_coords(...))`` must reproduce it
exactly, in float32 (the TVM lowering's arithmetic) and in float64 (the reference kernels').
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.ops.resize_util import COORD_MODES, NEAREST_MODES, nearest_index, source_coords
from tests.conftest import ort_run

# (n_in, n_out) pairs: up/down-sampling, integer and fractional ratios, a single output.
# No n_in == n_out: onnxruntime copies such an axis without sampling (even for
# tf_half_pixel_for_nn, where the formula would shift by half a pixel).
SIZES = [(4, 8), (5, 3), (7, 11), (3, 1), (9, 4), (10, 25), (2, 7)]
# tf_crop_and_resize's crop of the axis (start, end), as float32 like the roi tensor
ROI = (float(np.float32(0.15)), float(np.float32(0.85)))
EXTRAPOLATED = -1.0


def _ort_indices(ctm: str, nearest_mode: str, n_in: int, n_out: int) -> np.ndarray:
    """The input index onnxruntime reads for each output (EXTRAPOLATED outside the roi)."""
    sizes = np.array([1, 1, 1, n_out], np.int64)
    roi = np.array([0, 0, 0, ROI[0], 1, 1, 1, ROI[1]], np.float32)
    node = helper.make_node("Resize", ["x", "roi", "", "sizes"], ["y"], mode="nearest",
                            coordinate_transformation_mode=ctm, nearest_mode=nearest_mode,
                            extrapolation_value=EXTRAPOLATED)
    graph = helper.make_graph(
        [node], "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(roi, "roi"), onnx.numpy_helper.from_array(sizes, "sizes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in)
    return ort_run(model, {"x": x})[0].reshape(-1)


@pytest.mark.parametrize("ctm", COORD_MODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_sampling_matches_onnxruntime(ctm, dtype):
    checked = compared = total = 0
    for (n_in, n_out), nm in itertools.product(SIZES, NEAREST_MODES):
        want = _ort_indices(ctm, nm, n_in, n_out)
        coords = source_coords(ctm, n_out, n_in, n_out / n_in, *ROI, dtype=dtype)
        assert coords.dtype == dtype
        got = nearest_index(coords, nm, n_in).astype(np.float32)
        if ctm == "tf_crop_and_resize":
            got = np.where((coords < 0) | (coords > n_in - 1), EXTRAPOLATED, got)
            # A crop coordinate that is mathematically a rounding boundary (k or k + 0.5)
            # lands a float32 ulp either side of it depending on the operation order, and
            # onnxruntime's compiled order is not reproducible in numpy: compare elsewhere.
            frac = np.abs(coords * 2 - np.round(coords * 2))
            keep = frac > 1e-4
            got, want = got[keep], want[keep]
        np.testing.assert_array_equal(got, want, err_msg=f"{ctm} {nm} {n_in}->{n_out}")
        checked += 1
        compared += got.size
        total += n_out
    assert checked == len(SIZES) * len(NEAREST_MODES)
    assert compared >= 0.9 * total, f"only {compared} of {total} positions compared"


def test_unknown_modes_are_rejected_by_name():
    from compiler.ops.registry import UnsupportedOpError

    with pytest.raises(UnsupportedOpError, match="coordinate_transformation_mode='bogus'"):
        source_coords("bogus", 4, 2, 2.0)
    with pytest.raises(UnsupportedOpError, match="nearest_mode='bogus'"):
        nearest_index(np.zeros(3, np.float32), "bogus", 2)

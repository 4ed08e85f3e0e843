"""Shared fixtures: the prepared models and onnxruntime as the float reference."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
EXAMPLE = ROOT / "examples" / "tinynet.onnx"

# name -> (file, input name, input shape)
MODEL_INPUTS = {
    "tinynet": (EXAMPLE, (1, 1, 28, 28)),
    "resnet_tiny": (MODELS / "resnet_tiny.onnx", (1, 3, 32, 32)),
    "dwsep_tiny": (MODELS / "dwsep_tiny.onnx", (1, 3, 32, 32)),
    "concat_tiny": (MODELS / "concat_tiny.onnx", (1, 3, 32, 32)),
    "unet_tiny": (MODELS / "unet_tiny.onnx", (1, 1, 64, 64)),
    "mobilenet_v2": (MODELS / "mobilenet_v2.onnx", (1, 3, 224, 224)),
    "ppocr_det": (MODELS / "ppocr_det.onnx", (1, 3, 320, 320)),
}
SMALL_MODELS = ["tinynet", "resnet_tiny", "dwsep_tiny", "concat_tiny", "unet_tiny"]
REAL_MODELS = ["mobilenet_v2", "ppocr_det"]


def model_path(name: str) -> Path:
    path = MODEL_INPUTS[name][0]
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash scripts/setup.sh` (or "
                    "`python scripts/prepare_models.py`) first")
    return path


def model_input(name: str, seed: int = 0) -> np.ndarray:
    shape = MODEL_INPUTS[name][1]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ort_run(model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime (the reference we did not write) on a path or ModelProto."""
    import onnxruntime as ort

    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def assert_close(actual, expected, rtol=1e-4, atol=1e-5, what="output"):
    """Relative check scaled by the reference's magnitude (robust for big logits)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected))) if actual.size else 0.0
    assert err <= atol + rtol * scale, (f"{what}: max abs error {err:.3g} exceeds "
                                        f"{atol} + {rtol} * {scale:.3g}")


@pytest.fixture(scope="session")
def board():
    """The emulated Cortex-A72 board (127.0.0.1 only) for board and RPC-tuning tests: started
    once if not running, stopped at the end of the session."""
    from targets.board.testing import board_session

    with board_session() as spec:
        yield spec

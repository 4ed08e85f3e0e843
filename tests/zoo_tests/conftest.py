"""The model zoo (issue #16): real pretrained models from PyPI wheels, prepared by
``scripts/prepare_models.py`` (its ``ZOO`` table records each source, sha256 and input shape).

By default a representative subset runs (``DEFAULT_BUILD``: the three MTCNN stages,
multi-output detectors, built for host and cortex-a72 and run on the emulated board; PP-OCR's
MobileNetV3 classifier is imported and interpreted as well); ``COMPILER_ZOO=all``
runs every zoo model (the big ones build for ~15-60 s each on this 2-core machine), or
``COMPILER_ZOO=name,name`` a chosen few.  ``COMPILER_ZOO_MODELS=DIR`` reads the models from
another folder than ``models/``.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


prepare = _load("_zoo_prepare_models", ROOT / "scripts" / "prepare_models.py")
_root = _load("_zoo_root_conftest", ROOT / "tests" / "conftest.py")
assert_close, ort_run = _root.assert_close, _root.ort_run

ZOO = prepare.ZOO
# Built (host and cortex-a72) by default: the three MTCNN stages, real multi-output detectors
# with PReLU, ceil-mode pools and Gemm heads, a few seconds each.
DEFAULT_BUILD = ["mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet"]
# Imported and interpreted by default (fast): those plus PP-OCR's MobileNetV3 classifier
# (SE with HardSigmoid, Constant-node weights); its 278 small kernels take ~15-160 s to build
# here depending on the load, so its builds run under COMPILER_ZOO=all (ppocr_det, a model
# of the same family, is built by tests/tvm_tests).
DEFAULT = DEFAULT_BUILD + ["ppocr_cls"]
ZOO_DIR = Path(os.environ.get("COMPILER_ZOO_MODELS", ROOT / "models"))


def selected(build: bool = False) -> list[str]:
    """The zoo models this run tests (see the module docstring); ``build``: the ones built
    for host and cortex-a72, whose default subset is smaller."""
    choice = os.environ.get("COMPILER_ZOO", "").strip()
    if not choice:
        return list(DEFAULT_BUILD if build else DEFAULT)
    if choice == "all":
        return list(ZOO)
    names = [n.strip() for n in choice.split(",") if n.strip()]
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise pytest.UsageError(f"COMPILER_ZOO: unknown zoo model(s) {unknown}; known: {list(ZOO)}")
    return names


def zoo_path(name: str) -> Path:
    path = ZOO_DIR / f"{name}.onnx"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python scripts/prepare_models.py --only {name}` "
                    "(scripts/setup.sh installs the zoo packages and builds every model)")
    return path


def zoo_input(name: str, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(ZOO[name].input_shape).astype(np.float32)


def check_outputs(name: str, got, ref, what: str) -> None:
    """Every output within 1e-4 of max|ref|; probability outputs (softmax / sigmoid, listed
    in ZOO[name].prob_outputs) also get an absolute floor of 1e-5."""
    assert len(got) == len(ref), f"{name} {what}: {len(got)} outputs, onnxruntime {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref)):
        atol = 1e-5 if i in ZOO[name].prob_outputs else 1e-6
        assert_close(g, r, rtol=1e-4, atol=atol, what=f"{name} {what} output {i}")

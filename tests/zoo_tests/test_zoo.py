"""Every selected zoo model imports, builds for the host and matches onnxruntime, and
cross-builds for Cortex-A72 (an aarch64 shared library); the multi-output MTCNN detectors
also run on the emulated board over RPC (slow).  See conftest.py for the selection."""
from __future__ import annotations

import shutil

import pytest

import compiler
from compiler.onnx_io import import_model

from .conftest import ZOO, check_outputs, ort_run, selected, zoo_input, zoo_path

NAMES = selected()
# The numpy interpreter is run on the small models only (the big ones take seconds per conv).
INTERPRETED = ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "ppocr_cls")
BUILD_NAMES = selected(build=True)
# Multi-output detectors run on the emulated board (each a few seconds under qemu).
BOARD = [n for n in ("mtcnn_onet", "mtcnn_pnet") if n in BUILD_NAMES]


@pytest.fixture(scope="module")
def references():
    """onnxruntime's outputs on each model's seeded input (computed once per model)."""
    cache: dict[str, tuple[dict, list]] = {}

    def get(name: str):
        if name not in cache:
            path = zoo_path(name)
            graph = import_model(path)
            feed = {graph.inputs[0].name: zoo_input(name)}
            cache[name] = (feed, ort_run(path, feed))
        return cache[name]
    return get


@pytest.fixture(scope="module")
def a72_builds():
    """One cortex-a72 build per model, shared by the cross-build and board tests."""
    if shutil.which("aarch64-linux-gnu-g++") is None:
        pytest.skip("aarch64-linux-gnu-g++ is not installed (scripts/setup.sh installs it)")
    cache: dict[str, compiler.CompiledModel] = {}

    def get(name: str) -> compiler.CompiledModel:
        if name not in cache:
            cache[name] = compiler.compile(zoo_path(name), target="cortex-a72")
        return cache[name]
    return get


def test_zoo_has_at_least_eight_real_models():
    assert len(ZOO) >= 8
    for name, entry in ZOO.items():
        src = entry.source
        assert src.dist and src.version and src.file and len(src.sha256) == 64, name
        assert entry.input_shape[0] == 1 and all(d > 0 for d in entry.input_shape), name


@pytest.mark.parametrize("name", NAMES)
def test_imports_with_static_shapes(name, references):
    graph = import_model(zoo_path(name))
    feed, ref = references(name)
    assert [v.shape for v in graph.inputs] == [ZOO[name].input_shape]
    assert [tuple(v.shape) for v in graph.outputs] == [r.shape for r in ref]


@pytest.mark.parametrize("name", [n for n in NAMES if n in INTERPRETED])
def test_interpreter_matches_onnxruntime(name, references):
    """Our reference interpreter (numpy, per node) on the small zoo models."""
    from compiler.interpreter import run

    feed, ref = references(name)
    check_outputs(name, run(import_model(zoo_path(name)), feed), ref, "interpreter")


@pytest.mark.parametrize("name", BUILD_NAMES)
def test_host_build_matches_onnxruntime(name, references):
    feed, ref = references(name)
    cm = compiler.compile(zoo_path(name), target="host", verify=False)
    check_outputs(name, cm.run(feed), ref, "host TVM vs onnxruntime")


@pytest.mark.parametrize("name", BUILD_NAMES)
def test_cross_builds_for_cortex_a72(name, a72_builds, tmp_path):
    cm = a72_builds(name)
    lib = cm.save(tmp_path / name) / f"model{cm.target.library_suffix}"
    header = lib.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # aarch64


@pytest.mark.slow
@pytest.mark.parametrize("name", BOARD)
def test_multi_output_detector_on_emulated_board(name, board, a72_builds, references):
    """Every output of a real multi-output detector comes back over RPC, equal to
    onnxruntime within the zoo tolerance (timings on this board are EMULATED)."""
    feed, ref = references(name)
    cm = a72_builds(name)
    assert len(cm.output_names) == len(ref) >= 2
    check_outputs(name, cm.run(feed), ref, "emulated cortex-a72 vs onnxruntime")

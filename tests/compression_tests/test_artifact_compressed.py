"""CompiledModel.save(compress=True) / load: exact round trips on every shipped baseline,
corrupt, truncated and future-version files, version-1 directories."""
import json
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler import CompiledModel
from compiler.artifact import FORMAT_VERSION, ArtifactError
from compiler.interpreter import Interpreter

ROOT = Path(__file__).resolve().parents[2]
BASELINES = json.loads((ROOT / "baselines" / "baselines.json").read_text())


def _input(cm, seed=0):
    shape = cm.graph.inputs[0].shape
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _constants(graph):
    return {v.name: v.const for v in graph.constants if v.uses or v.is_graph_output}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_exact_round_trip_on_every_baseline(tmp_path, name):
    path = ROOT / "baselines" / BASELINES[name]["file"]
    cm = compiler.compile(path, target="host", passes=[
        "fold-bn", "magnitude-prune{sparsity=0.8}", "share-weights{clusters=16}"])
    x = _input(cm)
    out = cm.save(tmp_path / name, compress=True)
    assert (out / "weights.bin").stat().st_size < 0.25 * cm.report().stats.param_bytes
    loaded = CompiledModel.load(out)
    a, b = _constants(cm.graph), _constants(loaded.graph)
    assert a.keys() == b.keys()
    for k in a:  # bit-identical weights
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        assert a[k].tobytes() == b[k].tobytes(), k
    np.testing.assert_array_equal(loaded.run([x])[0], cm.run([x])[0])
    ref = Interpreter(cm.graph).run({cm.input_names[0]: x})[0]
    np.testing.assert_array_equal(Interpreter(loaded.graph).run({cm.input_names[0]: x})[0], ref)
    assert "weights.bin" in str(loaded.report())


def _saved(tmp_path, compress=True):
    cm = compiler.compile(ROOT / "baselines" / "lenet5_mnist.onnx", target="host",
                          passes=["fold-bn", "magnitude-prune{sparsity=0.9}",
                                  "share-weights{clusters=8}"], build=False)
    return cm, cm.save(tmp_path / "m", compress=compress)


def test_unbuilt_round_trip_and_structure_only_onnx(tmp_path):
    cm, out = _saved(tmp_path)
    assert (out / "model.onnx").stat().st_size < 10_000  # structure only, no weights
    meta = json.loads((out / "meta.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION == 4
    assert meta["weights"]["bytes"] == (out / "weights.bin").stat().st_size
    loaded = CompiledModel.load(out)
    for k, v in _constants(cm.graph).items():
        assert _constants(loaded.graph)[k].tobytes() == v.tobytes()
    import onnxruntime  # noqa: F401  an ordinary ONNX tool refuses the stripped file
    from compiler.onnx_io import ModelImportError, import_model

    with pytest.raises(ModelImportError):
        import_model(out / "model.onnx")


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "missing", "swap"])
def test_damaged_weights_file_is_an_error_naming_it(tmp_path, damage):
    _, out = _saved(tmp_path)
    w = out / "weights.bin"
    blob = bytearray(w.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 1
        w.write_bytes(bytes(blob))
    elif damage == "truncate":
        w.write_bytes(bytes(blob[:-10]))
    elif damage == "empty":
        w.write_bytes(b"")
    elif damage == "missing":
        w.unlink()
    else:  # a valid container of other weights: caught by the sha256 in meta.json
        from compiler.compression import encode_container

        w.write_bytes(encode_container({"x": np.zeros(3, np.float32)}))
    with pytest.raises(ArtifactError, match="weights.bin"):
        CompiledModel.load(out)


def test_future_versions_are_refused(tmp_path):
    _, out = _saved(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="format version"):
        CompiledModel.load(out)
    _, out = _saved(tmp_path / "b")
    blob = bytearray((out / "weights.bin").read_bytes())
    blob[4] = 9  # container version from the future
    (out / "weights.bin").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match=r"weights\.bin.*version 9"):
        CompiledModel.load(out)


def test_version_1_directory_still_loads(tmp_path):
    cm, out = _saved(tmp_path, compress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert "weights" not in meta
    meta["format_version"] = 1
    (out / "meta.json").write_text(json.dumps(meta))
    loaded = CompiledModel.load(out)
    for k, v in _constants(cm.graph).items():
        assert _constants(loaded.graph)[k].tobytes() == v.tobytes()


def test_quantized_and_shared_model_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    calib = [{"input": rng.standard_normal((1, 1, 28, 28)).astype(np.float32)} for _ in range(8)]
    cm = compiler.compile(ROOT / "baselines" / "lenet5_mnist.onnx", target="host",
                          passes=["fold-bn", "quantize{bits=4}", "share-weights{clusters=4}"],
                          calibration_data=calib, build=False)
    loaded = CompiledModel.load(cm.save(tmp_path / "q", compress=True))
    a, b = _constants(cm.graph), _constants(loaded.graph)
    assert any(v.dtype == np.int8 for v in a.values())
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    x = calib[0]["input"]
    np.testing.assert_array_equal(Interpreter(loaded.graph).run({"input": x})[0],
                                  Interpreter(cm.graph).run({"input": x})[0])

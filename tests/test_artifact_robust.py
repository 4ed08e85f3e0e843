"""Damaged, foreign and contended artifact directories (issue #22 items 3 and 6)."""
import json
import multiprocessing
import os

import pytest

import compiler
from compiler import CompiledModel
from compiler.artifact import ArtifactError
from conftest import model_path


@pytest.fixture(scope="module")
def tiny():
    return compiler.compile(model_path("tinynet"), passes=["fold-bn"])


def test_every_file_is_checksummed(tiny, tmp_path):
    out = tiny.save(tmp_path / "m")
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["files"]) == {"model.onnx", "model.so"}


@pytest.mark.parametrize("name", ["model.so", "model.onnx"])
def test_one_flipped_bit_is_refused_on_load(tiny, tmp_path, name):
    out = tiny.save(tmp_path / "m")
    data = bytearray((out / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name}: checksum does not match"):
        CompiledModel.load(out)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"format_version": "x"}',
                                  '{"format_version": 3}',
                                  '{"format_version": 3, "target": "host", "files": []}',
                                  '{"format_version": 3, "target": "host", "files": {},'
                                  ' "library": "../../etc/passwd"}'])
def test_malformed_meta_json_is_a_clear_error(tiny, tmp_path, text):
    out = tiny.save(tmp_path / "m")
    (out / "meta.json").write_text(text)
    with pytest.raises(ArtifactError, match="meta.json"):
        CompiledModel.load(out)


def test_save_refuses_a_foreign_directory_or_file(tiny, tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ArtifactError, match="not a compiled model"):
        tiny.save(foreign)
    assert (foreign / "holiday.jpg").read_bytes() == b"precious"
    file = tmp_path / "notes.txt"
    file.write_text("keep")
    with pytest.raises(ArtifactError, match="not a compiled model directory"):
        tiny.save(file)
    assert file.read_text() == "keep"


def test_resave_replaces_our_artifact_and_cleans_stale_temporaries(tiny, tmp_path):
    out = tiny.save(tmp_path / "m")
    stale = tmp_path / ".m.tmp-killed"  # what a kill -9 during save leaves behind
    stale.mkdir()
    (stale / "model.so").write_bytes(b"half")
    tiny.save(out)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.tmp-")) == []
    CompiledModel.load(out)


def _save_in_child(args):
    path, seed = args
    cm = CompiledModel.load(path + "_src")
    cm.built = None  # a loaded library cannot be exported again: save the structure only
    cm.save(path)
    return seed


def test_concurrent_saves_to_one_folder_take_turns(tiny, tmp_path):
    src = tiny.save(tmp_path / "m_src")
    dest = str(tmp_path / "m")
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        done = pool.map(_save_in_child, [(dest, i) for i in range(8)])
    assert done == list(range(8))  # no save raised
    loaded = CompiledModel.load(dest)  # whole: every checksum matches
    assert loaded.output_names == tiny.output_names
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
    assert src.exists()


def test_zero_input_shape_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(compiler.ModelImportError, match="positive"):
        compiler.compile(model_path("tinynet"), input_shapes={"input": (0, 1, 28, 28)})


def test_compressed_report_states_the_deployed_bytes_honestly(tiny, tmp_path):
    out = tiny.save(tmp_path / "c", compress=True)
    lib = (out / "model.so").stat().st_size
    blob = (out / "weights.bin").stat().st_size
    text = str(CompiledModel.load(out).report())
    c = tiny.compression
    assert c["deployed_bytes"] == lib + blob and c["library_embeds_weights"] is False
    assert "deployed (lib+weights)" in text and "the deployment is not compressed" not in text


def test_a_loaded_model_saves_again_plain_and_compressed(tiny, tmp_path):
    """TVM cannot serialize a loaded library ("does not support SaveToBytes"): save copies
    the file it was loaded from, and the copies run the same."""
    import numpy as np

    first = tiny.save(tmp_path / "a")
    loaded = CompiledModel.load(first)
    loaded.save(tmp_path / "b")
    loaded.save(tmp_path / "c", compress=True)
    x = np.random.default_rng(0).standard_normal(tiny.graph.inputs[0].shape).astype(np.float32)
    want = tiny.run([x])[0]
    for name in ("b", "c"):
        np.testing.assert_array_equal(CompiledModel.load(tmp_path / name).run([x])[0], want)
    (first / "model.so").unlink()
    with pytest.raises(ArtifactError, match="the library this model was loaded from"):
        loaded.save(tmp_path / "d")
    assert not (tmp_path / "d").exists()

"""Compressed artifacts deploy compressed (issue #22): the library of a TVM target is
code only, its weights are parameters of ``main`` that ``load`` derives from the graph
(decoded from weights.bin) and binds; outputs equal the embedded build's bit for bit."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler import CompiledModel
from compiler.artifact import ArtifactError
from targets import get_target

ROOT = Path(__file__).resolve().parents[2]
LENET = ROOT / "baselines" / "lenet5_mnist.onnx"
PASSES = ["fold-bn", "magnitude-prune{sparsity=0.8}", "share-weights{clusters=16}"]


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 1, 28, 28)).astype(np.float32)


def _embedded(cm):
    """The same graph built the old way: weights embedded in the library."""
    target = dataclasses.replace(cm.target, weights_as_params=False)
    return CompiledModel(cm.graph, target, target.build(cm.graph))


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    cm = compiler.compile(LENET, target="host", passes=PASSES)
    out = cm.save(tmp_path_factory.mktemp("fp32") / "m", compress=True)
    return cm, out


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    calib = [{"input": _x(s)} for s in range(4)]
    cm = compiler.compile(LENET, target="host", passes=PASSES + ["quantize{bits=8}"],
                          calibration_data=calib)
    assert {n.domain for n in cm.graph.topo_order()} >= {"q"}
    out = cm.save(tmp_path_factory.mktemp("int8") / "m", compress=True)
    return cm, out


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_loaded_compressed_model_equals_the_embedded_build(request, which, tmp_path):
    cm, out = request.getfixturevalue(which)
    loaded = CompiledModel.load(out)
    embedded = _embedded(cm)
    for seed in range(2):
        ref = embedded.run([_x(seed)])[0]
        np.testing.assert_array_equal(cm.run([_x(seed)])[0], ref)
        np.testing.assert_array_equal(loaded.run([_x(seed)])[0], ref)
    # the weights left the library: it shrank by at least their bytes
    embedded_lib = embedded.target.export(embedded.built, tmp_path / "embedded.so") \
        or (tmp_path / "embedded.so").stat().st_size
    lib = (out / "model.so").stat().st_size
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["count"] >= 5 and meta["params"]["bytes"] > 0
    assert lib <= embedded_lib - 0.9 * meta["params"]["bytes"]
    if which == "fp32":  # fp32 weights dominate lenet5's embedded library
        assert lib < embedded_lib / 3, (lib, embedded_lib)


def test_report_shows_library_plus_weights_as_deployed(fp32):
    cm, out = fp32
    lib = (out / "model.so").stat().st_size
    blob = (out / "weights.bin").stat().st_size
    c = CompiledModel.load(out).compression
    assert c["library_bytes"] == lib and c["deployed_bytes"] == lib + blob
    assert c["library_embeds_weights"] is False
    text = str(CompiledModel.load(out).report())
    assert "deployed (lib+weights)" in text and "not compressed" not in text
    assert "library (code only)" in text
    # the deployment is smaller than the fp32 weights alone
    assert lib + blob < cm.original_stats.param_bytes


def test_flipped_bit_in_weights_bin_is_still_caught(fp32, tmp_path):
    import shutil

    dest = tmp_path / "m"
    shutil.copytree(fp32[1], dest)
    blob = bytearray((dest / "weights.bin").read_bytes())
    blob[len(blob) // 3] ^= 0x10
    (dest / "weights.bin").write_bytes(bytes(blob))
    with pytest.raises(ArtifactError, match="weights.bin"):
        CompiledModel.load(dest)


def test_weights_that_differ_from_the_build_are_refused(fp32, tmp_path):
    """meta.json's digest of the derived weights is checked, so a replay that would not
    reproduce the build's arrays is an error, never wrong outputs."""
    import shutil

    dest = tmp_path / "m"
    shutil.copytree(fp32[1], dest)
    meta = json.loads((dest / "meta.json").read_text())
    meta["params"]["sha256"] = "0" * 64
    (dest / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="weights cannot be restored"):
        CompiledModel.load(dest)
    meta["params"] = {"layout": 3}
    (dest / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="'params'"):
        CompiledModel.load(dest)


def test_uncompressed_and_packed_layout_artifacts_bind_their_weights(fp32, tmp_path):
    """Uncompressed directories take their weights from model.onnx; a packed (nchwc)
    build replays the weight packing at load."""
    graph = fp32[0].graph
    target = get_target("host").with_layout("nchwc")
    cm = CompiledModel(graph, target, target.build(graph))
    assert cm.built.recipe["layout"] == "nchwc"
    out = cm.save(tmp_path / "m")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["layout"] == "nchwc" and "weights" not in meta
    loaded = CompiledModel.load(out)
    assert loaded.target.layout == "auto"  # the recipe, not the target, says nchwc
    np.testing.assert_array_equal(loaded.run([_x()])[0], cm.run([_x()])[0])
    np.testing.assert_array_equal(loaded.run([_x()])[0], _embedded(cm).run([_x()])[0])
    np.testing.assert_allclose(loaded.run([_x()])[0], fp32[0].run([_x()])[0], rtol=1e-5,
                               atol=1e-5)


def test_tuning_tasks_are_those_of_the_embedded_build(fp32):
    """Weights as parameters must not change what MetaSchedule tunes: the fused kernels
    (their structural hashes, the database's workload keys) equal the embedded build's,
    so existing tuning records keep matching."""
    import tvm_ffi
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from targets.tvm.build import make_target
    from targets.tvm.layout import apply_layout

    graph = fp32[0].graph
    target = get_target("host").with_layout("nchwc")
    tgt = make_target(target.target_dict())

    def keys(mod):
        tasks = ms.relax_integration.extract_tasks(relax.get_pipeline("zero")(mod), tgt)
        return sorted(tvm_ffi.structural_hash(t.dispatched[0]) for t in tasks)

    old, _ = apply_layout(target.lower(graph), "nchwc", target.target_dict())
    new, arrays, recipe = target._prepare(graph, True)
    assert recipe["folded"] and recipe["layout"] == "nchwc" and arrays
    assert keys(new) == keys(old) and len(keys(old)) >= 5

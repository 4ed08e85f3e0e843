"""share-weights: k-means codebooks per layer / global, zeros kept, integer weights,
options, annotation, centroid fine-tuning."""
import numpy as np
import pytest

from compiler.compression import compress_graph, decode_container
from compiler.interpreter import Interpreter
from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, PassOptionError, parse_pass, registered_passes
from conftest import model_input, model_path
from passes.pruning.magnitude import weight_layers
from passes.weight_sharing import kmeans_1d, share_weights, shared_weights


def _graph(name="tinynet"):
    return parse_pass("fold-bn")(import_model(model_path(name)), PassContext()).graph


def test_registered_and_options_checked():
    assert "share-weights" in registered_passes()
    p = parse_pass("share-weights{clusters=8,scope=global,init=kmeans++}")
    assert (p.clusters, p.scope, p.init) == (8, "global", "kmeans++")
    for bad in ("clusters=1", "clusters=257", "clusters=0", "bias_clusters=300"):
        with pytest.raises(PassOptionError, match=bad.split("=")[0] + ".*2..256"):
            parse_pass("share-weights{" + bad + "}")
    with pytest.raises(PassOptionError, match="clusters"):
        parse_pass("share-weights{clusters=many}")
    with pytest.raises(PassOptionError, match="scope"):
        parse_pass("share-weights{scope=model}")
    with pytest.raises(PassOptionError, match="train_data"):
        parse_pass("share-weights{finetune_epochs=1}")(_graph(), PassContext())


@pytest.mark.parametrize("init", ["linear", "kmeans++"])
def test_kmeans_1d(init):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.01, 500) for c in (-1.0, 0.5, 2.0)])
    c = kmeans_1d(x, 3, init)
    np.testing.assert_allclose(c, [-1.0, 0.5, 2.0], atol=0.01)
    assert list(kmeans_1d(np.array([1.0, 1.0, 2.0]), 8, init)) == [1.0, 2.0]
    assert kmeans_1d(np.zeros(0), 4, init).size == 0


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_per_layer_and_global_codebooks_keep_zeros(scope):
    g = _graph("resnet_tiny")
    g = parse_pass("magnitude-prune{sparsity=0.5}")(g, PassContext()).graph
    before = {n.name: n.inputs[1].const.copy() for n in weight_layers(g)}
    x = model_input("resnet_tiny")
    ref = Interpreter(g).run({g.inputs[0].name: x})[0]
    result = parse_pass(f"share-weights{{clusters=16,scope={scope}}}")(g.clone(), PassContext())
    out = result.graph
    assert result.modified and len(result.stats["layers"]) == len(before)
    union = set()
    for n in weight_layers(out):
        w = n.inputs[1].const
        nz = np.unique(w[w != 0])
        assert len(nz) <= 16
        union |= set(nz.tolist())
        np.testing.assert_array_equal(w == 0, before[n.name] == 0)  # sparsity kept exactly
        book, idx = shared_weights(n.inputs[1])
        np.testing.assert_array_equal(book[idx], w)
    if scope == "global":
        assert len(union) <= 16
    got = Interpreter(out).run({out.inputs[0].name: x})[0]
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert 0 < rel < 0.2  # an approximation, close to the original
    # fewer distinct values -> the lossless container shrinks
    assert len(compress_graph(out)) < 0.5 * len(compress_graph(g))


def test_more_clusters_is_more_accurate():
    g = _graph("resnet_tiny")
    x = model_input("resnet_tiny")
    ref = Interpreter(g).run({g.inputs[0].name: x})[0]
    errs = []
    for k in (2, 8, 64):
        out, st = share_weights(g.clone(), clusters=k)
        errs.append(np.abs(Interpreter(out).run({out.inputs[0].name: x})[0] - ref).max())
    assert errs[0] > errs[1] > errs[2]


def test_bias_clusters_and_annotation_survives_clone_but_not_edits():
    g, st = share_weights(_graph(), clusters=4, bias_clusters=2)
    biases = [n.inputs[2] for n in weight_layers(g) if len(n.inputs) > 2 and n.inputs[2] is not None]
    assert biases and all(len(np.unique(b.const)) <= 2 for b in biases)
    clone = g.clone()
    w = weight_layers(clone)[0].inputs[1]
    assert shared_weights(w) is not None
    w.const = w.const + 1.0  # stale annotation: ignored, never trusted
    assert shared_weights(w) is None


def test_quantized_graph_keeps_integer_weights_in_range():
    g = _graph()
    calib = [{g.inputs[0].name: model_input("tinynet", seed=s)} for s in range(4)]
    q = parse_pass("quantize{bits=8}")(g, PassContext(calibration_data=calib)).graph
    ints = {v.name: v.const.copy() for v in q.constants if v.dtype == np.int8 and v.const.ndim >= 2}
    assert ints
    out = parse_pass("share-weights{clusters=4}")(q.clone(), PassContext()).graph
    for v in out.constants:
        if v.name in ints:
            assert v.dtype == np.int8
            nz = np.unique(v.const[v.const != 0])
            assert len(nz) <= 4
            assert v.const.min() >= ints[v.name].min() and v.const.max() <= ints[v.name].max()
    x = model_input("tinynet")
    Interpreter(out).run({out.inputs[0].name: x})  # still a valid integer graph
    blob = compress_graph(out)
    assert decode_container(blob).keys()


def test_centroid_finetuning_moves_centroids_not_memberships():
    pytest.importorskip("torch")
    import torch

    torch.set_num_threads(1)
    from compiler.datasets import Dataset

    g = _graph()
    g = parse_pass("magnitude-prune{sparsity=0.5}")(g, PassContext()).graph
    g, _ = share_weights(g, clusters=4)
    rng = np.random.default_rng(0)
    data = Dataset("rand", rng.integers(0, 255, (64, 28, 28), dtype=np.uint8),
                   rng.integers(0, 10, 64), 10)
    out = parse_pass("share-weights{clusters=4,finetune_epochs=1}")(
        g.clone(), PassContext(options={"train_data": data, "finetune_lr": 1e-2,
                                        "finetune_max_batches": 3})).graph
    moved = False
    for a, b in zip(weight_layers(g), weight_layers(out)):
        wa, wb = a.inputs[1].const, b.inputs[1].const
        np.testing.assert_array_equal(wa == 0, wb == 0)
        assert len(np.unique(wb[wb != 0])) <= 4
        ia, ib = shared_weights(a.inputs[1])[1], shared_weights(b.inputs[1])[1]
        np.testing.assert_array_equal(ia, ib)  # same clusters, moved centroids
        moved |= not np.array_equal(wa, wb)
    assert moved


def test_bf16_centroids_halve_the_codebooks_losslessly():
    from compiler.compression import encode_tensor

    g = _graph("resnet_tiny")
    a, _ = share_weights(g.clone(), clusters=64)
    b, _ = share_weights(g.clone(), clusters=64, bf16=True)
    for n0, na, nb in zip(weight_layers(g), weight_layers(a), weight_layers(b)):
        w0, wa, wb = n0.inputs[1].const, na.inputs[1].const, nb.inputs[1].const
        assert not np.any(wb.view(np.uint32) & 0xFFFF)  # bfloat16 values, stored as float32
        assert np.mean((wb - w0) ** 2) <= 1.2 * np.mean((wa - w0) ** 2) + 1e-9
        book_a = len(np.unique(na.inputs[1].const))
        if book_a >= 32:
            assert len(encode_tensor(wb)[1]) < len(encode_tensor(na.inputs[1].const)[1])
    assert parse_pass("share-weights{bf16=true}").bf16 is True

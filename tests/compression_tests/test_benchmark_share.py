"""The Deep-Compression sharing schedule (`passes.gradual_prune.share_layers`, formerly
benchmarks/compression.py's ``share``): per-layer cluster counts (fully connected k,
convolutions >= conv_clusters, small layers >= small_clusters) and bias clusters; and the
benchmark's channel stage."""
import importlib.util
import sys
from pathlib import Path

import numpy as np

from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, parse_pass
from conftest import model_path
from passes.gradual_prune import share_layers
from passes.pruning.magnitude import weight_layers

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("compression_bench",
                                                  ROOT / "benchmarks" / "compression.py")
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(mod)  # the script puts the repo and benchmarks/ on sys.path
    finally:
        sys.path[:] = saved
    return mod


def _distinct(a):
    return np.unique(a[a != 0]).size


def test_small_layers_get_more_clusters_and_biases_follow_the_option():
    g = parse_pass("fold-bn")(import_model(model_path("dwsep_tiny")), PassContext()).graph
    before = {n.name: (n.inputs[1].const.copy(), n.inputs[2].const.copy())
              for n in weight_layers(g)}
    plain = share_layers(g.clone(), 4, bias_clusters=8)
    small = share_layers(g.clone(), 4, bias_clusters=0, small_layer=600, small_clusters=64)
    for a, b in zip(weight_layers(plain), weight_layers(small)):
        w0, b0 = before[a.name]
        conv = a.op_type == "Conv"
        assert _distinct(a.inputs[1].const) <= (16 if conv else 4)
        assert _distinct(a.inputs[2].const) <= 8
        np.testing.assert_array_equal(a.inputs[1].const == 0, w0 == 0)  # zeros kept
        if w0.size <= 600:  # depthwise convs, the first conv: a 64-entry codebook
            assert 16 < _distinct(b.inputs[1].const) <= 64
            err_a = np.mean((a.inputs[1].const - w0) ** 2)
            assert np.mean((b.inputs[1].const - w0) ** 2) < err_a
        else:
            assert b.inputs[1].const.tobytes() == a.inputs[1].const.tobytes()
        assert b.inputs[2].const.tobytes() == b0.tobytes()  # bias_clusters=0: fp32 biases
        assert not np.any(b.inputs[1].const.view(np.uint32) & 0xFFFF)  # bfloat16 values


def test_channel_stage_removes_whole_channels_before_magnitude_pruning():
    from compiler.analysis import model_stats
    from compiler.interpreter import Interpreter

    bench = _bench()
    g = parse_pass("fold-bn")(import_model(model_path("dwsep_tiny")), PassContext()).graph
    params = model_stats(g).params
    x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(np.float32)
    logs = []
    out, info = bench.channel_stage(g, 0.4, None, 0, 1e-3, None, lambda _: 0.5, logs.append)
    assert model_stats(g).params == params  # the input graph is not touched
    assert info["params"] == [params, model_stats(out).params]
    assert model_stats(out).params <= 0.7 * params and info["layers"]  # estimate: ~0.4
    for layer in weight_layers(out):  # no zero filters left behind: channels are gone
        w = layer.inputs[1].const
        assert np.all(np.abs(w.reshape(w.shape[0], -1)).sum(1) > 0)
    assert Interpreter(out).run([x])[0].shape == Interpreter(g).run([x])[0].shape
    assert len(logs) == 2

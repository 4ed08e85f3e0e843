"""prune-unused: channels no later layer reads go, and the outputs stay those of the unpruned
graph (checked against onnxruntime on the graph with the zeros in place)."""
import numpy as np

from compiler import import_model
from compiler.analysis import model_stats
from compiler.interpreter import run
from compiler.onnx_io import export_model
from compiler.pass_manager import PassContext, parse_pass
from conftest import ROOT, assert_close, model_input, model_path, ort_run
from passes.pruning import prune_unused

LENET = ROOT / "baselines" / "lenet_caffe_mnist.onnx"


def _layers(graph):
    return {n.name: n for n in graph.nodes if n.op_type in ("Conv", "Gemm")}


def _check_against_ort(zeroed, pruned, x):
    ref = ort_run(export_model(zeroed), {zeroed.inputs[0].name: x})[0]
    assert_close(run(pruned, {pruned.inputs[0].name: x})[0], ref, what="pruned graph")


def test_lenet_neurons_and_channels_that_feed_only_zeros_are_removed_in_cascade():
    graph = import_model(LENET)
    layers = _layers(graph)
    fc1, fc2 = layers["/classifier/classifier.1/Gemm"], layers["/classifier/classifier.3/Gemm"]
    conv2 = layers["/features/features.2/Conv"]
    fc2.inputs[1].const[:, 100:] = 0          # fc1 neurons 100..499 feed nothing
    fc1.inputs[1].const[:, 160:480] = 0       # conv2 channels 10..29 (16 features each)
    conv2.inputs[1].const[:, 5:8] = 0         # conv1 channels 5..7
    fc1.inputs[1].const[3, 500] = 0.0         # one zero in a live slice changes nothing
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    pruned, stats = prune_unused(graph.clone())
    shapes = {k: n.inputs[1].shape for k, n in _layers(pruned).items()}
    assert shapes == {"/features/features.0/Conv": (17, 1, 5, 5),
                      "/features/features.2/Conv": (30, 17, 5, 5),
                      "/classifier/classifier.1/Gemm": (100, 480),
                      "/classifier/classifier.3/Gemm": (10, 100)}
    assert stats["channels_removed"] == 3 + 20 + 400
    assert model_stats(pruned).params < model_stats(graph).params / 6
    _check_against_ort(graph, pruned, x)
    again, st = prune_unused(pruned.clone())
    assert st == {"channels_removed": 0, "rounds": []}


def test_a_single_nonzero_consumer_weight_keeps_the_channel():
    graph = import_model(LENET)
    fc2 = _layers(graph)["/classifier/classifier.3/Gemm"]
    fc2.inputs[1].const[:, 1:] = 0
    fc2.inputs[1].const[7, 42] = 0.5          # neuron 42 is read by one output
    res = parse_pass("prune-unused")(graph.clone(), PassContext())
    assert res.modified and res.stats["channels_removed"] == 498
    assert _layers(res.graph)["/classifier/classifier.1/Gemm"].inputs[1].shape == (2, 800)
    x = np.random.default_rng(1).standard_normal((1, 1, 28, 28)).astype(np.float32)
    _check_against_ort(graph, res.graph, x)


def test_residual_stage_goes_only_when_every_reader_of_the_shared_channel_is_zero():
    graph = import_model(model_path("resnet_tiny"))
    x = model_input("resnet_tiny")
    assert prune_unused(graph.clone())[1]["channels_removed"] == 0
    # residual stage 2 (layer2.conv2 + shortcut + layer3.conv2, joined by the adds): its
    # channel 0 is read by layer3.conv1 and, through the last add and the pool, by fc
    _layers(graph)["/layer3/conv1/Conv"].inputs[1].const[:, 0] = 0
    kept, st = prune_unused(graph.clone())
    assert st["channels_removed"] == 0        # fc still reads it
    _layers(graph)["/fc/Gemm"].inputs[1].const[:, 0] = 0
    pruned, st = prune_unused(graph.clone())
    assert st["channels_removed"] == 1
    shapes = {k: n.inputs[1].shape for k, n in _layers(pruned).items()}
    assert shapes["/layer2/conv2/Conv"][0] == shapes["/layer2/shortcut/shortcut.0/Conv"][0] \
        == shapes["/layer3/conv2/Conv"][0] == 31
    assert shapes["/fc/Gemm"] == (10, 31) and shapes["/layer3/conv1/Conv"] == (32, 31, 3, 3)
    _check_against_ort(graph, pruned, x)

"""benchmarks/lenet_bytes.py (container bytes against pruning density, no training) and the
byte breakdown seeds.py prints under the LeNet row."""
import importlib.util
import sys

import pytest

from conftest import ROOT


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, mod)
    spec.loader.exec_module(mod)
    return mod


def test_denser_models_cost_more_and_prune_unused_removes_dead_neurons():
    lb = _load("lenet_bytes")
    sparse, dense = lb.sizes(0.01, 4), lb.sizes(0.05, 4)
    assert dense["coded"] > 3 * sparse["coded"]
    # at 1 % the last layer keeps ~9 % of its 5,000 weights: most hidden neurons feed nothing
    assert sparse["channels_removed"] > 100 and sparse["nonzero"] < sparse["nonzero_before_unused"]
    assert sparse["ratio"] == pytest.approx(1_724_320 / sparse["coded"], abs=0.05)
    assert 8 * sparse["coded"] / sparse["nonzero"] == pytest.approx(sparse["bits_per_nonzero"],
                                                                    abs=0.01)


def test_byte_breakdown_lists_the_largest_constant_first_and_the_container_overhead():
    import compiler
    from compiler.compression import compress_graph

    seeds = _load("seeds")
    graph = seeds._folded(compiler.import_model(ROOT / "baselines" / "lenet_caffe_mnist.onnx"))
    blob = compress_graph(graph)
    text = seeds.byte_breakdown(graph, len(blob))
    assert text.startswith("classifier.1.weight [500, 800]: ")
    assert "400,000 non-zeros" in text and "container header, names" in text

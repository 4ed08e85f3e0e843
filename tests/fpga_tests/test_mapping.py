"""Mapping integer graphs to hardware stages: every shipped baseline maps; bad graphs are
named; compression (pruning, bits, weight sharing, sparsity) changes the hardware."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler import PassContext
from compiler.folding import infer_node
from compiler.ir import Graph
from compiler.onnx_io import import_model

from targets.fpga_sim.design import build_design, design_from_pipeline
from targets.fpga_sim.folding import totals, unity
from targets.fpga_sim.mapping import map_graph
from targets.fpga_sim.options import FpgaOptions, FpgaSimError
from targets.fpga_sim.parts import get_part

ROOT = Path(__file__).resolve().parents[2]
BASELINES = sorted(p.stem for p in (ROOT / "baselines").glob("*.onnx"))
_CACHE: dict = {}


def quantized(name: str, passes: tuple[str, ...] = ("fold-bn", "quantize")) -> Graph:
    key = (name, passes)
    if key not in _CACHE:
        path = ROOT / "baselines" / f"{name}.onnx"
        g = import_model(path)
        rng = np.random.default_rng(0)
        calib = [{g.inputs[0].name:
                  rng.standard_normal((2,) + tuple(g.inputs[0].shape[1:])).astype(np.float32)}]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[key] = compiler.optimize(str(path), list(passes),
                                            ctx=PassContext(calibration_data=calib))[1]
    return _CACHE[key]


def _mvaus(pipeline):
    return [s for s in pipeline.stages if s.unit in ("MVAU", "VVAU")]


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_quantized_8_8_maps(name):
    g = quantized(name)
    p = map_graph(g)
    n_layers = sum(1 for n in g.topo_order()
                   if n.domain == "q" and n.op_type in ("Conv", "Gemm", "ConvTranspose"))
    assert len(_mvaus(p)) == n_layers > 0
    assert p.stages[0].unit == "IODMA" and p.stages[-1].unit == "IODMA"
    names = {s.node for s in p.stages}
    assert all(set(p.preds[s.node]) <= names for s in p.stages)   # a connected pipeline
    assert all(s.weight_bits == 8 for s in _mvaus(p))
    d = design_from_pipeline(p, unity(p), get_part("xczu7ev"), FpgaOptions(), "unity")
    assert d.ii_cycles == max(s.cycles(1, 1) for s in p.stages) and d.fps > 0


def test_resnet_has_residual_adds_and_stream_forks():
    p = map_graph(quantized("resnet_fmnist"))
    units = [s.unit for s in p.stages]
    assert units.count("AddStreams") >= 1 and units.count("DuplicateStreams") >= 1
    add = next(s for s in p.stages if s.unit == "AddStreams")
    assert len(p.preds[add.node]) == 2


def test_mobilenet_depthwise_maps_to_vvau():
    p = map_graph(quantized("mobilenet_fmnist"))
    vv = [s for s in p.stages if s.unit == "VVAU"]
    assert vv and all(s.k == 9 for s in vv)


def test_float_graph_says_run_quantize():
    g = import_model(ROOT / "baselines" / "plaincnn_fmnist.onnx")
    with pytest.raises(FpgaSimError, match="run the 'quantize' pass first"):
        map_graph(g)


def test_unsupported_op_names_op_node_and_supported_list():
    g = Graph("t")
    x = g.add_input("x", (1, 4), np.float32)
    q = g.add_node("Quantize", [x], {"scale": 0.1, "zero_point": 0, "qmin": -128, "qmax": 127,
                                     "bits": 8}, name="quant", domain="q")
    infer_node(q)
    g.add_node("Tanh", [q.outputs[0]], name="my_tanh")
    with pytest.raises(FpgaSimError, match=r"op Tanh \(node 'my_tanh'\).*supported: q.Quantize"):
        map_graph(g)


def test_structured_pruning_shrinks_mh_mw():
    dense = _mvaus(map_graph(quantized("vgg_fmnist")))
    pruned = _mvaus(map_graph(quantized("vgg_fmnist", ("fold-bn", "prune{ratio=0.5}", "quantize"))))
    assert len(dense) == len(pruned)
    assert pruned[0].mh < dense[0].mh                      # fewer filters
    assert pruned[1].mw < dense[1].mw                      # fewer input channels downstream
    pd, pp = map_graph(quantized("vgg_fmnist")), map_graph(
        quantized("vgg_fmnist", ("fold-bn", "prune{ratio=0.5}", "quantize")))
    assert max(s.cycles(1, 1) for s in pp.stages) < max(s.cycles(1, 1) for s in pd.stages)


def test_lower_bits_shrink_lut_and_bram():
    p8 = map_graph(quantized("lenet5_mnist"))
    p4 = map_graph(quantized("lenet5_mnist", ("fold-bn", "quantize{bits=4,act_bits=4}")))
    assert all(s.weight_bits == 4 for s in _mvaus(p4))
    t8, t4 = totals(p8, unity(p8)), totals(p4, unity(p4))
    assert t4["LUT"] < t8["LUT"] and t4["BRAM_18K"] < t8["BRAM_18K"]


def test_binary_weights_are_one_bit():
    p1 = map_graph(quantized("lenet5_mnist", ("fold-bn", "quantize{bits=1}")))
    assert any(s.weight_bits == 1 for s in _mvaus(p1))


def test_weight_sharing_stores_index_bits_and_a_codebook():
    plain = _mvaus(map_graph(quantized("plaincnn_fmnist")))
    shared = _mvaus(map_graph(quantized("plaincnn_fmnist",
                                        ("fold-bn", "quantize", "share-weights{clusters=4}"))))
    big = max(range(len(plain)), key=lambda i: plain[i].mw * plain[i].mh)
    # 4 centroids (+ an exact-zero entry when the layer has zeros): ceil(log2 k)-bit indices
    k = shared[big].codebook
    assert k in (4, 5) and plain[big].codebook == 0
    assert shared[big].weight_bits == int(np.ceil(np.log2(k))) < plain[big].weight_bits == 8
    assert shared[big].weight_bram(1, 1) < plain[big].weight_bram(1, 1)
    assert shared[big].resources(1, 1)["lut_codebook"] > 0


def test_sparse_skip_is_opt_in_and_cuts_cycles_of_unstructured_zeros():
    g = quantized("lenet5_mnist", ("fold-bn", "magnitude-prune{sparsity=0.8}", "quantize"))
    dense = build_design(g, FpgaOptions(part="xczu7ev", folding={}))
    skip = build_design(g, FpgaOptions(part="xczu7ev", folding={}, sparse_skip=True))
    fc = lambda d: {l.node: l.cycles for l in d.layers if l.unit == "MVAU"}  # noqa: E731
    assert all(fc(skip)[k] <= v for k, v in fc(dense).items())
    assert sum(fc(skip).values()) < 0.5 * sum(fc(dense).values())

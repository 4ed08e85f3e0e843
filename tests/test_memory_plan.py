"""The static memory planner: lifetimes, placement against brute force, the validator,
views and in-place sharing, memory-aware order, and the bound on every shipped model."""
import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import parser

from compiler import import_model
from compiler.analysis import peak_activation_bytes
from compiler.memory_plan import (MemoryPlanError, Record, lifetimes, lower_bound, memory_order,
                                  place, plan_memory, validate)

ROOT = Path(__file__).resolve().parents[1]


def _graph(body: str, inputs: str = "float[1,8,16,16] x", outputs: str = "float[1,8,16,16] y"):
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    g ({inputs}) => ({outputs}) {{ {body} }}"""
    return import_model(parser.parse_model(text))


def chain():
    return _graph("a = Relu(x)\n b = Sigmoid(a)\n c = Neg(b)\n y = Abs(c)")


def diamond():
    return _graph("a = Relu(x)\n b = Sigmoid(a)\n c = Neg(a)\n y = Add(b, c)")


def residual():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,16,16] x) => (float[1,8,16,16] y)
    <float[4] s = {1.0, 1.0, 2.0, 2.0}> {
      a = Relu(x)
      b = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)
      c = Neg(b)
      d = Resize <mode="nearest"> (c, , s)
      y = Add(a, d)
    }"""
    return import_model(parser.parse_model(text))


def concat():
    return _graph("a = Relu(x)\n b = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)\n"
                  " c = Neg(b)\n d = Sigmoid(b)\n y = Concat <axis=1> (c, d)",
                  outputs="float[1,16,8,8] y")


GRAPHS = {"chain": chain, "diamond": diamond, "residual": residual, "concat": concat}


def _brute_force_arena(records):
    """Optimal arena by exhaustion, written independently of the planner: every order of
    placing the records, each at the lowest offset that clashes with no placed record
    live at the same time (any optimal packing is reached by one such order)."""
    best = None
    for perm in itertools.permutations(records):
        placed = []
        for r in perm:
            clash = [(o, q) for o, q in placed if r.first <= q.last and q.first <= r.last]
            for offset in sorted({0} | {o + q.size for o, q in clash}):
                if all(offset + r.size <= o or o + q.size <= offset for o, q in clash):
                    placed.append((offset, r))
                    break
        top = max(o + q.size for o, q in placed)
        best = top if best is None else min(best, top)
    return best


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("strategy", ["greedy_by_size", "first_fit"])
def test_placement_is_optimal_on_small_graphs(name, strategy):
    g = GRAPHS[name]()
    for views, in_place in [(True, False), (True, True)]:
        records = lifetimes(g, views=views, in_place=in_place)
        assert len(records) <= 7
        plan = plan_memory(g, strategy, views=views, in_place=in_place)
        assert plan.arena_bytes == _brute_force_arena(records)
        assert plan.arena_bytes >= plan.lower_bound


def test_a_skip_tensor_lives_until_its_last_reader():
    g = residual()
    names = {r.name: r for r in lifetimes(g)}
    # the skip tensor a lives from Relu (step 0) to the Add (the last step)
    assert names["a"].first == 0 and names["a"].last == len(g.nodes) - 1
    assert names["x"].first == -1 and names["y"].last == len(g.nodes)


def test_lifetimes_and_bound_match_the_analysis_liveness():
    for path in ["lenet5_mnist", "resnet_fmnist", "unet_seg"]:
        g = import_model(str(ROOT / "baselines" / f"{path}.onnx"))
        records = lifetimes(g, views=False, alignment=1)
        assert lower_bound(records) == peak_activation_bytes(g)


def test_validator_catches_overlap_and_missing_offsets():
    a = Record("a", 128, 0, 2, ("a",))
    b = Record("b", 64, 1, 3, ("b",))
    c = Record("c", 64, 3, 4, ("c",))
    validate([a, b, c], {"a": 0, "b": 128, "c": 0})  # c reuses a's bytes after a died
    with pytest.raises(MemoryPlanError, match="'a'.*'b'.*overlap"):
        validate([a, b, c], {"a": 0, "b": 64, "c": 0})
    with pytest.raises(MemoryPlanError, match="without an offset"):
        validate([a, b], {"a": 0})
    assert place([a, b, c], "naive") == {"a": 0, "b": 128, "c": 192}


def test_views_share_and_in_place_reuses_a_dying_input():
    text = """<ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,16,16] x) => (float[1,8,16,16] y) <int64[4] shp = {1, 8, 16, 16}> {
      a = Relu(x)
      f = Flatten(a)
      r = Sigmoid(f)
      y = Reshape(r, shp)
    }"""
    g = import_model(parser.parse_model(text))
    shared = {r.name: r.values for r in lifetimes(g)}
    assert shared["a"] == ("a", "f")
    assert "r" in shared and shared["r"] == ("r", "y")
    in_place = {r.name: r.values for r in lifetimes(g, in_place=True)}
    assert in_place["a"] == ("a", "f", "r", "y")  # Sigmoid writes over the dying a/f
    assert "x" in in_place and in_place["x"] == ("x",)  # graph inputs are never written


def test_memory_order_never_raises_the_bound():
    for path in ["resnet_fmnist", "unet_seg", "mobilenet_fmnist"]:
        g = import_model(str(ROOT / "baselines" / f"{path}.onnx"))
        assert plan_memory(g, order="memory").lower_bound <= plan_memory(g).lower_bound
        order = memory_order(g)
        assert sorted(n.name for n in order) == sorted(n.name for n in g.nodes)


def _conv_model():
    """x feeds branch A (1x1 conv 8 -> 64 -> 8 channels) and branch B (1x1 conv 8 -> 32,
    then a global average pool); y = A * B.  The exporter's order runs A first, so x
    stays alive across A's 64-channel peak; B first frees x before that peak."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in [("w1", (64, 8, 1, 1)), ("w2", (8, 64, 1, 1)),
                                   ("w3", (32, 8, 1, 1)), ("w4", (8, 32, 1, 1))]]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2"], ["a2"]),
             helper.make_node("Conv", ["x", "w3"], ["b1"]),
             helper.make_node("GlobalAveragePool", ["b1"], ["b2"]),
             helper.make_node("Conv", ["b2", "w4"], ["b3"]),
             helper.make_node("Mul", ["a2", "b3"], ["y"])]
    graph = helper.make_graph(
        nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_memory_order_runs_the_freeing_branch_before_the_peak():
    g = import_model(_conv_model())
    default = plan_memory(g)
    plan = plan_memory(g, order="memory")
    assert plan.lower_bound < default.lower_bound
    assert plan.arena_bytes == plan.lower_bound
    order = plan.order
    assert order.index(g.value("b2").producer.name) < order.index(g.value("a1").producer.name)


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "baselines").glob("*.onnx")))
def test_planner_reaches_the_bound_on_every_shipped_model(path):
    g = import_model(str(ROOT / "baselines" / path))
    for in_place in (False, True):
        plan = plan_memory(g, in_place=in_place)
        validate(plan.records, plan.offsets)
        assert plan.ratio <= 1.02, (path, in_place, plan.arena_bytes, plan.lower_bound)
        assert all(off % 64 == 0 for off in plan.offsets.values())
        naive = plan_memory(g, "naive", in_place=in_place)
        assert naive.arena_bytes >= plan.arena_bytes


def test_bad_options_are_clear_errors():
    g = chain()
    with pytest.raises(MemoryPlanError, match="unknown memory-plan strategy 'best'"):
        plan_memory(g, "best")
    with pytest.raises(MemoryPlanError, match="max_memory=100 bytes"):
        plan_memory(g, max_bytes=100)
    with pytest.raises(MemoryPlanError, match="order must be"):
        plan_memory(g, order="fastest")
    nodes = g.topo_order()
    with pytest.raises(MemoryPlanError, match="before its input"):
        plan_memory(g, order=list(reversed(nodes)))
    with pytest.raises(MemoryPlanError, match="every node"):
        plan_memory(g, order=nodes[:-1])

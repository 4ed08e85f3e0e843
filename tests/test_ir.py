"""The IR's use-def invariants, removal safety, ordering, cloning and printing."""
import numpy as np
import pytest

from compiler.ir import Graph, IRError


def small_graph():
    g = Graph("g")
    x = g.add_input("x", (1, 4), np.float32)
    w = g.add_constant("w", np.ones((4, 4), np.float32))
    a = g.add_node("MatMul", [x, w], name="mm").output
    b = g.add_node("Relu", [a], name="relu").output
    c = g.add_node("Add", [b, b], name="add").output  # same value read twice
    g.outputs.append(c)
    return g, x, w, a, b, c


def test_use_def_is_derived_from_edges():
    g, x, w, a, b, c = small_graph()
    assert a.producer.name == "mm" and x.producer is None and w.producer is None
    assert [(n.name, i) for n, i in b.uses] == [("add", 0), ("add", 1)]
    assert [n.name for n in b.consumers] == ["add"]
    add = c.producer
    assert add.inputs == (b, b)
    add.set_input(1, a)
    assert add.inputs == (b, a)
    assert [(n.name, i) for n, i in a.uses] == [("relu", 0), ("add", 1)]
    g.verify()


def test_replace_all_uses_with_moves_uses_and_graph_outputs():
    g, x, w, a, b, c = small_graph()
    assert g.replace_all_uses_with(b, a) == 2
    assert b.uses == [] and c.producer.inputs == (a, a)
    d = g.add_node("Neg", [a], name="neg").output
    g.replace_all_uses_with(c, d)
    assert g.outputs == [d]
    g.verify()


def test_safe_remove_refuses_used_or_output_values():
    g, x, w, a, b, c = small_graph()
    with pytest.raises(IRError, match="still used by add"):
        g.remove(b.producer)
    with pytest.raises(IRError, match="graph output"):
        g.remove(c.producer)
    assert len(g) == 3  # nothing changed
    g.replace_all_uses_with(b, a)
    g.remove(b.producer)
    assert [n.name for n in g.topo_order()] == ["mm", "add"]
    g.verify()


def test_topo_order_is_deterministic_and_follows_creation_order():
    g = Graph()
    x = g.add_input("x", (2,), np.float32)
    outs = [g.add_node("Relu", [x], name=f"r{i}").output for i in range(5)]
    s = g.add_node("Sum", outs, name="sum").output
    g.outputs.append(s)
    assert [n.name for n in g.topo_order()] == ["r0", "r1", "r2", "r3", "r4", "sum"]
    assert [n.name for n in g.clone().topo_order()] == ["r0", "r1", "r2", "r3", "r4", "sum"]


def test_verify_catches_cycles_and_dangling_values():
    g, x, w, a, b, c = small_graph()
    a.producer.set_input(0, c)  # mm now reads add's output: a cycle
    with pytest.raises(IRError, match="cycle"):
        g.verify()
    g2 = Graph()
    g2.add_input("x", (1,), np.float32)
    from compiler.ir import Value
    g2._adopt_value(Value("orphan", (1,), np.float32))
    with pytest.raises(IRError, match="no producer"):
        g2.verify()


def test_names_are_unique():
    g, *_ = small_graph()
    with pytest.raises(IRError, match="duplicate"):
        g.add_input("x", (1,), np.float32)
    assert g.add_constant("w", np.zeros(1)).name == "w_1"
    assert g.add_node("Relu", [g.inputs[0]], name="relu").name == "relu_1"


def test_clone_is_deep():
    g, x, w, a, b, c = small_graph()
    h = g.clone()
    assert h.to_text() == g.to_text()
    h.value("w").const[0, 0] = 5.0
    assert w.const[0, 0] == 1.0
    h.node("relu").attrs["alpha"] = 1
    assert "alpha" not in b.producer.attrs
    h.verify()


def test_remove_unused_drops_dead_nodes_and_constants():
    g, x, w, a, b, c = small_graph()
    g.add_node("Neg", [a], name="dead")
    g.add_constant("unused", np.zeros(3))
    assert g.remove_unused() == 2
    assert [n.name for n in g.topo_order()] == ["mm", "relu", "add"]


def test_printer_is_stable():
    g, x, w, a, b, c = small_graph()
    x.shape, a.shape, b.shape, c.shape = (1, 4), (1, 4), (1, 4), (1, 4)
    for v in (a, b, c):
        v.dtype = np.dtype(np.float32)
    b.producer.attrs["alpha"] = 0.1
    assert g.to_text() == (
        "graph g(%x: f32[1,4]) -> (%add_out: f32[1,4]) {\n"
        "  const %w: f32[4,4]\n"
        "  %mm_out = MatMul(%x, %w) : f32[1,4]\n"
        "  %relu_out = Relu(%mm_out) {alpha=0.1} : f32[1,4]\n"
        "  %add_out = Add(%relu_out, %relu_out) : f32[1,4]\n"
        "  return %add_out\n"
        "}")


def _linear_fresh(base, taken):
    """The naming rule written as the plain linear search it must equal."""
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


def test_fresh_names_equal_a_linear_search_after_removals():
    rng = np.random.default_rng(0)
    g = Graph("g")
    x = g.add_input("x", (1, 4))
    nodes = []
    for step in range(400):
        if nodes and rng.random() < 0.3:
            node = nodes.pop(int(rng.integers(len(nodes))))
            g.remove(node, safe=False)
            continue
        base = str(rng.choice(["Relu", "Relu_1", "Neg"]))
        expected = _linear_fresh(base, {n.name for n in nodes})
        node = g.add_node(base, [x], name=base)
        assert node.name == expected
        nodes.append(node)
        assert g.node(node.name) is node and g.value(node.output.name) is node.output
    assert len(g) == len(nodes)
    g.verify()


def test_cached_order_and_lookups_follow_every_change():
    g, x, w, a, b, c = small_graph()
    assert [n.name for n in g.nodes] == ["mm", "relu", "add"]
    first = g.nodes
    first.clear()  # callers get a copy: editing it does not touch the cache
    assert [n.name for n in g.nodes] == ["mm", "relu", "add"]
    neg = g.add_node("Neg", [x], name="neg").output
    c.producer.set_input(1, neg)
    assert [n.name for n in g.nodes] == ["mm", "relu", "neg", "add"]
    g.rename_value(neg, "negated")
    assert g.value("negated") is neg
    with pytest.raises(KeyError):
        g.value(neg.name + "_gone")
    g.remove(b.producer, safe=False)
    assert [n.name for n in g.nodes] == ["mm", "neg", "add"]
    assert b not in g.values and [v.name for v in g.values][:2] == ["x", "w"]
    with pytest.raises(KeyError):
        g.node("relu")
    clone = g.clone()
    assert [n.name for n in clone.nodes] == ["mm", "neg", "add"]

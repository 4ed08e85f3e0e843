"""Channel dependency patterns on hand-built ONNX models: groups found, pruning exact.

Each test builds a tiny model with onnx.helper, checks the groups the analysis finds,
then zeroes the channels pruning will remove and checks that pruning leaves the outputs
unchanged (interpreter and onnxruntime, 1e-5) and the graph valid and typed.
"""
import logging

import numpy as np
import pytest

from passes.pruning import analyze, prune_graph, register_handler
from passes.pruning.dependency import HANDLERS, ChannelHandler

from pruning_helpers import Builder, check_exact, run


def _group(dep, layer):
    return next(g for g in dep.groups if layer in g.layers)


def test_conv_chain_and_output_protection():
    b = Builder()
    y = b.conv(b.relu(b.conv("x", 8, name="c1")), 6, name="c2")
    g = b.graph([y])
    dep = analyze(g)
    assert _group(dep, "c1").prunable and _group(dep, "c1").size == 8
    out = _group(dep, "c2")
    assert not out.prunable and any("graph output" in r for r in out.blocked)
    pruned, stats = check_exact(g, 0.5)
    assert pruned.node("c1").inputs[1].shape == (4, 3, 3, 3)
    assert pruned.node("c2").inputs[1].shape == (6, 4, 3, 3)
    assert pruned.outputs[0].shape == (1, 6, 8, 8)


def test_residual_add_group_prunes_all_members():
    b = Builder()
    a = b.relu(b.bn(b.conv("x", 8, name="a")))
    r = b.bn(b.conv(b.relu(b.conv(a, 4, name="mid")), 8, name="b"))
    s = b.node("Add", [a, r])
    y = b.conv(b.relu(s), 5, name="head")
    g = b.graph([y])
    dep = analyze(g)
    res = _group(dep, "a")
    assert set(res.layers) == {"a", "b"} and res.prunable
    pruned, _ = check_exact(g, 0.5)
    assert pruned.node("a").outputs[0].shape[1] == 4 == pruned.node("b").outputs[0].shape[1]
    assert pruned.node("mid").inputs[1].shape[1] == 4


def test_depthwise_chain_couples_in_and_out():
    b = Builder()
    p = b.relu(b.conv("x", 8, name="pw0"))
    d1 = b.relu(b.bn(b.conv(p, 8, group=8, name="dw1")))
    d2 = b.conv(d1, 8, group=8, name="dw2")
    y = b.conv(d2, 4, k=1, name="pw1")
    g = b.graph([y])
    dep = analyze(g)
    grp = _group(dep, "pw0")
    assert set(grp.layers) == {"pw0", "dw1", "dw2"} and grp.size == 8
    pruned, _ = check_exact(g, 0.5, tvm=True)
    for name in ("dw1", "dw2"):
        assert pruned.node(name).attrs["group"] == 4
        assert pruned.node(name).inputs[1].shape == (4, 1, 3, 3)


def test_depthwise_with_multiplier():
    b = Builder()
    p = b.conv("x", 4, name="p")
    d = b.conv(p, 8, group=4, name="dw")        # 2 outputs per input channel
    y = b.conv(d, 3, k=1, name="head")
    g = b.graph([y])
    grp = _group(analyze(g), "p")
    assert grp.size == 4 and all(len(c.atoms) >= 3 for c in grp.components)
    pruned, _ = check_exact(g, 0.5)
    assert pruned.node("dw").attrs["group"] == 2
    assert pruned.node("dw").inputs[1].shape == (4, 1, 3, 3)
    assert pruned.node("head").inputs[1].shape[1] == 4


def test_grouped_conv_prunes_whole_groups():
    b = Builder()
    p = b.relu(b.conv("x", 8, name="p"))
    gc = b.relu(b.conv(p, 12, group=4, name="gconv"))   # 2 in -> 3 out per group
    y = b.conv(gc, 5, k=1, name="head")
    g = b.graph([y])
    grp = _group(analyze(g), "p")
    assert grp.size == 4 and set(grp.layers) == {"p", "gconv"}
    pruned, stats = check_exact(g, 0.5, tvm=True)
    gnode = pruned.node("gconv")
    assert gnode.attrs["group"] == 2 and gnode.inputs[1].shape == (6, 2, 3, 3)
    assert pruned.node("p").inputs[1].shape[0] == 4
    # skip mode leaves the group alone and says so
    _, st = prune_graph(g.clone(), ratio=0.5, grouped="skip")
    assert st["grouped_skipped"] == 1 and "p" not in st["layers"]


def test_concat_same_tensor_twice():
    b = Builder()
    a = b.relu(b.conv("x", 4, name="a"))
    c = b.relu(b.conv("x", 3, name="c"))
    cat = b.node("Concat", [a, a, c], 11, axis=1)
    y = b.conv(cat, 5, name="head")
    g = b.graph([y])
    grp = _group(analyze(g), "a")
    assert grp.size == 4 and all(sum(1 for v, _ in comp.atoms if v.name == cat) == 2
                                 for comp in grp.components)
    pruned, _ = check_exact(g, 0.5, tvm=True)
    assert pruned.value(cat).shape[1] == 2 + 2 + 2   # both copies of a lost 2, c lost 1->2
    assert pruned.node("head").inputs[1].shape[1] == 6


def test_split_remaps_indices():
    b = Builder()
    p = b.relu(b.conv("x", 8, name="p"))
    s0, s1 = b.node("Split", [p, b.init(np.array([3, 5], dtype=np.int64), "s")], outputs=2,
                    axis=1)
    b.channels[s0], b.channels[s1] = 3, 5
    y0 = b.conv(s0, 4, name="h0")
    y1 = b.conv(s1, 4, name="h1")
    y = b.node("Add", [y0, y1])
    g = b.graph([y])
    dep = analyze(g)
    groups = [gr for gr in dep.groups if "p" in gr.layers]
    assert sorted(gr.size for gr in groups) == [3, 5]
    pruned, _ = check_exact(g, 0.5)
    split = pruned.find("Split")[0]
    assert list(split.inputs[1].const) == [2, 3]


def test_flatten_to_gemm_feature_blocks():
    b = Builder(shape=(1, 3, 4, 4))
    p = b.relu(b.conv("x", 6, name="p"))
    f = b.node("Flatten", [p], 96, axis=1)
    w = b.init(b.rng.standard_normal((10, 96)) * 0.1)
    h = b.node("Gemm", [f, w, b.init(np.zeros(10), "c")], 10, name="fc1", transB=1)
    y = b.node("Gemm", [b.relu(h), b.init(b.rng.standard_normal((10, 3))), b.init(np.ones(3))],
               3, name="fc2")
    g = b.graph([y])
    dep = analyze(g)
    assert _group(dep, "p").size == 6 and _group(dep, "fc1").size == 10
    pruned, _ = check_exact(g, 0.5, tvm=True)
    assert pruned.node("fc1").inputs[1].shape == (5, 48)
    assert pruned.node("fc2").inputs[1].shape == (5, 3)


def test_reshape_flatten_to_matmul():
    b = Builder(shape=(1, 3, 4, 4))
    p = b.relu(b.conv("x", 4, name="p"))
    r = b.node("Reshape", [p, b.init(np.array([1, -1], dtype=np.int64), "shape")], 64)
    y = b.node("MatMul", [r, b.init(b.rng.standard_normal((64, 7)))], 7, name="mm")
    g = b.graph([y])
    assert _group(analyze(g), "p").prunable
    pruned, _ = check_exact(g, 0.5)
    assert pruned.node("mm").inputs[1].shape == (32, 7)


def test_squeeze_excitation_gate():
    b = Builder()
    x = b.relu(b.bn(b.conv("x", 8, name="body")))
    s = b.node("GlobalAveragePool", [x])
    s = b.relu(b.conv(s, 2, k=1, name="se_reduce"))
    gate = b.node("Sigmoid", [b.conv(s, 8, k=1, name="se_expand")])
    y = b.conv(b.node("Mul", [x, gate]), 4, name="head")
    g = b.graph([y])
    dep = analyze(g)
    assert set(_group(dep, "body").layers) == {"body", "se_expand"}
    assert _group(dep, "se_reduce").size == 2
    pruned, _ = check_exact(g, 0.5, tvm=True)
    assert pruned.node("se_expand").inputs[1].shape == (4, 1, 1, 1)
    assert pruned.node("se_reduce").inputs[1].shape == (1, 4, 1, 1)


def test_elementwise_broadcast_constants_pools_pad_resize_clip():
    b = Builder()
    p = b.conv("x", 6, name="p")
    m = b.node("Mul", [p, b.init(b.rng.uniform(.5, 2, (6, 1, 1)), "scale")])
    d = b.node("Div", [m, b.init(np.full((1, 6, 1, 1), 2.0), "div")])
    s = b.node("Sub", [d, b.init(np.array(0.0), "zero")])
    c = b.node("Clip", [s, b.init(np.array(0.0), "lo"), b.init(np.array(6.0), "hi")])
    mp = b.node("MaxPool", [c], kernel_shape=[2, 2], strides=[2, 2])
    pd = b.node("Pad", [mp, b.init(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads")])
    rs = b.node("Resize", [pd, "", b.init(np.array([1, 1, 2, 2], dtype=np.float32), "sc")],
                mode="nearest")
    ap = b.node("AveragePool", [rs], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    lk = b.node("LeakyRelu", [ap], alpha=0.1)
    y = b.conv(lk, 3, name="head")
    g = b.graph([y])
    grp = _group(analyze(g), "p")
    assert grp.prunable and grp.size == 6
    pruned, _ = check_exact(g, 0.5, tvm=True)
    assert pruned.find("Mul")[0].inputs[1].shape == (3, 1, 1)
    assert pruned.find("Div")[0].inputs[1].shape == (1, 3, 1, 1)


def test_conv_transpose_and_resize_sizes():
    b = Builder()
    p = b.relu(b.conv("x", 6, name="p"))
    w = b.init(b.rng.standard_normal((6, 4, 2, 2)) * 0.3)
    up = b.node("ConvTranspose", [p, w, b.init(b.rng.standard_normal(4) * .1, "b")], 4,
                name="up", kernel_shape=[2, 2], strides=[2, 2])
    rs = b.node("Resize", [b.relu(up), "", "", b.init(np.array([1, 4, 8, 8], dtype=np.int64),
                                                       "sizes")], mode="nearest")
    y = b.conv(rs, 3, name="head")
    g = b.graph([y])
    dep = analyze(g)
    assert _group(dep, "p").size == 6 and _group(dep, "up").size == 4
    pruned, _ = check_exact(g, 0.5, tvm=True)
    assert pruned.node("up").inputs[1].shape == (3, 2, 2, 2)
    assert list(pruned.find("Resize")[0].inputs[3].const) == [1, 2, 8, 8]


def test_grouped_conv_transpose():
    b = Builder()
    p = b.relu(b.conv("x", 4, name="p"))
    w = b.init(b.rng.standard_normal((4, 3, 2, 2)) * 0.3)   # group 2: 2 in -> 3 out each
    up = b.node("ConvTranspose", [p, w], 6, name="up", kernel_shape=[2, 2], strides=[2, 2],
                group=2)
    y = b.conv(b.relu(up), 3, name="head")
    g = b.graph([y])
    assert _group(analyze(g), "p").size == 2
    pruned, _ = check_exact(g, 0.5)
    assert pruned.node("up").attrs["group"] == 1 and pruned.node("up").inputs[1].shape == (2, 3, 2, 2)


def _spatial_slice(b, x):
    """Slice rows 1..7 (axis 2): an op without a built-in pruning handler."""
    return b.node("Slice", [x] + [b.init(np.array([v], dtype=np.int64), n)
                                  for v, n in ((1, "st"), (7, "en"), (2, "ax"))])


def test_unknown_op_blocks_group_with_warning(caplog):
    b = Builder()
    p = b.relu(b.conv("x", 6, name="p"))
    sl = _spatial_slice(b, p)
    q = b.relu(b.conv("x", 6, name="q"))
    g = b.graph([b.conv(sl, 3, name="head"), b.conv(q, 3, name="head2")])
    with caplog.at_level(logging.WARNING, logger="compiler.passes.pruning"):
        dep = analyze(g)
    assert "Slice" in caplog.text and dep.skipped_ops == {"Slice": 1}
    assert not _group(dep, "p").prunable
    assert any("no pruning handler" in r for r in _group(dep, "p").blocked)
    assert _group(dep, "q").prunable  # only the groups touching the op are blocked
    pruned, stats = prune_graph(g.clone(), ratio=0.5)
    pruned.verify(require_types=True)
    assert stats["skipped_ops"] == {"Slice": 1} and set(stats["layers"]) == {"q"}


def test_softmax_over_channels_blocks():
    b = Builder()
    p = b.conv("x", 6, name="p")
    y = b.conv(b.node("Softmax", [p], axis=1), 3, name="head")
    dep = analyze(b.graph([y]))
    assert not _group(dep, "p").prunable and dep.skipped_ops == {"Softmax": 1}


def test_custom_handler_registered_in_one_place(monkeypatch):
    b = Builder()
    p = b.relu(b.conv("x", 6, name="p"))
    sl = _spatial_slice(b, p)
    y = b.conv(sl, 3, name="head")
    g = b.graph([y])
    assert not _group(analyze(g), "p").prunable
    monkeypatch.setitem(HANDLERS, "Slice", None)  # restored after the test

    class SpatialSlice(ChannelHandler):
        def propagate(self, node, dep):
            dep.same_channels(node.inputs[0], node.outputs[0])

    register_handler("Slice")(SpatialSlice)
    assert _group(analyze(g), "p").prunable
    check_exact(g, 0.5)


def test_protected_layers_and_unknown_names():
    b = Builder()
    a = b.relu(b.conv("x", 8, name="a"))
    c = b.relu(b.conv(a, 8, name="c"))
    y = b.conv(c, 3, name="head")
    g = b.graph([y])
    dep = analyze(g, protect=["a"])
    assert not _group(dep, "a").prunable and _group(dep, "c").prunable
    _, stats = prune_graph(g.clone(), ratio=0.5, protect=["a"])
    assert set(stats["layers"]) == {"c"}
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        analyze(g, protect=["nope"])


def test_transpose_squeeze_reduce():
    b = Builder()
    p = b.relu(b.conv("x", 6, name="p"))
    r = b.node("ReduceMean", [p], axes=[2, 3], keepdims=1)
    sq = b.node("Squeeze", [r, b.init(np.array([3], dtype=np.int64), "ax")])
    t = b.node("Transpose", [sq], perm=[0, 2, 1])
    y = b.node("MatMul", [t, b.init(b.rng.standard_normal((6, 4)))], 4, name="mm")
    g = b.graph([y])
    assert _group(analyze(g), "p").prunable
    pruned, _ = check_exact(g, 0.5)
    assert pruned.node("mm").inputs[1].shape == (3, 4)


def test_concat_along_space_couples_channels():
    b = Builder()
    p = b.relu(b.conv("x", 6, name="p"))
    q = b.relu(b.conv("x", 6, name="q"))
    cat = b.node("Concat", [p, q, b.init(np.zeros((1, 6, 2, 8)), "border")], 6, axis=2)
    y = b.conv(cat, 3, name="head")
    g = b.graph([y])
    grp = _group(analyze(g), "p")
    assert set(grp.layers) == {"p", "q"} and grp.prunable
    pruned, _ = check_exact(g, 0.5)
    assert pruned.find("Concat")[0].inputs[2].shape == (1, 3, 2, 8)

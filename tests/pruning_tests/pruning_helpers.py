"""Small ONNX builders and the 'zero first, then prune' exactness check."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from compiler import import_model
from compiler.interpreter import Interpreter
from passes.pruning.dependency import Component

RNG = np.random.default_rng(0)


class Builder:
    """Tiny onnx.helper wrapper: ``b.conv("x", 8)`` -> output name."""

    def __init__(self, shape=(1, 3, 8, 8), seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0
        self.input_shape = shape
        self.channels = {"x": shape[1]}

    def _name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def init(self, array, base="w"):
        name = self._name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32)
                                                  if np.asarray(array).dtype.kind == "f"
                                                  else np.asarray(array), name))
        return name

    def node(self, op, inputs, c=None, outputs=1, name=None, **attrs):
        name = name or self._name(op.lower())
        outs = [f"{name}_y{i}" if outputs > 1 else f"{name}_y" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        for o in outs:
            self.channels[o] = c if c is not None else self.channels.get(inputs[0])
        return outs if outputs > 1 else outs[0]

    def conv(self, x, cout, k=3, group=1, bias=True, name=None, **attrs):
        cin = self.channels[x]
        w = self.init(self.rng.standard_normal((cout, cin // group, k, k)) * 0.3)
        ins = [x, w] + ([self.init(self.rng.standard_normal(cout) * 0.1, "b")] if bias else [])
        return self.node("Conv", ins, cout, name=name, kernel_shape=[k, k], group=group,
                         pads=[k // 2] * 4, **attrs)

    def bn(self, x, name=None):
        c = self.channels[x]
        ps = [self.init(self.rng.uniform(0.5, 1.5, c), "g"), self.init(self.rng.standard_normal(c) * .1, "b"),
              self.init(self.rng.standard_normal(c) * .1, "m"), self.init(self.rng.uniform(.5, 2, c), "v")]
        return self.node("BatchNormalization", [x] + ps, c, name=name)

    def relu(self, x):
        return self.node("Relu", [x])

    def model(self, outputs, out_shapes=None):
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            list(self.input_shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model

    def graph(self, outputs):
        return import_model(self.model(outputs))


def zero_components(comps: list[Component]) -> None:
    """Make the channels of ``comps`` exactly zero (filters, biases, BN gamma and beta)."""
    def edit(node, index, fn):
        v = node.inputs[index]
        if v is None or v.const is None:
            return
        a = np.array(v.const, copy=True)
        fn(a)
        v.const = a

    for comp in comps:
        for node, j in comp.filters:
            g = int(node.attrs.get("group", 1))
            if node.op_type == "Conv":
                edit(node, 1, lambda a: a.__setitem__(j, 0))
                if len(node.inputs) > 2:
                    edit(node, 2, lambda a: a.__setitem__(j, 0))
            elif node.op_type == "ConvTranspose":
                def zt(a, j=j, g=g):
                    cout_g, cin_g = a.shape[1], a.shape[0] // g
                    k, jj = divmod(j, cout_g)
                    a[k * cin_g:(k + 1) * cin_g, jj] = 0
                edit(node, 1, zt)
                if len(node.inputs) > 2:
                    edit(node, 2, lambda a: a.__setitem__(j, 0))
            elif node.op_type == "Gemm":
                if node.attrs.get("transB", 0):
                    edit(node, 1, lambda a: a.__setitem__(j, 0))
                else:
                    edit(node, 1, lambda a: a.__setitem__((slice(None), j), 0))
                if len(node.inputs) > 2:
                    edit(node, 2, lambda a: a.reshape(-1).__setitem__(j, 0)
                         if a.size > 1 else None)
        for node, j in comp.bn:
            edit(node, 1, lambda a: a.__setitem__(j, 0))
            edit(node, 2, lambda a: a.__setitem__(j, 0))


def run(graph, x):
    return Interpreter(graph).run({graph.inputs[0].name: x})


def check_exact(graph, ratio=0.5, *, round_to=1, ort=True, tvm=False, seed=0, **prune_kw):
    """Zero the channels pruning will pick, prune, and compare with the unpruned graph.

    Returns ``(pruned graph, stats)``; checks interpreter (and optionally onnxruntime and
    TVM) outputs against the zeroed original to 1e-5.
    """
    import math

    from compiler import export_model
    from conftest import assert_close, ort_run
    from passes.pruning import analyze, prune_graph

    dep = analyze(graph, protect=prune_kw.get("protect") or [])
    rng = np.random.default_rng(seed)
    zeroed = []
    for g in dep.prunable_groups:
        n = g.size
        keep = n - int(math.floor(n * ratio + 1e-9))
        keep = min(max(int(math.ceil(keep / round_to) * round_to), 1), n)
        picks = rng.choice(n, size=n - keep, replace=False)
        zeroed += [g.components[i] for i in picks]
    zero_components(zeroed)
    x = rng.standard_normal(graph.inputs[0].shape).astype(np.float32)
    ref = run(graph, x)
    pruned, stats = prune_graph(graph.clone(), ratio=ratio, criterion="l1", round_to=round_to,
                                **prune_kw)
    pruned.verify(require_types=True)
    assert stats["channels_removed"] == len(zeroed), stats
    got = run(pruned, x)
    for a, b in zip(got, ref):
        assert_close(a, b, rtol=1e-5, atol=1e-5, what="pruned interpreter")
    if ort:
        outs = ort_run(export_model(pruned), {pruned.inputs[0].name: x})
        for a, b in zip(outs, ref):
            assert_close(a, b, rtol=1e-5, atol=1e-5, what="pruned onnxruntime")
    if tvm:
        import compiler

        cm = compiler.compile(pruned, target="host", passes=[])
        for a, b in zip(cm.run({pruned.inputs[0].name: x}), ref):
            assert_close(a, b, rtol=1e-5, atol=1e-5, what="pruned TVM")
    return pruned, stats

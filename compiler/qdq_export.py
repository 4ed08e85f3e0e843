"""Export a quantized graph (ops of domain ``q``, see `compiler.ops.quant`) as ONNX QDQ.

The QDQ form is what onnxruntime (and TensorRT, TFLite converters...) understand: int8
tensors between ``QuantizeLinear``/``DequantizeLinear`` pairs around float ops, which
runtimes fuse back into integer kernels.  Mapping:

* ``q.Quantize`` -> (float ``Clip`` to the bit-width range) -> ``QuantizeLinear``
* ``q.Conv``/``q.ConvTranspose``/``q.Gemm`` + ``q.Requantize`` -> ``DequantizeLinear`` of
  input, weight (per channel) and int32 bias -> ``Conv``/``ConvTranspose``/``Gemm`` ->
  ``Clip`` (fused ReLU / bit range) ->
  ``QuantizeLinear``
* ``q.Add``/``q.Concat``/``q.Clip``/``q.AveragePool``/``q.GlobalAveragePool`` -> DQ, the
  float op, ``Clip``, Q
* ``q.Resize`` -> DQ, ``MatMul`` by the two interpolation matrices (as float), Q
* ``q.Dequantize`` -> ``DequantizeLinear``; int8 ``MaxPool`` and data movement stay as they are.

Rounding differs in places (onnxruntime rounds float results half to even, our integer
path rounds fixed-point half up), so results agree within one quantization step.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .folding import infer_node
from .ir import Graph, Node, Value
from .onnx_io import export_model

__all__ = ["export_qdq", "to_qdq_graph", "QDQExportError", "is_integer_graph", "export_standard"]


class QDQExportError(ValueError):
    """The graph holds an integer op this exporter cannot express in QDQ form."""


def _scalar_params(value: Value) -> tuple[float, int]:
    q = value.quant
    if q is None:
        raise QDQExportError(f"value '{value.name}' has no quantization parameters")
    return float(np.asarray(q.scale).reshape(-1)[0]), int(np.asarray(q.zero_point).reshape(-1)[0])


class _Exporter:
    def __init__(self, graph: Graph):
        self.src = graph
        self.g = Graph(graph.name)
        self.map: dict[int, Value] = {}

    def const(self, name: str, array: Any) -> Value:
        return self.g.add_constant(name, np.asarray(array))

    def node(self, op: str, inputs: list, attrs: dict | None = None, name: str = "") -> Value:
        n = self.g.add_node(op, inputs, attrs or {}, name=name or op)
        infer_node(n)
        return n.output

    def v(self, value: Value | None) -> Value | None:
        if value is None:
            return None
        if id(value) in self.map:
            return self.map[id(value)]
        if value.is_constant:
            new = self.g.add_constant(value.name, value.const, unique=False)
            self.map[id(value)] = new
            return new
        raise QDQExportError(f"value '{value.name}' is used before it is produced")

    def dq(self, value: Value, name: str) -> Value:
        scale, zp = _scalar_params(value)
        return self.node("DequantizeLinear", [self.v(value), self.const(f"{name}_s", np.float32(scale)),
                                              self.const(f"{name}_zp", np.int8(zp))], {"axis": 1},
                         name=f"{name}_dq")

    def q(self, x: Value, params_of: Value, name: str, qmin: int, qmax: int) -> Value:
        scale, zp = _scalar_params(params_of)
        if qmin > -128 or qmax < 127:
            x = self.node("Clip", [x, self.const(f"{name}_lo", np.float32(scale * (qmin - zp))),
                                   self.const(f"{name}_hi", np.float32(scale * (qmax - zp)))],
                          name=f"{name}_clip")
        return self.node("QuantizeLinear", [x, self.const(f"{name}_s", np.float32(scale)),
                                            self.const(f"{name}_zp", np.int8(zp))], {"axis": 1},
                         name=f"{name}_q")

    def run(self) -> Graph:
        for value in self.src.inputs:
            self.map[id(value)] = self.g.add_input(value.name, value.shape, value.dtype)
        for node in self.src.topo_order():
            self.convert(node)
        for out in self.src.outputs:
            new = self.v(out)
            if new.name != out.name:
                self.g.rename_value(new, out.name)
            self.g.outputs.append(new)
        self.g.remove_unused()
        return self.g

    def convert(self, node: Node) -> None:
        op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
        out = node.outputs[0]
        name = node.name
        a = node.attrs
        if op == "q.Quantize":
            x = self.v(node.inputs[0])
            self.map[id(out)] = self.q(x, out, name, int(a["qmin"]), int(a["qmax"]))
        elif op == "q.Dequantize":
            q = node.inputs[0]
            self.map[id(out)] = self.node(
                "DequantizeLinear", [self.v(q), self.const(f"{name}_s", np.float32(a["scale"])),
                                     self.const(f"{name}_zp", np.array(a.get("zero_point", 0),
                                                                       q.dtype))],
                {"axis": 1}, name=f"{name}_dq")
        elif op in ("q.Conv", "q.ConvTranspose", "q.Gemm"):
            return  # emitted with its q.Requantize
        elif op == "q.Requantize":
            self.map[id(out)] = self.layer(node)
        elif op == "q.Resize":  # the integer interpolation as two float MatMuls
            xf = self.dq(node.inputs[0], f"{name}_in0")
            frac = 2.0 ** -(int(a.get("shift", 16)) / 2)
            mh = (node.inputs[1].const.astype(np.float64) * frac).astype(np.float32)
            mwt = (node.inputs[2].const.astype(np.float64).T * frac).astype(np.float32)
            y = self.node("MatMul", [self.const(f"{name}_mh", mh), xf], name=f"{name}_h")
            y = self.node("MatMul", [y, self.const(f"{name}_mwt", mwt)], name=f"{name}_w")
            self.map[id(out)] = self.q(y, out, name, -128, 127)
        elif op in ("q.Add", "q.Concat", "q.Clip", "q.AveragePool", "q.GlobalAveragePool"):
            xs = [self.dq(v, f"{name}_in{i}") for i, v in enumerate(node.inputs)]
            if op == "q.Add":
                y = self.node("Add", xs, name=name)
            elif op == "q.Concat":
                y = self.node("Concat", xs, {"axis": int(a.get("axis", 1))}, name=name)
            elif op == "q.Clip":
                y = xs[0]
            elif op == "q.AveragePool":
                attrs = {k: a[k] for k in ("kernel_shape", "strides", "pads", "ceil_mode",
                                           "count_include_pad") if k in a}
                attrs.setdefault("dilations", [1, 1])
                attrs["auto_pad"] = "NOTSET"
                y = self.node("AveragePool", xs, attrs, name=name)
            else:
                y = self.node("GlobalAveragePool", xs, name=name)
            self.map[id(out)] = self.q(y, out, name, int(a.get("qmin", -128)),
                                       int(a.get("qmax", 127)))
        elif node.domain:
            raise QDQExportError(f"node '{node.name}' ({op}) has no QDQ form")
        else:
            new = self.g.add_node(node.op_type, [self.v(v) for v in node.inputs], dict(node.attrs),
                                  name=node.name, num_outputs=len(node.outputs))
            infer_node(new)
            for old, fresh in zip(node.outputs, new.outputs):
                self.map[id(old)] = fresh

    def layer(self, rq: Node) -> Value:
        acc_node = rq.inputs[0].producer
        if acc_node is None or acc_node.domain != "q" or \
                acc_node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            raise QDQExportError(f"q.Requantize '{rq.name}' does not follow a "
                                 "q.Conv/q.ConvTranspose/q.Gemm")
        name = acc_node.name
        x, w = acc_node.inputs[0], acc_node.inputs[1]
        bias = acc_node.inputs[2] if len(acc_node.inputs) > 2 else None
        xs, _ = _scalar_params(x)
        if w.quant is None:
            raise QDQExportError(f"weight '{w.name}' has no quantization parameters")
        ws = np.asarray(w.quant.scale, np.float64).reshape(-1)
        w_axis = int(w.quant.axis or 0)
        xf = self.dq(x, f"{name}_x")
        wf = self.node("DequantizeLinear", [self.v(w), self.const(f"{name}_ws", ws.astype(np.float32)),
                                            self.const(f"{name}_wzp", np.zeros(ws.size, np.int8))],
                       {"axis": w_axis}, name=f"{name}_w_dq")
        ins = [xf, wf]
        if bias is not None:
            ins.append(self.node("DequantizeLinear", [
                self.v(bias), self.const(f"{name}_bs", (xs * ws).astype(np.float32)),
                self.const(f"{name}_bzp", np.zeros(ws.size, np.int32))], {"axis": 0},
                name=f"{name}_b_dq"))
        a = acc_node.attrs
        if acc_node.op_type == "Conv":
            attrs = {k: a[k] for k in ("kernel_shape", "strides", "pads", "dilations", "group")
                     if k in a}
            attrs["auto_pad"] = "NOTSET"
            y = self.node("Conv", ins, attrs, name=name)
        elif acc_node.op_type == "ConvTranspose":
            attrs = {k: a[k] for k in ("kernel_shape", "strides", "pads", "dilations", "group",
                                       "output_padding") if k in a}
            attrs["auto_pad"] = "NOTSET"
            y = self.node("ConvTranspose", ins, attrs, name=name)
        else:
            y = self.node("Gemm", ins, {"alpha": 1.0, "beta": 1.0, "transA": 0,
                                        "transB": int(a.get("transB", 0))}, name=name)
        return self.q(y, rq.output, f"{rq.name}", int(rq.attrs["qmin"]), int(rq.attrs["qmax"]))


def to_qdq_graph(graph: Graph) -> Graph:
    """The QDQ form of a quantized graph, as a `Graph` of standard ONNX ops."""
    return _Exporter(graph).run()


def export_qdq(graph: Graph, path: str | os.PathLike | None = None) -> Any:
    """Write the QDQ form of ``graph`` as ONNX (opset 17) that onnxruntime runs."""
    return export_model(to_qdq_graph(graph), path, producer="compiler-qdq")


def is_integer_graph(graph: Graph) -> bool:
    """Whether ``graph`` holds ops of our private ``q`` domain (which standard ONNX
    runtimes and viewers cannot open)."""
    return any(node.domain == "q" for node in graph.topo_order())


def export_standard(graph: Graph, path: str | os.PathLike | None = None) -> Any:
    """``graph`` as standard ONNX that onnxruntime and Netron open: the QDQ form of an
    integer graph (`export_qdq`), the graph itself otherwise.  Raises `QDQExportError`
    for an integer op without a QDQ form."""
    if is_integer_graph(graph):
        return export_qdq(graph, path)
    return export_model(graph, path)

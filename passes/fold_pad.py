"""fold-pad: fold an explicit zero ``Pad`` into the convolutions that read it.

TensorFlow-style exporters emit ``Pad -> Conv(pads=0)`` for SAME padding, often
asymmetric (one row/column more at the end for stride-2 convs).  Left in the graph, the
Pad is a separate kernel on the backend; on packed (NCHWc) layouts it also sits between
two layout transforms.  A Conv takes per-side padding itself (``pads`` is
``[t, l, ..., b, r, ...]`` in ONNX), so a constant-zero Pad of the spatial axes only is
the same as adding its widths to the conv's pads: bit-exact, because the conv then reads
the same zeros it read from the padded tensor.

Folded only when it is exactly that: mode ``constant``, constant pads, no padding of the
batch or channel axes, no negative (cropping) widths, a constant value that is absent or
zero, and every consumer of the padded tensor a ``Conv`` reading it as its data input (a
Pad also feeding something else stays, and so does a Pad with a non-zero value).  The
conv's ``auto_pad`` is resolved to explicit pads first (by the IR's rule).  Runs as part
of ``cleanup``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Graph, Node
from compiler.ops.conv_util import resolve_auto_pad
from compiler.pass_manager import Pass, PassContext, PassResult, register_pass

__all__ = ["FoldPad", "foldable_pad_widths"]


def foldable_pad_widths(pad: Node) -> list[int] | None:
    """The spatial widths ``[b1.., bn, e1.., en]`` (ONNX pads order) of a Pad that a
    Conv can absorb, else ``None`` (see the module docstring for the conditions)."""
    if pad.op_type != "Pad" or pad.attrs.get("mode", "constant") != "constant":
        return None
    ins = pad.inputs
    if len(ins) < 2 or ins[1] is None or ins[1].const is None:
        return None
    if len(ins) > 3 and ins[3] is not None:
        return None  # opset-18 axes input
    if len(ins) > 2 and ins[2] is not None:
        value = ins[2].const
        if value is None or (np.asarray(value).size and np.any(np.asarray(value) != 0)):
            return None
    x = ins[0]
    if x.shape is None:
        return None
    rank = len(x.shape)
    pads = [int(v) for v in np.asarray(ins[1].const).reshape(-1)]
    if rank < 3 or len(pads) != 2 * rank or any(p < 0 for p in pads):
        return None
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
        return None  # batch or channel padding
    return pads[2:rank] + pads[rank + 2:]


def _conv_pads(conv: Node, spatial_in: tuple[int, ...]) -> list[int]:
    rank = len(spatial_in)
    w = conv.inputs[1]
    kernel = [int(k) for k in (conv.attrs.get("kernel_shape") or w.shape[2:])]
    strides = [int(s) for s in (conv.attrs.get("strides") or [1] * rank)]
    dilations = [int(d) for d in (conv.attrs.get("dilations") or [1] * rank)]
    pads = [int(p) for p in (conv.attrs.get("pads") or [0] * (2 * rank))]
    return [int(p) for p in resolve_auto_pad(conv.attrs.get("auto_pad", "NOTSET"),
                                             spatial_in, kernel, strides, dilations, pads)]


@register_pass("fold-pad")
@dataclass
class FoldPad(Pass):
    """Folds constant-zero spatial Pads into the Convs that consume them."""

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        folded = 0
        for pad in graph.find("Pad"):
            widths = foldable_pad_widths(pad)
            out = pad.output
            if widths is None or out.is_graph_output or not out.uses:
                continue
            if any(n.op_type != "Conv" or n.domain not in ("", "ai.onnx") or i != 0
                   or n.inputs[1] is None or n.inputs[1].shape is None
                   for n, i in out.uses):
                continue
            padded = tuple(out.shape[2:])
            for conv, _ in list(out.uses):
                pads = _conv_pads(conv, padded)
                conv.attrs["pads"] = [a + b for a, b in zip(pads, widths)]
                conv.attrs.pop("auto_pad", None)
                conv.set_input(0, pad.inputs[0])
            graph.remove(pad)
            folded += 1
        if folded:
            graph.remove_unused()  # the pads / value constants
        return PassResult(graph, folded > 0, {"folded": folded})

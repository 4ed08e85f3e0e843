"""Synthetic models in the patterns real exporters emit (issue 16), seeded, built with
``onnx.helper``: for the benchmarks (``tvm_vs_ort.py --models tfpad_net,lcnet_like``) and
the packed-layout tests (``tests/tvm_tests/test_packed_patterns.py``), until the model zoo
(``scripts/prepare_models.py``) ships real ones.

- `tfpad_net`: a TensorFlow-style MobileNet body: every conv has ``pads=0`` and an
  explicit ``Pad`` in front (asymmetric ``[0, 0, 1, 1]`` TF-SAME pads before the stride-2
  convs, symmetric before the stride-1 ones), ReLU6 as ``Clip``, depthwise-separable
  blocks, global pool and a classifier.
- `lcnet_like`: an LCNet / MobileNetV3-style body: HardSwish after the convs,
  squeeze-excitation (GlobalAveragePool -> 1x1 conv -> ReLU -> 1x1 conv -> HardSigmoid ->
  channel Mul), SiLU (``x * Sigmoid(x)``), a channel Split into two branches and their
  Concat, and a nearest Resize x2 before a last 3x3 conv (a segmentation-style head).

``width`` scales every channel count, ``size`` is the input's height and width.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["tfpad_net", "lcnet_like", "PATTERN_MODELS", "write_pattern_model"]


class _Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, array: np.ndarray, base: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, pads=None,
             group: int = 1) -> str:
        fan_in = cin // group * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(fan_in))
        b = self.rng.standard_normal(cout) * 0.1
        return self.node("Conv", [x, self.const(w.astype(np.float32), "w"),
                                  self.const(b.astype(np.float32), "b")],
                         kernel_shape=[k, k], strides=[stride, stride],
                         pads=list(pads if pads is not None else [k // 2] * 4), group=group)

    def pad(self, x: str, t: int, l: int, b: int, r: int, value: float | None = None) -> str:
        ins = [x, self.const(np.array([0, 0, t, l, 0, 0, b, r], np.int64), "pads")]
        if value is not None:
            ins.append(self.const(np.array(value, np.float32), "pad_value"))
        return self.node("Pad", ins, mode="constant")

    def relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.const(np.array(0.0, np.float32), "lo"),
                                  self.const(np.array(6.0, np.float32), "hi")])

    def model(self, x_shape: tuple[int, ...], out: str, out_shape: list, name: str):
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model


def tfpad_net(size: int = 224, width: float = 1.0, classes: int = 100, seed: int = 0,
              pad_value: float | None = None):
    """TF-SAME-padded MobileNet-style classifier (see the module docstring).
    ``pad_value``: the constant of the first Pad (a non-zero one must stay explicit)."""
    b = _Builder(seed)
    c = lambda v: max(8, int(v * width) // 8 * 8)  # noqa: E731
    x = b.pad("input", 0, 0, 1, 1, pad_value)              # TF SAME, stride 2: end only
    x = b.relu6(b.conv(x, 3, c(32), 3, 2, pads=[0] * 4))
    cin = c(32)
    for cout, stride in ((c(64), 1), (c(128), 2), (c(128), 1), (c(256), 2), (c(256), 1)):
        x = b.pad(x, 0, 0, 1, 1) if stride == 2 else b.pad(x, 1, 1, 1, 1)
        x = b.relu6(b.conv(x, cin, cin, 3, stride, pads=[0] * 4, group=cin))
        x = b.relu6(b.conv(x, cin, cout, 1))
        cin = cout
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    w = (b.rng.standard_normal((classes, cin)) / np.sqrt(cin)).astype(np.float32)
    x = b.node("Gemm", [x, b.const(w, "fc"), b.const(np.zeros(classes, np.float32), "fcb")],
               transB=1)
    return b.model((1, 3, size, size), x, [1, classes], "tfpad_net")


def lcnet_like(size: int = 224, width: float = 1.0, seed: int = 0):
    """HardSwish / SE / SiLU / Split-Concat / Resize body (see the module docstring)."""
    b = _Builder(seed)
    c = lambda v: max(8, int(v * width) // 8 * 8)  # noqa: E731
    hs = lambda v: b.node("HardSwish", [v])  # noqa: E731
    x = hs(b.conv("input", 3, c(16), 3, 2))
    cin = c(16)
    for cout, stride in ((c(32), 1), (c(64), 2), (c(64), 1), (c(128), 2)):
        x = hs(b.conv(x, cin, cin, 3, stride, group=cin))
        x = hs(b.conv(x, cin, cout, 1))
        cin = cout
    # squeeze-excitation
    s = b.node("GlobalAveragePool", [x])
    s = b.node("Relu", [b.conv(s, cin, cin // 4, 1)])
    s = b.node("HardSigmoid", [b.conv(s, cin // 4, cin, 1)], alpha=1.0 / 6, beta=0.5)
    x = b.node("Mul", [x, s])
    # split into two branches (SiLU, sigmoid-gated depthwise), concatenated again
    half = cin // 2
    b1, b2 = (b.name("split_a"), b.name("split_b"))
    from onnx import helper

    b.nodes.append(helper.make_node("Split", [x, b.const(np.array([half, half], np.int64), "sp")],
                                    [b1, b2], axis=1, name=b.name("split")))
    y1 = b.conv(b1, half, half, 1)
    y1 = b.node("Mul", [y1, b.node("Sigmoid", [y1])])               # SiLU
    y2 = b.conv(b2, half, half, 3, group=half)
    y2 = b.node("Mul", [y2, b.node("Sigmoid", [b.conv(y2, half, half, 1)])])
    x = b.node("Concat", [y1, y2], axis=1)
    x = hs(b.conv(x, cin, cin, 1))
    x = b.node("Resize", [x, "", b.const(np.array([1, 1, 2, 2], np.float32), "scales")],
               mode="nearest")
    x = b.conv(x, cin, c(16), 3)
    out = size // 8 * 2
    return b.model((1, 3, size, size), x, [1, c(16), out, out], "lcnet_like")


PATTERN_MODELS = {"tfpad_net": tfpad_net, "lcnet_like": lcnet_like}


def write_pattern_model(name: str, path: Path, **kwargs) -> Path:
    """Build the pattern model ``name`` and save it (checked by onnx) at ``path``."""
    import onnx

    model = PATTERN_MODELS[name](**kwargs)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path

"""FINN's CNV-W1A1 (BNN-PYNQ / finn-examples CIFAR-10 CNV) rebuilt in our IR.

The topology of Brevitas' ``cnv_1w1a`` as FINN streams it: a 3x32x32 8-bit unsigned
image; six 3x3 valid convolutions (64, 64, 128, 128, 256, 256 channels) with 2x2 max
pools after the 2nd and 4th; three fully connected layers (512, 512, 10).  Weights are
binary (+-1, 1 bit) and activations bipolar (1 bit) after every layer but the last,
whose accumulators leave the chip.  Weights are random: cycles and resources depend on
shapes and bits only.  ``FINN_EXAMPLES_FOLDING`` is finn-examples'
build/bnn-pynq/folding_config/cnv-w1a1_folding_config.json (commit 6dcc92c) for the
MVAU and SWG nodes, keyed by FINN's node names; its ``Thresholding_hls_0`` and
``LabelSelect_hls_0`` have no counterpart here (our graph ends at the logits).
``FINN_EXAMPLES_FPS`` is the published throughput it is compared with (see the notes).
"""
from __future__ import annotations

import numpy as np

from compiler.folding import infer_node
from compiler.ir import Graph, QuantParams

__all__ = ["build_cnv_w1a1", "FINN_EXAMPLES_FOLDING", "CNV_LAYERS"]

#: (name, C_in, C_out) of the convs, then the FCs; "pool" marks a 2x2 max pool.
CNV_LAYERS = [("conv0", 3, 64), ("conv1", 64, 64), "pool", ("conv2", 64, 128),
              ("conv3", 128, 128), "pool", ("conv4", 128, 256), ("conv5", 256, 256),
              ("fc0", 256, 512), ("fc1", 512, 512), ("fc2", 512, 10)]

FINN_EXAMPLES_FOLDING: dict[str, dict[str, int]] = {
    "ConvolutionInputGenerator_hls_0": {"SIMD": 3},
    "MVAU_hls_0": {"PE": 16, "SIMD": 3},
    "ConvolutionInputGenerator_hls_1": {"SIMD": 32},
    "MVAU_hls_1": {"PE": 32, "SIMD": 32},
    "ConvolutionInputGenerator_hls_2": {"SIMD": 32},
    "MVAU_hls_2": {"PE": 16, "SIMD": 32},
    "ConvolutionInputGenerator_hls_3": {"SIMD": 32},
    "MVAU_hls_3": {"PE": 16, "SIMD": 32},
    "ConvolutionInputGenerator_hls_4": {"SIMD": 32},
    "MVAU_hls_4": {"PE": 4, "SIMD": 32},
    "ConvolutionInputGenerator_hls_5": {"SIMD": 32},
    "MVAU_hls_5": {"PE": 1, "SIMD": 32},
    "MVAU_hls_6": {"PE": 1, "SIMD": 4},
    "MVAU_hls_7": {"PE": 1, "SIMD": 8},
    "MVAU_hls_8": {"PE": 5, "SIMD": 1},
}


def _node(g: Graph, op: str, inputs, attrs, name: str, domain: str = "q"):
    n = g.add_node(op, inputs, attrs, name=name, domain=domain)
    infer_node(n)
    return n.outputs[0]


def _binary(g: Graph, name: str, shape, rng) -> object:
    w = np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)
    v = g.add_constant(name, w)
    v.quant = QuantParams(1, np.ones(shape[0], np.float32), np.zeros(shape[0], np.int64), axis=0)
    return v


def _requant_bipolar(g: Graph, acc, ch: int, name: str):
    """Sign activation: 2 levels (-1, 0 stand for -1, +1), i.e. 1 bit, zero point 0."""
    m = g.add_constant(f"{name}_m", np.full(ch, 1 << 30, np.int32))
    s = g.add_constant(f"{name}_s", np.full(ch, 40, np.int32))
    return _node(g, "Requantize", [acc, m, s],
                 {"axis": 1, "zero_point": 0, "qmin": -1, "qmax": 0}, name)


def build_cnv_w1a1(seed: int = 0) -> Graph:
    """The CNV-W1A1 integer graph (random binary weights, bipolar activations)."""
    rng = np.random.default_rng(seed)
    g = Graph("cnv_w1a1")
    x = g.add_input("input", (1, 3, 32, 32), np.float32)
    # 8-bit unsigned image: zero point = qmin, so x - zp is in [0, 255]
    h = _node(g, "Quantize", [x], {"scale": 1.0 / 255, "zero_point": -128, "qmin": -128,
                                   "qmax": 127, "bits": 8}, "input_quantize")
    zp = -128
    for layer in CNV_LAYERS:
        if layer == "pool":
            h = _node(g, "MaxPool", [h], {"kernel_shape": [2, 2], "strides": [2, 2],
                                          "pads": [0, 0, 0, 0]}, f"pool{g.unique_name('p')}", "")
            continue
        name, cin, cout = layer
        if name.startswith("conv"):
            w = _binary(g, f"{name}_w", (cout, cin, 3, 3), rng)
            b = g.add_constant(f"{name}_b", np.zeros(cout, np.int32))
            acc = _node(g, "Conv", [h, w, b], {"kernel_shape": [3, 3], "strides": [1, 1],
                                               "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                               "group": 1, "x_zero_point": zp}, name)
        else:
            if h.shape is not None and len(h.shape) == 4:
                h = _node(g, "Flatten", [h], {"axis": 1}, "flatten", "")
            w = _binary(g, f"{name}_w", (cout, cin), rng)
            b = g.add_constant(f"{name}_b", np.zeros(cout, np.int32))
            acc = _node(g, "Gemm", [h, w, b], {"transB": 1, "a_zero_point": zp}, name)
        if name == "fc2":
            h = acc
            break
        h = _requant_bipolar(g, acc, cout, f"{name}_requantize")
        zp = 0   # bipolar: zero point 0 != qmin -1, i.e. a signed 1-bit operand
    out = _node(g, "Dequantize", [h], {"scale": 1.0, "zero_point": 0}, "logits_dequantize")
    g.outputs.append(out)
    return g

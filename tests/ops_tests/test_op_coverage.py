"""Every registered op has an entry in every layer it needs (CONTRIBUTING: "Add an op").

The registry (``compiler/ops``) is the one list of ops; the other layers keep tables keyed
by op: the TVM lowerings, the torch ops of fine-tuning, the pruning channel handlers.
This test fails when an op is registered but missing from a layer it needs, when a layer
names an op that is not registered, or when an op's traits contradict each other.  Ops
deliberately without an entry are listed below with the reason.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import defs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compiler.onnx_io import CANONICAL_OPSET  # noqa: E402
from compiler.ops.registry import OPS, op_traits, ops_with, supported_ops  # noqa: E402

#: float ops without a torch op: fine-tuning (``compiler.torch.to_torch``) refuses a
#: graph holding one, naming it.  They are elementwise math outside the layer vocabulary
#: of the CNNs the flow fine-tunes (conv/BN/activation/pool/residual/concat/resize).
NO_TORCH_OP: dict[str, str] = {
    **{op: "elementwise math no fine-tuned model uses (to_torch names it)" for op in (
        "Abs", "Ceil", "Cos", "Elu", "Erf", "Exp", "Floor", "Log", "Max", "Mean", "Min",
        "Neg", "Pow", "Reciprocal", "Round", "Sign", "Sin", "Softplus", "Sqrt", "Sum")},
    "Cast": "dtype conversion; fine-tuning runs the float graph in one dtype",
}

#: channel-relevant ops without a pruning handler (the analysis blocks their channels)
NO_PRUNING_HANDLER: dict[str, str] = {
    op: "integer op: structured pruning runs on the float graph, before quantize"
    for op in ("q.Conv", "q.ConvTranspose", "q.Gemm", "q.MatMul")
}


def _lowerings() -> dict:
    from targets.tvm.lowering import LOWERINGS

    return LOWERINGS


def _torch_ops() -> dict:
    pytest.importorskip("torch")
    from compiler.torch import TORCH_OPS

    return TORCH_OPS


def _handlers() -> dict:
    import passes.pruning  # noqa: F401  (registers the built-in handlers)
    from passes.pruning.dependency import HANDLERS

    return HANDLERS


def _computing_ops() -> list[str]:
    return [op for op in supported_ops() if not OPS[op].shape_only]


def _channel_relevant() -> frozenset[str]:
    return ops_with("weight_layer") | ops_with("layout_preserving") | ops_with("elementwise")


# -- the layers --------------------------------------------------------------------------

@pytest.mark.parametrize("op", [op for op in supported_ops() if not OPS[op].domain])
def test_onnx_op_has_an_import_path(op):
    """The importer canonicalizes an ONNX op to its schema at the IR opset (17, or the
    op's first opset when newer): that schema must exist and be the registered version."""
    opdef = OPS[op]
    ir_opset = max(CANONICAL_OPSET, opdef.opset)
    schema = defs.get_schema(op, ir_opset)
    if opdef.opset > CANONICAL_OPSET:
        assert schema.since_version == opdef.opset, \
            f"{op}: registered at opset {opdef.opset}, but ONNX introduced it at " \
            f"{schema.since_version}"
    else:
        assert opdef.opset == CANONICAL_OPSET


def test_domain_ops_are_the_integer_ops():
    """Non-ONNX ops (created by the quantize passes, read back by domain) are the q ops."""
    assert {OPS[op].domain for op in supported_ops()} == {"", "q"}


@pytest.mark.parametrize("op", supported_ops())
def test_op_has_a_reference_kernel_and_shape_rule(op):
    opdef = OPS[op]
    assert callable(opdef.kernel) and callable(opdef.infer)
    assert opdef.doc, f"{op}: the kernel needs a docstring (it is the op's documentation)"


@pytest.mark.parametrize("op", _computing_ops())
def test_op_has_a_tvm_lowering(op):
    assert op in _lowerings(), f"{op} has no lowering in targets/tvm/lowering"


def test_every_lowering_is_a_registered_op():
    assert sorted(set(_lowerings()) - set(supported_ops())) == []


@pytest.mark.parametrize("op", sorted(op for op in _channel_relevant() | ops_with("quantizable")
                                      if not OPS[op].domain))
def test_float_layer_op_has_a_torch_op(op):
    """Fine-tuning runs every op of a layer (weights, activations, pools, residual adds,
    concat, resize) in torch; the q ops run there too (quantization-aware fine-tuning)."""
    if op in NO_TORCH_OP:
        pytest.skip(f"{op}: {NO_TORCH_OP[op]}")
    assert op in _torch_ops(), f"{op} has no torch op in compiler/torch_bridge.py"


@pytest.mark.parametrize("op", sorted(op for op in supported_ops() if OPS[op].domain == "q"))
def test_integer_op_has_a_torch_op(op):
    assert op in _torch_ops(), f"{op} has no torch op in compiler/torch_bridge.py"


def test_torch_table_names_registered_ops_and_the_gaps_are_real():
    torch_ops = _torch_ops()
    assert sorted(set(torch_ops) - set(supported_ops())) == []
    assert sorted(op for op in NO_TORCH_OP if op in torch_ops) == [], \
        "listed as missing but now implemented: remove them from NO_TORCH_OP"
    assert sorted(set(NO_TORCH_OP) - set(supported_ops())) == []


@pytest.mark.parametrize("op", sorted(_channel_relevant()))
def test_channel_relevant_op_has_a_pruning_handler(op):
    if op in NO_PRUNING_HANDLER:
        pytest.skip(f"{op}: {NO_PRUNING_HANDLER[op]}")
    assert op in _handlers(), f"{op} has no channel handler in passes/pruning/handlers.py"


def test_pruning_handlers_name_registered_ops():
    assert sorted(set(_handlers()) - set(supported_ops())) == []
    assert sorted(op for op in NO_PRUNING_HANDLER if op in _handlers()) == []


def test_shape_only_ops_fold_instead_of_lowering():
    """shape_only ops must fold before lowering, so they have no lowering of their own."""
    assert sorted(ops_with("shape_only")) == ["ConstantOfShape", "Range", "Shape"]
    assert not set(ops_with("shape_only")) & set(_lowerings())


# -- traits agree with each other -------------------------------------------------------------

@pytest.mark.parametrize("op", sorted(ops_with("integer_counterpart")))
def test_integer_counterpart_is_a_registered_q_op(op):
    counterpart = op_traits(op).integer_counterpart
    target = op_traits(counterpart)
    assert target is not None and target.domain == "q", f"{op} -> {counterpart}"


@pytest.mark.parametrize("op", sorted(ops_with("weight_layer", domain="")))
def test_weight_layer_and_its_integer_form_agree(op):
    """The quantized layer keeps the float layer's weight layout and MACs rule."""
    float_def = op_traits(op)
    q_def = op_traits(float_def.integer_counterpart)
    assert q_def.weight_layer is not None and q_def.macs is float_def.macs
    fw, qw = float_def.weight_layer, q_def.weight_layer
    assert (fw.out_axis, fw.in_axis, fw.transposed_by, fw.grouped, fw.bias_input) == \
        (qw.out_axis, qw.in_axis, qw.transposed_by, qw.grouped, qw.bias_input)
    assert fw.weight_inputs[-1] == qw.weight_inputs[-1]


def test_weight_layers_have_a_macs_rule_and_unary_ops_preserve_layout():
    assert ops_with("weight_layer") <= ops_with("macs")
    assert ops_with("elementwise", "unary") <= ops_with("layout_preserving")
    assert not ops_with("int8_passthrough") & ops_with("quantizable")
    assert ops_with("identity_at_inference") <= ops_with("int8_passthrough")


def test_weight_layer_channel_axes_match_the_shape_rules():
    """``out_axis`` of the weight is the output's channel count, for every weight layer."""
    from compiler.folding import infer_node
    from compiler.ir import Graph

    cases = {  # op -> (x shape, weight shape, attrs)
        "Conv": ((1, 4, 6, 6), (6, 2, 3, 3), {"group": 2, "kernel_shape": [3, 3]}),
        "ConvTranspose": ((1, 4, 6, 6), (4, 3, 3, 3), {"group": 2, "kernel_shape": [3, 3]}),
        "Gemm": ((2, 5), (7, 5), {"transB": 1}),
        "MatMul": ((2, 5), (5, 7), {}),
    }
    assert set(cases) == set(ops_with("weight_layer", domain=""))
    for op, (xs, ws, attrs) in cases.items():
        g = Graph(op)
        x = g.add_input("x", xs, np.float32)
        w = g.add_constant("w", np.zeros(ws, np.float32))
        node = g.add_node(op, [x, w], dict(attrs))
        infer_node(node)
        wl = op_traits(op).weight_layer
        out_axis, in_axis = wl.channel_axes(node.attrs)
        groups = int(attrs.get("group", 1)) if wl.grouped else 1
        out_channels = node.outputs[0].shape[1 if len(xs) > 2 or op == "Gemm" else -1]
        in_channels = xs[1] if len(xs) > 2 or op == "Gemm" else xs[-1]
        per_group_out = ws[out_axis] * (groups if out_axis == 1 and wl.grouped else 1)
        per_group_in = ws[in_axis] * (groups if in_axis == 1 and wl.grouped else 1)
        assert per_group_out == out_channels, f"{op}: out_axis {out_axis}"
        assert per_group_in == in_channels, f"{op}: in_axis {in_axis}"


def test_macs_rules_count_what_the_textbook_counts():
    """MACs = output elements x reduction length; analysis and the cost model agree."""
    from compiler.analysis import node_macs
    from compiler.folding import infer_node
    from compiler.ir import Graph
    from passes.quantization.cost import layer_macs

    g = Graph("macs")
    x = g.add_input("x", (1, 4, 6, 6), np.float32)
    conv = g.add_node("Conv", [x, g.add_constant("w", np.zeros((8, 2, 3, 3), np.float32))],
                      {"group": 2, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    a = g.add_input("a", (3, 5), np.int8)
    mmi = g.add_node("MatMulInteger", [a, g.add_constant("b", np.zeros((5, 7), np.int8))], {})
    for node in (conv, mmi):
        infer_node(node)
    want = {conv: 1 * 8 * 6 * 6 * (2 * 3 * 3), mmi: 3 * 7 * 5}
    for node, macs in want.items():
        assert node_macs(node) == macs == layer_macs(node), node.op_type

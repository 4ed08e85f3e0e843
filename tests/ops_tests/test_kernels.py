"""Reference kernels and shape rules of every registered op.

1. ONNX node conformance cases (``tests/onnx_cases.py``): for each single-node case of
   a registered op, build the opset-17 attribute dict the importer would (schema-17
   defaults filled, strings decoded, ``auto_pad`` resolved to explicit pads), check
   ``infer`` on a one-node `Graph` gives exactly the expected output shapes/dtypes, and
   the kernel's outputs match the expected ones within the case's rtol/atol.
   Cases written for a different opset *form* of the op (attributes or inputs the
   opset-17 schema does not have, older semantics) are skipped with a reason, as are
   features the ops deliberately reject with `UnsupportedOpError`.  The few cases
   whose ONNX-reference data departs from the spec text and onnxruntime
   (`ORT_REFERENCE_CASES`) are checked against onnxruntime instead.
2. Hand-written checks against onnxruntime (single-node opset-17 models) for grouped /
   depthwise / 1-D / 3-D Conv, ConvTranspose (groups, output_padding, output_shape,
   SAME_*), Resize, pooling with ceil_mode, and at least one case for every other op
   (`MISC`); plus a printed timing of two MobileNet-like convolutions.

Run with ``python -m pytest tests/ops_tests -q -s`` to see the per-op report.
"""
from __future__ import annotations

import collections
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiler.ir import Graph  # noqa: E402
from compiler.ops.conv_util import resolve_auto_pad, resolve_auto_pad_transpose  # noqa: E402
from compiler.ops.registry import (OPS, OpValidationError, UnsupportedOpError,  # noqa: E402
                                   get_op, supported_ops)
from tests.onnx_cases import Case, collect_cases  # noqa: E402

OPSET = 17

#: inputs that shape rules read as compile-time constants (built with g.add_constant)
CONST_INPUTS: dict[str, set[int]] = {
    "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3},
    "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1}, "Expand": {1}, "ConstantOfShape": {0},
    "Range": {0, 1, 2}, "Tile": {1}, "ReduceSum": {1}, "ReduceMean": {1}, "ReduceMax": {1},
    "ReduceProd": {1}, "Dropout": {1, 2},
}

#: ops whose opset-17 semantics differ from an older version *without* a visible change
#: in attributes or input count: cases of a model opset whose schema is older than this
#: version are another form of the op.
OLDER_FORMS: dict[str, int] = {
    "Softmax": 13,   # opset < 13: coerced to 2-D at `axis`
    "Resize": 11,    # opset 10: inputs (X, scales), no roi, no coordinate modes
}

#: conformance cases whose expected data comes from an ONNX reference behaviour that
#: departs from the spec text and onnxruntime; these run against onnxruntime instead.
ORT_REFERENCE_CASES: dict[str, str] = {
    "test_resize_downsample_scales_linear_align_corners":
        "align_corners: reference uses fractional in*scale as length_resized",
    "test_resize_downsample_scales_cubic_align_corners":
        "align_corners: reference uses fractional in*scale as length_resized",
}


# =====================================================================================
# attribute handling (what the importer does)
# =====================================================================================

class FormSkip(Exception):
    """The case is written for another opset form of the op."""


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def opset17_attrs(node: onnx.NodeProto, model_opset: int = OPSET) -> dict[str, Any]:
    """Attributes of ``node`` as the importer gives them to kernels: every attribute of
    the opset-17 schema (defaults filled), Python values, strings decoded.  Raises
    `FormSkip` if the node uses another opset form of the op."""
    ir_opset = OPSET  # ops newer than opset 17 (Gelu) follow their registry ``opset``
    if not node.domain and node.op_type in OPS:
        ir_opset = max(OPSET, OPS[node.op_type].opset)
    try:
        schema17 = onnx.defs.get_schema(node.op_type, ir_opset, node.domain)
    except onnx.defs.SchemaError:
        raise FormSkip(f"{node.op_type} does not exist in opset {ir_opset}") from None
    try:
        schema_m = onnx.defs.get_schema(node.op_type, model_opset, node.domain)
        since = schema_m.since_version
    except onnx.defs.SchemaError:
        since = schema17.since_version
    if node.op_type in OLDER_FORMS and since < OLDER_FORMS[node.op_type]:
        raise FormSkip(f"opset-{since} semantics of {node.op_type}")
    attrs: dict[str, Any] = {}
    for attr in node.attribute:
        if attr.name not in schema17.attributes and _inert_newer_attr(node, attr.name):
            continue
        if attr.name not in schema17.attributes and \
                (node.op_type, attr.name) not in ACCEPTED_EXTRA_ATTRS:
            raise FormSkip(f"attribute '{attr.name}' is not in the opset-17 schema "
                           f"(opset-{since} form)")
        attrs[attr.name] = _decode(helper.get_attribute_value(attr))
    for name, spec in schema17.attributes.items():
        if name not in attrs and spec.default_value.type != onnx.AttributeProto.UNDEFINED:
            attrs[name] = _decode(helper.get_attribute_value(spec.default_value))
    n_inputs = len(node.input)
    while n_inputs and node.input[n_inputs - 1] == "":
        n_inputs -= 1
    if n_inputs > schema17.max_input:
        raise FormSkip(f"{n_inputs} inputs but opset 17 allows {schema17.max_input} "
                       f"(opset-{since} form)")
    return attrs


_FLOAT8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
           onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ}


#: post-17 attributes the kernels accept as an extension (kept in attrs)
ACCEPTED_EXTRA_ATTRS = {("Split", "num_outputs")}


def _inert_newer_attr(node: onnx.NodeProto, name: str) -> bool:
    """A post-17 attribute that cannot change this node's result (safe to drop)."""
    if node.op_type == "Cast" and name == "saturate":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        return to not in _FLOAT8   # saturate only affects float8 targets
    return False


def resolve_pads(op_type: str, attrs: dict[str, Any], shapes: list[tuple[int, ...]]) -> None:
    """Replace ``auto_pad`` by explicit ``pads`` (in place), as the importer does."""
    if op_type not in ("Conv", "ConvTranspose", "MaxPool", "AveragePool"):
        return
    auto_pad = attrs.get("auto_pad", "NOTSET")
    x = shapes[0]
    nd = len(x) - 2
    kernel = attrs.get("kernel_shape") or list(shapes[1][2:])
    if op_type == "ConvTranspose":
        pads = resolve_auto_pad_transpose(auto_pad, x[2:], kernel, attrs.get("strides"),
                                          attrs.get("dilations"),
                                          attrs.get("output_padding"),
                                          attrs.get("output_shape"), attrs.get("pads"))
        attrs.pop("output_shape", None)
    elif auto_pad in ("NOTSET", ""):
        return
    else:
        pads = resolve_auto_pad(auto_pad, x[2:], kernel, attrs.get("strides"),
                                attrs.get("dilations"))
    if len(pads) != 2 * nd:
        raise ValueError(f"resolved pads {pads} do not match {nd} spatial dims")
    attrs["pads"] = list(pads)
    attrs["auto_pad"] = "NOTSET"


# =====================================================================================
# running one node: infer on a tiny Graph + the kernel
# =====================================================================================

def run_node(node: onnx.NodeProto, attrs: dict[str, Any], feeds: dict[str, np.ndarray],
             n_outputs: int) -> tuple[list[tuple], list[np.ndarray]]:
    """``(infer result, kernel outputs)`` for ``node`` with input arrays ``feeds``."""
    opdef = get_op(node.op_type, node.domain)
    g = Graph("case")
    values: dict[str, Any] = {}
    const = CONST_INPUTS.get(node.op_type, set())
    inputs = []
    arrays = []
    for i, name in enumerate(node.input):
        if name == "":
            inputs.append(None)
            arrays.append(None)
            continue
        arr = feeds[name]
        if name not in values:
            if i in const:
                values[name] = g.add_constant(name, arr, unique=False)
            else:
                values[name] = g.add_input(name, arr.shape, arr.dtype)
        inputs.append(values[name])
        arrays.append(arr)
    while inputs and inputs[-1] is None:
        inputs.pop()
        arrays.pop()
    n = g.add_node(node.op_type, inputs, dict(attrs), num_outputs=n_outputs,
                   domain=node.domain)
    inferred = opdef.infer(n)
    kattrs = dict(attrs)
    if node.op_type == "Split" and (len(arrays) < 2 or arrays[1] is None):
        kattrs["num_outputs"] = n_outputs  # the kernel cannot see the node's outputs
    try:
        result = opdef.kernel(kattrs, *arrays)
    except UnsupportedOpError as exc:
        raise AssertionError(f"the kernel raised UnsupportedOpError for a node its infer "
                             f"accepted (it must fail in infer, at import): {exc}") from None
    outs = list(result) if isinstance(result, tuple) else [result]
    for i, out in enumerate(outs):
        for arr in arrays:
            if isinstance(out, np.ndarray) and arr is not None and np.shares_memory(out, arr):
                raise AssertionError(f"kernel output {i} aliases an input array")
    return inferred, outs


def compare(name: str, inferred, outs, expected, rtol, atol) -> list[str]:
    """Mismatch messages (empty when everything agrees)."""
    errors = []
    if len(inferred) != len(expected):
        errors.append(f"{name}: infer gave {len(inferred)} outputs, expected {len(expected)}")
    if len(outs) != len(expected):
        errors.append(f"{name}: kernel gave {len(outs)} outputs, expected {len(expected)}")
    for i, exp in enumerate(expected):
        exp = np.asarray(exp)
        if i < len(inferred):
            shape, dtype = inferred[i]
            if tuple(shape) != exp.shape or np.dtype(dtype) != exp.dtype:
                errors.append(f"{name}: infer output {i} is {np.dtype(dtype)}{tuple(shape)}, "
                              f"expected {exp.dtype}{exp.shape}")
        if i < len(outs):
            got = outs[i]
            if not isinstance(got, np.ndarray):
                errors.append(f"{name}: kernel output {i} is {type(got).__name__}, "
                              "not ndarray")
                got = np.asarray(got)
            if got.shape != exp.shape or got.dtype != exp.dtype:
                errors.append(f"{name}: kernel output {i} is {got.dtype}{got.shape}, "
                              f"expected {exp.dtype}{exp.shape}")
                continue
            try:
                if exp.dtype.kind in "fc":
                    np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol)
                else:
                    np.testing.assert_array_equal(got, exp)
            except AssertionError as exc:
                errors.append(f"{name}: output {i} differs:{str(exc)[:600]}")
    return errors


# =====================================================================================
# conformance cases
# =====================================================================================

_CASES: dict[str, list[Case]] | None = None
REPORT: dict[str, dict[str, Any]] = {}


def _cases() -> dict[str, list[Case]]:
    global _CASES
    if _CASES is None:
        _CASES = collect_cases(set(OPS) | set(supported_ops()))
    return _CASES


def run_case(case: Case) -> tuple[str, str | list[str]]:
    """("skip", reason) | ("pass", []) | ("fail", errors)."""
    node = case.node
    for arr in case.inputs:
        if not isinstance(arr, np.ndarray):
            return "skip", "non-tensor (sequence/optional) input"
    for arr in case.outputs:
        if not isinstance(arr, np.ndarray):
            return "skip", "non-tensor (sequence/optional) output"
    try:
        attrs = opset17_attrs(node, case.opset)
    except FormSkip as exc:
        return "skip", str(exc)
    feeds = dict(zip(case.input_names, case.inputs))
    shapes = [feeds[n].shape if n else () for n in node.input]
    resolve_pads(node.op_type, attrs, shapes)
    n_outputs = len(node.output)
    while n_outputs and node.output[n_outputs - 1] == "":
        n_outputs -= 1
    try:
        with np.errstate(all="ignore"):
            inferred, outs = run_node(node, attrs, feeds, n_outputs)
    except UnsupportedOpError as exc:
        return "skip", f"Unsupported: {_short(str(exc))}"
    except Exception as exc:  # noqa: BLE001 - reported as a failure
        return "fail", [f"{case.name}: {type(exc).__name__}: {exc}"]
    expected = dict(zip(case.output_names, case.outputs))
    exp_list = [expected[name] for name in node.output[:n_outputs]]
    if case.name in ORT_REFERENCE_CASES:
        exp_list = _ort_outputs(case.model, feeds)[:n_outputs]
    errors = compare(case.name, inferred, outs, exp_list, case.rtol, case.atol)
    return ("fail", errors) if errors else ("pass", [])


def _ort_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feeds.items() if k in names})


def _short(text: str) -> str:
    text = text.split(" (node ")[0]
    return text if len(text) < 160 else text[:157] + "..."


@pytest.mark.parametrize("op_type", supported_ops())
def test_conformance(op_type: str) -> None:
    cases = _cases().get(op_type, [])
    stats = {"ran": 0, "passed": 0, "skipped": 0, "reasons": collections.Counter(),
             "failures": []}
    for case in cases:
        status, info = run_case(case)
        if status == "skip":
            stats["skipped"] += 1
            stats["reasons"][info] += 1
            continue
        stats["ran"] += 1
        if status == "pass":
            stats["passed"] += 1
        else:
            stats["failures"].extend(info)
    REPORT[op_type] = stats
    line = f"[{op_type}] cases={len(cases)} ran={stats['ran']} passed={stats['passed']} " \
           f"skipped={stats['skipped']}"
    print("\n" + line)
    for case in cases:
        if case.name in ORT_REFERENCE_CASES:
            print(f"    vs onnxruntime: {case.name} ({ORT_REFERENCE_CASES[case.name]})")
    for reason, count in sorted(stats["reasons"].items()):
        print(f"    skip x{count}: {reason}")
    for failure in stats["failures"]:
        print(f"    FAIL {failure}")
    assert not stats["failures"], f"{op_type}: {len(stats['failures'])} mismatches"
    if stats["ran"] == 0:
        assert op_type in hand_tested_ops(), \
            f"{op_type}: no conformance case ran and there is no hand-written test"


# =====================================================================================
# hand-written checks against onnxruntime
# =====================================================================================

#: ops covered by the dedicated hand-written onnxruntime tests below (plus MISC)
HAND_TESTED = {"Conv", "ConvTranspose", "Resize", "MaxPool", "AveragePool",
               "Gelu"}  # Gelu: test_gelu.py (opset 20)


def hand_tested_ops() -> set[str]:
    from quant_tests.helpers import QUANT_TESTED_OPS  # integer ops: tests/quant_tests

    return HAND_TESTED | {case[0] for case in MISC} | QUANT_TESTED_OPS

_rng = np.random.default_rng(0)


def _randn(*shape, dtype=np.float32) -> np.ndarray:
    return _rng.standard_normal(shape).astype(dtype)


def ort_check(op_type: str, inputs: list[tuple[str, np.ndarray] | None],
              attrs: dict[str, Any] | None = None, *, consts: set[str] = frozenset(),
              n_outputs: int = 1, rtol: float = 1e-5, atol: float = 1e-5) -> list[np.ndarray]:
    """Run a single-node opset-17 model in onnxruntime and compare kernel + infer."""
    import onnxruntime as ort

    names = ["" if item is None else item[0] for item in inputs]
    out_names = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, out_names, **(attrs or {}))
    graph_inputs, inits, feeds = [], [], {}
    for item in inputs:
        if item is None:
            continue
        name, arr = item
        if name in consts:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            graph_inputs.append(helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
            feeds[name] = arr
    outputs = [onnx.ValueInfoProto(name=n) for n in out_names]
    graph = helper.make_graph([node], "g", graph_inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    all_arrays = {item[0]: item[1] for item in inputs if item is not None}
    kattrs = opset17_attrs(node)
    resolve_pads(op_type, kattrs, [all_arrays[n].shape if n else () for n in names])
    inferred, outs = run_node(node, kattrs, all_arrays, n_outputs)
    errors = compare(f"{op_type}{attrs}", inferred, outs, expected, rtol, atol)
    assert not errors, "\n".join(errors)
    return outs


CONV_CASES = [
    # (x shape, w shape, attrs)
    ((2, 8, 13, 11), (12, 4, 3, 3), dict(group=2, strides=[2, 1], dilations=[1, 2],
                                         pads=[1, 0, 2, 1])),
    ((1, 16, 15, 15), (16, 1, 3, 3), dict(group=16, pads=[1, 1, 1, 1])),        # depthwise
    ((1, 8, 17, 17), (16, 1, 3, 3), dict(group=8, strides=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 6, 12, 12), (6, 1, 5, 5), dict(group=6, dilations=[2, 2], pads=[4, 4, 4, 4])),
    ((1, 3, 16, 16), (8, 3, 1, 1), {}),                                        # 1x1
    ((1, 4, 16, 16), (8, 2, 1, 1), dict(group=2, strides=[2, 2])),
    ((2, 6, 20), (4, 3, 3), dict(group=2, strides=[2], pads=[1, 2])),           # 1-D
    ((1, 4, 6, 7, 5), (6, 2, 3, 2, 3), dict(group=2, pads=[1, 0, 1, 1, 1, 0])),  # 3-D
    ((1, 3, 9, 9), (5, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 10, 10), (5, 3, 4, 4), dict(auto_pad="SAME_LOWER", strides=[3, 3],
                                        dilations=[1, 1])),
    ((1, 3, 10, 10), (5, 3, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_vs_ort(xs, ws, attrs, bias):
    inputs = [("x", _randn(*xs)), ("w", _randn(*ws))]
    if bias:
        inputs.append(("b", _randn(ws[0])))
    ort_check("Conv", inputs, attrs, consts={"w", "b"}, rtol=1e-4, atol=1e-4)


def test_resolve_auto_pad_arithmetic():
    """SAME_* gives ceil(in / stride) outputs with the dilated kernel (onnxruntime refuses
    dilation with SAME_*, so this is checked by arithmetic rather than against it)."""
    from compiler.ops.conv_util import conv_output_shape

    for in_size in range(1, 12):
        for k in (1, 2, 3, 4):
            for s in (1, 2, 3):
                for d in (1, 2, 3):
                    for mode in ("SAME_UPPER", "SAME_LOWER"):
                        pads = resolve_auto_pad(mode, [in_size], [k], [s], [d])
                        begin, end = pads
                        total = max(0, (-(-in_size // s) - 1) * s + (k - 1) * d + 1 - in_size)
                        assert begin + end == total and abs(begin - end) <= 1
                        assert (end >= begin) if mode == "SAME_UPPER" else (begin >= end)
                        out = conv_output_shape([in_size], [k], [s], pads, [d])
                        assert out == [-(-in_size // s)], (mode, in_size, k, s, d, pads)
    assert resolve_auto_pad("VALID", [7, 7], [3, 3], [2, 2], [1, 1]) == [0, 0, 0, 0]
    assert resolve_auto_pad("NOTSET", [7], [3], pads=[1, 2]) == [1, 2]
    # ConvTranspose: output_shape larger than the natural size extends at the end
    assert resolve_auto_pad_transpose("NOTSET", [3], [3], [3], output_shape=[10]) == [0, -1]
    assert resolve_auto_pad_transpose("NOTSET", [3], [3], [2], output_shape=[6]) == [1, 0]
    assert resolve_auto_pad_transpose("SAME_UPPER", [4], [3], [2]) == [0, 1]
    assert resolve_auto_pad_transpose("SAME_LOWER", [4], [3], [2]) == [1, 0]


CONV_T_CASES = [
    ((1, 4, 5, 6), (4, 3, 3, 3), dict(group=2, strides=[2, 2], output_padding=[1, 0],
                                      pads=[1, 0, 0, 1])),
    ((2, 6, 4, 4), (6, 1, 3, 3), dict(group=6, strides=[2, 2], output_padding=[1, 1],
                                      pads=[1, 1, 1, 1])),                    # depthwise
    ((1, 4, 5, 5), (4, 2, 3, 3), dict(group=2, strides=[3, 2], dilations=[2, 1],
                                      output_padding=[2, 1])),
    ((1, 3, 4, 4), (3, 2, 4, 4), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ((1, 2, 7), (2, 3, 3), dict(strides=[2], output_padding=[1])),           # 1-D
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), dict(strides=[2, 1, 2], pads=[0, 1, 0, 0, 1, 1])),
    ((1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[3, 2], output_shape=[10, 8])),
    ((1, 2, 3, 3), (2, 2, 3, 3), dict(strides=[2, 2], output_shape=[6, 6])),
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 4, 4), (2, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_T_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose_vs_ort(xs, ws, attrs, bias):
    inputs = [("x", _randn(*xs)), ("w", _randn(*ws))]
    if bias:
        inputs.append(("b", _randn(ws[1] * attrs.get("group", 1))))
    ort_check("ConvTranspose", inputs, attrs, consts={"w", "b"}, rtol=1e-4, atol=1e-4)


RESIZE_CASES = [
    # (x shape, scales, sizes, attrs)
    ((1, 3, 5, 7), [1, 1, 2, 2], None, dict(mode="linear")),                 # half_pixel
    ((1, 3, 8, 6), [1, 1, 0.5, 0.5], None, dict(mode="linear")),
    ((2, 3, 5, 7), None, [2, 3, 9, 4], dict(mode="linear")),
    ((1, 2, 5, 5), None, [1, 2, 8, 11], dict(mode="linear",
                                             coordinate_transformation_mode="align_corners")),
    ((1, 2, 5, 5), None, [1, 2, 8, 11],
     dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    ((1, 2, 5, 5), None, [1, 2, 1, 11],
     dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel")),
    ((1, 2, 5, 5), [1, 1, 1.5, 2.5], None,
     dict(mode="linear", coordinate_transformation_mode="asymmetric")),
    ((1, 2, 4, 6, 5), [1, 1, 2, 0.5, 1.5], None, dict(mode="linear")),       # 3-D linear
    ((1, 3, 5, 7), [1, 1, 2, 2], None, dict(mode="nearest")),
    ((1, 3, 5, 7), [1, 1, 2, 3], None,
     dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")),
    ((1, 3, 6, 6), None, [1, 3, 9, 4],
     dict(mode="nearest", nearest_mode="round_prefer_ceil")),
    ((1, 3, 6, 6), None, [1, 3, 9, 4], dict(mode="nearest", nearest_mode="ceil")),
    ((1, 3, 6, 6), None, [1, 3, 13, 5],
     dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn")),
    ((1, 3, 6, 6), None, [1, 3, 13, 5],
     dict(mode="nearest", coordinate_transformation_mode="align_corners",
          nearest_mode="round_prefer_ceil")),
    ((1, 2, 5, 6), [1, 1, 2, 2], None, dict(mode="cubic")),
    ((1, 2, 4, 6), [1, 1, 0.6, 0.8], None, dict(mode="linear",
                                                coordinate_transformation_mode="align_corners")),
    ((1, 2, 4, 6), [1, 1, 0.8, 1.7], None, dict(mode="cubic",
                                                coordinate_transformation_mode="align_corners")),
    ((1, 2, 5, 6), None, [1, 2, 7, 3], dict(mode="cubic", exclude_outside=1,
                                            cubic_coeff_a=-0.5)),
]


@pytest.mark.parametrize("xs,scales,sizes,attrs", RESIZE_CASES)
def test_resize_vs_ort(xs, scales, sizes, attrs):
    inputs: list = [("x", _randn(*xs)), None]
    if scales is not None:
        inputs.append(("scales", np.array(scales, dtype=np.float32)))
    else:
        inputs += [None, ("sizes", np.array(sizes, dtype=np.int64))]
    ort_check("Resize", inputs, attrs, consts={"scales", "sizes"})


POOL_CASES = [
    ("MaxPool", (1, 3, 10, 10), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", (1, 3, 11, 9), dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1,
                                    pads=[1, 0, 1, 1])),
    ("MaxPool", (1, 2, 9, 9), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                                   pads=[0, 0, 1, 1])),
    ("MaxPool", (1, 2, 12, 12), dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2],
                                     ceil_mode=1)),
    ("MaxPool", (2, 3, 10, 10), dict(kernel_shape=[3, 3], strides=[2, 2],
                                     auto_pad="SAME_UPPER")),
    ("MaxPool", (1, 3, 16), dict(kernel_shape=[3], strides=[3], ceil_mode=1)),
    ("AveragePool", (1, 3, 10, 10), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", (1, 3, 11, 9), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                                        pads=[1, 1, 1, 1], count_include_pad=1)),
    ("AveragePool", (1, 3, 11, 9), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1,
                                        pads=[1, 1, 1, 1], count_include_pad=0)),
    ("AveragePool", (1, 3, 7, 7), dict(kernel_shape=[2, 2], strides=[2, 2],
                                       auto_pad="SAME_LOWER", count_include_pad=0)),
    ("AveragePool", (1, 2, 6, 5, 7), dict(kernel_shape=[2, 3, 2], strides=[2, 2, 2],
                                          ceil_mode=1, pads=[0, 1, 0, 1, 1, 0],
                                          count_include_pad=1)),
]


@pytest.mark.parametrize("op,xs,attrs", POOL_CASES)
def test_pool_vs_ort(op, xs, attrs):
    ort_check(op, [("x", _randn(*xs))], attrs)


def _i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _misc_cases():
    """(op, inputs, attrs, constant input names) for the other ops, vs onnxruntime."""
    x4 = _randn(2, 3, 4, 5)
    ints = np.array([[-7, 7, -8, 9], [5, -5, 0, -1]], dtype=np.int32)
    dens = np.array([[2, 2, 3, -4], [-3, 3, 7, 2]], dtype=np.int32)
    return [
        ("ReduceMean", [("x", x4)], dict(axes=[1, -1], keepdims=0), ()),
        ("ReduceMean", [("x", x4)], dict(axes=[2, 3]), ()),
        ("ReduceMean", [("x", x4)], {}, ()),
        ("ReduceMax", [("x", x4)], dict(axes=[0, 2], keepdims=0), ()),
        ("ReduceProd", [("x", x4)], dict(axes=[-2]), ()),
        ("ReduceSum", [("x", x4), ("axes", _i64(1, 3))], dict(keepdims=0), {"axes"}),
        ("ReduceSum", [("x", x4)], dict(noop_with_empty_axes=1), ()),
        ("Div", [("a", ints), ("b", dens)], {}, ()),
        ("Div", [("a", ints.astype(np.int64)), ("b", np.array([3], np.int64))], {}, ()),
        ("Div", [("a", x4), ("b", _randn(4, 1))], {}, ()),
        ("Pad", [("x", x4), ("p", _i64(0, 1, -1, 2, 0, 0, 2, -2)), ("v", np.float32(1.5))],
         dict(mode="constant"), {"p", "v"}),
        ("Pad", [("x", x4), ("p", _i64(0, 0, 2, 3, 0, 0, 3, 1))], dict(mode="reflect"), {"p"}),
        ("Pad", [("x", x4), ("p", _i64(0, 1, 2, -1, 1, 0, 1, 4))], dict(mode="edge"), {"p"}),
        ("Slice", [("x", x4), ("s", _i64(-1, 4)), ("e", _i64(-100, 0)), ("a", _i64(3, 2)),
                   ("t", _i64(-2, -1))], {}, {"s", "e", "a", "t"}),
        ("Slice", [("x", x4), ("s", _i64(1, -3)), ("e", _i64(1000, -1))], {}, {"s", "e"}),
        ("Split", [("x", x4)], dict(axis=-1, _outputs=5), ()),
        ("Split", [("x", _randn(4, 6))], dict(_outputs=2), ()),
        ("Split", [("x", x4), ("sp", _i64(1, 3, 1))], dict(axis=3, _outputs=3), {"sp"}),
        ("Concat", [("a", x4), ("b", _randn(2, 3, 2, 5))], dict(axis=-2), ()),
        ("Gather", [("x", x4), ("i", _i64(-1, 0, 2, -3).reshape(2, 2))], dict(axis=1), ()),
        ("Expand", [("x", _randn(3, 1)), ("s", _i64(2, 1, 4))], {}, {"s"}),
        ("Tile", [("x", _randn(2, 3)), ("r", _i64(2, 3))], {}, {"r"}),
        ("Range", [("a", np.float32(0.5)), ("b", np.float32(3.1)), ("c", np.float32(0.3))],
         {}, {"a", "b", "c"}),
        ("Range", [("a", np.int64(10)), ("b", np.int64(-4)), ("c", np.int64(-3))], {},
         {"a", "b", "c"}),
        ("ConstantOfShape", [("s", _i64(2, 3))],
         dict(value=numpy_helper.from_array(np.array([7], np.int64))), {"s"}),
        ("ConstantOfShape", [("s", _i64(4))], {}, {"s"}),
        ("Shape", [("x", x4)], dict(start=-3, end=-1), ()),
        ("Cast", [("x", _randn(3, 4) * 5)], dict(to=onnx.TensorProto.INT32), ()),
        ("Cast", [("x", np.array([0.0, -0.5, 2.0], np.float32))],
         dict(to=onnx.TensorProto.BOOL), ()),
        ("Cast", [("x", ints)], dict(to=onnx.TensorProto.FLOAT16), ()),
        ("Clip", [("x", x4), None, ("hi", np.float32(0.25))], {}, ()),
        ("Clip", [("x", ints), ("lo", np.int32(-2)), ("hi", np.int32(3))], {}, ()),
        ("Relu", [("x", x4)], {}, ()),
        ("LeakyRelu", [("x", x4)], dict(alpha=0.3), ()),
        ("PRelu", [("x", x4), ("s", _randn(3, 1, 1))], {}, ()),
        ("HardSigmoid", [("x", x4 * 4)], dict(alpha=0.3, beta=0.4), ()),
        ("HardSwish", [("x", x4 * 4)], {}, ()),
        ("Sigmoid", [("x", x4 * 10)], {}, ()),
        ("Tanh", [("x", x4)], {}, ()),
        ("BatchNormalization", [("x", x4), ("g", _randn(3)), ("b", _randn(3)),
                                ("m", _randn(3)), ("v", np.abs(_randn(3)) + 0.1)],
         dict(epsilon=1e-3), {"g", "b", "m", "v"}),
        ("Gemm", [("a", _randn(4, 3)), ("b", _randn(5, 4)), ("c", _randn(5))],
         dict(transA=1, transB=1, alpha=0.5, beta=2.0), ()),
        ("Gemm", [("a", _randn(2, 3)), ("b", _randn(3, 4)), ("c", np.float32(1.0))], {}, ()),
        ("Gemm", [("a", _randn(2, 3)), ("b", _randn(3, 4))], {}, ()),
        ("MatMul", [("a", _randn(4)), ("b", _randn(2, 4, 3))], {}, ()),
        ("MatMul", [("a", _randn(2, 1, 3, 4)), ("b", _randn(5, 4, 2))], {}, ()),
        ("MatMul", [("a", _randn(3, 4)), ("b", _randn(4))], {}, ()),
        ("Softmax", [("x", x4)], dict(axis=1), ()),
        ("Softmax", [("x", x4 * 30)], {}, ()),
        ("Flatten", [("x", x4)], dict(axis=0), ()),
        ("Flatten", [("x", x4)], dict(axis=-1), ()),
        ("Reshape", [("x", x4), ("s", _i64(0, -1, 5))], {}, {"s"}),
        ("Reshape", [("x", np.zeros((0, 3), np.float32)), ("s", _i64(3, 0))],
         dict(allowzero=1), {"s"}),
        ("Transpose", [("x", x4)], {}, ()),
        ("Transpose", [("x", x4)], dict(perm=[0, 2, 3, 1]), ()),
        ("Squeeze", [("x", _randn(1, 3, 1, 2))], {}, ()),
        ("Squeeze", [("x", _randn(1, 3, 1, 2)), ("a", _i64(-2))], {}, {"a"}),
        ("Unsqueeze", [("x", _randn(3, 2)), ("a", _i64(-1, 0))], {}, {"a"}),
        ("Identity", [("x", x4)], {}, ()),
        ("Dropout", [("x", x4), ("r", np.float32(0.3))], {}, {"r"}),
        ("Where", [("c", _randn(4, 5) > 0), ("a", x4), ("b", _randn(5))], {}, ()),
        ("Equal", [("a", ints), ("b", np.array([7], np.int32))], {}, ()),
        ("Less", [("a", x4), ("b", _randn(5))], {}, ()),
        ("Greater", [("a", x4), ("b", _randn(4, 1))], {}, ()),
        ("Not", [("a", _randn(3, 4) > 0)], {}, ()),
        ("Floor", [("x", x4 * 3)], {}, ()),
        ("Ceil", [("x", x4 * 3)], {}, ()),
        ("Sqrt", [("x", np.abs(x4))], {}, ()),
        ("Neg", [("x", ints)], {}, ()),
        ("Abs", [("x", x4)], {}, ()),
        ("Exp", [("x", x4)], {}, ()),
        ("Log", [("x", np.abs(x4) + 0.01)], {}, ()),
        ("Pow", [("x", np.abs(x4)), ("y", np.array([2, 0.5, -1, 3, 1.5], np.float32))], {}, ()),
        ("Pow", [("x", ints), ("y", np.array(2, np.int64))], {}, ()),
        ("Add", [("a", x4), ("b", _randn(3, 1, 1))], {}, ()),
        ("Sub", [("a", ints), ("b", dens)], {}, ()),
        ("Mul", [("a", x4), ("b", np.float32(3.0))], {}, ()),
        ("Min", [("a", x4), ("b", _randn(5)), ("c", _randn(4, 1))], {}, ()),
        ("Max", [("a", x4), ("b", _randn(5)), ("c", _randn(4, 1))], {}, ()),
        ("Sum", [("a", x4), ("b", _randn(5)), ("c", _randn(4, 1))], {}, ()),
        ("GlobalAveragePool", [("x", _randn(2, 3, 4, 5, 6))], {}, ()),
        ("GlobalMaxPool", [("x", x4)], {}, ()),
        ("Resize", [("x", np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4)), None,
                    ("s", np.array([1, 1, 2, 2], np.float32))], dict(mode="nearest"), {"s"}),
        # ops that had a TVM lowering before a registry entry
        ("LogSoftmax", [("x", x4 * 30)], dict(axis=1), ()),
        ("LogSoftmax", [("x", x4)], {}, ()),
        ("Elu", [("x", x4 * 3)], dict(alpha=0.7), ()),
        ("Elu", [("x", x4)], {}, ()),
        ("Erf", [("x", x4 * 2)], {}, ()),
        ("Sign", [("x", np.array([-2.5, -0.0, 0.0, 3.0], np.float32))], {}, ()),
        ("Sign", [("x", ints)], {}, ()),
        ("Sin", [("x", x4 * 4)], {}, ()),
        ("Cos", [("x", x4 * 4)], {}, ()),
        ("Softplus", [("x", x4 * 40)], {}, ()),
        ("Reciprocal", [("x", x4)], {}, ()),
        ("Round", [("x", np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 2.51, -3.7, 1e7 + 0.5],
                                  np.float32))], {}, ()),
        ("ReduceMin", [("x", x4)], dict(axes=[1, -1], keepdims=0), ()),
        ("ReduceMin", [("x", ints)], dict(axes=[0]), ()),
        ("ReduceMin", [("x", x4)], {}, ()),
        ("ArgMax", [("x", x4)], dict(axis=2, keepdims=0), ()),
        ("ArgMax", [("x", np.array([[1, 3, 3, 0], [2, 2, 1, 2]], np.int32))],
         dict(axis=1, select_last_index=1), ()),
        ("ArgMin", [("x", x4)], dict(axis=-1), ()),
        ("ArgMin", [("x", np.array([[1, 0, 3, 0], [2, 2, 1, 1]], np.int64))],
         dict(axis=1, keepdims=0, select_last_index=1), ()),
        ("Mean", [("a", x4), ("b", _randn(5)), ("c", _randn(4, 1))], {}, ()),
        ("Mean", [("a", x4)], {}, ()),
        ("CastLike", [("x", _randn(3, 4) * 5), ("t", np.zeros((2,), np.int32))], {}, ()),
        ("CastLike", [("x", ints), ("t", np.zeros((), np.bool_))], {}, ()),
        ("CastLike", [("x", x4), ("t", np.zeros((1,), np.float16))], {}, ()),
        ("GreaterOrEqual", [("a", ints), ("b", dens)], {}, ()),
        ("LessOrEqual", [("a", x4), ("b", _randn(4, 1))], {}, ()),
        ("And", [("a", _randn(3, 4) > 0), ("b", _randn(4) > 0)], {}, ()),
        ("Or", [("a", _randn(3, 4) > 0), ("b", _randn(3, 1) > 0)], {}, ()),
        ("Xor", [("a", _randn(3, 4) > 0), ("b", _randn(3, 4) > 0)], {}, ()),
    ]


MISC = _misc_cases()


@pytest.mark.parametrize("op,inputs,attrs,consts", MISC,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MISC)])
def test_misc_vs_ort(op, inputs, attrs, consts):
    inputs = [None if item is None else (item[0], np.asarray(item[1])) for item in inputs]
    attrs = dict(attrs)
    n_outputs = attrs.pop("_outputs", 1)
    ort_check(op, inputs, attrs, consts=set(consts), n_outputs=n_outputs, rtol=1e-5,
              atol=1e-6)


def test_every_op_has_a_hand_written_or_conformance_check():
    covered = hand_tested_ops()
    missing = sorted(set(supported_ops()) - covered)
    assert not missing, f"ops without a hand-written onnxruntime check: {missing}"


def test_unsupported_attribute_values_raise_in_infer():
    cases = [
        ("Resize", dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric")),
        ("Pad", dict(mode="wrap")),
    ]
    for op, attrs in cases:
        g = Graph()
        x = g.add_input("x", (1, 1, 4, 4))
        if op == "Resize":
            node = g.add_node(op, [x, None, g.add_constant("s", np.ones(4, np.float32))],
                              attrs)
        else:
            node = g.add_node(op, [x, g.add_constant("p", np.zeros(8, np.int64))], attrs)
        with pytest.raises(UnsupportedOpError, match=f"{node.name}.*{op}"):
            get_op(op).infer(node)


def test_non_constant_shape_operand_is_reported():
    g = Graph()
    x = g.add_input("x", (2, 3))
    s = g.add_input("s", (1,), np.int64)
    node = g.add_node("Reshape", [x, s])
    with pytest.raises(OpValidationError, match="constant"):
        get_op("Reshape").infer(node)


def test_conv_timings():
    """Not an assertion: prints the reference conv speed on MobileNet-like layers."""
    conv = get_op("Conv").kernel
    x = _randn(1, 32, 112, 112)
    w = _randn(32, 1, 3, 3)
    attrs = dict(group=32, pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1],
                 kernel_shape=[3, 3], auto_pad="NOTSET")
    conv(attrs, x, w)
    t = time.perf_counter()
    for _ in range(5):
        conv(attrs, x, w)
    dw = (time.perf_counter() - t) / 5
    x2 = _randn(1, 64, 56, 56)
    w2 = _randn(64, 64, 3, 3)
    attrs2 = dict(group=1, pads=[1, 1, 1, 1], strides=[1, 1], dilations=[1, 1],
                  kernel_shape=[3, 3], auto_pad="NOTSET")
    conv(attrs2, x2, w2)
    t = time.perf_counter()
    for _ in range(5):
        conv(attrs2, x2, w2)
    full = (time.perf_counter() - t) / 5
    print(f"\n[timing] depthwise 3x3 1x32x112x112: {dw * 1e3:.1f} ms; "
          f"3x3 conv 1x64x56x56->64: {full * 1e3:.1f} ms")


def test_summary():
    """Prints the per-op totals (runs last in file order)."""
    if not REPORT:
        pytest.skip("run with the conformance tests to get a summary")
    ran = sum(s["ran"] for s in REPORT.values())
    passed = sum(s["passed"] for s in REPORT.values())
    skipped = sum(s["skipped"] for s in REPORT.values())
    print(f"\n[summary] ops={len(REPORT)} ran={ran} passed={passed} skipped={skipped}")
    missing = sorted(op for op in OPS if op not in REPORT)
    assert not missing, f"ops without a conformance run: {missing}"


def test_new_op_dtype_rules():
    """Legal-but-unimplemented dtypes are UnsupportedOpError; illegal ones are invalid."""
    g = Graph()
    xi = g.add_input("xi", (2, 3), np.int32)
    xf = g.add_input("xf", (2, 3), np.float32)
    xb = g.add_input("xb", (2, 3), np.bool_)
    with pytest.raises(UnsupportedOpError, match="Erf.*int32"):
        get_op("Erf").infer(g.add_node("Erf", [xi]))
    with pytest.raises(OpValidationError, match="And.*bool"):
        get_op("And").infer(g.add_node("And", [xb, xf]))
    with pytest.raises(OpValidationError, match="Less.*different dtypes"):
        get_op("Less").infer(g.add_node("Less", [xi, xf]))
    with pytest.raises(OpValidationError, match="Mean"):
        get_op("Mean").infer(g.add_node("Mean", [xi, xi]))
    assert get_op("CastLike").infer(g.add_node("CastLike", [xf, xb])) == \
        [((2, 3), np.dtype(np.bool_))]
    assert get_op("ArgMax").infer(g.add_node("ArgMax", [xf], {"axis": -1, "keepdims": 0})) == \
        [((2,), np.dtype(np.int64))]

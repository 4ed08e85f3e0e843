"""ONNX in and out: the only module that imports ``onnx``.

Import turns a model of any opset from 11 upward into our IR, whose ops have ONNX
opset-17 semantics with every attribute explicit (ops newer than opset 17 follow their
first version, the ``opset`` of their registry entry: Gelu is opset 20).  Old and new op forms are adapted
here (``_ADAPTERS``), schema defaults are filled in, ``auto_pad`` is resolved to
explicit pads, Constant nodes become constants, and the exporters' shape arithmetic
(Shape -> Gather -> Concat -> Reshape ...) folds away because input shapes are static.
Anything else that we cannot represent exactly is refused with an error that names the
file, node, op and the supported set — before anything is written anywhere.

Export writes the graph back as an opset-17 model that onnxruntime runs (opset 20 when
it holds an op such as Gelu that only exists there, provided every other op of the graph
means the same at that opset).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import defs, helper, numpy_helper

from .fileio import atomic_write_bytes
from .folding import fold_or_infer
from .ir import Graph, Node, Value
from .ops.registry import OpValidationError, UnsupportedOpError, get_op, ops_with, supported_ops

CANONICAL_OPSET = 17
MIN_OPSET = 11

__all__ = ["import_model", "export_model", "load_onnx", "ModelImportError", "ModelExportError",
           "CANONICAL_OPSET"]


class ModelImportError(ValueError):
    """The ONNX input cannot be imported (malformed, dynamic without shapes, unsupported)."""


class ModelExportError(ValueError):
    """The graph cannot be written as one ONNX opset (nothing is written)."""


ModelSource = "onnx.ModelProto | str | os.PathLike | bytes"


def load_onnx(source: Any) -> tuple[onnx.ModelProto, str]:
    """Parse ``source`` (a path, serialized bytes or a ModelProto); returns (model, label)."""
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "<model>"
    if isinstance(source, (bytes, bytearray)):
        label = "<bytes>"
        data = bytes(source)
        base_dir = None
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise ModelImportError(f"ONNX file not found: {path}")
        if path.is_dir():
            raise ModelImportError(f"{path} is a directory, not an ONNX file")
        data = path.read_bytes()
        base_dir = str(path.parent)
    if not data:
        raise ModelImportError(f"{label}: the file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError (and others on garbage)
        raise ModelImportError(f"{label}: not a valid ONNX model (cannot be parsed: {exc}); "
                               "the file may be truncated or not ONNX at all") from None
    if not model.graph.node and not model.graph.output:
        raise ModelImportError(f"{label}: not a valid ONNX model (it has no graph)")
    if base_dir is not None and _uses_external_data(model):
        try:
            onnx.load_external_data_for_model(model, base_dir)
        except Exception as exc:
            raise ModelImportError(f"{label}: cannot load external tensor data: {exc}") from None
    return model, label


def _uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


# --- import --------------------------------------------------------------------

def import_model(source: Any, input_shapes: Mapping[str, Sequence[int]] | None = None, *,
                 fold: bool = True) -> Graph:
    """Import an ONNX model into a typed `Graph` (every value has a static shape and dtype).

    ``input_shapes`` fixes graph inputs whose dimensions are symbolic or unknown, by name.
    """
    model, label = load_onnx(source)
    model = _upgrade_old_opset(model, label)
    opset = _default_opset(model, label)
    builder = _Importer(model, label, opset, dict(input_shapes or {}), fold)
    graph = builder.build()
    _import_quant_params(model, graph)
    if fold:
        graph.remove_unused()  # dead nodes and the constants only they read
    graph.verify(require_types=True)
    return graph


def _upgrade_old_opset(model: onnx.ModelProto, label: str) -> onnx.ModelProto:
    """Models older than `MIN_OPSET` (tf2onnx and old exporters still emit opset 7-10) are
    brought to `MIN_OPSET` with onnx's own version converter, so one importer serves them;
    a model the converter cannot upgrade is a clear error naming the opset."""
    old = [e.version for e in model.opset_import if e.domain in ("", "ai.onnx")]
    if not old or old[0] >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter raises bare RuntimeErrors from C++
        raise ModelImportError(
            f"{label}: opset {old[0]} is older than the oldest supported opset {MIN_OPSET} "
            f"and onnx.version_converter could not upgrade it: {e}") from None


def _default_opset(model: onnx.ModelProto, label: str) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            if entry.version < MIN_OPSET:
                raise ModelImportError(
                    f"{label}: opset {entry.version} is older than the oldest supported "
                    f"opset {MIN_OPSET}; convert it first with onnx.version_converter")
            return int(entry.version)
    raise ModelImportError(f"{label}: the model declares no default-domain opset")


class _Importer:
    def __init__(self, model: onnx.ModelProto, label: str, opset: int,
                 input_shapes: dict[str, Sequence[int]], fold: bool):
        self.fold = fold
        self._checker: tuple | None = None
        self.model = model
        self.label = label
        self.opset = opset
        self.input_shapes = input_shapes
        self.graph = Graph(model.graph.name or "main")
        self.values: dict[str, Value] = {}

    def build(self) -> Graph:
        g = self.model.graph
        graph = self.graph
        graph.meta["source"] = self.label
        graph.meta["source_opset"] = self.opset
        initializer_names = {t.name for t in g.initializer}
        unknown = set(self.input_shapes) - {i.name for i in g.input if i.name not in initializer_names}
        if unknown:
            raise ModelImportError(f"{self.label}: input_shapes names unknown input(s) "
                                   f"{sorted(unknown)}; the model's inputs are "
                                   f"{[i.name for i in g.input if i.name not in initializer_names]}")
        for tensor in g.initializer:
            self.values[tensor.name] = graph.add_constant(tensor.name, _to_array(tensor, self.label),
                                                          unique=False)
        for info in g.input:
            if info.name in initializer_names:
                continue
            shape, dtype = self._input_type(info)
            self.values[info.name] = graph.add_input(info.name, shape, dtype)
        for index, proto in enumerate(g.node):
            self._import_node(proto, index)
        for info in g.output:
            if info.name not in self.values:
                raise ModelImportError(f"{self.label}: graph output '{info.name}' is never produced")
            graph.outputs.append(self.values[info.name])
        return graph

    def _input_type(self, info: onnx.ValueInfoProto) -> tuple[tuple[int, ...], np.dtype]:
        ttype = info.type.tensor_type
        if not info.type.HasField("tensor_type"):
            raise ModelImportError(f"{self.label}: input '{info.name}' is not a tensor")
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        if info.name in self.input_shapes:
            shape = tuple(int(d) for d in self.input_shapes[info.name])
            if any(d <= 0 for d in shape):
                raise ModelImportError(
                    f"{self.label}: input_shapes gives '{info.name}' shape {shape}; every "
                    "dimension must be a positive integer (empty tensors are not supported)")
            if ttype.HasField("shape") and len(ttype.shape.dim) != len(shape):
                raise ModelImportError(
                    f"{self.label}: input_shapes gives '{info.name}' rank {len(shape)}, "
                    f"but the model declares rank {len(ttype.shape.dim)}")
            for given, dim in zip(shape, ttype.shape.dim if ttype.HasField("shape") else []):
                if dim.HasField("dim_value") and dim.dim_value != given:
                    raise ModelImportError(
                        f"{self.label}: input_shapes gives '{info.name}' shape {shape}, but the "
                        f"model fixes it to {_dims_text(ttype)}")
            return shape, dtype
        if not ttype.HasField("shape"):
            raise ModelImportError(f"{self.label}: input '{info.name}' has no shape; pass "
                                   f"input_shapes={{'{info.name}': (...)}}")
        shape = []
        for axis, dim in enumerate(ttype.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value == 0:
                raise ModelImportError(
                    f"{self.label}: input '{info.name}' has a zero-size dimension (axis {axis} "
                    f"of {_dims_text(ttype)}); empty tensors are not supported")
            if not dim.HasField("dim_value") or dim.dim_value < 0:
                name = dim.dim_param or "?"
                raise ModelImportError(
                    f"{self.label}: input '{info.name}' has a dynamic dimension '{name}' "
                    f"(axis {axis} of {_dims_text(ttype)}); pass a static shape, e.g. "
                    f"input_shapes={{'{info.name}': (1, ...)}} (CLI: --input-shape "
                    f"{info.name}=1,...)")
            shape.append(int(dim.dim_value))
        return tuple(shape), dtype

    def _check_node(self, proto: onnx.NodeProto, where: str) -> None:
        """ONNX's own schema check of one node (attribute types, input/output counts).

        Per node rather than `check_model`, which also rejects models whose graph
        outputs lack shapes -- common in real exports, and harmless here.
        """
        if self._checker is None:
            ctx = onnx.checker.C.CheckerContext()
            ctx.ir_version = max(3, int(self.model.ir_version or 8))
            ctx.opset_imports = {e.domain: e.version for e in self.model.opset_import}
            self._checker = (ctx, onnx.checker.C.LexicalScopeContext())
        try:
            onnx.checker.C.check_node(proto.SerializeToString(), *self._checker)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0]
            raise ModelImportError(f"{where}: invalid node: {message}") from None

    def _import_node(self, proto: onnx.NodeProto, index: int) -> None:
        name = proto.name or f"{proto.op_type}_{index}"
        domain = proto.domain if proto.domain not in ("", "ai.onnx") else ""
        where = f"{self.label}: node '{name}' ({proto.op_type})"
        if proto.op_type == "Constant" and not domain:
            self.values[proto.output[0]] = self.graph.add_constant(
                proto.output[0], _constant_value(proto, where), unique=False)
            return
        if domain:
            get_op(proto.op_type, domain, node_name=name)  # raises with the supported list
        else:
            if proto.op_type not in supported_ops():
                get_op(proto.op_type, node_name=name)
            self._check_node(proto, where)
        attrs = {a.name: _attr_value(a, where) for a in proto.attribute}
        inputs: list[Value | None] = []
        for in_name in proto.input:
            if not in_name:
                inputs.append(None)
                continue
            if in_name not in self.values:
                raise ModelImportError(f"{where}: input '{in_name}' is not produced before use "
                                       "(the graph is not topologically sorted or is broken)")
            inputs.append(self.values[in_name])
        while inputs and inputs[-1] is None:
            inputs.pop()
        outputs = list(proto.output)
        while outputs and not outputs[-1]:
            outputs.pop()
        if not domain:
            op_type, attrs, inputs = self._canonicalize(proto.op_type, attrs, inputs, where)
            if op_type == "Split" and (len(inputs) < 2 or inputs[1] is None):
                inputs = [inputs[0], self._equal_split(inputs[0], attrs, len(outputs), where)]
        else:
            op_type = proto.op_type
        if any(not o for o in outputs):
            raise UnsupportedOpError(f"{where}: skipped optional outputs before used ones are "
                                     "not supported")
        node = self.graph.add_node(op_type, inputs, attrs, num_outputs=0, name=name, domain=domain)
        for out_index, out_name in enumerate(outputs):
            if out_name in self.values:
                raise ModelImportError(f"{where}: output '{out_name}' is produced twice")
            value = self.graph._adopt_value(Value(out_name))
            self.graph._g.add_edge(node, value, key=("out", out_index))
        # Types are inferred (and constant subgraphs folded) node by node, so that the
        # adapters of later nodes can read their inputs' shapes.
        try:
            results = fold_or_infer(self.graph, node, fold=self.fold)
        except (UnsupportedOpError, OpValidationError) as exc:
            raise type(exc)(f"{self.label}: {exc}") from None
        for out_name, value in zip(outputs, results):
            self.values[out_name] = value

    def _equal_split(self, x: Value, attrs: dict, parts: int, where: str) -> Value:
        """Split without sizes divides evenly among its outputs: make the sizes explicit."""
        dim = x.shape[int(attrs.get("axis", 0))]
        if parts == 0 or dim % parts:
            raise OpValidationError(f"{where}: cannot split {dim} elements evenly into "
                                    f"{parts} outputs")
        return self.new_const("split", np.full(parts, dim // parts, dtype=np.int64))

    # -- opset adaptation -----------------------------------------------------
    def _canonicalize(self, op_type: str, attrs: dict[str, Any], inputs: list[Value | None],
                      where: str) -> tuple[str, dict[str, Any], list[Value | None]]:
        try:
            schema = defs.get_schema(op_type, self.opset)
        except Exception:
            raise UnsupportedOpError(f"{where}: op '{op_type}' does not exist at opset {self.opset}")
        ir_opset = _ir_opset(op_type)
        try:
            target = defs.get_schema(op_type, ir_opset)
        except Exception:
            raise UnsupportedOpError(f"{where}: op '{op_type}' is not part of opset "
                                     f"{ir_opset}, which the IR is defined against")
        adapter = _ADAPTERS.get((op_type, schema.since_version))
        if adapter is not None:
            attrs, inputs = adapter(self, attrs, inputs, where)
        unknown = sorted(set(attrs) - set(target.attributes))
        if unknown:
            raise UnsupportedOpError(
                f"{where}: attribute(s) {unknown} (opset {self.opset}, version "
                f"{schema.since_version} of the op) have no opset-{ir_opset} meaning "
                "this compiler supports")
        max_inputs = _max_inputs(target)
        if len(inputs) > max_inputs:
            raise UnsupportedOpError(f"{where}: {len(inputs)} inputs given; the supported form "
                                     f"takes at most {max_inputs}")
        for attr_name, attr in target.attributes.items():
            if attr_name not in attrs and attr.default_value.name:
                attrs[attr_name] = _attr_value(attr.default_value, where)
        if op_type in _WINDOW_OPS:
            attrs = _normalize_window_attrs(op_type, attrs, inputs, where)
        return op_type, attrs, inputs

    def const_of(self, value: Value | None, where: str, what: str) -> np.ndarray | None:
        if value is None:
            return None
        if value.const is None:
            raise UnsupportedOpError(f"{where}: {what} must be a constant to be imported")
        return value.const

    def new_const(self, base: str, array: np.ndarray) -> Value:
        return self.graph.add_constant(base, np.asarray(array))


def _ir_opset(op_type: str, domain: str = "") -> int:
    """The opset whose schema the IR form of an ONNX op follows (registry ``opset``)."""
    return max(CANONICAL_OPSET, get_op(op_type, domain).opset)


def _export_opset(graph: Graph) -> int:
    """The default-domain opset to declare: 17, or the newest op's own opset (Gelu: 20)
    when every other op of the graph has the same schema at that opset."""
    ops = sorted({n.op_type for n in graph.topo_order() if not n.domain})
    opset = max([CANONICAL_OPSET] + [_ir_opset(op) for op in ops])
    if opset == CANONICAL_OPSET:
        return opset
    changed = [op for op in ops if _ir_opset(op) == CANONICAL_OPSET and
               defs.get_schema(op, opset).since_version
               != defs.get_schema(op, CANONICAL_OPSET).since_version]
    if changed:
        newer = [op for op in ops if _ir_opset(op) > CANONICAL_OPSET]
        raise ModelExportError(
            f"graph '{graph.name}': {', '.join(newer)} need opset {opset}, but "
            f"{', '.join(changed)} changed form between opset {CANONICAL_OPSET} and {opset}; "
            "the exporter writes one opset and has no converter for these ops")
    return opset


def _max_inputs(schema: defs.OpSchema) -> int:
    if schema.inputs and schema.inputs[-1].option == defs.OpSchema.FormalParameterOption.Variadic:
        return 1 << 30
    return len(schema.inputs)


def _dims_text(ttype: Any) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                           for d in ttype.shape.dim) + "]"


def _attr_value(attr: onnx.AttributeProto, where: str) -> Any:
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise UnsupportedOpError(f"{where}: sub-graph attribute '{attr.name}' (control flow) "
                                 "is not supported")
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value]
    return value


def _to_array(tensor: onnx.TensorProto, label: str) -> np.ndarray:
    try:
        return np.array(numpy_helper.to_array(tensor), copy=True)
    except Exception as exc:
        raise ModelImportError(f"{label}: tensor '{tensor.name}' cannot be read: {exc}") from None


def _constant_value(proto: onnx.NodeProto, where: str) -> np.ndarray:
    for attr in proto.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            return numpy_helper.to_array(value)
        if attr.name == "value_float":
            return np.array(value, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(value, dtype=np.float32)
        if attr.name == "value_int":
            return np.array(value, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(value, dtype=np.int64)
    raise UnsupportedOpError(f"{where}: Constant without a dense numeric value "
                             "(sparse or string constants are not supported)")


# -- adapters: older/newer op versions to the opset-17 form ----------------------------

Adapter = Callable[[_Importer, dict, list], tuple[dict, list]]
_ADAPTERS: dict[tuple[str, int], Adapter] = {}


def _adapter(op_type: str, *versions: int) -> Callable[[Adapter], Adapter]:
    def decorate(fn: Adapter) -> Adapter:
        for version in versions:
            _ADAPTERS[(op_type, version)] = fn
        return fn
    return decorate


def _attr_to_input(attr: str, slot: int, dtype: Any = np.int64) -> Adapter:
    """Versions that held an operand as an attribute, later an input (Split, Squeeze...)."""

    def adapt(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
        attrs = dict(attrs)
        if attr in attrs:
            value = imp.new_const(attr, np.asarray(attrs.pop(attr), dtype=dtype))
            inputs = list(inputs) + [None] * max(0, slot + 1 - len(inputs))
            inputs[slot] = value
        return attrs, inputs

    return adapt


for _op, _ver in [("Split", 11), ("Squeeze", 11), ("Unsqueeze", 11)]:
    _ADAPTERS[(_op, _ver)] = _attr_to_input({"Split": "split"}.get(_op, "axes"), 1)


@_adapter("Split", 18)
def _split_18(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    attrs = dict(attrs)
    num_outputs = attrs.pop("num_outputs", None)
    if num_outputs is not None and (len(inputs) < 2 or inputs[1] is None):
        x = inputs[0]
        axis = attrs.get("axis", 0)
        dim = x.shape[axis] if x.shape is not None else None
        if dim is None:
            raise UnsupportedOpError(f"{where}: num_outputs needs a known input shape")
        chunk = -(-dim // num_outputs)
        sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
        inputs = [x, imp.new_const("split", np.array(sizes, dtype=np.int64))]
    return attrs, inputs


def _reduce_axes_to_attr(imp: _Importer, attrs: dict, inputs: list, where: str):
    attrs = dict(attrs)
    if attrs.pop("noop_with_empty_axes", 0):
        axes = imp.const_of(inputs[1] if len(inputs) > 1 else None, where, "axes")
        if axes is None or axes.size == 0:
            raise UnsupportedOpError(f"{where}: noop_with_empty_axes=1 with empty axes")
    if len(inputs) > 1:
        axes = imp.const_of(inputs[1], where, "axes")
        if axes is not None and axes.size:
            attrs["axes"] = [int(a) for a in axes.reshape(-1)]
        inputs = inputs[:1]
    return attrs, inputs


for _op in ("ReduceMean", "ReduceMax", "ReduceProd", "ReduceMin", "ReduceL2"):
    _ADAPTERS[(_op, 18)] = _reduce_axes_to_attr
    _ADAPTERS[(_op, 20)] = _reduce_axes_to_attr
_ADAPTERS[("ReduceSum", 11)] = _attr_to_input("axes", 1)


@_adapter("Softmax", 11)
def _softmax_11(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    x = inputs[0]
    axis = attrs.get("axis", 1)
    rank = len(x.shape)
    if axis < 0:
        axis += rank
    if axis != rank - 1 and any(d != 1 for d in x.shape[axis + 1:]):
        raise UnsupportedOpError(f"{where}: Softmax before opset 13 coerces the input to 2-D "
                                 f"at axis {axis}; only the last-axis form is supported")
    return {"axis": axis}, inputs


_ADAPTERS[("LogSoftmax", 11)] = _softmax_11   # same pre-13 2-D coercion as Softmax


@_adapter("Pad", 18, 19, 21, 23, 24, 25)
def _pad_18(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    if attrs.get("mode", "constant") == "wrap":
        raise UnsupportedOpError(f"{where}: Pad mode 'wrap' is not supported")
    if len(inputs) > 3 and inputs[3] is not None:
        x = inputs[0]
        rank = len(x.shape)
        axes = [int(a) % rank for a in imp.const_of(inputs[3], where, "axes")]
        pads = imp.const_of(inputs[1], where, "pads").reshape(-1)
        full = np.zeros(2 * rank, dtype=np.int64)
        for i, axis in enumerate(axes):
            full[axis] = pads[i]
            full[axis + rank] = pads[i + len(axes)]
        inputs = [x, imp.new_const("pads", full), *(inputs[2:3])]
    return attrs, inputs[:3]


@_adapter("Resize", 18, 19)
def _resize_18(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    attrs = dict(attrs)
    if attrs.pop("antialias", 0):
        raise UnsupportedOpError(f"{where}: Resize antialias=1 is not supported")
    if attrs.pop("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise UnsupportedOpError(f"{where}: Resize keep_aspect_ratio_policy other than "
                                 "'stretch' is not supported")
    if "axes" in attrs:
        raise UnsupportedOpError(f"{where}: Resize 'axes' attribute is not supported")
    if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric":
        raise UnsupportedOpError(f"{where}: Resize coordinate_transformation_mode "
                                 "'half_pixel_symmetric' is not supported")
    return attrs, inputs


@_adapter("AveragePool", 19, 22)
def _avgpool_19(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    attrs = dict(attrs)
    dilations = attrs.pop("dilations", None)
    if dilations is not None and any(d != 1 for d in dilations):
        raise UnsupportedOpError(f"{where}: AveragePool dilations {dilations} are not supported")
    return attrs, inputs


@_adapter("Cast", 19, 21, 23, 24, 25)
def _cast_19(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    attrs = dict(attrs)
    attrs.pop("saturate", None)  # only affects float8 targets, which we do not support
    attrs.pop("round_mode", None)
    return attrs, inputs


for _ver in (19, 21, 23, 24, 25):
    _ADAPTERS[("CastLike", _ver)] = _cast_19   # saturate/round_mode: float8 targets only


@_adapter("Dropout", 10)
def _dropout_10(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    attrs = dict(attrs)
    attrs.pop("ratio", None)
    return attrs, inputs


@_adapter("BatchNormalization", 9)
def _bn_9(imp: _Importer, attrs: dict, inputs: list, where: str) -> tuple[dict, list]:
    return dict(attrs), inputs


# ops with auto_pad/pads/strides window attributes (op trait ``window``: Conv,
# ConvTranspose, MaxPool, AveragePool)
_WINDOW_OPS = ops_with("window", domain="")


def _normalize_window_attrs(op_type: str, attrs: dict, inputs: list, where: str) -> dict:
    """Fill kernel_shape/strides/dilations/pads and resolve auto_pad to explicit pads."""
    from .ops.conv_util import resolve_auto_pad, resolve_auto_pad_transpose

    x = inputs[0]
    if x is None or x.shape is None:
        return attrs
    spatial = list(x.shape[2:])
    nd = len(spatial)
    if "kernel_shape" not in attrs:
        if op_type in ("Conv", "ConvTranspose") and len(inputs) > 1 and inputs[1] is not None \
                and inputs[1].shape is not None:
            attrs["kernel_shape"] = list(inputs[1].shape[2:])
        else:
            raise OpValidationError(f"{where}: kernel_shape is required")
    attrs.setdefault("strides", [1] * nd)
    if op_type != "AveragePool":
        attrs.setdefault("dilations", [1] * nd)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad != "NOTSET":
        dilations = attrs.get("dilations", [1] * nd)
        if op_type == "ConvTranspose":
            attrs["pads"] = list(resolve_auto_pad_transpose(
                auto_pad, spatial, attrs["kernel_shape"], attrs["strides"], dilations,
                attrs.get("output_padding") or [0] * nd, attrs.get("output_shape")))
        else:
            attrs["pads"] = list(resolve_auto_pad(auto_pad, spatial, attrs["kernel_shape"],
                                                  attrs["strides"], dilations))
        attrs["auto_pad"] = "NOTSET"
    elif op_type == "ConvTranspose" and attrs.get("output_shape"):
        attrs["pads"] = list(resolve_auto_pad_transpose(
            "NOTSET", spatial, attrs["kernel_shape"], attrs["strides"],
            attrs.get("dilations", [1] * nd), attrs.get("output_padding") or [0] * nd,
            attrs["output_shape"]))
    attrs.setdefault("pads", [0] * (2 * nd))
    if op_type == "ConvTranspose":
        attrs.setdefault("output_padding", [0] * nd)
    return attrs


# --- export --------------------------------------------------------------------

def export_model(graph: Graph, path: str | os.PathLike | None = None, *,
                 ir_version: int = 8, producer: str = "compiler") -> onnx.ModelProto:
    """Write ``graph`` as an opset-17 ONNX model (weights as initializers).

    The file is written atomically (temp file + rename), so a failure leaves nothing behind.
    """
    nodes = []
    for node in graph.topo_order():
        if node.meta.get("export_skip"):
            continue
        attrs = {k: _export_attr(v) for k, v in node.attrs.items() if v is not None}
        nodes.append(helper.make_node(
            node.op_type, [v.name if v is not None else "" for v in node.inputs],
            [v.name for v in node.outputs], name=node.name, domain=node.domain or None, **attrs))
    initializers = [numpy_helper.from_array(np.asarray(v.const), v.name) for v in graph.constants
                    if v.uses or v.is_graph_output]
    inputs = [helper.make_tensor_value_info(v.name, helper.np_dtype_to_tensor_dtype(v.dtype),
                                            list(v.shape)) for v in graph.inputs]
    outputs = [helper.make_tensor_value_info(v.name, helper.np_dtype_to_tensor_dtype(v.dtype),
                                             list(v.shape)) for v in graph.outputs]
    onnx_graph = helper.make_graph(nodes, graph.name, inputs, outputs, initializers)
    domains = {n.domain for n in graph.topo_order() if n.domain}
    opset = _export_opset(graph)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in sorted(domains)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name=producer)
    model.ir_version = max(ir_version, helper.find_min_ir_version_for(opsets[:1]))
    _export_quant_params(graph, model)
    if path is not None:
        atomic_write_bytes(path, model.SerializeToString())
    return model


QUANT_METADATA_KEY = "compiler.quant_params"


def _export_quant_params(graph: Graph, model: onnx.ModelProto) -> None:
    """The `QuantParams` of every value, by name, as JSON in the model's metadata, so an
    integer graph we write reads back with its fixed-point parameters (bits, scales) --
    the report, the QDQ export and fine-tuning need them.  Other tools ignore the entry."""
    import json

    table = {}
    for v in graph.values:
        q = v.quant
        if q is not None:
            table[v.name] = {"bits": int(q.bits), "scale": np.asarray(q.scale).tolist(),
                             "zero_point": np.asarray(q.zero_point).tolist(),
                             "axis": None if q.axis is None else int(q.axis),
                             "signed": bool(q.signed)}
    if table:
        entry = model.metadata_props.add()
        entry.key, entry.value = QUANT_METADATA_KEY, json.dumps(table)


def _import_quant_params(model: onnx.ModelProto, graph: Graph) -> None:
    import json

    from .ir import QuantParams

    text = next((p.value for p in model.metadata_props if p.key == QUANT_METADATA_KEY), None)
    if not text:
        return
    by_name = {v.name: v for v in graph.values}
    for name, q in json.loads(text).items():
        if name in by_name:
            by_name[name].quant = QuantParams(int(q["bits"]), np.asarray(q["scale"], np.float64),
                                              np.asarray(q["zero_point"], np.int64), q["axis"],
                                              bool(q["signed"]))


def _export_attr(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return numpy_helper.from_array(value)
    if isinstance(value, tuple):
        return list(value)
    return value

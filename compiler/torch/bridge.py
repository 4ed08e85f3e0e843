"""IR <-> torch, so a compressed graph can be retrained on real data.

`to_torch` turns a `Graph` into a `GraphModule` (an ``nn.Module`` that walks the graph
the way the interpreter does, calling torch functions per op); its float weights are
``nn.Parameter``s.  `from_torch` writes trained weights back into a copy of the graph,
structure unchanged.  `finetune` is the loop in between.  Weights that are exactly zero
(unstructured pruning) are masked and stay zero through training.

torch is an optional extra (``pip install torch==2.13.0``): it is imported only here.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from ..analysis import is_param
from ..ir import Graph, Node
from ..ops.registry import UnsupportedOpError, op_key, op_traits

__all__ = ["to_torch", "from_torch", "finetune", "training_loss", "TORCH_OPS", "GraphModule",
           "import_torch"]


def import_torch() -> Any:
    """Import torch on demand, with an install hint: torch is optional for the compiler."""
    try:
        import torch
    except ImportError:
        raise ImportError("fine-tuning needs torch: pip install torch==2.13.0 "
                          "(or bash scripts/setup.sh)") from None
    return torch


TorchOp = Callable[..., Any]
TORCH_OPS: dict[str, TorchOp] = {}


def torch_op(*names: str) -> Callable[[TorchOp], TorchOp]:
    def decorate(fn: TorchOp) -> TorchOp:
        for name in names:
            TORCH_OPS[name] = fn
        return fn
    return decorate


def _sanitize(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


def to_torch(graph: Graph) -> Any:
    """A trainable ``nn.Module`` computing ``graph`` (any batch size)."""
    torch = import_torch()
    missing = sorted({op_key(n.op_type, n.domain) for n in graph.topo_order()
                      if op_key(n.op_type, n.domain) not in TORCH_OPS})
    if missing:
        raise UnsupportedOpError(f"ops {missing} have no torch implementation for fine-tuning; "
                                 f"supported: {', '.join(sorted(TORCH_OPS))}")

    class GraphModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.graph = graph
            self.order = graph.topo_order()
            self.names: dict[int, str] = {}
            self.masks: dict[str, Any] = {}
            # integer weights of q.Conv/q.Gemm/q.MatMul: key -> (qmin, qmax) (qmin == qmax
            # == 0 marks binary ±1 weights); their Parameter is a float "shadow"
            self.qweights: dict[str, tuple[int, int]] = {}
            qweights = _integer_weights(graph)
            statistics = {id(node.inputs[i]) for node in self.order
                          if node.op_type == "BatchNormalization" for i in (3, 4)}
            for value in graph.constants:
                key = _sanitize(value.name)
                tensor = torch.from_numpy(np.array(value.const, copy=True))
                if id(value) in qweights:
                    self.register_parameter(key, torch.nn.Parameter(tensor.to(torch.float64)))
                    self.qweights[key] = qweights[id(value)]
                elif is_param(value) and value.dtype == np.float32 and id(value) not in statistics:
                    self.register_parameter(key, torch.nn.Parameter(tensor))
                    if value.const.ndim >= 2 and np.any(value.const == 0):
                        self.masks[key] = tensor != 0
                else:
                    self.register_buffer(key, tensor)
                self.names[id(value)] = key

        def apply_masks(self) -> None:
            with torch.no_grad():
                for key, mask in self.masks.items():  # +0.0, not -0.0 (coders see bits)
                    getattr(self, key).masked_fill_(~mask, 0.0)

        def forward(self, *inputs: Any) -> Any:
            env: dict[int, Any] = {id(v): x for v, x in zip(self.graph.inputs, inputs)}
            for node in self.order:
                args = []
                for value in node.inputs:
                    if value is None:
                        args.append(None)
                    elif value.is_constant:
                        key = self.names[id(value)]
                        if key in self.qweights:
                            args.append(_fake_quant_weight(getattr(self, key), self.qweights[key]))
                        else:
                            args.append(getattr(self, key))
                    else:
                        args.append(env[id(value)])
                result = TORCH_OPS[op_key(node.op_type, node.domain)](node, *args)
                results = result if isinstance(result, (tuple, list)) else (result,)
                for value, tensor in zip(node.outputs, results):
                    env[id(value)] = tensor
            outs = [env[id(v)] if not v.is_constant else getattr(self, self.names[id(v)])
                    for v in self.graph.outputs]
            return outs[0] if len(outs) == 1 else tuple(outs)

    return GraphModule()


def from_torch(module: Any, graph: Graph | None = None) -> Graph:
    """A copy of ``graph`` (default: the module's) holding the module's current weights."""
    graph = graph if graph is not None else module.graph
    new = graph.clone()
    by_name = {v.name: v for v in new.constants}
    for value in graph.constants:
        key = module.names.get(id(value))
        if key is None:
            continue
        tensor = getattr(module, key).detach().cpu()
        if key in getattr(module, "qweights", {}):
            tensor = _round_weight(tensor, module.qweights[key])
        tensor = tensor.numpy()
        by_name[value.name].const = tensor.astype(value.dtype, copy=True)
    return new


def training_loss(teacher: Graph | None = None, distill: float = 0.5,
                  temperature: float = 4.0) -> Callable:
    """``loss(logits, labels, inputs)`` for fine-tuning: cross-entropy, or with a ``teacher``
    graph knowledge distillation (Hinton et al. 2015), ``(1 - distill) * CE + distill *
    T**2 * KL(softmax(teacher / T) || softmax(student / T))`` with ``T = temperature``.
    The teacher (say, the model before pruning) is only evaluated; its soft labels carry
    what a pruned or shared model should keep beyond the one-hot label."""
    torch = import_torch()
    cross_entropy = torch.nn.CrossEntropyLoss()
    if teacher is None:
        return lambda logits, labels, inputs: cross_entropy(logits, labels)
    if not 0.0 <= distill <= 1.0 or temperature <= 0:
        raise ValueError(f"distillation needs 0 <= distill <= 1 (got {distill}) and "
                         f"temperature > 0 (got {temperature})")
    teacher_module = to_torch(teacher).eval()
    F = _F()

    def loss(logits, labels, inputs):
        with torch.no_grad():
            soft = F.softmax(teacher_module(inputs) / temperature, dim=1)
        kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
        return (1 - distill) * cross_entropy(logits, labels) + distill * temperature ** 2 * kl

    return loss


def finetune(graph: Graph, dataset: Any, *, epochs: int = 1, lr: float = 1e-3,
             batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
             max_batches: int | None = None, seed: int = 0, progress: bool | None = None,
             int_lr: float | None = None, teacher: Graph | None = None,
             distill: float = 0.5, temperature: float = 4.0,
             losses: list[float] | None = None) -> Graph:
    """Retrain ``graph``'s weights on ``dataset`` (cross-entropy); structure is unchanged.

    With a ``teacher`` graph the loss is knowledge distillation (`training_loss`).

    Exact zeros in float weight tensors are kept at zero (pruning masks survive).

    Quantized graphs (ops of the ``q`` domain) are trained with straight-through fake
    quantization: the integer weights of ``q.Conv``/``q.Gemm``/``q.MatMul`` get a float
    shadow (in integer units) that is rounded and clamped to the layer's bit range in the
    forward pass and written back rounded; scales, zero points, biases and multipliers are
    kept.  ``int_lr`` is the learning rate of those shadows (integer units per step); by
    default it is ``lr / mean(weight scale)``, i.e. the same step as ``lr`` in real units.

    ``progress``: a tqdm bar per epoch (batches, running loss); ``None`` shows it on a
    terminal only (`compiler.logs.progress_enabled`, off with ``--no-progress``).
    ``losses``: if given, the mean training loss of each epoch is appended to it.
    """
    torch = import_torch()
    torch.manual_seed(seed)
    module = to_torch(graph)
    module.train()
    params = [p for name, p in module.named_parameters() if name not in module.qweights]
    groups: list[dict[str, Any]] = [{"params": params}] if params else []
    scales = {module.names[id(v)]: v.quant.scale for v in graph.constants
              if id(v) in module.names and v.quant is not None}
    for key in module.qweights:
        rate = int_lr
        if rate is None:
            scale = np.asarray(scales.get(key, 1.0), dtype=np.float64)
            scale = float(scale[scale > 0].mean()) if np.any(scale > 0) else 1.0
            rate = lr / scale
        groups.append({"params": [getattr(module, key)], "lr": rate, "weight_decay": 0.0})
    if not groups:
        raise ValueError(f"graph '{graph.name}' has no float weights to fine-tune")
    if optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer '{optimizer}'; choose adam or sgd")
    steps = math.ceil(len(dataset) / batch_size)
    if max_batches is not None:
        steps = min(steps, max_batches)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    loss_fn = training_loss(teacher, distill, temperature)
    from ..logs import progress as bar_over

    for epoch in range(epochs):
        batches = bar_over(dataset.batches(batch_size, shuffle=True, seed=seed + epoch),
                           desc=f"finetune epoch {epoch + 1}/{epochs}", total=steps,
                           unit="batch", enabled=progress)
        total, count = 0.0, 0
        for step, (x, y) in enumerate(batches):
            if step >= steps:
                break
            opt.zero_grad()
            inputs = torch.from_numpy(x)
            loss = loss_fn(module(inputs), torch.from_numpy(y), inputs)
            loss.backward()
            opt.step()
            schedule.step()
            module.apply_masks()
            total, count = total + float(loss.detach()), count + 1
            if hasattr(batches, "set_postfix") and step % 10 == 0:
                batches.set_postfix(loss=f"{total / count:.4f}")
        if hasattr(batches, "close"):
            batches.close()
        if losses is not None and count:
            losses.append(total / count)
    module.eval()
    return from_torch(module, graph)


# --- per-op torch implementations (same semantics as compiler/ops) -------------------

def _F():
    return import_torch().nn.functional


def _pads_2d(pads: list[int]) -> tuple[list[int], bool]:
    """ONNX [b0, b1, e0, e1] -> F.pad order [b1, e1, b0, e0]; symmetric flag."""
    nd = len(pads) // 2
    begins, ends = pads[:nd], pads[nd:]
    torch_pads: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        torch_pads += [b, e]
    return torch_pads, begins == ends


@torch_op("Conv")
def _conv(node: Node, x, w, b=None):
    F = _F()
    a = node.attrs
    nd = w.dim() - 2
    pads, symmetric = _pads_2d(list(a["pads"]))
    padding = list(a["pads"][:nd]) if symmetric else 0
    if not symmetric:
        x = F.pad(x, pads)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(x, w, b, stride=a["strides"], padding=padding, dilation=a["dilations"],
                groups=a["group"])


@torch_op("ConvTranspose")
def _conv_transpose(node: Node, x, w, b=None):
    """Full transposed conv, zero-extended by output_padding, cropped by pads, plus bias."""
    F = _F()
    a = node.attrs
    nd = w.dim() - 2
    begins, ends = list(a["pads"][:nd]), list(a["pads"][nd:])
    out_pad = list(a.get("output_padding") or [0] * nd)
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    y = conv(x, w, None, stride=a["strides"], padding=0, groups=a["group"],
             dilation=a["dilations"])
    fill: list[int] = []
    for i in reversed(range(nd)):
        fill += [0, out_pad[i] + max(0, -ends[i])]
    if any(fill):
        y = F.pad(y, fill)
    out_len = node.outputs[0].shape[2:]
    y = y[(slice(None), slice(None)) + tuple(slice(begins[i], begins[i] + out_len[i])
                                             for i in range(nd))]
    return y if b is None else y + b.reshape(1, -1, *([1] * nd))


@torch_op("BatchNormalization")
def _bn(node: Node, x, scale, bias, mean, var):
    return _F().batch_norm(x, mean, var, scale, bias, training=False, eps=node.attrs["epsilon"])


@torch_op("Relu")
def _relu(node, x):
    return _F().relu(x)


@torch_op("Clip")
def _clip(node, x, lo=None, hi=None):
    torch = import_torch()
    # the bounds are constants of the graph (ReLU6's 0 and 6), never trained
    return torch.clamp(x, None if lo is None else float(lo.detach()),
                       None if hi is None else float(hi.detach()))


@torch_op("LeakyRelu")
def _leaky(node, x):
    return _F().leaky_relu(x, node.attrs["alpha"])


@torch_op("PRelu")
def _prelu(node, x, slope):
    torch = import_torch()
    return torch.where(x >= 0, x, x * slope)


@torch_op("Sigmoid")
def _sigmoid(node, x):
    return import_torch().sigmoid(x)


@torch_op("HardSigmoid")
def _hard_sigmoid(node, x):
    return import_torch().clamp(node.attrs["alpha"] * x + node.attrs["beta"], 0.0, 1.0)


@torch_op("HardSwish")
def _hard_swish(node, x):
    return _F().hardswish(x)


@torch_op("Tanh")
def _tanh(node, x):
    return import_torch().tanh(x)


@torch_op("Gelu")
def _gelu(node, x):
    return _F().gelu(x, approximate=node.attrs.get("approximate", "none"))


@torch_op("Add")
def _add(node, a, b):
    return a + b


@torch_op("Sub")
def _sub(node, a, b):
    return a - b


@torch_op("Mul")
def _mul(node, a, b):
    return a * b


@torch_op("Div")
def _div(node, a, b):
    return a / b


@torch_op("Concat")
def _concat(node, *xs):
    return import_torch().cat(xs, dim=node.attrs["axis"])


@torch_op("Split")
def _split(node, x, split):
    return import_torch().split(x, [int(s) for s in split], dim=node.attrs["axis"])


@torch_op("Identity", "Dropout")
def _identity(node, x, *rest):
    return x


@torch_op("Flatten")
def _flatten(node, x):
    axis = node.attrs["axis"] % max(x.dim(), 1) if node.attrs["axis"] < 0 else node.attrs["axis"]
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _batch_aware(node: Node, x, target: list[int]) -> list[int]:
    """Exporters bake the static batch into shape operands: follow the live batch instead."""
    static_batch = node.inputs[0].shape[0] if node.inputs[0].shape else None
    if target and target[0] == static_batch and x.shape[0] != static_batch:
        target = [x.shape[0]] + target[1:]
    return target


@torch_op("Reshape")
def _reshape(node, x, shape):
    target = [int(s) for s in shape]
    if not node.attrs.get("allowzero", 0):
        target = [x.shape[i] if s == 0 else s for i, s in enumerate(target)]
    return x.reshape(_batch_aware(node, x, target))


@torch_op("Transpose")
def _transpose(node, x):
    perm = node.attrs.get("perm") or list(reversed(range(x.dim())))
    return x.permute(*perm)


@torch_op("Squeeze")
def _squeeze(node, x, axes=None):
    static = node.inputs[0].shape
    if axes is None:
        dims = [i for i, d in enumerate(static) if d == 1]
    else:
        dims = [int(a) % len(static) for a in axes]
    for dim in sorted(dims, reverse=True):
        x = x.squeeze(dim)
    return x


@torch_op("Unsqueeze")
def _unsqueeze(node, x, axes):
    for axis in sorted(int(a) % (x.dim() + len(axes)) for a in axes):
        x = x.unsqueeze(axis)
    return x


@torch_op("Gemm")
def _gemm(node, a, b, c=None):
    at = node.attrs
    a = a.t() if at["transA"] else a
    b = b.t() if at["transB"] else b
    y = at["alpha"] * (a @ b)
    return y if c is None else y + at["beta"] * c


@torch_op("MatMul")
def _matmul(node, a, b):
    return a @ b


@torch_op("Softmax")
def _softmax(node, x):
    return import_torch().softmax(x, dim=node.attrs["axis"])


def _pool_pads(F, x, pads, value):
    torch_pads, symmetric = _pads_2d(list(pads))
    nd = len(pads) // 2
    if symmetric:
        return x, list(pads[:nd])
    return F.pad(x, torch_pads, value=value), [0] * nd


@torch_op("MaxPool")
def _maxpool(node, x):
    F = _F()
    a = node.attrs
    nd = x.dim() - 2
    x, padding = _pool_pads(F, x, a["pads"], float("-inf"))
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
    return pool(x, a["kernel_shape"], a["strides"], padding, a.get("dilations") or 1,
                ceil_mode=bool(a["ceil_mode"]))


@torch_op("AveragePool")
def _avgpool(node, x):
    F = _F()
    a = node.attrs
    nd = x.dim() - 2
    pads = list(a["pads"])
    if pads[:nd] != pads[nd:]:
        raise UnsupportedOpError(f"node '{node.name}': asymmetric AveragePool pads for torch")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
    return pool(x, a["kernel_shape"], a["strides"], pads[:nd], ceil_mode=bool(a["ceil_mode"]),
                count_include_pad=bool(a["count_include_pad"]))


@torch_op("GlobalAveragePool")
def _gap(node, x):
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@torch_op("GlobalMaxPool")
def _gmp(node, x):
    return x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


@torch_op("ReduceMean")
def _reduce_mean(node, x):
    axes = node.attrs.get("axes") or list(range(x.dim()))
    return x.mean(dim=tuple(axes), keepdim=bool(node.attrs["keepdims"]))


@torch_op("Pad")
def _pad(node, x, pads, value=None, *rest):
    mode = node.attrs["mode"]
    torch_pads, _ = _pads_2d([int(p) for p in pads])
    if mode == "constant":
        return _F().pad(x, torch_pads, value=0.0 if value is None else float(value))
    spatial = len(torch_pads) // 2
    if any(torch_pads[2 * (x.dim() - 2):]) or spatial > x.dim():
        raise UnsupportedOpError(f"node '{node.name}': {mode} padding of batch/channel axes")
    return _F().pad(x, torch_pads[: 2 * (x.dim() - 2)], mode={"reflect": "reflect",
                                                              "edge": "replicate"}[mode])


@torch_op("Resize")
def _resize(node, x, roi=None, scales=None, sizes=None):
    F = _F()
    a = node.attrs
    out = tuple(node.outputs[0].shape[2:])
    mode, ctm = a["mode"], a["coordinate_transformation_mode"]
    if mode == "nearest" and ctm == "asymmetric" and a["nearest_mode"] == "floor":
        return F.interpolate(x, size=out, mode="nearest")
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel") and x.dim() == 4:
        return F.interpolate(x, size=out, mode="bilinear", align_corners=False)
    if mode == "linear" and ctm == "align_corners" and x.dim() == 4:
        return F.interpolate(x, size=out, mode="bilinear", align_corners=True)
    raise UnsupportedOpError(f"node '{node.name}': Resize mode={mode} "
                             f"coordinate_transformation_mode={ctm} has no torch equivalent here")


# --- quantized graphs: ops of the ``q`` domain, computed in float with STE rounding ----
#
# Integer tensors travel as float64 tensors holding integers (exact for int8 x int8
# accumulators), so with untouched weights the module reproduces the interpreter's
# integers; rounding uses the straight-through estimator (value of round, gradient of
# identity) and clamps pass no gradient outside their range.

def _weight_inputs(node: Node) -> tuple[int, ...]:
    """The integer weight slots of a ``q``-domain multiply layer (op trait ``weight_layer``)."""
    opdef = op_traits(node)
    if opdef is None or opdef.domain != "q" or opdef.weight_layer is None:
        return ()
    return opdef.weight_layer.weight_inputs


def _integer_weights(graph: Graph) -> dict[int, tuple[int, int]]:
    """id(constant) -> (qmin, qmax) of the integer weights of multiply layers;
    ``(0, 0)`` marks binary (±1) weights."""
    from ..ops.quant import qrange

    found: dict[int, tuple[int, int]] = {}
    for node in graph.topo_order():
        for index in _weight_inputs(node):
            if index >= len(node.inputs):
                continue
            value = node.inputs[index]
            if value is None or not value.is_constant or value.dtype != np.int8:
                continue
            bits = value.quant.bits if value.quant is not None else None
            if bits is None:
                meta = node.meta.get("bits") if hasattr(node, "meta") and node.meta else None
                bits = int(meta[0]) if meta else 8
            bits = int(bits)
            if bits == 1:
                rng = (0, 0)
            else:
                lo, hi = qrange(bits, True)
                const = value.const
                rng = (min(lo, int(const.min())), max(hi, int(const.max())))
            if id(value) in found and found[id(value)] != rng:
                old = found[id(value)]
                rng = (min(old[0], rng[0]), max(old[1], rng[1]))
            found[id(value)] = rng
    return found


def _ste_round(x):
    return x + (import_torch().round(x) - x).detach()


def _ste_floor(x):
    return x + (import_torch().floor(x) - x).detach()


def _fake_quant_weight(shadow, rng: tuple[int, int]):
    torch = import_torch()
    if rng == (0, 0):  # binary: sign (+1 for 0), gradient passed where |w| <= 1
        sign = torch.where(shadow >= 0, 1.0, -1.0).to(shadow.dtype)
        soft = torch.clamp(shadow, -1.0, 1.0)
        return soft + (sign - soft).detach()
    return _ste_round(torch.clamp(shadow, float(rng[0]), float(rng[1])))


def _round_weight(shadow, rng: tuple[int, int]):
    torch = import_torch()
    if rng == (0, 0):
        return torch.where(shadow >= 0, 1, -1).to(torch.int8)
    return torch.clamp(torch.round(shadow), rng[0], rng[1]).to(torch.int8)


def _f64(x):
    torch = import_torch()
    return x.to(torch.float64)


def _rescale_ste(v, multiplier, shift):
    """``(v * M + 2**(shift-1)) >> shift`` = ``floor(v * M / 2**shift + 1/2)`` (STE)."""
    torch = import_torch()
    factor = _f64(torch.as_tensor(multiplier)) * torch.pow(
        torch.tensor(2.0, dtype=torch.float64), -_f64(torch.as_tensor(shift)))
    return _ste_floor(v * factor + 0.5)


def _clamp_q(x, qmin, qmax):
    return import_torch().clamp(x, float(qmin), float(qmax))


@torch_op("q.Quantize")
def _q_quantize(node, x):
    torch = import_torch()
    a = node.attrs
    inv = torch.tensor(np.float32(1.0 / float(a["scale"])))
    scaled = _f64(x.to(torch.float32) * inv)
    return _clamp_q(_ste_round(scaled) + int(a.get("zero_point", 0)), a["qmin"], a["qmax"])


@torch_op("q.Dequantize")
def _q_dequantize(node, q):
    torch = import_torch()
    v = (_f64(q) - int(node.attrs.get("zero_point", 0))).to(torch.float32)
    return v * torch.tensor(np.float32(node.attrs["scale"]))


@torch_op("q.Clip")
def _q_clip(node, x):
    return _clamp_q(_f64(x), node.attrs["qmin"], node.attrs["qmax"])


@torch_op("q.Conv")
def _q_conv(node, x, w, b=None):
    F = _F()
    a = node.attrs
    pads = list(a.get("pads") or [0, 0, 0, 0])
    torch_pads, _ = _pads_2d(pads)
    x = _f64(x) - int(a.get("x_zero_point", 0))  # real-zero padding = 0 after this
    if any(torch_pads):
        x = F.pad(x, torch_pads)
    y = F.conv2d(x, _f64(w), None, stride=list(a.get("strides") or [1, 1]),
                 dilation=list(a.get("dilations") or [1, 1]), groups=int(a.get("group", 1)))
    return y if b is None else y + _f64(b).reshape(1, -1, 1, 1)


@torch_op("q.ConvTranspose")
def _q_conv_transpose(node, x, w, b=None):
    """conv_transpose(x - x_zero_point, w) + bias, with the float ConvTranspose's crop/extend."""
    y = _conv_transpose(node, _f64(x) - int(node.attrs.get("x_zero_point", 0)), _f64(w))
    return y if b is None else y + _f64(b).reshape(1, -1, 1, 1)


@torch_op("q.Resize")
def _q_resize(node, x, mh, mw):
    """zp + round_half_up(mh @ (x - zp) @ mw.T / 2**shift) (STE)."""
    a = node.attrs
    zp = int(a.get("zero_point", 0))
    v = _f64(mh) @ (_f64(x) - zp) @ _f64(mw).t()
    v = v * 2.0 ** -int(a.get("shift", 16))
    return _clamp_q(_ste_floor(v + 0.5) + zp, -128, 127)


@torch_op("q.Gemm")
def _q_gemm(node, a, b, c=None):
    b = _f64(b)
    b = b.t() if int(node.attrs.get("transB", 0)) else b
    y = (_f64(a) - int(node.attrs.get("a_zero_point", 0))) @ b
    return y if c is None else y + _f64(c).reshape(1, -1)


@torch_op("q.MatMul")
def _q_matmul(node, a, b):
    return ((_f64(a) - int(node.attrs.get("a_zero_point", 0)))
            @ (_f64(b) - int(node.attrs.get("b_zero_point", 0))))


@torch_op("q.Requantize")
def _q_requantize(node, acc, multiplier, shift):
    a = node.attrs
    acc = _f64(acc)
    m, s = multiplier.reshape(-1), shift.reshape(-1)
    if m.numel() > 1:
        shape = [1] * acc.dim()
        shape[int(a.get("axis", 1)) % acc.dim()] = m.numel()
        m, s = m.reshape(shape), s.reshape(shape)
    else:
        m, s = m.reshape(()), s.reshape(())
    y = _rescale_ste(acc, m, s) + int(a.get("zero_point", 0))
    return _clamp_q(y, a["qmin"], a["qmax"])


@torch_op("q.Add")
def _q_add(node, x, y):
    a = node.attrs
    scale = 2.0 ** -int(a["shift"])
    v = ((_f64(x) - int(a["a_zero_point"])) * (int(a["a_multiplier"]) * scale)
         + (_f64(y) - int(a["b_zero_point"])) * (int(a["b_multiplier"]) * scale))
    return _clamp_q(_ste_floor(v + 0.5) + int(a["zero_point"]), a["qmin"], a["qmax"])


@torch_op("q.Concat")
def _q_concat(node, *xs):
    torch = import_torch()
    a = node.attrs
    scale = 2.0 ** -int(a["shift"])
    parts = [_clamp_q(_ste_floor((_f64(x) - int(zp)) * (int(m) * scale) + 0.5)
                      + int(a["zero_point"]), a["qmin"], a["qmax"])
             for x, zp, m in zip(xs, a["zero_points"], a["multipliers"])]
    return torch.cat(parts, dim=int(a.get("axis", 1)))


@torch_op("q.AveragePool")
def _q_average_pool(node, x):
    torch = import_torch()
    F = _F()
    a = node.attrs
    zp = int(a.get("zero_point", 0))
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides") or [1, 1])
    pads = list(a.get("pads") or [0, 0, 0, 0])
    torch_pads, _ = _pads_2d(pads)
    ceil = bool(a.get("ceil_mode", 0))
    v = F.pad(_f64(x) - zp, torch_pads)
    total = F.avg_pool2d(v, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    ones = torch.ones((1, 1, *x.shape[2:]), dtype=torch.float64)
    ones = F.pad(ones, torch_pads, value=1.0 if a.get("count_include_pad", 0) else 0.0)
    count = F.avg_pool2d(ones, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    return _clamp_q(_ste_floor(total / count + 0.5) + zp, -128, 127)


@torch_op("q.GlobalAveragePool")
def _q_global_average_pool(node, x):
    zp = int(node.attrs.get("zero_point", 0))
    v = _f64(x) - zp
    n = int(np.prod(list(v.shape[2:])))
    total = v.sum(dim=tuple(range(2, v.dim())), keepdim=True)
    return _clamp_q(_ste_floor(total / n + 0.5) + zp, -128, 127)

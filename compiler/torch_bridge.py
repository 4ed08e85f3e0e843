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

from .analysis import is_param
from .ir import Graph, Node
from .ops.registry import UnsupportedOpError

__all__ = ["to_torch", "from_torch", "finetune", "TORCH_OPS", "GraphModule"]


def _torch():
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
    torch = _torch()
    missing = sorted({n.op_type for n in graph.topo_order() if n.op_type not in TORCH_OPS})
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
            statistics = {id(node.inputs[i]) for node in self.order
                          if node.op_type == "BatchNormalization" for i in (3, 4)}
            for value in graph.constants:
                key = _sanitize(value.name)
                tensor = torch.from_numpy(np.array(value.const, copy=True))
                if is_param(value) and value.dtype == np.float32 and id(value) not in statistics:
                    self.register_parameter(key, torch.nn.Parameter(tensor))
                    if value.const.ndim >= 2 and np.any(value.const == 0):
                        self.masks[key] = tensor != 0
                else:
                    self.register_buffer(key, tensor)
                self.names[id(value)] = key

        def apply_masks(self) -> None:
            with torch.no_grad():
                for key, mask in self.masks.items():
                    getattr(self, key).mul_(mask)

        def forward(self, *inputs: Any) -> Any:
            env: dict[int, Any] = {id(v): x for v, x in zip(self.graph.inputs, inputs)}
            for node in self.order:
                args = []
                for value in node.inputs:
                    if value is None:
                        args.append(None)
                    elif value.is_constant:
                        args.append(getattr(self, self.names[id(value)]))
                    else:
                        args.append(env[id(value)])
                result = TORCH_OPS[node.op_type](node, *args)
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
        tensor = getattr(module, key).detach().cpu().numpy()
        by_name[value.name].const = tensor.astype(value.dtype, copy=True)
    return new


def finetune(graph: Graph, dataset: Any, *, epochs: int = 1, lr: float = 1e-3,
             batch_size: int = 64, optimizer: str = "adam", weight_decay: float = 0.0,
             max_batches: int | None = None, seed: int = 0, progress: bool = False) -> Graph:
    """Retrain ``graph``'s weights on ``dataset`` (cross-entropy); structure is unchanged.

    Exact zeros in weight tensors are kept at zero (pruning masks survive).
    """
    torch = _torch()
    torch.manual_seed(seed)
    module = to_torch(graph)
    module.train()
    params = [p for p in module.parameters()]
    if not params:
        raise ValueError(f"graph '{graph.name}' has no float weights to fine-tune")
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer '{optimizer}'; choose adam or sgd")
    steps = math.ceil(len(dataset) / batch_size)
    if max_batches is not None:
        steps = min(steps, max_batches)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        batches = dataset.batches(batch_size, shuffle=True, seed=seed + epoch)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"finetune epoch {epoch + 1}/{epochs}", total=steps,
                           unit="batch")
        for step, (x, y) in enumerate(batches):
            if step >= steps:
                break
            opt.zero_grad()
            loss = loss_fn(module(torch.from_numpy(x)), torch.from_numpy(y))
            loss.backward()
            opt.step()
            schedule.step()
            module.apply_masks()
    module.eval()
    return from_torch(module, graph)


# --- per-op torch implementations (same semantics as compiler/ops) -------------------

def _F():
    return _torch().nn.functional


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
    torch = _torch()
    return torch.clamp(x, None if lo is None else float(lo), None if hi is None else float(hi))


@torch_op("LeakyRelu")
def _leaky(node, x):
    return _F().leaky_relu(x, node.attrs["alpha"])


@torch_op("PRelu")
def _prelu(node, x, slope):
    torch = _torch()
    return torch.where(x >= 0, x, x * slope)


@torch_op("Sigmoid")
def _sigmoid(node, x):
    return _torch().sigmoid(x)


@torch_op("HardSigmoid")
def _hard_sigmoid(node, x):
    return _torch().clamp(node.attrs["alpha"] * x + node.attrs["beta"], 0.0, 1.0)


@torch_op("HardSwish")
def _hard_swish(node, x):
    return _F().hardswish(x)


@torch_op("Tanh")
def _tanh(node, x):
    return _torch().tanh(x)


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
    return _torch().cat(xs, dim=node.attrs["axis"])


@torch_op("Split")
def _split(node, x, split):
    return _torch().split(x, [int(s) for s in split], dim=node.attrs["axis"])


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
    return _torch().softmax(x, dim=node.attrs["axis"])


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

#!/usr/bin/env python
"""Train the baseline models in ``baselines/`` on real data (reproducible, CPU only).

Usage (from the repository root; ``bash scripts/setup.sh`` installs what it needs)::

    python scripts/train_baselines.py [--only NAME ...] [--epochs N] [--out baselines]

For each model: seeded training on the ``train`` split of its data set
(`compiler.datasets`), model selection on ``calib`` (the best epoch's weights are kept), then

* export with ``torch.onnx.export(model.eval(), x, path, opset_version=13, dynamo=False,
  training=TrainingMode.PRESERVE, input_names=["input"], output_names=["logits"])``, batch 1,
  fully static shapes (BatchNormalization nodes survive: the compiler folds them itself), saved
  with ONNX ``ir_version`` 8 into ``baselines/<name>.onnx`` (temp file + rename);
* the shipped file is run in onnxruntime on the full test set, one image at a time, and its
  metric must reproduce the torch one;
* ``baselines/baselines.json`` gets one entry per model (file, data set, task, input shape,
  classes, parameters, MACs, metric, test value, epochs, seed, training time, mean/std, ...).
  Entries of models not trained in this run are kept.

| name | data set | architecture |
| --- | --- | --- |
| ``lenet5_mnist`` | mnist | LeNet-5: conv5x5(6, pad 2)-BN-ReLU-maxpool, conv5x5(16)-BN-ReLU-maxpool, fc120-fc84-fc10 |
| ``vgg_fmnist`` | fashion-mnist | VGG-style 3x3 conv-BN-ReLU stacks, max pools, Flatten-Gemm classifier |
| ``resnet_fmnist`` | fashion-mnist | ResNet-style basic blocks, residual Adds, 1x1-conv projection shortcuts |
| ``mobilenet_fmnist`` | fashion-mnist | MobileNetV1-style depthwise-separable blocks, BN, ReLU6 |
| ``plaincnn_fmnist`` | fashion-mnist | plain conv-ReLU-maxpool x2, Flatten-Gemm-ReLU-Gemm (no BN) |
| ``unet_seg`` | mnist-seg | U-Net: 64/32/16/8 levels, concat skips, ConvTranspose up (8->16, 32->64) and bilinear Resize up (16->32) |
| ``lenet_caffe_mnist`` | mnist | Caffe LeNet (Deep Compression's): conv 20 5x5, pool, conv 50 5x5, pool, fc 500, fc 10; 431k params |
| ``vgg16_fmnist`` | fashion-mnist | VGG16 layout (13 convs + BN, 3 FC) at 1/8 width (8..64 channels, FC 256) |

Determinism: ``torch.manual_seed``/numpy seeds per model, ``torch.set_num_threads(2)``,
``torch.use_deterministic_algorithms(True)``; the batch order and augmentation come from a seeded
numpy generator. The same torch build on the same CPU gives the same weights.

torch (``pip install torch==2.13.0``, CPU; torchvision is not needed) is imported lazily.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from compiler.datasets import Dataset, load_dataset  # noqa: E402
from compiler.evaluate import mean_iou  # noqa: E402
from compiler.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402

OUT = ROOT / "baselines"
OPSET = 13
IR_VERSION = 8
SEED = 0
BATCH = 128
TORCH_PIP = "pip install torch==2.13.0"


def _import_torch():
    try:
        import torch  # noqa: PLC0415 (lazy on purpose)
    except ImportError as e:
        raise SystemExit(f"train_baselines.py needs PyTorch, which is not installed ({e}). "
                         f"Install it with `{TORCH_PIP}` (CPU build; torchvision is NOT needed) "
                         f"or `bash scripts/setup.sh`.") from None
    return torch


# --------------------------------------------------------------------------- models

def _models(torch):
    """name -> (builder, spec). Built inside a function so that torch stays a lazy import."""
    nn = torch.nn

    def cbr(i, o, k=3, s=1, g=1, act=nn.ReLU):
        return [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), act()]

    class LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 6, 5, padding=2, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(6, 16, 5, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84),
                nn.ReLU(), nn.Linear(84, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *cbr(1, 16), *cbr(16, 16), nn.MaxPool2d(2),        # 14x14
                *cbr(16, 32), *cbr(32, 32), nn.MaxPool2d(2),       # 7x7
                *cbr(32, 64), nn.MaxPool2d(2))                     # 3x3
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 3 * 3, 128), nn.ReLU(),
                nn.Linear(128, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class Block(nn.Module):
        def __init__(self, i, o, s):
            super().__init__()
            self.body = nn.Sequential(*cbr(i, o, 3, s), nn.Conv2d(o, o, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(o))
            self.short = (nn.Identity() if s == 1 and i == o else
                          nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)))
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.body(x) + self.short(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(*cbr(1, 16))                       # 28x28
            self.layers = nn.Sequential(Block(16, 16, 1),                # identity shortcut
                                        Block(16, 32, 2),                # 14x14, projection
                                        Block(32, 64, 2))                # 7x7, projection
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x):
            return self.head(self.layers(self.stem(x)))

    class MobileNet(nn.Module):
        def __init__(self):
            super().__init__()

            def dws(i, o, s):
                return [*cbr(i, i, 3, s, g=i, act=nn.ReLU6), *cbr(i, o, 1, act=nn.ReLU6)]

            self.features = nn.Sequential(
                *cbr(1, 24, act=nn.ReLU6),                                 # 28x28
                *dws(24, 48, 2), *dws(48, 96, 1),                          # 14x14
                *dws(96, 192, 2), *dws(192, 192, 1))                       # 7x7
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                      nn.Linear(192, 10))

        def forward(self, x):
            return self.head(self.features(x))

    class PlainCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 14x14
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))  # 7x7
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 96), nn.ReLU(),
                nn.Linear(96, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class UNet(nn.Module):
        def __init__(self, n_classes=11):
            super().__init__()
            self.enc1 = nn.Sequential(*cbr(1, 8))                         # 64x64
            self.enc2 = nn.Sequential(*cbr(8, 16), *cbr(16, 16))          # 32x32
            self.enc3 = nn.Sequential(*cbr(16, 32), *cbr(32, 32))         # 16x16
            self.mid = nn.Sequential(*cbr(32, 48), *cbr(48, 48))          # 8x8
            self.pool = nn.MaxPool2d(2)
            self.up3 = nn.ConvTranspose2d(48, 32, 2, stride=2)            # 8 -> 16
            self.dec3 = nn.Sequential(*cbr(32 + 32, 32))
            self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.dec2 = nn.Sequential(*cbr(32 + 16, 16))                  # 16 -> 32
            self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)             # 32 -> 64
            self.dec1 = nn.Sequential(*cbr(8 + 8, 16, k=1))               # per pixel
            self.out = nn.Conv2d(16, n_classes, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            e3 = self.enc3(self.pool(e2))
            m = self.mid(self.pool(e3))
            d3 = self.dec3(torch.cat([self.up3(m), e3], dim=1))
            d2 = self.dec2(torch.cat([self.up2(d3), e2], dim=1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
            return self.out(d1)

    class CaffeLeNet(nn.Module):
        """Caffe's ``examples/mnist/lenet.prototxt`` (the LeNet of Deep Compression): conv 20
        5x5, max pool, conv 50 5x5, max pool, fc 500 + ReLU, fc 10; no BN, no ReLU after the
        convolutions; 431,080 parameters (1.72 MB fp32)."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 20, 5), nn.MaxPool2d(2),                      # 24 -> 12
                nn.Conv2d(20, 50, 5), nn.MaxPool2d(2))                     # 8 -> 4
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Linear(500, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    class VGG16(nn.Module):
        """VGG16's layout (13 3x3 convs in blocks of 2, 2, 3, 3, 3; three FC layers) with the
        widths divided by 8 (64..512 -> 8..64, FC 4096 -> 256) for 28x28 inputs; max pools
        after blocks 1, 2, 3 and 5 (28 -> 14 -> 7 -> 3 -> 1: a fifth pool would reach 0x0),
        BN after every conv (as VGG16-BN)."""

        def __init__(self, w: int = 8):
            super().__init__()
            cfg = [(2, w, True), (2, 2 * w, True), (3, 4 * w, True), (3, 8 * w, False),
                   (3, 8 * w, True)]
            layers, c = [], 1
            for n, o, pool in cfg:
                for _ in range(n):
                    layers += cbr(c, o)
                    c = o
                if pool:
                    layers.append(nn.MaxPool2d(2))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(
                nn.Flatten(), nn.Linear(c, 32 * w), nn.ReLU(), nn.Dropout(0.3),
                nn.Linear(32 * w, 32 * w), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32 * w, 10))

        def forward(self, x):
            return self.classifier(self.features(x))

    return {
        "lenet5_mnist": (LeNet5, dict(dataset="mnist", epochs=10, lr=3e-3, wd=1e-4,
                                      shift=2, flip=False)),
        "vgg_fmnist": (VGG, dict(dataset="fashion-mnist", epochs=10, lr=3e-3, wd=1e-4,
                                 shift=2, flip=True)),
        "resnet_fmnist": (ResNet, dict(dataset="fashion-mnist", epochs=8, lr=3e-3, wd=1e-4,
                                       shift=2, flip=True)),
        "mobilenet_fmnist": (MobileNet, dict(dataset="fashion-mnist", epochs=12, lr=3e-3,
                                             wd=1e-4, shift=2, flip=True)),
        "plaincnn_fmnist": (PlainCNN, dict(dataset="fashion-mnist", epochs=10, lr=2e-3,
                                           wd=1e-4, shift=2, flip=True)),
        "unet_seg": (UNet, dict(dataset="mnist-seg", epochs=4, lr=6e-3, wd=1e-5,
                                shift=0, flip=False, bg_weight=0.3)),
        "lenet_caffe_mnist": (CaffeLeNet, dict(dataset="mnist", epochs=4, lr=2e-3, wd=1e-4,
                                               shift=2, flip=False)),
        "vgg16_fmnist": (VGG16, dict(dataset="fashion-mnist", epochs=3, lr=3e-3, wd=1e-4,
                                     shift=2, flip=True)),
    }


MODEL_NAMES = ("lenet5_mnist", "vgg_fmnist", "resnet_fmnist", "mobilenet_fmnist",
               "plaincnn_fmnist", "unet_seg", "lenet_caffe_mnist", "vgg16_fmnist")


# --------------------------------------------------------------------------- data

def _to_torch(torch, ds: Dataset, channels_last: bool):
    x = torch.from_numpy(ds.inputs())
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.from_numpy(np.array(ds.labels, dtype=np.int64))


def _augment(torch, x, rng: np.random.Generator, shift: int, flip: bool, background: float):
    """Per-sample random translation by up to ``shift`` pixels (filled with the normalized
    value of a black pixel) and horizontal flips; all randomness from the numpy ``rng``."""
    b, _, h, w = x.shape
    if flip:
        mask = torch.from_numpy(rng.random(b) < 0.5)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if shift:
        xp = torch.nn.functional.pad(x, (shift,) * 4, value=background)
        dy = torch.from_numpy(rng.integers(0, 2 * shift + 1, size=b))
        dx = torch.from_numpy(rng.integers(0, 2 * shift + 1, size=b))
        rows = (dy[:, None] + torch.arange(h))[:, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, :]
        x = xp[torch.arange(b)[:, None, None], 0, rows, cols][:, None]
    return x


# --------------------------------------------------------------------------- metrics

def confusion(pred: np.ndarray, label: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(label.ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)


def metric_from_confusion(cm: np.ndarray, task: str) -> float:
    if task == "classification":
        return float(np.trace(cm) / cm.sum())
    return mean_iou(cm)


METRIC = {"classification": "top1_accuracy", "segmentation": "mean_iou"}


def _torch_predict(torch, model, x, batch: int = 500, channels_last: bool = False):
    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = x[s:s + batch]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            preds.append(model(xb).argmax(1).numpy())
    return np.concatenate(preds)


# --------------------------------------------------------------------------- counting

def count_macs(torch, model, input_shape) -> int:
    """Multiply-accumulates of Conv / ConvTranspose / Linear layers for one input (batch 1)."""
    nn = torch.nn
    total = [0]

    def hook(mod, inputs, out):
        if isinstance(mod, nn.ConvTranspose2d):      # every input pixel scatters a kernel
            total[0] += inputs[0].numel() * (mod.out_channels // mod.groups) * \
                math.prod(mod.kernel_size)
        elif isinstance(mod, nn.Conv2d):             # every output pixel gathers a kernel
            total[0] += out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


# --------------------------------------------------------------------------- files

def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def export_onnx(torch, model, input_shape, path: Path) -> dict:
    """Export (batch 1, static), force ir_version 8, check, save atomically; return op counts."""
    import onnx

    model = model.to(memory_format=torch.contiguous_format).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(input_shape),), buf, opset_version=OPSET,
                          dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["input"], output_names=["logits"])
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = IR_VERSION
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            raise RuntimeError(f"{path.name}: non-static shape on graph value {vi.name!r}")
    if [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] != \
            list(input_shape):
        raise RuntimeError(f"{path.name}: input shape is not {input_shape}")
    onnx.checker.check_model(proto, full_check=True)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    if ops.get("BatchNormalization", 0) != n_bn:
        raise RuntimeError(f"{path.name}: {n_bn} BatchNorm2d modules but "
                           f"{ops.get('BatchNormalization', 0)} BatchNormalization nodes")
    if "Dropout" in ops:
        raise RuntimeError(f"{path.name}: Dropout survived the eval-mode export")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, proto.SerializeToString())
    return dict(sorted(ops.items()))


def ort_metric(path: Path, ds: Dataset, torch_pred: np.ndarray) -> tuple[float, int]:
    """Metric of the shipped ONNX file in onnxruntime, one image at a time (it has batch 1);
    also the number of predictions (images or pixels) that differ from torch's."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    k = ds.num_classes
    cm = np.zeros((k, k), np.int64)
    differ = 0
    for i in range(len(ds)):
        logits = sess.run(None, {"input": ds.inputs(i, i + 1)})[0]
        pred = logits.argmax(1)[0]
        cm += confusion(np.asarray(pred), ds.labels[i], k)
        differ += int(np.sum(pred != torch_pred[i]))
    return metric_from_confusion(cm, ds.task), differ


def compiler_macs(path: Path) -> int | None:
    """The compiler's own count (compiler.analysis), as a cross-check of count_macs."""
    try:
        from compiler.analysis import model_stats
        from compiler.onnx_io import import_model
        return int(model_stats(import_model(str(path))).macs)
    except Exception as e:  # noqa: BLE001 - a cross-check only; the count above stands
        print(f"  (compiler.analysis cross-check unavailable: {type(e).__name__}: {e})")
        return None


# --------------------------------------------------------------------------- training

def train_one(torch, name: str, out_dir: Path, epochs: int | None, seed: int,
              channels_last: bool = True) -> dict:
    builder, spec = _models(torch)[name]
    epochs = spec["epochs"] if epochs is None else epochs
    train, calib, test = (load_dataset(spec["dataset"], s) for s in ("train", "calib", "test"))
    task, k = train.task, train.num_classes
    input_shape = train.input_shape

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = builder()
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(torch, model, input_shape)
    print(f"\n== {name}: {spec['dataset']} {task}, input {input_shape}, {params:,} params, "
          f"{macs:,} MACs, {epochs} epochs", flush=True)

    xtr, ytr = _to_torch(torch, train, False)
    xcal, _ = _to_torch(torch, calib, False)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    background = (0.0 - train.mean) / train.std
    steps = math.ceil(len(train) / BATCH)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["wd"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec["lr"], epochs=max(epochs, 1),
                                                steps_per_epoch=steps, pct_start=0.25)
    weight = None
    if spec.get("bg_weight") is not None:          # segmentation: background is ~95 % of pixels
        weight = torch.ones(k)
        weight[0] = spec["bg_weight"]
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    best = (-1.0, 0, None)
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        te = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(train)))
        total, seen = 0.0, 0
        for s in range(0, len(train), BATCH):
            idx = order[s:s + BATCH]
            xb, yb = xtr[idx], ytr[idx]
            xb = _augment(torch, xb, rng, spec["shift"], spec["flip"], background)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        pred = _torch_predict(torch, model, xcal, channels_last=channels_last)
        value = metric_from_confusion(confusion(pred, calib.labels, k), task)
        history.append({"epoch": epoch, "train_loss": round(total / seen, 5),
                        "calib": round(value, 5)})
        mark = ""
        if value > best[0]:
            best = (value, epoch, {n: t.detach().clone() for n, t in model.state_dict().items()})
            mark = " *"
        print(f"  epoch {epoch:2d}/{epochs}: loss {total / seen:.4f}, calib {METRIC[task]} "
              f"{value:.4f}{mark} ({time.perf_counter() - te:.0f} s)", flush=True)
    train_time = time.perf_counter() - t0
    if best[2] is not None:
        model.load_state_dict(best[2])
    model = model.to(memory_format=torch.contiguous_format).eval()

    xte, _ = _to_torch(torch, test, False)
    torch_pred = _torch_predict(torch, model, xte)
    torch_value = metric_from_confusion(confusion(torch_pred, test.labels, k), task)
    print(f"  best calib {best[0]:.4f} at epoch {best[1]}; test {METRIC[task]} (torch) "
          f"{torch_value:.4f}; trained in {train_time:.0f} s", flush=True)

    path = out_dir / f"{name}.onnx"
    ops = export_onnx(torch, model, input_shape, path)
    t1 = time.perf_counter()
    ort_value, differ = ort_metric(path, test, torch_pred)
    unit = "pixels" if task == "segmentation" else "images"
    print(f"  {path.name}: {path.stat().st_size / 1024:.0f} KB, ops {ops}\n"
          f"  onnxruntime on the full test set (batch 1): {METRIC[task]} {ort_value:.4f} "
          f"({differ} {unit} predicted differently from torch; {time.perf_counter() - t1:.0f} s)",
          flush=True)
    tol = 2e-4 if task == "classification" else 1e-3
    if abs(ort_value - torch_value) > tol:
        raise RuntimeError(f"{path.name}: onnxruntime gives {METRIC[task]} {ort_value:.5f}, "
                           f"torch gave {torch_value:.5f}")
    cmacs = compiler_macs(path)
    if cmacs is not None and cmacs != macs:
        print(f"  note: compiler.analysis counts {cmacs:,} MACs, the torch hooks {macs:,}")

    with torch.no_grad():
        out_shape = list(model(torch.zeros(input_shape)).shape)
    return {
        "file": path.name,
        "dataset": spec["dataset"],
        "task": task,
        "input_name": "input",
        "input_shape": list(input_shape),
        "output_name": "logits",
        "output_shape": out_shape,
        "num_classes": k,
        "params": int(params),
        "macs": int(macs),
        "compiler_macs": cmacs,
        "metric": METRIC[task],
        "test_metric": round(ort_value, 6),
        "test_metric_torch": round(torch_value, 6),
        "test_samples": len(test),
        "calib_metric": round(best[0], 6),
        "best_epoch": best[1],
        "epochs": epochs,
        "seed": seed,
        "train_time_s": round(train_time, 1),
        "mean": train.mean,
        "std": train.std,
        "preprocess": "x = (uint8 / 255 - mean) / std, shape (1, 1, H, W) float32",
        "onnx_bytes": path.stat().st_size,
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "ops": ops,
        "optimizer": f"AdamW lr {spec['lr']} wd {spec['wd']}, OneCycle, batch {BATCH}",
        "loss": "cross-entropy" + (f", background class weight {spec['bg_weight']}"
                                   if spec.get("bg_weight") is not None else ""),
        "augmentation": (", ".join(a for a in (f"shift +-{spec['shift']} px" if spec["shift"]
                                               else "", "h-flip" if spec["flip"] else "") if a)
                         or "none"),
        "history": history,
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------- README

def _readme(entries: dict) -> str:
    rows = []
    for name in [n for n in MODEL_NAMES if n in entries] + \
            [n for n in entries if n not in MODEL_NAMES]:
        e = entries[name]
        value = (f"{100 * e['test_metric']:.2f} %" if e["metric"] == "top1_accuracy"
                 else f"{e['test_metric']:.4f}")
        rows.append(f"| `{e['file']}` | {e['dataset']} | {'x'.join(map(str, e['input_shape']))}"
                    f" | {e['params']:,} | {e['macs'] / 1e6:.2f} M | {e['metric']} | {value} | "
                    f"{e['epochs']} | {e['train_time_s']:.0f} s | {e['onnx_bytes'] / 1024:.0f} KB |")
    table = "\n".join(rows)
    return f"""# Trained baselines

Small CNNs trained here on real data (`compiler/datasets.py`), shipped as ONNX (opset 13,
`ir_version` 8, input `input` with a static batch of 1, output `logits`). BatchNormalization
nodes are kept (exported with `training=TrainingMode.PRESERVE` from the eval-mode module), so
the compiler's own `fold-bn` has work to do. `baselines.json` has every number below and more
(per-epoch history, op counts, calib metric, normalization constants).

| file | data set | input | params | MACs | metric | test value | epochs | training time | size |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{table}

- Test values are the shipped ONNX files run in onnxruntime on the **full** test split (10,000
  images; 2,000 canvases for `mnist-seg`), one image at a time; they reproduce the torch values.
- `top1_accuracy`: fraction of test images classified correctly. `mean_iou`: IoU per class
  (background + 10 digits) from the confusion matrix over every test pixel, averaged.
- Data: `train` split (first 55,000 official training images) for training, `calib` (the last
  5,000) to pick the best epoch, `test` (official test set) for the number above; `mnist-seg`
  is built from the digits of the same split (20,000 / 2,000 / 2,000 canvases of 64x64).
- Inputs are normalized as `(x / 255 - mean) / std` with the `mean`/`std` in `baselines.json`
  (the `Dataset.inputs()` of `compiler.datasets` does exactly this).
- MACs count Conv, ConvTranspose and Gemm multiply-accumulates for one image.
- Training times are the wall-clock seconds of the run that made each file (training plus the
  per-epoch calib evaluation), on this project's 2-core x86_64 development machine with
  `torch.set_num_threads(2)`. The committed files were trained while other jobs shared the
  machine (load average 7-13 on 2 cores; the processes got roughly a quarter to a half of
  the CPU), so the times are upper bounds: the whole script used ~35 CPU-minutes.

Reproduce (after `bash scripts/setup.sh`; seeds are fixed, and the same torch build on the same
CPU gives the same weights):

```sh
python scripts/train_baselines.py                 # all models (est. 15-25 min on 2 idle cores)
python scripts/train_baselines.py --only unet_seg # one model; other entries are kept
```
"""


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=MODEL_NAMES, metavar="NAME",
                    help=f"models to train (default: all of {', '.join(MODEL_NAMES)})")
    ap.add_argument("--epochs", type=int, default=None,
                    help="epochs for every model (default: each model's own)")
    ap.add_argument("--out", type=Path, default=OUT, help="output folder (default: baselines/)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")

    # Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning
    # threads made training several times slower. Must be set before torch starts OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = _import_torch()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)

    out_dir = args.out.resolve()
    json_path = out_dir / "baselines.json"
    t0 = time.perf_counter()
    trained = {}
    for name in args.only or MODEL_NAMES:
        trained[name] = train_one(torch, name, out_dir, args.epochs, args.seed)
        # Re-read, so that entries written meanwhile (another --only run) are kept.
        entries = json.loads(json_path.read_text()) if json_path.exists() else {}
        entries.update(trained)
        ordered = {n: entries[n] for n in MODEL_NAMES if n in entries}
        ordered.update({n: e for n, e in entries.items() if n not in ordered})
        _write_text(json_path, json.dumps(ordered, indent=1) + "\n")
        _write_text(out_dir / "README.md", _readme(ordered))
    total = time.perf_counter() - t0
    print(f"\nall done in {total:.0f} s ({total / 60:.1f} min); wrote {json_path}")
    for name, e in trained.items():
        print(f"  {name:18s} {e['params']:>8,} params {e['macs'] / 1e6:7.2f} M MACs  "
              f"{e['metric']} {e['test_metric']:.4f}  {e['train_time_s']:.0f} s  "
              f"{e['onnx_bytes'] / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

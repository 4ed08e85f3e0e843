"""Which models lose the packed (nchwc) conv layout, and why (issue #16).

For each model (fp32 and/or int8, prepared as ``tvm_vs_ort.py`` prepares them: passes
``fold-bn,cleanup`` [+ ``quantize{bits=8,act_bits=8}`` calibrated on a seeded normal
batch]) the graph is lowered as the tuned build lowers it (``tuned=True``) and
``pack_convolutions(mod, "nchwc", host target)`` is called directly -- no tuning, no
fallback -- so a refusal shows its real error.  With ``--check`` the untuned nchwc build
(which goes through `apply_layout`, the same as a tuned one) is also run and compared:
fp32 against onnxruntime (max error / max|ref|), int8 against our own int8 NCHW build
(max abs difference; bit-exact expected).

    PYTHONPATH=. python benchmarks/layout_refusals.py --models mtcnn_pnet,ddddocr_det --check
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from benchmarks.common import input_spec  # noqa: E402
from compiler.pass_manager import PassContext  # noqa: E402
from targets import get_target  # noqa: E402
from targets.tvm.layout import pack_convolutions, packed_conv_count  # noqa: E402

DEFAULT = "mtcnn_pnet,mtcnn_rnet,mtcnn_onet,ddddocr_det,open_nsfw,unet_tiny"


def _passes(variant: str) -> str:
    return "fold-bn,cleanup" + (",quantize{bits=8,act_bits=8}" if variant == "int8" else "")


def probe(path: Path, variant: str, check: bool) -> str:
    name, shape = input_spec(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    calib = [{name: rng.standard_normal((4,) + shape[1:]).astype(np.float32)}]
    ctx = PassContext()
    if variant == "int8":
        ctx.calibration_data = calib
    _, graph, _ = compiler.optimize(str(path), _passes(variant), ctx=ctx, verify=False)
    host = get_target("host")
    mod = host.lower(graph, tuned=True)
    try:
        packed = pack_convolutions(mod, "nchwc", host.target_dict())
    except Exception as exc:  # noqa: BLE001  (the point is to show it)
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        return f"REFUSED: {type(exc).__name__}: {lines[-1][:300] if lines else ''}"
    report = f"packed {packed_conv_count(packed)}"
    if not check:
        return report
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cm = compiler.compile(str(path), target=host.with_layout("nchwc"),
                              passes=_passes(variant),
                              calibration_data=calib if variant == "int8" else None,
                              verify=False)
        out = cm.run({name: x})[0]
    fell_back = [str(w.message) for w in caught if "packed conv layout" in str(w.message)]
    if variant == "fp32":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = sess.run(None, {name: x})[0]
        err = float(np.max(np.abs(out - ref)) / max(float(np.max(np.abs(ref))), 1e-12))
        report += f"; nchwc vs onnxruntime: {err:.2e} of max|ref|"
    else:
        plain = compiler.compile(str(path), target=host.with_layout("nchw"),
                                 passes=_passes(variant), calibration_data=calib, verify=False)
        ref = plain.run({name: x})[0]
        report += (f"; nchwc vs our int8 nchw: max|diff| {float(np.max(np.abs(out - ref))):.3g}"
                   f" (max|ref| {float(np.max(np.abs(ref))):.3g})")
    if fell_back:
        report += f"; WARNING {fell_back[0][:200]}"
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--variants", default="fp32,int8")
    ap.add_argument("--check", action="store_true", help="also build nchwc and compare")
    ap.add_argument("--traceback", action="store_true")
    args = ap.parse_args(argv)
    for model in args.models.split(","):
        path = ROOT / "models" / f"{model}.onnx"
        for variant in args.variants.split(","):
            try:
                print(f"{model} {variant}: {probe(path, variant, args.check)}", flush=True)
            except Exception as exc:  # noqa: BLE001
                print(f"{model} {variant}: ERROR {type(exc).__name__}: {str(exc)[-300:]}",
                      flush=True)
                if args.traceback:
                    traceback.print_exc()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the benchmarks share: the model table, onnxruntime sessions with one thread/spin
policy, timing (medians over repeats), table printing and the baselines list.

Benchmarks run as scripts (``python benchmarks/NAME.py``) put the repository root on
``sys.path`` once and import this module as ``benchmarks.common``; nothing here imports
``tests/``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# benchmark model name -> ONNX file (``conv64`` is synthetic: `conv64_model`)
MODELS: dict[str, Path | None] = {
    "conv64": None,
    "tinynet": ROOT / "examples" / "tinynet.onnx",
    "lenet5_mnist": ROOT / "baselines" / "lenet5_mnist.onnx",
    "plaincnn_fmnist": ROOT / "baselines" / "plaincnn_fmnist.onnx",
    "vgg_fmnist": ROOT / "baselines" / "vgg_fmnist.onnx",
    "resnet_fmnist": ROOT / "baselines" / "resnet_fmnist.onnx",
    "mobilenet_fmnist": ROOT / "baselines" / "mobilenet_fmnist.onnx",
    "unet_seg": ROOT / "baselines" / "unet_seg.onnx",
    "mobilenet_v2": ROOT / "models" / "mobilenet_v2.onnx",
}


def prepared_model(name: str) -> Path:
    """The file of a prepared model (``examples/tinynet.onnx`` or ``models/NAME.onnx``,
    written by scripts/prepare_models.py)."""
    return MODELS["tinynet"] if name == "tinynet" else ROOT / "models" / f"{name}.onnx"


def input_spec(path: Path) -> tuple[str, tuple[int, ...]]:
    """(name, shape) of the model's first input; symbolic dimensions become 1."""
    import onnx

    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    dims = tuple(d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim)
    return inp.name, dims


def random_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Standard-normal float32 input (the same draw as the tests' ``model_input``)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def conv64_model(path: Path, c: int = 64, size: int = 56) -> Path:
    """A synthetic Conv(c -> c, 3x3) + Relu at ``size`` x ``size``, seeded weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32)
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["output"])], "conv64",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, size, size])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def ort_session(model: Any, threads: int):
    """An onnxruntime CPU session: ``threads`` intra-op threads, one inter-op thread and
    no busy-waiting between runs (spinning pool threads would steal the cores from the
    variant timed next; TVM's pool is set alike, TVM_THREAD_POOL_SPIN_COUNT=0).
    ``model``: a path or an ``onnx.ModelProto``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def time_calls(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def time_ort(path: Path, feed: dict, repeat: int, threads: int) -> list[float]:
    """Seconds per run of the model at ``path`` in onnxruntime (`ort_session`), one
    warm-up run first."""
    sess = ort_session(path, threads)
    return time_calls(lambda: sess.run(None, feed), repeat)


def median_ms(samples: list[float]) -> float:
    """Median of samples in seconds, as milliseconds."""
    return float(np.median(samples)) * 1e3


def fmt_table(headers, rows) -> str:
    """A Markdown table with padded columns."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line, sep] + ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths))
                                    + " |" for r in cells])


def load_baselines(path: Path, datasets: list[str]) -> list[tuple[str, Path, str]]:
    """(name, onnx path, data set) of the classification baselines in baselines.json whose
    data set is in ``datasets``."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "models" in data:
        data = data["models"]
    entries = data.items() if isinstance(data, dict) else [(e.get("name"), e) for e in data]
    out = []
    for name, e in entries:
        ds = str(e.get("dataset", e.get("data_set", ""))).lower().replace("_", "-")
        if ds not in datasets or e.get("task", "classification") != "classification":
            continue
        f = Path(e.get("file", e.get("path", f"{name}.onnx")))
        if not f.is_absolute():
            f = path.parent / f if (path.parent / f).exists() else ROOT / f
        out.append((name, f, ds))
    return out

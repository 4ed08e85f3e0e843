"""The finetune pass: retraining as a pipeline step on PassContext.options['train_data']."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.datasets import Dataset
from compiler.interpreter import Interpreter
from compiler.onnx_io import import_model
from compiler.pass_manager import PassContext, PassOptionError, parse_pass

from tests.test_report_cli import tiny_model

pytest.importorskip("torch")


def _data(n: int = 256) -> Dataset:
    """A learnable task: the class is which of 10 fixed patterns the image is closest to."""
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 256, (10, 8, 8))
    labels = rng.integers(0, 10, n)
    noise = rng.normal(0, 40, (n, 8, 8))
    images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    return Dataset("patterns", images[:, None], labels, num_classes=10, mean=0.5, std=0.25)


def _accuracy(graph, data: Dataset) -> float:
    from compiler.batching import with_batch_size

    x = data.inputs(0, len(data))
    out = Interpreter(with_batch_size(graph, len(x))).run({"input": x})[0]
    return float((out.argmax(1) == data.labels).mean())


def test_finetune_pass_trains_with_stats_and_keeps_structure(tmp_path):
    import torch

    torch.set_num_threads(1)
    graph = import_model(tiny_model(tmp_path / "tiny.onnx"))
    data = _data()
    ctx = PassContext(options={"train_data": data}, evaluate=lambda g: _accuracy(g, data))
    p = parse_pass("finetune{epochs=2,lr=0.01,batch_size=32}")
    result = p(graph, ctx)
    st = result.stats
    assert st["epochs"] == 2 and st["batches"] == 8 and len(st["loss"]) == 2
    assert st["loss"][1] < st["loss"][0]
    assert st["after"] > st["before"] + 0.2  # measured on the training images
    assert [n.op_type for n in result.graph.topo_order()] == \
        [n.op_type for n in graph.topo_order()]
    assert [name for name, _ in ctx.history] == ["fold-bn", "finetune"]  # BN folded first


def test_finetune_pass_needs_training_data_and_valid_options():
    with pytest.raises(PassOptionError, match="train_data"):
        parse_pass("finetune").run(import_model_tiny(), PassContext())
    with pytest.raises(PassOptionError, match="epochs"):
        parse_pass("finetune{epochs=0}")
    assert parse_pass("finetune{max_batches=none}").max_batches is None


def import_model_tiny():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        return import_model(tiny_model(Path(d) / "t.onnx"))

"""The trained DeepLab v3 / v3+ baselines (scripts/train_deeplab.py): recorded mIoU, the
513x513 twin has the same weights, our import agrees with onnxruntime."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import compiler
from compiler.datasets import load_dataset
from compiler.evaluate import confusion_matrix, mean_iou
from compiler.interpreter import Interpreter
from conftest import ROOT, ort_run

BASELINES = ROOT / "baselines"
RECORDS = json.loads((BASELINES / "baselines.json").read_text())
NAMES = ("deeplabv3_scenes", "deeplabv3plus_scenes")


@pytest.mark.parametrize("name", NAMES)
def test_recorded_files_and_their_513_twin(name):
    record = RECORDS[name]
    small, big = BASELINES / record["file"], BASELINES / record["file_513"]
    assert small.stat().st_size == record["onnx_bytes"] <= 12 * 2 ** 20
    a, b = onnx.load(str(small)), onnx.load(str(big))
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in
            (b.graph.input[0], b.graph.output[0])]
    assert dims == [[1, 3, 513, 513], [1, 21, 513, 513]]
    wa = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    wb = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    weights = [k for k in wa if wa[k].ndim == 4]
    assert len(weights) >= 50 and all(np.array_equal(wa[k], wb[k]) for k in weights)
    assert record["dataset"] == "seg-scenes-256" and record["metric"] == "mean_iou"


@pytest.mark.parametrize("name", NAMES)
def test_interpreter_agrees_with_onnxruntime(name):
    record = RECORDS[name]
    path = BASELINES / record["file"]
    graph = compiler.import_model(str(path))
    test = load_dataset("seg-scenes-256", "test", n=2)
    for i in range(2):
        x = test.inputs(i, i + 1)
        ours = Interpreter(graph).run([x])[0]
        ref = ort_run(path, {"input": x})[0]
        assert np.max(np.abs(ours - ref)) <= 1e-3 * max(1.0, float(np.max(np.abs(ref))))
        assert np.mean(ours.argmax(1) == ref.argmax(1)) > 0.999


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_full_test_split_reproduces_recorded_miou(name):
    record = RECORDS[name]
    test = load_dataset("seg-scenes-256", "test")
    k = test.num_classes
    cm = np.zeros((k, k), np.int64)
    for i in range(len(test)):
        logits = ort_run(BASELINES / record["file"], {"input": test.inputs(i, i + 1)})[0]
        cm += confusion_matrix(test.labels[i], logits.argmax(1)[0], k)
    assert len(test) == record["test_samples"]
    assert mean_iou(cm) == pytest.approx(record["test_metric"], abs=1e-4)

"""evaluate(): metrics from one confusion matrix, batching, and mismatch errors."""
import numpy as np
import pytest

import compiler
from compiler.batching import BatchSizeError, with_batch_size
from compiler.datasets import Dataset
from compiler.evaluate import EvaluationError, confusion_matrix, evaluate
from compiler.interpreter import Interpreter
from compiler.ir import Graph
from conftest import SMALL_MODELS, assert_close, model_path


def argmax_pixel_model(pixels: int = 4) -> Graph:
    """logits[i] = pixel i: the prediction is the brightest pixel."""
    g = Graph("argmax")
    x = g.add_input("x", (1, 1, 2, pixels // 2), np.float32)
    flat = g.add_node("Flatten", [x], {"axis": 1}).output
    w = g.add_constant("w", np.eye(pixels, dtype=np.float32))
    gemm = g.add_node("Gemm", [flat, w], {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0})
    g.outputs.append(gemm.output)
    compiler.folding.fold_and_infer(g, fold=False)
    return g


def pixel_dataset(n: int = 10, wrong: int = 0) -> Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, (n, 2, 2)).astype(np.uint8)
    labels = images.reshape(n, -1).argmax(axis=1)
    labels[:wrong] = (labels[:wrong] + 1) % 4
    return Dataset("pixels", images, labels, num_classes=4)


def test_accuracy_counts_right_and_wrong():
    model = argmax_pixel_model()
    assert evaluate(model, pixel_dataset(10, wrong=0)).value == 1.0
    result = evaluate(model, pixel_dataset(10, wrong=3), batch_size=4)  # 3 batches, last partial
    assert result.value == pytest.approx(0.7) and result.samples == 10
    assert result.confusion.sum() == 10


def test_macro_f1_and_miou_by_hand():
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    cm = confusion_matrix(labels, preds, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    from compiler.evaluate import EvalResult

    r = EvalResult("top1", 0.6, 5, cm)
    # F1: class0 p=1/2 r=1/2 -> .5; class1 p=2/3 r=1 -> .8; class2 -> 0
    assert r.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # IoU: class0 1/(2+2-1)=1/3; class1 2/(3+2-2)=2/3; class2 0/(1+0-0)=0
    assert r.miou == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_mismatches_are_clear_errors():
    model = argmax_pixel_model()
    big = Dataset("big", np.zeros((2, 3, 3), np.uint8), np.zeros(2, np.int64), num_classes=4)
    with pytest.raises(EvaluationError, match=r"expects samples of shape \(1, 2, 2\), data set "
                                              r"'big' gives \(1, 3, 3\)"):
        evaluate(model, big)
    ten = Dataset("ten", np.zeros((2, 2, 2), np.uint8), np.zeros(2, np.int64), num_classes=10)
    with pytest.raises(EvaluationError, match="'ten' has 10 classes, so it must be \\(10,\\)"):
        evaluate(model, ten)
    with pytest.raises(EvaluationError, match="metric 'miou' needs per-pixel labels"):
        evaluate(model, pixel_dataset(), metric="miou")
    with pytest.raises(EvaluationError, match="unknown metric 'top5'"):
        evaluate(model, pixel_dataset(), metric="top5")


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_with_batch_size_matches_one_at_a_time(name):
    graph = compiler.import_model(model_path(name))
    batched = with_batch_size(graph, 3)
    assert batched.inputs[0].shape[0] == 3 and batched.outputs[0].shape[0] == 3
    x = np.random.default_rng(0).standard_normal(batched.inputs[0].shape).astype(np.float32)
    together = Interpreter(batched).run([x])[0]
    for i in range(3):
        assert_close(together[i:i + 1], Interpreter(graph).run([x[i:i + 1]])[0])


def test_with_batch_size_refuses_bad_sizes():
    with pytest.raises(BatchSizeError, match="must be >= 1"):
        with_batch_size(argmax_pixel_model(), 0)

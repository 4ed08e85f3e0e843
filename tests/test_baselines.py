"""The shipped trained baselines: recorded accuracy reproduced, torch round trip, fine-tuning."""
import json

import numpy as np
import pytest

import compiler
from compiler.datasets import load_dataset
from compiler.evaluate import EvalResult, confusion_matrix, evaluate
from compiler.interpreter import Interpreter
from conftest import ROOT, assert_close, ort_run

BASELINES = ROOT / "baselines"
RECORDS = json.loads((BASELINES / "baselines.json").read_text()) \
    if (BASELINES / "baselines.json").exists() else {}
# DeepLab entries (a 513x513 twin, seconds per image in the interpreter) have their own
# cheaper tests in tests/test_deeplab_baselines.py.
NAMES = sorted(n for n in RECORDS if "file_513" not in RECORDS[n])
METRIC = {"top1_accuracy": "top1", "mean_iou": "miou", "miou": "miou", "top1": "top1"}


def _load(name):
    record = RECORDS[name]
    graph = compiler.import_model(BASELINES / record["file"])
    data = load_dataset(record["dataset"], "test")
    return record, graph, data


def test_every_baseline_is_recorded():
    assert {"lenet5_mnist", "vgg_fmnist"} <= set(NAMES)


# comparable work for the research's claims (benchmarks/seeds.py):
# name -> (params, op counts, least test top-1 the committed file must keep)
COMPARABLE = {
    # Caffe's LeNet-5 (Deep Compression's LeNet): conv 20, conv 50, fc 500, fc 10, no BN
    "lenet_caffe_mnist": (431_080, {"Conv": 2, "MaxPool": 2, "Gemm": 2, "Relu": 1}, 0.99),
    # VGG16's layout (13 conv + BN, 3 FC) at 1/8 width, 3 epochs only (training budget)
    "vgg16_fmnist": (315_954, {"Conv": 13, "BatchNormalization": 13, "MaxPool": 4,
                               "Gemm": 3}, 0.88),
}


@pytest.mark.parametrize("name", sorted(COMPARABLE))
def test_comparable_baselines_have_the_research_architecture(name):
    import onnx

    params, ops, least = COMPARABLE[name]
    record = RECORDS[name]
    model = onnx.load(str(BASELINES / record["file"]))
    counts: dict = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    assert {k: counts.get(k, 0) for k in ops} == ops
    assert record["params"] == params
    if "BatchNormalization" not in ops:  # BN adds running statistics to the initializers
        assert sum(int(np.prod(t.dims)) for t in model.graph.initializer) == params
    assert record["test_samples"] == 10000 and record["test_metric"] >= least


@pytest.mark.parametrize("name", NAMES)
def test_subset_predictions_agree_with_onnxruntime(name):
    """Quick check: on a fixed subset our metric equals onnxruntime's on the same samples."""
    record, graph, data = _load(name)
    subset = data.subset(200)
    ours = evaluate(graph, subset, METRIC[record["metric"]], batch_size=50)
    x_name = graph.inputs[0].name
    logits = np.concatenate([ort_run(BASELINES / record["file"], {x_name: subset.inputs(i, i + 1)})[0]
                             for i in range(len(subset))])
    from compiler.evaluate import EvalResult, confusion_matrix

    cm = confusion_matrix(subset.labels, logits.argmax(axis=1), subset.num_classes)
    ref = EvalResult(ours.metric, 0.0, len(subset), cm)
    assert ours.confusion.tolist() == cm.tolist()
    assert getattr(ours, ours.metric) == pytest.approx(getattr(ref, ref.metric))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_full_test_set_reproduces_recorded_metric(name):
    """The committed file's recorded metric, on the full test split, by onnxruntime: the
    interpreter would take minutes per model here (VGG16-class: tens of minutes on a
    loaded 2-core machine); that it predicts what onnxruntime predicts is the subset test
    above."""
    import onnxruntime as ort

    record, graph, data = _load(name)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(BASELINES / record["file"]), opts,
                                providers=["CPUExecutionProvider"])
    feed = sess.get_inputs()[0].name
    x = data.inputs()
    predicted = np.concatenate([sess.run(None, {feed: x[i:i + 1]})[0].argmax(axis=1)
                                for i in range(len(x))])
    cm = confusion_matrix(data.labels, predicted, data.num_classes)
    metric = METRIC[record["metric"]]
    scored = EvalResult(metric, float("nan"), len(x), cm)  # the value is read from cm
    assert scored.samples == record["test_samples"]
    assert getattr(scored, metric) == pytest.approx(record["test_metric"], abs=1e-4), metric


@pytest.mark.parametrize("name", NAMES)
def test_torch_round_trip_is_exact(name):
    torch = pytest.importorskip("torch")
    from compiler.torch import from_torch, to_torch

    record, graph, data = _load(name)
    x = data.inputs(0, 4)
    module = to_torch(graph).eval()
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    for i in range(4):
        assert_close(got[i:i + 1], Interpreter(graph).run([x[i:i + 1]])[0], rtol=1e-5, atol=1e-5)
    back = from_torch(module, graph)
    for a, b in zip(back.constants, graph.constants):
        np.testing.assert_array_equal(a.const, b.const)


def test_finetuning_recovers_a_damaged_model_and_keeps_zeros():
    pytest.importorskip("torch")
    from compiler.torch import finetune

    record, graph, test = _load("lenet5_mnist")
    test = test.subset(1000)
    train = load_dataset(record["dataset"], "train").subset(6400, seed=0)
    base = evaluate(graph, test).value
    damaged = graph.clone()
    rng = np.random.default_rng(0)
    for value in damaged.constants:
        if value.const.ndim >= 2:  # conv and fc weights: zero half of them at random
            value.const = np.where(rng.random(value.const.shape) < 0.5, 0, value.const
                                   ).astype(value.const.dtype)
    hurt = evaluate(damaged, test).value
    tuned = finetune(damaged, train, epochs=1, lr=1e-3, batch_size=64)
    healed = evaluate(tuned, test).value
    print(f"\nlenet5 top-1 on 1000 test images: baseline {base:.3f}, 50% zeroed {hurt:.3f}, "
          f"after 1 epoch on 6.4k images {healed:.3f}")
    assert hurt < base - 0.05
    assert healed > hurt + 0.05
    assert tuned.to_text() == damaged.to_text()  # structure unchanged
    for before, after in zip(damaged.constants, tuned.constants):
        if before.const.ndim >= 2:
            assert np.all(after.const[before.const == 0] == 0)
            # +0.0, not -0.0: the lossless coder sees bit patterns
            assert not np.any(np.signbit(after.const[before.const == 0]))


@pytest.mark.slow
def test_pretrained_digit_recognizer_reaches_its_published_accuracy():
    """digit-recognizer-py's trained MNIST CNN (converted by scripts/prepare_models.py),
    scored by our interpreter on the full real MNIST test set; the package reports 99.06 %."""
    import dataclasses

    from conftest import MODELS

    path = MODELS / "digit_recognizer.onnx"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `python scripts/prepare_models.py`")
    # the package's own preprocessing: Normalize((0.1307,), (0.3081,))
    test = dataclasses.replace(load_dataset("mnist", "test"), mean=0.1307, std=0.3081)
    result = evaluate(compiler.import_model(path), test)
    print(f"\ndigit-recognizer-py CNN, MNIST test top-1: {result.value:.4f} ({result.samples})")
    assert result.samples == 10000
    assert result.value == pytest.approx(0.9906, abs=0.0005)


def test_distillation_loss_and_finetuning_from_a_teacher():
    """`training_loss`: distill=0 is cross-entropy, a student equal to its teacher has zero
    soft loss at distill=1; fine-tuning a damaged LeNet-5 against the intact one heals it."""
    torch = pytest.importorskip("torch")
    from compiler.torch import finetune, to_torch, training_loss

    record, graph, test = _load("lenet5_mnist")
    test = test.subset(1000)
    train = load_dataset(record["dataset"], "train").subset(6400, seed=0)
    x = torch.from_numpy(train.inputs(0, 64))
    y = torch.from_numpy(train.labels[:64].astype(np.int64))
    logits = to_torch(graph).eval()(x).detach()
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(training_loss(graph, distill=0.0)(logits, y, x), ce)
    assert float(training_loss(graph, distill=1.0)(logits, y, x)) < 1e-6
    shifted = logits.roll(1, dims=1)  # a student that disagrees with the teacher
    assert float(training_loss(graph, distill=1.0)(shifted, y, x)) > 0.1
    with pytest.raises(ValueError, match="distill"):
        training_loss(graph, distill=1.5)

    damaged = graph.clone()
    rng = np.random.default_rng(1)
    for value in damaged.constants:
        if value.const.ndim >= 2:
            value.const = np.where(rng.random(value.const.shape) < 0.5, 0, value.const
                                   ).astype(value.const.dtype)
    hurt = evaluate(damaged, test).value
    tuned = finetune(damaged, train, epochs=1, lr=1e-3, teacher=graph, distill=0.7)
    healed = evaluate(tuned, test).value
    assert healed > hurt + 0.05, (hurt, healed)
    for before, after in zip(damaged.constants, tuned.constants):
        if before.const.ndim >= 2:
            assert np.all(after.const[before.const == 0] == 0)

"""gradual-prune and deep-compression on the trained LeNet-5 with a few fine-tuning batches.

The expected history and weights digest were produced by the schedule's previous home,
``benchmarks/compression.py`` (``prune_stage`` + ``share_stage`` + ``dedup-constants``), on
the same data slices and options before it moved into `passes.gradual_prune`.
"""
import hashlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="fine-tuning needs torch (scripts/setup.sh)")

from compiler import PassContext, PassOptionError, parse_pass  # noqa: E402
from compiler.datasets import Dataset, DatasetUnavailableError, load_dataset  # noqa: E402
from compiler.onnx_io import import_model  # noqa: E402
from compiler.torch import to_torch  # noqa: E402
from passes.pruning.magnitude import weight_layers  # noqa: E402

LENET = Path(__file__).resolve().parents[2] / "baselines" / "lenet5_mnist.onnx"


def _slice(ds: Dataset, n: int) -> Dataset:
    return Dataset(ds.name, ds.images[:n], ds.labels[:n], ds.num_classes, ds.task, ds.mean,
                   ds.std, ds.split)


@pytest.fixture(scope="module")
def setup():
    if not LENET.exists():
        pytest.skip(f"{LENET} missing (scripts/train_baselines.py)")
    try:
        train, calib = load_dataset("mnist", "train"), load_dataset("mnist", "calib")
    except DatasetUnavailableError as e:
        pytest.skip(str(e))
    torch.set_num_threads(1)
    graph = parse_pass("fold-bn")(import_model(LENET), PassContext()).graph
    return graph, _slice(train, 256), _slice(calib, 200)


class Counted:
    """Top-1 on ``data`` with the graph's torch module; counts its calls."""

    def __init__(self, data: Dataset):
        self.data, self.calls = data, 0

    def __call__(self, graph) -> float:
        self.calls += 1
        with torch.no_grad():
            out = to_torch(graph).eval()(torch.from_numpy(self.data.inputs()))
        return float((out.argmax(1).numpy() == self.data.labels).mean())


def _digest(graph) -> str:
    consts = sorted(graph.constants, key=lambda v: v.name)
    return hashlib.sha256(b"".join(v.const.tobytes() for v in consts)).hexdigest()


def test_gradual_prune_reaches_the_sparsity_it_reports(setup):
    graph, train, calib = setup
    ev = Counted(calib)
    ctx = PassContext(evaluate=ev, options={"train_data": train, "finetune_max_batches": 4})
    before = _digest(graph)
    r = parse_pass("gradual-prune{max_drop=0.02, epochs=1}")(graph, ctx)
    assert _digest(graph) == before  # the input graph is left alone
    hist = r.stats["history"]
    assert ev.calls == 1 + len(hist)  # the baseline, then one call per probe
    assert [d for d, _ in hist] == [0.5, 0.25, 0.125, 0.0625, 0.08839, 0.10511]
    # the largest layer keeps the chosen density (rounded to whole weights)
    w = max((n.inputs[1].const for n in weight_layers(r.graph)), key=lambda c: c.size)
    assert 1 - np.count_nonzero(w) / w.size == pytest.approx(r.stats["rate"], abs=1 / w.size)
    assert r.stats["rate"] == pytest.approx(1 - 0.10511, abs=1e-4)
    assert r.stats["baseline"] - ev(r.graph) <= 0.02 + 1e-9


def test_gradual_prune_searches_within_the_pipeline_budget(setup):
    """No max_drop under a pipeline budget: the pass may spend what is left of it (all of
    it here: nothing ran before), so it follows the max_drop=0.02 schedule above, and its
    result is charged to the budget."""
    graph, train, calib = setup
    ctx = PassContext(evaluate=Counted(calib), budget=0.02,
                      options={"train_data": train, "finetune_max_batches": 4})
    r = parse_pass("gradual-prune{epochs=1}")(graph, ctx)
    assert r.stats["max_drop"] == pytest.approx(0.02)
    assert [d for d, _ in r.stats["history"]] == [0.5, 0.25, 0.125, 0.0625, 0.08839, 0.10511]
    assert r.stats["budget_left"] == pytest.approx(
        0.02 - (r.stats["pipeline_baseline"] - r.stats["accuracy"]), abs=1e-5)
    assert ctx.spent == [("gradual-prune", r.stats["accuracy"])]


def test_deep_compression_matches_the_benchmark_schedule(setup):
    graph, train, calib = setup
    ev = Counted(calib)
    ctx = PassContext(evaluate=ev, options={"train_data": train, "finetune_max_batches": 4})
    r = parse_pass("deep-compression{max_drop=0.02, epochs=1, final_epochs=0, "
                   "clusters=[4;8]}")(graph, ctx)
    assert r.stats["baseline"] == 0.995
    assert r.stats["history"]["prune"] == [[0.5, 0.995], [0.25, 0.995], [0.125, 0.985],
                                           [0.0625, 0.815], [0.08839, 0.96],
                                           [0.10511, 0.98]]
    assert r.stats["history"]["share"] == [[4, 0.96], [8, 0.975]]
    assert r.stats["clusters"] == 8
    # prune-unused ran between pruning and sharing: 3 channels fed only pruned weights
    assert r.stats["unused"] == {"channels_removed": 3, "rounds": [3]}
    assert _digest(r.graph) == ("85bc6f5c101ec2e784ead00085a2c7cc"
                                "36aab9d28908ddd3c1df4f6dc11192f1")
    for n in weight_layers(r.graph):  # every layer shares at most max(k, 16) values
        assert len(np.unique(n.inputs[1].const)) <= 16


@pytest.mark.parametrize("spec", ["gradual-prune{step=1.0}", "gradual-prune{start=0}",
                                  "gradual-prune{epochs=-1}", "deep-compression{clusters=[1]}",
                                  "deep-compression{prune_share=2}"])
def test_bad_options_are_named(spec):
    name = spec.split("{")[1].split("=")[0]
    with pytest.raises(PassOptionError, match=name):
        parse_pass(spec)


def test_missing_callback_or_training_set_is_named(setup):
    graph = setup[0]
    with pytest.raises(PassOptionError, match="PassContext.evaluate"):
        parse_pass("gradual-prune")(graph, PassContext(options={"train_data": setup[1]}))
    with pytest.raises(PassOptionError, match="train_data"):
        parse_pass("deep-compression")(graph, PassContext(evaluate=Counted(setup[2])))

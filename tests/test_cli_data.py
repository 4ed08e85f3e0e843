"""Data on the command line (#21): --calibration / --eval-data / --train-data from an image
folder, a .npy / .npz batch and a data set name, into quantize, prune-search and finetune;
preprocessing checked against the data set's own normalization; unnormalized integer data
refused."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.cli import main
from compiler.data_sources import DataSourceError, Preprocess, resolve
from compiler.datasets import MNIST_MEAN, MNIST_STD, load_dataset
from compiler.onnx_io import import_model

LENET = "baselines/lenet5_mnist.onnx"
N = 12  # samples per source: enough to calibrate and score, cheap to evaluate


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same 12 MNIST calib images as a labelled PNG folder, a float .npy, an .npz."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    data = load_dataset("mnist", "calib").subset(N)
    folder = root / "images"
    for i, (img, label) in enumerate(zip(data.images, data.labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(img)).save(folder / str(label) / f"{i:03d}.png")
    np.save(root / "x.npy", data.inputs())
    np.savez(root / "xy.npz", x=data.inputs(), y=data.labels)
    np.save(root / "u8.npy", np.asarray(data.images)[:, None])
    return {"root": root, "folder": folder, "data": data}


@pytest.fixture(scope="module")
def lenet():
    return import_model(LENET)


def test_image_folder_matches_the_data_sets_normalization(sources, lenet):
    data = sources["data"]
    got = resolve(sources["folder"], lenet, preprocess=Preprocess(mean=MNIST_MEAN,
                                                                   std=MNIST_STD))
    # files are read in (class folder, name) order: the same order here
    order = sorted(range(N), key=lambda i: (str(data.labels[i]), f"{i:03d}"))
    np.testing.assert_allclose(got.x, data.inputs()[order], rtol=0, atol=1e-6)
    assert got.labels.tolist() == data.labels[order].tolist()
    assert got.num_classes == 10 and got.x.dtype == np.float32


def test_rgb_bgr_and_nhwc_images(tmp_path):
    from PIL import Image

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 5, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])],
                                                "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    graph = import_model(tmp_path / "m.onnx")
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(pixels).save(tmp_path / "imgs" / "a.png")
    rgb = resolve(tmp_path / "imgs", graph)  # layout nhwc and rgb read from the model
    np.testing.assert_allclose(rgb.x[0], pixels / 255.0, atol=1e-6)
    bgr = resolve(tmp_path / "imgs", graph, preprocess=Preprocess(channels="bgr", mean=0.5,
                                                                  std=0.25))
    np.testing.assert_allclose(bgr.x[0], (pixels[..., ::-1] / 255.0 - 0.5) / 0.25, atol=1e-5)
    assert bgr.labels is None
    with pytest.raises(DataSourceError, match="channels=gray gives 1 channel"):
        resolve(tmp_path / "imgs", graph, preprocess=Preprocess(channels="gray"))


def test_npz_keys_and_shape_errors(sources, lenet):
    root = sources["root"]
    np.savez(root / "bad.npz", images=np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(DataSourceError, match=r"'x' \(or 'inputs'\).*\['images'\]"):
        resolve(root / "bad.npz", lenet)
    np.save(root / "nhwc.npy", np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(DataSourceError, match=r"looks NHWC: transpose"):
        resolve(root / "nhwc.npy", lenet)
    with pytest.raises(DataSourceError, match="not a data set name"):
        resolve("nosuchset", lenet)
    np.save(root / "pixels.npy", np.full((2, 1, 28, 28), 255.0, np.float32))
    with pytest.warns(UserWarning, match="looks like unnormalized pixels"):
        resolve(root / "pixels.npy", lenet)


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _report(capsys, *args):
    """`compiler report MODEL.onnx --json` runs the passes without building (fast)."""
    code, out, err = _cli(capsys, "report", LENET, "--json", "--seed", 1, *args)
    return code, (json.loads(out)["pass_stats"] if code == 0 else None), err


@pytest.mark.parametrize("kind", ["folder", "npz", "name"])
def test_each_source_into_quantize_and_prune_search(sources, capsys, kind):
    src = {"folder": sources["folder"], "npz": sources["root"] / "xy.npz",
           "name": "mnist"}[kind]
    extra = {"folder": ["--mean", MNIST_MEAN, "--std", MNIST_STD], "npz": ["--metric", "f1"],
             "name": []}[kind]
    code, stats, err = _report(capsys, "--passes", "prune-search{steps=2},quantize",
                               "--calibration", src, "--eval-data", src, "--eval-samples", N,
                               "--calibration-samples", N, "--budget", 0.1, *extra)
    assert code == 0, err
    ps, q = stats["prune-search"], stats["quantize"]
    # the trained LeNet scores high on real, correctly normalized data: the data arrived
    assert ps["pipeline_baseline"] >= 0.9, ps
    assert ps["drop"] <= 0.1 + 1e-9 and ps["max_drop"] == pytest.approx(0.1)
    assert q["quantized_layers"] == 5 and q["score"] >= 0.8, q
    assert q["budget_left"] == pytest.approx(0.1 - (ps["pipeline_baseline"] - q["score"]),
                                             abs=1e-4)


def test_npy_calibration_and_uint8_refused(sources, tmp_path, capsys):
    code, stats, err = _report(capsys, "--passes", "quantize", "--calibration",
                               sources["root"] / "x.npy")
    assert code == 0 and stats["quantize"]["quantized_layers"] == 5, err
    out = tmp_path / "bad"
    code, _, err = _cli(capsys, "compile", LENET, "-o", out, "--passes", "quantize",
                        "--calibration", sources["root"] / "u8.npy")
    assert code == 2 and "uint8 data (values 0..255)" in err and "/ 255 - mean" in err, err
    assert not out.exists()
    code, _, err = _report(capsys, "--passes", "prune-search",
                           "--calibration", sources["root"] / "x.npy")
    assert code == 2 and "--eval-data" in err, err  # the message names the CLI's fix
    code, _, err = _report(capsys, "--passes", "prune-search",
                           "--eval-data", sources["root"] / "x.npy")
    assert code == 2 and "has no labels" in err, err
    code, _, err = _report(capsys, "--passes", "quantize", "--budget", 0.01)
    assert code == 2 and "--budget needs --eval-data" in err, err


def test_train_data_reaches_finetune_and_unlabelled_data_is_refused(sources, capsys):
    pytest.importorskip("torch")
    code, stats, err = _report(capsys, "--passes", "finetune{max_batches=2,batch_size=4}",
                               "--train-data", sources["folder"], "--mean", MNIST_MEAN,
                               "--std", MNIST_STD, "--eval-data", sources["root"] / "xy.npz",
                               "--eval-samples", N)
    assert code == 0, err
    ft = stats["finetune"]
    assert ft["batches"] == 2 and len(ft["loss"]) == 1 and ft["loss"][0] > 0, ft
    assert ft["before"] >= 0.9, ft  # scored on the real, normalized images
    code, _, err = _report(capsys, "--passes", "finetune", "--train-data",
                           sources["root"] / "x.npy")
    assert code == 2 and "no labels to train on" in err, err
    code, _, err = _report(capsys, "--passes", "finetune")
    assert code == 2 and "--train-data" in err, err
    code, _, err = _report(capsys, "--passes", "finetune", "--train-samples", 5)
    assert code == 2 and "--train-samples needs --train-data" in err, err


def test_a_data_set_name_trains_on_its_train_split(lenet):
    assert resolve("mnist", lenet, role="train", limit=8).split == "train"
    assert resolve("mnist", lenet, role="calibration", limit=8).split == "calib"
    assert resolve("mnist:calib", lenet, role="train", limit=8).split == "calib"

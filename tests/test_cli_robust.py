"""Every CLI error path: one `error:` line, exit 2, no traceback, nothing written (#22)."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.artifact import _sha256
from conftest import model_path

CLI = [sys.executable, "-m", "compiler"]


def cli(*args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300, **kw)


def assert_user_error(done, message):
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr


def _save(model, path):
    onnx.save(model, str(path))
    return path


def relu_model(out_name="y", dims=(1, 4)):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))
    y = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(dims))
    g = helper.make_graph([helper.make_node("Relu", ["x"], [out_name])], "g", [x], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("a") / "tiny"
    compiler.compile(model_path("tinynet"), passes=["fold-bn"]).save(out)
    return out


def test_out_of_range_gather_index(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    idx = numpy_helper.from_array(np.array([7], np.int64), "idx")
    g = helper.make_graph([helper.make_node("Gather", ["x", "idx"], ["y"])], "g", [x], [y],
                          [idx])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                 tmp_path / "g.onnx")
    assert_user_error(cli("compile", path, "-o", tmp_path / "out"), "index out of range")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"garbage" * 100])
def test_empty_or_garbage_library(artifact, tmp_path, content):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    (bad / "model.so").write_bytes(content)
    assert_user_error(cli("run", bad), "checksum does not match")
    meta = json.loads((bad / "meta.json").read_text())  # a consistent but broken library
    meta["files"]["model.so"] = _sha256(bad / "model.so")
    (bad / "meta.json").write_text(json.dumps(meta))
    assert_user_error(cli("run", bad), "cannot be loaded")


def test_malformed_meta_json(artifact, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(artifact, bad)
    (bad / "meta.json").write_text('{"format_version": 3, "target": ')
    assert_user_error(cli("run", bad), "corrupt metadata")


def test_bad_input_npy_and_missing_save_folder(artifact, tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    assert_user_error(cli("run", artifact, "--input", f"input={bad}"), "not a readable .npy")
    assert_user_error(cli("run", artifact, "--input", f"nosuch={bad}"), "has no input 'nosuch'")
    out = tmp_path / "missing" / "outs"
    done = cli("run", artifact, "--save", out)
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("*.npy"))) == 1


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/robust_abs_escape"])
def test_output_names_never_leave_the_save_folder(tmp_path, name):
    out = tmp_path / "deep" / "er"
    art = tmp_path / "art"
    compiler.compile(_save(relu_model(name), tmp_path / "m.onnx")).save(art)
    done = cli("run", art, "--save", out)
    assert done.returncode == 0, done.stderr
    saved = list(out.iterdir())
    assert len(saved) == 1 and saved[0].suffix == ".npy"
    assert not (tmp_path / "escaped.npy").exists() and not (tmp_path / "escaped").exists()
    assert not list(tmp_path.glob("*.npy"))
    import os
    assert not os.path.exists("/tmp/robust_abs_escape.npy")


def test_zero_input_shape_keeps_the_previous_artifact(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                 tmp_path / "dyn.onnx")
    out = tmp_path / "out"
    assert cli("compile", path, "-o", out, "--input-shape", "x=2,4").returncode == 0
    before = (out / "meta.json").read_text()
    for shape in ("x=0,4", "x=-1,4", "x=a,4"):
        assert_user_error(cli("compile", path, "-o", out, "--input-shape", shape),
                          "--input-shape")
    assert (out / "meta.json").read_text() == before
    assert cli("run", out).returncode == 0


def test_duplicated_pass_option_and_tracker_for_host(artifact, tmp_path):
    assert_user_error(cli("compile", model_path("tinynet"), "-o", tmp_path / "o",
                          "--passes", "prune{ratio=0.5,ratio=0.2}"), "given twice")
    assert_user_error(cli("run", artifact, "--tracker", "127.0.0.1:9190"),
                      "--tracker/--key do not apply")


def test_save_destination_checked_before_building(tmp_path):
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    assert_user_error(cli("compile", model_path("tinynet"), "-o", foreign),
                      "not a compiled model")
    assert (foreign / "thesis.tex").read_text() == "years of work"
    file = tmp_path / "file"
    file.write_text("x")
    assert_user_error(cli("compile", model_path("tinynet"), "-o", file / "out"),
                      "not a directory")


def test_huge_input_is_a_clear_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                 tmp_path / "dyn.onnx")
    done = cli("compile", path, "-o", tmp_path / "o", "--input-shape", "x=1000000000000,4")
    assert_user_error(done, "memory")
    assert not (tmp_path / "o").exists()


def test_broken_pipe_is_quiet():
    done = subprocess.run(" ".join(CLI + ["show", str(model_path("resnet_tiny"))]) + " | head -1",
                          shell=True, capture_output=True, text=True, timeout=300)
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr

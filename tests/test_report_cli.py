"""The command line's outputs for people and other tools (issue 21, part 2): the HTML
report opened in a real headless browser, standard ONNX that onnxruntime opens, and a
quiet ``run`` (no TVM native warnings).

One quantized host artifact is built for the module (the integer build is the slow
part, ~15 s) from a tiny model made here, through a pipeline whose passes record what
the page plots: t-sensitive's curves, prune-search's probes, sizes per stage.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
LONG_NAME = "features.block_one.conv_with_a_rather_long_name_0"  # > 32 characters


def tiny_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((0.3 * rng.standard_normal((8, 1, 3, 3))).astype(np.float32), "w1"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b1"),
             numpy_helper.from_array((0.1 * rng.standard_normal((10, 8 * 6 * 6))).astype(np.float32), "w2"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b2")]
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c"], name=LONG_NAME,
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], name="classifier.fc",
                              transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """The command in a fresh process (what a user's shell sees on stdout/stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "compiler", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)


def _main(capsys, *args: str) -> tuple[int, str, str]:
    """The command in this process (cheaper: TVM is imported once)."""
    from compiler.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """(directory, CompiledModel, input) of a quantized, pruned tiny model on host."""
    import compiler
    from compiler.batching import with_batch_size
    from compiler.interpreter import Interpreter
    from compiler.onnx_io import import_model

    tmp = tmp_path_factory.mktemp("report")
    src = tiny_model(tmp / "tiny.onnx")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    ref = Interpreter(with_batch_size(import_model(src), 64)).run({"input": x})[0].argmax(1)

    def agreement(graph):  # top-1 agreement with the float model on seeded inputs
        out = Interpreter(with_batch_size(graph, 64)).run({"input": x})[0]
        return float((out.argmax(1) == ref).mean())

    cm = compiler.compile(src, target="host", calibration_data=[{"input": x[:16]}],
                          evaluate=agreement,
                          passes=["cleanup", "t-sensitive{threshold=0.2,ratios=[0.25;0.5]}",
                                  "prune-search{max_drop=0.2,steps=3}", "quantize"])
    out = cm.save(tmp / "art")
    return out, cm, x[:1]


def test_artifact_model_onnx_is_standard_qdq_and_matches_within_one_lsb(artifact):
    import onnxruntime as ort

    from compiler.artifact import CompiledModel

    directory, _, x = artifact
    model = onnx.load(directory / "model.onnx")
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (directory / "model.q.onnx").is_file()  # the exact integer graph, for load()
    loaded = CompiledModel.load(directory)
    ours = loaded.run([x])[0]
    theirs = ort.InferenceSession(str(directory / "model.onnx")).run(None, {"input": x})[0]
    producer = loaded.graph.outputs[0].producer
    assert producer.op_type == "Dequantize"
    lsb = float(producer.attrs["scale"])
    assert np.abs(ours - theirs).max() <= lsb * 1.001


def test_run_on_a_saved_model_prints_no_tvm_warnings(artifact):
    directory, _, _ = artifact
    result = _cli("run", str(directory))
    assert result.returncode == 0, result.stderr
    assert "logits: shape=[1, 10]" in result.stdout
    assert "Scope Loaded" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_native_stderr_filter_drops_tvm_noise_and_forwards_the_rest(capfd, caplog):
    import logging

    from compiler.logs import filtered_native_stderr

    with caplog.at_level(logging.DEBUG, logger="compiler.native"):
        with filtered_native_stderr():
            os.write(2, b"[18:14:33] /project/src/runtime/vm/executable.cc:340: Warning: "
                        b"Scope Loaded:\n" * 3 + b"a real native problem\n")
    assert "Scope Loaded" not in capfd.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["a real native problem"]
    assert any("3 lines of TVM native logging" in r.getMessage() for r in caplog.records)


def test_export_onnx_command_and_full_layer_names_in_the_text_report(artifact, tmp_path,
                                                                      capsys):
    import onnxruntime as ort

    directory, _, x = artifact
    out = tmp_path / "m.onnx"
    code, stdout, _ = _main(capsys, "export-onnx", str(directory), "-o", str(out))
    assert code == 0 and "QDQ" in stdout
    ort.InferenceSession(str(out)).run(None, {"input": x})
    code, _, _ = _main(capsys, "export-onnx", str(directory), "-o", str(tmp_path / "q.onnx"),
                       "--integer")
    assert code == 0
    assert "q" in {o.domain for o in onnx.load(tmp_path / "q.onnx").opset_import}
    before = out.read_bytes()
    code, _, err = _main(capsys, "export-onnx", str(out), "-o", str(out))
    assert code == 2 and "input model" in err and out.read_bytes() == before
    code, stdout, _ = _main(capsys, "report", str(directory))
    assert code == 0 and LONG_NAME in stdout  # not cut at 32 characters


def test_html_report_renders_in_headless_chromium(artifact, tmp_path, capsys):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    import matplotlib.image

    directory, cm, _ = artifact
    page = tmp_path / "report.html"
    code, _, err = _main(capsys, "report", str(directory), "--html", str(page))
    assert code == 0, err
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    assert text.count("data:image/png;base64,") >= 3  # sizes, sensitivity, search
    for node in cm.graph.topo_order():  # a table row per layer, full names
        assert f'<td class="l">{node.name}</td>' in text
    assert LONG_NAME in text and "Pass history" in text and "prune-search" in text
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=90, check=False)
    assert shot.is_file() and shot.stat().st_size > 0
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    assert float(pixels[..., :3].std()) > 0.05  # text, tables and plots, not a blank page


def test_progress_bars_only_on_a_terminal_and_never_with_no_progress(monkeypatch):
    import io

    from compiler import logs

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("COMPILER_NO_PROGRESS", raising=False)
    monkeypatch.setattr(logs, "_progress_override", None)
    assert logs.progress_enabled(Tty()) and not logs.progress_enabled(io.StringIO())
    monkeypatch.setenv("COMPILER_NO_PROGRESS", "1")
    assert not logs.progress_enabled(Tty())
    monkeypatch.delenv("COMPILER_NO_PROGRESS")
    logs.set_progress(False)  # what --no-progress does
    try:
        assert not logs.progress_enabled(Tty())
        assert logs.progress(range(3), desc="x").disable
    finally:
        logs.set_progress(None)

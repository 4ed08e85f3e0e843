"""compile() -> CompiledModel end to end on TVM, save/load, the CLI, and bad calls."""
import struct
import subprocess
import sys

import numpy as np
import pytest

import compiler
from compiler import CompiledModel, InputError, ModelImportError, PassOptionError
from conftest import (REAL_MODELS, SMALL_MODELS, assert_close, model_input, model_path,
                      ort_run)
from targets import TargetUnavailableError, UnknownTargetError


@pytest.mark.parametrize("name", SMALL_MODELS + REAL_MODELS)
def test_compiled_model_matches_onnxruntime(name):
    path = model_path(name)
    cm = compiler.compile(path, target="host", passes=["fold-bn", "cleanup"])
    x = model_input(name)
    expected = ort_run(path, {cm.input_names[0]: x})
    for got, exp in zip(cm.run([x]), expected):
        assert_close(got, exp, what=f"{name} TVM")
    assert not cm.graph.find("BatchNormalization")


def test_save_load_round_trip(tmp_path):
    path = model_path("tinynet")
    cm = compiler.compile(path, passes=["fold-bn"])
    x = model_input("tinynet")
    out = cm.save(tmp_path / "tiny")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.onnx", "model.so"]
    loaded = CompiledModel.load(out)
    np.testing.assert_array_equal(loaded.run([x])[0], cm.run([x])[0])
    assert loaded.report().stats.macs == cm.report().stats.macs
    assert_close(ort_run(cm.export_onnx(tmp_path / "opt.onnx"), {cm.input_names[0]: x})[0],
                 cm.run([x])[0])


def test_report_counts_macs_params_and_memory():
    cm = compiler.compile(model_path("resnet_tiny"), passes=["fold-bn"], build=False)
    report = cm.report()
    conv_layers = [l for l in report.stats.layers if l.op_type == "Conv"]
    first = conv_layers[0]
    # stem conv 3->C, 3x3, 32x32 output: MACs = out elements * 3*3*3
    c = first.output_shape[1]
    assert first.macs == c * 32 * 32 * 27
    assert report.stats.macs == sum(l.macs for l in report.stats.layers)
    assert report.original.params > report.stats.params  # BN parameters folded away
    assert report.stats.peak_activation_bytes >= 3 * 32 * 32 * 4
    text = str(report)
    assert "MACs" in text and "peak activations" in text and first.name[:31] in text


def test_run_checks_inputs():
    cm = compiler.compile(model_path("tinynet"))
    with pytest.raises(InputError, match="expects \\(1, 1, 28, 28\\)"):
        cm.run([np.zeros((1, 28, 28), np.float32)])


def test_bad_calls_fail_before_any_work(tmp_path):
    with pytest.raises(UnknownTargetError, match="unknown target 'gpu'; registered targets: "
                                                 "cortex-a72, fpga-sim, host"):
        compiler.compile(model_path("tinynet"), target="gpu")
    with pytest.raises(PassOptionError, match="unknown pass 'fold-bnn'"):
        compiler.compile(model_path("tinynet"), passes=["fold-bnn"])
    with pytest.raises(ModelImportError, match="not found"):
        compiler.compile(tmp_path / "missing.onnx")


def test_cli_compile_run_report(tmp_path):
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "compiler"]
    done = subprocess.run(cli + ["compile", str(model_path("tinynet")), "-o", str(out),
                                 "--passes", "fold-bn,cleanup"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "saved" in done.stdout and (out / "model.so").exists()
    done = subprocess.run(cli + ["run", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and "shape=[1, 10]" in done.stdout, done.stderr
    done = subprocess.run(cli + ["report", str(out)], capture_output=True, text=True)
    assert done.returncode == 0 and "MACs" in done.stdout
    done = subprocess.run(cli + ["benchmark", str(out), "--repeat", "3", "--profile", "5"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "share" in done.stdout and "conv2d" in done.stdout, (
        done.stdout + done.stderr)


@pytest.mark.parametrize("args, message", [
    (["--passes", "prune{ratio=2}"], "ratio=2.0 must be in [0, 1)"),
    (["--target", "tpu"], "unknown target 'tpu'"),
    (["--passes", "fold-bn{x=1}"], "pass 'fold-bn' has no option 'x'"),
])
def test_cli_errors_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "compiler", "compile",
                           str(model_path("tinynet")), "-o", str(out)] + args,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cortex_a72_build_is_aarch64_code(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPILER_BOARD", "off")  # no embedded board: running must say why
    cm = compiler.compile(model_path("tinynet"), target="cortex-a72")
    out = cm.save(tmp_path / "a72")
    elf = (out / "model.so").read_bytes()[:20]
    assert elf[:4] == b"\x7fELF"
    assert struct.unpack("<H", elf[18:20])[0] == 183  # EM_AARCH64
    with pytest.raises(TargetUnavailableError, match="needs a cortex-a72 device"):
        cm.run([model_input("tinynet")])


def test_quantized_model_saves_and_loads_exactly(tmp_path):
    x = model_input("resnet_tiny")
    calib = [{"input": model_input("resnet_tiny", seed=s)} for s in range(4)]
    cm = compiler.compile(model_path("resnet_tiny"), passes=["fold-bn", "quantize{bits=8}"],
                          calibration_data=calib)
    assert {n.domain for n in cm.graph.topo_order()} >= {"q"}
    loaded = CompiledModel.load(cm.save(tmp_path / "q"))
    np.testing.assert_array_equal(loaded.run([x])[0], cm.run([x])[0])
    report = cm.report()
    assert report.original.param_bytes > 3.5 * report.stats.param_bytes  # int8 weights


def test_tune_on_a_target_without_a_tuner_fails_before_any_work(tmp_path):
    """`Target.tune_options` is the contract: the base class refuses, by name, before import."""
    from targets import Target, TuningUnsupportedError

    missing = tmp_path / "never-read.onnx"
    with pytest.raises(TuningUnsupportedError, match="target 'plain' does not support auto-tuning"):
        compiler.compile(missing, target=Target(name="plain"), tune=4)

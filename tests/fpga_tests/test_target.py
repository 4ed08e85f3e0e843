"""The ``fpga-sim`` target end to end: bit-exact outputs through the RPC path, SIMULATED
timings, the artifact (library + design), the report, and every bad input of issue 18.

The simulator runs as a real TVM RPC server (`targets.fpga_sim.server`) registered at a
tracker this module starts in its own directory, so the shared emulated board is never
touched.  References we did not write for this target: the interpreter
(`compiler.Interpreter`) and the host TVM build (`targets.host`).
"""
from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler import PassContext
from compiler.artifact import CompiledModel
from compiler.folding import infer_node
from compiler.interpreter import Interpreter
from compiler.ir import Graph
from targets import TargetUnavailableError, get_target
from targets.board import _free_port, _kill_group
from targets.fpga_sim.options import FpgaSimError
from targets.fpga_sim.server import SIM_KEY, simulated_seconds, spawn_server
from targets.fpga_sim.target import FpgaSimTarget, design_file
from targets.tvm.rpc import RemoteSpec, wait_for_key

ROOT = Path(__file__).resolve().parents[2]
_CACHE: dict = {}


def _quantized(name: str, spec: str) -> Graph:
    key = (name, spec)
    if key not in _CACHE:
        g = compiler.import_model(ROOT / "baselines" / f"{name}.onnx")
        rng = np.random.default_rng(0)
        calib = [{g.inputs[0].name:
                  rng.random((4,) + tuple(g.inputs[0].shape[1:]), dtype=np.float32)}]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CACHE[key] = compiler.optimize(g, ["cleanup", "fold-bn", spec],
                                            ctx=PassContext(calibration_data=calib))[1]
    return _CACHE[key]


def _inputs(graph: Graph, n: int = 2, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = tuple(graph.inputs[0].shape)
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tracker and one simulator server of our own; yields the tracker address."""
    run = tmp_path_factory.mktemp("fpga-sim-run")
    port = _free_port()
    tracker = subprocess.Popen(
        [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
         str(port), "--port-end", str(port + 1)], stdout=open(run / "tracker.log", "wb"),
        stderr=subprocess.STDOUT, start_new_session=True)
    server = None
    try:
        deadline = time.monotonic() + 30
        while True:  # the server gives up on a tracker that is not listening yet
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the test tracker did not start"
                time.sleep(0.2)
        server = spawn_server(port, run)
        wait_for_key(RemoteSpec("127.0.0.1", port, SIM_KEY), timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        if server is not None:
            _kill_group(server.pid)
        _kill_group(tracker.pid)


def _target(sim: str, **options) -> FpgaSimTarget:
    return get_target("fpga-sim").configure(tracker=sim, **options)


def _check_bit_exact(sim: str, name: str, spec: str, **options) -> CompiledModel:
    graph = _quantized(name, spec)
    cm = compiler.compile(graph, target=_target(sim, **options), passes=[])
    host = get_target("host").build(cm.graph)
    from targets.tvm.build import run as host_run

    for x in _inputs(cm.graph):
        got = cm.run([x])
        want = Interpreter(cm.graph).run([x])
        assert len(got) == len(want)
        for g, w, h in zip(got, want, host_run(host, [x])):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)   # vs the interpreter
            np.testing.assert_array_equal(g, h)   # vs the host build
    return cm


@pytest.mark.parametrize("spec", ["quantize{bits=8,act_bits=8}", "quantize{bits=2,act_bits=4}",
                                  "quantize{bits=1,act_bits=8}"])
def test_lenet5_bit_exact_through_rpc(sim, spec):
    cm = _check_bit_exact(sim, "lenet5_mnist", spec)
    assert cm.graph.inputs[0].shape == (1, 1, 28, 28)


@pytest.mark.slow
@pytest.mark.parametrize("name,spec", [
    ("plaincnn_fmnist", "quantize{bits=4,act_bits=4}"), ("vgg_fmnist", "quantize{bits=8,act_bits=8}"),
    ("resnet_fmnist", "quantize{bits=4,act_bits=4}"), ("mobilenet_fmnist", "quantize{bits=8,act_bits=8}"),
    ("unet_seg", "quantize{bits=4,act_bits=4}")])
def test_every_shipped_baseline_bit_exact_through_rpc(sim, name, spec):
    # (lenet5_mnist: above, with binary weights too); xczu7ev fits all of them at 8/8.
    # One bit width per model (20-60 s each through the simulator): both widths and every
    # architecture are covered without the whole product.
    _check_bit_exact(sim, name, spec, part="xczu7ev")


def test_measure_returns_the_simulators_time_labelled_simulated(sim):
    graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
    tgt = _target(sim, fclk_mhz=150)
    cm = compiler.compile(graph, target=tgt, passes=[])
    design = tgt.design(cm.graph)
    t = cm.benchmark(repeat=3)
    assert t.simulated and not t.emulated and len(t.samples) == 3
    assert "SIMULATED" in str(t) and "150 MHz" in str(t)
    assert t.median == pytest.approx(design.latency_s, rel=1e-12)
    t4 = cm.benchmark(repeat=2, number=4)  # 4 frames back to back: (L + 3 II) / 4 each
    assert t4.median == pytest.approx(design.batch_latency_s(4) / 4, rel=1e-12)
    assert t4.median < t.median
    assert "latency (SIMULATED)" in str(cm.report())


def test_simulated_seconds_is_latency_plus_batch_times_ii():
    r = simulated_seconds({"ii_cycles": 100, "latency_cycles": 500, "fclk_mhz": 200.0}, 3)
    assert r["cycles"] == 700 and r["seconds"] == pytest.approx(700 / 200e6)
    with pytest.raises(ValueError, match="not an fpga-sim design"):
        simulated_seconds({"ii_cycles": 1}, 1)


def test_artifact_keeps_the_folding_and_runs_after_load(sim, tmp_path):
    graph = _quantized("lenet5_mnist", "quantize{bits=2,act_bits=4}")
    cm = compiler.compile(graph, target=_target(sim, part="xczu3eg", target_fps=2000),
                          passes=[])
    out = cm.save(tmp_path / "m")
    meta = json.loads((out / "meta.json").read_text())
    saved = json.loads(design_file(out / meta["library"]).read_text())["design"]
    assert saved["part"] == "xczu3eg" and saved["folding"] == cm.built.design["folding"]
    assert saved["folding_mode"].startswith("SetFolding")
    back = CompiledModel.load(out)
    assert back.built.design == cm.built.design
    back.target = back.target.with_remote(sim)
    x = _inputs(graph, 1)[0]
    np.testing.assert_array_equal(back.run([x])[0], Interpreter(back.graph).run([x])[0])
    assert back.report(json=True)["target_report"]["folding"] == saved["folding"]


def test_report_has_every_layer_column_totals_fit_and_bottleneck(sim):
    graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
    cm = compiler.compile(graph, target=_target(sim), passes=[])
    d = cm.report(json=True)["target_report"]
    assert d["timing"] == "SIMULATED"
    layer_keys = {"node", "unit", "MH", "MW", "PE", "SIMD", "cycles", "LUT", "BRAM18", "URAM",
                  "DSP", "weight_bits", "acc_bits"}
    assert d["layers"] and all(layer_keys <= set(l) for l in d["layers"])
    assert {"MVAU"} <= {l["unit"] for l in d["layers"]}
    assert d["ii_cycles"] == max(l["cycles"] for l in d["layers"])
    assert d["fps"] == pytest.approx(d["fclk_mhz"] * 1e6 / d["ii_cycles"])
    assert d["bottleneck"] in {l["node"] for l in d["layers"]}
    assert isinstance(d["fits"], bool) and set(d["utilization_pct"]) >= {"LUT", "BRAM_18K"}
    text = str(cm.report())
    for word in ("MH", "SIMD", "BRAM18", "% of part", "fits the budget", "bottleneck", "FPS"):
        assert word in text
    json.dumps(cm.report(json=True))  # serialisable as is


def test_cli_report_json_of_a_saved_model(sim, tmp_path):
    graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
    out = compiler.compile(graph, target=_target(sim), passes=[]).save(tmp_path / "m")
    proc = subprocess.run([sys.executable, "-m", "compiler", "report", str(out), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["target"] == "fpga-sim" and d["target_report"]["layers"]


# -- bad input: a clear error and no artifact --------------------------------------

def _compile_and_save(graph, target, out: Path):
    cm = compiler.compile(graph, target=target, passes=[], verify=False)
    cm.save(out)


def test_float_graph_is_refused_before_any_artifact(tmp_path):
    g = compiler.import_model(ROOT / "baselines" / "lenet5_mnist.onnx")
    with pytest.raises(FpgaSimError, match="run the 'quantize' pass first"):
        _compile_and_save(g, FpgaSimTarget(name="fpga-sim"), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_op_without_a_stage_is_refused_naming_op_and_node(tmp_path):
    g = Graph("t")
    x = g.add_input("x", (1, 4), np.float32)
    q = g.add_node("Quantize", [x], {"scale": 0.1, "zero_point": 0, "qmin": -128, "qmax": 127,
                                     "bits": 8}, name="quant", domain="q")
    infer_node(q)
    t = g.add_node("Transpose", [q.outputs[0]], {"perm": [1, 0]}, name="my_t")
    infer_node(t)
    g.outputs.append(t.outputs[0])
    with pytest.raises(FpgaSimError, match=r"op Transpose \(node 'my_t'\).*supported: q\.Quan"):
        _compile_and_save(g, get_target("fpga-sim"), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_folding_breaking_divisibility_names_layer_and_sizes(tmp_path):
    graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
    conv = next(n.name for n in graph.topo_order() if n.op_type == "Conv")
    tgt = get_target("fpga-sim").configure(folding={conv: {"PE": 5, "SIMD": 1}})
    with pytest.raises(FpgaSimError, match=rf"{re.escape(conv)}.*MH=6 % PE=5"):
        _compile_and_save(graph, tgt, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_design_that_fits_no_folding_is_refused(tmp_path):
    graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
    tiny = {"LUT": 500, "FF": 1000, "BRAM_18K": 1, "URAM": 0, "DSP": 0}
    with pytest.raises(FpgaSimError, match="(?i)fit"):
        _compile_and_save(graph, get_target("fpga-sim").configure(part=tiny), tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_unknown_part_and_option_are_refused_at_configure():
    with pytest.raises(FpgaSimError, match="unknown part 'xc9z999'"):
        get_target("fpga-sim").configure(part="xc9z999")
    with pytest.raises(FpgaSimError, match="unknown fpga-sim option"):
        get_target("fpga-sim").configure(clock=3)


def test_cli_bad_target_option_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "m"
    proc = subprocess.run([sys.executable, "-m", "compiler", "compile",
                           str(ROOT / "baselines" / "lenet5_mnist.onnx"), "-o", str(out),
                           "--target", "fpga-sim", "--target-option", "part=xc9z999"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "unknown part 'xc9z999'" in proc.stderr
    assert not out.exists()


@pytest.mark.timeout(120)
def test_unreachable_simulator_is_a_clear_error_not_a_hang(sim):
    graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
    cm = compiler.compile(graph, target=_target(sim), passes=[])
    x = _inputs(graph, 1)
    closed = f"127.0.0.1:{_free_port()}"                 # no tracker listens there
    cm.target = cm.target.with_remote(closed)
    with pytest.raises(TargetUnavailableError, match=closed):
        cm.run(x)
    cm.target = cm.target.with_remote(sim, "fpga-sim-nobody")  # tracker up, no such server
    with pytest.raises(TargetUnavailableError, match="fpga-sim-nobody"):
        cm.run(x)


def test_embedded_default_is_off_gives_a_clear_error(monkeypatch):
    monkeypatch.delenv("COMPILER_FPGA_TRACKER", raising=False)
    monkeypatch.setenv("COMPILER_BOARD", "off")
    with pytest.raises(TargetUnavailableError, match="fpga-sim.*tracker"):
        FpgaSimTarget(name="fpga-sim").remote()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_embedded_default_starts_the_simulator_at_the_board_tracker(tmp_path, monkeypatch):
    """On demand in a board directory of our own (py/site linked to the installed board):
    the board's start brings the simulator up under key fpga-sim at the same tracker."""
    from targets import board

    shared = Path.home() / ".cache" / "embedded-cnn-compiler" / "board"
    if not board.installed(shared):
        pytest.skip("the emulated board is not installed")
    d = tmp_path / "board"
    d.mkdir()
    for sub in ("py", "site"):
        os.symlink(shared / sub, d / sub)
    monkeypatch.setenv("COMPILER_BOARD_DIR", str(d))
    monkeypatch.delenv("COMPILER_FPGA_TRACKER", raising=False)
    monkeypatch.delenv("COMPILER_BOARD", raising=False)
    try:
        spec = FpgaSimTarget(name="fpga-sim").remote()
        state = json.loads((d / "run" / "state.json").read_text())
        assert spec.key == SIM_KEY and spec.port == state["tracker_port"]
        graph = _quantized("lenet5_mnist", "quantize{bits=8,act_bits=8}")
        cm = compiler.compile(graph, target="fpga-sim", passes=[])
        x = _inputs(graph, 1)[0]
        np.testing.assert_array_equal(cm.run([x])[0], Interpreter(cm.graph).run([x])[0])
    finally:
        board.stop()  # the board of OUR directory only

"""MetaSchedule auto-tuning: local and through the RPC tracker, database reuse, bad databases.

Budgets are tiny (a few trials on a one-conv model): these tests check the machinery
(trials measured, records stored and reused, outputs unchanged), not the speed-up.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import compiler  # noqa: E402
from compiler.cli import main as cli_main  # noqa: E402
from targets.tvm.tuning import DB_FORMAT, TuneOptions, load_database_file  # noqa: E402



def _conv_model(path: Path, c_in: int = 3, c_out: int = 8, size: int = 16,
                second_conv: bool = False) -> Path:
    """conv 3x3 + ReLU (+ a 1x1 conv c_out -> c_out: a second tuning task)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y" if not second_conv else "r"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    if second_conv:
        w2 = rng.standard_normal((c_out, c_out, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["r", "w2"], ["y"]))
        inits.append(numpy_helper.from_array(w2, "w2"))
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c_out, size, size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _x(size: int = 16, c_in: int = 3) -> dict:
    return {"x": np.random.default_rng(1).standard_normal((1, c_in, size, size)).astype(np.float32)}


def _close(a, b, tol=1e-4):
    for u, v in zip(a, b):
        assert np.max(np.abs(u - v)) <= tol * max(1.0, float(np.max(np.abs(v))))


@pytest.mark.slow
def test_local_tuning_then_database_reuse(tmp_path):
    model = _conv_model(tmp_path / "conv.onnx")
    db = tmp_path / "tune.json"
    plain = compiler.compile(model, target="host")
    t0 = time.monotonic()
    tuned = compiler.compile(model, target="host", tune={"trials": 8, "database": str(db),
                                                          "progress": False})
    first_s = time.monotonic() - t0
    st = tuned.tuning
    assert st["trials"] > 0 and st["trials_measured_ok"] > 0, st
    assert st["tasks_tuned"] == st["tasks"] >= 1 and st["database_status"] == "new"
    assert st["tasks_with_records"] == st["tasks"]
    _close(tuned.run(_x()), plain.run(_x()))
    data = json.loads(db.read_text())
    assert data["format"] == DB_FORMAT and len(data["targets"]) == 1

    t0 = time.monotonic()
    again = compiler.compile(model, target="host", tune={"trials": 8, "database": str(db),
                                                         "progress": False})
    second_s = time.monotonic() - t0
    st2 = again.tuning
    assert st2["trials"] == 0 and st2["tasks_tuned"] == 0, st2
    assert st2["tasks_from_database"] == st2["tasks"] == st["tasks"]
    _close(again.run(_x()), plain.run(_x()))
    assert second_s < first_s
    # stats travel with the saved model and show in the report
    loaded = compiler.CompiledModel.load(again.save(tmp_path / "m"))
    assert loaded.tuning["trials"] == 0 and "tuning" in str(loaded.report())


@pytest.mark.slow
def test_corrupt_database_is_set_aside_and_retuned(tmp_path):
    model = _conv_model(tmp_path / "conv.onnx", c_out=4, size=8)
    db = tmp_path / "tune.json"
    db.write_text('{"format": "embedded-cnn-compiler/metaschedule-db", "targets": {tru')
    cm = compiler.compile(model, target="host", tune={"trials": 2, "database": str(db),
                                                      "progress": False})
    assert cm.tuning["database_status"] == "corrupt" and cm.tuning["trials"] > 0
    assert (tmp_path / "tune.json.bad").exists()
    assert json.loads(db.read_text())["format"] == DB_FORMAT  # rewritten whole
    _close(cm.run(_x(8)), compiler.compile(model, target="host").run(_x(8)))


def test_foreign_or_damaged_database_files(tmp_path):
    db = tmp_path / "db.json"
    db.write_text(json.dumps({"format": DB_FORMAT, "version": 1, "tvm": "0.1.0",
                              "targets": {"llvm": {"workloads": ["x"], "records": ["y"]}}}))
    with pytest.warns(UserWarning, match="foreign"):
        _, section, status = load_database_file(db, "llvm")
    assert status == "foreign" and section == {"workloads": [], "records": []}
    assert (tmp_path / "db.json.bad").exists() and not db.exists()
    db.write_text("[1, 2, 3]")
    with pytest.warns(UserWarning, match="corrupt"):
        assert load_database_file(db, "llvm")[2] == "corrupt"
    assert load_database_file(tmp_path / "missing.json", "llvm")[2] == "new"


@pytest.mark.slow
def test_time_budget_stops_tuning_and_keeps_records(tmp_path):
    # a trial budget far beyond what 20 s allow: the time budget ends the tuning, the
    # records measured so far are stored and used, the outputs are unchanged.  Two
    # tasks, so the deadline falls in the gradient scheduler's phase (where stopping
    # by terminating tasks from a callback crashed MetaSchedule)
    model = _conv_model(tmp_path / "conv.onnx", c_out=8, size=16, second_conv=True)
    db = tmp_path / "tune.json"
    cm = compiler.compile(model, target="host", tune={
        "trials": 5000, "max_seconds": 20, "trials_per_iter": 4, "database": str(db),
        "progress": False})
    st = cm.tuning
    assert st["stopped_by_time"] is True, st
    # (no wall-clock bound here: a loaded machine stretches every batch; the trial
    # count shows the budget that stopped the search)
    assert 0 < st["trials"] < 500 and st["tasks_with_records"] >= 1, st
    # the tasks the budget did not reach are scheduled by default, not left naive
    assert st["kernels_unscheduled"] == 0, st
    assert st["kernels_default_scheduled"] >= st["tasks"] - st["tasks_with_records"], st
    _close(cm.run(_x()), compiler.compile(model, target="host").run(_x()))
    assert json.loads(db.read_text())["format"] == DB_FORMAT


def test_deadline_passed_before_the_search_measures_nothing(tmp_path):
    # the deadline passes while the tasks are extracted: nothing is measured (no task
    # gets a late batch past the budget); every kernel the database has no record for
    # gets the default schedule instead of running as a naive loop nest; outputs
    # unchanged
    model = _conv_model(tmp_path / "conv.onnx", c_out=8, size=16, second_conv=True)
    cm = compiler.compile(model, target="host", tune={
        "trials": 5000, "max_seconds": 0.01, "progress": False})
    st = cm.tuning
    assert st["stopped_by_time"] is True, st
    assert st["trials"] == 0 and st["tasks_with_records"] == 0 and st["tasks"] > 1, st
    assert st["kernels_default_scheduled"] >= st["tasks"], st
    assert st["kernels_unscheduled"] == 0, st
    _close(cm.run(_x()), compiler.compile(model, target="host").run(_x()))


@pytest.mark.slow
def test_records_reach_the_database_while_tuning(tmp_path, monkeypatch):
    # the build after tuning fails (as a kill would stop it): the records measured
    # so far were already merged into the file by the checkpoints
    from targets.tvm import tuning

    def broken_build(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(tuning, "compile_tuned", broken_build)
    model = _conv_model(tmp_path / "conv.onnx", c_out=4, size=8)
    db = tmp_path / "tune.json"
    with pytest.raises(RuntimeError, match="interrupted"):
        compiler.compile(model, target="host", tune={
            "trials": 4, "trials_per_iter": 2, "checkpoint_seconds": 0,
            "database": str(db), "progress": False})
    records = next(iter(json.loads(db.read_text())["targets"].values()))["records"]
    assert len(records) >= 2


def test_tune_options_are_checked_before_work(tmp_path):
    with pytest.raises(ValueError, match="unknown tune option"):
        compiler.compile(tmp_path / "missing.onnx", target="host", tune={"trails": 8})
    with pytest.raises(ValueError, match="non-negative"):
        TuneOptions.from_any({"trials": -1})
    assert TuneOptions.from_any(16).trials == 16
    for bad in (0, -5, "10"):
        with pytest.raises(ValueError, match="max_seconds"):
            TuneOptions.from_any({"trials": 8, "max_seconds": bad})


@pytest.mark.slow
def test_rpc_tuning_on_the_emulated_board(board, tmp_path):
    model = _conv_model(tmp_path / "conv.onnx", c_out=4, size=8)
    db = tmp_path / "a72.json"
    cm = compiler.compile(model, target="cortex-a72",
                          tune={"trials": 4, "database": str(db), "progress": False})
    st = cm.tuning
    assert st["runner"].startswith("rpc EMULATED") and st["emulated"] is True
    assert st["trials"] > 0 and st["trials_measured_ok"] > 0, st
    host = compiler.compile(model, target="host")
    _close(cm.run(_x(8)), host.run(_x(8)))
    # the same database serves the next compile without touching the board's runner
    again = compiler.compile(model, target="cortex-a72",
                             tune={"trials": 4, "database": str(db), "progress": False})
    assert again.tuning["trials"] == 0


def test_cli_compile_tuning_flags(tmp_path, capsys):
    # --tune 0: the tuning path (tasks, database file, stats in meta.json) without trials
    model = _conv_model(tmp_path / "conv.onnx", c_out=4, size=8)
    out, db = tmp_path / "out", tmp_path / "db.json"
    assert cli_main(["compile", str(model), "-o", str(out), "--tune", "0",
                     "--tune-db", str(db)]) == 0
    assert json.loads(db.read_text())["format"] == DB_FORMAT
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tuning"]["trials"] == 0 and meta["tuning"]["tasks"] >= 1

"""The tuning database shared by all models (``database="default"``, the CLI's default):
a layer tuned for one model is not tuned again for another that has the same layer; and
the default budget of ``--tune`` without a number."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import compiler  # noqa: E402
from compiler.cli import build_parser  # noqa: E402
from targets.tvm.tuning import DEFAULT_BUDGET, TuneOptions, default_database_path  # noqa: E402
from test_tuning import _conv_model  # noqa: E402


def _record_every_task(model: Path, db_path: Path) -> None:
    """A record (a trace that leaves the kernel unscheduled) for every tuning task of ``model``'s
    host build, written to the database file as tuning writes it: what a tuning of the
    first model leaves behind, without minutes of measurements."""
    import tempfile

    import tvm
    from tvm import relax, s_tir
    from tvm.s_tir import meta_schedule as ms

    from targets import get_target
    from targets.tvm.build import make_target
    from targets.tvm.layout import apply_layout
    from targets.tvm.tuning import _lines, _target_key, merge_into_database

    host = get_target("host")
    _, graph, _ = compiler.optimize(model, list(host.default_passes))
    mod, _ = apply_layout(host.lower(graph), host._layout(True, graph), host.target_dict())
    target = make_target(host.target_dict())
    tasks = ms.relax_integration.extract_tasks(relax.get_pipeline("zero")(mod), target)
    with tempfile.TemporaryDirectory() as work:
        wl_file, rec_file = f"{work}/wl.json", f"{work}/rec.json"
        db = ms.database.JSONDatabase(wl_file, rec_file, allow_missing=True)
        for task in tasks:
            workload = db.commit_workload(task.dispatched[0])
            sch = s_tir.Schedule(task.dispatched[0])  # (a record with an empty trace is
            sch.get_loops(sch.get_child_blocks(sch.get_sblock("root"))[0])  # never returned)
            trace = sch.trace
            args = ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])
            db.commit_tuning_record(ms.database.TuningRecord(trace, workload, [1e-3], target,
                                                             args))
        merge_into_database(db_path, _target_key(target), _lines(wl_file), _lines(rec_file))
    assert tvm is not None and db_path.exists()


@pytest.mark.slow
def test_second_model_reuses_the_shared_layer(tmp_path, monkeypatch):
    shared = tmp_path / "cache" / "tuning-db.json"
    monkeypatch.setenv("COMPILER_TUNE_DB", str(shared))
    assert default_database_path() == shared
    first = _conv_model(tmp_path / "a.onnx", c_out=8, size=8)
    # the same conv 3x3 (3 -> 8, 8x8) + ReLU, then a 1x1 conv: one more task
    second = _conv_model(tmp_path / "b.onnx", c_out=8, size=8, second_conv=True)
    _record_every_task(first, shared)
    b = compiler.compile(second, target="host", verify=False,
                         tune={"trials": 0, "database": "default", "progress": False})
    st = b.tuning
    # the shared layer (its conv kernel, and the input's pack) comes from the first
    # model's records; only the new 1x1 conv (and its epilogue) is left to tune
    assert st["tasks"] > st["tasks_from_database"] >= 1, st
    assert len(json.loads(shared.read_text())["targets"]) == 1


def test_default_budget_and_cli_tune_without_a_number():
    opts = TuneOptions.from_any({"trials": None})
    assert (opts.trials, opts.max_seconds) == (DEFAULT_BUDGET["trials"],
                                               DEFAULT_BUDGET["max_seconds"])
    assert TuneOptions.from_any({"trials": None, "max_seconds": 30}).max_seconds == 30
    args = build_parser().parse_args(["compile", "m.onnx", "-o", "out", "--tune"])
    assert args.tune == "default"
    assert build_parser().parse_args(["compile", "m.onnx", "-o", "o", "--tune", "8"]).tune == 8

"""The tuning database's lock: concurrent writers keep each other's records, a held lock
times out with a clear error, and merged records keep pointing at their own workloads."""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from targets.tvm.tuning import (DatabaseLockTimeout, database_lock,  # noqa: E402
                                load_database_file, merge_into_database)

TARGET = "llvm -keys=cpu"


def _writer(path: str, tag: str, n: int, start) -> None:
    start.wait()
    for i in range(n):
        # each call: one workload of its own plus one shared by every writer
        wl = [f'["{tag}-{i}", {{}}]', '["shared", {}]']
        recs = [json.dumps([0, {"tag": tag, "i": i}]), json.dumps([1, {"tag": tag, "i": i}])]
        merge_into_database(Path(path), TARGET, wl, recs, lock_timeout=60)


def test_two_processes_merging_records_lose_none(tmp_path):
    path, n = tmp_path / "db.json", 25
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(path), tag, n, start)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _, section, status = load_database_file(path, TARGET)
    assert status == "ok"
    wls = section["workloads"]
    assert len(wls) == 2 * n + 1 and len(set(wls)) == len(wls)  # "shared" stored once
    got = set()
    for line in section["records"]:
        idx, rec = json.loads(line)
        # the record still points at the workload it was written with
        assert wls[idx] in (f'["{rec["tag"]}-{rec["i"]}", {{}}]', '["shared", {}]')
        got.add((wls[idx] == '["shared", {}]', rec["tag"], rec["i"]))
    assert got == {(s, t, i) for s in (False, True) for t in "ab" for i in range(n)}


def test_merging_the_same_records_twice_keeps_one_copy(tmp_path):
    path = tmp_path / "db.json"
    wl, recs = ['["w", {}]'], [json.dumps([0, {"x": 1}])]
    merge_into_database(path, TARGET, wl, recs)
    merged = merge_into_database(path, TARGET, wl, recs)
    assert merged == {"workloads": wl, "records": recs}


def _hold(path: str, held, release) -> None:
    with database_lock(Path(path), timeout=5):
        held.set()
        release.wait(60)


def test_held_lock_times_out_with_a_clear_error(tmp_path):
    path = tmp_path / "db.json"
    ctx = mp.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(path), held, release))
    p.start()
    try:
        assert held.wait(60)
        with pytest.raises(DatabaseLockTimeout, match=r"db\.json.*lock_timeout"):
            merge_into_database(path, TARGET, ['["w", {}]'], [json.dumps([0, {}])],
                                lock_timeout=0.3)
        assert not path.exists()  # nothing written without the lock
    finally:
        release.set()
        p.join(60)
    merge_into_database(path, TARGET, ['["w", {}]'], [json.dumps([0, {}])], lock_timeout=5)
    assert load_database_file(path, TARGET)[1]["records"] == [json.dumps([0, {}])]

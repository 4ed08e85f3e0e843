"""MetaSchedule auto-tuning of a lowered Relax module, with a persistent database.

``tune_and_build(mod, target, trials=N, database=path)`` extracts the tuning tasks of
our lowered module (after the fusion pipeline), tunes only the tasks the database has
no record for (so a second compile of the same model measures nothing), and builds
with the records applied.  Measurement is local for the host, and through an RPC
tracker (``ms.runner.RPCRunner``) for a board; cross targets are linked on the host
(``f_export``) because the board has no linker.  The cost model is XGBoost with a
warm-up sized to the budget (MetaSchedule's default of 100 warm-up samples would make
a small budget a random search).

The database is one JSON file written atomically (temp + rename) that holds
MetaSchedule's JSON-database lines per target, plus the format and TVM versions.
A corrupt or foreign-version file is set aside (``<file>.bad``) and tuning starts from
scratch: it never crashes a compile.  Every read-modify-write of the file holds an
exclusive ``fcntl.flock`` on a sidecar ``<file>.lock``; the new records are merged into
what is on disk *at write time* (workload indices remapped), so two compiles sharing a
database keep each other's records.  A lock not obtained within ``lock_timeout``
seconds raises `DatabaseLockTimeout` naming the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tvm
from tvm import relax

from compiler.fileio import atomic_write_text

__all__ = ["TuneOptions", "tune_and_build", "load_database_file", "DB_FORMAT",
           "DatabaseLockTimeout", "database_lock", "merge_into_database",
           "default_database_path", "DEFAULT_BUDGET", "compile_tuned"]

DB_FORMAT = "embedded-cnn-compiler/metaschedule-db"
DB_VERSION = 1
_log = logging.getLogger(__name__)

# The budget of ``trials=None`` (``compiler compile --tune`` without a number): about five
# minutes per model on a 2-core machine (1.2-3 s per measured candidate there; the
# templates of `schedules.py` need a few trials per conv, the rest of the budget goes to
# the kernels MetaSchedule expects the most from).  Whichever limit comes first.
DEFAULT_BUDGET = {"trials": 192, "max_seconds": 300.0}


def default_database_path() -> Path:
    """The tuning database shared by every model (``database="default"``):
    ``$COMPILER_TUNE_DB``, else ``$XDG_CACHE_HOME/embedded-cnn-compiler/tuning-db.json``
    (``~/.cache/...``).  One file for all models and targets (sections per target): a
    layer of the same shape and type is one MetaSchedule workload (the structural hash
    of its PrimFunc, not its model or name), so it is tuned once, by the first model that
    has it, and reused by every later one."""
    env = os.environ.get("COMPILER_TUNE_DB")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "embedded-cnn-compiler" / "tuning-db.json"


@dataclass
class TuneOptions:
    """``trials``: measured candidates in all (the budget; None: `DEFAULT_BUDGET`, which
    also sets ``max_seconds`` when that is not given); ``database``: the JSON file
    (``"default"``: `default_database_path`, shared by all models; None: a temporary
    one, nothing kept); ``max_seconds``: a wall-clock budget as well (tuning stops at
    whichever comes first, keeping every record measured so far)."""

    trials: int | None = 64
    max_seconds: float | None = None
    database: str | os.PathLike | None = None
    trials_per_iter: int | None = None     # default: budget / tasks, at most 64
    warmup: int | None = None              # XGBoost warm-up samples; default: sized to budget
    build_timeout: float = 60.0
    run_timeout: float = 60.0
    progress: bool = True
    seed: int | None = 0
    lock_timeout: float = 120.0            # seconds to wait for the database's lock
    checkpoint_seconds: float = 60.0       # merge new records into the file this often
    verbose: bool = False                  # MetaSchedule's INFO log on the console

    @classmethod
    def from_any(cls, value: Any) -> "TuneOptions":
        if isinstance(value, TuneOptions):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(trials=value)
        if isinstance(value, dict):
            unknown = set(value) - {f for f in cls.__dataclass_fields__}
            if unknown:
                raise ValueError(f"unknown tune option(s) {sorted(unknown)}; known: "
                                 f"{sorted(cls.__dataclass_fields__)}")
            return cls(**value)
        raise TypeError(f"tune must be a dict like {{'trials': 64, 'database': 'db.json'}}, "
                        f"got {value!r}")

    def __post_init__(self) -> None:
        if self.trials is None:
            self.trials = int(DEFAULT_BUDGET["trials"])
            if self.max_seconds is None:
                self.max_seconds = float(DEFAULT_BUDGET["max_seconds"])
        if isinstance(self.database, str) and self.database == "default":
            self.database = str(default_database_path())
        if not isinstance(self.trials, int) or self.trials < 0:
            raise ValueError(f"tune trials must be a non-negative integer, got {self.trials!r}")
        if self.max_seconds is not None and not (
                isinstance(self.max_seconds, (int, float)) and self.max_seconds > 0):
            raise ValueError(f"tune max_seconds must be a positive number of seconds, "
                             f"got {self.max_seconds!r}")


# -- the database file ---------------------------------------------------------------

def _target_key(target: tvm.target.Target) -> str:
    return str(target)


def load_database_file(path: Path | None, target_key: str) -> tuple[dict, dict, str]:
    """``(whole file, this target's section, status)``; status is ``new``, ``ok``,
    ``corrupt`` or ``foreign`` (the last two set the file aside as ``<path>.bad``)."""
    empty = {"format": DB_FORMAT, "version": DB_VERSION, "tvm": tvm.__version__, "targets": {}}
    if path is None or not path.exists():
        return empty, {"workloads": [], "records": []}, "new"
    status = "ok"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != DB_FORMAT:
            raise ValueError("not a tuning database")
        if data.get("version") != DB_VERSION or data.get("tvm") != tvm.__version__:
            status = "foreign"
        else:
            section = data["targets"].get(target_key, {"workloads": [], "records": []})
            if not (isinstance(section.get("workloads"), list)
                    and isinstance(section.get("records"), list)
                    and all(isinstance(x, str) for x in section["workloads"] + section["records"])):
                raise ValueError("malformed target section")
            return data, section, status
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        status = "corrupt"
    bad = path.with_name(path.name + ".bad")
    warnings.warn(f"tuning database {path} is {status} (written by another format or TVM "
                  f"version, or damaged); set aside as {bad} and re-tuning from scratch")
    try:
        os.replace(path, bad)
    except OSError:
        pass
    return empty, {"workloads": [], "records": []}, status


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


class DatabaseLockTimeout(TimeoutError):
    """Another process held the tuning database's lock for longer than the timeout."""


@contextlib.contextmanager
def database_lock(path: Path, timeout: float = 120.0):
    """Exclusive ``flock`` on ``<path>.lock`` for the body (polled, so it can time out)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DatabaseLockTimeout(
                        f"tuning database {path}: could not lock {lock_path} within "
                        f"{timeout:g} s (another compile is writing it; raise tune option "
                        f"'lock_timeout' or use another database file)") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _merge_section(old: dict, workloads: list[str], records: list[str]) -> dict:
    """``old`` section plus ``workloads``/``records`` (MetaSchedule JSON-database lines;
    a record is ``[workload_index, ...]``), indices remapped, duplicates dropped."""
    out_w = list(old.get("workloads", []))
    out_r = list(old.get("records", []))
    index = {w: i for i, w in enumerate(out_w)}
    seen = set()
    for line in out_r:
        try:
            rec = json.loads(line)
            seen.add((out_w[rec[0]], json.dumps(rec[1:], sort_keys=True)))
        except (ValueError, IndexError, TypeError, KeyError):
            continue
    for line in records:
        rec = json.loads(line)
        wl = workloads[rec[0]]
        key = (wl, json.dumps(rec[1:], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        if wl not in index:
            index[wl] = len(out_w)
            out_w.append(wl)
        out_r.append(json.dumps([index[wl], *rec[1:]]))
    return {"workloads": out_w, "records": out_r}


def merge_into_database(path: Path, target_key: str, workloads: list[str],
                        records: list[str], *, lock_timeout: float = 120.0) -> dict:
    """Under the lock: re-read ``path``, merge this target's new lines into it and write
    it back atomically.  Returns the merged target section."""
    with database_lock(path, lock_timeout):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bad file was already reported at load
            whole, section, _ = load_database_file(path, target_key)
        merged = _merge_section(section, workloads, records)
        whole.setdefault("targets", {})[target_key] = merged
        whole.update(format=DB_FORMAT, version=DB_VERSION, tvm=tvm.__version__)
        _write_atomic(path, json.dumps(whole))
    return merged


def _lines(path: str) -> list[str]:
    try:
        return [line for line in Path(path).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


# -- importing the tensor intrinsics quickly ----------------------------------------

def _import_tensor_intrin() -> None:
    """``import tvm.s_tir.tensor_intrin`` (MetaSchedule's task contexts do it), minus
    most of its cost.  Each of its hundreds of ``@T.prim_func`` calls ``inspect.stack()``,
    which reads source context for *every* outer frame: 60-90 s on 2 cores (more in a
    big process).  The parser only looks at the first frames' context and at the outer
    frames' locals, so for the duration of the import ``inspect.stack`` gives source
    context for the first 4 frames only; frames and locals are the same."""
    import inspect
    import sys

    from .intrin import fix_x86_vnni

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        fix_x86_vnni()
        return
    original = inspect.stack

    def stack(context: int = 1):
        frame, out = sys._getframe(1), []
        while frame:
            if len(out) < 4:
                info = inspect.getframeinfo(frame, context)
                out.append(inspect.FrameInfo(frame, *info, positions=info.positions))
            else:
                code = frame.f_code
                out.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno,
                                             code.co_name, None, None, positions=None))
            frame = frame.f_back
        return out

    inspect.stack = stack
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401

        fix_x86_vnni()  # (its own @T.prim_func parses under the same fast stack)
    finally:
        inspect.stack = original


# -- builder / runner ----------------------------------------------------------------

def _make_builder(ms, opts: TuneOptions, cross_compiler: str | None):
    def f_build(mod, target, _params):
        # Skips `import tvm.s_tir.tensor_intrin` (12-22 s per worker; under load every
        # candidate would time out), otherwise what the default builder does.
        from tvm.driver import build as tvm_build
        from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
        return tvm_build(mod, target=target)

    f_export = None
    if cross_compiler:
        compiler_cmd = cross_compiler

        def f_export(mod):  # link here: the board has no (aarch64) linker
            import os as _os
            import tempfile as _tempfile

            from tvm.support import cc as _cc

            path = _os.path.join(_tempfile.mkdtemp(), "tvm_tmp_mod.so")
            mod.export_library(path, fcompile=_cc.cross_compiler(compiler_cmd))
            return path

    return ms.builder.LocalBuilder(max_workers=os.cpu_count() or 1,
                                   timeout_sec=opts.build_timeout, f_build=f_build,
                                   f_export=f_export)


def _make_runner(ms, opts: TuneOptions, remote: Any):
    if remote is None:
        return ms.runner.LocalRunner(
            timeout_sec=opts.run_timeout,
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50))
    from .rpc import board_count, check_key

    check_key(remote)  # unknown key / unreachable tracker: a clear error, not a hang
    boards = board_count(remote)  # a farm behind one tracker: measure on all in parallel
    config = ms.runner.RPCConfig(tracker_host=remote.host, tracker_port=remote.port,
                                 tracker_key=remote.key, session_priority=1,
                                 session_timeout_sec=int(max(opts.run_timeout, 30)))
    # Emulation is slow: one call per candidate is plenty to rank them.
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=0)
    return ms.runner.RPCRunner(config, evaluator, max_workers=max(1, boards))


def _progress_callback(ms, total: int, enabled: bool, counter: dict,
                       deadline: float | None = None,
                       checkpoint: "Callable[[], None] | None" = None,
                       checkpoint_seconds: float = 60.0):
    """A measure callback that counts trials, drives the progress bar (trials, best
    latency of the task just measured, time left until ``deadline``) and calls
    ``checkpoint`` every ``checkpoint_seconds`` (records reach the database file while
    tuning runs, so an interrupted tuning keeps what it measured)."""
    last = [time.monotonic()]
    from tqdm import tqdm

    from tvm.ir.utils import derived_object

    from compiler.logs import progress_enabled

    bar = tqdm(total=total, desc="tuning", unit="trial", leave=False,
               disable=not (enabled and progress_enabled()))  # a terminal, no --no-progress

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results):
            ok = [float(np.mean([float(s) for s in r.run_secs])) for r in runner_results
                  if r.run_secs is not None and r.error_msg is None]
            counter["trials"] += len(measure_candidates)
            counter["measured"] += len(ok)
            name = str(task_scheduler.tasks_[task_id].ctx.task_name)
            if ok:
                best = counter["best_ms"].get(name, float("inf"))
                counter["best_ms"][name] = min(best, min(ok) * 1e3)
            postfix = {"task": name[:24]}
            if name in counter["best_ms"]:
                postfix["best_ms"] = f"{counter['best_ms'][name]:.3f}"
            if deadline is not None:
                postfix["left_s"] = max(0, int(deadline - time.monotonic()))
            bar.set_postfix(postfix, refresh=False)
            bar.update(len(measure_candidates))
            if checkpoint is not None and time.monotonic() - last[0] >= checkpoint_seconds:
                checkpoint()
                last[0] = time.monotonic()

    return Progress(), bar


# -- tune and build --------------------------------------------------------------------

def tune_and_build(mod: tvm.IRModule, target: Any, tune: Any, *, remote: Any = None,
                   cross_compiler: str | None = None, memory: str = "tvm") -> tuple[Any, dict]:
    """Tune ``mod`` (our lowered Relax module) and build it with the best records.

    Returns ``(executable, stats)``; ``stats["trials"]`` is the number of candidates
    measured in this call (0 when the database already covered every task).
    """
    from tvm.s_tir import meta_schedule as ms

    from .build import make_target
    from .default_schedule import default_schedule
    from .schedules import register_schedule_rules

    opts = TuneOptions.from_any(tune)
    tgt = make_target(target)
    t0 = time.monotonic()
    _import_tensor_intrin()
    register_schedule_rules()
    db_path = Path(opts.database).expanduser() if opts.database else None
    if db_path is not None:
        with database_lock(db_path, opts.lock_timeout):
            _, section, db_status = load_database_file(db_path, _target_key(tgt))
    else:
        _, section, db_status = load_database_file(None, _target_key(tgt))

    fused = relax.get_pipeline("zero")(mod)
    tasks = [t for t in ms.relax_integration.extract_tasks(fused, tgt) if not _scheduled(t)]
    stats: dict[str, Any] = {"trials_budget": opts.trials, "tasks": len(tasks),
                             "database": str(db_path) if db_path else None,
                             "database_status": db_status,
                             "runner": "local" if remote is None else f"rpc {remote.describe()}",
                             "emulated": bool(getattr(remote, "emulated", False))}
    with tempfile.TemporaryDirectory(prefix="ms-tune-") as work:
        wl_file, rec_file = os.path.join(work, "workloads.json"), os.path.join(work, "records.json")
        Path(wl_file).write_text("".join(line + "\n" for line in section["workloads"]))
        Path(rec_file).write_text("".join(line + "\n" for line in section["records"]))
        try:
            db = ms.database.JSONDatabase(wl_file, rec_file, allow_missing=True)
        except Exception as exc:  # noqa: BLE001  (TVM raises its own error types)
            warnings.warn(f"tuning database {db_path}: records unreadable ({exc}); re-tuning")
            stats["database_status"] = "corrupt"
            for f in (wl_file, rec_file):
                Path(f).write_text("")
            db = ms.database.JSONDatabase(wl_file, rec_file, allow_missing=True)

        def save_records() -> None:
            merge_into_database(db_path, _target_key(tgt), _lines(wl_file), _lines(rec_file),
                                lock_timeout=opts.lock_timeout)

        todo = [t for t in tasks if not _has_record(db, t, tgt)]
        stats["tasks_from_database"] = len(tasks) - len(todo)
        stats["tasks_tuned"] = 0
        counter = {"trials": 0, "measured": 0, "best_ms": {}, "stopped_by_time": False,
                   "search_s": 0.0}
        if todo and opts.trials > 0:
            # Kernels without a reduction (layout transforms, elementwise chains, pads)
            # need one parallel + vectorized schedule, not a search: they get a couple
            # of candidates each, first, and the rest of the budget goes to the convs
            # and matmuls (MetaSchedule would otherwise split it evenly).
            reduces = [_has_reduction(t) for t in todo]
            heavy = [t for t, r in zip(todo, reduces) if r]
            light = [t for t, r in zip(todo, reduces) if not r]
            # (at least one candidate each, within the budget; a task left without a
            # record gets `default_schedule`)
            light_budget = min(2 * len(light), max(len(light), opts.trials // 4)
                               if heavy else opts.trials)
            light_per_iter = max(1, min(2, light_budget // max(1, len(light))))
            deadline = None if opts.max_seconds is None else t0 + float(opts.max_seconds)
            progress, bar = _progress_callback(
                ms, opts.trials, opts.progress, counter, deadline,
                save_records if db_path is not None else None, opts.checkpoint_seconds)
            callbacks = ms.measure_callback.MeasureCallback.create("default") + [progress]
            builder = _make_builder(ms, opts, cross_compiler)
            runner = _make_runner(ms, opts, remote)
            tuned = 0
            try:
                if light and light_budget > 0:
                    tuned += _tune_phase(ms, light, light_budget, light_per_iter, opts, work,
                                         "light",
                                         builder, runner, db, callbacks,
                                         population=16, warmup=1, deadline=deadline,
                                         counter=counter)
                budget = opts.trials - counter["trials"]
                if heavy and budget > 0:
                    # half the budget in the first round-robin round, the other half
                    # where the gradient scheduler sees the most latency to win
                    per_iter = opts.trials_per_iter or max(
                        1, min(64, budget // max(1, 2 * len(heavy))))
                    warmup = opts.warmup if opts.warmup is not None else max(
                        1, min(100, budget // 4))
                    stats["trials_per_iter"], stats["warmup"] = per_iter, warmup
                    tuned += _tune_phase(ms, heavy, budget, per_iter, opts, work, "heavy",
                                         builder, runner, db, callbacks,
                                         population=None, warmup=warmup,
                                         deadline=deadline, counter=counter)
            finally:
                bar.close()
            stats["tasks_light"], stats["tasks_heavy"] = len(light), len(heavy)
            stats["tasks_tuned"] = tuned
        stats["trials"] = counter["trials"]
        stats["trials_measured_ok"] = counter["measured"]
        stats["stopped_by_time"] = counter["stopped_by_time"]
        stats["search_seconds"] = round(counter["search_s"], 2)
        stats["tasks_with_records"] = sum(1 for t in tasks if _has_record(db, t, tgt))
        stats["tune_seconds"] = round(time.monotonic() - t0, 2)
        planner = None
        if memory == "arena":  # the same build with our arena (targets/tvm/arena.py)
            from .arena import PlanArena

            planner = PlanArena()
        scheduler = default_schedule()
        executable = compile_tuned(db, mod, tgt, planner, scheduler)
        stats["kernels_default_scheduled"] = len(scheduler.applied)
        stats["kernels_unscheduled"] = len(scheduler.left)
        if db_path is not None and (counter["trials"] or db_status != "ok"):
            save_records()
    stats["seconds"] = round(time.monotonic() - t0, 2)
    return executable, stats


def compile_tuned(database: Any, mod: tvm.IRModule, target: Any,
                  planner: Any = None, scheduler: Any = None) -> Any:
    """A tuned build: `build.fused_pipeline` with the records of ``database`` (kernels
    without one get the default schedule); ``planner``: the arena (`arena.PlanArena`).
    The fused kernels take the arena's tensors through ``ensure_zero_offset`` like the
    untuned ones, so the tuned code itself is unchanged."""
    from .build import build, fused_pipeline

    return build(mod, target, pipeline=fused_pipeline(database, planner, scheduler))


def _with_deadline(ms, strategy: Any, deadline: float | None, counter: dict) -> Any:
    """``strategy`` timed (``counter["search_s"]``: seconds spent proposing candidates,
    the part of tuning that is neither compiling nor measuring) and stopped at
    ``deadline`` (``time.monotonic()``).

    Past the deadline every task proposes nothing more (the scheduler then ends it
    itself, the one safe way to stop early: terminating tasks from a measure callback
    trips MetaSchedule's checks when the task being joined is the one it picks next).
    A task the budget did not reach has no record and gets `default_schedule` in the
    build, so the deadline holds to within the batch being measured when it passes.
    (It used to give each such task one late batch of random samples: 67-140 tasks ran
    tuning 1.5-4.6x over budget, and a random softmax schedule can be far slower than
    none.)"""
    from tvm.ir.utils import derived_object

    @derived_object
    class Deadline(ms.search_strategy.PySearchStrategy):
        def __init__(self, inner):
            self.inner = inner

        def _initialize_with_tune_context(self, context):
            self.inner._initialize_with_tune_context(context)

        def pre_tuning(self, max_trials, num_trials_per_iter, design_spaces, database=None,
                       cost_model=None):
            self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database,
                                  cost_model)

        def post_tuning(self):
            self.inner.post_tuning()

        def generate_measure_candidates(self):
            if deadline is not None and time.monotonic() > deadline:
                counter["stopped_by_time"] = True
                return None
            t = time.monotonic()
            try:
                return self.inner.generate_measure_candidates()
            finally:
                counter["search_s"] += time.monotonic() - t

        def notify_runner_results(self, measure_candidates, results):
            self.inner.notify_runner_results(measure_candidates, results)

        def clone(self):
            return Deadline(self.inner.clone())

    return Deadline(strategy)


def _tune_phase(ms, tasks: list, budget: int, per_iter: int, opts: TuneOptions, work: str,
                name: str, builder: Any, runner: Any, db: Any, callbacks: list, *,
                population: int | None, warmup: int, deadline: float | None,
                counter: dict) -> int:
    """One ``tune_tasks`` run over ``tasks`` within ``budget`` trials; returns how many
    tasks it tuned.  MetaSchedule's default search (population 512, 4 genetic rounds
    per iteration) costs seconds per task and round on 2 cores; a task that gets a
    handful of trials gains nothing from it, so the population (``None``) is sized to
    the trials per task: 8 candidates of population per trial, 32 to 512."""
    per_task = max(1, budget // max(1, len(tasks)))
    if population is None:
        population = max(32, min(512, 8 * per_task))
    search = ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=max(2, min(50, per_task, population)),
        genetic_num_iters=2 if per_task < 64 else 4)
    strategy = _with_deadline(ms, search, deadline, counter)
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, os.path.join(work, "logs-" + name), strategy=strategy, seed=opts.seed)
    if not contexts:
        return 0
    # Keep the console quiet (tqdm shows progress).  MetaSchedule configures its logger
    # (to DEBUG) whenever it creates the loggers above, so this comes after, every time.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(
        logging.INFO if opts.verbose else logging.WARNING)
    ms.tune.tune_tasks(
        tasks=contexts, task_weights=weights, work_dir=work,
        max_trials_global=budget, num_trials_per_iter=per_iter,
        builder=builder, runner=runner, database=db,
        cost_model=ms.cost_model.XGBModel(num_warmup_samples=warmup, adaptive_training=True),
        measure_callbacks=callbacks, task_scheduler="gradient")
    return len(contexts)


def _scheduled(task: Any) -> bool:
    """Whether the task's kernel says it needs no schedule (`checks.SCHEDULED`: the
    run-time checks, serial on purpose).  MetaSchedule would tune it anyway (it looks
    for the flag on the module, not on the function)."""
    from .default_schedule import is_scheduled

    return any(is_scheduled(f) for _gv, f in task.dispatched[0].functions_items()
               if isinstance(f, tvm.tirx.PrimFunc))


def _has_reduction(task: Any) -> bool:
    """Whether the task's kernel reduces (a conv, matmul, pooling, sum); kernels that
    do not are layout transforms and elementwise chains.  An unanalysable kernel
    counts as reducing (it gets tuned)."""
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    mod = task.dispatched[0]
    names = [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    if len(names) != 1:
        return True
    sch = s_tir.Schedule(mod)
    sch.work_on(names[0])
    try:
        infos = normalize_prim_func(sch)
    except Exception:  # noqa: BLE001  (analysis limits: tune the kernel)
        return True
    return infos is None or any(info.is_reduction() for info in infos)


def _has_record(db: Any, task: Any, target: Any) -> bool:
    mod = task.dispatched[0]
    if not db.has_workload(mod):
        return False
    return db.query_tuning_record(mod, target, task.task_name) is not None

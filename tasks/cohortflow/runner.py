"""The local runner: execute a declared workflow task by task, with a run log.

``run_task`` runs one stage for one business date and writes its row to
``meta.run_log`` (the same row whichever runner called it: the local runner,
or ``cohortflow task`` launched by a DolphinScheduler Shell task).
``run_workflow`` runs every task in dependency order; when the latest run of
that date did not finish, it resumes it from the failed task.

A task whose process died (SIGKILL, power cut, lost server) leaves its row
``running``; the next task to start marks every such row ``interrupted``
(:func:`mark_interrupted`). On PostgreSQL a running task holds a session
advisory lock named after its row, which the server releases when the process
or the server goes away, so only dead tasks are marked; on Trino the same
with a file lock (released by the kernel when the process dies; it serialises
the processes of one machine, as Trino's other locks do); on DuckDB the file
admits one process, so any ``running`` row found by a new one is dead.
``<target>/run-status.json`` says which task is running (``cohortflow status``
reads it when a run holds the DuckDB file).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cohortflow.config import Config
from cohortflow.dag import Workflow
from cohortflow.progress import plural
from cohortflow.warehouse import Warehouse

Echo = Callable[[str], None]

SUCCESS, FAILED, RUNNING, UPSTREAM_FAILED = "success", "failed", "running", "upstream_failed"
INTERRUPTED = "interrupted"


class TaskFailed(Exception):
    """A task failed; its message is the one-line reason shown to the operator."""


@dataclass(frozen=True)
class TaskContext:
    cfg: Config
    wh: Warehouse
    business_date: dt.date
    run_id: str
    echo: Echo


@dataclass(frozen=True)
class TaskOutcome:
    rows_in: int | None
    rows_out: int | None
    message: str


# -- the stages ---------------------------------------------------------------


def _ingest(ctx: TaskContext) -> TaskOutcome:
    from cohortflow.ingest import load_day

    ledger = load_day(ctx.wh, ctx.cfg, ctx.business_date, ctx.run_id, progress=ctx.echo)
    if not ledger.files:
        ctx.echo(f"  no landing files for {ctx.business_date} (an empty day)")
    return TaskOutcome(ledger.lines_read, ledger.events_loaded, ledger.summary())


def _validate(ctx: TaskContext) -> TaskOutcome:
    from cohortflow.validate import validate_day

    outcome = validate_day(ctx.wh, ctx.cfg, ctx.business_date, ctx.run_id)
    if outcome.failed_critical:
        raise TaskFailed(outcome.summary())
    return TaskOutcome(None, len(outcome.results), outcome.summary())


def _models(ctx: TaskContext) -> TaskOutcome:
    from cohortflow.models import build_pending

    built = build_pending(ctx.wh, ctx.cfg, progress=ctx.echo)
    changed = [o for o in built.values() if o.changed]
    return TaskOutcome(None, sum(o.rows for o in changed), f"{plural(len(changed), 'model')} rebuilt, the others up to date")


def _publish(ctx: TaskContext) -> TaskOutcome:
    from cohortflow.publish import publish

    counts = publish(ctx.wh, ctx.cfg, ctx.business_date, progress=ctx.echo, run_id=ctx.run_id)
    return TaskOutcome(None, sum(counts.values()), f"published {plural(len(counts), 'table')}")


STAGES: dict[str, Callable[[TaskContext], TaskOutcome]] = {
    "ingest": _ingest,
    "validate": _validate,
    "models": _models,
    "publish": _publish,
}


def _model_stage(name: str) -> Callable[[TaskContext], TaskOutcome]:
    """One model as a task (a server runs a ``per_model`` task as one task per model)."""

    def build_one(ctx: TaskContext) -> TaskOutcome:
        from cohortflow.models import build_pending

        built = build_pending(ctx.wh, ctx.cfg, progress=ctx.echo, only={name}, dependencies=False)
        outcome = built.get(name)
        if outcome is None:
            return TaskOutcome(None, None, f"{name} up to date")
        return TaskOutcome(None, outcome.rows, f"built {name}: {outcome.describe()}")

    return build_one


def stage(workflow: Workflow, name: str) -> Callable[[TaskContext], TaskOutcome]:
    """The function of a task: a declared stage, or a model of a ``per_model`` task."""
    if name in STAGES and any(t.name == name for t in workflow.tasks):
        return STAGES[name]
    if any(t.per_model for t in workflow.tasks):
        from cohortflow.models import load_models

        if name in load_models():
            return _model_stage(name)
    workflow.task(name)  # raises KeyError naming the workflow
    raise KeyError(f"task {name!r} of workflow {workflow.name!r} has no stage function")


def task_names(workflow: Workflow) -> list[str]:
    """Every task name ``cohortflow task`` accepts for a workflow: its stages and, for a per-model task, the models."""
    from cohortflow.models import load_models

    names = [t.name for t in workflow.tasks]
    if any(t.per_model for t in workflow.tasks):
        names += list(load_models())
    return names

# Test hook: make a named task fail (e.g. COHORTFLOW_FAIL_TASK=models) to exercise reruns.
FAIL_ENV = "COHORTFLOW_FAIL_TASK"


# -- run log ------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _log_start(wh: Warehouse, run_id: str, workflow: str, task: str, d: dt.date, runner: str) -> dt.datetime:
    started = _now()
    with wh.begin() as conn:
        wh.execute(
            conn,
            "insert into meta.run_log (run_id, workflow, task, business_date, status, runner, started_at) "
            "values (:run_id, :workflow, :task, :d, :status, :runner, :started)",
            {"run_id": run_id, "workflow": workflow, "task": task, "d": d, "status": RUNNING, "runner": runner, "started": started},
        )
    return started


def _log_end(wh: Warehouse, run_id: str, task: str, started: dt.datetime, status: str, outcome: TaskOutcome | None, error: str | None) -> None:
    with wh.begin() as conn:
        wh.execute(
            conn,
            "update meta.run_log set status = :status, ended_at = :ended, rows_in = :rows_in, rows_out = :rows_out, error = :error "
            "where run_id = :run_id and task = :task and started_at = :started",
            {
                "status": status,
                "ended": _now(),
                "rows_in": outcome.rows_in if outcome else None,
                "rows_out": outcome.rows_out if outcome else None,
                "error": error,
                "run_id": run_id,
                "task": task,
                "started": started,
            },
        )


def _log_skipped(wh: Warehouse, run_id: str, workflow: str, task: str, d: dt.date, runner: str, why: str) -> None:
    now = _now()
    with wh.begin() as conn:
        wh.execute(
            conn,
            "insert into meta.run_log (run_id, workflow, task, business_date, status, runner, started_at, ended_at, error) "
            "values (:run_id, :workflow, :task, :d, :status, :runner, :t, :t, :why)",
            {"run_id": run_id, "workflow": workflow, "task": task, "d": d, "status": UPSTREAM_FAILED, "runner": runner, "t": now, "why": why},
        )


def _log_best_effort(echo: Echo, write: Callable[[], None]) -> None:
    """A run-log write on a path that is failing already: when the write fails too, the operator sees why in one line
    and the failure being reported stays the one that matters."""
    try:
        write()
    except Exception as log_exc:  # noqa: BLE001 - the failure being reported matters more
        echo(f"  (could not write the run log: {log_exc})")


def _task_key(run_id: str, task: str, started: dt.datetime) -> str:
    return f"cohortflow:task:{run_id}:{task}:{started.isoformat()}"


@contextlib.contextmanager
def _task_alive(wh: Warehouse, run_id: str, task: str, started: dt.datetime) -> Iterator[None]:
    """While the task runs, hold the lock that tells a later attempt it is alive (see the module doc)."""
    if wh.dialect == "duckdb":
        yield
        return
    with wh.session_lock(_task_key(run_id, task, started), unique=True):
        yield


def mark_interrupted(wh: Warehouse) -> int:
    """Mark the run-log rows of tasks whose process died ``interrupted``; return how many."""
    with wh.begin() as conn:
        rows = wh.execute(conn, "select run_id, task, started_at from meta.run_log where status = :s", {"s": RUNNING}).fetchall()
        dead: dict[str, list[tuple[str, dt.datetime]]] = {}  # run id -> its dead tasks (name, start)
        for run_id, task, started in rows:
            # A transaction-level try-lock: free (so taken and released at commit) only when no live task holds it.
            if wh.dialect == "duckdb" or wh.try_lock(conn, _task_key(run_id, task, started)):
                dead.setdefault(run_id, []).append((task, started))
        # One statement per run id (on Trino an UPDATE rewrites the run's partition, which takes one write in a
        # transaction): the run's dead tasks, each by its name and start time.
        for run_id, mine in dead.items():
            which = " or ".join(f"(task = :task{i} and started_at = :started{i})" for i in range(len(mine)))
            wh.execute(
                conn,
                "update meta.run_log set status = :status, ended_at = :ended, error = :error "
                f"where run_id = :run_id and status = :running and ({which})",
                {
                    "status": INTERRUPTED,
                    "ended": _now(),
                    "error": "interrupted: the process ended before the task finished (found by a later attempt)",
                    "run_id": run_id,
                    "running": RUNNING,
                    **{f"task{i}": task for i, (task, _) in enumerate(mine)},
                    **{f"started{i}": started for i, (_, started) in enumerate(mine)},
                },
            )
    for run_id, mine in dead.items():
        for task, started in mine:
            wh.forget_lock(_task_key(run_id, task, started))
    return sum(len(mine) for mine in dead.values())


def status_file(cfg: Config) -> Path:
    return cfg.target_path / "run-status.json"


def _write_status_file(cfg: Config, **doc: object) -> None:
    """Best effort: what this process is running, for ``cohortflow status`` while the DuckDB file is held."""
    path = status_file(cfg)
    doc = {**doc, "pid": os.getpid(), "host": socket.gethostname(), "updated_at": _now().isoformat(timespec="seconds")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, default=str, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def run_task(
    cfg: Config,
    wh: Warehouse,
    workflow: Workflow,
    name: str,
    business_date: dt.date,
    *,
    run_id: str | None = None,
    runner: str = "cli",
    echo: Echo = print,
) -> TaskOutcome:
    """Run one stage for one date, logging it; raise TaskFailed with a clear reason on failure."""
    stage_fn = stage(workflow, name)  # unknown names fail here, before anything is logged
    run_id = run_id or os.environ.get("COHORTFLOW_RUN_ID") or new_run_id()
    wh.bootstrap()
    if n := mark_interrupted(wh):
        echo(f"marked {n} interrupted task run(s) in the run log")
    if wh.trino is not None and (swept := wh.trino.sweep_scratch()):
        echo(f"dropped {plural(len(swept), 'scratch object')} left by ended processes: {', '.join(swept)}")
    started = _log_start(wh, run_id, workflow.name, name, business_date, runner)
    t0 = time.monotonic()
    echo(f"[{name}] {business_date} (run {run_id})")
    _write_status_file(cfg, state=RUNNING, run_id=run_id, task=name, business_date=business_date, started_at=started)
    try:
        with _task_alive(wh, run_id, name, started):
            if os.environ.get(FAIL_ENV) == name:
                raise TaskFailed(f"failure injected by {FAIL_ENV}={name}")
            outcome = stage_fn(TaskContext(cfg, wh, business_date, run_id, echo))
    except Exception as exc:  # every failure is logged, then re-raised as one line
        message = str(exc).strip() or type(exc).__name__
        if not isinstance(exc, TaskFailed | KeyboardInterrupt):
            message = f"{type(exc).__name__}: {message}"
            if os.environ.get("COHORTFLOW_DEBUG"):
                traceback.print_exc()
        _log_best_effort(echo, lambda: _log_end(wh, run_id, name, started, FAILED, None, message[:4000]))
        _write_status_file(cfg, state=FAILED, run_id=run_id, task=name, business_date=business_date, started_at=started)
        raise TaskFailed(f"task {name} failed for {business_date}: {message}") from exc
    _log_end(wh, run_id, name, started, SUCCESS, outcome, None)
    _write_status_file(cfg, state=SUCCESS, run_id=run_id, task=name, business_date=business_date, started_at=started)
    echo(f"  {outcome.message}")
    echo(f"  done in {time.monotonic() - t0:.1f}s")
    return outcome


def _resumable_run(wh: Warehouse, workflow: Workflow, business_date: dt.date) -> tuple[str | None, set[str]]:
    """The latest run of this date if it did not finish, and the tasks it already completed."""
    with wh.begin() as conn:
        rows = wh.execute(
            conn,
            "select run_id, task, status, started_at from meta.run_log "
            "where workflow = :wf and business_date = :d order by started_at",
            {"wf": workflow.name, "d": business_date},
        ).fetchall()
    if not rows:
        return None, set()
    latest_run = rows[-1][0]
    status: dict[str, str] = {}
    for run_id, task, st, _ in rows:
        if run_id == latest_run:
            status[task] = st
    done = {t for t, st in status.items() if st == SUCCESS}
    if done >= {t.name for t in workflow.tasks}:
        return None, set()
    return latest_run, done


def run_workflow(
    cfg: Config,
    wh: Warehouse,
    workflow: Workflow,
    business_date: dt.date,
    *,
    resume: bool = True,
    echo: Echo = print,
) -> str:
    """Run every task in dependency order; return the run id. Raise TaskFailed on the first failure."""
    wh.bootstrap()
    run_id, done = _resumable_run(wh, workflow, business_date) if resume else (None, set())
    if run_id:
        echo(f"resuming run {run_id} for {business_date}: {', '.join(sorted(done)) or 'no task'} already done")
    run_id = run_id or new_run_id()
    failed: dict[str, str] = {}
    for task in workflow.ordered():
        if task.name in done:
            echo(f"[{task.name}] already succeeded in run {run_id}; skipped")
            continue
        blocked = [u for u in task.upstream if u in failed]
        if blocked:
            why = f"upstream failed: {', '.join(blocked)}"
            _log_best_effort(echo, lambda: _log_skipped(wh, run_id, workflow.name, task.name, business_date, "local", why))
            failed[task.name] = "upstream"
            echo(f"[{task.name}] not run: upstream {', '.join(blocked)} failed")
            continue
        try:
            run_task(cfg, wh, workflow, task.name, business_date, run_id=run_id, runner="local", echo=echo)
        except TaskFailed as exc:
            failed[task.name] = str(exc)
            echo(f"  FAILED: {exc}")
    if failed:
        first = next(iter(failed))
        raise TaskFailed(
            f"run {run_id} for {business_date} failed at task {first!r}: {failed[first]}\n"
            f"fix the cause and rerun 'cohortflow run --date {business_date}' to resume from it"
        )
    return run_id


def rebuild_range(
    cfg: Config, wh: Warehouse, start: dt.date | None = None, end: dt.date | None = None, *, echo: Echo = print
) -> str:
    """Rebuild every model, then publish: the dates ``[start, end]`` of every model, or (no range) every model whole
    from the loaded events. Past dates are recomputed with everything loaded so far, so nothing moves backwards; use
    it after changing a model's SQL outside the project's versioning, or to check that the published tables equal a
    full rebuild (they do, whatever ran before: a model whose SQL or definitions changed is rebuilt whole anyway).
    """
    from cohortflow.ingest import _record_change
    from cohortflow.models import build_pending
    from cohortflow.publish import publish

    wh.bootstrap()
    run_id = new_run_id()
    with wh.begin() as conn:
        as_of = wh.scalar(conn, "select max(business_date) from meta.change_log")
    as_of = as_of.date() if isinstance(as_of, dt.datetime) else as_of
    label = f"{start}..{end}" if start else "every model, whole"
    log_date = end or as_of or dt.date.today()
    started = _log_start(wh, run_id, "rebuild", "rebuild", log_date, "cli")
    t0 = time.monotonic()
    echo(f"[rebuild] {label} (run {run_id})")
    try:
        if start is not None or as_of is not None:
            # A change of its own, so that publish copies what the builds write: a whole rebuild of models already
            # built through the last change would otherwise leave their published tables as they were, even where
            # the rebuilt rows differ. (No range: every model whole. One insert with the range: on Trino a row
            # inserted in a transaction cannot be updated in it.)
            with wh.begin() as conn:
                _record_change(wh, conn, as_of or end, run_id, "rebuild", _now(), rebuild=(start, end) if start else None)
        built = build_pending(wh, cfg, progress=echo, whole=start is None)
        counts = publish(wh, cfg, log_date, progress=echo, run_id=run_id)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        _log_end(wh, run_id, "rebuild", started, FAILED, None, message[:4000])
        raise TaskFailed(f"rebuild {label} failed: {message}") from exc
    outcome = TaskOutcome(None, sum(counts.values()), f"rebuilt {plural(len(built), 'model')} ({label})")
    _log_end(wh, run_id, "rebuild", started, SUCCESS, outcome, None)
    echo(f"  {outcome.message} in {time.monotonic() - t0:.1f}s")
    return run_id

"""The local runner: execute a declared workflow task by task, with a run log.

``run_task`` runs one stage for one business date and writes its row to
``meta.run_log`` (the same row whichever runner called it: the local runner,
or ``cohortflow task`` launched by a DolphinScheduler Shell task).
``run_workflow`` runs every task in dependency order; when the latest run of
that date did not finish, it resumes it from the failed task.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cohortflow.config import Config
from cohortflow.dag import Workflow
from cohortflow.progress import plural
from cohortflow.warehouse import Warehouse

Echo = Callable[[str], None]

SUCCESS, FAILED, RUNNING, UPSTREAM_FAILED = "success", "failed", "running", "upstream_failed"


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
    from cohortflow.models import affected_range, build_models, record_build

    start, end = affected_range(ctx.wh, ctx.cfg, ctx.business_date)
    ctx.echo(f"  new data changes {start}..{end}")
    built = build_models(ctx.wh, ctx.cfg, start, end, progress=ctx.echo)
    record_build(ctx.wh, ctx.business_date, built)
    return TaskOutcome(None, sum(n for _, _, n in built.values()), f"{plural(len(built), 'model')} built")


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
    workflow.task(name)  # unknown names fail here, before anything is logged
    run_id = run_id or os.environ.get("COHORTFLOW_RUN_ID") or new_run_id()
    wh.bootstrap()
    started = _log_start(wh, run_id, workflow.name, name, business_date, runner)
    t0 = time.monotonic()
    echo(f"[{name}] {business_date} (run {run_id})")
    try:
        if os.environ.get(FAIL_ENV) == name:
            raise TaskFailed(f"failure injected by {FAIL_ENV}={name}")
        outcome = STAGES[name](TaskContext(cfg, wh, business_date, run_id, echo))
    except Exception as exc:  # every failure is logged, then re-raised as one line
        message = str(exc).strip() or type(exc).__name__
        if not isinstance(exc, TaskFailed | KeyboardInterrupt):
            message = f"{type(exc).__name__}: {message}"
            if os.environ.get("COHORTFLOW_DEBUG"):
                traceback.print_exc()
        try:
            _log_end(wh, run_id, name, started, FAILED, None, message[:4000])
        except Exception as log_exc:  # noqa: BLE001 - the original failure matters more
            echo(f"  (could not write the run log: {log_exc})")
        raise TaskFailed(f"task {name} failed for {business_date}: {message}") from exc
    _log_end(wh, run_id, name, started, SUCCESS, outcome, None)
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
            _log_skipped(wh, run_id, workflow.name, task.name, business_date, "local", f"upstream failed: {', '.join(blocked)}")
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


def rebuild_range(cfg: Config, wh: Warehouse, start: dt.date, end: dt.date, *, echo: Echo = print) -> str:
    """Rebuild every model for exactly ``[start, end]`` from the loaded events, then publish it.

    The as-of date of the rebuilt rows is ``end``. The result equals what the
    nightly runs produced (a test pins this); use it after changing a model or
    an analysis definition.
    """
    from cohortflow.models import build_models, record_build
    from cohortflow.publish import publish

    wh.bootstrap()
    run_id = new_run_id()
    started = _log_start(wh, run_id, "rebuild", "rebuild", end, "cli")
    t0 = time.monotonic()
    echo(f"[rebuild] {start}..{end} (run {run_id})")
    try:
        built = build_models(wh, cfg, start, end, progress=echo, exact_range=True)
        record_build(wh, end, built)
        counts = publish(wh, cfg, end, progress=echo, run_id=run_id)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        _log_end(wh, run_id, "rebuild", started, FAILED, None, message[:4000])
        raise TaskFailed(f"rebuild {start}..{end} failed: {message}") from exc
    outcome = TaskOutcome(None, sum(counts.values()), f"rebuilt {plural(len(built), 'model')} for {start}..{end}")
    _log_end(wh, run_id, "rebuild", started, SUCCESS, outcome, None)
    echo(f"  {outcome.message} in {time.monotonic() - t0:.1f}s")
    return run_id

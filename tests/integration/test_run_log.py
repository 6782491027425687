"""The run log after a crash: every task a dead process left "running" is found and marked interrupted, two of one
run included (a scheduler runs a run's tasks in parallel; one machine crash kills both), on every engine."""

from __future__ import annotations

import contextlib
import datetime as dt

from cohortflow.runner import RUNNING, _log_end, _log_start, _task_alive, mark_interrupted


def _statuses(wh) -> dict[tuple[str, str], str]:
    with wh.begin() as conn:
        rows = wh.execute(conn, "select run_id, task, status from meta.run_log").fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def test_two_dead_tasks_of_one_run_and_one_of_another_are_marked_interrupted(engine, make_project):
    project = make_project(engine)
    wh = project.warehouse()
    try:
        wh.bootstrap()
        d = dt.date(2026, 11, 3)
        _log_start(wh, "run-a", "nightly", "models.funnels", d, "local")
        _log_start(wh, "run-a", "nightly", "models.retention", d, "local")
        _log_start(wh, "run-b", "nightly", "ingest", d, "local")
        done = _log_start(wh, "run-b", "nightly", "validate", d, "local")
        _log_end(wh, "run-b", "validate", done, "success", None, None)
        assert mark_interrupted(wh) == 3
        assert _statuses(wh) == {
            ("run-a", "models.funnels"): "interrupted",
            ("run-a", "models.retention"): "interrupted",
            ("run-b", "ingest"): "interrupted",
            ("run-b", "validate"): "success",
        }
        assert mark_interrupted(wh) == 0
    finally:
        wh.dispose()


def test_a_task_still_running_in_another_process_is_left_running(make_project):
    """PostgreSQL: a live task holds its session lock, so a later attempt leaves it alone."""
    project = make_project("postgres")
    live, later = project.warehouse(), project.warehouse()
    try:
        live.bootstrap()
        d = dt.date(2026, 11, 3)
        started = _log_start(live, "run-a", "nightly", "models", d, "local")
        _log_start(live, "run-a", "nightly", "publish", d, "local")
        with _task_alive(live, "run-a", "models", started):
            assert mark_interrupted(later) == 1
            assert _statuses(later) == {("run-a", "models"): RUNNING, ("run-a", "publish"): "interrupted"}
    finally:
        live.dispose()
        later.dispose()


_HOLDER = """
import sys, time
from cohortflow.config import load_config
from cohortflow.warehouse import Warehouse
wh = Warehouse(load_config(sys.argv[1], environ={}))
name = wh.trino.scratch_table("raw", "tmp_held")
wh.trino.ddl(f"create table {name} (x integer) with (format = 'PARQUET')")
print(name, flush=True)
time.sleep(600)
"""


def test_the_scratch_tables_of_a_killed_process_are_dropped_and_a_live_ones_kept(make_project):
    """Trino: a process killed inside a transaction never drops its scratch tables; the next task does, and leaves
    those of a process still running, and a model's scratch tables while a build of that model holds its lock."""
    import os
    import signal
    import subprocess
    import sys

    import sqlalchemy as sa

    from cohortflow.dag import load_workflows
    from cohortflow.models import load_models
    from cohortflow.runner import TaskFailed, run_task

    project = make_project("trino")
    env = {**os.environ, **project.environ}
    holders = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, str(project.config_path)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    wh = project.warehouse()
    try:
        wh.bootstrap()
        dead, live = (h.stdout.readline().strip() for h in holders)
        assert dead.startswith("raw.tmp_held_") and live.startswith("raw.tmp_held_"), (dead, live)
        holders[0].send_signal(signal.SIGKILL)
        holders[0].wait(timeout=60)
        for name in ("models.scratch_sessions_ordered", "models.scratch_session_events_1_ordered"):
            wh.trino.ddl(f"create table {name} (x integer) with (format = 'PARQUET')")
        with wh.begin() as conn:
            wh.lock(conn, "cohortflow:model:session_events")  # a build of session_events is running
            dropped = wh.trino.sweep(load_models())
        assert sorted(dropped) == sorted([dead, "models.scratch_sessions_ordered"])
        cfg = project.config()
        # The next task sweeps too: what the build of session_events had is gone once its lock is free.
        with contextlib.suppress(TaskFailed):  # (nothing loaded to validate: the sweep comes before the task)
            run_task(cfg, wh, load_workflows()["cohortflow_nightly"], "validate", dt.date(2026, 11, 1), echo=lambda _m: None)
        with wh.trino.autocommit.connect() as other:
            left = {
                f"{r[0]}.{r[1]}"
                for r in other.execute(
                    sa.text(
                        "select table_schema, table_name from information_schema.tables "
                        "where table_name like 'tmp%' or table_name like 'scratch%'"
                    )
                )
            }
        assert left == {live}
    finally:
        for h in holders:
            h.kill()
            h.wait(timeout=60)
        wh.dispose()

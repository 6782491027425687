"""The run log after a crash: every task a dead process left "running" is found and marked interrupted, two of one
run included (a scheduler runs a run's tasks in parallel; one machine crash kills both), on every engine."""

from __future__ import annotations

import datetime as dt

import pytest

from cohortflow.runner import RUNNING, _log_end, _log_start, _task_alive, _task_key, mark_interrupted


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
        dead = [
            ("run-a", "models.funnels", _log_start(wh, "run-a", "nightly", "models.funnels", d, "local")),
            ("run-a", "models.retention", _log_start(wh, "run-a", "nightly", "models.retention", d, "local")),
            ("run-b", "ingest", _log_start(wh, "run-b", "nightly", "ingest", d, "local")),
        ]
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
        if wh.trino is not None:  # no lock file of a dead task is left behind
            assert [key for key in (_task_key(*task) for task in dead) if wh.trino.lock_path(key).exists()] == []
    finally:
        wh.dispose()


def test_a_task_still_running_in_another_process_is_left_running(engine, make_project):
    """A live task holds its lock (PostgreSQL: a session advisory lock; Trino: a file lock), so a later attempt
    leaves it alone."""
    if engine == "duckdb":
        pytest.skip("DuckDB admits one writing process: there is no other live task to leave alone")
    project = make_project(engine)
    live, later = project.warehouse(), project.warehouse()
    try:
        live.bootstrap()
        d = dt.date(2026, 11, 3)
        started = _log_start(live, "run-a", "nightly", "models", d, "local")
        _log_start(live, "run-a", "nightly", "publish", d, "local")
        with _task_alive(live, "run-a", "models", started):
            assert mark_interrupted(later) == 1
            assert _statuses(later) == {("run-a", "models"): RUNNING, ("run-a", "publish"): "interrupted"}
        if live.trino is not None:  # the live task's lock file goes with its lock
            assert not live.trino.lock_path(_task_key("run-a", "models", started)).exists()
    finally:
        live.dispose()
        later.dispose()

"""The bookkeeping a night shares is read once, not once per model or table.

On Trino every statement costs tens of milliseconds whatever it reads (planning, scheduling, the metastore): a
night of the nightly workflow on a few events was about 700 statements and 40 s there, most of them the same
bookkeeping questions asked again for each of the 17 models and 11 published tables. These tests count the
statements of a night on DuckDB (the counting is the engine's business, not the warehouse's) and pin what is read
once: the project's tables made sure of once per process, the change log's latest change and the history's start
once per build, every model's state and every publish state once per publish.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import sqlalchemy as sa

from cohortflow.dag import load_workflows
from cohortflow.runner import run_workflow


def _statements(wh) -> list[str]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(re.sub(r"\s+", " ", statement).lower())

    sa.event.listen(wh.engine, "before_cursor_execute", record)
    return seen


def _night(make_project, dates):
    project = make_project("duckdb", sources=[{"name": "app", "format": "canonical", "path": "events"}])
    for i, d in enumerate(dates):
        folder = project.root / "landing" / "events" / d.isoformat()
        folder.mkdir(parents=True)
        rows = [
            {"distinct_id": f"u{i}", "event_name": "app_start", "event_time": f"{d.isoformat()}T10:00:00.000Z"},
            {"distinct_id": f"u{i}", "event_name": "view_item", "event_time": f"{d.isoformat()}T10:01:00.000Z"},
        ]
        (folder / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return project.config(), project.warehouse(), load_workflows()["cohortflow_nightly"]


def _count(statements: list[str], pattern: str) -> int:
    return sum(1 for s in statements if re.search(pattern, s))


def test_a_night_reads_the_shared_bookkeeping_once(make_project):
    days = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]
    cfg, wh, wf = _night(make_project, days)
    try:
        run_workflow(cfg, wh, wf, days[0], echo=lambda _m: None)
        statements = _statements(wh)
        run_workflow(cfg, wh, wf, days[1], echo=lambda _m: None)
    finally:
        wh.dispose()
    # (the first night made sure of the tables already: the same Warehouse asks no more)
    assert _count(statements, r"create table if not exists meta\.change_log") == 0
    # The models task: one build, 17 models.
    assert _count(statements, r"select coalesce\(max\(change_id\), 0\) from meta\.change_log") == 1
    assert _count(statements, r"select \( ?select min\(event_date\) from raw\.events ?\)") == 1
    built = _count(statements, r"^insert into meta\.model_state")
    assert built >= 10
    # every state at once, once per model built (inside its transaction), never one model's state by name
    assert _count(statements, r"^select .* from meta\.model_state where model_name = ") == 0
    assert _count(statements, r"select model_name, change_id, as_of_date, first_date, fingerprint from meta\.model_state") == built
    # Publish: the states, schemas and tables of every published table in one statement each.
    assert _count(statements, r"^select .* from meta\.publish_state where model_name = ") == 0
    assert _count(statements, r"^select .* from meta\.published_schema where table_name = ") == 0
    assert _count(statements, r"create table if not exists meta\.published_schema") == 1
    assert _count(statements, r"^delete from meta\.publish_state") == 1
    # (and the published tables, made by the first night, are known to exist: none is made again)
    assert _count(statements, r"^drop table reports\.|^create table (if not exists )?reports\.") == 0


def test_a_new_warehouse_makes_sure_of_the_tables_again(make_project):
    days = [dt.date(2026, 11, 1)]
    cfg, wh, wf = _night(make_project, days)
    try:
        run_workflow(cfg, wh, wf, days[0], echo=lambda _m: None)
    finally:
        wh.dispose()
    with wh.engine.begin() as conn:
        conn.execute(sa.text("drop table meta.run_log"))
    again = type(wh)(cfg)
    statements = _statements(again)
    try:
        again.bootstrap()
        again.bootstrap()
        with again.begin() as conn:
            assert again.scalar(conn, "select count(*) from meta.run_log") == 0
    finally:
        again.dispose()
    assert _count(statements, r"create table if not exists meta\.run_log") == 1

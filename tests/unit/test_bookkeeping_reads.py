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

import pytest
import sqlalchemy as sa

from cohortflow.dag import load_workflows
from cohortflow.runner import run_workflow


def _statements(wh) -> list[str]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(re.sub(r"\s+", " ", statement).lower())

    sa.event.listen(wh.engine, "before_cursor_execute", record)
    if wh.trino is not None:  # (DDL and catalog questions run outside the transaction there)
        sa.event.listen(wh.trino.autocommit, "before_cursor_execute", record)
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
    # (their fingerprints and the comments' were made sure of with the project's tables, by the first night)
    assert _count(statements, r"create table if not exists meta\.published_(schema|comments)") == 0
    assert _count(statements, r"^select table_name, fingerprint from meta\.published_(schema|comments)") == 2
    assert _count(statements, r"^delete from meta\.publish_state") == 1
    # (and the published tables, made by the first night, are known to exist: none is made again)
    assert _count(statements, r"^drop table reports\.|^create table (if not exists )?reports\.") == 0
    # nor commented again: their comments are what the contract says
    assert _count(statements, r"^comment on (table|column) reports\.") == 0
    # The analysis definitions did not change: read back, not written again.
    assert _count(statements, r"from meta\.definitions_state") == 1
    assert _count(statements, r"^(delete from|insert into|create table|drop table) meta\.def_") == 0


def test_definitions_are_written_when_they_change_and_when_a_table_is_off(make_project):
    """The definitions are skipped only when the config gives the rows last written and every table has its columns."""
    from cohortflow.analyses import load_definitions
    from cohortflow.config import load_config
    from tests.conftest import write_config

    project = make_project("duckdb", analyses={"funnels": [{"name": "buy", "steps": [{"event": "a"}, {"event": "b"}]}]})
    first = project.config()
    other = load_config(write_config(project.root / "other", analyses={
        "funnels": [{"name": "pay", "steps": [{"event": "a"}, {"event": "c"}]}],  # (as many rows in every table)
    }), environ={})
    wh = project.warehouse()
    wh.bootstrap()

    def funnels(cfg) -> list[tuple]:
        with wh.begin() as conn:
            load_definitions(wh, conn, cfg)
            return [tuple(r) for r in conn.execute(sa.text("select funnel_name, step_count from meta.def_funnels")).fetchall()]

    try:
        assert funnels(first) == [("buy", 2)]
        assert funnels(first) == [("buy", 2)]
        assert funnels(other) == [("pay", 2)]
        assert funnels(first) == [("buy", 2)]
        # a table dropped, or given other columns, behind the state's back is made again
        with wh.begin() as conn:
            conn.execute(sa.text("drop table meta.def_funnels"))
        assert funnels(first) == [("buy", 2)]
        with wh.begin() as conn:
            conn.execute(sa.text("drop table meta.def_funnels"))
            conn.execute(sa.text("create table meta.def_funnels (funnel_name varchar, step_count bigint)"))
            conn.execute(sa.text("insert into meta.def_funnels values ('stale', 9)"))
        assert funnels(first) == [("buy", 2)]
        with wh.begin() as conn:
            assert len(conn.execute(sa.text("select * from meta.def_funnels")).keys()) > 2  # the code's columns again
    finally:
        wh.dispose()


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


def _bootstrap_again(project, between=lambda wh: None):
    """The project's tables made by one Warehouse, ``between`` run with it, then a new Warehouse that makes sure of
    them: that one (to dispose of) and the statements of its bootstrap."""
    first = project.warehouse()
    try:
        first.bootstrap()
        between(first)
    finally:
        first.dispose()
    again = project.warehouse()
    statements = _statements(again)
    again.bootstrap()
    return again, statements


def _ddl(statements: list[str]) -> list[str]:
    return [s for s in statements if re.match(r"(create (schema|table)|alter|update|drop) ", s)]


def test_a_new_warehouse_over_complete_tables_makes_nothing(make_project, engine):
    """One catalog question, and no DDL, when every table and column is there (on Trino each statement costs tens of
    milliseconds, found or not)."""
    again, statements = _bootstrap_again(make_project(engine))
    again.dispose()
    assert _count(statements, r"information_schema") == 1, statements
    assert _ddl(statements) == []


def test_a_missing_table_and_a_missing_column_are_made_and_filled(make_project):
    """What the catalog lacks is made, and only that: a dropped bookkeeping table, and a column that a migration adds
    (filled for the rows already there)."""

    def damage(wh) -> None:
        with wh.engine.begin() as conn:
            conn.execute(sa.text(
                "insert into raw.quarantine values (date '2026-11-01', 'f.jsonl', 3, 'ark', 'not json', null, 'x', 'ark')"
            ))
            conn.execute(sa.text("alter table raw.quarantine drop column source_name"))
            conn.execute(sa.text("drop table meta.published_comments"))

    again, statements = _bootstrap_again(make_project("duckdb"), damage)
    try:
        with again.begin() as conn:
            rows = again.execute(conn, "select source_format, source_name from raw.quarantine").fetchall()
            assert again.scalar(conn, "select count(*) from meta.published_comments") == 0
    finally:
        again.dispose()
    assert [tuple(r) for r in rows] == [("ark", "ark")]
    made = _ddl(statements)
    assert [re.match(r"(?:create table (?:if not exists )?|alter table |update )([\w.]+)", s).group(1) for s in made] == [
        "meta.published_comments", "raw.quarantine", "raw.quarantine"
    ], made


def test_every_bootstrap_statement_says_what_it_makes():
    from cohortflow.warehouse import BASE_TABLES, WarehouseError, bootstrap_needed

    for ddl in BASE_TABLES:
        bootstrap_needed(ddl, {})  # (raises for a statement it cannot read)
    assert bootstrap_needed("alter table meta.ingest_ledger add column if not exists damage varchar", {"meta.ingest_ledger": {"damage"}}) is False
    assert bootstrap_needed("alter table meta.ingest_ledger add column if not exists damage varchar", {"meta.ingest_ledger": {"run_id"}}) is True
    assert bootstrap_needed("create table if not exists meta.run_log (run_id varchar)", {"meta.run_log": {"run_id"}}) is False
    assert bootstrap_needed("create table if not exists meta.run_log (run_id varchar)", {"meta.run_logs": set()}) is True
    with pytest.raises(WarehouseError, match="neither a table nor a column"):
        bootstrap_needed("create index if not exists x on raw.events (load_date)", {})


def test_publish_comments_a_table_only_when_its_comments_change(make_project):
    """A night in a new process gives no comment (on Trino each is a statement of its own, about 100 a night); a
    table whose recorded comments differ from the contract's is commented again, and only that one."""
    days = [dt.date(2026, 11, 1), dt.date(2026, 11, 2)]
    cfg, wh, wf = _night(make_project, days)
    run_workflow(cfg, wh, wf, days[0], echo=lambda _m: None)
    first = wh.scalar
    with wh.begin() as conn:
        recorded = first(conn, "select count(*) from meta.published_comments")
        wh.execute(conn, "update meta.published_comments set fingerprint = 'older' where table_name = 'lifecycle_daily'")
        wh.execute(conn, "comment on table reports.lifecycle_daily is 'an older comment'")
    wh.dispose()
    again = type(wh)(cfg)
    statements = _statements(again)
    try:
        run_workflow(cfg, again, wf, days[1], echo=lambda _m: None)
        with again.begin() as conn:
            comment = again.scalar(
                conn, "select comment from duckdb_tables() where schema_name = 'reports' and table_name = 'lifecycle_daily'"
            )
            fingerprints = dict(again.execute(conn, "select table_name, fingerprint from meta.published_comments").fetchall())
    finally:
        again.dispose()
    from cohortflow.contract import table

    assert recorded == 11
    commented = {re.match(r"comment on (?:table|column) reports\.(\w+)", s).group(1) for s in statements if re.match(r"comment on (table|column) reports\.", s)}
    assert commented == {"lifecycle_daily"}
    assert comment == table("lifecycle_daily").comment
    assert fingerprints["lifecycle_daily"] == table("lifecycle_daily").comments_fingerprint


def test_unchanged_definitions_are_read_not_written(make_project, engine):
    """On every engine (on Trino the definition tables carry the whole-table partition column besides their own)."""
    from cohortflow.analyses import load_definitions

    project = make_project(engine)
    cfg = project.config()
    wh = project.warehouse()
    try:
        wh.bootstrap()
        with wh.begin() as conn:
            first = load_definitions(wh, conn, cfg)
        statements = _statements(wh)
        with wh.begin() as conn:
            again = load_definitions(wh, conn, cfg)
    finally:
        wh.dispose()
    assert first == again and sum(first.values()) > 0
    written = [s for s in statements if re.match(r"(delete from|insert into|create table|drop table) meta\.", s)]
    assert written == [] and len(statements) <= 3, statements

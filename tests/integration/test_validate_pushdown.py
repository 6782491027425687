"""Validation pushed down to a server (PostgreSQL, Trino) finds a duplicate among a day's rows, and on PostgreSQL reads
the day through an equality on load_date, which it plans on its statistics (Trino: which prunes the other days'
partitions), not through extract(year/month/day) filters.

With GX's daily partitioner PostgreSQL estimated one row for the day and joined it to its own key counts in a nested
loop: the uniqueness check of a day of 66,477 rows ran for over 60 s (0.08 s with the equality). A day of a product
with 100,000 daily users would not have finished. The plan, not a time, is what is checked here.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from cohortflow.events import RAW_EVENT_SCHEMA
from cohortflow.validate import validate_day

D = dt.date(2024, 5, 10)


def _rows(day: dt.date, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        at = dt.datetime(day.year, day.month, day.day, 9) + dt.timedelta(seconds=i)
        rows.append({
            "event_id": f"{day}-{i}", "event_name": "app_open", "distinct_id": f"user-{i % 50}", "event_time": at,
            "event_date": day, "received_at": at, "source_format": "ark", "properties": "{}", "is_activity": True,
            "load_date": day, "ingest_file": f"ark/{day}/part-0.jsonl.gz", "ingest_line": i + 1, "source_name": "app",
        })
    return rows


@pytest.fixture
def captured():
    """Every statement sent through any SQLAlchemy engine while the test runs (GX makes its own engine)."""
    statements: list[tuple[Engine, str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        statements.append((conn.engine, statement, parameters))

    event.listen(Engine, "before_cursor_execute", capture)
    yield statements
    event.remove(Engine, "before_cursor_execute", capture)


def test_the_day_is_read_through_an_equality_on_load_date(engine, make_project, captured):
    if engine == "duckdb":
        pytest.skip("DuckDB validates frames of the day read by cohortflow itself, not through GX's SQL")
    project = make_project(engine, tracking_plan={"events": [{"name": "app_open"}]})
    cfg = project.config()
    wh = project.warehouse()
    try:
        wh.bootstrap()
        day_rows = _rows(D, 400)
        day_rows[7]["event_id"] = day_rows[6]["event_id"]  # one duplicate: the uniqueness check must find it
        with wh.begin() as conn:
            for rows in (_rows(D - dt.timedelta(days=1), 400), day_rows, _rows(D + dt.timedelta(days=1), 400)):
                wh.load_arrow(conn, "raw.events", pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA))
        if engine == "postgres":
            with wh.begin() as conn:
                wh.execute(conn, "analyze raw.events")  # what autovacuum does for a table of millions of rows
        if engine == "trino":
            # GX reads only the day's partition: the next day's file is no longer Parquet, which fails any read of
            # its partition (GX's daily partitioner, extract(year/month/day) filters, read them all). (The earlier
            # day is read on purpose: the volume check compares the day with the trailing days.)
            with wh.begin() as conn:
                paths = [r[0] for r in wh.execute(conn, 'select distinct "$path" from raw.events where load_date > :d', {"d": D}).fetchall()]
            assert len(paths) == 1, paths
            for path in paths:
                filesystem, file = wh.trino._folder(path)
                with filesystem.open_output_stream(file) as out:
                    out.write(b"not a Parquet file")
        captured.clear()
        outcome = validate_day(wh, cfg, D, "run-1")
        assert outcome.row_count == 400
        assert [r.label for r in outcome.failed_critical] == ["expect_compound_columns_to_be_unique(source_name+event_id)"]
        assert outcome.failed_critical[0].observed.startswith("2 of 400 rows unexpected")

        if engine == "trino":
            gx_reads = [s for e, s, _ in captured if e is not wh.engine and "tmp_validate_" in s]
            assert gx_reads, "GX read no view of the day"
            with wh.begin() as conn:
                left = wh.execute(conn, "select table_name from information_schema.tables where table_schema = 'raw' and table_name like 'tmp_validate%'").fetchall()
            assert left == [], f"the day's view was not dropped: {left}"
            return
        # GX's own engine (cohortflow's statements go through wh.engine)
        gx_reads = [(s, p) for e, s, p in captured if e is not wh.engine and "raw.events" in s]
        assert gx_reads, "GX sent no statement reading raw.events"
        for statement, _ in gx_reads:
            assert f"load_date = date '{D}'" in statement, statement[:300]
            assert "extract(" not in statement.lower(), statement[:300]
        unique = [(s, p) for s, p in gx_reads if "_num_rows" in s]
        assert unique, "no uniqueness statement was sent"
        with wh.begin() as conn:
            for statement, params in unique:
                plan = "\n".join(r[0] for r in conn.exec_driver_sql("explain " + statement, params).fetchall())
                assert "Nested Loop" not in plan, plan
    finally:
        wh.dispose()


def test_a_date_that_is_not_a_date_is_refused_before_any_sql():
    from cohortflow.validate import _day_batch

    class _Wh:
        dialect = "postgres"

    for bad in (dt.datetime(2024, 5, 10, 1), "2024-05-10'; drop table raw.events; --"):
        with pytest.raises(TypeError, match="must be a date"), _day_batch(_Wh(), bad):  # type: ignore[arg-type]
            pass

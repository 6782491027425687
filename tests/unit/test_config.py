"""The project config: validated on load, errors name the key, env overrides with one prefix, no secrets in files."""

from __future__ import annotations

import datetime as dt

import pytest

from cohortflow.config import ConfigError, load_config, parse_business_date
from tests.conftest import write_config


def test_the_example_config_is_valid(tmp_path):
    from cohortflow.demo_project import write_demo_config

    cfg = load_config(write_demo_config(tmp_path), environ={})
    assert cfg.timezone == "Asia/Shanghai"
    assert cfg.sources[0].format == "ark"
    assert cfg.warehouse_url == f"duckdb:///{(tmp_path / 'target' / 'warehouse.duckdb').resolve()}"


@pytest.mark.parametrize(
    ("overrides", "key", "why"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown IANA time zone"),
        ({"sources": [{"name": "app", "format": "csv", "path": "x"}]}, "sources.0.format", "Input should be"),
        ({"sources": [{"name": "app", "format": "ark", "path": "/etc"}]}, "sources.0.path", "relative path"),
        ({"sources": []}, "sources", "at least 1"),
        ({"ingest": {"lookback_days": 0}}, "ingest.lookback_days", "greater than or equal to 1"),
        ({"ingest": {"lookbak_days": 3}}, "ingest.lookbak_days", "unknown key"),
        ({"warehouse": {"url": "mysql://x"}}, "warehouse.url", "duckdb"),
        ({"warehouse": {"url": "postgresql+psycopg://u:secret@h/db"}}, "warehouse.url", "must not contain a password"),
        ({"warehouse": {"memory_limit": "lots"}}, "warehouse.memory_limit", "a size like '3GB'"),
        ({"warehouse": {"memory_limit": "1MB"}}, "warehouse.memory_limit", "at least 128MB"),
        ({"ingest": {"memory_limit": "100 MiB"}}, "ingest.memory_limit", "at least 128MB"),
        ({"ingest": {"memory_limit": "1G"}}, "ingest.memory_limit", "a size like '3GB'"),
        ({"warehouse": {"url": "postgresql+psycopg://u@h/db", "threads": 2}}, "warehouse", "DuckDB warehouse only"),
        ({"schedule": {"cron": "0 2 * * *"}}, "schedule.cron", "7-field Quartz"),
        ({"tracking_plan": {"events": [{"name": "a", "required": ["p"]}]}}, "tracking_plan.events.0", "not declared"),
    ],
)
def test_a_bad_value_names_the_key_and_why(tmp_path, overrides, key, why):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, **overrides), environ={})
    assert f"{key}:" in str(err.value) and why in str(err.value)


def test_a_password_in_the_file_is_refused(tmp_path):
    path = write_config(tmp_path, warehouse={"url": "duckdb:///x.duckdb", "password": "p"})
    with pytest.raises(ConfigError, match="COHORTFLOW_WAREHOUSE__PASSWORD"):
        load_config(path, environ={})


def test_environment_overrides_with_one_prefix(tmp_path):
    path = write_config(tmp_path)
    env = {
        "COHORTFLOW_WAREHOUSE__URL": "postgresql+psycopg://u@db.example:5432/a",
        "COHORTFLOW_WAREHOUSE__PASSWORD": "yes",  # stays a string, never YAML-parsed
        "COHORTFLOW_INGEST__LOOKBACK_DAYS": "14",
        "COHORTFLOW_TIMEZONE": "Europe/Berlin",
        "COHORTFLOW_RUN_ID": "not-a-config-key",  # the CLI's own variables are left alone
    }
    cfg = load_config(path, environ=env)
    assert cfg.warehouse.url.startswith("postgresql+psycopg://u@db.example")
    assert cfg.warehouse.password == "yes"
    assert cfg.ingest.lookback_days == 14
    assert cfg.timezone == "Europe/Berlin"
    assert "yes" not in repr(cfg.warehouse) and "password" not in cfg.model_dump(mode="json")["warehouse"]


def test_a_bad_environment_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="ingest.lookback_days"):
        load_config(write_config(tmp_path), environ={"COHORTFLOW_INGEST__LOOKBACK_DAYS": "many"})


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="cohortflow demo"):
        load_config(tmp_path / "nope.yml", environ={})


def test_analysis_definitions_are_validated(tmp_path):
    funnels = [{"name": "f", "steps": [{"event": "a"}], "window_seconds": 60}]
    with pytest.raises(ConfigError, match=r"analyses\.funnels\.0\.steps"):
        load_config(write_config(tmp_path, analyses={"funnels": funnels}), environ={})
    bad_segment_ref = [{"name": "f", "steps": [{"event": "a"}, {"event": "b"}], "segment": "nobody"}]
    with pytest.raises(ConfigError, match="segment 'nobody' is not defined"):
        load_config(write_config(tmp_path, analyses={"funnels": bad_segment_ref}), environ={})
    bad_breakdown_ref = [{"name": "r", "breakdown_segment": "nobody"}]
    with pytest.raises(ConfigError, match="breakdown_segment 'nobody' is not defined"):
        load_config(write_config(tmp_path, analyses={"retention": bad_breakdown_ref}), environ={})
    segments = [{"name": "buyers", "rule": {"did_event": "buy", "days": 7}}]
    both = [{"name": "f", "steps": [{"event": "a"}, {"event": "b"}], "breakdown": "platform", "breakdown_segment": "buyers"}]
    with pytest.raises(ConfigError, match="breakdown and breakdown_segment cannot both be set"):
        load_config(write_config(tmp_path, analyses={"funnels": both, "segments": segments}), environ={})


def test_definition_tables_follow_the_code(tmp_path):
    """A definition table from an older version (other columns) is re-created; it only ever holds config rows."""
    import sqlalchemy as sa

    from cohortflow.analyses import load_definitions
    from cohortflow.warehouse import Warehouse

    cfg = load_config(write_config(tmp_path), environ={})
    wh = Warehouse(cfg)
    try:
        wh.bootstrap()
        with wh.begin() as conn:
            conn.execute(sa.text("create table meta.def_retention (retention_name varchar, old_column integer)"))
            conn.execute(sa.text("insert into meta.def_retention values ('stale', 1)"))
        with wh.begin() as conn:
            load_definitions(wh, conn, cfg)
            names = [r[0] for r in conn.execute(sa.text("select retention_name from meta.def_retention")).fetchall()]
            columns = [r[0] for r in conn.execute(sa.text(
                "select column_name from information_schema.columns where table_schema = 'meta' and table_name = 'def_retention'"
            )).fetchall()]
    finally:
        wh.dispose()
    assert "stale" not in names and "breakdown_segment" in columns and "old_column" not in columns


@pytest.mark.parametrize("text", ["2026-11-05", "20261105", " 2026-11-05 "])
def test_business_dates_accept_both_forms(text):
    assert parse_business_date(text) == dt.date(2026, 11, 5)


@pytest.mark.parametrize("text", ["2026115", "yesterday", "05/11/2026"])
def test_bad_business_dates_are_refused(text):
    with pytest.raises(ValueError, match="YYYY-MM-DD or YYYYMMDD"):
        parse_business_date(text)


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "20260230"])
def test_dates_that_are_not_in_the_calendar_are_named_as_such(text):
    with pytest.raises(ValueError, match="no such day in the calendar"):
        parse_business_date(text)


def test_duckdb_memory_limit_and_threads_reach_the_engine(tmp_path):
    import sqlalchemy as sa

    from cohortflow.warehouse import Warehouse

    cfg = load_config(write_config(tmp_path, warehouse={"url": "duckdb:///w.duckdb", "memory_limit": "700MB", "threads": 1}), environ={})
    wh = Warehouse(cfg)
    try:
        with wh.begin() as conn:
            limit, threads = conn.execute(sa.text("select current_setting('memory_limit'), current_setting('threads')")).one()
    finally:
        wh.dispose()
    assert (limit, int(threads)) == ("667.5 MiB", 1)

"""PostgreSQL as a shared production warehouse: concurrency, atomic publish, errors, access."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from cohortflow.config import load_config
from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.runner import run_workflow
from cohortflow.warehouse import Warehouse, WarehouseError
from tests.conftest import Project, pg_settings

START = dt.date(2026, 11, 1)
DAYS = 5


@pytest.fixture
def pg_project(tmp_path):
    pg_settings()
    project = Project(tmp_path / "p", "postgres", timezone="Asia/Shanghai")
    generate(DemoSpec(users=200, days=DAYS, start_date=START, timezone="Asia/Shanghai", seed=3), project.landing)
    yield project
    project.cleanup()


def test_the_test_databases_sort_text_linguistically(make_project):
    """Every PostgreSQL test runs on a database whose default collation is linguistic (tests/conftest.py
    PG_TEST_DATABASE), as production databases usually are: what the models order by text must say collate "C"."""
    wh = make_project("postgres").warehouse()
    try:
        with wh.begin() as conn:
            assert wh.scalar(conn, "select 'B' < 'a'") is False
            assert wh.scalar(conn, "select 'B' collate \"C\" < 'a'") is True
    finally:
        wh.dispose()


def test_a_link_tie_between_files_is_broken_in_byte_order_on_every_engine(make_project):
    """Two links of one anonymous id at the same time and receipt, in files named B.jsonl and a.jsonl: the first by
    (time, receipt, file in byte order, line) wins, B.jsonl's ('B' < 'a' in bytes, not in en-US), on DuckDB and on a
    PostgreSQL database that sorts text linguistically."""
    day = dt.date(2026, 11, 1)
    link = {"event_name": "$alias", "distinct_id": "anon", "event_time": "2026-11-01T10:00:00Z",
            "received_at": "2026-11-01T10:00:01Z", "is_activity": False, "link_anonymous_id": "anon"}
    files = {"B.jsonl": {**link, "event_id": "b", "link_login_id": "from-B"},
             "a.jsonl": {**link, "event_id": "a", "link_login_id": "from-a"}}
    winners = {}
    for engine in ("duckdb", "postgres"):
        project = make_project(engine, name=engine, sources=[{"name": "app", "format": "canonical", "path": "events"}])
        folder = project.root / "landing" / "events" / day.isoformat()
        folder.mkdir(parents=True)
        for name, event in files.items():
            (folder / name).write_text(json.dumps(event) + "\n", encoding="utf-8")
        cfg, wh = project.config(), project.warehouse()
        try:
            run_workflow(cfg, wh, load_workflows()["cohortflow_nightly"], day, echo=lambda _m: None)
            with wh.begin() as conn:
                winners[engine] = wh.execute(conn, "select anonymous_id, login_id from models.stg_identities").fetchall()
        finally:
            wh.dispose()
    assert winners == {"duckdb": [("anon", "from-B")], "postgres": [("anon", "from-B")]}


def _cli(project: Project, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **project.environ, "COHORTFLOW_CONFIG": str(project.config_path)}
    return subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _state(project: Project) -> dict[str, list]:
    wh = project.warehouse()
    try:
        with wh.begin() as conn:
            return {
                "au": wh.execute(conn, "select * from reports.active_users_daily order by 1").fetchall(),
                "em": wh.execute(conn, "select * from reports.event_metrics_daily order by 1, 2").fetchall(),
                "raw": wh.execute(conn, "select load_date, count(*) from raw.events group by 1 order by 1").fetchall(),
            }
    finally:
        wh.dispose()


def test_parallel_runs_of_two_dates_both_succeed(pg_project):
    assert _cli(pg_project, "run", "--date", str(START)).returncode == 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cohortflow.cli", "run", "--date", str(START + dt.timedelta(days=i))],
            env={**os.environ, **pg_project.environ, "COHORTFLOW_CONFIG": str(pg_project.config_path)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in (1, 2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    state = _state(pg_project)
    dates = [r[0] for r in state["au"]]
    assert len(dates) == len(set(dates)), "a date partition was written twice"
    keys = [(r[0], r[1]) for r in state["em"]]
    assert len(keys) == len(set(keys))
    assert [r[0] for r in state["raw"]] == [START + dt.timedelta(days=i) for i in range(3)]


def test_two_runs_of_the_same_date_do_not_corrupt_anything(pg_project):
    assert _cli(pg_project, "run", "--date", str(START)).returncode == 0
    reference = _state(pg_project)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cohortflow.cli", "run", "--restart", "--date", str(START)],
            env={**os.environ, **pg_project.environ, "COHORTFLOW_CONFIG": str(pg_project.config_path)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    # Each either succeeds (it waited for the other) or fails with a clear message; never corrupts.
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0 or "error:" in out, out
    assert _state(pg_project) == reference


def test_a_reader_never_sees_a_half_published_state(pg_project):
    """A BI query loops in another connection while dates are published; each answer is a complete state."""
    assert _cli(pg_project, "run", "--date", str(START)).returncode == 0
    url, password = pg_project.db_url, pg_project.password
    reader = sa.create_engine(sa.make_url(url).set(password=password))
    # One statement sees one snapshot: the published tables must agree with each other in it.
    probe = sa.text(
        """
        select
            (select count(*) from reports.active_users_daily),
            (select coalesce(sum(dau), 0) from reports.active_users_daily),
            (select coalesce(sum(count_users), 0) from reports.event_metrics_daily where is_activity
                and event_name = 'app_start'),
            (select count(distinct event_date) from reports.event_metrics_daily)
        """
    )
    seen: list[tuple] = []
    stop = threading.Event()

    def loop() -> None:
        with reader.connect() as conn:
            while not stop.is_set():
                seen.append(tuple(conn.execute(probe).one()))
                conn.commit()

    t = threading.Thread(target=loop)
    t.start()
    try:
        for i in range(1, DAYS):
            assert _cli(pg_project, "run", "--date", str(START + dt.timedelta(days=i))).returncode == 0
    finally:
        stop.set()
        t.join()
        reader.dispose()
    # Consistent states: the active-user table and the event-metric table cover the same dates.
    for rows, _, _, metric_dates in seen:
        assert rows == metric_dates, f"mixed state: {rows} active-user dates vs {metric_dates} event-metric dates"
    assert len({s[0] for s in seen}) >= 2, "the reader should have observed more than one published state"


def test_wrong_password_gives_one_line_without_the_password(tmp_path):
    url, _ = pg_settings()
    project = Project(tmp_path, "duckdb")
    env = {"COHORTFLOW_WAREHOUSE__URL": url, "COHORTFLOW_WAREHOUSE__PASSWORD": "n0t-the-Secret-9"}
    cfg = load_config(project.config_path, environ=env)
    with pytest.raises(WarehouseError) as err:
        Warehouse(cfg).bootstrap()
    msg = str(err.value)
    assert "\n" not in msg and "n0t-the-Secret-9" not in msg
    assert "127.0.0.1" in msg and "password authentication failed" in msg
    proc = subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", "run", "--date", "2026-11-01", "--config", str(project.config_path)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "n0t-the-Secret-9" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "127.0.0.1" in proc.stderr


def test_unreachable_server_gives_one_line_naming_the_host(tmp_path):
    project = Project(tmp_path, "duckdb")
    env = {"COHORTFLOW_WAREHOUSE__URL": "postgresql+psycopg://cohortflow@127.0.0.1:9/x", "COHORTFLOW_WAREHOUSE__PASSWORD": "pw-Unseen-1"}
    proc = subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", "run", "--date", "2026-11-01", "--config", str(project.config_path)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "127.0.0.1" in err and "pw-Unseen-1" not in err, err


def test_password_never_reaches_the_run_log_or_output(pg_project):
    proc = _cli(pg_project, "run", "--date", str(START))
    assert proc.returncode == 0
    pw = pg_project.password
    assert pw not in proc.stdout + proc.stderr
    check = _cli(pg_project, "check-config")
    assert pw not in check.stdout and "***" in check.stdout
    wh = pg_project.warehouse()
    with wh.begin() as conn:
        logged = wh.execute(conn, "select coalesce(string_agg(coalesce(error, ''), ' '), '') from meta.run_log").scalar()
    wh.dispose()
    assert pw not in logged


def test_the_reader_role_sees_reports_only(pg_project):
    assert _cli(pg_project, "run", "--date", str(START)).returncode == 0
    role = "bi_" + pg_project.db_url.rsplit("/", 1)[1][-8:]
    env_pw = "reader-pw-1"
    proc = subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", "grant-reader", "--role", role],
        env={**os.environ, **pg_project.environ, "COHORTFLOW_CONFIG": str(pg_project.config_path), "COHORTFLOW_READER_PASSWORD": env_pw},
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert env_pw not in proc.stdout
    url = sa.make_url(pg_project.db_url).set(username=role, password=env_pw)
    bi = sa.create_engine(url)
    try:
        with bi.connect() as conn:
            assert conn.execute(sa.text("select count(*) from reports.active_users_daily")).scalar() >= 1
            comment = conn.execute(sa.text("select obj_description('reports.active_users_daily'::regclass)")).scalar()
            assert comment and "active" in comment.lower()
        for table in ("raw.events", "meta.run_log", "models.active_users_daily"):
            with bi.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(f"select 1 from {table} limit 1"))
        with bi.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            conn.execute(sa.text("create table reports.x (a int)"))
    finally:
        bi.dispose()
        # The role's grants live in the test database: drop it first, then the (cluster-wide) role.
        pg_project.cleanup()
        admin = sa.create_engine(sa.make_url(pg_project.db_url).set(database="cohortflow", password=pg_project.password))
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop role if exists "{role}"'))
        admin.dispose()


def _insert_events(wh: Warehouse, conn, *, count: int, per_day: int, spacing: str) -> None:
    """``count`` events of 50 users into raw.events, ``per_day`` on each event and load date from 2025-01-01 on,
    event times ``spacing`` apart, ingest_line 0 .. count - 1 (PostgreSQL SQL, run as written)."""
    wh.run(
        conn,
        "insert into raw.events (event_id, event_name, distinct_id, event_time, event_date, received_at, "
        "source_format, properties, is_activity, load_date, ingest_file, ingest_line, source_name) "
        f"select 'e' || g, 'app_open', 'u' || (g % 50), timestamp '2025-01-01' + g * interval '{spacing}', "
        f"date '2025-01-01' + g / {per_day}, timestamp '2025-01-01' + g * interval '{spacing}', 'ark', '{{}}', "
        f"true, date '2025-01-01' + g / {per_day}, 'f', g, 'app' from generate_series(0, {count - 1}) as g",
    )


def test_the_nights_date_filters_read_through_indexes_also_on_an_older_warehouse(pg_project):
    """A night selects the arrival date's copies (load_date) and the models the dates a change reaches (event_date):
    on PostgreSQL through indexes, created also on a warehouse made before they existed, so a night's cost does not
    grow with the months of history; the identity links (read by every model through stg_identities) through a
    partial index, not a scan of every event. The plan is checked, not a time."""
    from cohortflow.models import create_views
    from cohortflow.warehouse import POSTGRES_INDEXES

    wh = pg_project.warehouse()
    try:
        wh.bootstrap()
        with wh.begin() as conn:  # a warehouse from before the indexes
            for name in ("events_load_date", "events_event_date", "duplicates_load_date", "events_identity_links"):
                wh.run(conn, f"drop index raw.{name}")
        wh.dispose()
        wh = pg_project.warehouse()  # the first process after the upgrade (a process makes sure of its tables once)
        wh.bootstrap()
        with wh.begin() as conn:  # (statements in PostgreSQL SQL, run as written)
            made = {r[0] for r in wh.run(conn, "select indexdef from pg_indexes where schemaname = 'raw'").fetchall()}
            assert len(made) == len(POSTGRES_INDEXES) == 4, made
            # A year of days, 200 rows each: a filter on one date must not read them all.
            _insert_events(wh, conn, count=73001, per_day=200, spacing="3 minutes")
            wh.run(  # one event in a thousand links its id to a login
                conn,
                "update raw.events set link_anonymous_id = distinct_id, link_login_id = 'login' || ingest_line "
                "where ingest_line % 1000 = 0",
            )
            wh.run(conn, "insert into raw.duplicates select * from raw.events where ingest_line % 100 = 0")
            wh.run(conn, "analyze raw.events")
            wh.run(conn, "analyze raw.duplicates")
            create_views(wh, conn)
            for sql in (
                "select count(*) from raw.events where load_date = date '2025-06-01'",
                "delete from raw.duplicates where load_date = date '2025-06-01'",
                "select count(*) from raw.events where event_date between date '2025-06-01' and date '2025-06-03'",
                "select count(*) from models.stg_identities",
            ):
                plan = "\n".join(r[0] for r in wh.run(conn, f"explain {sql}").fetchall())
                assert "Seq Scan" not in plan and "Index" in plan, (sql, plan)
    finally:
        wh.dispose()


def test_re_judging_the_window_joins_the_days_keys_instead_of_a_lookup_per_stored_row(pg_project):
    """A load re-judges the copies of its event ids stored on the dates around it. PostgreSQL cannot turn an EXISTS
    under an OR into a join: written that way, it scanned the day's keys once per stored row, quadratic in the day
    (a 5M-event month stalled for over 30 minutes on its second date). The plan is checked, not a time."""
    from cohortflow.ingest import _OTHER_DATES_TOUCHED

    wh = pg_project.warehouse()
    try:
        wh.bootstrap()
        with wh.begin() as conn:  # (statements in PostgreSQL SQL, run as written)
            _insert_events(wh, conn, count=100000, per_day=20000, spacing="1 second")
            wh.run(conn, "insert into raw.duplicates select * from raw.events where ingest_line % 10 = 0")
            wh.run(conn, "analyze raw.events")
            wh.run(conn, "analyze raw.duplicates")
            # the keys of a load of 2025-01-03: copies of a third of the events stored around it
            wh.run(
                conn, "create temporary table load_keys as select source_name, event_id from raw.events where ingest_line % 3 = 0"
            )
            wh.run(conn, "analyze load_keys")
            for table in ("raw.events", "raw.duplicates"):
                sql = f"select source_name, event_id from {table} as t where {_OTHER_DATES_TOUCHED}"
                params = {"d": dt.date(2025, 1, 3), "lookback": 3}
                plan = "\n".join(r[0] for r in conn.execute(sa.text("explain " + sql), params))
                assert "SubPlan" not in plan and "Semi Join" in plan, (table, plan)
    finally:
        wh.dispose()


def test_models_reading_named_events_filter_the_scan_of_the_events_by_name(pg_project):
    """The models that read a few named events (funnel steps, retention sides, frequency retention, segment rules)
    check the names in the scan of raw.events, before models.stg_events joins every event to the identity map:
    PostgreSQL keeps `event_name in (select ...)` or a join on the name above the view's left join, and joined every
    event of the range first (warehouse._one_of). The plan is checked, not a time."""
    import re

    from cohortflow.analyses import load_definitions, model_params
    from cohortflow.models import create_views, load_models, model_statements

    wh = pg_project.warehouse()
    try:
        wh.bootstrap()
        with wh.begin() as conn:  # (statements in PostgreSQL SQL, run as written)
            _insert_events(wh, conn, count=20000, per_day=2000, spacing="1 minute")
            wh.run(conn, "analyze raw.events")
            create_views(wh, conn)
            load_definitions(wh, conn, pg_project.config())
            models = load_models()
            for model in models.values():  # every model's table, empty
                for statement in model_statements(model, "postgres"):
                    if statement.lstrip().lower().startswith("create table"):
                        wh.run(conn, statement)
            params = {**model_params(pg_project.config()), "start_date": dt.date(2025, 1, 1), "end_date": dt.date(2025, 1, 10),
                      "as_of_date": dt.date(2025, 1, 10), "first_date": dt.date(2025, 1, 1), "scoped": False}
            for name in ("funnel_user_steps", "retention_user_cohorts", "frequency_retention", "segment_membership_daily"):
                insert = next(s for s in model_statements(models[name], "postgres") if s.lstrip().lower().startswith("insert"))
                plan = "\n".join(r[0] for r in conn.execute(sa.text("explain " + insert), {**params, "model_name": name}))
                # the scan nodes of raw.events (not the identity links' partial index) and their conditions
                scans = re.findall(r"Scan (?:using events_\w+ )?on events \w*.*\n((?:\s+(?:Filter|Index Cond|Recheck Cond).*\n)*)", plan + "\n")
                assert any("event_name = ANY" in conditions for conditions in scans), (name, plan)
    finally:
        wh.dispose()

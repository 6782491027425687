"""Shared fixtures: a project config per test, and the warehouse engines to run on.

Tests that take the ``engine`` fixture run once on DuckDB, PostgreSQL and
Trino. The PostgreSQL server is the throwaway cluster that ``scripts/test.sh``
starts (``scripts/pgcluster.sh``); its URL and password come from
``COHORTFLOW_TEST_PG_URL`` / ``COHORTFLOW_TEST_PG_PASSWORD``. The Trino cluster
is the one ``scripts/trino.sh`` starts (``COHORTFLOW_TEST_TRINO_*``, from
``scripts/trino.sh env``); each test project gets a Hive catalog of its own.
Without them the variants are skipped locally, and fail under CI
(``CI=true``), where skipping would hide a missing server.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from cohortflow.config import Config, load_config
from cohortflow.warehouse import Warehouse

ENGINES = ["duckdb", "postgres", "trino"]

# Tests of one PyDolphinScheduler SDK generation run where it is installed: the main test
# environment has 3.1.1 (extra ds31); scripts/test.sh runs the 4.1.0 ones in .venv-ds32.
SDK_MARKERS = {"sdk31": ("3.1.1", ".venv (extra ds31)"), "sdk32": ("4.1.0", ".venv-ds32 (extra ds32)")}


def installed_sdk() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("apache-dolphinscheduler")
    except importlib.metadata.PackageNotFoundError:
        return None


def pytest_runtest_setup(item) -> None:
    for marker, (version, where) in SDK_MARKERS.items():
        if item.get_closest_marker(marker) and installed_sdk() != version:
            pytest.skip(f"needs apache-dolphinscheduler=={version}; scripts/test.sh runs it in {where}")


def pg_settings() -> tuple[str, str] | None:
    url = os.environ.get("COHORTFLOW_TEST_PG_URL")
    password = os.environ.get("COHORTFLOW_TEST_PG_PASSWORD")
    if not url or not password:
        if os.environ.get("CI"):
            pytest.fail("CI=true but COHORTFLOW_TEST_PG_URL is not set: PostgreSQL tests cannot be skipped in CI")
        pytest.skip("no PostgreSQL test server (run the suite with scripts/test.sh)")
    return url, password


def trino_settings() -> tuple[str, str, str]:
    """The test Trino cluster (``scripts/trino.sh env``): URL, storage folder, and the hive catalog's file."""
    values = [os.environ.get(k) for k in ("COHORTFLOW_TEST_TRINO_URL", "COHORTFLOW_TEST_TRINO_STORAGE", "COHORTFLOW_TEST_TRINO_CATALOG")]
    if not all(values):
        if os.environ.get("CI"):
            pytest.fail("CI=true but COHORTFLOW_TEST_TRINO_URL is not set: Trino tests cannot be skipped in CI")
        pytest.skip("no Trino test cluster (run the suite with scripts/test.sh)")
    return values[0], values[1], values[2]


def _fresh_trino_catalog(url: str, storage: str, catalog_file: str) -> str:
    """A new Hive catalog on the test cluster (CREATE CATALOG), with the settings of the cluster's own hive
    catalog and a metastore of its own; returns its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    properties = {}
    for line in Path(catalog_file).read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            properties[key.strip()] = value.strip()
    connector = properties.pop("connector.name")
    properties["hive.metastore.catalog.dir"] = f"local:///{name}"
    with_ = ", ".join(f'"{k}" = \'{v}\'' for k, v in properties.items())
    admin = sa.create_engine(url)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"create catalog {name} using {connector} with ({with_})"))
    finally:
        admin.dispose()
    return str(sa.make_url(url).set(database=name))


def drop_trino_catalog(db_url: str, storage: str) -> None:
    import shutil

    u = sa.make_url(db_url)
    admin = sa.create_engine(u.set(database="system"))
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"drop catalog if exists {u.database}"))
    finally:
        admin.dispose()
    shutil.rmtree(Path(storage) / u.database, ignore_errors=True)


# The tests' PostgreSQL databases sort text linguistically, as production databases usually do (en_US.UTF-8 and the
# like), unlike the server's C.UTF-8 (byte order, as DuckDB and Trino): a model or a step whose result depends on the
# order of text without `collate "C"` then differs from DuckDB in the tests, not only in production. ('B' < 'a' in
# byte order, not in en-US.)
PG_TEST_DATABASE = "template template0 encoding 'UTF8' locale_provider icu icu_locale 'en-US' locale 'C.UTF-8'"


def _fresh_pg_database(url: str, password: str) -> str:
    """A new empty database on the test server (collation en-US, see above); returns its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(sa.make_url(url).set(password=password), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{name}" {PG_TEST_DATABASE}'))
    admin.dispose()
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=True))


def drop_pg_database(db_url: str, password: str) -> None:
    u = sa.make_url(db_url)
    admin = sa.create_engine(u.set(database="cohortflow", password=password), isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(5):
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'drop database if exists "{u.database}" with (force)'))
                return
            except sa.exc.ProgrammingError:
                # An autovacuum worker on the database cannot be stopped without pg_signal_backend
                # (scripts/pgcluster.sh grants it); it finishes in a moment.
                if attempt == 4:
                    raise
                time.sleep(1)
    finally:
        admin.dispose()


def example_analyses() -> dict:
    """The ``analyses`` block of the shipped example config (every analysis defined)."""
    import importlib.resources

    text = importlib.resources.files("cohortflow").joinpath("cohortflow.example.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["analyses"]


def short_analyses() -> dict:
    """The example analyses with windows short enough for the 8-10 day generated data sets of the tests."""
    analyses = example_analyses()
    analyses["frequency_retention"] = [
        {"name": "views_first_days", "event": "view_item", "first_days": 3, "target_from_day": 3, "target_to_day": 5, "cap": 5}
    ]
    return analyses


def write_config(project_dir: Path, **overrides) -> Path:
    """A minimal valid project config in ``project_dir`` (landing/ark, target/)."""
    data = {
        "project": "test",
        "timezone": "UTC",
        "sources": [{"name": "app", "format": "ark", "path": "ark"}],
        "warehouse": {"url": "duckdb:///target/warehouse.duckdb"},
        # The HTML report costs about a second per publish; the tests of the report (tests/e2e/test_report.py, and
        # those that pass report=...) turn it on.
        "report": {"enabled": False},
    }
    for key, value in overrides.items():
        data[key] = value
    project_dir.mkdir(parents=True, exist_ok=True)
    path = project_dir / "cohortflow.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# Trino runs each statement with a fixed overhead (planning, metastore writes, a scratch table per shared CTE):
# a night of the whole workflow on tiny data costs minutes on the 2-core CI machine. Which Trino variants run is
# chosen by COHORTFLOW_TEST_TRINO_SCOPE:
#   selection (the default)  the cheap TRINO_SELECTION; the TRINO_LANE tests are skipped with a reason
#   main                     as selection, with the TRINO_LANE tests deselected (scripts/test.sh's main run)
#   lane                     only the TRINO_LANE tests: scripts/test.sh runs them in a second pytest process,
#                            beside the main run, on the core the main run leaves idle while it waits on I/O
#   all                      every Trino variant (also COHORTFLOW_TEST_TRINO_ALL=1)
# The publish killed half way (tests/integration/test_trino_cluster.py) runs in every scope but lane.
TRINO_SELECTION = (
    "test_bookkeeping_reads.py",
    "test_dialect_semantics.py",
    "test_run_log.py",
    "test_validate_pushdown.py",
    "[trino-funnel_conversion_daily:one event matching two steps fills one of them",
)
_FIXTURE = "tests/test_model_fixtures.py::test_model_fixture"
# The fixture cases of the lane (file stem and the beginning of a case's name; a stem and a colon: every case of the
# file). One case per model runs the whole workflow on Trino (ingest and validate of the earlier dates, then a whole
# night), publish included, and checks reports.<model> against the contract: where Trino's date and time functions
# could differ from DuckDB's (local dates east and west of UTC, DST changes, Monday weeks;
# tests/unit/test_dialect_semantics.py pins the differences found). 35-55 s each on an idle machine.
TRINO_WORKFLOW_CASES = (
    "active_users_daily:a DST change does not move the local date",
    "event_metrics_breakdown_daily:west of UTC, midnight and the DST change",
    "frequency_retention:the first days are local dates east of UTC",
    "funnel_conversion_daily:a DST change - the window is absolute time",
    "lifecycle_daily:a DST change does not move the local date",
    "path_transitions_daily:west of UTC, across midnight and across the DST change",
    "retention_cohorts:weeks start on Monday local time west of UTC",
    "segment_size_daily:a DST change does not move the local date of the window",
    "session_metrics_daily:gaps are measured in UTC across a DST change",
    "top_paths_daily:with a start event, the path starts at its first occurrence in the session",
)
# Every other Trino case ingests its arrival dates and builds its model and the models it reads, nothing else
# (tests/test_model_fixtures.py): 8-53 s, 21 s on average on an idle machine, about twice that beside the main run
# in CI (63 of them took 22.6 minutes together on an idle machine). The lane runs these; every case runs in scope all.
TRINO_LANE_MODEL_CASES = (
    # more boundaries east of UTC, orders and ties, and where the SQL itself could mean something else on Trino:
    # JSON properties and the (none) bucket, membership of a segment, string order of paths, a gap of exactly the
    # timeout, month cohorts with filters, identity merges
    "active_users_daily:a single event makes one active user on its local date (east of UTC)",
    "funnel_conversion_daily:23:59:59.999 and 00:00:00.000 local are two entry dates east of UTC",
    "funnel_conversion_daily:the last step exactly at t1 + window converts",
    "funnel_conversion_daily:breakdown_segment splits the entered users by membership on the entry date",
    "segment_size_daily:latest_property reads the latest activity event, ties broken by event_id",
    "retention_cohorts:recurring month cohorts with on_or_after, start filters and a breakdown",
    # local dates west of UTC for the funnel, the segments, the active users and lifecycle (and east of it for
    # lifecycle), late identity links in the funnel and retention: these seven took 317 s together beside another
    # test run (18-93 s a case, the retention case the longest)
    "active_users_daily:23:59:59.999 and 00:00:00.000 local fall on two dates (west of UTC)",
    "funnel_conversion_daily:23:59:59.999 and 00:00:00.000 local are two entry dates west of UTC",
    "funnel_conversion_daily:a late alias merges an anonymous history into a converted user",
    "retention_cohorts:a late alias moves the merged user into the anonymous history's cohort",
    "segment_size_daily:23:59:59.999 and 00:00:00.000 local fall on two as-of dates (west of UTC)",
    "lifecycle_daily:23:59:59.999 and 00:00:00.000 local",
    # the core semantics of the costlier models: ties at one millisecond and an expired window in the funnel, the
    # DST row's close, periods and the running period in retention, the cap bucket of frequency retention, the
    # windows of segments, WAU and MAU, every lifecycle state, a segment-filtered funnel: these eleven took 530 s
    # together beside another Trino test run (33-65 s a case)
    "funnel_conversion_daily:A and B at the same millisecond fill consecutive steps",
    "funnel_conversion_daily:A, A, B where the window has expired for the first A",
    "funnel_conversion_daily:the DST row closes on the business date after the window's last local date",
    "retention_cohorts:day retention counts returns in period k only",
    "retention_cohorts:rows exist only for periods begun by the as-of date",
    "frequency_retention:counts per user in the first days, retries count once, a cap bucket",
    "segment_filtered_funnel:a funnel with a segment counts only members on the entry date",
    "segment_size_daily:did_event and first_seen windows end on the as-of date",
    "segment_size_daily:first_seen_within_days looks at all history",
    "active_users_daily:wau counts 7 days ending on the date, mau 30",
    "lifecycle_daily:new, returning, dormant and resurrecting users",
    # local dates east of UTC and a DST change in retention and the segments, late aliases in frequency retention
    # and the segment-filtered funnel, a resend in active users: 255 s together beside other test runs (14-70 s)
    "retention_cohorts:23:59:59.999 and 00:00:00.000 local are two days east of UTC",
    "retention_cohorts:a DST change does not move local dates",
    "segment_filtered_funnel:a late alias makes an anonymous buyer a member",
    "frequency_retention:a late alias merges the anonymous history",
    "segment_size_daily:23:59:59.999 and 00:00:00.000 local fall on two as-of dates (east of UTC)",
    "active_users_daily:the same event sent twice counts once",
    # every case of the models cheapest to build on Trino (9-15 s a case on an idle machine)
    "event_metrics_daily:",
    "event_metrics_breakdown_daily:",
    "path_transitions_daily:",
    "session_metrics_daily:",
    "top_paths_daily:",
)


@functools.cache
def _fixture_case_ids() -> tuple[str, ...]:
    """``<file stem>:<case name>`` of every fixture case."""
    ids = []
    for path in sorted((Path(__file__).parent / "fixtures" / "models").glob("*.yml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]:
            ids.append(f"{path.stem}:{case['name']}")
    return tuple(ids)


def _trino_fixture_cases(wanted: tuple[str, ...], *, one_each: bool) -> tuple[str, ...]:
    """The node ids of the Trino fixture cases ``wanted`` names (with ``one_each``, each entry names exactly one)."""
    ids = _fixture_case_ids()
    chosen = []
    for entry in wanted:
        found = [i for i in ids if i.startswith(entry)]
        if not found or (one_each and len(found) != 1):
            raise RuntimeError(f"fixture case entry {entry!r} names {len(found)} fixture cases")
        chosen += [f"{_FIXTURE}[trino-{i}]" for i in found if f"{_FIXTURE}[trino-{i}]" not in chosen]
    return tuple(chosen)


TRINO_WORKFLOW_FIXTURES = frozenset(_trino_fixture_cases(TRINO_WORKFLOW_CASES, one_each=True))


# Node ids (or their beginnings) of the lane, measured beside the main run in a CI run on 2 cores: 39 minutes at 15
# tests (the nightly comparison's eight nights on DuckDB and Trino 17, the two-node cluster 6, the property tests 12,
# the two fixture cases 2); 72 minutes with 32 fixture cases run as whole workflows (a minute or more each there).
# scripts/test.sh runs the DolphinScheduler integration tests (9-11 minutes) after the main run, in the foreground;
# the lane is sized so that the two halves end together.
TRINO_LANE = (
    "tests/integration/test_trino_cluster.py::test_the_models_run_distributed_on_a_coordinator_and_a_worker",
    "tests/e2e/test_nightly.py::test_active_users_equal_the_ground_truth[trino]",
    "tests/e2e/test_nightly.py::test_every_published_table_is_identical_on_every_engine[trino]",
    "tests/e2e/test_nightly.py::test_rerunning_a_date_gives_identical_tables[trino]",
    "tests/e2e/test_nightly.py::test_a_full_rebuild_equals_the_nights[trino]",
    "tests/properties/test_funnels.py::test_funnels_match_brute_force[trino]",
    "tests/properties/test_retention.py::test_retention_frequency_lifecycle_match_reference[trino]",
    "tests/properties/test_segments.py::test_segments_match_reference[trino]",
    "tests/properties/test_segments.py::test_nightly_builds_equal_a_full_build[trino]",
    "tests/properties/test_segments.py::test_every_property_op_and_value[trino]",
    "tests/properties/test_segments.py::test_latest_event_ties[trino]",
    "tests/properties/test_segments.py::test_eight_levels_deep[trino]",
    "tests/properties/test_sessions_paths.py::test_sessions_paths_breakdowns_match_reference[trino]",
    # Fixture cases: TRINO_WORKFLOW_CASES and TRINO_LANE_MODEL_CASES above.
    *_trino_fixture_cases(TRINO_WORKFLOW_CASES + TRINO_LANE_MODEL_CASES, one_each=False),
)
TRINO_SKIP_REASON = "Trino variant outside the selection of tests/conftest.py (COHORTFLOW_TEST_TRINO_SCOPE=all runs it)"
TRINO_SCOPES = ("selection", "main", "lane", "all")


def trino_whole_workflow(nodeid: str) -> bool:
    """The Trino fixture case ``nodeid`` runs the whole workflow (TRINO_WORKFLOW_CASES), not its model alone."""
    return nodeid in TRINO_WORKFLOW_FIXTURES


def trino_scope() -> str:
    if os.environ.get("COHORTFLOW_TEST_TRINO_ALL") == "1":
        return "all"
    scope = os.environ.get("COHORTFLOW_TEST_TRINO_SCOPE") or "selection"
    if scope not in TRINO_SCOPES:
        raise pytest.UsageError(f"COHORTFLOW_TEST_TRINO_SCOPE must be one of {', '.join(TRINO_SCOPES)} (got {scope!r})")
    return scope


def in_trino_lane(nodeid: str) -> bool:
    """``nodeid`` is a lane test, or a module or fixture prefix of one (``tests/e2e/test_nightly.py``)."""
    return any(lane.startswith(nodeid) or nodeid.startswith(lane) for lane in TRINO_LANE)


def trino_selected(nodeid: str) -> bool:
    scope = trino_scope()
    if scope == "all":
        return True
    if scope == "lane":
        return in_trino_lane(nodeid)
    return any(part in nodeid for part in TRINO_SELECTION)


def pytest_collection_modifyitems(config, items) -> None:
    scope = trino_scope()
    if scope not in ("main", "lane"):
        return
    keep, drop = [], []
    for item in items:
        (keep if in_trino_lane(item.nodeid) == (scope == "lane") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    """The warehouse engine a test runs on."""
    if request.param == "postgres":
        pg_settings()
    if request.param == "trino":
        if not trino_selected(request.node.nodeid):
            pytest.skip(TRINO_SKIP_REASON)
        trino_settings()
    return request.param


class Project:
    """A test project: config file, landing folder and an isolated warehouse on one engine."""

    def __init__(self, root: Path, engine_name: str, **overrides) -> None:
        self.root = root
        self.engine_name = engine_name
        self.environ: dict[str, str] = {}
        if engine_name == "postgres":
            url, password = pg_settings()
            self.db_url = _fresh_pg_database(url, password)
            self.password = password
            self.environ = {"COHORTFLOW_WAREHOUSE__URL": self.db_url, "COHORTFLOW_WAREHOUSE__PASSWORD": password}
        if engine_name == "trino":
            url, self.storage, catalog_file = trino_settings()
            self.db_url = _fresh_trino_catalog(url, self.storage, catalog_file)
            self.environ = {"COHORTFLOW_WAREHOUSE__URL": self.db_url, "COHORTFLOW_WAREHOUSE__STORAGE_ROOT": self.storage}
        self.config_path = write_config(root, **overrides)
        self.landing = root / "landing" / "ark"

    def config(self) -> Config:
        return load_config(self.config_path, environ=self.environ)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.config())

    def cleanup(self) -> None:
        if self.engine_name == "postgres":
            drop_pg_database(self.db_url, self.password)
        if self.engine_name == "trino":
            drop_trino_catalog(self.db_url, self.storage)


@pytest.fixture
def make_project(tmp_path):
    made: list[Project] = []

    def factory(engine_name: str = "duckdb", name: str = "proj", **overrides) -> Project:
        p = Project(tmp_path / name, engine_name, **overrides)
        made.append(p)
        return p

    yield factory
    for p in made:
        p.cleanup()


def clear_model_table(wh: Warehouse, conn: sa.Connection, model) -> None:
    """Empty ``model``'s table before a build from scratch: dropped, or on Trino emptied, as a build empties it (the
    pipeline never drops a model table and then creates it again in one transaction)."""
    if model.materialized == "view":
        return
    if wh.trino is None:
        wh.run(conn, f"drop table if exists {model.table}")
    elif wh.table_exists(conn, *model.table.split(".")):
        wh.run(conn, f"delete from {model.table}")


def build_fresh(wh: Warehouse, conn: sa.Connection | None, params: dict, names) -> None:
    """Drop and build ``names`` and the models they depend on, in dependency order, for params' dates: in ``conn``'s
    transaction, or (``conn`` None) each model in a transaction of its own, as the pipeline builds them.

    A history model (``history: true``) is built from the first loaded event, as a full rebuild builds it.
    """
    from contextlib import nullcontext

    from cohortflow.models import _scratch_prefix, _with_dependencies, load_models, model_statements, rebuild_start

    models = load_models()
    wanted = _with_dependencies(set(names), models)
    for model in models.values():
        if model.name not in wanted:
            continue
        with nullcontext(conn) if conn is not None else wh.begin() as within:
            clear_model_table(wh, within, model)
            model_params = {
                "as_of_date": params["end_date"],
                "first_date": params["start_date"],
                "late_arrival_days": 7,
                "scoped": False,
                **params,
                "model_name": model.name,
                "start_date": rebuild_start(within, model, params["start_date"]),
            }
            # (on Trino with scratch table names of their own, as a build names them: see models._scratch_prefix)
            for stmt in model_statements(model, wh.dialect, _scratch_prefix(wh, within, model)):
                wh.run(within, stmt, model_params if ":" in stmt else {})


def load_and_build_fresh(wh: Warehouse, cfg: Config, rows: list[dict], params: dict, names) -> None:
    """Replace ``raw.events`` with ``rows``, load ``cfg``'s definitions, and build ``names`` from scratch (see
    :func:`build_fresh`), each step committed as the pipeline commits it: the ingest, the definitions, one
    transaction per model. (On Trino the scratch tables of a build are made by CREATE TABLE AS outside the
    transaction, as all DDL, and read committed rows only: with the definitions written in the build's transaction,
    every funnel of the property test came out empty.)"""
    import pyarrow as pa

    from cohortflow.analyses import load_definitions
    from cohortflow.events import RAW_EVENT_SCHEMA

    with wh.begin() as conn:
        wh.execute(conn, "delete from raw.events")
        wh.load_arrow(conn, "raw.events", pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA))
    with wh.begin() as conn:
        load_definitions(wh, conn, cfg)
    build_fresh(wh, None, params, names)

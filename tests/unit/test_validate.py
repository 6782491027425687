"""The validate stage on a temporary DuckDB warehouse."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.config import Config, load_config
from cohortflow.events import RAW_EVENT_SCHEMA
from cohortflow.validate import (
    SuiteError,
    ValidationFailed,
    load_suite,
    suite_paths,
    validate_day,
)
from cohortflow.warehouse import Warehouse

D = dt.date(2024, 5, 10)
PLAN_EVENTS = ["app_open", "view_item", "purchase"]


def make_config(tmp_path: Path, plan: list[str] = PLAN_EVENTS) -> Config:
    events = "".join(f"\n    - name: {name}" for name in plan)
    text = (
        "sources: [{name: app, format: ark, path: ark}]\n"
        f"warehouse: {{url: 'duckdb:///{tmp_path}/wh.duckdb'}}\n"
        "validation: {volume_trailing_days: 3}\n"
        + (f"tracking_plan:\n  events:{events}\n" if plan else "")
    )
    path = tmp_path / "cohortflow.yml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ={})


def event_rows(day: dt.date, n: int, *, prefix: str = "") -> list[dict]:
    rows = []
    for i in range(n):
        at = dt.datetime(day.year, day.month, day.day, 9) + dt.timedelta(minutes=i)
        rows.append(
            {
                "event_id": f"{prefix}{day}-{i}",
                "event_name": PLAN_EVENTS[i % len(PLAN_EVENTS)],
                "distinct_id": f"user-{i % 7}",
                "event_time": at,
                "event_date": day,
                "received_at": at + dt.timedelta(seconds=5),
                "source_format": "ark",
                "properties": "{}",
                "is_activity": True,
                "load_date": day,
                "ingest_file": f"ark/{day}/part-0.jsonl.gz",
                "ingest_line": i + 1,
                "source_name": "app",
            }
        )
    return rows


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def wh(cfg: Config):
    warehouse = Warehouse(cfg)
    warehouse.bootstrap()
    yield warehouse
    warehouse.dispose()


def load(wh: Warehouse, rows: list[dict]) -> None:
    with wh.begin() as conn:
        wh.load_arrow(conn, "raw.events", pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA))


def load_history(wh: Warehouse, per_day: int = 100, days: int = 3) -> None:
    for k in range(1, days + 1):
        load(wh, event_rows(D - dt.timedelta(days=k), per_day))


def by_label(outcome):
    return {r.label: r for r in outcome.results}


def test_clean_day_passes(wh, cfg):
    load_history(wh)
    load(wh, event_rows(D, 100))
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.status == "passed", outcome.summary()
    assert outcome.failed_critical == [] and outcome.failed_warnings == []
    assert len(outcome.results) == len(load_suite("raw_events").expectations)
    assert outcome.row_count == 100
    assert outcome.parameters["min_row_count"] == 30 and outcome.parameters["max_row_count"] == 300
    outcome.raise_for_status()
    assert outcome.result_path == cfg.target_path / "validation" / f"raw_events-{D}.json"
    doc = json.loads(outcome.result_path.read_text())
    assert doc["meta"]["run_id"] == "run-1" and len(doc["results"]) == len(outcome.results)


def test_null_distinct_id_fails_critical(wh, cfg):
    # raw.events forbids nulls; the suite is the second line of defence for a
    # partition loaded some other way, so relax the constraint to get one in.
    with wh.begin() as conn:
        wh.execute(conn, "alter table raw.events alter column distinct_id drop not null")
    rows = event_rows(D, 20)
    rows[3]["distinct_id"] = None
    load(wh, rows)
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.status == "failed"
    assert [r.label for r in outcome.failed_critical] == ["expect_column_values_to_not_be_null(distinct_id)"]
    assert "1 of 20 rows unexpected" in outcome.failed_critical[0].observed
    summary = outcome.summary()
    assert "FAILED" in summary and "distinct_id" in summary
    with pytest.raises(ValidationFailed, match="distinct_id"):
        outcome.raise_for_status()


def test_duplicate_event_id_fails_critical(wh, cfg):
    rows = event_rows(D, 20)
    rows[5]["event_id"] = rows[4]["event_id"]
    load(wh, rows)
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.status == "failed"
    assert [r.label for r in outcome.failed_critical] == ["expect_compound_columns_to_be_unique(source_name+event_id)"]
    assert "event_id" in outcome.summary()


def test_same_event_id_in_two_sources_passes(wh, cfg):
    """Event ids are unique within a source: two sources may both send id 1."""
    rows = event_rows(D, 20)
    other = event_rows(D, 3)
    for r in other:
        r["source_name"] = "other"
        r["ingest_file"] = f"other/{D}/part-0.jsonl"
    load(wh, rows + other)
    outcome = validate_day(wh, cfg, D, "run-1")
    assert not outcome.failed_critical, outcome.summary()


def test_event_date_outside_late_arrival_window_fails_critical(wh, cfg):
    rows = event_rows(D, 20)
    rows[0]["event_date"] = D - dt.timedelta(days=cfg.ingest.late_arrival_days + 1)
    rows[1]["event_date"] = D - dt.timedelta(days=cfg.ingest.late_arrival_days)  # oldest accepted
    rows[2]["event_date"] = D + dt.timedelta(days=1)  # time-zone edge, accepted
    load(wh, rows)
    outcome = validate_day(wh, cfg, D, "run-1")
    assert [r.label for r in outcome.failed_critical] == ["expect_column_values_to_be_between(event_date)"]
    assert "1 of 20 rows unexpected" in outcome.failed_critical[0].observed


def test_unknown_event_name_only_warns(wh, cfg):
    rows = event_rows(D, 20)
    rows[7]["event_name"] = "pruchase"
    load(wh, rows)
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.status == "warned"
    assert outcome.failed_critical == []
    assert [r.label for r in outcome.failed_warnings] == ["expect_column_values_to_be_in_set(event_name)"]
    assert "'pruchase'" in outcome.failed_warnings[0].observed
    assert "pruchase" in outcome.summary()
    outcome.raise_for_status()  # warnings do not stop the DAG


def test_empty_tracking_plan_skips_event_name_check(tmp_path):
    cfg = make_config(tmp_path, plan=[])
    wh = Warehouse(cfg)
    wh.bootstrap()
    load(wh, event_rows(D, 10))
    outcome = validate_day(wh, cfg, D, "run-1")
    skipped = [r for r in outcome.results if r.skipped]
    assert [r.label for r in skipped] == ["expect_column_values_to_be_in_set(event_name)"]
    assert outcome.status == "passed"
    assert "not applicable" in outcome.summary()
    wh.dispose()


def test_volume_collapse_stops_the_night_by_default(wh, cfg):
    load_history(wh, per_day=100)
    load(wh, event_rows(D, 10))
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.status == "failed"
    assert [r.label for r in outcome.failed_critical] == ["expect_table_row_count_to_be_between"]
    assert "observed 10" in outcome.failed_critical[0].observed


def test_volume_collapse_only_warns_when_configured(tmp_path):
    path = tmp_path / "cohortflow.yml"
    path.write_text(
        "sources: [{name: app, format: ark, path: ark}]\n"
        f"warehouse: {{url: 'duckdb:///{tmp_path}/wh.duckdb'}}\n"
        "validation: {volume_trailing_days: 3, volume_severity: warning}\n",
        encoding="utf-8",
    )
    cfg = load_config(path, environ={})
    wh = Warehouse(cfg)
    wh.bootstrap()
    try:
        load_history(wh, per_day=100)
        load(wh, event_rows(D, 10))
        outcome = validate_day(wh, cfg, D, "run-1")
    finally:
        wh.dispose()
    assert outcome.status == "warned"
    assert [r.label for r in outcome.failed_warnings] == ["expect_table_row_count_to_be_between"]


def test_volume_uses_median_of_trailing_load_dates(wh, cfg):
    # Older than the 3 trailing load dates: ignored. Median of 100, 100, 1000 is 100.
    load(wh, event_rows(D - dt.timedelta(days=10), 5))
    load(wh, event_rows(D - dt.timedelta(days=3), 100))
    load(wh, event_rows(D - dt.timedelta(days=2), 1000))
    load(wh, event_rows(D - dt.timedelta(days=1), 100))
    load(wh, event_rows(D, 100))
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.parameters["min_row_count"] == 30 and outcome.parameters["max_row_count"] == 300
    assert outcome.status == "passed", outcome.summary()


def test_no_history_has_no_volume_bounds(wh, cfg):
    load(wh, event_rows(D, 3))
    outcome = validate_day(wh, cfg, D, "run-1")
    assert outcome.parameters["min_row_count"] == 0 and outcome.parameters["max_row_count"] is None
    assert outcome.status == "passed", outcome.summary()


def test_results_stored_and_replaced_on_rerun(wh, cfg):
    load(wh, event_rows(D, 20))
    first = validate_day(wh, cfg, D, "run-1")
    second = validate_day(wh, cfg, D, "run-2")
    with wh.begin() as conn:
        rows = wh.execute(
            conn,
            "select run_id, suite, expectation, column_name, severity, success, observed "
            "from meta.validation_results where business_date = :d",
            {"d": D},
        ).fetchall()
    assert len(rows) == len(first.results) == len(second.results)
    assert {r.run_id for r in rows} == {"run-2"}
    assert {r.suite for r in rows} == {"raw_events"}
    stored = {(r.expectation, r.column_name, r.severity, r.success) for r in rows}
    assert stored == {(o.expectation, o.column, o.severity, o.success) for o in second.results}


@pytest.mark.parametrize("path", suite_paths(), ids=lambda p: p.name)
def test_each_committed_suite_loads_with_all_expectations(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    suite = load_suite(path)
    assert suite.name == path.stem
    assert len(suite.expectations) == len(data["expectations"]) > 0
    for expectation in data["expectations"]:
        assert expectation.get("severity") in ("critical", "warning", "info"), expectation


def test_committed_suites_exist():
    assert [p.name for p in suite_paths()] == ["raw_events.json"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        # GX logs and drops an unknown type: caught by counting.
        ({"type": "expect_column_values_to_be_bogus", "kwargs": {"column": "event_id"}}, "only 1 of 2 expectations"),
        # A misspelled kwarg raises inside GX: reported with the file name.
        ({"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "event_id"}}, "(?s)broken.json.*colum"),
    ],
)
def test_suite_with_an_invalid_expectation_is_refused(tmp_path, bad, message):
    path = tmp_path / "broken.json"
    good = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "event_id"}, "severity": "critical"}
    path.write_text(json.dumps({"name": "broken", "expectations": [good, bad]}), encoding="utf-8")
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_duckdb_validation_reads_only_the_columns_the_suite_names():
    """The pandas frame of the day holds the suite's columns, not the properties JSON (the bulk of a day's bytes)."""
    from cohortflow.validate import EVENTS_SUITE, load_suite, suite_columns

    columns = suite_columns(load_suite(EVENTS_SUITE))
    assert "properties" not in columns and "ingest_file" not in columns
    assert set(columns) == {"event_id", "event_name", "distinct_id", "event_time", "event_date", "received_at",
                            "load_date", "is_activity", "source_name"}


# -- validation in parts (DuckDB) --------------------------------------------------
def _without_examples(observed: str) -> str:
    return observed.split(", e.g. ")[0]


def _relaxed_warehouse(tmp_path: Path, part_rows: int) -> tuple[Config, Warehouse]:
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"part_rows": part_rows})})
    wh = Warehouse(cfg)
    wh.bootstrap()
    with wh.begin() as conn:
        for column in ("event_id", "event_name", "distinct_id", "event_time", "event_date"):
            wh.execute(conn, f"alter table raw.events alter column {column} drop not null")
    return cfg, wh


def _counts(doc: dict) -> list[tuple]:
    """Each expectation's counts in the GX result document, by expectation."""
    keys = ("element_count", "unexpected_count", "missing_count", "observed_value")
    return sorted(
        (r["expectation_config"]["type"], json.dumps(r["expectation_config"]["kwargs"], sort_keys=True))
        + tuple(r["result"].get(k) for k in keys)
        for r in doc["results"]
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(min_value=0, max_value=60),
    defects=st.lists(
        st.tuples(
            st.sampled_from(["null_id", "null_name", "null_user", "null_time", "dup_id", "other_source", "early",
                             "late", "unknown_name"]),
            st.integers(min_value=0, max_value=59),
            st.integers(min_value=0, max_value=59),
        ),
        max_size=12,
    ),
    part_rows=st.integers(min_value=1, max_value=25),
)
def test_validation_in_parts_reports_what_the_whole_day_reports(tmp_path_factory, n, defects, part_rows):
    """The day split into hash parts (validation.part_rows) gives every expectation the outcome, counts and severity
    of the whole day validated at once: nulls, duplicate ids (within and across sources), dates out of range, unknown
    names and the row count, on any split; the examples shown are unexpected values of the day."""
    rows = event_rows(D, n)
    for kind, i, j in defects:
        if not rows:
            break
        row, other = rows[i % len(rows)], rows[j % len(rows)]
        if kind == "null_id":
            row["event_id"] = None
        elif kind == "null_name":
            row["event_name"] = None
        elif kind == "null_user":
            row["distinct_id"] = None
        elif kind == "null_time":
            row["event_time"] = row["event_date"] = None
        elif kind == "dup_id":
            row["event_id"] = other["event_id"]
        elif kind == "other_source":
            row["source_name"] = "web"
        elif kind == "early":
            row["event_date"] = D - dt.timedelta(days=400)
        elif kind == "late":
            row["event_date"] = D + dt.timedelta(days=5)
        else:
            row["event_name"] = "not_in_the_plan"
    outcomes = {}
    for label, rows_per_part in (("whole", 10**6), ("parts", part_rows)):
        cfg, wh = _relaxed_warehouse(tmp_path_factory.mktemp(label), rows_per_part)
        try:
            load_history(wh, per_day=10)
            load(wh, rows)
            outcome = validate_day(wh, cfg, D, "run-1")
            doc = json.loads(outcome.result_path.read_text())
        finally:
            wh.dispose()
        outcomes[label] = (outcome, doc)
    whole, parts = outcomes["whole"][0], outcomes["parts"][0]
    assert parts.row_count == whole.row_count == n
    assert parts.status == whole.status
    assert {r.label: (r.success, r.severity, _without_examples(r.observed)) for r in parts.results} == {
        r.label: (r.success, r.severity, _without_examples(r.observed)) for r in whole.results
    }
    assert _counts(outcomes["parts"][1]) == _counts(outcomes["whole"][1])
    expected_parts = max(1, -(-n // part_rows))
    assert outcomes["parts"][1]["meta"].get("validated_in_parts", 1) == expected_parts
    # The examples shown for a failed expectation are values the day really has.
    for r in parts.results:
        if not r.success and ", e.g. " in r.observed and r.label.startswith("expect_column_values_to_be_in_set(event_name"):
            assert "'not_in_the_plan'" in r.observed


def test_a_suite_whose_outcome_is_not_a_sum_of_parts_sees_the_whole_day():
    from cohortflow.validate import split_columns

    gx = pytest.importorskip("great_expectations")
    suite = load_suite("raw_events")
    assert split_columns(suite) == ["source_name", "event_id"]
    mean = gx.expectations.ExpectColumnMeanToBeBetween(column="ingest_line", min_value=0, max_value=10)
    assert split_columns(gx.ExpectationSuite(name="s", expectations=[*suite.expectations, mean])) is None
    mostly = gx.expectations.ExpectColumnValuesToNotBeNull(column="event_name", mostly=0.9)
    assert split_columns(gx.ExpectationSuite(name="s", expectations=[mostly])) is None
    apart = gx.expectations.ExpectColumnValuesToBeUnique(column="distinct_id")
    assert split_columns(gx.ExpectationSuite(name="s", expectations=[*suite.expectations, apart])) is None
    assert split_columns(gx.ExpectationSuite(name="s", expectations=[suite.expectations[0]])) == ["event_id"]


def test_the_parts_folder_is_removed_also_when_a_killed_validation_left_it(tmp_path):
    from cohortflow.validate import PARTS_PREFIX

    cfg, wh = _relaxed_warehouse(tmp_path, part_rows=7)
    left = cfg.target_path / f"{PARTS_PREFIX}{2**22 + 12345}-dead"  # above pid_max's default: no such process
    (left / "part-0.arrow").parent.mkdir(parents=True)
    (left / "part-0.arrow").write_bytes(b"left by a killed validation")
    try:
        load(wh, event_rows(D, 30))
        outcome = validate_day(wh, cfg, D, "run-1")
    finally:
        wh.dispose()
    assert json.loads(outcome.result_path.read_text())["meta"]["validated_in_parts"] == 5
    assert not list(cfg.target_path.glob(PARTS_PREFIX + "*"))

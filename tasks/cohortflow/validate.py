"""The ``validate`` stage: run the Great Expectations suites on the day's staged events.

The batch is the rows the ingest loaded for the business date D
(``raw.events where load_date = D``). Suites are committed JSON in
``expectations/`` (GX 1.x suite form, one per validated table); each
expectation carries a GX severity (``critical``, ``warning``, ``info``).
Run-time values reach the suite as GX suite parameters (``$PARAMETER``):

* ``min_event_date`` / ``max_event_date``: D - ``ingest.late_arrival_days`` .. D + 1;
* ``known_event_names``: the tracking plan's events (an expectation that needs
  them is reported as not applicable when the plan is empty);
* ``min_row_count`` / ``max_row_count``: the median row count of the previous
  ``validation.volume_trailing_days`` load dates times ``volume_min_ratio`` /
  ``volume_max_ratio`` (0 and no upper bound without history).

Whether the day fails or only warns is decided by the highest severity among
the failed expectations, never by GX's overall ``success`` flag.

Engines: on DuckDB the day's rows are read into pandas and validated with a
pandas data source, because GX's SQL data source does not work on DuckDB
(great_expectations issues #10738, #11579). On PostgreSQL the validation is
pushed down to the server through GX's SQL data source; on Trino through GX's
generic SQL data source on the trino SQLAlchemy dialect (GX has no Trino
source of its own).

Every expectation's outcome is stored in ``meta.validation_results`` (the
rows of the date and suite are replaced in one transaction) and the full GX
result is written to ``<target>/validation/<suite>-<date>.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import importlib.resources
import json
import logging
import math
import os
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from cohortflow.config import Config
from cohortflow.events import RAW_EVENT_SCHEMA
from cohortflow.faults import checkpoint
from cohortflow.iofail import OutputError, describe, scratch_folder
from cohortflow.progress import plural
from cohortflow.warehouse import Warehouse

if TYPE_CHECKING:
    import great_expectations as gx

SEVERITIES = ("critical", "warning", "info")  # highest first


def _columns(kwargs: Mapping[str, Any]) -> str | None:
    """The column an expectation checks, or its columns joined with '+' (compound expectations)."""
    if kwargs.get("column"):
        return kwargs["column"]
    if kwargs.get("column_list"):
        return "+".join(kwargs["column_list"])
    return None
EVENTS_SUITE = "raw_events"
VOLUME_EXPECTATION = "expect_table_row_count_to_be_between"

# The batch of the events suite: the rows the ingest loaded for the date.
# Read on DuckDB through its own connection (Arrow output), so in its own parameter syntax.
DUCKDB_DAY_EVENTS_SQL = "select {columns} from raw.events where load_date = $d"
VOLUME_HISTORY_SQL = """
select load_date, count(*) as row_count
from raw.events
where load_date < :d
group by load_date
order by load_date desc
limit :n
"""
DELETE_RESULTS_SQL = "delete from meta.validation_results where business_date = :d and suite = :suite"

# Not-null, in-set and between expectations report counts; keep a few examples. No "unexpected index query": GX
# builds its text by substituting each bound value's repr() through re.sub, so a value whose repr holds a backslash
# escape (an event name with U+200B, or a backslash before a letter) makes the expectation raise ("bad escape") on the
# SQL data source, and a failed tracking-plan check would turn into an error instead of a result.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5, "return_unexpected_index_query": False}

RESULTS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("business_date", pa.date32()),
        ("suite", pa.string()),
        ("expectation", pa.string()),
        ("column_name", pa.string()),
        ("severity", pa.string()),
        ("success", pa.bool_()),
        ("observed", pa.string()),
        ("validated_at", pa.timestamp("us")),
    ]
)

log = logging.getLogger(__name__)


class SuiteError(Exception):
    """An expectation suite file that cannot be used as committed."""


class ValidationFailed(Exception):
    """Critical expectations failed: nothing downstream may run for the date."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        super().__init__(outcome.summary())
        self.outcome = outcome


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str  # GX expectation type, e.g. expect_column_values_to_not_be_null
    column: str | None
    severity: str  # 'critical' | 'warning' | 'info'
    success: bool
    observed: str  # short text: what was seen
    skipped: bool = False  # not applicable today (e.g. empty tracking plan); counts as success

    @property
    def label(self) -> str:
        return f"{self.expectation}({self.column})" if self.column else self.expectation


@dataclass
class ValidationOutcome:
    suite: str
    run_id: str
    business_date: dt.date
    results: list[ExpectationOutcome]
    row_count: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    result_path: Path | None = None

    @property
    def failed_critical(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == "critical"]

    @property
    def failed_warnings(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == "warning"]

    @property
    def failed_info(self) -> list[ExpectationOutcome]:
        return [r for r in self.results if not r.success and r.severity == "info"]

    @property
    def highest_failed_severity(self) -> str | None:
        failed = {r.severity for r in self.results if not r.success}
        return next((s for s in SEVERITIES if s in failed), None)

    @property
    def status(self) -> str:
        """'failed' (a critical expectation failed), 'warned' (a warning did) or 'passed'."""
        return {"critical": "failed", "warning": "warned"}.get(self.highest_failed_severity or "", "passed")

    def raise_for_status(self) -> None:
        if self.status == "failed":
            raise ValidationFailed(self)

    def summary(self) -> str:
        head = {
            "failed": f"FAILED: {len(self.failed_critical)} critical expectation(s) failed",
            "warned": f"passed with {len(self.failed_warnings)} warning(s)",
            "passed": "passed",
        }[self.status]
        lines = [
            f"validation of suite {self.suite} for {self.business_date.isoformat()} "
            f"(run {self.run_id}, {plural(self.row_count, 'row')}, {plural(len(self.results), 'expectation')}): {head}"
        ]
        for title, items in (
            ("critical failures (the DAG stops before publishing):", self.failed_critical),
            ("warnings:", self.failed_warnings),
            ("info:", self.failed_info),
            ("not applicable:", [r for r in self.results if r.skipped]),
        ):
            if items:
                lines.append(f"  {title}")
                lines.extend(f"    - {r.label}: {r.observed}" for r in items)
        if self.result_path is not None:
            lines.append(f"  full result: {self.result_path}")
        return "\n".join(lines)


# -- suites --------------------------------------------------------------------
def suites_dir() -> Path:
    """The committed suites (the ``expectations/`` folder, shipped as package data)."""
    return Path(str(importlib.resources.files("cohortflow.expectations")))


def suite_paths() -> list[Path]:
    return sorted(suites_dir().glob("*.json"))


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def load_suite(source: str | Path) -> gx.ExpectationSuite:
    """Load a committed suite (by name or path); raise SuiteError unless every expectation loads.

    GX logs and drops an expectation it cannot build (unknown type, bad
    kwargs) instead of raising; a suite that silently lost a check must not run.
    """
    gx = _gx()
    path = Path(source) if isinstance(source, Path) or str(source).endswith(".json") else suites_dir() / f"{source}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"expectation suite {path}: cannot read: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise SuiteError(f"expectation suite {path}: expected an object with a list of 'expectations'")
    gx_suite_logger = logging.getLogger("great_expectations.core.expectation_suite")
    handler = _ListHandler()
    gx_suite_logger.addHandler(handler)
    propagate, gx_suite_logger.propagate = gx_suite_logger.propagate, False
    try:
        suite = gx.ExpectationSuite(**data)
    except (TypeError, ValueError) as exc:
        raise SuiteError(f"expectation suite {path}: {exc}") from None
    finally:
        gx_suite_logger.removeHandler(handler)
        gx_suite_logger.propagate = propagate
    expected, loaded = len(data["expectations"]), len(suite.expectations)
    if loaded != expected:
        reasons = "; ".join(handler.messages) or "no reason logged"
        raise SuiteError(
            f"expectation suite {path}: only {loaded} of {expected} expectations are valid "
            f"(Great Expectations drops invalid ones): {reasons}"
        )
    return suite


# -- run-time parameters -------------------------------------------------------
def suite_parameters(wh: Warehouse, conn: Any, cfg: Config, business_date: dt.date) -> dict[str, Any]:
    """Values of the ``$PARAMETER`` references in the events suite for ``business_date``."""
    history = wh.execute(
        conn, VOLUME_HISTORY_SQL, {"d": business_date, "n": cfg.validation.volume_trailing_days}
    ).fetchall()
    if history:
        median = statistics.median(int(r.row_count) for r in history)
        min_rows: int = math.floor(median * cfg.validation.volume_min_ratio)
        max_rows: int | None = math.ceil(median * cfg.validation.volume_max_ratio)
    else:
        min_rows, max_rows = 0, None
    return {
        "min_event_date": business_date - dt.timedelta(days=cfg.ingest.late_arrival_days),
        "max_event_date": business_date + dt.timedelta(days=1),
        "known_event_names": cfg.tracking_plan.event_names,
        "min_row_count": min_rows,
        "max_row_count": max_rows,
    }


def _parameter_refs(value: Any) -> set[str]:
    if isinstance(value, Mapping):
        if "$PARAMETER" in value:
            return {str(value["$PARAMETER"])}
        return set().union(*(_parameter_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(_parameter_refs(v) for v in value)) if value else set()
    return set()


# -- GX plumbing ---------------------------------------------------------------
def _gx() -> Any:
    """Import GX lazily (it takes seconds) with its telemetry off."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX logs its registries at import and every data-source and store
    # operation at DEBUG/INFO; keep its errors only. Some of its modules pin
    # their own logger to INFO at import, so those are reset to inherit.
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import great_expectations

    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(logger, logging.Logger) and logger.level:
            logger.setLevel(logging.NOTSET)
    return great_expectations


def _context() -> Any:
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # The tqdm "Calculating Metrics" bars are on unless the context says otherwise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def suite_columns(suite: Any) -> list[str]:
    """The columns of ``raw.events`` the suite's expectations read, in table order (all of them when one reads a
    column it does not name, which no expectation of the events suite does)."""
    named: set[str] = set()
    for expectation in suite.expectations:
        kwargs = expectation.configuration.kwargs
        if "column" in kwargs:
            named.add(kwargs["column"])
        named.update(kwargs.get("column_list") or ())
        named.update(kwargs[key] for key in ("column_A", "column_B") if key in kwargs)
    unknown = named - set(RAW_EVENT_SCHEMA.names)
    if unknown:
        raise ValueError(f"the suite names columns raw.events does not have: {', '.join(sorted(unknown))}")
    return [name for name in RAW_EVENT_SCHEMA.names if name in named] or ["event_id"]


@contextlib.contextmanager
def _day_batch(wh: Warehouse, business_date: dt.date) -> Iterator[Any]:
    """The GX batch of the day's events on a server GX validates on (PostgreSQL, Trino)."""
    context = _context()
    # Pushed down: GX queries the server for the day's rows.
    if wh.dialect == "postgres":
        # A query asset selecting the day with an equality on load_date, not GX's daily partitioner: that filters on
        # extract(year / month / day from load_date), which PostgreSQL estimates at one row, so it joined a day to
        # its own key counts (expect_compound_columns_to_be_unique) in a nested loop, quadratic in the day's rows:
        # 66,477 rows took over 60 s (0.08 s with the equality: a hash join). GX binds a date only through those
        # extract filters, so the date is written into the query: a datetime.date, as YYYY-MM-DD.
        if not isinstance(business_date, dt.date) or isinstance(business_date, dt.datetime):
            raise TypeError(f"business_date must be a date, not {type(business_date).__name__}")
        query = f"select * from raw.events where load_date = date '{business_date.strftime('%Y-%m-%d')}'"
        source = context.data_sources.add_postgres(
            name="warehouse", connection_string=wh.engine.url.render_as_string(hide_password=False)
        )
        view = None
    else:
        # Trino: GX cannot read a query asset's columns on it, and its daily partitioner filters on extract(year /
        # month / day from load_date), which reads every load_date partition. The day is a view with an equality on
        # load_date (Trino prunes to the day's partition), a scratch object of this process (raw.tmp_*), one per
        # validation so two of one date do not share it, dropped at the end (or by a later task's sweep).
        if not isinstance(business_date, dt.date) or isinstance(business_date, dt.datetime):
            raise TypeError(f"business_date must be a date, not {type(business_date).__name__}")
        view = wh.trino.scratch_name("raw", f"validate_{business_date:%Y%m%d}").split(".")[1]
        wh.trino.ddl(f"create view raw.{view} as select * from raw.events where load_date = date '{business_date:%Y-%m-%d}'")
        source = _trino_source(context, wh)
    try:
        if wh.dialect == "postgres":
            yield source.add_query_asset(name="raw_events", query=query).add_batch_definition_whole_table(name="day").get_batch()
        else:
            asset = source.add_table_asset(name="raw_events", schema_name="raw", table_name=view)
            yield asset.add_batch_definition_whole_table(name="day").get_batch()
    finally:
        source.get_engine().dispose()
        if view is not None:
            wh.trino.drop_scratch(f"raw.{view}", view=True)


# -- validation of frames, in parts ----------------------------------------------
# Expectations checked row by row: over the day, their counts are the sums of their counts over any split of the day's
# rows, and they fail on the day exactly when they fail on a part (when no ``mostly`` lowers the bar).
ROW_WISE = frozenset(
    {
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_null",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_be_between",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_select_column_values_to_be_unique_within_record",
    }
)
# Uniqueness over these columns is exact per part when every copy of a value lands in the same part: the day is split
# on a hash of columns every uniqueness expectation includes.
UNIQUENESS = {"expect_compound_columns_to_be_unique": "column_list", "expect_column_values_to_be_unique": "column"}
ROW_COUNT = "expect_table_row_count_to_be_between"
# Rows per Arrow batch of the one scan that splits the day into parts.
PART_BATCH_ROWS = 100_000
PARTS_PREFIX = ".validate-parts-"
PART_COLUMN = "_cohortflow_part"


def split_columns(suite: Any) -> list[str] | None:
    """The columns whose hash splits the day into parts that validate to the whole day's outcome, or None when the
    suite has an expectation whose outcome over the day is not the sum of its outcomes over parts (an aggregate like a
    mean, a ``mostly`` below 1, uniqueness on column sets with no column in common): that suite sees the whole day."""
    shared: list[str] | None = None
    for expectation in suite.expectations:
        config = expectation.configuration
        kwargs = config.kwargs
        if config.type == ROW_COUNT:
            continue
        if kwargs.get("mostly", 1) != 1:
            return None
        if config.type in UNIQUENESS:
            value = kwargs[UNIQUENESS[config.type]]
            columns = [value] if isinstance(value, str) else list(value)
            shared = columns if shared is None else [c for c in shared if c in columns]
            if not shared:
                return None
        elif config.type not in ROW_WISE:
            return None
    return shared or ["event_id"]


def _typed_frame(table: pa.Table) -> Any:
    """A pandas frame of ``raw.events`` columns, typed as the table."""
    return pa.table({name: table.column(name).cast(RAW_EVENT_SCHEMA.field(name).type) for name in table.column_names}).to_pandas()


def _day_frame(wh: Warehouse, conn: Any, business_date: dt.date, columns: list[str], day_rows: int) -> Any:
    """A pandas frame of the day's rows, only ``columns``. On DuckDB read through its Arrow output: no Python object
    per value on the way. An empty day (on a server GX validates on, its partition does not exist) is the empty
    frame of the table's columns."""
    if not day_rows:
        return _typed_frame(RAW_EVENT_SCHEMA.empty_table().select(columns))
    sql = DUCKDB_DAY_EVENTS_SQL.format(columns=", ".join(columns))
    return _typed_frame(conn.connection.driver_connection.sql(sql, params={"d": business_date}).to_arrow_table())


def _day_parts(conn: Any, business_date: dt.date, columns: list[str], keys: list[str], parts: int, folder: Path) -> Iterator[Any]:
    """The day's rows split on ``hash(keys) % parts``, one pandas frame per part. One scan of the day: its Arrow
    batches are split by part into one Arrow IPC file per part under ``folder``, then each part is read back alone."""
    part = f"cast(hash({', '.join(keys)}) % cast($parts as ubigint) as integer) as {PART_COLUMN}"
    sql = DUCKDB_DAY_EVENTS_SQL.format(columns=", ".join([*columns, part]))
    reader = conn.connection.driver_connection.sql(sql, params={"d": business_date, "parts": parts}).to_arrow_reader(PART_BATCH_ROWS)
    schema = reader.schema.remove(reader.schema.get_field_index(PART_COLUMN))
    paths = [folder / f"part-{index}.arrow" for index in range(parts)]
    writers = [pa.ipc.new_file(path, schema) for path in paths]
    try:
        for batch in reader:
            part = batch.column(PART_COLUMN)
            batch = batch.drop_columns([PART_COLUMN])
            for index in pc.unique(part).to_pylist():
                writers[index].write_batch(batch.filter(pc.equal(part, index)))
    finally:
        # A DuckDB result stays open on the connection until its reader is closed, drained or not.
        reader.close()
        for writer in writers:
            writer.close()
    for path in paths:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        path.unlink()
        yield _typed_frame(table)
        del table


def _frame_result(frame: Any, suite: Any, params: Mapping[str, Any]) -> Any:
    """The suite's result on one frame (each in a context of its own: every part's batch is named as the day's)."""
    source = _context().data_sources.add_pandas(name="warehouse")
    day = source.add_dataframe_asset(name="raw_events").add_batch_definition_whole_dataframe(name="day")
    result = day.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format=RESULT_FORMAT, expectation_parameters=dict(params)
    )
    # The result's batch spec holds the frame itself (shown as "PandasDataFrame"): keep only what it shows, so a
    # part's frame is freed once the next part is read.
    result.meta["batch_spec"] = {"batch_data": "PandasDataFrame"}
    return result


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _merged_counts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One expectation's SUMMARY result over the day from its results over the parts: counts summed, percentages
    recomputed, the sample of unexpected values taken from the parts in order (row indexes are per part: dropped)."""
    element = sum(r.get("element_count") or 0 for r in results)
    unexpected = sum(r.get("unexpected_count") or 0 for r in results)
    merged: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected}
    limit = RESULT_FORMAT["partial_unexpected_count"]
    merged["partial_unexpected_list"] = [v for r in results for v in r.get("partial_unexpected_list") or []][:limit]
    counts: dict[str, dict[str, Any]] = {}
    for r in results:
        for item in r.get("partial_unexpected_counts") or []:
            key = json.dumps(item["value"], sort_keys=True, default=str)
            counts.setdefault(key, {"value": item["value"], "count": 0})["count"] += item["count"]
    merged["partial_unexpected_counts"] = sorted(counts.values(), key=lambda c: -c["count"])[:limit]
    if any("missing_count" in r for r in results):
        missing = sum(r.get("missing_count") or 0 for r in results)
        present = element - missing
        merged.update(
            missing_count=missing,
            missing_percent=_percent(missing, element),
            unexpected_percent=_percent(unexpected, present),
            unexpected_percent_total=_percent(unexpected, element),
            unexpected_percent_nonmissing=_percent(unexpected, present),
        )
    else:
        merged["unexpected_percent"] = _percent(unexpected, element)
    return merged


def _merge_results(parts: list[Any], row_counts: Any, suite: Any) -> Any:
    """The suite's result over the whole day from its results over the parts, followed by the row-count expectations'
    result over the day's row count. A part's results are matched to the first part's by expectation configuration
    (and by occurrence, should a suite repeat one)."""
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult

    def by_config(result: Any) -> dict[tuple[str, int], Any]:
        keyed: dict[tuple[str, int], Any] = {}
        for r in result.results:
            config = r.expectation_config
            kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
            key = json.dumps([config.type, kwargs, config.meta], sort_keys=True, default=str)
            keyed[key, sum(1 for seen, _ in keyed if seen == key)] = r
        return keyed

    part_maps = [by_config(p) for p in parts]
    merged = []
    for key, first in part_maps[0].items():
        each = [m[key] for m in part_maps]
        first.result = _merged_counts([r.result for r in each])
        first.success = all(r.success for r in each)
        errors = [r.exception_info for r in each if _exception_text(r.exception_info)]
        if errors:
            first.exception_info = errors[0]
        merged.append(first)
    merged += row_counts.results if row_counts is not None else []
    successful = sum(1 for r in merged if r.success)
    return ExpectationSuiteValidationResult(
        success=successful == len(merged),
        results=merged,
        suite_name=suite.name,
        statistics={
            "evaluated_expectations": len(merged),
            "successful_expectations": successful,
            "unsuccessful_expectations": len(merged) - successful,
            "success_percent": _percent(successful, len(merged)) if merged else None,
        },
        meta={**(parts[0].meta or {}), "validated_in_parts": len(parts)},
    )


def _validate_frames(wh: Warehouse, conn: Any, cfg: Config, business_date: dt.date, suite: Any, params: Mapping[str, Any], day_rows: int) -> Any:
    """DuckDB: validate the day in pandas, in hash parts of at most about ``validation.part_rows`` rows when the
    suite allows it (``split_columns``), so memory is bounded by the part, not the day."""
    gx = _gx()
    columns = suite_columns(suite)
    keys = split_columns(suite)
    parts = max(1, math.ceil(day_rows / cfg.validation.part_rows))
    if keys is None or parts == 1:
        return _frame_result(_day_frame(wh, conn, business_date, columns, day_rows), suite, params)
    import pandas as pd

    row_wise = [e for e in suite.expectations if e.configuration.type != ROW_COUNT]
    counts = [e for e in suite.expectations if e.configuration.type == ROW_COUNT]
    part_suite = gx.ExpectationSuite(name=suite.name, expectations=row_wise, meta=suite.meta)
    results = []
    with scratch_folder(cfg.target_path, PARTS_PREFIX) as folder:
        for frame in _day_parts(conn, business_date, columns, keys, parts, folder):
            results.append(_frame_result(frame, part_suite, params))
            # GX's context, data source and batch refer to each other: collect them with the frame.
            del frame
            gc.collect()
    row_counts = None
    if counts:
        # The day's row count as a frame of no columns: an index of day_rows rows takes no memory.
        count_suite = gx.ExpectationSuite(name=suite.name, expectations=counts, meta=suite.meta)
        row_counts = _frame_result(pd.DataFrame(index=pd.RangeIndex(day_rows)), count_suite, params)
    return _merge_results(results, row_counts, suite)


# Engines where GX validates on the server (its SQL data source); DuckDB validates a pandas frame of the day.
PUSHED_DOWN = ("postgres", "trino")


def _trino_source(context: Any, wh: Warehouse) -> Any:
    """GX's generic SQL data source on the trino SQLAlchemy dialect, with the warehouse's connection settings.

    Every expectation of the events suite runs as SQL on Trino (GX 1.24 compiles them with SQLAlchemy for any
    dialect). GX has no Trino-specific data source: what GX itself marks as unsupported on a generic SQL source
    (e.g. regex expectations on dialects it does not know) would report an error in the result, shown per
    expectation as "error: ...".
    """
    return context.data_sources.add_sql(
        name="warehouse",
        connection_string=wh.trino.autocommit.url.render_as_string(hide_password=False),
        kwargs={"connect_args": wh.trino.connect_args},
    )


def _short(value: Any, limit: int = 60) -> str:
    value = value.item() if hasattr(value, "item") else value
    text = repr(value) if isinstance(value, str) else "null" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exception_text(info: Any) -> str | None:
    """GX reports an expectation that raised in ``exception_info`` (flat or per metric)."""
    if not info:
        return None
    infos = [info] if "raised_exception" in info else list(info.values())
    for item in infos:
        item = item.to_json_dict() if hasattr(item, "to_json_dict") else item
        if isinstance(item, Mapping) and item.get("raised_exception"):
            return str(item.get("exception_message") or "raised an exception").strip().splitlines()[0][:200]
    return None


def _observed(result: Any) -> str:
    error = _exception_text(result.exception_info)
    if error:
        return f"error: {error}"
    res = result.result or {}
    if "unexpected_count" in res and "element_count" in res:
        unexpected, total = res["unexpected_count"] or 0, res["element_count"] or 0
        text = f"{unexpected:,} of {plural(total, 'row')} unexpected"
        if unexpected and total:
            text += f" ({100.0 * unexpected / total:.3g}%)"
        # The partial list is a sample of the first unexpected rows; show a few distinct values.
        examples = list(dict.fromkeys(_short(v) for v in res.get("partial_unexpected_list") or []))
        if unexpected and examples:
            text += f", e.g. {', '.join(examples[:3])}"
        return text
    if "observed_value" in res:
        text = f"observed {_short(res['observed_value'])}"
        kwargs = result.expectation_config.kwargs
        if "min_value" in kwargs or "max_value" in kwargs:
            text += f" (expected {_short(kwargs.get('min_value'))} .. {_short(kwargs.get('max_value'))})"
        return text
    return "ok" if result.success else "failed"


def _severity(config: Any) -> str:
    severity = getattr(config, "severity", None)
    value = getattr(severity, "value", severity) or "critical"
    return str(value).lower()


# -- the stage -----------------------------------------------------------------
def validate_day(wh: Warehouse, cfg: Config, business_date: dt.date, run_id: str) -> ValidationOutcome:
    """Validate the events loaded for ``business_date``; store and return every expectation's outcome."""
    suite = load_suite(EVENTS_SUITE)
    with wh.begin() as conn:
        params = suite_parameters(wh, conn, cfg, business_date)
        not_applicable = {"known_event_names"} if not params["known_event_names"] else set()

        skipped: list[ExpectationOutcome] = []
        kept = []
        for expectation in suite.expectations:
            config = expectation.configuration
            if _parameter_refs(config.kwargs) & not_applicable:
                skipped.append(
                    ExpectationOutcome(
                        expectation=config.type,
                        column=_columns(config.kwargs),
                        severity=_severity(config),
                        success=True,
                        observed="not applicable: the tracking plan lists no events",
                        skipped=True,
                    )
                )
            else:
                kept.append(expectation)
        gx = _gx()
        run_suite = gx.ExpectationSuite(name=suite.name, expectations=kept, meta=suite.meta)

        row_count = int(wh.scalar(conn, "select count(*) from raw.events where load_date = :d", {"d": business_date}))
        # An empty day has no partition for GX to find on the server: validate the empty frame instead.
        if wh.dialect in PUSHED_DOWN and row_count:
            with _day_batch(wh, business_date) as batch:
                result = batch.validate(run_suite, result_format=RESULT_FORMAT, expectation_parameters=params)
        else:
            result = _validate_frames(wh, conn, cfg, business_date, run_suite, params, row_count)

    outcomes = [
        ExpectationOutcome(
            expectation=r.expectation_config.type,
            column=_columns(r.expectation_config.kwargs),
            # The volume check's severity is the project's choice (validation.volume_severity).
            severity=cfg.validation.volume_severity if r.expectation_config.type == VOLUME_EXPECTATION else _severity(r.expectation_config),
            success=bool(r.success),
            observed=_observed(r),
        )
        for r in result.results
    ] + skipped
    outcome = ValidationOutcome(
        suite=suite.name,
        run_id=run_id,
        business_date=business_date,
        results=outcomes,
        row_count=row_count,
        parameters=params,
    )
    checkpoint("validate", cfg.target_path)
    outcome.result_path = _write_result_json(wh, cfg, outcome, result)
    store_outcome(wh, outcome)
    log.info("validation %s %s: %s", suite.name, business_date, outcome.status)
    return outcome


def store_outcome(wh: Warehouse, outcome: ValidationOutcome) -> int:
    """Replace the stored results of the outcome's date and suite; return the rows written."""
    validated_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {
            "run_id": outcome.run_id,
            "business_date": outcome.business_date,
            "suite": outcome.suite,
            "expectation": r.expectation,
            "column_name": r.column,
            "severity": r.severity,
            "success": r.success,
            "observed": r.observed,
            "validated_at": validated_at,
        }
        for r in outcome.results
    ]
    with wh.begin() as conn:
        wh.execute(conn, DELETE_RESULTS_SQL, {"d": outcome.business_date, "suite": outcome.suite})
        return wh.load_arrow(conn, "meta.validation_results", pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA))


def _write_result_json(wh: Warehouse, cfg: Config, outcome: ValidationOutcome, result: Any) -> Path:
    doc = result.to_json_dict()
    doc.setdefault("meta", {}).update(
        {
            "run_id": outcome.run_id,
            "business_date": outcome.business_date.isoformat(),
            "row_count": outcome.row_count,
            "status": outcome.status,
            "not_applicable": [r.label for r in outcome.results if r.skipped],
        }
    )
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    password = wh.engine.url.password
    if password:
        text = text.replace(str(password), "***")
    path = cfg.target_path / "validation" / f"{outcome.suite}-{outcome.business_date.isoformat()}.json"
    tmp = path.with_suffix(".json.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(describe(exc, path, "the validation result")) from None
    return path

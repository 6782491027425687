"""The numbers of a report: read from the published tables (``reports``) and the run records (``meta``, and the
quarantined lines of ``raw.quarantine``), shaped per chart.

Everything here is plain data (JSON-ready dicts and lists), so a test can read
what the report shows without a browser. Funnel and retention figures over
several dates are computed the way the reference document says to: sums of
user counts of the ``'all'`` rows, rates as ratios of sums.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from cohortflow.config import Config
from cohortflow.warehouse import Warehouse

FUNNEL_ENTRY_DAYS = 28  # entry dates a funnel's drop-off chart sums over (those complete among them)
RETENTION_COHORTS = {"day": 30, "week": 12, "month": 12}  # cohorts shown per definition
QUARANTINE_SAMPLES = 3  # sample lines per quarantine reason
SAMPLE_CHARS = 400  # of a quarantined line shown
TOP_PATHS = 10


def _d(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _f(value) -> float | None:
    return None if value is None else float(value)


def _rows(wh: Warehouse, conn, sql: str, params: dict | None = None) -> list[dict[str, Any]]:
    result = wh.execute(conn, sql, params or {})
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.fetchall()]


def collect(wh: Warehouse, cfg: Config, business_date: dt.date) -> dict[str, Any]:
    """Everything the report of ``business_date`` shows."""
    lo = business_date - dt.timedelta(days=cfg.report.history_days - 1)
    p = {"lo": lo, "hi": business_date, "d": business_date}
    with wh.begin() as conn:
        data = {
            "business_date": business_date.isoformat(),
            "project": cfg.project,
            "timezone": cfg.timezone,
            "history": {"start": lo.isoformat(), "end": business_date.isoformat(), "days": cfg.report.history_days},
            "active_users": _active_users(wh, conn, p),
            "sessions": _sessions(wh, conn, p),
            "lifecycle": _lifecycle(wh, conn, p),
            "events": _top_events(wh, conn, p),
            "funnels": _funnels(wh, conn, cfg, business_date),
            "retention": _retention(wh, conn, cfg, business_date),
            "frequency": _frequency(wh, conn, cfg),
            "paths": _paths(wh, conn, p),
            "segments": _segments(wh, conn, cfg, p),
            "quality": _quality(wh, conn, p),
        }
    return data


# -- activity ----------------------------------------------------------------------------------------------------


def _daily(wh, conn, p, table: str, date_column: str, counts: tuple[str, ...], measures: tuple[str, ...]) -> list[dict]:
    """The rows of a daily reports table over the report's history, in date order: the date, the ``counts`` as they
    are and the ``measures`` as floats."""
    rows = _rows(
        wh, conn,
        f"select {date_column}, {', '.join(counts + measures)} from reports.{table} "
        f"where {date_column} between :lo and :hi order by {date_column}",
        p,
    )
    return [{"date": _d(r[date_column]), **{c: r[c] for c in counts}, **{m: _f(r[m]) for m in measures}} for r in rows]


def _active_users(wh, conn, p) -> list[dict]:
    return _daily(wh, conn, p, "active_users_daily", "activity_date", ("dau", "wau", "mau"), ("stickiness",))


def _sessions(wh, conn, p) -> list[dict]:
    measures = ("avg_duration_seconds", "avg_events_per_session", "bounce_rate")
    return _daily(wh, conn, p, "session_metrics_daily", "session_date", ("sessions", "users"), measures)


LIFECYCLE_STATES = ("new", "returning", "resurrecting", "dormant")


def _lifecycle(wh, conn, p) -> list[dict]:
    rows = _rows(
        wh, conn,
        "select activity_date, lifecycle_state, users from reports.lifecycle_daily "
        "where activity_date between :lo and :hi order by activity_date",
        p,
    )
    by_date: dict[str, dict] = {}
    for r in rows:
        entry = by_date.setdefault(_d(r["activity_date"]), {s: 0 for s in LIFECYCLE_STATES})
        entry[r["lifecycle_state"]] = r["users"]
    return [{"date": d, **v} for d, v in sorted(by_date.items())]


def _top_events(wh, conn, p) -> list[dict]:
    rows = _rows(
        wh, conn,
        "select event_name, count_events, count_users from reports.event_metrics_daily "
        # (ties in byte order on every engine: the ten shown are the same whatever the database's collation)
        "where event_date = :d and is_activity order by count_events desc, event_name collate \"C\" limit 10",
        p,
    )
    return [{"event": r["event_name"], "events": r["count_events"], "users": r["count_users"]} for r in rows]


# -- funnels -----------------------------------------------------------------------------------------------------


def _funnels(wh, conn, cfg: Config, d: dt.date) -> list[dict]:
    lo = d - dt.timedelta(days=FUNNEL_ENTRY_DAYS - 1)
    rows = _rows(
        wh, conn,
        "select funnel_name, entry_date, breakdown_value, step_index, step_event, entered_users, reached_users, "
        "median_seconds_to_convert, p90_seconds_to_convert, is_complete from reports.funnel_conversion_daily "
        "where entry_date between :lo and :hi order by funnel_name, entry_date, step_index",
        {"lo": lo, "hi": d},
    )
    by_funnel: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_funnel[r["funnel_name"]].append(r)
    out = []
    for definition in cfg.analyses.funnels:
        fr = by_funnel.get(definition.name, [])
        out.append(funnel_summary(definition.name, [s.label or s.event for s in definition.steps], fr, lo, d))
    return out


def weighted_median(values: list[tuple[float | None, int]]) -> float | None:
    """The median of per-date values, each weighted by its users (a per-date median is not additive; the median of
    them resists the odd date whose few users took days)."""
    items = sorted((float(v), w) for v, w in values if v is not None and w)
    total = sum(w for _, w in items)
    if not total:
        return None
    seen = 0
    for v, w in items:
        seen += w
        if seen * 2 >= total:
            return v
    return items[-1][0]


def funnel_summary(name: str, labels: list[str], rows: list[dict], lo: dt.date, hi: dt.date) -> dict:
    """One funnel's drop-off over its complete entry dates (all entry dates when none is complete yet)."""
    # Entry dates nobody entered on carry no information (the table has rows for them, with 0 users).
    entered_dates = {r["entry_date"] for r in rows if r["step_index"] == 1 and r["entered_users"]}
    rows = [r for r in rows if r["entry_date"] in entered_dates]
    all_rows = [r for r in rows if r["breakdown_value"] == "all"]
    complete_dates = sorted({r["entry_date"] for r in all_rows if r["is_complete"]})
    basis = "complete" if complete_dates else "incomplete"
    use = [r for r in all_rows if r["is_complete"]] if complete_dates else all_rows
    n_steps = len(labels)
    steps = []
    for k in range(1, n_steps + 1):
        at_k = [r for r in use if r["step_index"] == k]
        reached = sum(r["reached_users"] for r in at_k)
        entered = sum(r["entered_users"] for r in at_k)
        median = weighted_median([(r["median_seconds_to_convert"], r["reached_users"]) for r in at_k])
        p90 = weighted_median([(r["p90_seconds_to_convert"], r["reached_users"]) for r in at_k])
        steps.append(
            {
                "index": k,
                "event": labels[k - 1],
                "entered": entered,
                "reached": reached,
                "median_seconds": median if k > 1 else 0.0,
                "p90_seconds": p90 if k > 1 else 0.0,
            }
        )
    entered_total = steps[0]["reached"] if steps else 0
    for i, s in enumerate(steps):
        prev = steps[i - 1] if i else None
        s["conversion_from_first"] = s["reached"] / entered_total if entered_total else None
        if prev is None:
            s["conversion_from_previous"] = 1.0 if entered_total else None
            s["lost"] = 0
            s["drop"] = 0.0
            s["step_seconds"] = 0.0
        else:
            s["conversion_from_previous"] = s["reached"] / prev["reached"] if prev["reached"] else None
            s["lost"] = prev["reached"] - s["reached"]
            s["drop"] = s["lost"] / prev["reached"] if prev["reached"] else None
            if s["median_seconds"] is not None and prev["median_seconds"] is not None:
                s["step_seconds"] = max(s["median_seconds"] - prev["median_seconds"], 0.0)
            else:
                s["step_seconds"] = None
    later = steps[1:]
    with_drop = [s for s in later if s["drop"] is not None]
    with_time = [s for s in later if s["step_seconds"] is not None]
    largest_drop = max(with_drop, key=lambda s: s["drop"])["index"] if with_drop else None
    slowest = max(with_time, key=lambda s: s["step_seconds"])["index"] if with_time else None
    for s in steps:
        s["is_largest_drop"] = s["index"] == largest_drop
        s["is_slowest"] = s["index"] == slowest
    # Conversion to the last step per entry date (incomplete dates included, marked).
    by_date: dict[dt.date, dict] = {}
    for r in all_rows:
        e = by_date.setdefault(r["entry_date"], {"entered": 0, "converted": 0, "is_complete": bool(r["is_complete"])})
        if r["step_index"] == 1:
            e["entered"] = r["entered_users"]
        if r["step_index"] == n_steps:
            e["converted"] = r["reached_users"]
    dates = [
        {"date": _d(k), "entered": v["entered"], "converted": v["converted"],
         "rate": v["converted"] / v["entered"] if v["entered"] else None, "is_complete": v["is_complete"]}
        for k, v in sorted(by_date.items())
    ]
    # Overall conversion per breakdown value (over the same entry dates as the steps).
    groups: dict[str, dict] = {}
    for r in rows:
        if r["breakdown_value"] == "all" or (basis == "complete" and not r["is_complete"]):
            continue
        g = groups.setdefault(r["breakdown_value"], {"entered": 0, "converted": 0})
        if r["step_index"] == 1:
            g["entered"] += r["entered_users"]
        if r["step_index"] == n_steps:
            g["converted"] += r["reached_users"]
    breakdown = sorted(
        ({"value": k, **v, "rate": v["converted"] / v["entered"] if v["entered"] else None} for k, v in groups.items()),
        key=lambda g: (-g["entered"], g["value"]),
    )
    return {
        "name": name,
        "basis": basis,
        "entry_dates": {"start": lo.isoformat(), "end": hi.isoformat(), "used": len({r["entry_date"] for r in use})},
        "steps": steps,
        "largest_drop_step": largest_drop,
        "slowest_step": slowest,
        "by_date": dates,
        "breakdown": breakdown,
    }


# -- retention ---------------------------------------------------------------------------------------------------


def _retention(wh, conn, cfg: Config, d: dt.date) -> list[dict]:
    out = []
    for definition in cfg.analyses.retention:
        rows = _rows(
            wh, conn,
            "select cohort_date, period_number, cohort_users, retained_users, is_complete "
            "from reports.retention_cohorts where retention_name = :name and breakdown_value = 'all' "
            "order by cohort_date, period_number",
            {"name": definition.name},
        )
        cohorts: dict[dt.date, dict] = {}
        for r in rows:
            c = cohorts.setdefault(r["cohort_date"], {"cohort_date": _d(r["cohort_date"]), "cohort_users": r["cohort_users"], "cells": []})
            c["cells"].append(
                {
                    "k": r["period_number"],
                    "retained": r["retained_users"],
                    "rate": r["retained_users"] / r["cohort_users"] if r["cohort_users"] else None,
                    "is_complete": bool(r["is_complete"]),
                }
            )
        shown = [cohorts[k] for k in sorted(cohorts)][-RETENTION_COHORTS[definition.period]:]
        max_k = max((cell["k"] for c in shown for cell in c["cells"]), default=-1)
        curve = []
        for k in range(max_k + 1):
            cells = [(c["cohort_users"], cell) for c in shown for cell in c["cells"] if cell["k"] == k]
            done = [(n, cell) for n, cell in cells if cell["is_complete"]]
            curve.append(
                {
                    "k": k,
                    "rate_complete": sum(cell["retained"] for _, cell in done) / sum(n for n, _ in done) if done and sum(n for n, _ in done) else None,
                    "cohorts_complete": len(done),
                    "rate_all": sum(cell["retained"] for _, cell in cells) / sum(n for n, _ in cells) if cells and sum(n for n, _ in cells) else None,
                    "cohorts": len(cells),
                }
            )
        out.append(
            {
                "name": definition.name,
                "period": definition.period,
                "mode": definition.mode,
                "cohort_type": definition.cohort_type,
                "start_event": definition.start.event or "any activity",
                "return_event": definition.returning.event or "any activity",
                "cohorts": list(reversed(shown)),
                "max_period": max_k,
                "curve": curve,
            }
        )
    return out


# -- frequency -> retention, paths, segments ---------------------------------------------------------------------


def _frequency(wh, conn, cfg: Config) -> list[dict]:
    out = []
    for definition in cfg.analyses.frequency_retention:
        rows = _rows(
            wh, conn,
            "select frequency_bucket, frequency_label, users, retained_users, retention_rate, as_of_date "
            "from reports.frequency_retention where frequency_name = :name and is_overall order by frequency_bucket",
            {"name": definition.name},
        )
        out.append(
            {
                "name": definition.name,
                "event": definition.event,
                "first_days": definition.first_days,
                "target_from_day": definition.target_from_day,
                "target_to_day": definition.target_to_day,
                "as_of_date": _d(rows[0]["as_of_date"]) if rows else None,
                "buckets": [
                    {"bucket": r["frequency_bucket"], "label": r["frequency_label"], "users": r["users"],
                     "retained": r["retained_users"], "rate": _f(r["retention_rate"])}
                    for r in rows
                ],
            }
        )
    return out


def _paths(wh, conn, p) -> dict:
    day = wh.scalar(conn, "select max(session_date) from reports.top_paths_daily where session_date <= :d", p)
    if day is None:
        return {"date": None, "paths": []}
    rows = _rows(
        wh, conn,
        f"select path_rank, path, path_length, count_sessions, count_users from reports.top_paths_daily "
        f"where session_date = :day and path_rank <= {TOP_PATHS} order by path_rank",
        {"day": day},
    )
    return {
        "date": _d(day),
        "paths": [{"rank": r["path_rank"], "path": r["path"], "length": r["path_length"], "sessions": r["count_sessions"], "users": r["count_users"]} for r in rows],
    }


def _segments(wh, conn, cfg: Config, p) -> list[dict]:
    rows = _rows(
        wh, conn,
        "select segment_name, as_of_date, users from reports.segment_size_daily "
        "where as_of_date between :lo and :hi order by segment_name, as_of_date",
        p,
    )
    by: dict[str, list] = defaultdict(list)
    for r in rows:
        by[r["segment_name"]].append({"date": _d(r["as_of_date"]), "users": r["users"]})
    return [{"name": s.name, "points": by.get(s.name, [])} for s in cfg.analyses.segments]


# -- data quality ------------------------------------------------------------------------------------------------


def _quality(wh, conn, p) -> dict:
    ledger = _rows(
        wh, conn,
        "select source_name, ingest_file, lines_read, events_loaded, duplicates_removed, lines_quarantined, run_id "
        "from meta.ingest_ledger where load_date = :d order by source_name, ingest_file",
        p,
    )
    trend = _rows(
        wh, conn,
        "select load_date, sum(lines_read) as lines_read, sum(events_loaded) as events_loaded, "
        "sum(duplicates_removed) as duplicates_removed, sum(lines_quarantined) as lines_quarantined "
        "from meta.ingest_ledger where load_date between :lo and :hi group by load_date order by load_date",
        p,
    )
    reasons = _rows(
        wh, conn,
        "select reason, count(*) as lines from raw.quarantine where load_date = :d group by reason order by count(*) desc, reason",
        p,
    )
    samples = _rows(
        wh, conn,
        "select reason, ingest_file, ingest_line, detail, raw_line from ("
        "  select reason, ingest_file, ingest_line, detail, raw_line,"
        "    row_number() over (partition by reason order by ingest_file collate \"C\", ingest_line) as n"
        "  from raw.quarantine where load_date = :d"
        f") as q where n <= {QUARANTINE_SAMPLES} order by reason, ingest_file, ingest_line",
        p,
    )
    by_reason: dict[str, list] = defaultdict(list)
    for s in samples:
        raw = s["raw_line"] or ""
        by_reason[s["reason"]].append(
            {
                "file": s["ingest_file"],
                "line": s["ingest_line"],
                "detail": s["detail"],
                "raw": raw[:SAMPLE_CHARS],
                "cut": max(len(raw) - SAMPLE_CHARS, 0),
            }
        )
    run = wh.scalar(
        conn,
        "select max(run_id) from meta.validation_results where business_date = :d",
        p,
    )
    validation = _rows(
        wh, conn,
        "select suite, expectation, column_name, severity, success, observed from meta.validation_results "
        "where business_date = :d and run_id = :run order by success, severity, expectation",
        {**p, "run": run},
    ) if run else []
    late = _rows(
        wh, conn,
        "select event_date, count(*) as events from raw.events where load_date = :d group by event_date order by event_date",
        p,
    )
    late_trend = _rows(
        wh, conn,
        "select load_date, count(*) as events, sum(case when event_date < load_date then 1 else 0 end) as late_events "
        "from raw.events where load_date between :lo and :hi group by load_date order by load_date",
        p,
    )
    runs = _rows(
        wh, conn,
        "select run_id, task, status, runner, started_at, ended_at, rows_in, rows_out, error from meta.run_log "
        "where business_date = :d order by started_at",
        p,
    )
    d = p["d"]
    return {
        "ledger": [
            {"source": r["source_name"], "file": r["ingest_file"], "lines_read": r["lines_read"], "loaded": r["events_loaded"],
             "duplicates": r["duplicates_removed"], "quarantined": r["lines_quarantined"]}
            for r in ledger
        ],
        "ledger_trend": [
            {"date": _d(r["load_date"]), "lines_read": int(r["lines_read"]), "loaded": int(r["events_loaded"]),
             "duplicates": int(r["duplicates_removed"]), "quarantined": int(r["lines_quarantined"])}
            for r in trend
        ],
        "quarantine": [{"reason": r["reason"], "lines": r["lines"], "samples": by_reason.get(r["reason"], [])} for r in reasons],
        "validation": [
            {"suite": r["suite"], "expectation": r["expectation"], "column": r["column_name"], "severity": r["severity"],
             "success": bool(r["success"]), "observed": r["observed"]}
            for r in validation
        ],
        "late_by_lag": [
            {"lag_days": (d - (r["event_date"].date() if isinstance(r["event_date"], dt.datetime) else r["event_date"])).days,
             "events": r["events"]}
            for r in late
        ],
        "late_trend": [
            {"date": _d(r["load_date"]), "events": int(r["events"]), "late_events": int(r["late_events"] or 0)}
            for r in late_trend
        ],
        "runs": [
            {"run_id": r["run_id"], "task": r["task"], "status": r["status"], "runner": r["runner"],
             "started_at": r["started_at"].isoformat(sep=" ", timespec="seconds") if r["started_at"] else None,
             "seconds": (r["ended_at"] - r["started_at"]).total_seconds() if r["ended_at"] and r["started_at"] else None,
             "rows_out": r["rows_out"], "error": r["error"]}
            for r in runs
        ],
    }

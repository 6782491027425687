"""Property tests: retention cohorts, frequency -> retention and lifecycle against the brute force of SEMANTICS.md.

Random small event sets over about six weeks that cross week and month
boundaries (events before the build range, inside it and after the as-of
date; identity links; bookkeeping events; same-millisecond ties) are loaded
into ``raw.events``; the models are built for a random [start, end] and
compared row for row with ``tests/reference/retention.py``. One config holds
every retention cohort type x mode x period, plus definitions with property
filters (number and text comparisons), breakdowns and a segment, so each
example checks all of them. Each engine reuses one warehouse across examples.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.analyses import model_params
from cohortflow.config import load_config
from cohortflow.warehouse import Warehouse
from tests.conftest import load_and_build_fresh
from tests.properties.event_ids import draw_event_id
from tests.reference import retention as ref

MODELS = (
    "stg_identities",
    "stg_events",
    "segment_membership_daily",
    "retention_cohorts",
    "frequency_retention",
    "lifecycle_daily",
)
EXAMPLES = {"duckdb": 60, "postgres": 30, "trino": 4}

HORIZONS = {"day": 10, "week": 4, "month": 2}
RETENTIONS = [
    {"name": f"{period}_{cohort_type}_{mode}", "period": period, "horizon": HORIZONS[period],
     "cohort_type": cohort_type, "mode": mode}
    for period in ("day", "week", "month")
    for cohort_type in ("first_time", "recurring")
    for mode in ("on", "on_or_after")
] + [
    {"name": "buy_week", "period": "week", "horizon": 3, "cohort_type": "recurring", "mode": "on",
     "start": {"event": "buy", "where": [{"property": "amount", "op": "gte", "value": 5}]},
     "return": {"where": [{"property": "platform", "op": "in", "value": ["ios", "web"]}]},
     "breakdown": "plan"},
    {"name": "plan_day", "period": "day", "horizon": 5, "mode": "on_or_after",
     "start": {"where": [{"property": "plan", "op": "neq", "value": "free"}]},
     "return": {"event": "buy", "where": [{"property": "amount", "op": "lt", "value": 7},
                                          {"property": "plan", "op": "is_set"}]},
     "breakdown": "platform"},
    {"name": "text_month", "period": "month", "horizon": 1, "cohort_type": "recurring",
     "start": {"where": [{"property": "plan", "op": "gt", "value": "free"}]},
     "return": {"where": [{"property": "amount", "op": "not_in", "value": ["x", 5]},
                          {"property": "note", "op": "contains", "value": "é"}]}},
    {"name": "flag_day", "period": "day", "horizon": 3,
     "start": {"where": [{"property": "flag", "op": "eq", "value": True}]},
     "return": {"where": [{"property": "amount", "op": "is_not_set"}]}},
    {"name": "segment_day", "period": "day", "horizon": 4, "cohort_type": "recurring", "segment": "buyers"},
]
FREQUENCIES = [
    {"name": "buy_magic", "event": "buy", "first_days": 3, "target_from_day": 2, "target_to_day": 5, "cap": 2},
    {"name": "open_magic", "event": "open", "first_days": 1, "target_from_day": 1, "target_to_day": 1, "cap": 3},
]
ANALYSES = {
    "retention": RETENTIONS,
    "frequency_retention": FREQUENCIES,
    "segments": [{"name": "buyers", "rule": {"did_event": "buy", "min_count": 1, "days": 2}}],
}

# A Monday; 45 days from it cross the month ends of January and February.
BASE = dt.datetime(2026, 1, 19)
DISTINCT_IDS = ("u0", "u1", "u2", "u3", "anon0", "anon1")
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.sampled_from([5, 7.5, 3, "5", "x", None, 5.0]),
        "plan": st.sampled_from(["free", "pro", "Pro", "gold"]),
        "flag": st.sampled_from([True, False, "true"]),
        "note": st.sampled_from(["café", "cafe", ""]),
    },
)


@st.composite
def scenarios(draw):
    ids = iter(range(1_000_000))
    events = []
    for _ in range(draw(st.integers(1, 25))):
        did = draw(st.sampled_from(DISTINCT_IDS))
        t = BASE + dt.timedelta(days=draw(st.integers(0, 45)), milliseconds=draw(st.integers(0, 86_399_999)))
        name = draw(st.sampled_from(("open", "open", "buy", "view", "$profile_set")))
        event_id, source_name = draw_event_id(draw, events, lambda: f"e{next(ids):03d}")
        events.append(
            {
                "event_id": event_id,
                "source_name": source_name,
                "event_name": name,
                "distinct_id": did,
                "event_time": t,
                "is_activity": name != "$profile_set",
                "platform": draw(st.sampled_from((None, "ios", "android", "web"))),
                "properties": draw(PROPERTIES),
                "link": None,
            }
        )
        if draw(st.integers(0, 4)) == 0:  # a second event of the same user at the same millisecond
            twin_id, twin_source = draw_event_id(draw, events, lambda: f"e{next(ids):03d}", events[-1])
            events.append(
                {**events[-1], "event_id": twin_id, "source_name": twin_source, "event_name": draw(st.sampled_from(("open", "buy"))),
                 "properties": draw(PROPERTIES)}
            )
    for _ in range(draw(st.integers(0, 2))):
        anon, login = draw(st.sampled_from(("anon0", "anon1"))), draw(st.sampled_from(("u0", "u1")))
        t = BASE + dt.timedelta(days=draw(st.integers(0, 45)))
        events.append(
            {"event_id": f"e{next(ids):03d}", "source_name": "app", "event_name": "$alias", "distinct_id": login, "event_time": t,
             "is_activity": False, "platform": None, "properties": {}, "link": (anon, login)}
        )
    start = (BASE + dt.timedelta(days=draw(st.integers(0, 30)))).date()
    end = start + dt.timedelta(days=draw(st.integers(0, 25)))
    return events, start, end


def _raw_rows(events):
    return [
        {
            "event_id": e["event_id"],
            "event_name": e["event_name"],
            "distinct_id": e["distinct_id"],
            "event_time": e["event_time"],
            "event_date": e["event_time"].date(),  # project time zone UTC; zones are pinned by the fixtures
            "received_at": e["event_time"],
            "source_format": "canonical",
            "app_id": None,
            "platform": e["platform"],
            "app_version": None,
            "channel": None,
            "session_id": None,
            "properties": json.dumps(e["properties"], ensure_ascii=False, sort_keys=True),
            "is_activity": e["is_activity"],
            "link_anonymous_id": e["link"][0] if e["link"] else None,
            "link_login_id": e["link"][1] if e["link"] else None,
            "load_date": e["event_time"].date(),
            "ingest_file": "events/part-0.jsonl",
            "ingest_line": i + 1,
            "source_name": e["source_name"],
        }
        for i, e in enumerate(events)
    ]


def build(wh: Warehouse, cfg, events, start: dt.date, end: dt.date) -> None:
    """Load the events and build this module's models (and what they read) for exactly [start, end]."""
    params = {**model_params(cfg), "start_date": start, "end_date": end}
    # What the pipeline has loaded by the as-of date ``end``: the ingest never loads an event dated after its
    # business date (event_in_future), so no loaded event lies after the as-of date.
    rows = [r for r in _raw_rows(events) if r["event_date"] <= end]
    load_and_build_fresh(wh, cfg, rows, params, MODELS)


def staged(wh: Warehouse) -> list[dict]:
    cols = ["event_id", "event_name", "user_id", "event_time", "event_date", "platform", "app_version", "channel",
            "properties", "is_activity", "source_name", "load_date"]
    with wh.begin() as conn:
        rows = wh.execute(conn, f"select {', '.join(cols)} from models.stg_events").fetchall()
    out = [dict(zip(cols, r, strict=True)) for r in rows]
    for e in out:
        e["properties"] = json.loads(e["properties"] or "{}")
    return out


def read(wh: Warehouse, table: str, columns: list[str]) -> list[tuple]:
    with wh.begin() as conn:
        rows = wh.execute(conn, f"select {', '.join(columns)} from {table}").fetchall()
    return sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)


def expect(rows: list[dict], columns: list[str]) -> list[tuple]:
    return sorted((tuple(_norm(r[c]) for c in columns) for r in rows), key=repr)


def _norm(v):
    if isinstance(v, float) or (hasattr(v, "__float__") and not isinstance(v, int | bool | dt.date)):
        return round(float(v), 9)
    return v


RETENTION_COLUMNS = ["retention_name", "cohort_date", "period", "breakdown_value", "period_number", "period_start_date",
                     "cohort_users", "retained_users", "retention_rate", "is_complete"]
FREQUENCY_COLUMNS = ["frequency_name", "cohort_week", "is_overall", "frequency_bucket", "frequency_min", "users",
                     "retained_users", "retention_rate", "is_complete"]
LIFECYCLE_COLUMNS = ["activity_date", "lifecycle_state", "users"]


@pytest.fixture
def project(make_project, engine):
    return make_project(engine, analyses=ANALYSES)


def test_retention_frequency_lifecycle_match_reference(project, engine):
    cfg = load_config(project.config_path, environ=project.environ)
    wh = Warehouse(cfg)
    wh.bootstrap()

    @settings(max_examples=EXAMPLES[engine], deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenarios())
    def check(scenario):
        events, start, end = scenario
        build(wh, cfg, events, start, end)
        stg = staged(wh)
        late = cfg.ingest.late_arrival_days
        with wh.begin() as conn:
            membership = {tuple(r) for r in wh.execute(
                conn, "select segment_name, as_of_date, user_id from models.segment_membership_daily").fetchall()}
        want = [row for d in RETENTIONS for row in ref.retention(stg, d, start, end, membership, late)]
        got, want = read(wh, "models.retention_cohorts", RETENTION_COLUMNS), expect(want, RETENTION_COLUMNS)
        assert got == want, {"only in the model": sorted(set(got) - set(want), key=repr),
                             "only in the reference": sorted(set(want) - set(got), key=repr)}
        want = [row for d in FREQUENCIES for row in ref.frequency_retention(stg, d, end, late)]
        assert read(wh, "models.frequency_retention", FREQUENCY_COLUMNS) == expect(want, FREQUENCY_COLUMNS)
        assert read(wh, "models.lifecycle_daily", LIFECYCLE_COLUMNS) == expect(
            ref.lifecycle_daily(stg, start, end), LIFECYCLE_COLUMNS
        )

    try:
        check()
    finally:
        wh.dispose()

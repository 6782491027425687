"""Property tests: sessions, paths and event-metric breakdowns against the brute force of SEMANTICS.md.

Random small event sets (gaps of exactly the timeout and one millisecond
either side, events at the same millisecond, local midnight in zones east and
west of UTC and around a DST change, identity links, bookkeeping events) are
loaded into ``raw.events``; the models are built for a date range and
compared row for row with ``tests/reference/sessions.py``. The built date
range is all the dates or a part of them, as in a nightly run that rebuilds
some partitions: sessions starting in it must still see the events before
and after it. Each engine reuses one warehouse across examples (the tables
are emptied between them).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.analyses import model_params
from cohortflow.config import load_config
from cohortflow.warehouse import Warehouse
from tests.conftest import load_and_build_fresh, write_config
from tests.properties.event_ids import draw_event_id
from tests.reference import sessions as ref

MODELS = (
    "stg_identities",
    "stg_events",
    "session_events",
    "sessions",
    "session_metrics_daily",
    "path_transitions_daily",
    "top_paths_daily",
    "event_metrics_breakdown_daily",
)
EXAMPLES = {"duckdb": 80, "postgres": 30, "trino": 6}

TIMEZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata")
# Local midnights to start near: an ordinary one, the New York fall-back date and spring-forward date.
MIDNIGHTS = (dt.date(2026, 6, 15), dt.date(2026, 11, 1), dt.date(2026, 3, 8))
NAMES = ("A", "B", "b", "C", "é")
DISTINCT_IDS = ("anon1", "anon2", "u1", "u2", "用户")
IDS = tuple(f"{p}{i}" for i in range(12) for p in ("e", "E", "é")) + tuple(f"e{i}" for i in range(12, 40))
VALUES = (None, "ios", "android", "Web")
MS = dt.timedelta(milliseconds=1)


def _gaps(timeout_minutes: int) -> st.SearchStrategy[dt.timedelta]:
    t = dt.timedelta(minutes=timeout_minutes)
    return st.one_of(
        st.sampled_from([dt.timedelta(0), MS, t - MS, t, t + MS, dt.timedelta(hours=3), dt.timedelta(hours=23)]),
        st.integers(0, 3 * 3_600_000).map(lambda ms: ms * MS),
    )


@st.composite
def scenarios(draw):
    tz = ZoneInfo(draw(st.sampled_from(TIMEZONES)))
    timeout = draw(st.sampled_from([1, 30, 1440]))
    midnight = dt.datetime.combine(draw(st.sampled_from(MIDNIGHTS)), dt.time(), tzinfo=tz)
    base = midnight.astimezone(dt.UTC).replace(tzinfo=None)
    ids = iter(draw(st.permutations(IDS)))
    events = []

    def event(distinct_id, t, name, activity=True, link=None, twin_of=None):
        local = t.replace(tzinfo=dt.UTC).astimezone(tz)
        event_id, source_name = draw_event_id(draw, events, lambda: next(ids), twin_of)
        events.append(
            {
                "event_id": event_id,
                "source_name": source_name,
                "event_name": name,
                "distinct_id": distinct_id,
                "event_time": t,
                "event_date": local.date(),
                "load_date": local.date(),
                "is_activity": activity,
                "platform": draw(st.sampled_from(VALUES)),
                "app_version": draw(st.sampled_from((None, "1.0", "1.1"))),
                "channel": draw(st.sampled_from((None, "store"))),
                "link_anonymous_id": link[0] if link else None,
                "link_login_id": link[1] if link else None,
            }
        )

    for _ in range(draw(st.integers(1, 3))):
        did = draw(st.sampled_from(DISTINCT_IDS))
        t = base + draw(st.integers(-3 * 3_600_000, 3 * 3_600_000)) * MS
        for _ in range(draw(st.integers(1, 6))):
            t += draw(_gaps(timeout))
            if draw(st.integers(0, 7)) == 0:
                event(did, t, "$profile_set", activity=False)
            else:
                event(did, t, draw(st.sampled_from(NAMES)))
                if draw(st.integers(0, 3)) == 0:  # a second event at the same millisecond (maybe a copy of the id)
                    event(did, t, draw(st.sampled_from(NAMES)), twin_of=events[-1])
    for _ in range(draw(st.integers(0, 2))):
        anon, login = draw(st.sampled_from(("anon1", "anon2"))), draw(st.sampled_from(("u1", "u2")))
        t = base + draw(st.integers(-3 * 3_600_000, 3 * 3_600_000)) * MS
        event(login, t, "$alias", activity=False, link=(anon, login))
    # The built range: all dates, or part of them (the partitions a nightly run rebuilds).
    dates = sorted({e["event_date"] for e in events})
    start = draw(st.sampled_from(dates))
    # A session may run past the day after the range only with a day-long timeout; the
    # models read that far (see sql/models/session_events.sql), so the range then ends last.
    end = dates[-1] if timeout == 1440 else draw(st.sampled_from([d for d in dates if d >= start]))
    config = {
        "range": (start, end),
        "timezone": str(tz),
        "analyses": {
            "sessions": {"timeout_minutes": timeout},
            "paths": {
                "start_event": draw(st.sampled_from((None, "A", "B"))),
                "max_steps": draw(st.integers(1, 4)),
                "top_n": draw(st.integers(1, 4)),
            },
            "breakdowns": draw(st.lists(st.sampled_from(("platform", "app_version", "channel")), max_size=3)),
        },
    }
    return config, events


def _raw_rows(events):
    return [
        {
            **{k: e[k] for k in ("event_id", "event_name", "distinct_id", "event_time", "event_date", "is_activity")},
            **{k: e[k] for k in ("platform", "app_version", "channel", "link_anonymous_id", "link_login_id")},
            "received_at": e["event_time"] + dt.timedelta(minutes=1),
            "source_format": "canonical",
            "app_id": None,
            "session_id": "sdk-session",  # the SDK's session id plays no part
            "properties": "{}",
            "load_date": e["load_date"],
            "ingest_file": "events/part-0.jsonl",
            "ingest_line": i + 1,
            "source_name": e["source_name"],
        }
        for i, e in enumerate(events)
    ]


def build(wh: Warehouse, cfg, events, start: dt.date, end: dt.date) -> None:
    """Load the events and build this module's models (and their staging) for exactly [start, end]."""
    params = {**model_params(cfg), "start_date": start, "end_date": end}
    load_and_build_fresh(wh, cfg, _raw_rows(events), params, MODELS)


def read(wh: Warehouse, table: str, columns: list[str]) -> list[tuple]:
    with wh.begin() as conn:
        rows = wh.execute(conn, f"select {', '.join(columns)} from {table}").fetchall()
    return sorted((tuple(_norm(v) for v in r) for r in rows), key=repr)


def expect(rows: list[dict], columns: list[str]) -> list[tuple]:
    return sorted((tuple(_norm(r[c]) for c in columns) for r in rows), key=repr)


def _norm(v):
    if isinstance(v, float) or (hasattr(v, "__float__") and not isinstance(v, int | bool | dt.date)):
        return round(float(v), 6)
    return v


SESSION_COLUMNS = ["session_id", "user_id", "session_date", "started_at", "ended_at", "duration_seconds", "count_events", "first_event", "last_event"]
METRIC_COLUMNS = ["session_date", "sessions", "users", "avg_duration_seconds", "avg_events_per_session", "bounce_rate"]
TRANSITION_COLUMNS = ["session_date", "step_number", "from_event", "to_event", "transition_count", "count_users"]
TOP_PATH_COLUMNS = ["session_date", "path_rank", "path", "path_length", "count_sessions", "count_users"]
BREAKDOWN_COLUMNS = ["event_date", "event_name", "breakdown", "breakdown_value", "count_events", "count_users"]


@pytest.fixture
def project(make_project, engine):
    return make_project(engine)


def test_sessions_paths_breakdowns_match_reference(project, engine):
    @settings(max_examples=EXAMPLES[engine], deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scenarios())
    def check(scenario):
        config, events = scenario
        write_config(project.root, timezone=config["timezone"], analyses=config["analyses"])
        cfg = load_config(project.config_path, environ=project.environ)
        wh = Warehouse(cfg)
        try:
            wh.bootstrap()
            start, end = config["range"]
            build(wh, cfg, events, start, end)
            resolved = ref.resolve_users(events)
            # Sessions are found over all events; the build writes the partitions of [start, end].
            sess = [
                s
                for s in ref.sessions(resolved, config["analyses"]["sessions"]["timeout_minutes"])
                if start <= s["session_date"] <= end
            ]
            paths = config["analyses"]["paths"]
            assert read(wh, "models.sessions", SESSION_COLUMNS) == expect(sess, SESSION_COLUMNS)
            assert read(wh, "models.session_metrics_daily", METRIC_COLUMNS) == expect(
                ref.session_metrics_daily(sess, start, end), METRIC_COLUMNS
            )
            assert read(wh, "models.path_transitions_daily", TRANSITION_COLUMNS) == expect(
                ref.path_transitions_daily(sess, paths["start_event"]), TRANSITION_COLUMNS
            )
            assert read(wh, "models.top_paths_daily", TOP_PATH_COLUMNS) == expect(
                ref.top_paths_daily(sess, paths["start_event"], paths["max_steps"], paths["top_n"]), TOP_PATH_COLUMNS
            )
            assert read(wh, "models.event_metrics_breakdown_daily", BREAKDOWN_COLUMNS) == expect(
                ref.event_metrics_breakdown_daily(resolved, config["analyses"]["breakdowns"], start, end), BREAKDOWN_COLUMNS
            )
        finally:
            wh.dispose()

    check()

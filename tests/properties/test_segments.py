"""Property tests: segment membership and size against the brute force of ``tests/reference/segments.py``.

Random small event sets (events at local 23:59:59.999 and 00:00:00.000 in
zones east and west of UTC and across the New York spring-forward date, equal
timestamps so the latest event is decided by event_id, bookkeeping events,
identity links) and random rule trees (and / or / not nested, every leaf kind,
every property op with string, number and boolean values) are loaded into
``raw.events``; the segment models are built and compared row for row with
the reference. Each engine reuses one warehouse across examples. Also: a full
build equals nightly builds over the runner's ranges (the reach), a tree 8
levels deep evaluates exactly, and deeper or empty rules are config errors.
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.analyses import load_definitions, model_params
from cohortflow.config import ConfigError, load_config
from cohortflow.events import RAW_EVENT_SCHEMA
from cohortflow.models import build_pending
from cohortflow.warehouse import Warehouse
from tests.conftest import build_fresh, write_config
from tests.reference import segments as ref

MODELS = ("stg_identities", "stg_events", "user_activity_daily", "segment_membership_daily", "segment_size_daily")
EXAMPLES = {"duckdb": 100, "postgres": 40, "trino": 6}
# The nightly builds: several nights per example (one example on Trino: about 3 minutes).
NIGHTLY_EXAMPLES = {"duckdb": 33, "postgres": 13, "trino": 1}

TIMEZONES = ("UTC", "Asia/Shanghai", "America/New_York")
FIRST_DAY = dt.date(2026, 3, 4)  # New York springs forward on 2026-03-08
DAYS = 8
LOCAL_TIMES = (dt.time(0, 0), dt.time(0, 0, 0, 1000), dt.time(12, 0), dt.time(23, 59, 59, 999000))
DISTINCT_IDS = ("anon1", "anon2", "u1", "u2", "u3")
EVENT_NAMES = ("view", "buy")
# Event ids whose binary order differs from a linguistic one ('E' < 'e' < 'é').
ID_PREFIXES = ("e", "E", "é")
TEXTS = ("a", "B", "é", "10", "2.50")
NUMBERS = (-1, 2, 2.5, 10)
SCALARS = st.one_of(st.sampled_from(TEXTS), st.sampled_from(NUMBERS), st.booleans())
PROPERTY_KEYS = ("p", "q", "platform")
OPS = ("eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "is_set", "is_not_set")


@st.composite
def events_strategy(draw):
    tz = ZoneInfo(draw(st.sampled_from(TIMEZONES)))
    events = []
    for i in range(draw(st.integers(1, 14))):
        local = dt.datetime.combine(
            FIRST_DAY + dt.timedelta(days=draw(st.integers(0, DAYS - 1))), draw(st.sampled_from(LOCAL_TIMES)), tzinfo=tz
        )
        kind = draw(st.integers(0, 9))
        event = {
            "event_id": f"{draw(st.sampled_from(ID_PREFIXES))}{i}",
            "distinct_id": draw(st.sampled_from(DISTINCT_IDS)),
            "event_name": draw(st.sampled_from(EVENT_NAMES)),
            "event_time": local.astimezone(dt.UTC).replace(tzinfo=None),
            "is_activity": True,
            "platform": draw(st.sampled_from((None, "ios", "android", "10"))),
            "properties": draw(
                st.dictionaries(st.sampled_from(("p", "q")), st.one_of(st.none(), SCALARS), max_size=2)
            ),
            "link_anonymous_id": None,
            "link_login_id": None,
        }
        if events and kind in (2, 3):  # at the same millisecond as the previous event: event_id decides which is latest
            event.update(distinct_id=events[-1]["distinct_id"], event_time=events[-1]["event_time"])
        if kind == 0:  # a profile event: bookkeeping
            event.update(event_name="$profile_set", is_activity=False)
        elif kind == 1:  # an identity link
            anon, login = draw(st.sampled_from(("anon1", "anon2"))), draw(st.sampled_from(("u1", "u2")))
            event.update(event_name="$alias", is_activity=False, distinct_id=login, link_anonymous_id=anon, link_login_id=login)
        events.append(event)
    return str(tz), events


def leaf_strategy():
    did = st.fixed_dictionaries(
        {"did_event": st.sampled_from((*EVENT_NAMES, "$profile_set")), "min_count": st.integers(1, 3), "days": st.integers(1, 4)}
    )
    first_seen = st.fixed_dictionaries({"first_seen_within_days": st.integers(1, 4)})

    @st.composite
    def latest(draw):
        op = draw(st.sampled_from(OPS))
        flt = {"property": draw(st.sampled_from(PROPERTY_KEYS)), "op": op}
        if op in ("in", "not_in"):
            flt["value"] = draw(st.lists(SCALARS, min_size=1, max_size=3))
        elif op not in ("is_set", "is_not_set"):
            flt["value"] = draw(SCALARS)
        return {"latest_property": flt}

    return st.one_of(did, first_seen, latest())


def rule_strategy(depth: int):
    if depth == 1:
        return leaf_strategy()
    child = rule_strategy(depth - 1)
    return st.one_of(
        leaf_strategy(),
        st.lists(child, min_size=1, max_size=3).map(lambda rs: {"and": rs}),
        st.lists(child, min_size=1, max_size=3).map(lambda rs: {"or": rs}),
        child.map(lambda r: {"not": r}),
    )


# Single leaves (each checked on its own) and nested trees.
SEGMENTS = st.tuples(
    st.lists(leaf_strategy(), min_size=1, max_size=4),
    st.lists(st.integers(2, 4).flatmap(rule_strategy), min_size=0, max_size=2),
).map(lambda parts: [{"name": f"s{i}", "rule": r} for i, r in enumerate(parts[0] + parts[1])])


def _raw_rows(events, tz: str, load_date=None, ingest_file="events/part-0.jsonl"):
    zone = ZoneInfo(tz)
    rows = []
    for i, e in enumerate(events):
        event_date = ref.local_date(e, zone)
        rows.append({
            **{k: e[k] for k in ("event_id", "event_name", "distinct_id", "event_time", "is_activity", "platform")},
            **{k: e[k] for k in ("link_anonymous_id", "link_login_id")},
            "event_date": event_date,
            "received_at": e["event_time"] + dt.timedelta(minutes=1),
            "source_format": "canonical",
            "app_id": None,
            "app_version": None,
            "channel": None,
            "session_id": None,
            "properties": e["properties"],
            "load_date": load_date or event_date,
            "ingest_file": ingest_file,
            "ingest_line": i + 1,
            "source_name": "app",
        })
    return rows


def _json_events(events):
    return [{**e, "properties": json.dumps(e["properties"], ensure_ascii=False, sort_keys=True)} for e in events]


def load(wh: Warehouse, rows, *, replace: bool) -> None:
    with wh.begin() as conn:
        if replace:
            wh.execute(conn, "delete from raw.events")
        wh.load_arrow(conn, "raw.events", pa.Table.from_pylist(rows, schema=RAW_EVENT_SCHEMA))


def build(wh: Warehouse, cfg, start: dt.date, end: dt.date) -> None:
    """Build the segment models (and their staging) for [start, end] from scratch, the definitions committed first
    (see tests/conftest.py load_and_build_fresh)."""
    with wh.begin() as conn:
        load_definitions(wh, conn, cfg)
    build_fresh(wh, None, {**model_params(cfg), "start_date": start, "end_date": end}, MODELS)


def _landing_lines(events, received) -> str:
    """Canonical JSONL of generated events (``received(e)``: the receipt time of each)."""
    lines = []
    for e in events:
        obj = {
            "event_id": e["event_id"],
            "event_name": e["event_name"],
            "distinct_id": e["distinct_id"],
            "event_time": e["event_time"].isoformat(timespec="milliseconds") + "Z",
            "received_at": received(e).isoformat(timespec="milliseconds") + "Z",
            "is_activity": e["is_activity"],
            "platform": e["platform"],
            "properties": e["properties"],
            "link_anonymous_id": e["link_anonymous_id"],
            "link_login_id": e["link_login_id"],
        }
        lines.append(json.dumps({k: v for k, v in obj.items() if v is not None}, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def read(wh: Warehouse, sql: str, params: dict | None = None) -> set[tuple]:
    with wh.begin() as conn:
        return {tuple(r) for r in wh.execute(conn, sql, params).fetchall()}


def configure(project, tz: str, segments: list[dict], **extra):
    write_config(project.root, timezone=tz, analyses={"segments": segments}, **extra)
    return load_config(project.config_path, environ=project.environ)


@pytest.fixture
def project(make_project, engine):
    return make_project(engine)


def test_segments_match_reference(project, engine):
    @settings(max_examples=EXAMPLES[engine], deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(events_strategy(), SEGMENTS, st.integers(0, DAYS - 1), st.integers(0, 3))
    def check(scenario, segments, first, length):
        tz, events = scenario
        events = _json_events(events)
        start = FIRST_DAY + dt.timedelta(days=first)
        end = start + dt.timedelta(days=length)
        cfg = configure(project, tz, segments)
        wh = Warehouse(cfg)
        try:
            wh.bootstrap()
            load(wh, _raw_rows(events, tz), replace=True)
            build(wh, cfg, start, end)
            want = ref.membership(events, segments, tz, start, end)
            got = read(wh, "select segment_name, as_of_date, user_id from models.segment_membership_daily")
            assert got == want
            sizes = read(wh, "select segment_name, as_of_date, users from models.segment_size_daily")
            assert sizes == ref.sizes(want, segments, start, end)
        finally:
            wh.dispose()

    check()


def test_nightly_builds_equal_a_full_build(project, engine):
    """Late events (and late links) loaded by a night rebuild only the users they change; the membership equals
    the reference on everything loaded (through the real ingest and the change-driven builds)."""
    from cohortflow.ingest import load_day

    @settings(max_examples=NIGHTLY_EXAMPLES[engine], deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(events_strategy(), events_strategy(), SEGMENTS)
    def check(early, late, segments):
        tz, first_events = early
        late_events = [{**e, "event_id": f"late-{e['event_id']}"} for e in late[1]]
        start, end = FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1)
        landing = project.root / "landing" / "events"
        cfg = configure(
            project,
            tz,
            segments,
            sources=[{"name": "app", "format": "canonical", "path": "events"}],
            ingest={"lookback_days": 30, "late_arrival_days": 30},
        )
        wh = Warehouse(cfg)
        zone = ZoneInfo(tz)
        try:
            wh.bootstrap()
            with wh.begin() as conn:
                for table in ("raw.events", "raw.duplicates", "meta.change_log", "meta.changed_pairs", "meta.model_state"):
                    wh.execute(conn, f"delete from {table}")
                for table in ("segment_membership_daily", "segment_size_daily", "user_activity_daily"):
                    wh.execute(conn, f"drop table if exists models.{table}")
            import shutil

            shutil.rmtree(landing, ignore_errors=True)
            # Each early event arrives on its own local date; every date of the range is a night.
            for d in [start + dt.timedelta(days=i) for i in range(DAYS)]:
                folder = landing / d.isoformat()
                folder.mkdir(parents=True, exist_ok=True)
                todays = [e for e in first_events if ref.local_date(e, zone) == d]
                (folder / "part-0.jsonl").write_text(_landing_lines(todays, lambda e: e["event_time"]), encoding="utf-8")
                if d == end:
                    # The late events all arrive with the last night.
                    receipt = dt.datetime.combine(end, dt.time(23, 59), zone).astimezone(dt.UTC).replace(tzinfo=None)
                    (folder / "part-1.jsonl").write_text(_landing_lines(late_events, lambda e: receipt), encoding="utf-8")
                load_day(wh, cfg, d, "run")
                build_pending(wh, cfg, only={"segment_size_daily"})
            want = ref.membership(_json_events(first_events + late_events), segments, tz, start, end)
            # (a late event dated before `start` also builds its own earlier dates: not compared)
            between, dates = " where as_of_date between :lo and :hi", {"lo": start, "hi": end}
            got = read(wh, "select segment_name, as_of_date, user_id from models.segment_membership_daily" + between, dates)
            assert got == want
            sizes = read(wh, "select segment_name, as_of_date, users from models.segment_size_daily" + between, dates)
            assert sizes == ref.sizes(want, segments, start, end)
        finally:
            wh.dispose()

    check()


def check_every_op(project):
    """Every op with every value against a user per property value (and absent, JSON null, the platform column)."""
    values = [*TEXTS, *NUMBERS, True, False]
    props = [*values, None, "xa10x", "-1.5e1", 2.0, "1."]  # JSON null, a substring case, exponent, 2.0, not a number
    events = []
    for i, v in enumerate([*props, "absent"]):
        events.append({
            "event_id": f"e{i}", "distinct_id": f"user{i}", "event_name": "view",
            "event_time": dt.datetime(2026, 3, 4, 12), "is_activity": True,
            "platform": [None, "ios", "10", "é"][i % 4],
            "properties": {} if v == "absent" else {"p": v},
            "link_anonymous_id": None, "link_login_id": None,
        })
    filters = [{"property": key, "op": "is_set"} for key in ("p", "platform")]
    filters += [{"property": key, "op": "is_not_set"} for key in ("p", "platform")]
    for op in ("eq", "neq", "gt", "gte", "lt", "lte", "contains"):
        filters += [{"property": key, "op": op, "value": v} for v in values for key in ("p", "platform")]
    for op in ("in", "not_in"):
        filters += [{"property": "p", "op": op, "value": v} for v in ([2, "a"], ["10"], [True, 2.5, "é"], [-1])]
    segments = [{"name": f"f{i}", "rule": {"latest_property": f}} for i, f in enumerate(filters)]
    day = FIRST_DAY
    cfg = configure(project, "UTC", segments)
    wh = Warehouse(cfg)
    try:
        wh.bootstrap()
        events = _json_events(events)
        load(wh, _raw_rows(events, "UTC"), replace=True)
        build(wh, cfg, day, day)
        want = ref.membership(events, segments, "UTC", day, day)
        got = read(wh, "select segment_name, as_of_date, user_id from models.segment_membership_daily")
        for seg in segments:  # one assertion per filter, so a failure names it
            name = seg["name"]
            assert {m for m in got if m[0] == name} == {m for m in want if m[0] == name}, seg["rule"]
    finally:
        wh.dispose()


def check_latest_ties(project):
    """Events of one user at the same millisecond: the largest event_id in binary order is the latest."""
    ids = ["a3", "E1", "e0", "B4"]  # binary order: B4 < E1 < a3 < e0; linguistic: a3 < B4 < e0 < E1
    events = [
        {
            "event_id": event_id, "distinct_id": "u1", "event_name": "view",
            "event_time": dt.datetime(2026, 3, 4, 12), "is_activity": True, "platform": None,
            "properties": {"p": event_id}, "link_anonymous_id": None, "link_login_id": None,
        }
        for event_id in ids
    ]
    segments = [{"name": f"latest_{i}", "rule": {"latest_property": {"property": "p", "op": "eq", "value": v}}} for i, v in enumerate(ids)]
    cfg = configure(project, "UTC", segments)
    wh = Warehouse(cfg)
    try:
        wh.bootstrap()
        events = _json_events(events)
        load(wh, _raw_rows(events, "UTC"), replace=True)
        build(wh, cfg, FIRST_DAY, FIRST_DAY)
        got = read(wh, "select segment_name, as_of_date, user_id from models.segment_membership_daily")
        assert got == {("latest_2", FIRST_DAY, "u1")} == ref.membership(events, segments, "UTC", FIRST_DAY, FIRST_DAY)
    finally:
        wh.dispose()


def test_every_property_op_and_value(project):
    check_every_op(project)


def test_latest_event_ties(project):
    check_latest_ties(project)


def _chain(depth: int, leaf: dict) -> dict:
    """A rule `depth` levels deep: alternating not / and / or down to the leaf, with a sibling leaf on the way."""
    rule = leaf
    for level in range(depth - 1):
        rule = [{"not": rule}, {"and": [rule, {"first_seen_within_days": 3}]}, {"or": [rule, {"did_event": "buy", "min_count": 2}]}][level % 3]
    return rule


def test_eight_levels_deep(project, engine):
    segments = [
        {"name": "deep_not", "rule": _chain(8, {"did_event": "view", "min_count": 1, "days": 2})},
        {"name": "deep_prop", "rule": _chain(8, {"latest_property": {"property": "p", "op": "gte", "value": 2}})},
        {"name": "not8", "rule": {"not": {"not": {"not": {"not": {"not": {"not": {"not": {"first_seen_within_days": 2}}}}}}}}},
    ]
    tz = "Asia/Shanghai"
    events = []
    for i, (who, name, day, hour, p) in enumerate([
        ("u1", "view", 0, 9, 1), ("u1", "buy", 1, 9, 3), ("u1", "buy", 1, 10, 2), ("u2", "view", 2, 23, 5),
        ("u3", "buy", 3, 0, "x"), ("anon1", "view", 0, 1, 2), ("u2", "$alias", 4, 8, None),
    ]):
        events.append({
            "event_id": f"e{i}", "distinct_id": who, "event_name": name,
            "event_time": dt.datetime(2026, 3, 4 + day, hour), "is_activity": name != "$alias", "platform": None,
            "properties": {} if p is None else {"p": p},
            "link_anonymous_id": "anon1" if name == "$alias" else None, "link_login_id": "u2" if name == "$alias" else None,
        })
    events = _json_events(events)
    start, end = FIRST_DAY, FIRST_DAY + dt.timedelta(days=6)
    cfg = configure(project, tz, segments)
    wh = Warehouse(cfg)
    try:
        wh.bootstrap()
        load(wh, _raw_rows(events, tz), replace=True)
        build(wh, cfg, start, end)
        want = ref.membership(events, segments, tz, start, end)
        assert {m[0] for m in want} == {"deep_not", "deep_prop", "not8"}  # every segment has members somewhere
        assert read(wh, "select segment_name, as_of_date, user_id from models.segment_membership_daily") == want
    finally:
        wh.dispose()


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (_chain(9, {"first_seen_within_days": 1}), "nested 9 levels deep; at most 8"),
        ({"and": []}, "needs at least one rule"),
        ({"not": {"or": []}}, "needs at least one rule"),
        ({"did_event": "x", "first_seen_within_days": 3}, "exactly one of"),
    ],
)
def test_rule_shape_errors(tmp_path, rule, message):
    path = write_config(tmp_path, analyses={"segments": [{"name": "s", "rule": rule}]})
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})

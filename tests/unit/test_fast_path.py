"""The ingest's fast path (each format's ``map_fast`` and ``_Context.fast_row``) against the path every line can take
(``parse_line`` and the checks, ``ingest.line_row``).

The fast path may decline any line (it then goes the other way); for every line it takes, its row must be exactly
the other path's, and the other path must not quarantine that line. Checked on lines generated around each
format's clean shape (every field swapped for values of other types, blank, long, missing; the names and types with
a meaning of their own), on the fuzzer's mutated lines, and on whole demo days (the spooled files equal, and most
lines taken by the fast path, so that the equality is not the vacuous one of a fast path that declines all).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow import ingest
from cohortflow.adapters import FORMATS, get_adapter, get_fast_mapper
from cohortflow.adapters._common import Unusual, fast_iso, iso_ms
from cohortflow.config import Privacy, load_config
from cohortflow.events import LineError
from cohortflow.privacy import Pseudonymizer
from tests.conftest import write_config
from tests.fuzz import fuzz_ingest

D = dt.date(2024, 5, 1)
T = int(dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.UTC).timestamp() * 1000)  # 10:00 in Shanghai on D
T_ISO = "2024-05-01T02:00:00.123Z"
SENT_ISO = "2024-05-01T02:00:05.000Z"
RECEIVED_ISO = "2024-05-01T02:00:06.500Z"

# Small limits, so that generated names, ids, property documents and lines cross them.
LIMITS = {"max_event_name_length": 12, "max_value_length": 120, "max_line_bytes": 600, "late_arrival_days": 3,
          "lookback_days": 3}

BASE = {
    "ark": {"appid": "app", "xwho": "u1", "xwhat": "buy", "xwhen": T,
            "xcontext": {"$platform": "iOS", "$app_version": "2.1", "$channel": "store", "$session_id": "s1", "n": 1}},
    "sensors": {"type": "track", "event": "view", "distinct_id": "u1", "time": T, "project": "p", "_track_id": 42,
                "properties": {"$platform": "web", "$os": "iOS", "$app_version": "3.0", "$channel": "hw",
                               "$event_session_id": "es1"}},
    "segment": {"type": "track", "event": "Order", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
                "timestamp": T_ISO, "originalTimestamp": T_ISO, "sentAt": SENT_ISO, "receivedAt": RECEIVED_ISO,
                "properties": {"$session_id": "s9", "$platform": "pp"},
                "context": {"os": {"name": "iOS"}, "device": {"type": "ios"}, "app": {"version": "5.2"},
                            "campaign": {"source": "mail"}}},
    "posthog": {"event": "$pageview", "distinct_id": "u1", "uuid": "0190-1", "timestamp": T_ISO, "sent_at": SENT_ISO,
                "properties": {"$os": "Mac", "$lib": "web", "$app_version": "1.4", "$channel": "ads",
                               "$session_id": "ph1", "distinct_id": "p1"}},
    "canonical": {"event_id": "e-1", "event_name": "purchase", "distinct_id": "u1", "event_time": T,
                  "received_at": T + 5000, "app_id": "shop", "platform": "iOS", "app_version": "1.0",
                  "channel": "organic", "session_id": "s-1", "properties": {"amount": 9.99}, "is_activity": True},
}
# The property documents (objects) whose keys the generated lines also change.
NESTED = {"ark": ["xcontext"], "sensors": ["properties"], "segment": ["properties", "context", "context.os"],
          "posthog": ["properties"], "canonical": ["properties"]}
# Keys that lines may carry besides the base's: identity links, names and types with a meaning of their own.
EXTRA_KEYS = {
    "ark": ["$original_id", "$os"],
    "sensors": ["original_id", "item_id", "item_type", "$session_id"],
    "segment": ["previousId", "traits", "name", "$app_version", "$channel"],
    "posthog": ["$anon_distinct_id", "alias", "$set"],
    "canonical": ["link_anonymous_id", "link_login_id"],
}
NAME_KEYS = {"xwhat", "event", "type", "event_name"}  # (more often one of SPECIAL_TEXT)
SPECIAL_TEXT = ["$alias", "$profile_set", "$SignUp", "$identify", "$create_alias", "$set", "$merge_dangerously",
                "track", "track_signup", "profile_set", "item_set", "page", "screen", "identify", "alias", "group"]

VALUES = st.one_of(
    st.sampled_from([None, "", "  ", "\t", "x", "u1", "é", "long-name-0123456789", "0", "00042", True, False, 0, 7,
                     -1, 1.0, 2.5, 1e300, 10**30, [], [1], {}, {"a": 1}, T, T + 1, T_ISO, SENT_ISO, RECEIVED_ISO,
                     str(T), "2024-05-01T02:00:00Z", "2024-05-01 02:00:00.123Z", "2024-05-01T02:00:00.123+08:00",
                     "2024-02-30T02:00:00.123Z", "2024-05-01T24:00:00.123Z", "2024-05-01T02:00:00.1234Z",
                     "2024-05-0१T02:00:00.123Z", "2024-05-01T02:00:60.123Z", " 2024-05-01T02:00:00.123Z",
                     "2024-05-01t02:00:00.123z", "x" * 200, "a\u0000b", "\\u0000"]),
    st.sampled_from(SPECIAL_TEXT),
    st.integers(min_value=T - 10 * 86_400_000, max_value=T + 3 * 86_400_000),
    st.text(max_size=20),
)


@st.composite
def documents(draw, fmt: str) -> dict:
    """The format's base line with some of its fields (top level and inside its objects) swapped, dropped or added."""
    doc = copy.deepcopy(BASE[fmt])
    objects = ["", *NESTED[fmt]]
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        where = draw(st.sampled_from(objects))
        target = doc
        for key in where.split(".") if where else []:
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        key = draw(st.sampled_from(sorted(set(target) | set(EXTRA_KEYS[fmt]) | {"type", "event"})))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            # (a copy: a drawn object is shared with later examples, and later swaps write into it)
            target[key] = copy.deepcopy(draw(st.one_of(st.sampled_from(SPECIAL_TEXT), VALUES) if key in NAME_KEYS else VALUES))
    return doc


@pytest.fixture(scope="module")
def contexts(tmp_path_factory) -> dict[str, ingest._Context]:
    out = {}
    for zone in ("Asia/Shanghai", "America/New_York"):
        root = tmp_path_factory.mktemp("cfg")
        cfg = load_config(write_config(root, timezone=zone, ingest=LIMITS), environ={})
        out[zone] = ingest._Context(cfg, D)
    return out


def _line(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _same_outcome(ctx: ingest._Context, fmt: str, raw: bytes, number: int = 1) -> bool:
    """Whether the fast path took the line; when it did, that its row is the other path's."""
    row = ctx.fast_row(get_fast_mapper(fmt), raw, number)
    if row is None:
        return False
    try:
        slow = ingest.line_row(ctx, get_adapter(fmt), Pseudonymizer(Privacy()), raw, number)
    except LineError as err:
        raise AssertionError(f"the fast path loaded a line parse_line quarantines ({err}): {raw!r}") from None
    assert row == slow, raw
    return True


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_base_lines_take_the_fast_path(contexts, fmt):
    for ctx in contexts.values():
        assert _same_outcome(ctx, fmt, _line(BASE[fmt]))


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_fast_path_gives_what_parse_line_gives(contexts, fmt, data):
    doc = data.draw(documents(fmt))
    ctx = contexts[data.draw(st.sampled_from(sorted(contexts)))]
    _same_outcome(ctx, fmt, _line(doc))


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_fuzzers_lines_get_the_same_outcome(tmp_path, fmt):
    """The fuzzer's classes of faults (times past the date or too old, NULs, long ids and lines, bad UTF-8, cut and
    deep lines, flipped bytes, swapped types), in the fuzzer's own zone and date."""
    rng = random.Random(11)
    taken = 0
    cfg = load_config(write_config(tmp_path, timezone="Asia/Shanghai",
                                   ingest={"max_line_bytes": fuzz_ingest.MAX_LINE, "late_arrival_days": 3}), environ={})
    fuzz_ctx = ingest._Context(cfg, fuzz_ingest.D)
    for i in range(600):
        doc = fuzz_ingest.base_doc(fmt, i, rng)
        raw = _line(doc) if i % 3 == 0 else fuzz_ingest.mutate(fmt, doc, rng, rng.choice(fuzz_ingest.KINDS))[0]
        taken += _same_outcome(fuzz_ctx, fmt, raw, i)
    assert taken >= 150  # the unmutated third at least


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_demo_day_spools_the_same_either_way(tmp_path, monkeypatch, fmt):
    """Whole files: the demo's day (its bad lines and identity events included) parsed with and without the fast
    path spools the same events and quarantine, with the same ledger; most of its lines take the fast path."""
    from cohortflow.demo import DemoSpec, generate
    from cohortflow.demo_project import arrival_dates, write_demo_config

    landing = tmp_path / "landing"
    generate(DemoSpec(users=150, days=2, start_date=dt.date(2026, 11, 1), seed=3, fmt=fmt), landing / fmt)
    cfg_path = write_demo_config(tmp_path, fmt)
    cfg = load_config(cfg_path, environ={})
    days = arrival_dates(landing / fmt)
    taken = []
    real_fast_row = ingest._Context.fast_row

    def counting(self, fast, raw, number):
        row = real_fast_row(self, fast, raw, number)
        taken.append(row is not None)
        return row

    monkeypatch.setattr(ingest._Context, "fast_row", counting)
    outcomes = {}
    for fast in (True, False):
        monkeypatch.setattr(ingest, "FAST_PATH", fast)
        outcomes[fast] = []
        for day in days:
            spool = tmp_path / f"spool-{fast}-{day}"
            spool.mkdir()
            batch = ingest.parse_day(cfg, day, spool)
            outcomes[fast] += [(p.ledger, p.reasons, pq.read_table(p.events).to_pylist(),
                                pq.read_table(p.quarantine).to_pylist()) for p in batch.files]
    assert outcomes[True] == outcomes[False]
    lines = sum(ledger.lines_read for ledger, *_ in outcomes[True])
    assert len(taken) == lines and sum(taken) >= 0.85 * lines, (sum(taken), lines)
    assert sum(len(quarantined) for *_, quarantined in outcomes[True]) > 0  # the demo's bad lines were judged too


ZONES = ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Santiago",
         "Pacific/Apia", "Asia/Kathmandu", "America/St_Johns", "Africa/Casablanca", "UTC"]
MIN_MS = int(dt.datetime(2000, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
MAX_MS = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp() * 1000) - 1


def _transitions(zone: str) -> list[int]:
    """The instants (ms) at which the zone's offset changes between 2000 and 2040, found hour by hour."""
    tz = ZoneInfo(zone)
    out = []
    hour = MIN_MS // 3_600_000
    before = dt.datetime.fromtimestamp(hour * 3600, tz).utcoffset()
    for h in range(hour + 1, hour + 40 * 366 * 24, 24):
        after = dt.datetime.fromtimestamp(h * 3600, tz).utcoffset()
        if after != before:
            lo, hi = (h - 24) * 3_600_000, h * 3_600_000  # the change is in (lo, hi]: bisect to the millisecond
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if dt.datetime.fromtimestamp(mid / 1000, tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
            before = after
    return out


@pytest.fixture(scope="module")
def zone_contexts(tmp_path_factory) -> dict[str, ingest._Context]:
    out = {}
    for zone in ZONES:
        cfg = load_config(write_config(tmp_path_factory.mktemp("z"), timezone=zone), environ={})
        out[zone] = ingest._Context(cfg, D)
    return out


@pytest.mark.parametrize("zone", ZONES)
def test_the_local_date_from_hour_offsets_is_the_local_date_at_every_change(zone_contexts, zone):
    ctx = zone_contexts[zone]
    changes = _transitions(zone)
    if zone not in ("UTC", "Asia/Shanghai", "Asia/Kathmandu"):
        assert changes, zone  # the search found the zone's changes
    for at in changes:
        for ms in (at - 3_600_001, at - 1, at, at + 1, at + 1_800_000, at + 3_599_999):
            assert ctx.local_day(ms) == ctx.local_date(ms), (zone, ms)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=st.sampled_from(ZONES), ms=st.integers(min_value=MIN_MS, max_value=MAX_MS))
def test_the_local_date_from_hour_offsets_is_the_local_date(zone_contexts, zone, ms):
    ctx = zone_contexts[zone]
    assert ctx.local_day(ms) == ctx.local_date(ms)
    midnight = ms - (ms + 8 * 3_600_000) % 86_400_000  # a UTC+8 midnight near ms, and the milliseconds around it
    for near in (midnight - 1, midnight, midnight + 1):
        assert ctx.local_day(near) == ctx.local_date(near)


@settings(max_examples=500, deadline=None)
@given(when=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31)),
       swap=st.tuples(st.integers(min_value=0, max_value=23), st.characters()))
def test_fast_iso_reads_what_iso_ms_reads(when, swap):
    text = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    assert fast_iso(text) == iso_ms(text, "t")
    at, char = swap
    changed = text[:at] + char + text[at + 1:]  # one character replaced: read the same, or left to iso_ms
    try:
        fast = fast_iso(changed)
    except (Unusual, LineError):
        return
    assert fast == iso_ms(changed, "t"), changed


def test_declined_lines_leave_nothing_behind(contexts):
    """Memory stays flat over declined lines: nothing (a traceback, a frame's decoded line) outlives a line."""
    import tracemalloc

    ctx = contexts["Asia/Shanghai"]
    fast = get_fast_mapper("ark")
    declined = _line({**BASE["ark"], "xwhat": "$alias", "pad": "p" * 300})  # decoded, then left to parse_line

    def decline(n: int) -> None:
        for number in range(n):
            assert ctx.fast_row(fast, declined, number) is None

    decline(200)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decline(2000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"{grown:,} bytes kept by 2,000 declined lines"

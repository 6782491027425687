"""The demo log generator: determinism, ground truth, faults, and every format.

The ground truth is the generator's own model; here it is held against what
the files say (counts, arrival folders, constraints) and against what the
format adapters load from the files (first copy wins, identity resolved).
"""

from __future__ import annotations

import collections
import gzip
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from cohortflow import demo_formats as F
from cohortflow.adapters import get_adapter
from cohortflow.demo import DemoSpec, DemoSummary, generate
from cohortflow.events import LineError

TZ = "Asia/Shanghai"


def read_landing(landing: Path) -> list[tuple[str, str, bytes]]:
    """(arrival date folder, file name, raw line) in folder, file and line order."""
    out = []
    for folder in sorted(p for p in landing.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            data = gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes()
            assert data.endswith(b"\n"), f
            out.extend((folder.name, f.name, raw) for raw in data[:-1].split(b"\n"))
    return out


def read_truth(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def local_date(ms: int, tz: str = TZ) -> date:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz)).date()


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[DemoSummary, list[tuple[str, str, bytes]], list[dict], Path]:
    """The default spec (2000 users x 14 days, Ark) generated once."""
    root = tmp_path_factory.mktemp("demo_default")
    summary = generate(DemoSpec(), root / "landing", root / "truth.jsonl.gz")
    return summary, read_landing(root / "landing"), read_truth(root / "truth.jsonl.gz"), root / "landing"


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("fmt", ["ark", "segment"])
def test_same_seed_same_bytes(tmp_path, fmt):
    spec = DemoSpec(users=150, days=5, seed=11, fmt=fmt)
    generate(spec, tmp_path / "a" / "landing", tmp_path / "a" / "truth.jsonl.gz")
    generate(spec, tmp_path / "b" / "landing", tmp_path / "b" / "truth.jsonl.gz")
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a == b
    assert any(name.endswith(".gz") for name in a) and any(name.endswith(".jsonl") for name in a)

    generate(DemoSpec(users=150, days=5, seed=12, fmt=fmt), tmp_path / "c" / "landing")
    assert tree_bytes(tmp_path / "c" / "landing") != tree_bytes(tmp_path / "a" / "landing")


def test_same_logical_stream_in_every_format(tmp_path):
    """The seed fixes the events, receipts and folders; only the line layout changes."""
    truths = {}
    per_day = {}
    for fmt in F.FORMATS:
        s = generate(DemoSpec(users=120, days=4, seed=3, fmt=fmt), tmp_path / fmt, tmp_path / f"{fmt}.jsonl.gz")
        per_day[fmt] = s.lines_per_day
        truths[fmt] = [
            (t["person"], t["distinct_id"], t["event_time_ms"], t["is_activity"], t["arrival_date"])
            for t in read_truth(tmp_path / f"{fmt}.jsonl.gz")
        ]
    assert len({tuple(v.items()) for v in per_day.values()}) == 1
    assert all(v == truths["ark"] for v in truths.values())


# --------------------------------------------------------------------------- counts and placement


def test_truth_counts_match_summary(default_run):
    s, lines, truth, landing = default_run
    assert s.people == 2000
    assert len(truth) == s.events
    assert sum(t["is_activity"] for t in truth) == s.activity_events
    assert len(lines) == s.lines_written == sum(s.lines_per_day.values())
    assert s.lines_written == s.events + s.retried_copies + s.malformed_lines
    assert s.retried_copies == s.retried_identical + s.retried_new_send_time
    counted = collections.Counter(day for day, _, _ in lines)
    assert dict(counted) == s.lines_per_day
    assert len({t["person"] for t in truth if t["is_activity"]}) == 2000
    assert len({t["person"] for t in truth if t["person"].startswith("u_")}) == s.logged_in_people


def test_files_per_day(default_run):
    s, _, _, landing = default_run
    days = [(s.start_date + timedelta(days=i)).isoformat() for i in range(14)]
    assert sorted(p.name for p in landing.iterdir()) == days
    for day in days:
        names = sorted(p.name for p in (landing / day).iterdir())
        assert len(names) >= 2
        assert any(n.endswith(".jsonl.gz") for n in names) and any(n.endswith(".jsonl") for n in names)
        assert all(n.startswith("part-") for n in names)
    assert len(s.files) == sum(len(list((landing / d).iterdir())) for d in days)


def test_ark_lines_are_in_their_arrival_folder(default_run):
    """Ark lines carry no receipt time; each unique event's first copy is in the truth's arrival folder."""
    s, lines, truth, _ = default_run
    parse = get_adapter("ark")
    first_folder: dict[str, str] = {}
    copies = collections.Counter()
    for day, _, raw in lines:
        try:
            ev = parse(raw)
        except LineError:
            continue
        copies[ev.event_id] += 1
        first_folder.setdefault(ev.event_id, day)
        lag = (date.fromisoformat(day) - local_date(ev.event_time_ms)).days
        assert 0 <= lag <= 3, (day, raw[:200])
    assert len(first_folder) == s.events
    assert sum(copies.values()) - len(copies) == s.retried_copies
    arrivals = collections.Counter(t["arrival_date"] for t in truth)
    assert collections.Counter(first_folder.values()) == arrivals


@pytest.mark.parametrize("fmt", ["canonical", "segment", "posthog"])
def test_every_line_is_in_the_folder_of_its_receipt_date(tmp_path, fmt):
    s = generate(DemoSpec(users=400, days=6, seed=5, fmt=fmt, timezone="America/New_York",
                          start_date=date(2026, 10, 30)), tmp_path / "landing")
    parse = get_adapter(fmt)
    checked = 0
    for day, _, raw in read_landing(tmp_path / "landing"):
        try:
            ev = parse(raw)
        except LineError:
            continue
        assert local_date(ev.received_at_ms, "America/New_York").isoformat() == day
        checked += 1
    assert checked == s.events + s.retried_copies


def test_times_stay_inside_the_range_and_lateness_limit(default_run):
    s, _, truth, _ = default_run
    first, last = s.start_date.isoformat(), s.end_date.isoformat()
    for t in truth:
        assert first <= t["local_date"] <= last
        assert t["local_date"] == local_date(t["event_time_ms"]).isoformat()
        lag = (date.fromisoformat(t["arrival_date"]) - date.fromisoformat(t["local_date"])).days
        assert 0 <= lag <= 3
        assert t["arrival_date"] <= last
    assert all(t["is_activity"] == (not t["event_name"].startswith("$")) for t in truth)


# --------------------------------------------------------------------------- anomalies


def test_every_anomaly_is_present_at_default_size(default_run):
    s, lines, truth, _ = default_run
    for name, count in s.anomalies().items():
        if name == "retried_new_send_time":
            assert count == 0  # Ark lines have no send time: every retry is identical bytes
        else:
            assert count > 0, name
    assert set(s.malformed) == set(F.MALFORMED_KINDS)
    # rates
    assert 0.005 < s.retried_copies / s.lines_written < 0.015
    assert 0.002 < s.malformed_lines / s.lines_written < 0.004
    assert 0.01 < s.late_events / s.events < 0.03
    # the funnel drops off step by step
    f = [s.funnel[k] for k in ("signup_start", "signup_submit", "signup_verify", "signup_done")]
    assert f[0] > f[1] > f[2] > f[3] > 0.3 * f[0]
    # the same-ms pairs and local-midnight events are in the truth
    by_person = collections.defaultdict(list)
    for t in truth:
        by_person[t["person"]].append(t)
    ties = sum(
        1
        for evs in by_person.values()
        for a, b in zip(sorted(evs, key=lambda t: t["event_time_ms"]), sorted(evs, key=lambda t: t["event_time_ms"])[1:])
        if a["event_time_ms"] == b["event_time_ms"]
    )
    assert ties == s.ms_ties
    funnel_ties = [
        (a["event_name"], b["event_name"])
        for evs in by_person.values()
        for a, b in zip(evs, evs[1:])
        if a["event_time_ms"] == b["event_time_ms"] and a["event_name"].startswith("signup_")
        and b["event_name"].startswith("signup_")
    ]
    assert funnel_ties
    clock = collections.Counter(
        datetime.fromtimestamp(t["event_time_ms"] / 1000, ZoneInfo(TZ)).strftime("%H:%M:%S.%f")[:12] for t in truth
    )
    assert clock["23:59:59.999"] >= 3 and clock["00:00:00.000"] >= 3
    # late links: an $alias whose arrival is days after its event
    late_alias = [t for t in truth if t["event_name"] == "$alias" and t["arrival_date"] > t["local_date"]]
    assert len(late_alias) >= s.late_links > 0
    # never-logged-in people, anonymous history merged into login ids, second devices
    assert any(p.startswith("anon-") for p in by_person)
    merged = [p for p, evs in by_person.items() if p.startswith("u_") and any(t["distinct_id"] != p for t in evs)]
    assert merged
    assert any(len({t["distinct_id"] for t in evs}) >= 3 for evs in by_person.values())  # 2 devices + login
    # retention decays
    active = collections.defaultdict(set)
    for t in truth:
        if t["is_activity"]:
            active[t["person"]].add(date.fromisoformat(t["local_date"]))
    cohort = [p for p, ds in active.items() if min(ds) == s.start_date]

    def kept(k):
        return sum(1 for p in cohort if s.start_date + timedelta(days=k) in active[p]) / len(cohort)

    assert 1.0 > kept(1) > kept(7) > kept(13) > 0.05


def test_malformed_and_long_lines(default_run):
    s, lines, _, _ = default_run
    parse = get_adapter("ark")
    reasons = collections.Counter()
    for _, _, raw in lines:
        try:
            parse(raw)
        except LineError as exc:
            reasons[exc.reason] += 1
    assert sum(reasons.values()) == s.malformed_lines
    assert {"invalid_json", "not_an_object", "missing_field", "invalid_timestamp"} <= set(reasons)
    longest = max(len(raw) for _, _, raw in lines)
    assert 2048 < longest < 64 * 1024
    assert any("😀".encode() in raw or "🔍".encode() in raw for _, _, raw in lines)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_a_line_of_each_format_has_its_keys(tmp_path, fmt):
    s = generate(DemoSpec(users=60, days=3, fmt=fmt), tmp_path / "landing")
    assert s.fmt == fmt
    keys = F.IDENTIFYING_KEYS[fmt]
    parsed = 0
    for _, _, raw in read_landing(tmp_path / "landing"):
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and keys <= obj.keys():
            parsed += 1
    assert parsed >= s.events


@pytest.mark.parametrize("fmt", F.FORMATS)
def test_adapters_load_exactly_the_truth(tmp_path, fmt):
    """Parse every line, keep the first copy of each event id, resolve identities: that is the truth."""
    tz = "America/New_York"  # west of UTC, with a DST change on 2026-11-01
    s = generate(DemoSpec(users=300, days=6, seed=9, fmt=fmt, timezone=tz, start_date=date(2026, 10, 29)),
                 tmp_path / "landing", tmp_path / "truth.jsonl.gz")
    parse = get_adapter(fmt)
    loaded, seen, quarantined, duplicates = [], set(), 0, 0
    for day, _, raw in read_landing(tmp_path / "landing"):
        try:
            ev = parse(raw)
        except LineError:
            quarantined += 1
            continue
        if ev.event_id in seen:
            duplicates += 1
            continue
        seen.add(ev.event_id)
        loaded.append((ev, day))
    assert quarantined == s.malformed_lines
    assert duplicates == s.retried_copies
    links: dict[str, str] = {}
    for ev, _ in sorted(loaded, key=lambda x: x[0].event_time_ms):
        if ev.link_anonymous_id:
            links.setdefault(ev.link_anonymous_id, ev.link_login_id)
    got = collections.Counter(
        (links.get(ev.distinct_id, ev.distinct_id), ev.distinct_id, ev.event_name, ev.event_time_ms,
         local_date(ev.event_time_ms, tz).isoformat(), ev.is_activity, day)
        for ev, day in loaded
    )
    want = collections.Counter(
        (t["person"], t["distinct_id"], t["event_name"], t["event_time_ms"], t["local_date"], t["is_activity"],
         t["arrival_date"])
        for t in read_truth(tmp_path / "truth.jsonl.gz")
    )
    assert got == want
    assert len(links) > 0


def test_resends_carry_a_new_send_time_and_the_same_message_id(tmp_path):
    s = generate(DemoSpec(users=600, days=5, seed=2, fmt="segment"), tmp_path / "landing")
    assert s.retried_new_send_time > 0
    parse = get_adapter("segment")
    by_id = collections.defaultdict(list)
    for _, _, raw in read_landing(tmp_path / "landing"):
        try:
            parse(raw)
        except LineError:
            continue  # malformed lines may share a good line's messageId
        obj = orjson.loads(raw)
        by_id[obj["messageId"]].append(obj)
    resent = [v for v in by_id.values() if len({o["sentAt"] for o in v}) > 1]
    assert resent
    for copies in resent:
        assert len({o["originalTimestamp"] for o in copies}) == 1
        assert len({o["receivedAt"] for o in copies}) == len(copies)


def test_bad_spec_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        generate(DemoSpec(fmt="mixpanel"), tmp_path)
    with pytest.raises(ValueError):
        generate(DemoSpec(users=0), tmp_path)

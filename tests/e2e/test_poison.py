"""One bad line or file never stops the night (DuckDB and PostgreSQL).

A day with future events that carry their own future receipt time (Segment
``receivedAt``, PostHog ``sent_at``, canonical ``received_at``), a NUL in a
property value, a 5,000-character event id, a truncated ``.gz`` and a plain
text file named ``.gz``, beside ordinary lines: the night publishes; each
poison line is quarantined with its documented reason (the NUL is stored as
U+FFFD); the damaged files are recorded as damaged in the ledger with the
lines read before the break accounted for.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json

from cohortflow.dag import load_workflows
from cohortflow.ingest import NUL_REPLACEMENT
from cohortflow.runner import run_workflow

D = dt.date(2026, 11, 2)
NOW = "2026-11-02T09:00:00.000Z"
FUTURE = "2026-11-12T09:00:00.000Z"
SOURCES = [
    {"name": "web", "format": "segment", "path": "web"},
    {"name": "app", "format": "posthog", "path": "app"},
    {"name": "etl", "format": "canonical", "path": "etl"},
]


def _seg(i: int, ts: str, received: str) -> str:
    return json.dumps({"type": "track", "event": "view_item", "userId": f"u{i}", "messageId": f"m{i}",
                       "originalTimestamp": ts, "sentAt": received, "receivedAt": received})


def _ph(i: int, ts: str, sent: str) -> str:
    return json.dumps({"event": "view_item", "distinct_id": f"u{i}", "uuid": f"p{i}", "timestamp": ts, "sent_at": sent})


def _can(i: int, ts: str, received: str | None = None, **extra) -> str:
    doc = {"event_id": f"c{i}", "event_name": "view_item", "distinct_id": f"u{i}", "event_time": ts, **extra}
    if received:
        doc["received_at"] = received
    return json.dumps(doc)


def _write(folder, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def test_poison_lines_and_damaged_files_let_the_night_publish(make_project, engine):
    project = make_project(engine, sources=SOURCES)
    root = project.root / "landing"
    day = D.isoformat()
    _write(root / "web" / day, "a.jsonl", "\n".join([_seg(1, NOW, NOW), _seg(2, FUTURE, FUTURE)]).encode() + b"\n")
    _write(root / "app" / day, "a.jsonl", "\n".join([_ph(3, NOW, NOW), _ph(4, FUTURE, FUTURE)]).encode() + b"\n")
    canonical = [
        _can(5, NOW),
        _can(6, FUTURE, FUTURE),
        _can(7, NOW, properties={"note": "a\u0000b", "k\u0000": 1}),
        json.dumps({"event_id": "x" * 5000, "event_name": "view_item", "distinct_id": "u8", "event_time": NOW}),
    ]
    _write(root / "etl" / day, "a.jsonl", "\n".join(canonical).encode() + b"\n")
    whole = gzip.compress(("\n".join(_can(100 + i, NOW) for i in range(400)) + "\n").encode())
    _write(root / "etl" / day, "cut.jsonl.gz", whole[: len(whole) // 2])
    _write(root / "etl" / day, "plain.jsonl.gz", (_can(9, NOW) + "\n").encode())

    cfg, wh = project.config(), project.warehouse()
    try:
        run_workflow(cfg, wh, load_workflows()["cohortflow_nightly"], D, echo=lambda _m: None)
        with wh.begin() as conn:
            reasons = wh.execute(
                conn, "select ingest_file, ingest_line, reason from raw.quarantine order by 1, 2"
            ).fetchall()
            ledger = {
                r[0]: r[1:]
                for r in wh.execute(
                    conn,
                    "select ingest_file, lines_read, events_loaded, duplicates_removed, lines_quarantined, damage "
                    "from meta.ingest_ledger",
                ).fetchall()
            }
            note = wh.scalar(conn, "select properties from raw.events where event_id = 's:c7'")
            published = wh.scalar(conn, "select dau from reports.active_users_daily where activity_date = :d", {"d": D})
    finally:
        wh.dispose()
    by_line = {(f, n): r for f, n, r in reasons}
    assert by_line[("web/2026-11-02/a.jsonl", 2)] == "event_in_future"
    assert by_line[("app/2026-11-02/a.jsonl", 2)] == "event_in_future"
    assert by_line[("etl/2026-11-02/a.jsonl", 2)] == "event_in_future"
    assert by_line[("etl/2026-11-02/a.jsonl", 4)] == "value_too_long"
    assert json.loads(note) == {"note": f"a{NUL_REPLACEMENT}b", f"k{NUL_REPLACEMENT}": 1}

    cut = ledger["etl/2026-11-02/cut.jsonl.gz"]
    lines_read, loaded, dups, quarantined, damage = cut
    assert damage and damage.startswith("truncated")
    assert 0 < lines_read < 400 and lines_read == loaded + dups + quarantined
    assert quarantined <= 1, "only the fragment at the break can be unreadable"
    plain = ledger["etl/2026-11-02/plain.jsonl.gz"]
    assert plain[:4] == (0, 0, 0, 0) and plain[4].startswith("not gzip data")
    for name in ("web/2026-11-02/a.jsonl", "app/2026-11-02/a.jsonl", "etl/2026-11-02/a.jsonl"):
        assert ledger[name][4] is None
    # u1, u3, u5, u7 and the users of the lines read before the break are active on D.
    assert published == 4 + loaded

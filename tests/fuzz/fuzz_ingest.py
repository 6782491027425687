"""Fuzz the ingest: mutated lines of every format, damaged files, then the night must publish.

Full run (at least 10,000 mutated lines per format, DuckDB; about 2 minutes)::

    .venv/bin/python -m tests.fuzz.fuzz_ingest --lines 10000

``--engine postgres`` runs it on the test PostgreSQL (``COHORTFLOW_TEST_PG_URL`` /
``COHORTFLOW_TEST_PG_PASSWORD``); the test suite runs a smaller sample on both
engines (``tests/fuzz/test_fuzz.py``).

For each format, valid lines are generated and each is then mutated by one
class of fault. Targeted classes have a documented outcome (the quarantine
reason, or loaded): an event or receipt time past the arrival date
(``event_in_future``), a time before the late-arrival limit
(``event_too_late``), a NUL in an id (``invalid_field``), an over-long event
id or name (``value_too_long``), an over-long line (``value_too_long``),
invalid UTF-8 (``invalid_encoding``), a cut line (``invalid_json`` or
``invalid_encoding``), nesting too deep to store (``invalid_field`` or
``invalid_json``), a NUL or invisible characters in a property value or a
name (loaded; the NUL stored as U+FFFD), a retried copy (duplicate). Random
byte flips and type swaps may end in any documented reason or load. The lines
go into several files per format (plain, gzip, CRLF), plus a truncated
``.gz``, a plain text named ``.gz`` and a ``.gz`` with garbage after its
stream. Checked: no crash and no hang; per file, the ledger's lines read
equal an independent physical line count and balance exactly; every line's
outcome is one its class allows; the damaged files are marked; then validate,
models and publish succeed for the night.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from cohortflow.adapters import FORMATS
from cohortflow.events import REASONS

D = dt.date(2026, 11, 10)
TZ = dt.timezone(dt.timedelta(hours=8))  # the project's zone is Asia/Shanghai (no DST)
DAY_MS = 86_400_000
T_DAY = int(dt.datetime(2026, 11, 10, 1, 0, tzinfo=TZ).timestamp() * 1000)  # 01:00 local on D
MAX_LINE = 8192
LOADED = "loaded"  # loaded, or removed as a duplicate of a loaded copy

# Field names per format: (distinct id, event name, event id or None, event time, receipt time or None, properties).
FIELDS = {
    "ark": ("xwho", "xwhat", None, "xwhen", None, "xcontext"),
    "sensors": ("distinct_id", "event", None, "time", None, "properties"),
    "segment": ("userId", "event", "messageId", "timestamp", "receivedAt", "properties"),
    "posthog": ("distinct_id", "event", "uuid", "timestamp", "sent_at", "properties"),
    "canonical": ("distinct_id", "event_name", "event_id", "event_time", "received_at", "properties"),
}
ISO_FORMATS = {"segment", "posthog"}


def _time(fmt: str, ms: int):
    if fmt in ISO_FORMATS:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return ms


def base_doc(fmt: str, i: int, rng: random.Random) -> dict:
    distinct, name, event_id, t_key, r_key, p_key = FIELDS[fmt]
    t = T_DAY + rng.randrange(0, 20 * 3_600_000)
    doc: dict = {distinct: f"u{rng.randrange(200)}", name: rng.choice(["app_start", "view_item", "pay_order", "搜索"]), t_key: _time(fmt, t)}
    doc[p_key] = {"$platform": rng.choice(["iOS", "Android"]), "n": i, "note": rng.choice(["", "引号\"", "emoji 🎉", "x" * 40])}
    if fmt == "ark":
        doc["appid"] = "fuzz"
    if fmt == "sensors":
        doc.update({"type": "track", "_track_id": i})
    if fmt == "segment":
        doc["type"] = "track"
    if event_id:
        doc[event_id] = f"{fmt}-{i}"
    if r_key:
        doc[r_key] = _time(fmt, t + rng.randrange(0, 60_000))
    return doc


def _dump(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _set_time(fmt: str, doc: dict, ms: int, receipt_ms: int | None) -> None:
    _, _, _, t_key, r_key, _ = FIELDS[fmt]
    doc[t_key] = _time(fmt, ms)
    if r_key and receipt_ms is not None:
        doc[r_key] = _time(fmt, receipt_ms)


def mutate(fmt: str, doc: dict, rng: random.Random, kind: str) -> tuple[bytes, set[str]]:
    """One mutated line and the outcomes its class allows."""
    distinct, name, event_id, t_key, r_key, p_key = FIELDS[fmt]
    if kind == "future_event":  # the line claims its own (future) receipt as well, where the format has one
        later = T_DAY + rng.randrange(3, 30) * DAY_MS
        _set_time(fmt, doc, later, later)
        return _dump(doc), {"event_in_future"}
    if kind == "future_receipt":
        if r_key is None:
            return mutate(fmt, doc, rng, "future_event")
        doc[r_key] = _time(fmt, T_DAY + rng.randrange(3, 30) * DAY_MS)
        return _dump(doc), {"event_in_future"}
    if kind == "too_old":
        _set_time(fmt, doc, T_DAY - rng.randrange(5, 60) * DAY_MS, None)
        return _dump(doc), {"event_too_late"}
    if kind == "nul_in_id":
        doc[distinct] = "u\u0000" + str(rng.randrange(10))
        return _dump(doc), {"invalid_field"}
    if kind == "nul_in_property":
        doc[p_key]["note"] = "a\u0000b"
        doc[p_key]["k\u0000"] = 1
        return _dump(doc), {LOADED}
    if kind == "invisible_name":
        doc[name] = rng.choice(["pay\u202eevil", "view\u200bitem", "bom\ufeff", "\u2066iso"])
        return _dump(doc), {LOADED}
    if kind == "long_event_id":
        if event_id is None:
            return mutate(fmt, doc, rng, "long_name")
        doc[event_id] = "e" * rng.choice([300, 5000])
        return _dump(doc), {"value_too_long"}
    if kind == "long_name":
        doc[name] = "n" * rng.choice([257, 3000])
        return _dump(doc), {"value_too_long"}
    if kind == "long_line":
        doc[p_key]["blob"] = "b" * (MAX_LINE + 10)
        return _dump(doc), {"value_too_long"}
    if kind == "bad_utf8":
        raw = _dump(doc)
        at = raw.index(b'"') + 1
        return raw[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + raw[at:], {"invalid_encoding"}
    if kind == "cut":
        raw = _dump(doc)
        return raw[: rng.randrange(0, len(raw) - 1)], {"invalid_json", "invalid_encoding"}
    if kind == "deep":
        depth = rng.choice([300, 1100])
        doc[p_key] = "DEEP"
        raw = _dump(doc).replace(b'"DEEP"', b'{"d":' * depth + b"1" + b"}" * depth)
        return raw, {"invalid_field", "invalid_json"}
    if kind == "flip":
        raw = bytearray(_dump(doc))
        for _ in range(rng.randrange(1, 6)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw).replace(b"\n", b" "), {LOADED, *REASONS}
    if kind == "type_swap":
        key = rng.choice(list(doc))
        doc[key] = rng.choice([None, True, 3.5, [], {}, "", "x", -1, 10**30])
        return _dump(doc), {LOADED, *REASONS}
    raise ValueError(kind)


KINDS = [
    "future_event", "future_receipt", "too_old", "nul_in_id", "nul_in_property", "invisible_name", "long_event_id",
    "long_name", "long_line", "bad_utf8", "cut", "deep", "flip", "type_swap",
]


def physical_lines(content: bytes) -> int:
    return content.count(b"\n") + (1 if content and not content.endswith(b"\n") else 0)


def make_day(landing: Path, fmt: str, n_mutated: int, rng: random.Random) -> tuple[dict, dict]:
    """Write the format's files (``n_mutated`` mutated lines among valid lines and retried copies); return
    {(file, line): allowed outcomes} and {file: expected physical line count}."""
    folder = landing / fmt / D.isoformat()
    folder.mkdir(parents=True)
    lines: list[tuple[bytes, set[str]]] = []
    kept: list[bytes] = []
    mutated = 0
    i = 0
    while mutated < n_mutated:
        i += 1
        doc = base_doc(fmt, i, rng)
        roll = rng.random()
        if roll < 0.2:
            raw = _dump(doc)
            lines.append((raw, {LOADED}))
            kept.append(raw)
        elif roll < 0.25 and kept:
            # A retried copy: whichever copy was received first is kept, the other is the duplicate.
            lines.append((rng.choice(kept), {"duplicate", LOADED}))
        else:
            lines.append(mutate(fmt, doc, rng, rng.choice(KINDS)))
            mutated += 1
    expected: dict[tuple[str, int], set[str]] = {}
    counts: dict[str, int] = {}
    n_files = 4
    for k in range(n_files):
        part = lines[k::n_files]
        name = f"part-{k}.jsonl" + (".gz" if k % 2 else "")
        sep = b"\r\n" if k == 2 else b"\n"
        content = sep.join(raw for raw, _ in part) + (sep if k != 3 else b"")
        (folder / name).write_bytes(gzip.compress(content) if k % 2 else content)
        rel = f"{fmt}/{D.isoformat()}/{name}"
        counts[rel] = physical_lines(content)
        for j, (_, allowed) in enumerate(part, 1):
            expected[(rel, j)] = allowed
    # Damaged files: truncated gzip, plain text named .gz, gzip followed by garbage.
    good = b"\n".join(_dump(base_doc(fmt, 10**6 + i, rng)) for i in range(200)) + b"\n"
    whole = gzip.compress(good)
    cut = whole[: rng.randrange(len(whole) // 3, len(whole) - 10)]
    damaged = {
        "cut.jsonl.gz": (cut, zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)),
        "plain.jsonl.gz": (good, b""),
        "tail.jsonl.gz": (whole + b"not gzip at all", good),
    }
    for name, (data, readable) in damaged.items():
        (folder / name).write_bytes(data)
        rel = f"{fmt}/{D.isoformat()}/{name}"
        counts[rel] = physical_lines(readable)
        complete = readable.count(b"\n")
        for j in range(1, counts[rel] + 1):
            # The fragment at the break may be cut anywhere.
            expected[(rel, j)] = {LOADED} if j <= complete else {LOADED, "invalid_json", "invalid_encoding"}
    return expected, counts


def run(n_lines: int, engine: str, seed: int, root: Path, echo=print) -> dict:
    """Build, ingest and publish one fuzzed night; raise AssertionError on any broken rule; return the counts."""
    from cohortflow.dag import load_workflows
    from cohortflow.runner import run_workflow
    from tests.conftest import Project

    rng = random.Random(seed)
    project = Project(
        root, engine, timezone="Asia/Shanghai",
        sources=[{"name": f, "format": f, "path": f} for f in FORMATS],
        ingest={"max_line_bytes": MAX_LINE, "late_arrival_days": 3},
    )
    try:
        landing = root / "landing"
        expected: dict = {}
        counts: dict = {}
        for fmt in FORMATS:
            e, c = make_day(landing, fmt, n_lines, rng)
            expected.update(e)
            counts.update(c)
        cfg, wh = project.config(), project.warehouse()
        t0 = time.monotonic()
        try:
            run_workflow(cfg, wh, load_workflows()["cohortflow_nightly"], D, echo=lambda _m: None)
            with wh.begin() as conn:
                ledger = {r[0]: r[1:] for r in wh.execute(conn, "select ingest_file, lines_read, events_loaded, duplicates_removed, lines_quarantined, damage from meta.ingest_ledger").fetchall()}
                quarantined = {(f, n): r for f, n, r in wh.execute(conn, "select ingest_file, ingest_line, reason from raw.quarantine").fetchall()}
                loaded = {(f, n) for f, n in wh.execute(conn, "select ingest_file, ingest_line from raw.events").fetchall()}
                published = wh.scalar(conn, "select count(*) from reports.event_metrics_daily")
        finally:
            wh.dispose()
        seconds = time.monotonic() - t0
    finally:
        project.cleanup()
    assert set(ledger) == set(counts), sorted(set(ledger) ^ set(counts))
    for rel, (read, n_loaded, dups, quar, damage) in ledger.items():
        assert read == counts[rel], f"{rel}: ledger says {read} lines read, the file has {counts[rel]}"
        assert read == n_loaded + dups + quar, f"{rel}: the ledger does not balance"
        assert (damage is not None) == rel.endswith(("cut.jsonl.gz", "plain.jsonl.gz", "tail.jsonl.gz")), (rel, damage)
    reasons: Counter = Counter()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for key, allowed in expected.items():
        got = quarantined.get(key) or (LOADED if key in loaded else "duplicate")
        if got == "duplicate" and "duplicate" not in allowed:
            got = LOADED if LOADED in allowed else got  # a mutated line equal to an earlier one is a duplicate of it
        assert got in allowed, f"{key}: {got}, expected one of {sorted(allowed)}"
        assert got in REASONS or got in (LOADED, "duplicate")
        reasons[got] += 1
    assert published > 0, "the night published nothing"
    summary = {"engine": engine, "lines": len(expected), "mutated_per_format": n_lines, "seconds": round(seconds, 1), "outcomes": dict(reasons)}
    echo(json.dumps(summary, ensure_ascii=False))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000, help="mutated lines per format (valid lines and retried copies come on top)")
    parser.add_argument("--engine", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cohortflow-fuzz-") as tmp:
        try:
            run(args.lines, args.engine, args.seed, Path(tmp) / "project")
        except AssertionError as exc:
            print(f"fuzz failed: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ingest: the business date's raw SDK logs into ``raw.events``, losing nothing.

For business date D, every file under ``<landing_root>/<source.path>/<D>/``
(``*.jsonl`` and ``*.jsonl.gz``) is read line by line. Each line ends as
exactly one of: loaded into ``raw.events``, removed as a duplicate (of an
earlier copy in this batch, or of an event loaded by an earlier date inside
the lookback), or quarantined in ``raw.quarantine`` with its reason. The
ledger (``meta.ingest_ledger``) records, per file,

    lines_read = events_loaded + duplicates_removed + lines_quarantined

Rerunning D replaces exactly what D loaded: the delete of D's rows and the
new load happen in one transaction.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa

from cohortflow.adapters import get_adapter
from cohortflow.config import Config, Source
from cohortflow.events import (
    ENCODING,
    EVENT_IN_FUTURE,
    EVENT_TOO_LATE,
    INVALID_FIELD,
    QUARANTINE_SCHEMA,
    RAW_EVENT_SCHEMA,
    VALUE_TOO_LONG,
    CanonicalEvent,
    LineError,
    canonical_json,
)
from cohortflow.warehouse import Warehouse

DAY_MS = 86_400_000
MAX_STORED_RAW_CHARS = 100_000  # quarantined raw text beyond this is cut, and the cut noted


class IngestError(Exception):
    """The ingest cannot run (bad landing path, unreadable file)."""


@dataclass
class FileLedger:
    source_name: str
    ingest_file: str
    lines_read: int = 0
    events_loaded: int = 0
    duplicates_removed: int = 0
    lines_quarantined: int = 0

    @property
    def balanced(self) -> bool:
        return self.lines_read == self.events_loaded + self.duplicates_removed + self.lines_quarantined


@dataclass
class Ledger:
    business_date: dt.date
    files: list[FileLedger] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.files)

    @property
    def lines_read(self) -> int:
        return self.total("lines_read")

    @property
    def events_loaded(self) -> int:
        return self.total("events_loaded")

    @property
    def duplicates_removed(self) -> int:
        return self.total("duplicates_removed")

    @property
    def lines_quarantined(self) -> int:
        return self.total("lines_quarantined")

    @property
    def balanced(self) -> bool:
        return all(f.balanced for f in self.files)

    def summary(self) -> str:
        text = (
            f"ledger {self.business_date}: {len(self.files)} files, lines read {self.lines_read:,} = "
            f"loaded {self.events_loaded:,} + duplicates {self.duplicates_removed:,} + "
            f"quarantined {self.lines_quarantined:,}"
        )
        if self.quarantine_reasons:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantine_reasons.items()))
            text += f" ({reasons})"
        return text


# -- reading ---------------------------------------------------------------


def day_files(cfg: Config, source: Source, business_date: dt.date) -> list[Path]:
    """The files of one source for one arrival date, confined to the landing root."""
    root = cfg.landing_path
    folder = (root / source.path / business_date.isoformat()).resolve()
    if not folder.is_relative_to(root):
        raise IngestError(f"source {source.name!r}: {folder} is outside the landing root {root}")
    if not folder.exists():
        return []
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    for p in files:
        real = p.resolve()
        if not real.is_relative_to(root):
            raise IngestError(f"{p} resolves to {real}, outside the landing root {root}; refusing to read it")
        if not real.is_file():
            raise IngestError(f"{p} is not a regular file")
    return files


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes without the line ending)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            reader = io.BufferedReader(fh, buffer_size=1 << 20) if opener is gzip.open else fh
            for number, line in enumerate(reader, start=1):
                yield number, line.rstrip(b"\r\n")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise IngestError(f"cannot read {path}: {exc}") from None


# -- checks that need the run's context -------------------------------------


class _Context:
    """Per-run constants for the checks and the local-date computation."""

    def __init__(self, cfg: Config, business_date: dt.date) -> None:
        self.tz = ZoneInfo(cfg.timezone)
        self.business_date = business_date
        limits = cfg.ingest
        self.max_name = limits.max_event_name_length
        self.max_value = limits.max_value_length
        self.max_line = limits.max_line_bytes
        # Receipt time of lines that carry none: the end of the arrival date (local).
        end_local = dt.datetime.combine(business_date + dt.timedelta(days=1), dt.time(), self.tz)
        self.default_received_ms = int(end_local.timestamp() * 1000)
        self.oldest_date = business_date - dt.timedelta(days=limits.late_arrival_days)
        self._offset_cache: dict[int, int] = {}

    def local_date(self, ms: int) -> dt.date:
        """The project-time-zone date of an epoch in milliseconds (the one place it is computed)."""
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).date()

    def check(self, ev: CanonicalEvent) -> tuple[int, dt.date, bytes]:
        """Checks that need the run's context; returns (receipt ms, local date, properties JSON)."""
        if len(ev.event_name) > self.max_name:
            raise LineError(VALUE_TOO_LONG, f"event name of {len(ev.event_name)} chars > {self.max_name}")
        for key in (ev.distinct_id, ev.link_anonymous_id, ev.link_login_id):
            if key is not None and len(key) > self.max_name:
                raise LineError(VALUE_TOO_LONG, f"id of {len(key)} chars > {self.max_name}")
        for text in (ev.event_name, ev.distinct_id, ev.link_anonymous_id, ev.link_login_id, ev.app_id,
                     ev.platform, ev.app_version, ev.channel, ev.session_id):
            if text is not None and "\x00" in text:
                raise LineError(INVALID_FIELD, "a name or id contains a NUL character")
        props_json = canonical_json(ev.properties)
        # No string inside can be longer than the whole document: walk it only when that is long.
        if len(props_json) > self.max_value:
            _check_values(ev.properties, self.max_value)
        received = ev.received_at_ms if ev.received_at_ms is not None else self.default_received_ms
        if ev.event_time_ms > received + DAY_MS:
            raise LineError(EVENT_IN_FUTURE, "event time is more than one day after its receipt")
        local = self.local_date(ev.event_time_ms)
        if local < self.oldest_date:
            raise LineError(EVENT_TOO_LATE, f"event date {local} is older than the late-arrival limit {self.oldest_date}")
        return received, local, props_json


def _check_values(value: object, limit: int, depth: int = 0) -> None:
    if isinstance(value, str):
        if len(value) > limit:
            raise LineError(VALUE_TOO_LONG, f"a property value of {len(value)} chars > {limit}")
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and len(k) > limit:
                raise LineError(VALUE_TOO_LONG, f"a property key of {len(k)} chars > {limit}")
            _check_values(v, limit, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_values(v, limit, depth + 1)


def _raw_text(raw: bytes) -> str:
    """The raw line as stored: invalid UTF-8 and NUL bytes (which no text column holds) escaped as ``\\xNN``."""
    text = raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    if len(text) > MAX_STORED_RAW_CHARS:
        text = text[:MAX_STORED_RAW_CHARS] + f"...[cut, {len(raw)} bytes in all]"
    return text


# -- the batch --------------------------------------------------------------


@dataclass
class Batch:
    """The parsed lines of one business date, before the warehouse sees them."""

    events: dict[str, list] = field(default_factory=lambda: {n: [] for n in RAW_EVENT_SCHEMA.names})
    quarantine: dict[str, list] = field(default_factory=lambda: {n: [] for n in QUARANTINE_SCHEMA.names})
    ledger: Ledger | None = None
    # event_id -> (received_ms, file order, line) of the copy kept so far
    _kept: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _row_of: dict[str, int] = field(default_factory=dict)
    _dropped_rows: set[int] = field(default_factory=set)


def parse_day(
    cfg: Config,
    business_date: dt.date,
    progress: Callable[[str], None] | None = None,
) -> Batch:
    """Read, map, check and dedupe (within the batch) every line of the day's files."""
    ctx = _Context(cfg, business_date)
    batch = Batch(ledger=Ledger(business_date))
    ledger = batch.ledger
    root = cfg.landing_path
    ev_cols = batch.events
    q_cols = batch.quarantine
    file_order = 0
    ledgers_by_file: dict[str, FileLedger] = {}
    for source in cfg.sources:
        parse = get_adapter(source.format)
        for path in day_files(cfg, source, business_date):
            rel = str(path.resolve().relative_to(root))
            fl = FileLedger(source.name, rel)
            ledger.files.append(fl)
            ledgers_by_file[rel] = fl
            file_order += 1
            for number, raw in iter_lines(path):
                fl.lines_read += 1
                try:
                    if len(raw) > ctx.max_line:
                        raise LineError(VALUE_TOO_LONG, f"line of {len(raw)} bytes > {ctx.max_line}")
                    ev = parse(raw)
                    received, local, props_json = ctx.check(ev)
                except LineError as err:
                    fl.lines_quarantined += 1
                    ledger.quarantine_reasons[err.reason] = ledger.quarantine_reasons.get(err.reason, 0) + 1
                    q_cols["load_date"].append(business_date)
                    q_cols["ingest_file"].append(rel)
                    q_cols["ingest_line"].append(number)
                    q_cols["source_format"].append(source.format)
                    q_cols["reason"].append(err.reason)
                    q_cols["detail"].append(err.detail[:500])
                    q_cols["raw_line"].append(_raw_text(raw))
                    continue
                # Within-batch dedup: the first copy received wins.
                order = (received, file_order, number)
                kept = batch._kept.get(ev.event_id)
                if kept is not None:
                    if order >= kept:
                        fl.duplicates_removed += 1
                        continue
                    # This copy was received earlier than the one kept: swap them.
                    old_row = batch._row_of[ev.event_id]
                    batch._dropped_rows.add(old_row)
                    ledgers_by_file[ev_cols["ingest_file"][old_row]].events_loaded -= 1
                    ledgers_by_file[ev_cols["ingest_file"][old_row]].duplicates_removed += 1
                batch._kept[ev.event_id] = order
                batch._row_of[ev.event_id] = len(ev_cols["event_id"])
                fl.events_loaded += 1
                ev_cols["event_id"].append(ev.event_id)
                ev_cols["event_name"].append(ev.event_name)
                ev_cols["distinct_id"].append(ev.distinct_id)
                ev_cols["event_time"].append(ev.event_time_ms)
                ev_cols["event_date"].append(local)
                ev_cols["received_at"].append(received)
                ev_cols["source_format"].append(source.format)
                ev_cols["app_id"].append(ev.app_id)
                ev_cols["platform"].append(ev.platform)
                ev_cols["app_version"].append(ev.app_version)
                ev_cols["channel"].append(ev.channel)
                ev_cols["session_id"].append(ev.session_id)
                ev_cols["properties"].append(props_json.decode())
                ev_cols["is_activity"].append(ev.is_activity)
                ev_cols["link_anonymous_id"].append(ev.link_anonymous_id)
                ev_cols["link_login_id"].append(ev.link_login_id)
                ev_cols["load_date"].append(business_date)
                ev_cols["ingest_file"].append(rel)
                ev_cols["ingest_line"].append(number)
            if progress:
                progress(f"  read {rel}: {fl.lines_read:,} lines")
    return batch


def _events_table(batch: Batch) -> pa.Table:
    cols = batch.events
    if batch._dropped_rows:
        keep = [i for i in range(len(cols["event_id"])) if i not in batch._dropped_rows]
        cols = {k: [v[i] for i in keep] for k, v in cols.items()}
    arrays = []
    for f in RAW_EVENT_SCHEMA:
        values = cols[f.name]
        if f.name in ("event_time", "received_at"):
            arrays.append(pa.array(values, type=pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=RAW_EVENT_SCHEMA)


def load_day(
    wh: Warehouse,
    cfg: Config,
    business_date: dt.date,
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> Ledger:
    """Parse the day's files and replace what this business date loaded, in one transaction."""
    batch = parse_day(cfg, business_date, progress)
    ledger = batch.ledger
    events = _events_table(batch)
    quarantine = pa.Table.from_pydict(batch.quarantine, schema=QUARANTINE_SCHEMA)
    params = {
        "d": business_date,
        "lookback_start": business_date - dt.timedelta(days=cfg.ingest.lookback_days),
    }
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with wh.begin() as conn:
        # Two loads of one date wait for each other; loads of different dates run in parallel.
        wh.lock(conn, f"cohortflow:ingest:{business_date}")
        for table in ("raw.events", "raw.quarantine", "meta.ingest_ledger"):
            wh.execute(conn, f"delete from {table} where load_date = :d", params)
        # Incoming rows first go to a staging relation (a temporary table; on Trino a Parquet load table), then
        # only those not loaded by an earlier date inside the lookback move to raw.events.
        with wh.staged(conn, "incoming_events", "raw.events", events) as incoming:
            dup_rows = wh.execute(
                conn,
                f"""
                select i.ingest_file, count(*) as n
                from {incoming} as i
                where exists (
                    select 1 from raw.events as e
                    where e.event_id = i.event_id
                      and e.load_date >= :lookback_start and e.load_date < :d
                )
                group by i.ingest_file
                """,
                params,
            ).fetchall()
            columns = ", ".join(events.column_names)
            wh.execute(
                conn,
                f"""
                insert into raw.events ({columns})
                select {columns} from {incoming} as i
                where not exists (
                    select 1 from raw.events as e
                    where e.event_id = i.event_id
                      and e.load_date >= :lookback_start and e.load_date < :d
                )
                """,
                params,
            )
        if wh.dialect == "postgres":
            # Fresh statistics for the next night's duplicate check and tonight's models: autovacuum analyses
            # raw.events only after enough changes, and with stale counts a demo night's ingest took 27 s, not 0.5 s.
            wh.execute(conn, "analyze raw.events")
        by_file = {f.ingest_file: f for f in ledger.files}
        for ingest_file, n in dup_rows:
            by_file[ingest_file].events_loaded -= n
            by_file[ingest_file].duplicates_removed += n
        wh.load_arrow(conn, "raw.quarantine", quarantine)
        ledger_rows = pa.Table.from_pylist(
            [
                {
                    "load_date": business_date,
                    "run_id": run_id,
                    "source_name": f.source_name,
                    "ingest_file": f.ingest_file,
                    "lines_read": f.lines_read,
                    "events_loaded": f.events_loaded,
                    "duplicates_removed": f.duplicates_removed,
                    "lines_quarantined": f.lines_quarantined,
                    "loaded_at": now,
                }
                for f in ledger.files
            ]
        )
        wh.load_arrow(conn, "meta.ingest_ledger", ledger_rows)
        loaded = wh.scalar(conn, "select count(*) from raw.events where load_date = :d", params)
        if loaded != ledger.events_loaded or not ledger.balanced:
            raise IngestError(
                f"ledger does not balance for {business_date}: counted {ledger.events_loaded} loaded, "
                f"table holds {loaded}; nothing was written"
            )
    return ledger

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

One bad line or file never stops the day: every line is judged on its own
(:meth:`_Context.check`), and a file that breaks off (a truncated ``.gz``, a
plain file named ``.gz``, a read error) is recorded in the ledger as damaged
(``damage``) with the lines read before the break loaded or quarantined,
while the day's other files load.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow.adapters import get_adapter, get_fast_mapper
from cohortflow.adapters._common import Unusual
from cohortflow.config import Config, Source, size_bytes
from cohortflow.events import (
    EVENT_AFTER_RECEIPT,
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
from cohortflow.faults import checkpoint
from cohortflow.iofail import scratch_folder
from cohortflow.linereader import FileLines
from cohortflow.privacy import PrivacyError, Pseudonymizer
from cohortflow.progress import Meter, duration, plural, rate
from cohortflow.warehouse import Warehouse

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
EPOCH_DATE = dt.date(1970, 1, 1)
_OFFSET_CHANGES = object()  # an hour in which the project zone's UTC offset changes
# Lines of the common clean shapes are mapped by the formats' fast paths (``map_fast``); False sends every line
# through ``parse_line`` (what the equivalence tests compare the fast path against).
FAST_PATH = True
MAX_STORED_RAW_CHARS = 100_000  # quarantined raw text beyond this is cut, and the cut noted


LEDGER_SCHEMA = pa.schema(
    [
        ("load_date", pa.date32()),
        ("run_id", pa.string()),
        ("source_name", pa.string()),
        ("ingest_file", pa.string()),
        ("lines_read", pa.int64()),
        ("events_loaded", pa.int64()),
        ("duplicates_removed", pa.int64()),
        ("lines_quarantined", pa.int64()),
        ("loaded_at", pa.timestamp("us")),
        ("damage", pa.string()),
    ]
)


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
    # What broke the file off (None: read to its end); the lines before the break are counted above.
    damage: str | None = None

    @property
    def balanced(self) -> bool:
        return self.lines_read == self.events_loaded + self.duplicates_removed + self.lines_quarantined


@dataclass
class Ledger:
    business_date: dt.date
    files: list[FileLedger] = field(default_factory=list)
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    # (user, event date) pairs the load added, removed or re-attributed: what the models rebuild.
    changed_pairs: int = 0

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
            f"ledger {self.business_date}: {plural(len(self.files), 'file')}, lines read {self.lines_read:,} = "
            f"loaded {self.events_loaded:,} + duplicates {self.duplicates_removed:,} + "
            f"quarantined {self.lines_quarantined:,}"
        )
        if self.quarantine_reasons:
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.quarantine_reasons.items()))
            text += f" ({reasons})"
        for f in self.damaged_files:
            text += f"\n  damaged file {f.ingest_file}: {f.damage}; its {f.lines_read:,} lines before the break are counted"
        return text

    @property
    def damaged_files(self) -> list[FileLedger]:
        return [f for f in self.files if f.damage is not None]


# -- reading ---------------------------------------------------------------


def day_files(cfg: Config, source: Source, business_date: dt.date, index: int = 0) -> list[Path]:
    """The files of one source for one arrival date, confined to the landing root.

    Missing input is an error, never an empty day: the landing root, the source's folder and the date's folder must
    exist (a day without data is an existing, empty folder), unless the source is declared ``optional`` (then a
    missing date folder means no data from it that day).
    """
    root = cfg.landing_path
    if not root.is_dir():
        raise IngestError(f"landing root {root} does not exist (setting landing_root); nothing was loaded or deleted")
    source_dir = (root / source.path).resolve()
    folder = (source_dir / business_date.isoformat()).resolve()
    if not folder.is_relative_to(root):
        raise IngestError(f"source {source.name!r}: {folder} is outside the landing root {root}")
    if not folder.is_dir():
        if source.optional:
            return []
        where = f"sources.{index}.path {source.path!r} under landing_root {root}"
        missing = source_dir if not source_dir.is_dir() else folder
        raise IngestError(
            f"{missing} does not exist ({where}); nothing was loaded or deleted. "
            f"A date without data needs an existing, empty folder {folder.name}/ (or the source declared optional: true)"
        )
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".jsonl", ".jsonl.gz")))
    for p in files:
        real = p.resolve()
        if not real.is_relative_to(root):
            raise IngestError(f"{p} resolves to {real}, outside the landing root {root}; refusing to read it")
        if not real.is_file():
            raise IngestError(f"{p} is not a regular file")
    return files


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes without the line ending); a file that breaks off ends at the break
    (:class:`cohortflow.linereader.FileLines` says why)."""
    return iter(FileLines(path))


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
        # The latest time a line that arrived on D can carry, as event or receipt time: the end of the day after
        # D (local), i.e. one day of clock skew after the end of the arrival date (validation's max_event_date).
        latest_local = dt.datetime.combine(business_date + dt.timedelta(days=2), dt.time(), self.tz)
        self.latest_ms = int(latest_local.timestamp() * 1000)
        self.oldest_date = business_date - dt.timedelta(days=limits.late_arrival_days)
        self.max_event_id = max(self.max_name, 32) + 2  # (see check_event_id)
        self._hour_offsets: dict[int, object] = {}
        self._days: dict[int, dt.date] = {}

    def local_date(self, ms: int) -> dt.date:
        """The project-time-zone date of an epoch in milliseconds (the one place it is computed)."""
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).date()

    def local_day(self, ms: int) -> dt.date:
        """:meth:`local_date`, from the zone's offset in the UTC hour of ``ms`` (computed once per hour): an hour whose
        first and last millisecond have the same offset has it throughout (no zone changes its offset twice within an
        hour), and an hour with a change in it goes to :meth:`local_date` (``tests/unit/test_fast_path.py``)."""
        hour = ms // HOUR_MS
        offset = self._hour_offsets.get(hour)
        if offset is None:
            first, last = self._offset_ms(hour * HOUR_MS), self._offset_ms(hour * HOUR_MS + HOUR_MS - 1)
            offset = self._hour_offsets[hour] = first if first == last else _OFFSET_CHANGES
        if offset is _OFFSET_CHANGES:
            return self.local_date(ms)
        days = (ms + offset) // DAY_MS
        day = self._days.get(days)
        if day is None:
            day = self._days[days] = EPOCH_DATE + dt.timedelta(days=days)
        return day

    def _offset_ms(self, ms: int) -> int:
        return dt.datetime.fromtimestamp(ms / 1000, self.tz).utcoffset() // dt.timedelta(milliseconds=1)

    def fast_row(self, fast: Callable[[dict], tuple], raw: bytes, number: int) -> tuple | None:
        """The spooled row of a line the format's fast path maps and every check passes, else None: the line is then
        judged by the adapter's ``parse_line`` and :meth:`check`, which alone say why a line is quarantined.

        A line without the text ``\\u0000`` has no NUL character in any string (JSON writes it only so), which is
        what :meth:`check_storable_text` and :func:`storable_properties` look for."""
        if len(raw) > self.max_line or b"\\u0000" in raw:
            return None
        try:
            obj = orjson.loads(raw)
            if type(obj) is not dict:
                return None
            (event_id, event_name, distinct_id, event_time, received, app_id, platform, app_version, channel,
             session_id, props_json, is_activity, link_anonymous_id, link_login_id) = fast(obj)
        except (Unusual, LineError, orjson.JSONDecodeError, orjson.JSONEncodeError):
            return None
        max_name = self.max_name
        if len(event_name) > max_name or len(distinct_id) > max_name or len(event_id) > self.max_event_id \
                or len(props_json) > self.max_value or link_anonymous_id is not None or link_login_id is not None:
            return None
        latest = self.latest_ms
        if received is None:
            received = self.default_received_ms
        elif received >= latest:
            return None
        if event_time >= latest or event_time > received + DAY_MS:
            return None
        local = self.local_day(event_time)
        if local < self.oldest_date:
            return None
        return (event_id, event_name, distinct_id, event_time, local, received, app_id, platform, app_version, channel,
                session_id, props_json, is_activity, None, None, number)

    def check(self, ev: CanonicalEvent) -> tuple[int, dt.date, bytes]:
        """Checks that need the run's context; returns (receipt ms, local date, properties JSON)."""
        if len(ev.event_name) > self.max_name:
            raise LineError(VALUE_TOO_LONG, f"event name of {len(ev.event_name)} chars > {self.max_name}")
        for key in (ev.distinct_id, ev.link_anonymous_id, ev.link_login_id):
            if key is not None and len(key) > self.max_name:
                raise LineError(VALUE_TOO_LONG, f"id of {len(key)} chars > {self.max_name}")
        self.check_event_id(ev)
        self.check_storable_text(ev)
        props_json = storable_properties(ev)
        # No string inside can be longer than the whole document: walk it only when that is long.
        if len(props_json) > self.max_value:
            _check_values(ev.properties, self.max_value)
        received = self.check_times(ev)
        local = self.local_day(ev.event_time_ms)
        if local < self.oldest_date:
            raise LineError(EVENT_TOO_LATE, f"event date {local} is older than the late-arrival limit {self.oldest_date}")
        return received, local, props_json

    def check_event_id(self, ev: CanonicalEvent) -> None:
        """A source's event id is an id like the others: at most ``max_event_name_length`` characters after its
        two-character prefix (and never less than the 32 hex digits of the ids the adapters derive)."""
        if len(ev.event_id) > self.max_event_id:
            raise LineError(VALUE_TOO_LONG, f"event id of {len(ev.event_id) - 2} chars > {self.max_event_id - 2}")

    @staticmethod
    def check_storable_text(ev: CanonicalEvent) -> None:
        """No text column of any warehouse holds a NUL character (PostgreSQL refuses it): such a line is quarantined
        on every engine alike."""
        for text in (ev.event_id, ev.event_name, ev.distinct_id, ev.link_anonymous_id, ev.link_login_id, ev.app_id,
                     ev.platform, ev.app_version, ev.channel, ev.session_id):
            if text is not None and "\x00" in text:
                raise LineError(INVALID_FIELD, "a name or id contains a NUL character")

    def check_times(self, ev: CanonicalEvent) -> int:
        """Judge the line's times against the business date, whatever it claims about its receipt; return the
        receipt time to store.

        An event or receipt time after the latest time the arrival date allows is ``event_in_future``; an event
        more than one day after its (plausible) receipt is ``event_after_receipt``.
        """
        if ev.event_time_ms >= self.latest_ms:
            raise LineError(EVENT_IN_FUTURE, f"event date {self.local_date(ev.event_time_ms)} is after the arrival date "
                                             f"{self.business_date} allows")
        if ev.received_at_ms is not None and ev.received_at_ms >= self.latest_ms:
            raise LineError(EVENT_IN_FUTURE, f"receipt date {self.local_date(ev.received_at_ms)} is after the arrival "
                                             f"date {self.business_date} allows")
        received = ev.received_at_ms if ev.received_at_ms is not None else self.default_received_ms
        if ev.event_time_ms > received + DAY_MS:
            raise LineError(EVENT_AFTER_RECEIPT, "event time is more than one day after its receipt")
        return received


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


# What a NUL character in a property key or value is stored as, on every engine: the Unicode replacement character.
NUL_REPLACEMENT = "\ufffd"


def storable_properties(ev: CanonicalEvent) -> bytes:
    """The event's properties as the JSON text to store.

    PostgreSQL reads that text as ``jsonb``, which refuses the ``\\u0000`` escape (a NUL character): every NUL in a
    property key or value is stored as U+FFFD instead, on every engine alike, so the line loads and every model builds
    on both. (A NUL in a name or id quarantines the line instead: see :meth:`_Context.check_storable_text`.)
    """
    props_json = ev.properties_json if ev.properties_json is not None else canonical_json(ev.properties)
    if b"\\u0000" in props_json:
        cleaned = _without_nul(ev.properties)
        if cleaned != ev.properties:
            ev.properties = cleaned
            props_json = ev.properties_json = canonical_json(cleaned)
    return props_json


def _without_nul(value: object) -> object:
    if isinstance(value, str):
        return value.replace("\x00", NUL_REPLACEMENT)
    if isinstance(value, dict):
        return {_without_nul(k) if isinstance(k, str) else k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _raw_text(raw: bytes) -> str:
    """The raw line as stored: invalid UTF-8 and NUL bytes (which no text column holds) escaped as ``\\xNN``."""
    text = raw.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")
    if len(text) > MAX_STORED_RAW_CHARS:
        text = text[:MAX_STORED_RAW_CHARS] + f"...[cut, {len(raw)} bytes in all]"
    return text


# -- the batch --------------------------------------------------------------

# Lines parsed before their columns leave Python for a row group on disk: what bounds a parser's memory, whatever
# the size of the day (a Python row costs about 2 KB; an Arrow row a tenth of that).
CHUNK_ROWS = 50_000
# The spool is Parquet, not Arrow IPC: DuckDB reads it itself, column by column, in its buffer manager (a pyarrow
# dataset of IPC files was read whole into Arrow's allocator for each statement: at 3,011,235 events the load's
# insert peaked at 3.5 GB and took 18 s; from zstd Parquet 1.3 GB and 8.2 s). zstd: a fifth of the bytes on disk
# for about 1.3 s of a parser's CPU per million rows.
SPOOL_COMPRESSION = "zstd"
# Below this many bytes of lines (a gzip file counted as GZIP_RATIO times its size) a day is parsed in this process
# alone: a parser process takes about a second to start (spawned, it imports the package) and to begin its first
# file, while this process parses on. Measured on 2 cores (the demo's logs, 470 bytes a line): a day of 50,000 lines
# took 1.2 s in parallel against 0.85 s alone, one of 120,000 lines 1.8 s against 2.3 s, one of 297,000 3.7 s
# against 6.3 s.
PARALLEL_MIN_BYTES = 32 << 20
GZIP_RATIO = 14  # the demo's logs: 5.8 MB of lines in a gzip file of 0.4 MB
# A file of this many bytes of lines or more is parsed in stripes when the day is parsed in parallel: each parser
# reads it whole (about a fifth of the cost of parsing its lines) and parses every n-th block of STRIPE_LINES lines.
STRIPE_MIN_BYTES = 8 << 20
STRIPE_LINES = 10_000
# Whether this process parses too while the parser processes start (tests turn it off to make them do the work).
PARENT_PARSES = True


@dataclass
class ParsedFile:
    """One file's ledger and its parsed lines, spooled as Parquet files (events and quarantine)."""

    ledger: FileLedger
    reasons: dict[str, int]
    events: Path
    quarantine: Path
    seconds: float = 0.0


@dataclass
class Batch:
    """The parsed lines of one business date, before the warehouse sees them: every line that is not quarantined
    (duplicates included: the load decides which copy of an event id counts, against every loaded date), spooled to
    disk file by file, so memory does not grow with the day."""

    files: list[ParsedFile] = field(default_factory=list)
    ledger: Ledger | None = None

    def event_batches(self) -> Iterator[pa.RecordBatch]:
        for parsed in self.files:
            yield from _read_spool(parsed.events)

    def quarantine_batches(self) -> Iterator[pa.RecordBatch]:
        for parsed in self.files:
            yield from _read_spool(parsed.quarantine)


def _read_spool(path: Path) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(path) as spooled:
        yield from spooled.iter_batches(batch_size=CHUNK_ROWS)


class _Spool:
    """Rows appended as tuples (the schema's columns but ``constants``, in order) and written to a Parquet file, a
    row group every :data:`CHUNK_ROWS` rows; the columns every row of the file shares (``constants``) are filled in
    at the write. The text columns named in ``utf8`` are given as UTF-8 bytes."""

    def __init__(self, path: Path, schema: pa.Schema, constants: dict[str, object], utf8: tuple[str, ...] = ()) -> None:
        self.path = path
        self.utf8 = utf8
        self.schema = schema
        self.constants = {n: pa.scalar(v, schema.field(n).type) for n, v in constants.items()}
        self.fields = [f for f in schema if f.name not in constants]
        self.pending: list[tuple] = []
        self._writer = pq.ParquetWriter(str(path), schema, compression=SPOOL_COMPRESSION)

    def add(self, row: tuple) -> None:
        self.pending.append(row)
        if len(self.pending) == CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        n = len(self.pending)
        columns = dict(zip((f.name for f in self.fields), zip(*self.pending), strict=True))
        self.pending = []
        arrays = []
        for f in self.schema:
            if f.name in self.constants:
                arrays.append(pa.repeat(self.constants[f.name], n))
            elif pa.types.is_timestamp(f.type):
                arrays.append(pa.array(columns[f.name], type=pa.int64()).cast(f.type))  # epoch milliseconds
            elif f.name in self.utf8:
                # UTF-8 bytes (JSON text): checked and taken as text by Arrow, a fifth of the time of decoding each
                arrays.append(pa.array(columns[f.name], type=pa.binary()).cast(f.type))
            else:
                arrays.append(pa.array(columns[f.name], type=f.type))
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.flush()
        self._writer.close()


def parse_day(
    cfg: Config,
    business_date: dt.date,
    spool_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> Batch:
    """Read, map and check every line of the day's files (deduplication happens in the load), spooling the parsed
    lines under ``spool_dir``.

    Once the day holds :data:`PARALLEL_MIN_BYTES` of lines, ``ingest.workers`` parsers (all cores by default: this
    process and the others it starts) share its files: a file of :data:`STRIPE_MIN_BYTES` or more is parsed in
    stripes, one per parser, each reading the whole file and parsing every n-th block of :data:`STRIPE_LINES` lines.
    Line numbers, ledgers and damage are those of a serial read, and the batch lists the files in the same order
    either way.
    """
    _pseudonymizer(cfg)  # a bad privacy setting fails before any process starts
    batch = Batch(ledger=Ledger(business_date))
    root = cfg.landing_path
    files = []
    for index, source in enumerate(cfg.sources):
        for path in day_files(cfg, source, business_date, index=index):
            lines_bytes = path.stat().st_size * (GZIP_RATIO if path.name.endswith(".gz") else 1)
            files.append((source.name, source.format, path, str(path.resolve().relative_to(root)), lines_bytes))
    parsers = cfg.ingest.workers or os.cpu_count() or 1
    size = sum(f[4] for f in files)
    if parsers < 2 or size < PARALLEL_MIN_BYTES:
        parsers = 1
    jobs, weights = [], []
    for name, fmt, path, rel, file_size in files:
        # A file larger than a parser's share is parsed in stripes: whole, it would leave the others idle at the end.
        stripes = parsers if file_size >= max(STRIPE_MIN_BYTES, size / parsers) else 1
        for k in range(stripes):
            n = len(jobs)
            jobs.append((name, fmt, path, rel, spool_dir / f"{n}-events.parquet", spool_dir / f"{n}-quarantine.parquet",
                         (k, stripes, STRIPE_LINES)))
            weights.append(file_size / stripes)
    parsed: dict[int, ParsedFile] = {}
    if parsers > 1 and len(jobs) > 1:
        # The largest jobs are claimed first, so that the parsers finish at about the same time.
        order = sorted(range(len(jobs)), key=lambda n: -weights[n])
        parsed = _parse_in_processes(cfg, business_date, jobs, order, min(parsers, len(jobs)), size, progress)
    for n, job in enumerate(jobs):
        if n not in parsed:
            parsed[n] = _parse_file(cfg, business_date, *job, progress=progress)
    batch.files = [parsed[n] for n in range(len(jobs))]
    ledger = batch.ledger
    for n, job in enumerate(jobs):
        part, k = parsed[n], job[-1][0]
        if k == 0:
            ledger.files.append(FileLedger(part.ledger.source_name, part.ledger.ingest_file, damage=part.ledger.damage))
        whole = ledger.files[-1]  # the stripes of one file are consecutive jobs
        whole.lines_read += part.ledger.lines_read
        whole.events_loaded += part.ledger.events_loaded
        whole.lines_quarantined += part.ledger.lines_quarantined
        for reason, count in part.reasons.items():
            ledger.quarantine_reasons[reason] = ledger.quarantine_reasons.get(reason, 0) + count
    return batch


# The claim counter of a parser process (see _parse_claimed).
_claims = None


def _init_parser(counter) -> None:
    global _claims
    _claims = counter


def _parse_claimed(cfg: Config, business_date: dt.date, jobs: list, order: list[int], counter=None,
                   progress: Callable[[str], None] | None = None) -> list[tuple[int, ParsedFile]]:
    """Parse jobs, in ``order``, until none is left unclaimed; the claims are a counter all parsers share."""
    counter = counter if counter is not None else _claims
    out = []
    while True:
        with counter.get_lock():
            claimed = counter.value
            if claimed >= len(order):
                return out
            counter.value = claimed + 1
        n = order[claimed]
        out.append((n, _parse_file(cfg, business_date, *jobs[n], progress=progress)))


def _parse_in_processes(cfg: Config, business_date: dt.date, jobs: list, order: list[int], parsers: int, size: float,
                        progress: Callable[[str], None] | None) -> dict[int, ParsedFile]:
    """The jobs parsed by this process and ``parsers - 1`` others, each claiming the next job when it is free: this
    process starts at once, the others once they have started (about a second: spawned, they import the package).
    Returns the parsed jobs by index; a job a parser process claimed and did not finish (it died) is missing."""
    if progress:
        progress(f"  reading {plural(len(jobs), 'file part')} (about {size / 1e6:,.0f} MB of lines) with {parsers} processes")
    started = time.monotonic()
    # spawn: this process may hold warehouse connections and threads a fork would copy mid-state.
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0)
    pool = ProcessPoolExecutor(parsers - 1, mp_context=context, initializer=_init_parser, initargs=(counter,))
    parsed: dict[int, ParsedFile] = {}
    try:
        futures = [pool.submit(_parse_claimed, cfg, business_date, jobs, order) for _ in range(parsers - 1)]
        if PARENT_PARSES:
            parsed.update(_parse_claimed(cfg, business_date, jobs, order, counter, progress))
        if len(parsed) < len(jobs):  # the other parsers claimed some: wait for them
            for future in futures:
                try:
                    for n, part in future.result():
                        parsed[n] = part
                        if progress:
                            lines = part.ledger.lines_read
                            progress(f"  read {part.ledger.ingest_file}{_stripe_label(jobs[n][-1])}: {plural(lines, 'line')} in "
                                     f"{duration(part.seconds)} ({rate(lines, part.seconds, 'lines')})")
                except BrokenProcessPool as exc:
                    # A parser process died (killed, out of memory, or a caller's script without a __main__ guard,
                    # which spawned processes re-run): its jobs are read again in this process.
                    log.warning("a parser process failed (%s); reading its files in this process", exc)
                    if progress:
                        progress("  the parser processes failed; reading the rest of the day's files in this process")
                    break
    finally:
        # A parser still starting when every job is done claims none and exits: nothing waits for it.
        pool.shutdown(wait=False, cancel_futures=True)
    if progress:
        lines = sum(p.ledger.lines_read for p in parsed.values())
        elapsed = time.monotonic() - started
        progress(f"  read {plural(lines, 'line')} in {duration(elapsed)} ({rate(lines, elapsed, 'lines')})")
    return parsed


def _stripe_label(stripe: tuple[int, int, int]) -> str:
    k, n, _ = stripe
    return f" (part {k + 1} of {n})" if n > 1 else ""


def _parse_file(
    cfg: Config,
    business_date: dt.date,
    source_name: str,
    source_format: str,
    path: Path,
    rel: str,
    events_path: Path,
    quarantine_path: Path,
    stripe: tuple[int, int, int] = (0, 1, 0),
    progress: Callable[[str], None] | None = None,
) -> ParsedFile:
    """Parse one file: every line mapped and checked, spooled as an event or a quarantined line. ``stripe`` (k, n, size):
    only the lines of every n-th block of ``size`` lines, from block k (the ledger counts those)."""
    started = time.monotonic()
    ctx = _Context(cfg, business_date)
    privacy = _pseudonymizer(cfg)
    parse = get_adapter(source_format)
    # The fast path maps ids as sent; pseudonymised ids go through parse_line and the privacy settings.
    fast = None if privacy.active or not FAST_PATH else get_fast_mapper(source_format)
    fl = FileLedger(source_name, rel)
    reasons: dict[str, int] = {}
    constants = {"load_date": business_date, "ingest_file": rel, "source_format": source_format, "source_name": source_name}
    events = _Spool(events_path, RAW_EVENT_SCHEMA, constants, utf8=("properties",))
    quarantined = _Spool(quarantine_path, QUARANTINE_SCHEMA, constants)
    meter = Meter(progress, f"read {rel}{_stripe_label(stripe)}", "line")
    part, parts, block = stripe
    lines = FileLines(path)
    # The loop allocates millions of dicts and tuples and makes no reference cycles, which is all the cyclic
    # collector is for: its passes over the rows waiting in the spools cost about 8 % of a file's time.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for number, raw in lines:
            if parts > 1 and (number - 1) // block % parts != part:
                continue
            fl.lines_read += 1
            meter.add()
            row = ctx.fast_row(fast, raw, number) if fast is not None else None
            if row is None:
                try:
                    row = line_row(ctx, parse, privacy, raw, number)
                except LineError as err:
                    fl.lines_quarantined += 1
                    reasons[err.reason] = reasons.get(err.reason, 0) + 1
                    # (QUARANTINE_SCHEMA's columns, but the constants)
                    quarantined.add((number, err.reason, err.detail[:500],
                                     _withheld(number) if privacy.withholds_raw_text else _raw_text(raw)))
                    continue
            fl.events_loaded += 1  # until the load counts the duplicates among them
            events.add(row)
    finally:
        if collecting:
            gc.enable()
        events.close()
        quarantined.close()
    fl.damage = lines.damage
    if progress:
        progress(f"  {meter.done()}")
    return ParsedFile(fl, reasons, events_path, quarantine_path, time.monotonic() - started)


def line_row(ctx: _Context, parse: Callable[[bytes], CanonicalEvent], privacy: Pseudonymizer, raw: bytes,
             number: int) -> tuple:
    """The spooled row of one line (RAW_EVENT_SCHEMA's columns, but the constants; the properties as UTF-8 JSON
    bytes), through the adapter's ``parse_line`` and every check; LineError when the line is quarantined."""
    if len(raw) > ctx.max_line:
        raise LineError(VALUE_TOO_LONG, f"line of {len(raw)} bytes > {ctx.max_line}")
    ev = parse(raw)
    received, local, props_json = ctx.check(ev)
    if privacy.active:  # after the checks, which judge the ids as sent
        props_json = _pseudonymized(privacy, ev)
    return (ev.event_id, ev.event_name, ev.distinct_id, ev.event_time_ms, local, received, ev.app_id, ev.platform,
            ev.app_version, ev.channel, ev.session_id, props_json, ev.is_activity, ev.link_anonymous_id,
            ev.link_login_id, number)


def _pseudonymizer(cfg: Config) -> Pseudonymizer:
    try:
        return Pseudonymizer(cfg.privacy)
    except PrivacyError as exc:
        raise IngestError(str(exc)) from None


def _pseudonymized(privacy: Pseudonymizer, ev: CanonicalEvent) -> bytes:
    """Apply the privacy settings to a checked event; return its properties' JSON text."""
    privacy.apply(ev)
    return canonical_json(ev.properties)


def _withheld(number: int) -> str:
    return f"[raw text withheld: ids are pseudonymised; see line {number} of the landing file]"


# -- deduplication across load dates -----------------------------------------
#
# A copy of an event is a duplicate when another copy of the same event id from the same source was received before
# it (ordered by receipt time, then load date, file and line) and was loaded within ingest.lookback_days of it. The
# copies that are not duplicates are in raw.events, the others in raw.duplicates. That is a function of the copies
# loaded, whatever order the dates were loaded in: a load re-judges every copy of its event ids within the window
# (which a copy it adds or removes can change), and a rerun that removes the copy that counted brings back the next.

_COLUMNS = ", ".join(RAW_EVENT_SCHEMA.names)

_EARLIER_COPY = """
    exists (
        select 1
        from pool as q
        where q.source_name = p.source_name
            and q.event_id = p.event_id
            and q.load_date between p.load_date - cast(:lookback as integer) and p.load_date + cast(:lookback as integer)
            and (
                q.received_at < p.received_at
                or (q.received_at = p.received_at and q.load_date < p.load_date)
                or (q.received_at = p.received_at and q.load_date = p.load_date
                    and q.ingest_file collate "C" < p.ingest_file collate "C")
                or (q.received_at = p.received_at and q.load_date = p.load_date
                    and q.ingest_file = p.ingest_file and q.ingest_line < p.ingest_line)
            )
    )
"""

# The load_date window around :d within which copies of one event id are judged together (``t`` is the table).
_WINDOW = "t.load_date between cast(:d as date) - cast(:lookback as integer) and cast(:d as date) + cast(:lookback as integer)"
# Copies (rows of raw.events or raw.duplicates) of the load's event ids on other dates within the window, the copies
# the load re-judges. The window is written out so that PostgreSQL reads its dates through the load_date index, not
# the whole history; and no OR around the EXISTS: PostgreSQL cannot make an EXISTS under an OR a join, and ran it as
# a scan of load_keys per stored row, quadratic in the day (5.2M demo events: the second date, after a first of
# 363,423 events, ran for over 30 minutes).
_OTHER_DATES_TOUCHED = f"""
    {_WINDOW}
    and t.load_date <> :d
    and exists (select 1 from load_keys as k where k.source_name = t.source_name and k.event_id = t.event_id)
"""
# Rows a load of :d can change: its own, and the copies it re-judges (Trino's partition rewrite keeps the others).
_TOUCHED = f"load_date = :d or ({_OTHER_DATES_TOUCHED})"


def _temp(wh: Warehouse, conn, name: str, select_sql: str, params: dict | None = None) -> None:
    wh.execute(conn, f"drop table if exists {name}")
    wh.execute(conn, f"create temporary table {name} as {select_sql}", params)
    if wh.dialect == "postgres":
        # A temporary table has no statistics until analysed (autovacuum never analyses it), and the joins below are
        # planned from them.
        wh.execute(conn, f"analyze {name}")


# A copy's identity (one line of one landing file loaded on one date) and the columns deduplication reads: the
# re-judging works on these alone, so the day's rows are never copied whole into temporary tables.
_KEY = ("source_name", "load_date", "ingest_file", "ingest_line")
_JUDGE_COLUMNS = "source_name, event_id, load_date, received_at, ingest_file, ingest_line"
# What the changed pairs and the identity links read of an added or removed copy.
_CHANGE_COLUMNS = "distinct_id, event_date, link_anonymous_id, link_login_id, load_date"


def _same_copy(a: str, b: str) -> str:
    return " and ".join(f"{a}.{c} = {b}.{c}" for c in _KEY)


def _load_events(wh: Warehouse, conn, business_date: dt.date, lookback: int, batch: Batch) -> None:
    """Replace the copies loaded for ``business_date``, re-judge every copy of their event ids inside the window,
    and leave the changed (user, event date) pairs in the temporary table ``changed_pairs``.

    Memory: on DuckDB the day's parsed rows are read from the spool files where they are (``incoming`` is a view of
    them); every temporary table holds the few columns deduplication and the change record need, never whole rows.
    """
    from cohortflow.models import create_views

    create_views(wh, conn)
    params = {"d": business_date, "lookback": lookback}
    _stage_incoming(wh, conn, batch)
    _temp(
        wh,
        conn,
        "load_keys",
        "select distinct source_name, event_id from incoming "
        "union select source_name, event_id from raw.events where load_date = :d "
        "union select source_name, event_id from raw.duplicates where load_date = :d",
        params,
    )
    # Every copy that can matter: the window on both sides of every copy re-judged. origin: 0 the day's new copies,
    # 1 a stored copy that counts (raw.events), 2 a stored duplicate (raw.duplicates). A new copy whose event id has
    # no other copy in the day and none stored in the window counts, without judging: only event ids with several
    # copies enter the pool (on a normal day, the few retries).
    wide = {**params, "lookback": 2 * lookback}
    _temp(
        wh,
        conn,
        "stored_copies",
        f"select {_JUDGE_COLUMNS}, 1 as origin from raw.events as t where {_OTHER_DATES_TOUCHED} "
        f"union all select {_JUDGE_COLUMNS}, 2 from raw.duplicates as t where {_OTHER_DATES_TOUCHED}",
        wide,
    )
    _temp(
        wh,
        conn,
        "several_copies",
        "select source_name, event_id from incoming group by source_name, event_id having count(*) > 1 "
        "union select source_name, event_id from stored_copies",
    )
    _temp(
        wh,
        conn,
        "pool",
        f"select {_JUDGE_COLUMNS}, 0 as origin from incoming as i where exists "
        "(select 1 from several_copies as s where s.source_name = i.source_name and s.event_id = i.event_id) "
        f"union all select {_JUDGE_COLUMNS}, origin from stored_copies",
    )
    _temp(
        wh,
        conn,
        "judged",
        f"select p.source_name, p.load_date, p.ingest_file, p.ingest_line, p.origin, {_EARLIER_COPY} as is_duplicate "
        "from pool as p "
        "where p.load_date between cast(:d as date) - cast(:lookback as integer) and cast(:d as date) + cast(:lookback as integer)",
        params,
    )
    # Stored copies of other dates whose judgement flips (their rows are unchanged otherwise).
    _temp(wh, conn, "to_duplicates", "select source_name, load_date, ingest_file, ingest_line from judged where origin = 1 and is_duplicate")
    _temp(wh, conn, "to_events", "select source_name, load_date, ingest_file, ingest_line from judged where origin = 2 and not is_duplicate")
    _temp(wh, conn, "new_duplicates", "select source_name, load_date, ingest_file, ingest_line from judged where origin = 0 and is_duplicate")
    new_winners = (
        f"select {', '.join('i.' + c for c in RAW_EVENT_SCHEMA.names)} from incoming as i "
        f"where not exists (select 1 from new_duplicates as j where {_same_copy('j', 'i')})"
    )
    flipped = "exists (select 1 from {moved} as m where " + _same_copy("m", "t") + ")"
    # The copies that stop or start counting: the flipped ones, and the date's own whose rows differ from the
    # previous load of the date (compared whole, only when the date was loaded before).
    loaded_before = wh.scalar(conn, "select count(*) from raw.events where load_date = :d", params) > 0
    removed = f"select {_CHANGE_COLUMNS} from raw.events as t where {flipped.format(moved='to_duplicates')}"
    added = f"select {_CHANGE_COLUMNS} from raw.duplicates as t where {flipped.format(moved='to_events')}"
    if loaded_before:
        old_winners = f"select {_COLUMNS} from raw.events where load_date = :d"
        removed += f" union all select {_CHANGE_COLUMNS} from ({old_winners} except {new_winners}) as r"
        added += f" union all select {_CHANGE_COLUMNS} from ({new_winners} except {old_winners}) as a"
    else:
        added += f" union all select {_CHANGE_COLUMNS} from ({new_winners}) as a"
    _temp(wh, conn, "removed", removed, params)
    _temp(wh, conn, "added", added, params)
    # Identity: the ids whose link rows changed; their mapping before the change.
    _temp(
        wh,
        conn,
        "link_ids",
        "select link_anonymous_id as id from removed where link_anonymous_id is not null "
        "union select link_login_id from removed where link_login_id is not null "
        "union select link_anonymous_id from added where link_anonymous_id is not null "
        "union select link_login_id from added where link_login_id is not null",
    )
    _temp(
        wh,
        conn,
        "map_before",
        "select i.anonymous_id, i.login_id from models.stg_identities as i "
        "where exists (select 1 from link_ids where link_ids.id = i.anonymous_id)",
    )
    _temp(
        wh,
        conn,
        "changed_pairs",
        "select distinct coalesce(i.login_id, r.distinct_id) as user_id, r.event_date "
        "from removed as r left join models.stg_identities as i on i.anonymous_id = r.distinct_id",
    )
    # The change itself: the date's copies replaced, the flipped copies moved between the tables.
    if wh.trino is not None:
        _replace_touched_partitions(wh, conn, params)
    else:
        for table, other, moved in (("raw.events", "raw.duplicates", "to_duplicates"), ("raw.duplicates", "raw.events", "to_events")):
            wh.execute(conn, f"insert into {other} ({_COLUMNS}) select {_COLUMNS} from {table} as t where {flipped.format(moved=moved)}")
        for table, moved in (("raw.events", "to_duplicates"), ("raw.duplicates", "to_events")):
            # (two statements, not one with "or": PostgreSQL plans that as a scan of the whole table)
            wh.execute(conn, f"delete from {table} where load_date = :d", params)
            wh.execute(conn, f"delete from {table} as t where {flipped.format(moved=moved)}")
        if wh.dialect == "postgres":
            # The day's copies go straight to their tables from incoming (analysed, so the anti-join is planned on
            # its size). Moving the duplicates out of raw.events after inserting the day there, as on DuckDB, was
            # planned on raw.events' statistics from before the day arrived (one row for the date): a nested loop
            # over the day's rows, 1.4 s per statement for a day of 32,000 events.
            new_duplicate = flipped.format(moved="new_duplicates")
            wh.execute(conn, f"insert into raw.events ({_COLUMNS}) select {_COLUMNS} from incoming as t where not {new_duplicate}")
            wh.execute(conn, f"insert into raw.duplicates ({_COLUMNS}) select {_COLUMNS} from incoming as t where {new_duplicate}")
        else:
            # The day's copies go in whole (a plain scan, no join over the day), then its few duplicates move.
            wh.execute(conn, f"insert into raw.events ({_COLUMNS}) select {_COLUMNS} from incoming")
            day_duplicate = f"t.load_date = :d and {flipped.format(moved='new_duplicates')}"
            wh.execute(conn, f"insert into raw.duplicates ({_COLUMNS}) select {_COLUMNS} from raw.events as t where {day_duplicate}", params)
            wh.execute(conn, f"delete from raw.events as t where {day_duplicate}", params)
    _temp(
        wh,
        conn,
        "map_after",
        "select i.anonymous_id, i.login_id from models.stg_identities as i "
        "where exists (select 1 from link_ids where link_ids.id = i.anonymous_id)",
    )
    # Ids whose login id changed (linked, unlinked or moved): every event of theirs changes user.
    _temp(
        wh,
        conn,
        "relinked",
        "select l.id, b.login_id as login_before, a.login_id as login_after "
        "from link_ids as l "
        "left join map_before as b on b.anonymous_id = l.id "
        "left join map_after as a on a.anonymous_id = l.id "
        "where coalesce(b.login_id, l.id) <> coalesce(a.login_id, l.id)",
    )
    wh.execute(
        conn,
        """
        insert into changed_pairs (user_id, event_date)
        select coalesce(i.login_id, a.distinct_id), a.event_date
        from added as a
        left join models.stg_identities as i on i.anonymous_id = a.distinct_id
        union
        select coalesce(r.login_before, r.id), e.event_date
        from raw.events as e
        inner join relinked as r on r.id = e.distinct_id
        union
        select coalesce(r.login_after, r.id), e.event_date
        from raw.events as e
        inner join relinked as r on r.id = e.distinct_id
        """,
    )
    for name in ("stored_copies", "several_copies", "pool", "judged", "to_duplicates", "to_events", "new_duplicates",
                 "map_before", "map_after"):
        wh.execute(conn, f"drop table {name}")
    _unstage_incoming(wh, conn)


def _stage_incoming(wh: Warehouse, conn, batch: Batch) -> None:
    """``incoming``: the day's parsed rows. DuckDB reads them from the spool files in place (a view of the Parquet
    files); the other engines load them into a temporary table."""
    if wh.dialect == "duckdb" and wh.trino is None:
        paths = [str(p.events) for p in batch.files]
        raw = conn.connection.driver_connection
        if paths:
            # DuckDB's reader, through a relation: the paths are values, never SQL text. It expands glob characters
            # (a project folder may hold "[" or "*"), but a pattern can match no other file: the spool folder's name
            # is unique to this process, and a pattern matching nothing is read as the literal path.
            raw.read_parquet(paths).create_view("incoming_spool", replace=True)
        else:
            raw.register("incoming_spool", RAW_EVENT_SCHEMA.empty_table())
        wh.execute(conn, "drop view if exists incoming")
        casts = ", ".join(
            f"cast({f.name} as timestamp) as {f.name}" if pa.types.is_timestamp(f.type) else f.name for f in RAW_EVENT_SCHEMA
        )
        wh.execute(conn, f"create temporary view incoming as select {casts} from incoming_spool")
        return
    wh.execute(conn, "drop table if exists incoming")
    wh.execute(conn, f"create temporary table incoming as select {_COLUMNS} from raw.events where 1 = 0")
    wh.load_batches(conn, "incoming", RAW_EVENT_SCHEMA, batch.event_batches())
    if wh.dialect == "postgres":
        wh.execute(conn, "analyze incoming")


def _unstage_incoming(wh: Warehouse, conn) -> None:
    if wh.dialect == "duckdb" and wh.trino is None:
        wh.execute(conn, "drop view incoming")
        conn.connection.driver_connection.unregister("incoming_spool")
    else:
        wh.execute(conn, "drop table incoming")


def _replace_touched_partitions(wh: Warehouse, conn, params: dict) -> None:
    """The change on Trino, whose Hive tables delete whole partitions only (and take one write per partition in a
    transaction): every load_date partition holding a touched row (the date's own, and those of the copies re-judged:
    the load dates of ``judged``) is rewritten whole, with its untouched rows and the judged ones (whole rows: every
    copy of the day, and the stored ones re-judged)."""
    cols = ", ".join("c." + c for c in RAW_EVENT_SCHEMA.names)
    _temp(
        wh,
        conn,
        "judged_rows",
        f"select {cols}, n.load_date is not null as is_duplicate from incoming as c left join new_duplicates as n on {_same_copy('n', 'c')} "
        f"union all select {cols}, j.is_duplicate from raw.events as c join judged as j on j.origin = 1 and {_same_copy('j', 'c')} "
        f"union all select {cols}, j.is_duplicate from raw.duplicates as c join judged as j on j.origin = 2 and {_same_copy('j', 'c')}",
    )
    dates = [
        r[0] for r in wh.execute(conn, "select distinct load_date from judged union select cast(:d as date)", params).fetchall()
    ]
    for table, judged in (("raw.events", "not is_duplicate"), ("raw.duplicates", "is_duplicate")):
        wh.trino.rewrite_partitions(
            conn, table, _COLUMNS, "load_date", dates, f"not ({_TOUCHED})", f"select {_COLUMNS} from judged_rows where {judged}",
            params, kept="kept", key="ld",
        )
    wh.execute(conn, "drop table judged_rows")


def _record_change(
    wh: Warehouse,
    conn,
    business_date: dt.date,
    run_id: str,
    kind: str,
    now: dt.datetime,
    rebuild: tuple[dt.date, dt.date] | None = None,
) -> int:
    """A new change id, in commit order (a writer holds the lock until its transaction ends); ``rebuild``: the range a
    requested rebuild rebuilds."""
    wh.lock(conn, "cohortflow:changes")
    change_id = int(wh.scalar(conn, "select coalesce(max(change_id), 0) + 1 from meta.change_log"))
    start, end = rebuild if rebuild is not None else (None, None)
    wh.execute(
        conn,
        "insert into meta.change_log (change_id, business_date, kind, run_id, rebuild_start, rebuild_end, created_at) "
        "values (:c, :d, :k, :r, cast(:s as date), cast(:e as date), :t)",
        {"c": change_id, "d": business_date, "k": kind, "r": run_id, "s": start, "e": end, "t": now},
    )
    return change_id


def _recount_ledgers(wh: Warehouse, conn, business_date: dt.date, ledger: Ledger, now: dt.datetime, run_id: str) -> None:
    """The ledger of the date (and of every other date whose copies changed status): loaded and duplicate counts come
    from the tables, so they stay exact whichever load decided them."""
    counts = {
        (r[0], r[1]): (int(r[2]), int(r[3]))
        for r in wh.execute(
            conn,
            """
            select load_date, ingest_file, sum(is_loaded), sum(1 - is_loaded)
            from (
                select load_date, ingest_file, 1 as is_loaded from raw.events as t where t.load_date in (select load_date from touched_dates)
                union all
                select load_date, ingest_file, 0 as is_loaded from raw.duplicates as t where t.load_date in (select load_date from touched_dates)
            ) as copies
            group by load_date, ingest_file
            """,
        ).fetchall()
    }
    for f in ledger.files:
        loaded, dups = counts.get((business_date, f.ingest_file), (0, 0))
        f.events_loaded, f.duplicates_removed = loaded, dups
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
                "damage": f.damage,
            }
            for f in ledger.files
        ],
        schema=LEDGER_SCHEMA,
    )
    wh.load_arrow(conn, "meta.ingest_ledger", ledger_rows)
    # Other dates: a copy of theirs became (or stopped being) the one that counts.
    if wh.trino is not None:
        _recount_other_ledgers_trino(wh, conn, business_date, counts)
        return
    for (load_date, ingest_file), (loaded, dups) in counts.items():
        if load_date == business_date:
            continue
        wh.execute(
            conn,
            "update meta.ingest_ledger set events_loaded = :loaded, duplicates_removed = :dups "
            "where load_date = :ld and ingest_file = :f",
            {"loaded": loaded, "dups": dups, "ld": load_date, "f": ingest_file},
        )


def _recount_other_ledgers_trino(wh: Warehouse, conn, business_date: dt.date, counts: dict) -> None:
    """The UPDATE of the other dates' ledger rows on Trino: each of their load_date partitions overwritten once (a
    Hive partition takes one write per transaction) with its rows, the counts of the recounted files replaced."""
    others = {k: v for k, v in counts.items() if k[0] != business_date}
    if not others:
        return
    data = pa.table(
        {
            "load_date": pa.array([k[0] for k in others], type=pa.date32()),
            "ingest_file": pa.array([k[1] for k in others], type=pa.string()),
            "loaded": pa.array([v[0] for v in others.values()], type=pa.int64()),
            "dups": pa.array([v[1] for v in others.values()], type=pa.int64()),
        }
    )
    dates = sorted({k[0] for k in others})
    listed = ", ".join(f":ld{i}" for i in range(len(dates)))
    cols = LEDGER_SCHEMA.names
    select = ", ".join(
        "coalesce(c.loaded, l.events_loaded)" if c == "events_loaded"
        else "coalesce(c.dups, l.duplicates_removed)" if c == "duplicates_removed"
        else f"l.{c}"
        for c in cols
    )
    with wh.staged(conn, "ledger_counts", "meta.ingest_ledger", data) as staged:
        wh.trino.overwrite(
            conn,
            wh.render(
                f"insert into meta.ingest_ledger ({', '.join(cols)}) select {select} from meta.ingest_ledger as l "
                f"left join {staged} as c on c.load_date = l.load_date and c.ingest_file = l.ingest_file "
                f"where l.load_date in ({listed})"
            ),
            {f"ld{i}": d for i, d in enumerate(dates)},
        )


def load_day(
    wh: Warehouse,
    cfg: Config,
    business_date: dt.date,
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> Ledger:
    """Parse the day's files and replace what this business date loaded, in one transaction.

    The transaction also records the load as a change (``meta.change_log``) with the (user, event date) pairs it
    added, removed or re-attributed (``meta.changed_pairs``): the models rebuild exactly what those can change.
    """
    with scratch_folder(cfg.target_path, SPOOL_PREFIX) as spool:
        batch = parse_day(cfg, business_date, spool, progress)
        return _load_batch(wh, cfg, business_date, run_id, batch)


SPOOL_PREFIX = ".ingest-spool-"


@contextmanager
def _load_memory(wh: Warehouse, cfg: Config) -> Iterator[None]:
    """DuckDB's memory limit lowered to ``ingest.memory_limit`` for the load, its commit included, and put back.

    DuckDB caches up to its limit (80 % of RAM by default) and the load writes the whole day: without a bound its
    memory grew with the day (at 2,981,236 events the commit took the process from 1.2 to 2.8 GB); at 1 GB the
    same load took as long (21.3 s against 19.5 s) and peaked at 1.2 GB. The setting is the database's, not the
    session's: it is put back even when the load fails."""
    limit = cfg.ingest.memory_limit
    own = cfg.warehouse.memory_limit
    if wh.dialect != "duckdb" or wh.trino is not None or limit is None or (own and size_bytes(own) <= size_bytes(limit)):
        yield
        return
    with wh.begin() as conn:
        wh.run(conn, f"set memory_limit = '{limit}'")  # (validated sizes)
    try:
        yield
    finally:
        with wh.begin() as conn:
            wh.run(conn, f"set memory_limit = '{own}'" if own else "reset memory_limit")


def _load_batch(wh: Warehouse, cfg: Config, business_date: dt.date, run_id: str, batch: Batch) -> Ledger:
    with _load_memory(wh, cfg):
        return _load_batch_in(wh, cfg, business_date, run_id, batch)


def _load_batch_in(wh: Warehouse, cfg: Config, business_date: dt.date, run_id: str, batch: Batch) -> Ledger:
    ledger = batch.ledger
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with wh.begin() as conn:
        # Loads wait for each other: a load re-judges copies of its event ids loaded on other dates.
        wh.lock(conn, "cohortflow:ingest")
        if wh.dialect == "postgres":
            # JIT compiled the window's re-judging query for 0.38 s of its 0.66 s (916,221 events loaded); the
            # load's statements are set-based scans JIT does not speed up. For this transaction only.
            wh.run(conn, "select set_config('jit', 'off', true)")
        _load_events(wh, conn, business_date, cfg.ingest.lookback_days, batch)
        _temp(
            wh,
            conn,
            "touched_dates",
            "select distinct load_date from removed union select distinct load_date from added union select cast(:d as date)",
            {"d": business_date},
        )
        for table in ("raw.quarantine", "meta.ingest_ledger"):
            wh.execute(conn, f"delete from {table} where load_date = :d", {"d": business_date})
        wh.load_batches(conn, "raw.quarantine", QUARANTINE_SCHEMA, batch.quarantine_batches())
        _recount_ledgers(wh, conn, business_date, ledger, now, run_id)
        if wh.dialect == "postgres":
            # Fresh statistics for the next load's duplicate check and tonight's models: autovacuum analyses
            # raw.events only after enough changes, and with stale counts a demo night's ingest took 27 s, not 0.5 s.
            wh.execute(conn, "analyze raw.events")
        checkpoint("ingest", cfg.target_path)
        change_id = _record_change(wh, conn, business_date, run_id, "load", now)
        wh.execute(
            conn,
            "insert into meta.changed_pairs (change_id, user_id, event_date) "
            "select distinct cast(:c as bigint), user_id, event_date from changed_pairs",
            {"c": change_id},
        )
        ledger.changed_pairs = int(wh.scalar(conn, "select count(*) from (select distinct user_id, event_date from changed_pairs) as p"))
        for name in ("removed", "added", "link_ids", "relinked", "changed_pairs", "load_keys", "touched_dates"):
            wh.execute(conn, f"drop table {name}")
        if not ledger.balanced:
            raise IngestError(f"ledger does not balance for {business_date}; nothing was written")
    return ledger

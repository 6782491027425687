"""The canonical event: what every SDK adapter maps a raw line to.

One raw line becomes exactly one of:

* a :class:`CanonicalEvent` (loaded, or later removed as a duplicate), or
* a :class:`LineError` (quarantined with its reason, the raw text, file and line).

Identity links (anonymous id -> login id) ride on the event that carried them
(Ark ``$alias``, Sensors ``track_signup``, Segment ``alias``/``identify``,
PostHog ``$identify``/``$create_alias``); the event itself is still loaded, as
bookkeeping (``is_activity = False``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

# Reason codes of quarantined lines. Stable: they are stored and reported.
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
INVALID_TIMESTAMP = "invalid_timestamp"
UNSUPPORTED_TYPE = "unsupported_type"
EVENT_AFTER_RECEIPT = "event_after_receipt"
EVENT_IN_FUTURE = "event_in_future"
EVENT_TOO_LATE = "event_too_late"
VALUE_TOO_LONG = "value_too_long"
ENCODING = "invalid_encoding"

REASONS = (
    INVALID_JSON,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_FIELD,
    INVALID_TIMESTAMP,
    UNSUPPORTED_TYPE,
    EVENT_AFTER_RECEIPT,
    EVENT_IN_FUTURE,
    EVENT_TOO_LATE,
    VALUE_TOO_LONG,
    ENCODING,
)

# Epoch milliseconds accepted as event times: 2000-01-01 .. 2100-01-01 UTC.
MIN_EPOCH_MS = 946_684_800_000
MAX_EPOCH_MS = 4_102_444_800_000


class LineError(Exception):
    """A raw line that cannot be used; it goes to quarantine."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class CanonicalEvent:
    """One event after mapping; times are UTC epoch milliseconds."""

    event_id: str
    event_name: str
    distinct_id: str
    event_time_ms: int
    source_format: str
    app_id: str | None = None
    platform: str | None = None
    app_version: str | None = None
    channel: str | None = None
    session_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    # Receipt time when the line carries one (Segment receivedAt, PostHog sent_at ...);
    # otherwise the ingest stamps the end of the arrival date.
    received_at_ms: int | None = None
    # False for identity and profile bookkeeping events.
    is_activity: bool = True
    # (anonymous_id, login_id) when this event links two ids.
    link_anonymous_id: str | None = None
    link_login_id: str | None = None
    # canonical_json(properties), when the adapter computed it already (for the id): the ingest stores it rather
    # than serialising the same properties again. Whoever replaces ``properties`` sets it back to None.
    properties_json: bytes | None = field(default=None, compare=False, repr=False)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys) used for hashing and for storage."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def hashed_event_id(
    app_id: str | None,
    distinct_id: str,
    event_name: str,
    event_time_ms: int,
    properties: dict[str, Any],
) -> str:
    """Event id for sources that send none: identical retried lines collide."""
    return hashed_event_id_of_json(app_id, distinct_id, event_name, event_time_ms, canonical_json(properties))


def hashed_event_id_of_json(
    app_id: str | None, distinct_id: str, event_name: str, event_time_ms: int, properties_json: bytes
) -> str:
    """:func:`hashed_event_id` from the properties' canonical JSON."""
    text = "\x1f".join((app_id or "", distinct_id, event_name, str(event_time_ms))) + "\x1f"
    return "h:" + hashlib.blake2b(text.encode("utf-8", "surrogatepass") + properties_json, digest_size=16).hexdigest()


def source_event_id(*parts: Any) -> str:
    """Event id built from a source's own id (and, where needed, other fields)."""
    if len(parts) == 1:
        return "s:" + str(parts[0])
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(str(part).encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
    return "s:" + h.hexdigest()


def parse_epoch_ms(value: Any, field_name: str) -> int:
    """An epoch in milliseconds (int or digit string) inside the accepted range."""
    if isinstance(value, bool):
        raise LineError(INVALID_TIMESTAMP, f"{field_name} is a boolean")
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise LineError(INVALID_TIMESTAMP, f"{field_name} is not an epoch in milliseconds: {value!r:.80}")
    if not MIN_EPOCH_MS <= value < MAX_EPOCH_MS:
        raise LineError(INVALID_TIMESTAMP, f"{field_name} out of range: {str(value)[:40]}")
    return value


# Columns of raw.events, in order; the ingest builds an Arrow table with this schema.
RAW_EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_name", pa.string()),
        ("distinct_id", pa.string()),
        ("event_time", pa.timestamp("ms")),  # UTC, naive
        ("event_date", pa.date32()),  # in the project time zone
        ("received_at", pa.timestamp("ms")),  # UTC, naive
        ("source_format", pa.string()),
        ("app_id", pa.string()),
        ("platform", pa.string()),
        ("app_version", pa.string()),
        ("channel", pa.string()),
        ("session_id", pa.string()),
        ("properties", pa.string()),  # JSON text, sorted keys
        ("is_activity", pa.bool_()),
        ("link_anonymous_id", pa.string()),
        ("link_login_id", pa.string()),
        ("load_date", pa.date32()),  # business date of the run that loaded it
        ("ingest_file", pa.string()),  # relative to the landing root
        ("ingest_line", pa.int64()),  # 1-based
        # The configured source (sources[].name) the line came from: event ids are unique within a source.
        ("source_name", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("load_date", pa.date32()),
        ("ingest_file", pa.string()),
        ("ingest_line", pa.int64()),
        ("source_format", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_line", pa.string()),
        ("source_name", pa.string()),
    ]
)

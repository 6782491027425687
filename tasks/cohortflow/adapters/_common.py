"""Helpers shared by the SDK adapters: decoding, field checks, times, presets.

Every helper either returns a clean value or raises :class:`LineError` with a
stored reason code and a short ``detail`` (under 200 characters) naming the
field. Nothing here lets any other exception escape for JSON-decoded input.

Conventions used by all adapters:

* A field that is absent, ``null`` or an empty / blank string is *missing*.
* Ids (distinct ids, event ids, session ids, link ids) may be strings or
  integers; integers are converted with ``str``. Booleans, floats, lists and
  objects are rejected as ``invalid_field``.
* Dimension columns taken from preset properties (platform, app version,
  channel, session) are lenient: a string is used as is, a number is
  converted with ``str``, any other type is ignored (the raw value stays in
  ``properties``). A malformed preset property never quarantines an event.
* An identity link whose two ids are equal is dropped (it links nothing).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import orjson

from cohortflow.events import (
    ENCODING,
    INVALID_FIELD,
    INVALID_JSON,
    INVALID_TIMESTAMP,
    MAX_EPOCH_MS,
    MIN_EPOCH_MS,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    CanonicalEvent,
    LineError,
    canonical_json,
    hashed_event_id_of_json,
    parse_epoch_ms,
)

_BOM = b"\xef\xbb\xbf"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DETAIL_VALUE_CHARS = 60

# ISO-8601 date-time: a date, a 'T' (or space) and a time are required;
# seconds, fractional seconds (any number of digits, '.' or ','), and the zone
# ('Z' or +HH:MM / +HHMM / +HH) are optional. No zone means UTC. ASCII digits only.
_ISO_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,
)


def show(value: Any) -> str:
    """A value for a ``detail`` message, cut short."""
    text = repr(value)
    if len(text) > _DETAIL_VALUE_CHARS:
        text = text[: _DETAIL_VALUE_CHARS - 3] + "..."
    return text


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", float: "number", int: "integer"}.get(
        type(value), type(value).__name__
    )


# --------------------------------------------------------------------------- decoding


def load_object(raw: bytes) -> dict[str, Any]:
    """Decode one raw line into a JSON object.

    A leading UTF-8 BOM and surrounding whitespace (including a ``\\r`` left by
    CRLF files) are ignored.
    """
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    elif isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    elif not isinstance(raw, bytes):
        raise LineError(INVALID_JSON, f"line is {type(raw).__name__}, not bytes")
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw.strip():
        raise LineError(INVALID_JSON, "empty line")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise LineError(ENCODING, f"not valid UTF-8 at byte {uexc.start}") from None
        raise LineError(INVALID_JSON, str(exc)[:150]) from None
    if not isinstance(value, dict):
        raise LineError(NOT_AN_OBJECT, f"top-level JSON value is an {_type_name(value)}, expected an object")
    return value


# --------------------------------------------------------------------------- fields


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def present(obj: dict[str, Any], key: str, *, required: bool = False, name: str | None = None) -> Any:
    """The raw value of ``key``, None when missing (or MISSING_FIELD when required)."""
    value = obj.get(key)
    if _is_missing(value):
        if required:
            raise LineError(MISSING_FIELD, f"{name or key} is missing or empty")
        return None
    return value


def coerce_id(value: Any, name: str) -> str | None:
    """An id as a string, or None when missing; ints become strings."""
    if _is_missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise LineError(INVALID_FIELD, f"{name} must be a string or integer, got {_type_name(value)}")


def require_id(obj: dict[str, Any], key: str, name: str | None = None) -> str:
    value = coerce_id(obj.get(key), name or key)
    if value is None:
        raise LineError(MISSING_FIELD, f"{name or key} is missing or empty")
    return value


def optional_id(obj: dict[str, Any], key: str, name: str | None = None) -> str | None:
    return coerce_id(obj.get(key), name or key)


def optional_str(obj: dict[str, Any], key: str, name: str | None = None) -> str | None:
    """A string field, None when missing; any other type is invalid."""
    value = obj.get(key)
    if _is_missing(value):
        return None
    if not isinstance(value, str):
        raise LineError(INVALID_FIELD, f"{name or key} must be a string, got {_type_name(value)}")
    return value


def require_str(obj: dict[str, Any], key: str, name: str | None = None) -> str:
    value = optional_str(obj, key, name)
    if value is None:
        raise LineError(MISSING_FIELD, f"{name or key} is missing or empty")
    return value


def optional_object(obj: dict[str, Any], key: str, name: str | None = None) -> dict[str, Any]:
    """An object field, ``{}`` when absent or null; any other type is invalid."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LineError(INVALID_FIELD, f"{name or key} must be an object, got {_type_name(value)}")
    return value


def optional_bool(obj: dict[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise LineError(INVALID_FIELD, f"{key} must be a boolean, got {_type_name(value)}")
    return value


# --------------------------------------------------------------------------- times


def epoch_ms(value: Any, name: str) -> int:
    """Epoch milliseconds (int, integral float or ASCII digit string) in the accepted range."""
    if isinstance(value, str):
        stripped = value.strip()
        # str.isdigit() is also true for non-ASCII digits such as '²', which int() rejects.
        if not (stripped.isascii() and stripped.isdigit()):
            raise LineError(INVALID_TIMESTAMP, f"{name} is not an epoch in milliseconds: {show(value)}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not MIN_EPOCH_MS <= value < MAX_EPOCH_MS:
        # parse_epoch_ms would print the whole number, which can be 300 digits long.
        raise LineError(INVALID_TIMESTAMP, f"{name} out of range (2000-01-01..2100-01-01 UTC): {show(value)}")
    return parse_epoch_ms(value, name)


def iso_ms(value: Any, name: str) -> int:
    """An ISO-8601 date-time string as UTC epoch milliseconds (sub-ms digits truncated)."""
    if not isinstance(value, str):
        raise LineError(INVALID_TIMESTAMP, f"{name} must be an ISO-8601 string, got {_type_name(value)}")
    m = _ISO_RE.fullmatch(value.strip())
    if m is None:
        raise LineError(INVALID_TIMESTAMP, f"{name} is not an ISO-8601 date-time: {show(value)}")
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    fraction = m.group(7) or ""
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise LineError(INVALID_TIMESTAMP, f"{name} has an invalid date: {show(value)}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise LineError(INVALID_TIMESTAMP, f"{name} has an invalid time of day: {show(value)}")
    offset_ms = 0
    if m.group(8) is None and m.group(9) is not None:
        off_h, off_m = int(m.group(10)), int(m.group(11) or 0)
        if off_h > 23 or off_m > 59:
            raise LineError(INVALID_TIMESTAMP, f"{name} has an invalid UTC offset: {show(value)}")
        offset_ms = (off_h * 3600 + off_m * 60) * 1000 * (1 if m.group(9) == "+" else -1)
    ms = (days * 86_400 + hour * 3600 + minute * 60 + second) * 1000 + int((fraction + "000")[:3])
    return check_range(ms - offset_ms, name)


def time_ms(value: Any, name: str) -> int:
    """Epoch milliseconds (number or digit string) or an ISO-8601 string."""
    if isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit()):
        return iso_ms(value, name)
    return epoch_ms(value, name)


def check_range(ms: int, name: str) -> int:
    if not MIN_EPOCH_MS <= ms < MAX_EPOCH_MS:
        raise LineError(INVALID_TIMESTAMP, f"{name} out of range (2000-01-01..2100-01-01 UTC): {show(ms)}")
    return ms


# --------------------------------------------------------------------------- presets


def first_value(*values: Any) -> str | None:
    """The first usable dimension value (lenient, see module doc), else None."""
    for value in values:
        if isinstance(value, str):
            if value.strip():
                return value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def dimension(props: dict[str, Any], *keys: str) -> str | None:
    """The first usable value among preset properties ``keys`` (:func:`first_value` of their values, written out:
    it runs four times for every line)."""
    for key in keys:
        value = props.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            if value.strip():
                return value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def nested(obj: Any, *path: str) -> Any:
    """``obj[p0][p1]...`` or None when any level is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def link(anonymous_id: str | None, login_id: str | None) -> tuple[str | None, str | None]:
    """An (anonymous, login) pair, or (None, None) when incomplete or self-referencing."""
    if anonymous_id is None or login_id is None or anonymous_id == login_id:
        return None, None
    return anonymous_id, login_id


# --------------------------------------------------------------------------- event ids


def preset_dimensions(
    props: dict[str, Any], platform: tuple[str, ...], session_id: tuple[str, ...] = ("$session_id",)
) -> dict[str, str | None]:
    """The dimension columns taken from preset properties: ``platform`` and ``session_id`` from the first usable of
    their keys, app version ``$app_version``, channel ``$channel``."""
    return {
        "platform": dimension(props, *platform),
        "app_version": dimension(props, "$app_version"),
        "channel": dimension(props, "$channel"),
        "session_id": dimension(props, *session_id),
    }


def new_event(
    source_format: str,
    event_name: str,
    distinct_id: str,
    event_time_ms: int,
    properties: dict[str, Any],
    *,
    source_id: str | None = None,
    link_ids: tuple[str | None, str | None] = (None, None),
    **columns: Any,
) -> CanonicalEvent:
    """The canonical event of one line, with its id set by :func:`finish` (``source_id``: the source's own id, if
    any); ``link_ids``: the (anonymous, login) pair it links; ``columns``: the other optional columns."""
    anonymous_id, login_id = link_ids
    event = CanonicalEvent(
        event_id="",
        event_name=event_name,
        distinct_id=distinct_id,
        event_time_ms=event_time_ms,
        source_format=source_format,
        properties=properties,
        link_anonymous_id=anonymous_id,
        link_login_id=login_id,
        **columns,
    )
    return finish(event, source_id)


def finish(event: CanonicalEvent, source_id: str | None) -> CanonicalEvent:
    """Set the event id: the source's when given, else the deterministic hash; and the properties' canonical JSON
    (serialised once: for the hash, and for the ingest to store)."""
    try:
        event.event_id, event.properties_json = id_and_json(
            event.app_id, event.distinct_id, event.event_name, event.event_time_ms, event.properties, source_id
        )
    except orjson.JSONEncodeError:
        raise LineError(INVALID_FIELD, "properties nest too deeply to serialise") from None
    return event


def id_and_json(app_id: str | None, distinct_id: str, event_name: str, event_time_ms: int,
                properties: dict[str, Any], source_id: str | None) -> tuple[str, bytes]:
    """(event id, properties' canonical JSON): the source's id when given, else the hash of the content."""
    props_json = canonical_json(properties)
    if source_id is not None:
        return source_id, props_json
    return hashed_event_id_of_json(app_id, distinct_id, event_name, event_time_ms, props_json), props_json


# --------------------------------------------------------------------------- the fast path
#
# Each adapter also has ``map_fast(obj)``: the mapping of the common clean line (every field of the type the SDK
# sends, no identity link), without building a CanonicalEvent. It returns the mapped row (see :data:`MAPPED`) or
# raises :class:`Unusual` (or LineError, or orjson.JSONEncodeError) for anything else; the ingest then judges the line
# with ``parse_line``, which alone says why a line is quarantined. So the fast path never decides a reason: it only
# has to give, for the lines it takes, exactly what ``parse_line`` gives (``tests/unit/test_fast_path.py``).

# The mapped row: (event_id, event_name, distinct_id, event_time_ms, received_at_ms or None, app_id, platform,
# app_version, channel, session_id, properties' canonical JSON (bytes), is_activity, link_anonymous_id, link_login_id).
MAPPED = ("event_id", "event_name", "distinct_id", "event_time_ms", "received_at_ms", "app_id", "platform",
          "app_version", "channel", "session_id", "properties_json", "is_activity", "link_anonymous_id", "link_login_id")


class Unusual(Exception):
    """A line the fast path leaves to ``parse_line``. Raised as a new instance each time: an instance raised again
    keeps the traceback of every raise before (and each frame's locals, the decoded line among them), which grew
    the ingest's memory with the lines it declined."""


def fast_required(value: Any) -> str:
    """A required name or id that is a non-blank string; anything else is :class:`Unusual`."""
    if type(value) is str and value.strip():
        return value
    raise Unusual


def fast_text(value: Any) -> str | None:
    """:func:`optional_str` of a string or null; anything else is :class:`Unusual`."""
    if value is None:
        return None
    if type(value) is str:
        return value if value.strip() else None
    raise Unusual


def fast_id(value: Any) -> str | None:
    """:func:`optional_id` of a string, an integer or null; anything else is :class:`Unusual`."""
    if type(value) is int:
        return str(value)
    return fast_text(value)


def fast_object(value: Any) -> dict[str, Any]:
    """:func:`optional_object` of an object or null; anything else is :class:`Unusual`."""
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise Unusual


def fast_epoch(value: Any) -> int:
    """An epoch in milliseconds sent as an integer in the accepted range; anything else is :class:`Unusual`."""
    if type(value) is int and MIN_EPOCH_MS <= value < MAX_EPOCH_MS:
        return value
    raise Unusual


def fast_iso(value: Any) -> int:
    """:func:`iso_ms` of the shape SDKs send (``YYYY-MM-DDTHH:MM:SS.fffZ``), read by ``datetime.fromisoformat``;
    any other text or type is :class:`Unusual` (or LineError for an impossible date, which ``iso_ms`` rejects too)."""
    if type(value) is not str or len(value) != 24 or value[10] != "T" or value[19] != "." or value[23] != "Z" \
            or not value.isascii():  # (fromisoformat reads only ASCII digits where the shape has digits)
        raise Unusual
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Unusual from None
    ms = (((t.toordinal() - _EPOCH_ORDINAL) * 24 + t.hour) * 60 + t.minute) * 60_000 + t.second * 1000 \
        + t.microsecond // 1000
    if not MIN_EPOCH_MS <= ms < MAX_EPOCH_MS:
        raise Unusual
    return ms

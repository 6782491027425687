"""Line writers of the demo generator: one neutral record -> one raw SDK line per format.

:class:`DemoRecord` is the format-free description of one logical event as the
generator models it (who, what, when, on which device). Each ``*_obj`` function
lays it out the way that SDK sends it; :func:`line` serialises it. The same
functions are used by tests to build lines of any format from one record.

Where each piece lands:

==============  =======================  ========================  ========================  ======================  ======================
record          ark                      sensors                   segment                   posthog                 canonical
==============  =======================  ========================  ========================  ======================  ======================
distinct id     ``xwho``                 ``distinct_id``           ``userId`` else           ``distinct_id``         ``distinct_id``
                                                                   ``anonymousId``
event name      ``xwhat``                ``event``                 ``event``                 ``event``               ``event_name``
time            ``xwhen`` (ms)           ``time`` (ms)             ``timestamp`` (ISO);      ``timestamp`` (ISO)     ``event_time`` (ms)
                                                                   device clock in
                                                                   ``originalTimestamp``
send time       --                       ``_flush_time`` (ms)      ``sentAt`` (device        ``sent_at`` (ISO)       ``received_at`` (ms)
                                                                   clock), ``receivedAt``
message id      -- (content hash)        ``_track_id``             ``messageId``             ``uuid``                ``event_id`` (absent
                                                                                                                     on ~10 %)
link            ``$alias``,              ``track_signup``          ``alias``: ``previousId`` ``$identify``:          ``link_anonymous_id``,
                ``xcontext.$original_id`` ``$SignUp``,             -> ``userId``             ``$anon_distinct_id``   ``link_login_id``
                                         ``original_id``
profile         ``$profile_set(_once)``  type ``profile_set(_     ``identify`` + traits     ``$set`` with ``$set``  ``$profile_set(_once)``
                                         once)``                   (one id only: no link)    / ``$set_once``         ``is_activity`` false
presets         ``xcontext.$platform``,  ``properties.$platform``  ``context.app.version``,  ``properties.$os``,     top-level ``platform``,
                ``$app_version`` ...     ...                       ``context.campaign.       ``$app_version``,       ``app_version``,
                                                                   source``, ``properties.   ``$channel``,           ``channel``,
                                                                   $session_id``             ``$session_id``         ``session_id``
==============  =======================  ========================  ========================  ======================  ======================

Segment devices may have a skewed clock (``skew_ms``): ``originalTimestamp``
and ``sentAt`` are device-clock times, ``receivedAt`` the server's, so the
skew-corrected ``receivedAt - (sentAt - originalTimestamp)`` is the true time,
which is also what ``timestamp`` holds. For every format the send time of a
line is its receipt time (no network latency is modelled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

FORMATS = ("ark", "sensors", "segment", "posthog", "canonical")

TRACK = "track"
LINK = "link"
PROFILE_SET = "profile_set"
PROFILE_SET_ONCE = "profile_set_once"
KINDS = (TRACK, LINK, PROFILE_SET, PROFILE_SET_ONCE)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(slots=True)
class DemoRecord:
    """One logical event, before it is written in a format."""

    kind: str  # TRACK | LINK | PROFILE_SET | PROFILE_SET_ONCE
    name: str  # the event name for TRACK; ignored for the other kinds
    distinct_id: str  # the id the event is sent with (login id after login, else the device's anonymous id)
    anonymous_id: str  # the device's anonymous id
    login_id: str | None  # the login id when the event is sent logged in (and for LINK)
    time_ms: int  # true event time, UTC epoch ms
    uid: int  # 128 random bits: source of message ids
    app_id: str = "demo-app"
    platform: str = ""
    app_version: str = ""
    channel: str = ""
    session_id: str = ""
    lib: str = ""
    lib_version: str = ""
    os: str = ""
    os_version: str = ""
    model: str = ""
    network: str = ""
    time_zone: str = "GMT+08:00"
    is_first_day: bool = False
    skew_ms: int = 0  # device clock minus true clock (Segment lines only)
    has_event_id: bool = True  # canonical lines without event_id exercise the content hash
    properties: dict[str, Any] = field(default_factory=dict)  # event properties, or user properties for profiles

    @property
    def is_login(self) -> bool:
        return self.login_id is not None and self.distinct_id == self.login_id

    @property
    def is_activity(self) -> bool:
        return self.kind == TRACK


# --------------------------------------------------------------------------- helpers


def iso(ms: int) -> str:
    """UTC epoch ms as ISO-8601 with milliseconds and 'Z'."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}.{ms % 1000:03d}Z"


def uuid_str(uid: int) -> str:
    h = f"{uid & ((1 << 128) - 1):032x}"
    # shaped like a version-4 UUID
    h = h[:12] + "4" + h[13:16] + "89ab"[int(h[16], 16) & 3] + h[17:]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _presets(rec: DemoRecord) -> dict[str, Any]:
    return {
        "$platform": rec.platform,
        "$app_version": rec.app_version,
        "$channel": rec.channel,
        "$session_id": rec.session_id,
        "$lib": rec.lib,
        "$lib_version": rec.lib_version,
        "$is_login": rec.is_login,
        "$os": rec.os,
        "$os_version": rec.os_version,
        "$model": rec.model,
        "$network": rec.network,
        "$is_first_day": rec.is_first_day,
    }


# --------------------------------------------------------------------------- formats


def ark_obj(rec: DemoRecord, sent_ms: int) -> dict[str, Any]:
    """Analysys Ark: ``appid/xwho/xwhat/xwhen/xcontext``; no send time, no message id."""
    ctx = dict(rec.properties)
    ctx.update(_presets(rec))
    ctx["$time_zone"] = rec.time_zone
    ctx["$debug"] = 0
    if rec.kind == LINK:
        name = "$alias"
        ctx["$original_id"] = rec.anonymous_id
    elif rec.kind == PROFILE_SET:
        name = "$profile_set"
    elif rec.kind == PROFILE_SET_ONCE:
        name = "$profile_set_once"
    else:
        name = rec.name
    return {"appid": rec.app_id, "xwho": rec.distinct_id, "xwhat": name, "xwhen": rec.time_ms, "xcontext": ctx}


def sensors_obj(rec: DemoRecord, sent_ms: int) -> dict[str, Any]:
    """Sensors Analytics: ``track`` / ``track_signup`` / ``profile_*``; ``_flush_time`` is the send time."""
    props = dict(rec.properties)
    props.update(_presets(rec))
    obj: dict[str, Any] = {"_track_id": rec.uid & 0x7FFFFFFF, "time": rec.time_ms}
    if rec.kind == TRACK:
        obj["type"] = "track"
        obj["event"] = rec.name
    elif rec.kind == LINK:
        obj["type"] = "track_signup"
        obj["event"] = "$SignUp"
        obj["original_id"] = rec.anonymous_id
    else:
        obj["type"] = rec.kind  # profile_set | profile_set_once
    obj["distinct_id"] = rec.distinct_id
    obj["anonymous_id"] = rec.anonymous_id
    if rec.login_id is not None and rec.is_login:
        obj["login_id"] = rec.login_id
    obj["lib"] = {"$lib": rec.lib, "$lib_version": rec.lib_version, "$lib_method": "code"}
    obj["properties"] = props
    obj["project"] = rec.app_id
    obj["_flush_time"] = sent_ms
    return obj


def segment_obj(rec: DemoRecord, sent_ms: int) -> dict[str, Any]:
    """Segment spec message; ``sentAt``/``originalTimestamp`` on the device clock."""
    context = {
        "app": {"name": rec.app_id, "version": rec.app_version},
        "os": {"name": rec.os, "version": rec.os_version},
        "device": {"type": rec.platform, "model": rec.model},
        "library": {"name": rec.lib, "version": rec.lib_version},
        "campaign": {"source": rec.channel},
        "network": {"wifi": rec.network == "WIFI"},
        "locale": "zh-CN",
    }
    obj: dict[str, Any]
    if rec.kind == TRACK:
        props = dict(rec.properties)
        props["$session_id"] = rec.session_id
        obj = {"type": "track", "event": rec.name, "userId": rec.login_id if rec.is_login else None,
               "anonymousId": rec.anonymous_id, "properties": props}
    elif rec.kind == LINK:
        obj = {"type": "alias", "userId": rec.login_id, "previousId": rec.anonymous_id,
               "anonymousId": rec.anonymous_id}
    else:
        # identify carries traits; sent with one id only (a server-side identify
        # after login, a client one before), so it never links ids by itself.
        obj = {"type": "identify", "traits": dict(rec.properties)}
        if rec.is_login:
            obj["userId"] = rec.login_id
        else:
            obj["userId"] = None
            obj["anonymousId"] = rec.anonymous_id
    obj["messageId"] = uuid_str(rec.uid)
    obj["timestamp"] = iso(rec.time_ms)
    obj["originalTimestamp"] = iso(rec.time_ms + rec.skew_ms)
    obj["sentAt"] = iso(sent_ms + rec.skew_ms)
    obj["receivedAt"] = iso(sent_ms)
    obj["context"] = context
    obj["integrations"] = {}
    obj["version"] = 2
    return obj


def posthog_obj(rec: DemoRecord, sent_ms: int) -> dict[str, Any]:
    """PostHog capture event; ``sent_at`` is the send time."""
    props = dict(rec.properties) if rec.kind in (TRACK, LINK) else {}
    if rec.kind == PROFILE_SET:
        props["$set"] = dict(rec.properties)
    elif rec.kind == PROFILE_SET_ONCE:
        props["$set_once"] = dict(rec.properties)
    props.update(_presets(rec))
    props["$device_type"] = {"iOS": "Mobile", "Android": "Mobile"}.get(rec.platform, "Desktop")
    if rec.kind == LINK:
        name = "$identify"
        props["$anon_distinct_id"] = rec.anonymous_id
    elif rec.kind == TRACK:
        name = rec.name
    else:
        name = "$set"
    return {
        "event": name,
        "distinct_id": rec.distinct_id,
        "properties": props,
        "timestamp": iso(rec.time_ms),
        "uuid": uuid_str(rec.uid),
        "sent_at": iso(sent_ms),
        "api_key": "phc_" + rec.app_id,
    }


def canonical_obj(rec: DemoRecord, sent_ms: int) -> dict[str, Any]:
    """The project's canonical JSONL schema; ``received_at`` is the send/receipt time."""
    props = dict(rec.properties)
    props["$lib"] = rec.lib
    props["$lib_version"] = rec.lib_version
    props["$is_login"] = rec.is_login
    props["$os"] = rec.os
    props["$model"] = rec.model
    obj: dict[str, Any] = {}
    if rec.has_event_id:
        obj["event_id"] = "evt-" + f"{rec.uid:032x}"[:24]
    obj.update(
        {
            "event_name": canonical_name(rec),
            "distinct_id": rec.distinct_id,
            "event_time": rec.time_ms,
            "received_at": sent_ms,
            "app_id": rec.app_id,
            "platform": rec.platform,
            "app_version": rec.app_version,
            "channel": rec.channel,
            "session_id": rec.session_id,
            "properties": props,
            "is_activity": rec.kind == TRACK,
            "link_anonymous_id": rec.anonymous_id if rec.kind == LINK else None,
            "link_login_id": rec.login_id if rec.kind == LINK else None,
        }
    )
    return obj


def canonical_name(rec: DemoRecord) -> str:
    return {LINK: "$alias", PROFILE_SET: "$profile_set", PROFILE_SET_ONCE: "$profile_set_once"}.get(rec.kind, rec.name)


WRITERS: dict[str, Callable[[DemoRecord, int], dict[str, Any]]] = {
    "ark": ark_obj,
    "sensors": sensors_obj,
    "segment": segment_obj,
    "posthog": posthog_obj,
    "canonical": canonical_obj,
}

# Keys every (valid) line of a format has: how a reader recognises the format.
IDENTIFYING_KEYS: dict[str, frozenset[str]] = {
    "ark": frozenset({"appid", "xwho", "xwhat", "xwhen", "xcontext"}),
    "sensors": frozenset({"type", "distinct_id", "time", "properties", "_track_id", "project"}),
    "segment": frozenset({"type", "messageId", "timestamp", "sentAt", "receivedAt", "context"}),
    "posthog": frozenset({"event", "distinct_id", "properties", "timestamp", "uuid", "sent_at"}),
    "canonical": frozenset({"event_name", "distinct_id", "event_time", "received_at", "is_activity"}),
}

# Event names the format's adapter gives to the bookkeeping kinds (a TRACK keeps its name).
_BOOKKEEPING_NAMES: dict[str, dict[str, str]] = {
    "ark": {LINK: "$alias", PROFILE_SET: "$profile_set", PROFILE_SET_ONCE: "$profile_set_once"},
    "sensors": {LINK: "$SignUp", PROFILE_SET: "profile_set", PROFILE_SET_ONCE: "profile_set_once"},
    "segment": {LINK: "$create_alias", PROFILE_SET: "$identify", PROFILE_SET_ONCE: "$identify"},
    "posthog": {LINK: "$identify", PROFILE_SET: "$set", PROFILE_SET_ONCE: "$set"},
    "canonical": {LINK: "$alias", PROFILE_SET: "$profile_set", PROFILE_SET_ONCE: "$profile_set_once"},
}


def event_name(fmt: str, rec: DemoRecord) -> str:
    """The canonical event name a loaded line of this record has in format ``fmt``."""
    if rec.kind == TRACK:
        return rec.name
    return _BOOKKEEPING_NAMES[fmt][rec.kind]


def obj(fmt: str, rec: DemoRecord, sent_ms: int) -> dict[str, Any]:
    return WRITERS[fmt](rec, sent_ms)


def line(fmt: str, rec: DemoRecord, sent_ms: int) -> bytes:
    """One raw line (no trailing newline)."""
    return orjson.dumps(WRITERS[fmt](rec, sent_ms))


# --------------------------------------------------------------------------- malformed lines

MALFORMED_KINDS = ("truncated", "garbage", "missing_id", "missing_time", "bad_time", "array")

# Fields removed by "missing_id" / "missing_time" (all the fields an adapter could fall back on).
_ID_FIELDS = {
    "ark": ("xwho",),
    "sensors": ("distinct_id", "anonymous_id", "login_id"),
    "segment": ("userId", "anonymousId", "previousId"),
    "posthog": ("distinct_id",),
    "canonical": ("distinct_id",),
}
_TIME_FIELDS = {
    "ark": ("xwhen",),
    "sensors": ("time",),
    "segment": ("timestamp", "originalTimestamp", "sentAt", "receivedAt"),
    "posthog": ("timestamp",),
    "canonical": ("event_time",),
}
_BAD_TIMES = ("yesterday", "abc", "NaN", "12:30:00", "1.7e12x", "2026-13-45T25:61:00Z", "undefined", "--")
# None of these contains a line break (b"\n", b"\r"), so each stays one line.
_GARBAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>",
    b"xwho=anon-0001&xwhat=app_start&xwhen=1700000000000",
    b"\xff\xfe\x00\x7b\x00\x22\x00\x78\x00",  # UTF-16 fragment
    b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xcb\x48\xcd\xc9\xc9\x07\x00",  # a gzip member inside a plain file
    b"\x00" * 48,  # zero-filled tail of a crashed write
    b"undefined",
    b"{'xwho': 'anon', 'xwhat': 'app_start'}",  # Python repr, not JSON
    b"\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80",  # UTF-8 text, not JSON
)


def malformed_line(fmt: str, rec: DemoRecord, sent_ms: int, kind: str, u: float, pick: int) -> bytes:
    """A broken line derived from ``rec``; ``u`` in [0, 1) and ``pick`` >= 0 choose the variant.

    Every result is quarantined by a strict reader: invalid JSON, a JSON value
    that is not an object, a missing required field or a non-numeric time.
    """
    if kind == "garbage":
        return _GARBAGE[pick % len(_GARBAGE)]
    o = WRITERS[fmt](rec, sent_ms)
    if kind == "truncated":
        full = orjson.dumps(o)
        cut = max(1, min(len(full) - 2, int(len(full) * (0.1 + 0.8 * u))))
        return full[:cut]
    if kind == "array":
        return orjson.dumps([o])
    if kind == "missing_id":
        for key in _ID_FIELDS[fmt]:
            o.pop(key, None)
        return orjson.dumps(o)
    if kind == "missing_time":
        for key in _TIME_FIELDS[fmt]:
            o.pop(key, None)
        return orjson.dumps(o)
    if kind == "bad_time":
        bad = _BAD_TIMES[pick % len(_BAD_TIMES)]
        for key in _TIME_FIELDS[fmt]:
            if key in o:
                o[key] = bad
        return orjson.dumps(o)
    raise ValueError(f"unknown malformed kind {kind!r}")

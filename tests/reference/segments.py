"""Brute-force reference for segments, written from SEMANTICS.md "Segments" and the definitions in
``cohortflow.analyses.segments``.

Plain Python over a list of event dicts (``event_id``, ``event_name``,
``distinct_id``, ``event_time`` as a naive UTC datetime, ``is_activity``,
``platform``/``app_version``/``channel``, ``properties`` as JSON text, and
``link_anonymous_id``/``link_login_id`` on identity events) and rules in their
config form (dicts with ``did_event``, ``first_seen_within_days``,
``latest_property``, ``and``, ``or``, ``not``). The local date is computed here
from ``event_time`` and the time zone. Small inputs only: each rule is
evaluated directly, per user and per as-of date.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from zoneinfo import ZoneInfo

PRESET_COLUMNS = ("platform", "app_version", "channel")
# "A plain decimal number": optional minus, 1-200 digits, optional fraction, optional 1-2 digit exponent.
NUMBER = re.compile(r"-?[0-9]{1,200}(\.[0-9]{1,200})?([eE][-+]?[0-9]{1,2})?")


def local_date(event: dict, tz: ZoneInfo) -> dt.date:
    return event["event_time"].replace(tzinfo=dt.UTC).astimezone(tz).date()


def user_of(events: list[dict]):
    """distinct id -> user id: the first link of an anonymous id wins (by link time, then arrival); login ids stay."""
    links = [e for e in events if e.get("link_anonymous_id") and e.get("link_login_id")]
    logins = {e["link_login_id"] for e in links}
    first: dict[str, str] = {}
    for e in sorted(links, key=lambda e: (e["event_time"], e.get("received_at"), e.get("ingest_file"), e.get("ingest_line"))):
        anon, login = e["link_anonymous_id"], e["link_login_id"]
        if anon != login and anon not in logins:
            first.setdefault(anon, login)
    return lambda distinct_id: first.get(distinct_id, distinct_id)


def _text(raw) -> str | None:
    """The text of a property value (JSON scalars); None when not set."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return raw
    return json.dumps(raw)


def _number(text: str | None) -> float | None:
    return float(text) if text is not None and NUMBER.fullmatch(text) else None


def _compare(text: str | None, value, op: str) -> bool:
    """One base comparison of the property text with one config value."""
    if text is None:
        return False
    if op == "contains":
        return _text(value) in text
    if isinstance(value, int | float) and not isinstance(value, bool):
        left, right = _number(text), float(value)
        if left is None:
            return False
    else:
        left, right = text, _text(value)  # Python str order is code point order
    return {
        "eq": left == right,
        "gt": left > right,
        "gte": left >= right,
        "lt": left < right,
        "lte": left <= right,
    }[op]


def filter_holds(flt: dict, event: dict) -> bool:
    key, op, value = flt["property"], flt.get("op", "eq"), flt.get("value")
    if key in PRESET_COLUMNS:
        text = event.get(key)
    else:
        text = _text(json.loads(event.get("properties") or "{}").get(key))
    if op == "is_set":
        return text is not None
    if op == "is_not_set":
        return text is None
    if op == "in":
        return any(_compare(text, v, "eq") for v in value)
    if op == "not_in":
        return not any(_compare(text, v, "eq") for v in value)
    if op == "neq":
        return not _compare(text, value, "eq")
    return _compare(text, value, op)


def membership(events: list[dict], segments: list[dict], timezone: str, start: dt.date, end: dt.date) -> set[tuple]:
    """{(segment_name, as_of_date, user_id)} for every date in [start, end]."""
    tz = ZoneInfo(timezone)
    user = user_of(events)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_user[user(e["distinct_id"])].append({**e, "date": local_date(e, tz)})

    def holds(rule: dict, evs: list[dict], first_active: dt.date, day: dt.date) -> bool:
        if "did_event" in rule:
            days, need = rule.get("days", 30), rule.get("min_count", 1)
            n = sum(1 for e in evs if e["event_name"] == rule["did_event"] and day - dt.timedelta(days=days) < e["date"] <= day)
            return n >= need
        if "first_seen_within_days" in rule:
            return day - dt.timedelta(days=rule["first_seen_within_days"]) < first_active <= day
        if "latest_property" in rule:
            seen = [e for e in evs if e["is_activity"] and e["date"] <= day]
            # (source, load date, id) names one event; events without them come from one source with unique ids
            latest = max(seen, key=lambda e: (e["event_time"], e["event_id"], e.get("source_name", ""), e.get("load_date", day)))
            return filter_holds(rule["latest_property"], latest)
        if "and" in rule:
            return all(holds(r, evs, first_active, day) for r in rule["and"])
        if "or" in rule:
            return any(holds(r, evs, first_active, day) for r in rule["or"])
        return not holds(rule["not"], evs, first_active, day)

    out = set()
    day = start
    while day <= end:
        for user_id, evs in by_user.items():
            active = [e["date"] for e in evs if e["is_activity"]]
            if not active or min(active) > day:
                continue  # not in the universe of this date
            for seg in segments:
                if holds(seg["rule"], evs, min(active), day):
                    out.add((seg["name"], day, user_id))
        day += dt.timedelta(days=1)
    return out


def sizes(members: set[tuple], segments: list[dict], start: dt.date, end: dt.date) -> set[tuple]:
    """{(segment_name, as_of_date, users)}, 0 for a date without members."""
    out = set()
    day = start
    while day <= end:
        for seg in segments:
            out.add((seg["name"], day, sum(1 for m in members if m[0] == seg["name"] and m[1] == day)))
        day += dt.timedelta(days=1)
    return out

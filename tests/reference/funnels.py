"""Brute-force funnels, written from SEMANTICS.md "Funnels" and independent of the SQL model.

For every funnel, user and entry date E it enumerates every chain of distinct
events e1..ek (e_i matching step i, e1 on E, t1 <= t2 <= ... <= tk <= t1 +
window, or t1 < ... < tk in mode ``strictly_increasing``) and keeps the level
(the longest chain) and, per step k, the least t_k - t_1 over the chains. The
rows it returns are those of ``reports.funnel_conversion_daily``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from cohortflow.config import Funnel, PropertyFilter

PRESET_COLUMNS = ("platform", "app_version", "channel")


@dataclass
class Event:
    event_id: str
    user_id: str
    event_name: str
    event_ms: int  # UTC epoch milliseconds
    event_date: dt.date  # local date in the project time zone
    properties: dict[str, Any] = field(default_factory=dict)
    platform: str | None = None
    app_version: str | None = None
    channel: str | None = None
    # (source_name, load_date, event_id) names one event: ids are unique per source and lookback only
    source_name: str = "app"
    load_date: dt.date | None = None


def property_text(event: Event, key: str) -> str | None:
    """The property as text: a preset column, else the JSON property (numbers as JSON, booleans true/false)."""
    if key in PRESET_COLUMNS:
        return getattr(event, key)
    value = event.properties.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _number(text: str | None) -> float | None:
    import re

    if text is not None and re.fullmatch(r"-?[0-9]{1,200}([.][0-9]{1,200})?([eE][-+]?[0-9]{1,2})?", text):
        return float(text)
    return None


def _value_matches(f: PropertyFilter, text: str | None, value: Any) -> bool:
    if f.op in ("is_set", "is_not_set"):
        return text is not None
    if text is None:
        return False
    if f.op == "contains":
        return str(value) in text
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, int | float):
        number = _number(text)
        if number is None:
            return False
        return {
            "eq": number == value, "neq": number == value, "in": number == value, "not_in": number == value,
            "gt": number > value, "gte": number >= value, "lt": number < value, "lte": number <= value,
        }[f.op]
    a, b = text.encode("utf-8"), str(value).encode("utf-8")  # binary (code point) order
    return {
        "eq": a == b, "neq": a == b, "in": a == b, "not_in": a == b,
        "gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b,
    }[f.op]


def filter_holds(f: PropertyFilter, event: Event) -> bool:
    text = property_text(event, f.property)
    values = f.value if isinstance(f.value, list) else [f.value]
    hit = any(_value_matches(f, text, v) for v in values)
    return not hit if f.op in ("neq", "not_in", "is_not_set") else hit


def matches(funnel: Funnel, step: int, event: Event) -> bool:
    """Does ``event`` match step ``step`` (1-based)? Bookkeeping events match only steps that name them."""
    s = funnel.steps[step - 1]
    return event.event_name == s.event and all(filter_holds(f, event) for f in s.where)


def chains(funnel: Funnel, events: list[Event], entry_date: dt.date) -> dict[int, int]:
    """Per step k reached by some valid chain: the least t_k - t_1 (ms). The level is the largest key."""
    window = funnel.window_seconds * 1000
    strict = funnel.mode == "strictly_increasing"
    n = len(funnel.steps)
    fits = [[matches(funnel, k, e) for k in range(1, n + 1)] for e in events]
    best: dict[int, int] = {}
    seen: set[tuple[int, tuple[int, ...], int, int]] = set()

    def extend(used: tuple[int, ...], k: int, t1: int, last: int) -> None:
        # ``used``: the events of the chain so far (steps 1..k); memo on what can still happen next
        key = (k, tuple(sorted(used)), last, t1)
        if key in seen:
            return
        seen.add(key)
        delta = events[used[-1]].event_ms - t1
        best[k] = min(best.get(k, delta), delta)
        if k == n:
            return
        for j, e in enumerate(events):
            if j in used or not fits[j][k]:
                continue
            if e.event_ms < last or (strict and e.event_ms == last) or e.event_ms > t1 + window:
                continue
            extend((*used, j), k + 1, t1, e.event_ms)

    for j, e in enumerate(events):
        if fits[j][0] and e.event_date == entry_date:
            extend((j,), 1, e.event_ms, e.event_ms)
    return best


def quantile_cont(values: list[float], q: float) -> float:
    """Continuous percentile (linear interpolation between closest ranks), as quantile_cont/percentile_cont."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def window_end_date(entry_date: dt.date, window_seconds: int, timezone: str) -> dt.date:
    """The local date of the last instant a user entering at the last millisecond of E can convert."""
    tz = ZoneInfo(timezone)
    next_midnight = dt.datetime.combine(entry_date + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    last = next_midnight.astimezone(dt.UTC) - dt.timedelta(milliseconds=1) + dt.timedelta(seconds=window_seconds)
    return last.astimezone(tz).date()


def funnel_rows(
    funnels: list[Funnel],
    events: list[Event],
    start_date: dt.date,
    end_date: dt.date,
    timezone: str = "UTC",
    segment_members: dict[str, set[tuple[dt.date, str]]] | None = None,
    late_arrival_days: int = 7,
) -> list[dict[str, Any]]:
    """The expected rows of funnel_conversion_daily for entry dates in [start_date, end_date] as of end_date."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    out = []
    day = start_date
    dates = []
    while day <= end_date:
        dates.append(day)
        day += dt.timedelta(days=1)
    for funnel in funnels:
        n = len(funnel.steps)
        for entry_date in dates:
            groups: dict[str, list[dict[int, int]]] = defaultdict(list)
            for user, evs in by_user.items():
                firsts = [e for e in evs if e.event_date == entry_date and matches(funnel, 1, e)]
                if not firsts:
                    continue
                if funnel.segment is not None and (entry_date, user) not in (segment_members or {}).get(funnel.segment, set()):
                    continue
                reached = chains(funnel, evs, entry_date)
                groups["all"].append(reached)
                if funnel.breakdown is not None:
                    first = min(firsts, key=lambda e: (e.event_ms, e.event_id.encode("utf-8"), e.source_name.encode("utf-8"), e.load_date))
                    value = property_text(first, funnel.breakdown)
                    groups["(none)" if value is None else value].append(reached)
            groups.setdefault("all", [])
            # final once the window and the late-arrival window after it have passed
            complete = end_date >= window_end_date(entry_date, funnel.window_seconds, timezone) + dt.timedelta(days=late_arrival_days)
            for value, users in groups.items():
                entered = len(users)
                counts = [sum(1 for r in users if k in r) for k in range(1, n + 1)]
                for k in range(1, n + 1):
                    times = [r[k] / 1000.0 for r in users if k in r]
                    reached_k = counts[k - 1]
                    previous = entered if k == 1 else counts[k - 2]
                    out.append({
                        "funnel_name": funnel.name,
                        "entry_date": entry_date,
                        "breakdown_value": value,
                        "step_index": k,
                        "step_event": funnel.steps[k - 1].event,
                        "entered_users": entered,
                        "reached_users": reached_k,
                        "conversion_from_first": round(reached_k / entered, 6) if entered else None,
                        "conversion_from_previous": round(reached_k / previous, 6) if previous else None,
                        "median_seconds_to_convert": round(quantile_cont(times, 0.5), 6) if k > 1 and times else None,
                        "p90_seconds_to_convert": round(quantile_cont(times, 0.9), 6) if k > 1 and times else None,
                        "is_complete": complete,
                    })
    return out

"""Brute force of SEMANTICS.md for retention, frequency -> retention and lifecycle.

Written from the definitions, one user and one period at a time, with no
regard for how the SQL models compute them. Input: staged events as dicts
(user_id, event_id, event_name, event_time, event_date, platform,
app_version, channel, properties (a dict), is_activity).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import defaultdict
from typing import Any

DAY = dt.timedelta(days=1)
PLAIN_NUMBER = re.compile(r"^-?[0-9]{1,200}([.][0-9]{1,200})?([eE][-+]?[0-9]{1,2})?$")
PRESET = ("platform", "app_version", "channel")


# -- calendar periods --------------------------------------------------------------------------


def period_start(d: dt.date, period: str) -> dt.date:
    if period == "day":
        return d
    if period == "week":
        return d - dt.timedelta(days=d.weekday())  # Monday
    return d.replace(day=1)


def add_periods(p: dt.date, k: int, period: str) -> dt.date:
    if period == "day":
        return p + dt.timedelta(days=k)
    if period == "week":
        return p + dt.timedelta(days=7 * k)
    months = p.year * 12 + p.month - 1 + k
    return dt.date(months // 12, months % 12 + 1, 1)


def periods_between(a: dt.date, b: dt.date, period: str) -> int:
    """How many periods after period a (a period start) period b is."""
    k = 0
    step = 1 if b >= a else -1
    while add_periods(a, k, period) != b:
        k += step
    return k


# -- property filters (the semantics documented in cohortflow.analyses.retention) --------------


def property_text(event: dict, key: str) -> str | None:
    if key in PRESET:
        return event[key]
    value = event["properties"].get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _filter_holds(f: dict, event: dict) -> bool:
    text = property_text(event, f["property"])
    op = f["op"]
    if op == "is_set":
        return text is not None
    if op == "is_not_set":
        return text is None
    values = f["value"] if isinstance(f["value"], list) else [f["value"]]
    if op == "contains":
        return text is not None and values[0] in text
    number = float(text) if text is not None and PLAIN_NUMBER.match(text) else None
    positive = {"neq": "eq", "not_in": "in"}.get(op, op)

    def compare(v) -> bool:
        if isinstance(v, int | float) and not isinstance(v, bool):
            left, right = number, float(v)  # numbers compare numerically
        else:
            left, right = text, ("true" if v else "false") if isinstance(v, bool) else v  # code point order
        if left is None:
            return False
        if positive in ("eq", "in"):
            return left == right
        return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[positive]

    hit = any(compare(v) for v in values)
    return not hit if op in ("neq", "not_in") else hit


def matches(event: dict, ref: dict | None) -> bool:
    """An event matches ``{event, where}``: the named event (or any activity when unnamed) with every filter holding."""
    ref = ref or {}
    name = ref.get("event")
    if name is None and not event["is_activity"]:
        return False
    if name is not None and event["event_name"] != name:
        return False
    return all(_filter_holds(f, event) for f in ref.get("where", []))


# -- retention ---------------------------------------------------------------------------------


def retention(
    events: list[dict], d: dict, start: dt.date, end: dt.date, membership: set, late_arrival_days: int = 7
) -> list[dict]:
    period = d.get("period", "day")
    horizon = d.get("horizon", 30)
    observed = [e for e in events if e["event_date"] <= end]
    starts = [e for e in observed if matches(e, d.get("start"))]
    returns = defaultdict(set)
    for e in observed:
        if matches(e, d.get("return")):
            returns[e["user_id"]].add(period_start(e["event_date"], period))
    start_periods = defaultdict(set)
    for e in starts:
        start_periods[e["user_id"]].add(period_start(e["event_date"], period))
    cohorts = defaultdict(set)  # (cohort_date, breakdown_value) -> users
    for user, periods in start_periods.items():
        chosen = periods if d.get("cohort_type") == "recurring" else {min(periods)}
        for c in chosen:
            if not start <= c <= end:
                continue
            if d.get("segment") and (d["segment"], c, user) not in membership:
                continue
            cohorts[(c, "all")].add(user)
            if d.get("breakdown"):
                first = min(
                    (e for e in starts if e["user_id"] == user and period_start(e["event_date"], period) == c),
                    key=lambda e: (e["event_time"], e["event_id"], e["source_name"], e["load_date"]),
                )
                cohorts[(c, property_text(first, d["breakdown"]) or "(none)")].add(user)
    out = []
    for (c, value), users in cohorts.items():
        for k in range(horizon + 1):
            begins = add_periods(c, k, period)
            if begins > end:
                break
            if k == 0:
                retained = len(users)
            elif d.get("mode") == "on_or_after":
                retained = sum(1 for u in users if any(p >= begins for p in returns[u]))
            else:
                retained = sum(1 for u in users if begins in returns[u])
            out.append(
                {
                    "retention_name": d["name"], "cohort_date": c, "period": period, "breakdown_value": value,
                    "period_number": k, "period_start_date": begins, "cohort_users": len(users),
                    "retained_users": retained, "retention_rate": retained / len(users),
                    # final once the period and the late-arrival window after it have passed; in mode on_or_after
                    # a later return still raises periods k >= 1
                    "is_complete": add_periods(c, k + 1, period) - DAY + dt.timedelta(days=late_arrival_days) <= end
                    and (k == 0 or d.get("mode") != "on_or_after"),
                }
            )
    return out


# -- frequency -> retention --------------------------------------------------------------------


def frequency_retention(events: list[dict], d: dict, end: dt.date, late_arrival_days: int = 7) -> list[dict]:
    n, m1, m2, cap = d.get("first_days", 7), d.get("target_from_day", 7), d.get("target_to_day", 13), d.get("cap", 20)
    observed = [e for e in events if e["event_date"] <= end]
    active = defaultdict(set)
    for e in observed:
        if e["is_activity"]:
            active[e["user_id"]].add(e["event_date"])
    groups = defaultdict(lambda: [0, 0])  # (cohort_week or None, bucket min) -> [users, retained]
    for user, days in active.items():
        d0 = min(days)
        if d0 + dt.timedelta(days=max(n - 1, m2)) > end:
            continue  # windows not over yet: not counted
        c = sum(
            1 for e in observed
            if e["user_id"] == user and e["event_name"] == d["event"] and d0 <= e["event_date"] < d0 + dt.timedelta(days=n)
        )
        kept = any(d0 + dt.timedelta(days=m1) <= x <= d0 + dt.timedelta(days=m2) for x in days)
        for week in (d0 - dt.timedelta(days=d0.weekday()), None):
            g = groups[(week, min(c, cap))]
            g[0] += 1
            g[1] += int(kept)
    window = max(n - 1, m2)
    return [
        {
            "frequency_name": d["name"], "cohort_week": week, "is_overall": week is None,
            "frequency_bucket": f"{cap}+" if low >= cap else str(low), "frequency_min": low,
            "users": users, "retained_users": kept, "retention_rate": kept / users,
            "is_complete": week is not None and week + dt.timedelta(days=6 + window + late_arrival_days) <= end,
        }
        for (week, low), (users, kept) in groups.items()
    ]


# -- lifecycle ---------------------------------------------------------------------------------


def lifecycle_daily(events: list[dict], start: dt.date, end: dt.date) -> list[dict]:
    active = defaultdict(set)  # date -> users
    first: dict[Any, dt.date] = {}
    for e in events:
        if e["is_activity"] and e["event_date"] <= end:
            active[e["event_date"]].add(e["user_id"])
            first[e["user_id"]] = min(first.get(e["user_id"], e["event_date"]), e["event_date"])
    out = []
    day = start
    while day <= end:
        today, yesterday = active[day], active[day - DAY]
        counts = {
            "new": sum(1 for u in today if first[u] == day),
            "returning": sum(1 for u in today if first[u] != day and u in yesterday),
            "resurrecting": sum(1 for u in today if first[u] != day and u not in yesterday),
            "dormant": len(yesterday - today),
        }
        out += [{"activity_date": day, "lifecycle_state": s, "users": n} for s, n in counts.items()]
        day += DAY
    return out

"""Brute-force reference for sessions, paths and event-metric breakdowns, written from SEMANTICS.md.

Plain Python over a list of event dicts (``event_id``, ``event_name``,
``distinct_id``, ``event_time`` as a naive UTC datetime, ``event_date`` as the
local date, ``is_activity``, ``platform``/``app_version``/``channel``, and
``link_anonymous_id``/``link_login_id`` on identity events). Small inputs
only: clarity over speed.

Definitions (SEMANTICS.md "Identity", "Sessions and paths", "Active users and
event metrics", plus the choices documented in the models):

* user_id = the login id the distinct id is linked to (first link by link time
  wins; login ids are never anonymous), else the distinct id;
* a session: walk each user's activity events in (event_time, event_id) order;
  an event more than ``timeout`` after the previous one starts a new session
  (exactly ``timeout`` continues it); its date is the first event's local date;
* a path: a session's events from the first occurrence of the start event (from
  the first event when there is none); the last event goes to ``$end``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict

END = "$end"
NONE_VALUE = "(none)"


def resolve_users(events: list[dict], link_order=lambda e: (e["event_time"], e.get("ingest_line", 0))) -> list[dict]:
    """The events with ``user_id`` set after identity resolution."""
    links = [e for e in events if e.get("link_anonymous_id") and e.get("link_login_id") and e["link_anonymous_id"] != e["link_login_id"]]
    logins = {e["link_login_id"] for e in links}
    first: dict[str, str] = {}
    for e in sorted(links, key=link_order):
        anon = e["link_anonymous_id"]
        if anon not in logins and anon not in first:
            first[anon] = e["link_login_id"]
    return [{**e, "user_id": first.get(e["distinct_id"], e["distinct_id"])} for e in events]


def _epoch_ms(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)


def sessions(events: list[dict], timeout_minutes: int) -> list[dict]:
    """Every session of the (resolved) events: a dict with its ordered ``events`` and the session columns."""
    timeout = dt.timedelta(minutes=timeout_minutes)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        if e["is_activity"]:
            by_user[e["user_id"]].append(e)
    out = []
    for user, evs in by_user.items():
        # str order = UTF-8 byte order; (source, load date, id) names one event (an id alone can repeat)
        evs.sort(key=lambda e: (e["event_time"], e["event_id"], e["source_name"], e["load_date"]))
        runs: list[list[dict]] = []
        for e in evs:
            if runs and e["event_time"] - runs[-1][-1]["event_time"] <= timeout:
                runs[-1].append(e)
            else:
                runs.append([e])
        for run in runs:
            first, last = run[0], run[-1]
            out.append(
                {
                    "session_id": hashlib.md5(f"{user}|{first['event_id']}|{_epoch_ms(first['event_time'])}".encode()).hexdigest(),
                    "user_id": user,
                    "session_date": first["event_date"],
                    "started_at": first["event_time"],
                    "ended_at": last["event_time"],
                    "duration_seconds": round((last["event_time"] - first["event_time"]) / dt.timedelta(milliseconds=1) / 1000, 3),
                    "count_events": len(run),
                    "first_event": first["event_name"],
                    "last_event": last["event_name"],
                    "events": run,
                }
            )
    return out


def session_metrics_daily(all_sessions: list[dict], start: dt.date, end: dt.date) -> list[dict]:
    rows = []
    day = start
    while day <= end:
        ss = [s for s in all_sessions if s["session_date"] == day]
        n = len(ss)
        rows.append(
            {
                "session_date": day,
                "sessions": n,
                "users": len({s["user_id"] for s in ss}),
                "avg_duration_seconds": round(sum(s["duration_seconds"] for s in ss) / n, 6) if n else 0.0,
                "avg_events_per_session": round(sum(s["count_events"] for s in ss) / n, 6) if n else 0.0,
                "bounce_rate": round(sum(1 for s in ss if s["count_events"] == 1) / n, 6) if n else 0.0,
            }
        )
        day += dt.timedelta(days=1)
    return rows


def path_of(session: dict, start_event: str | None) -> list[str] | None:
    """The session's event names from the first occurrence of the start event; None without it."""
    names = [e["event_name"] for e in session["events"]]
    if start_event is None:
        return names
    if start_event not in names:
        return None
    return names[names.index(start_event) :]


def path_transitions_daily(all_sessions: list[dict], start_event: str | None) -> list[dict]:
    counts: dict[tuple, int] = defaultdict(int)
    users: dict[tuple, set] = defaultdict(set)
    for s in all_sessions:
        path = path_of(s, start_event)
        if path is None:
            continue
        for k, name in enumerate(path, start=1):
            key = (s["session_date"], k, name, path[k] if k < len(path) else END)
            counts[key] += 1
            users[key].add(s["user_id"])
    return [
        {"session_date": d, "step_number": k, "from_event": a, "to_event": b, "transition_count": n, "count_users": len(users[(d, k, a, b)])}
        for (d, k, a, b), n in counts.items()
    ]


def top_paths_daily(all_sessions: list[dict], start_event: str | None, max_steps: int, top_n: int) -> list[dict]:
    sess: dict[tuple, int] = defaultdict(int)
    users: dict[tuple, set] = defaultdict(set)
    for s in all_sessions:
        path = path_of(s, start_event)
        if path is None:
            continue
        steps = path[:max_steps]
        text = " > ".join(steps + ([END] if len(path) <= max_steps else []))
        key = (s["session_date"], text, len(steps))
        sess[key] += 1
        users[key].add(s["user_id"])
    by_date: dict[dt.date, list[tuple]] = defaultdict(list)
    for key in sess:
        by_date[key[0]].append(key)
    rows = []
    for d, keys in by_date.items():
        keys.sort(key=lambda k: (-sess[k], -len(users[k]), k[1].encode("utf-8")))
        for rank, key in enumerate(keys[:top_n], start=1):
            rows.append(
                {"session_date": d, "path_rank": rank, "path": key[1], "path_length": key[2], "count_sessions": sess[key], "count_users": len(users[key])}
            )
    return rows


def event_metrics_breakdown_daily(events: list[dict], breakdowns: list[str], start: dt.date, end: dt.date) -> list[dict]:
    counts: dict[tuple, int] = defaultdict(int)
    users: dict[tuple, set] = defaultdict(set)
    for e in events:
        if not start <= e["event_date"] <= end:
            continue
        for b in dict.fromkeys(breakdowns):
            value = e.get(b)
            key = (e["event_date"], e["event_name"], b, NONE_VALUE if value is None else value)
            counts[key] += 1
            users[key].add(e["user_id"])
    return [
        {"event_date": d, "event_name": n, "breakdown": b, "breakdown_value": v, "count_events": c, "count_users": len(users[(d, n, b, v)])}
        for (d, n, b, v), c in counts.items()
    ]

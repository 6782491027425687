"""Funnels: the definitions of ``analyses.funnels`` as rows the model ``funnel_conversion_daily`` joins.

Semantics (SEMANTICS.md "Funnels"). For a user and an entry date E, the level
is the largest k with k distinct events e1..ek, e_i matching step i, e1 on the
local date E and t1 <= t2 <= ... <= tk <= t1 + window (mode ``ordered``;
``strictly_increasing``: t1 < t2 < ... < tk). An event matches a step when its
name is the step's event (bookkeeping events only match steps that name them)
and every filter of the step holds. Filters have the semantics of the
retention and segment filters (``cohortflow.analyses.segments``): the property
is the column for ``platform``/``app_version``/``channel``, else the key of the
event's JSON properties; number values compare numerically, strings and
booleans as text; ``neq``/``not_in``/``is_not_set`` hold when the property is
not set.

Rows (config values never become SQL text):

* ``meta.def_funnels``: one row per funnel (numbered from 1 in config order),
  its window in milliseconds, ``deadline_days`` (ceil(window / 1 day): the
  local date of the window's end, as days after the entry date, for a user
  entering at the last millisecond of E) and ``window_days``, the most days
  that can be on any date (see :func:`window_days`);
* ``meta.def_funnel_steps``: one row per step;
* ``meta.def_funnel_filters``: one row per (filter, value) of a step;
* ``meta.def_funnel_deadlines``: the entry dates whose window ends on another
  day offset than ``deadline_days`` (a DST change inside the window; none in a
  zone without DST);
* ``meta.def_funnel_step_sets`` / ``meta.def_funnel_hall``: what the model
  needs to decide which consecutive steps several events at the same
  millisecond can fill together (mode ``ordered`` only), see :func:`hall_rows`.

Reach ``funnel_window``: an event dated X can change entry dates
X - window_days .. X of a funnel, so the model rebuilds that many days before
the changed dates.
"""

from __future__ import annotations

import datetime as dt
import json
from functools import cache
from itertools import combinations
from typing import Any
from zoneinfo import ZoneInfo

from cohortflow.analyses.filters import filter_rows
from cohortflow.config import Config, Funnel

FUNNELS = "meta.def_funnels"
STEPS = "meta.def_funnel_steps"
FILTERS = "meta.def_funnel_filters"
DEADLINES = "meta.def_funnel_deadlines"
STEP_SETS = "meta.def_funnel_step_sets"
HALL = "meta.def_funnel_hall"

TABLES = {
    FUNNELS: (
        "funnel_no integer not null, funnel_name varchar not null, step_count integer not null, "
        "window_ms bigint not null, deadline_days integer not null, window_days integer not null, is_strict boolean not null, "
        "breakdown varchar, segment_name varchar, breakdown_segment varchar"
    ),
    STEPS: (
        "funnel_no integer not null, step_index integer not null, event_name varchar not null, "
        "filter_count integer not null, step_label varchar"
    ),
    FILTERS: (
        "funnel_no integer not null, step_index integer not null, filter_no integer not null, "
        "property varchar not null, op varchar not null, value_kind varchar not null, value_text varchar, "
        "value_number double, is_negated boolean not null"
    ),
    DEADLINES: "funnel_no integer not null, entry_date date not null, window_days integer not null",
    STEP_SETS: "funnel_no integer not null, set_no integer not null, step_index integer not null",
    HALL: (
        "funnel_no integer not null, set_no integer not null, step_index integer not null, "
        "event_count integer not null, min_entry_step integer not null"
    ),
}

# Classes of steps (same event, same filters) of one event name a funnel may hold: the
# model checks every subset of them (2^n - 1 rows), so this bounds the definition rows.
MAX_STEP_CLASSES_PER_EVENT = 10
# Entry dates checked for DST effects on the window end (the zone's rules in this span).
DEADLINE_SPAN = (dt.date(2000, 1, 1), dt.date(2100, 12, 31))


def _end_of_day_utc(day: dt.date, tz: ZoneInfo) -> dt.datetime:
    """The first UTC instant of the local date after ``day`` (a local midnight that does not exist is the transition)."""
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return midnight.astimezone(dt.UTC)


@cache
def _deadline_days(timezone: str, window_seconds: int) -> tuple[int, tuple[tuple[dt.date, int], ...]]:
    """(usual days, exceptions): the local date of the window's end, as days after the entry date.

    The window of a user who enters at the last millisecond of E ends at
    ``end of E + window``; its local date is E + ceil(window / 1 day), unless a
    DST change between the two instants moves it by a day. The exceptions list
    the entry dates of ``DEADLINE_SPAN`` where that happens.
    """
    tz = ZoneInfo(timezone)
    usual = -(-window_seconds // 86400)
    window = dt.timedelta(seconds=window_seconds) - dt.timedelta(milliseconds=1)
    exceptions = []
    day, last = DEADLINE_SPAN
    while day <= last:
        end_utc = _end_of_day_utc(day, tz) + window
        days = (end_utc.astimezone(tz).date() - day).days
        if days != usual:
            exceptions.append((day, days))
        day += dt.timedelta(days=1)
    return usual, tuple(exceptions)


def window_days(funnel: Funnel, timezone: str) -> int:
    """The most local dates after an entry date E that the window of a user entering on E reaches."""
    usual, exceptions = _deadline_days(timezone, funnel.window_seconds)
    return max([usual, *(d for _, d in exceptions)])


def hall_rows(funnel_no: int, funnel: Funnel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows that let SQL decide which consecutive steps the events of one millisecond can fill.

    Several events of a user at the same millisecond can fill consecutive
    steps j..i together only with distinct events. By Hall's theorem that is
    possible iff, for every set K of step classes (steps with the same event
    and the same filters, so matched by the same events) of one event name,
    the steps of K inside j..i are no more than the events matching a step
    of K. For K with step positions p_1 < p_2 < ... (1-based), a count of c
    matching events and a last step i, with a = #{p <= i} > c, that means
    j >= p_(a-c) + 1. ``meta.def_funnel_hall`` lists that bound
    (``min_entry_step``) per (K, i, c); the least feasible j of a group and step
    i is the largest bound over all K (1 without any).
    ``meta.def_funnel_step_sets`` lists the steps of each K.
    """
    classes: dict[tuple[str, str], list[int]] = {}
    for index, step in enumerate(funnel.steps, start=1):
        key = (step.event, json.dumps([f.model_dump(mode="json") for f in step.where], sort_keys=True))
        classes.setdefault(key, []).append(index)
    by_event: dict[str, list[list[int]]] = {}
    for (event, _), positions in classes.items():
        by_event.setdefault(event, []).append(positions)
    sets, bounds = [], []
    set_no = 0
    for event, event_classes in by_event.items():
        if len(event_classes) > MAX_STEP_CLASSES_PER_EVENT:
            raise ValueError(
                f"funnel {funnel.name}: event {event!r} appears in steps with {len(event_classes)} different filter sets; "
                f"at most {MAX_STEP_CLASSES_PER_EVENT} are supported"
            )
        for size in range(1, len(event_classes) + 1):
            for chosen in combinations(event_classes, size):
                set_no += 1
                positions = sorted(p for c in chosen for p in c)
                sets += [{"funnel_no": funnel_no, "set_no": set_no, "step_index": p} for p in positions]
                for i in range(1, len(funnel.steps) + 1):
                    upto = [p for p in positions if p <= i]
                    for count in range(len(upto)):
                        bounds.append({
                            "funnel_no": funnel_no,
                            "set_no": set_no,
                            "step_index": i,
                            "event_count": count,
                            "min_entry_step": upto[len(upto) - count - 1] + 1,
                        })
    return sets, bounds


def rows(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    funnels, steps, filters, deadlines, sets, bounds = [], [], [], [], [], []
    for no, f in enumerate(cfg.analyses.funnels, start=1):
        usual, exceptions = _deadline_days(cfg.timezone, f.window_seconds)
        funnels.append({
            "funnel_no": no,
            "funnel_name": f.name,
            "step_count": len(f.steps),
            "window_ms": f.window_seconds * 1000,
            "deadline_days": usual,
            "window_days": window_days(f, cfg.timezone),
            "is_strict": f.mode == "strictly_increasing",
            "breakdown": f.breakdown,
            "segment_name": f.segment,
            "breakdown_segment": f.breakdown_segment,
        })
        deadlines += [{"funnel_no": no, "entry_date": d, "window_days": days} for d, days in exceptions]
        for index, step in enumerate(f.steps, start=1):
            steps.append({
                "funnel_no": no,
                "step_index": index,
                "event_name": step.event,
                "filter_count": len(step.where),
                "step_label": step.label,
            })
            filters += filter_rows({"funnel_no": no, "step_index": index}, step.where)
        if f.mode == "ordered":
            s, b = hall_rows(no, f)
            sets += s
            bounds += b
    return {FUNNELS: funnels, STEPS: steps, FILTERS: filters, DEADLINES: deadlines, STEP_SETS: sets, HALL: bounds}


def funnel_reach(cfg: Config) -> int:
    """Days before a changed date whose entry dates it can change: the longest window, in local dates."""
    return max((window_days(f, cfg.timezone) for f in cfg.analyses.funnels), default=0)


# DuckDB's single pass (funnel_conversion_daily.duckdb.sql) folds each user's events of an entry date as one list,
# one element per step across all the lists of a chunk: a very long list costs about 18 microseconds an element
# (one user with 200,000 step events in two days: 3.8 s, against 0.2 s on the chain CTEs). A user with a longer list
# on any entry date takes the chain CTEs.
PASS_MAX_EVENTS = 1000


def params(cfg: Config) -> dict[str, Any]:
    """``:funnel_window_days``: events up to this many days after the last entry date can fill a step.
    ``:funnel_pass_max_events``: see PASS_MAX_EVENTS."""
    return {"funnel_window_days": funnel_reach(cfg), "funnel_pass_max_events": PASS_MAX_EVENTS}


REACH = {
    "funnel_window": funnel_reach,
    # is_complete of an entry date flips once its window and the late-arrival window after it have passed.
    "funnel_complete": lambda cfg: funnel_reach(cfg) + cfg.ingest.late_arrival_days + 1,
}

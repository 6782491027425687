"""Retention, frequency -> retention (the "magic number") and lifecycle: definitions as rows, reach.

The models ``retention_cohorts`` and ``frequency_retention`` join these
tables; ``lifecycle_daily`` needs no definition. Config values (event names,
property keys and values) only ever travel as rows here, never as SQL text.

Property filters (``where``) of a retention start or return event, one row
per (filter, value) in ``meta.def_retention_filters``, with the semantics of
the segments' ``latest_property`` filters (``cohortflow.analyses.segments``):

* the property is the column of that name for ``platform``, ``app_version``
  and ``channel``, otherwise the key of the event's JSON properties (absent or
  JSON null = not set);
* with a number value, ``eq``/``in``/``gt``/``gte``/``lt``/``lte`` compare
  numerically (a property that is not a plain decimal number never matches);
  with a string or boolean value they compare the property's text
  (``true``/``false`` for booleans), ordered comparisons in binary (code
  point) order;
* ``contains`` is a case-sensitive substring test of the text; ``is_set`` /
  ``is_not_set`` test presence; ``neq`` is ``not eq`` and ``not_in`` is
  ``not in``: they hold when the property is not set.
"""

from __future__ import annotations

from typing import Any

from cohortflow.analyses.filters import filter_rows
from cohortflow.config import Config

TABLES = {
    "meta.def_retention": (
        "retention_name varchar, start_event varchar, return_event varchar, period varchar, "
        "horizon integer, cohort_type varchar, retention_mode varchar, breakdown varchar, segment_name varchar, "
        "breakdown_segment varchar"
    ),
    "meta.def_retention_filters": (
        "retention_name varchar, side varchar, filter_no integer, property varchar, op varchar, "
        "value_kind varchar, value_text varchar, value_number double, is_negated boolean"
    ),
    "meta.def_frequency_retention": (
        "frequency_name varchar, event_name varchar, first_days integer, target_from_day integer, "
        "target_to_day integer, frequency_cap integer"
    ),
}

# Days of one period at most, for the reach of a horizon (a month has up to 31).
PERIOD_DAYS = {"day": 1, "week": 7, "month": 31}


def rows(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    retention, filters, frequency = [], [], []
    for r in cfg.analyses.retention:
        retention.append(
            {
                "retention_name": r.name,
                "start_event": r.start.event,
                "return_event": r.returning.event,
                "period": r.period,
                "horizon": r.horizon,
                "cohort_type": r.cohort_type,
                "retention_mode": r.mode,
                "breakdown": r.breakdown,
                "segment_name": r.segment,
                "breakdown_segment": r.breakdown_segment,
            }
        )
        filters += filter_rows({"retention_name": r.name, "side": "start"}, r.start.where)
        filters += filter_rows({"retention_name": r.name, "side": "return"}, r.returning.where)
    for f in cfg.analyses.frequency_retention:
        frequency.append(
            {
                "frequency_name": f.name,
                "event_name": f.event,
                "first_days": f.first_days,
                "target_from_day": f.target_from_day,
                "target_to_day": f.target_to_day,
                "frequency_cap": f.cap,
            }
        )
    return {
        "meta.def_retention": retention,
        "meta.def_retention_filters": filters,
        "meta.def_frequency_retention": frequency,
    }


def retention_reach(cfg: Config) -> int:
    """Days before a changed date whose cohorts it can change: the horizon, plus the cohort period's own length.

    A change on date X can alter period k <= horizon of cohorts back to X minus
    ``horizon`` periods, and that cohort period can start up to a period earlier.
    """
    return max(
        ((r.horizon + 1) * PERIOD_DAYS[r.period] - 1 for r in cfg.analyses.retention),
        default=0,
    )


REACH = {
    "retention_horizon": retention_reach,
    # Rows of periods begun by the as-of date, and is_complete once a period and the late-arrival window passed.
    "retention_complete": lambda cfg: retention_reach(cfg) + cfg.ingest.late_arrival_days + 32,
    # A change on date X changes the states of X (new, returning, resurrecting) and X + 1 (dormant, returning).
    "lifecycle": lambda cfg: 0,
}

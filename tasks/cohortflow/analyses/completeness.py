"""Completeness: when a published number is final.

A row is complete once nothing the pipeline would still accept can change it: the period it counts has elapsed by
the as-of date (the latest business date loaded) and the late-arrival window after it has passed, because an event
dated X is still accepted by the loads of the business dates up to X + ``ingest.late_arrival_days``.

* ``params``: ``late_arrival_days``, bound to every model.
* reach ``late_arrival``: the partitions whose ``is_complete`` can still flip when the as-of date moves.
"""

from __future__ import annotations

from typing import Any

from cohortflow.config import Config


def params(cfg: Config) -> dict[str, Any]:
    return {"late_arrival_days": cfg.ingest.late_arrival_days}


REACH = {
    "late_arrival": lambda cfg: cfg.ingest.late_arrival_days + 1,
    # DAU, WAU and MAU of a date change with events up to 29 days before it.
    "active_window": lambda cfg: 29,
}

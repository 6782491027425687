"""Event metric breakdowns: which of platform, app_version and channel to break down by.

``analyses.breakdowns`` becomes the rows of ``meta.def_event_breakdowns``;
``event_metrics_breakdown_daily`` joins them (the column each name selects
is fixed in the SQL, so a config value never becomes SQL text).
"""

from __future__ import annotations

from typing import Any

from cohortflow.config import Config

TABLES = {"meta.def_event_breakdowns": "breakdown varchar not null"}


def rows(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    names = list(dict.fromkeys(cfg.analyses.breakdowns))  # a name listed twice counts once
    return {"meta.def_event_breakdowns": [{"breakdown": n} for n in names]}

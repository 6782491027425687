"""Sessions and paths: the settings of ``analyses.sessions`` and ``analyses.paths``.

* ``params``: ``session_timeout_minutes`` (a gap longer than this ends a
  session; a gap of exactly the timeout continues it), ``path_max_steps`` and
  ``path_top_n`` (bound to every model as numbers).
* ``meta.def_paths``: the configured path start event, as a row (event names
  never become SQL text). No row = paths start at the session start.
* reach ``sessions``: 1 day. A session belongs to the local date of its first
  event and can continue past midnight. An event that arrives late for date D,
  or that a late identity link moves to another user, can extend a session,
  merge two or open a new one; the session it ends up in started on D or, when
  it ran over midnight, on D - 1, and the sessions it absorbed started after
  it. So rebuilding the partitions from D - 1 on is enough. A session's id
  (md5 of user and first event id) changes when a late event becomes its new
  first event or a link moves it to the login id. A session that runs past the
  day after its start (more than a day of activity with no pause longer than
  the timeout, e.g. a monitoring bot) is kept exact only by a rebuild that
  covers its whole span.
"""

from __future__ import annotations

from typing import Any

from cohortflow.config import Config

TABLES = {"meta.def_paths": "start_event varchar not null"}


def rows(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    start = cfg.analyses.paths.start_event
    return {"meta.def_paths": [] if start is None else [{"start_event": start}]}


def params(cfg: Config) -> dict[str, Any]:
    return {
        "session_timeout_minutes": cfg.analyses.sessions.timeout_minutes,
        "path_max_steps": cfg.analyses.paths.max_steps,
        "path_top_n": cfg.analyses.paths.top_n,
    }


def session_reach_days(cfg: Config) -> int:
    """A session starts on its first event's date and may run into the next date."""
    return 1


REACH = {"sessions": session_reach_days}

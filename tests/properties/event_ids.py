"""Event ids as raw.events holds them: unique per (source, load date), not alone.

Deduplication works per source and within the lookback, so another source, or a copy loaded outside the lookback,
can carry an id already used, for another user, at another time, with other properties. The generators draw such
ids now and then; the models must keep the events apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from hypothesis import strategies as st


def draw_event_id(draw, events: list[dict], t: dt.datetime, fresh: Callable[[], str]) -> tuple[str, str]:
    """An (event_id, source_name) for a new event at ``t``: usually a fresh id from the source ``app``; sometimes an
    id already used, from a source of its own (so (source, load date, id) stays unique, as ingest guarantees).
    Never an id already used at the same millisecond: two copies of one id there have no defined order."""
    taken_at_t = {e["event_id"] for e in events if e["event_time"] == t}
    reusable = sorted({e["event_id"] for e in events} - taken_at_t)
    if reusable and draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(reusable)), f"src{len(events)}"
    return fresh(), "app"

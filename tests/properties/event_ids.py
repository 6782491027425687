"""Event ids as raw.events holds them: unique per (source, load date), not alone.

Deduplication works per source and within the lookback, so another source, or a copy loaded outside the lookback,
can carry an id already used, for another user, at another time, with other properties. The generators draw such
ids now and then; the models must keep the events apart.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st


def draw_event_id(draw, events: list[dict], fresh: Callable[[], str], twin_of: dict | None = None) -> tuple[str, str]:
    """An (event_id, source_name) for a new event: usually a fresh id from the source ``app``; sometimes an id already
    used, from a source of its own (so (source, load date, id) stays unique, as ingest guarantees). The reused id may
    be at the same millisecond as its other copies (for the same user or another): the models order such copies by
    source and load date. With ``twin_of``: see :func:`draw_twin_id`."""
    if twin_of is not None:
        return draw_twin_id(draw, twin_of, events, fresh)
    reusable = sorted({e["event_id"] for e in events})
    if reusable and draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(reusable)), f"src{len(events)}"
    return fresh(), "app"


def draw_twin_id(draw, of: dict, events: list[dict], fresh: Callable[[], str]) -> tuple[str, str]:
    """An (event_id, source_name) for a second event of ``of``'s user at ``of``'s millisecond: a fresh id, or ``of``'s
    own id from a source of its own (a copy of the id another source sent, with its own name and properties). Those
    copies tie on time and id: the models order them by source and load date."""
    if draw(st.booleans()):
        return of["event_id"], f"twin{len(events)}"
    return fresh(), "app"

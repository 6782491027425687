"""SDK adapters: one module per raw format, each exposing ``parse_line``.

``parse_line(raw: bytes) -> CanonicalEvent`` maps one raw line (without its
trailing newline) or raises :class:`cohortflow.events.LineError`. Adapters are
pure functions of the line: checks that need the run's context (time window
against the business date, size limits from config) live in the ingest.
"""

from __future__ import annotations

from collections.abc import Callable

from cohortflow.events import CanonicalEvent

Adapter = Callable[[bytes], CanonicalEvent]

FORMATS = ("ark", "sensors", "segment", "posthog", "canonical")


def get_adapter(fmt: str) -> Adapter:
    """The ``parse_line`` function of a format name."""
    if fmt == "ark":
        from cohortflow.adapters.ark import parse_line
    elif fmt == "sensors":
        from cohortflow.adapters.sensors import parse_line
    elif fmt == "segment":
        from cohortflow.adapters.segment import parse_line
    elif fmt == "posthog":
        from cohortflow.adapters.posthog import parse_line
    elif fmt == "canonical":
        from cohortflow.adapters.canonical import parse_line
    else:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return parse_line


def get_fast_mapper(fmt: str) -> Callable[[dict], tuple]:
    """The ``map_fast`` function of a format name: the common clean line of the format, decoded, as the mapped row
    (``_common.MAPPED``); any other line raises and is left to ``parse_line``."""
    if fmt == "ark":
        from cohortflow.adapters.ark import map_fast
    elif fmt == "sensors":
        from cohortflow.adapters.sensors import map_fast
    elif fmt == "segment":
        from cohortflow.adapters.segment import map_fast
    elif fmt == "posthog":
        from cohortflow.adapters.posthog import map_fast
    elif fmt == "canonical":
        from cohortflow.adapters.canonical import map_fast
    else:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return map_fast

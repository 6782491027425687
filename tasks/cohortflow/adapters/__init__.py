"""SDK adapters: one module per raw format, each exposing ``parse_line``.

``parse_line(raw: bytes) -> CanonicalEvent`` maps one raw line (without its
trailing newline) or raises :class:`cohortflow.events.LineError`. Adapters are
pure functions of the line: checks that need the run's context (time window
against the business date, size limits from config) live in the ingest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from cohortflow.events import CanonicalEvent

Adapter = Callable[[bytes], CanonicalEvent]

FORMATS = ("ark", "sensors", "segment", "posthog", "canonical")


def _module(fmt: str) -> ModuleType:
    if fmt not in FORMATS:
        raise ValueError(f"unknown source format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return importlib.import_module(f"cohortflow.adapters.{fmt}")


def get_adapter(fmt: str) -> Adapter:
    """The ``parse_line`` function of a format name."""
    return _module(fmt).parse_line


def get_fast_mapper(fmt: str) -> Callable[[dict], tuple]:
    """The ``map_fast`` function of a format name: the common clean line of the format, decoded, as the mapped row
    (``_common.MAPPED``); any other line raises and is left to ``parse_line``."""
    return _module(fmt).map_fast

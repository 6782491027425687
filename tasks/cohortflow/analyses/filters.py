"""Property filters as the rows the SQL joins (meta.def_*_filters, meta.def_segment_values): one encoding of a
filter value for funnel steps, retention events and segment rules. sql/macros/filters.sql evaluates them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cohortflow.config import PropertyFilter

# Operators that hold when no listed value matches.
NEGATED_OPS = {"neq", "not_in", "is_not_set"}


def value_columns(value: Any) -> dict[str, Any]:
    """``value_kind``, ``value_text`` and ``value_number`` of one listed value: numbers compare as numbers (their
    JSON text kept), booleans and strings as text."""
    if value is None:
        return {"value_kind": "none", "value_text": None, "value_number": None}
    if isinstance(value, bool):
        return {"value_kind": "boolean", "value_text": "true" if value else "false", "value_number": None}
    if isinstance(value, int | float):
        return {"value_kind": "number", "value_text": json.dumps(value), "value_number": float(value)}
    return {"value_kind": "string", "value_text": value, "value_number": None}


def filter_rows(keys: Mapping[str, Any], where: list[PropertyFilter]) -> list[dict[str, Any]]:
    """One row per (filter, listed value), each starting with ``keys``; ``in``/``not_in`` give a row per value."""
    out = []
    for no, f in enumerate(where, start=1):
        for v in f.value if isinstance(f.value, list) else [f.value]:
            out.append({
                **keys,
                "filter_no": no,
                "property": f.property,
                "op": f.op,
                **value_columns(v),
                "is_negated": f.op in NEGATED_OPS,
            })
    return out

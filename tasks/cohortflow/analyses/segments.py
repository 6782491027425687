"""Segments: rule trees of ``analyses.segments`` as rows the segment models evaluate.

A segment is a rule evaluated for every as-of date D (a business date):

* leaf ``did_event: X, min_count: N, days: Y``: the user has at least N events
  named X (after deduplication; any event of that name, bookkeeping ones too
  when a rule names them) on the Y local dates ending on D, i.e.
  ``event_date`` in ``[D - Y + 1, D]``;
* leaf ``first_seen_within_days: Y``: the user's first-ever activity date (over
  all history, not clipped to the lookback) is in ``[D - Y + 1, D]``;
* leaf ``latest_property: {property, op, value}``: the filter holds on the
  user's latest activity event with ``event_date <= D``; latest = the largest
  ``event_time``, ties broken by the largest ``event_id`` (binary order);
* ``and`` (all children hold), ``or`` (at least one holds), ``not`` (its one
  child does not hold).

The universe of D is every user (resolved ``user_id``) with at least one
activity event on or before D. Members are always in the universe: ``not``
is the complement within it, and a user with no activity yet (say, only an
identity event) is in no segment, even one that names that event.

Property filters (``latest_property``): the property is the column of that
name for ``platform``, ``app_version`` and ``channel``, otherwise the key of the
event's JSON properties (absent or JSON null = not set). ``is_set`` /
``is_not_set`` test presence. With a number value, ``eq``/``in``/``gt``/``gte``/
``lt``/``lte`` compare numerically (a property whose text is not a plain
decimal number -- optional ``-``, 1-200 digits, optional fraction, optional
exponent of 1-2 digits -- never matches; a JSON ``true`` is not a number); with a string or boolean value they compare the
property's text (``true``/``false`` for booleans), ordered comparisons in
binary (code point) order. ``contains`` is a case-sensitive substring test of
the text. ``neq`` is ``not eq`` and ``not_in`` is ``not in``: they hold when
the property is not set.

Rows (config values never become SQL text):

* ``meta.def_segment_nodes``: one row per node of each rule tree, numbered in
  preorder from 1 (the root), with its parent and depth (root = 1), its kind
  (``did_event``, ``first_seen``, ``latest_property``, ``and``, ``or``,
  ``not``), its number of children, and the leaf's parameters;
* ``meta.def_segment_values``: the value(s) of a ``latest_property`` filter,
  one row per value (``in``/``not_in`` lists have several), typed by
  ``value_kind`` (``string``, ``number``, ``boolean``).

Reach ``segments``: 0 days. Membership on D depends only on events dated on
or before D (windows end on D, the latest event is up to D, first activity
and the universe only move when an event is dated on or before D). An event
dated X (late, or merged into a user by a late identity link) changes the
as-of dates X .. X + Y - 1 of a ``did_event`` / ``first_seen_within_days`` leaf
with window Y, and any date >= X for ``latest_property`` and ``not``: all on or
after X, and a nightly build already covers X through the business date. No
partition before X can change, so no extra days are rebuilt before it.
"""

from __future__ import annotations

from typing import Any

from cohortflow.analyses.filters import value_columns
from cohortflow.config import MAX_SEGMENT_DEPTH, Config, PropertyFilter, SegmentRule

NODES = "meta.def_segment_nodes"
VALUES = "meta.def_segment_values"

TABLES = {
    NODES: (
        "segment_name varchar not null, node_id integer not null, parent_id integer, depth integer not null, "
        "kind varchar not null, child_count integer not null, event_name varchar, min_count integer, days integer, "
        "property_key varchar, op varchar"
    ),
    VALUES: (
        "segment_name varchar not null, node_id integer not null, value_kind varchar not null, "
        "value_text varchar not null, value_number double"
    ),
}


def _children(rule: SegmentRule) -> list[SegmentRule]:
    if rule.and_ is not None:
        return list(rule.and_)
    if rule.or_ is not None:
        return list(rule.or_)
    if rule.not_ is not None:
        return [rule.not_]
    return []


def _kind(rule: SegmentRule) -> str:
    if rule.did_event is not None:
        return "did_event"
    if rule.first_seen_within_days is not None:
        return "first_seen"
    if rule.latest_property is not None:
        return "latest_property"
    if rule.and_ is not None:
        return "and"
    if rule.or_ is not None:
        return "or"
    return "not"


def segment_rows(name: str, rule: SegmentRule) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The node rows and value rows of one segment's rule tree (preorder ids from 1)."""
    nodes: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []

    def visit(r: SegmentRule, parent: int | None, depth: int) -> None:
        if depth > MAX_SEGMENT_DEPTH:  # the config validator says so first; the SQL has no pass beyond
            raise ValueError(f"segment {name}: rule deeper than {MAX_SEGMENT_DEPTH} levels")
        node_id = len(nodes) + 1
        kind = _kind(r)
        children = _children(r)
        flt: PropertyFilter | None = r.latest_property
        nodes.append({
            "segment_name": name,
            "node_id": node_id,
            "parent_id": parent,
            "depth": depth,
            "kind": kind,
            "child_count": len(children),
            "event_name": r.did_event,
            "min_count": r.min_count if kind == "did_event" else None,
            "days": r.days if kind == "did_event" else r.first_seen_within_days,
            "property_key": flt.property if flt is not None else None,
            "op": flt.op if flt is not None else None,
        })
        if flt is not None and flt.value is not None:
            for v in flt.value if isinstance(flt.value, list) else [flt.value]:
                values.append({"segment_name": name, "node_id": node_id, **value_columns(v)})
        for child in children:
            visit(child, node_id, depth + 1)

    visit(rule, None, 1)
    return nodes, values


def rows(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    nodes: list[dict[str, Any]] = []
    values: list[dict[str, Any]] = []
    for segment in cfg.analyses.segments:
        n, v = segment_rows(segment.name, segment.rule)
        nodes += n
        values += v
    return {NODES: nodes, VALUES: values}


def segment_reach_days(cfg: Config) -> int:
    """No partition before a changed date can change (see the module docstring)."""
    return 0


REACH = {"segments": segment_reach_days}

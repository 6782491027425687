"""Analysis definitions from config, as data the SQL models join.

Names, property keys and values from the config never become SQL text: each
analysis module turns its definitions into rows of ``meta.def_*`` tables,
which the models read like any other table. A module of this package may
define:

* ``TABLES``: ``{"meta.def_x": "col type, ..."}`` (source dialect);
* ``rows(cfg) -> {"meta.def_x": [ {col: value}, ... ]}``;
* ``REACH``: ``{"reach_name": fn(cfg) -> days}``: how far before a changed
  date a model's partitions can change (a model's yml names it as ``reach``);
* ``params(cfg) -> {name: value}``: scalar parameters bound to every model.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from functools import cache
from types import ModuleType
from typing import Any

from cohortflow.config import Config


@cache
def modules() -> tuple[ModuleType, ...]:
    return tuple(
        importlib.import_module(f"{__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)
        if not info.name.startswith("_")
    )


def reach_days(name: str | None, cfg: Config) -> int:
    if not name:
        return 0
    for module in modules():
        fn = getattr(module, "REACH", {}).get(name)
        if fn is not None:
            return int(fn(cfg))
    raise KeyError(f"unknown reach {name!r} (declared by no module of cohortflow.analyses)")


def model_params(cfg: Config) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for module in modules():
        if hasattr(module, "params"):
            params.update(module.params(cfg))
    return params


def _ensure_table(wh, conn, table: str, columns: str, have: list[str]) -> None:
    """Create a definition table, or re-create it when its columns (``have``) differ (it holds config rows only)."""
    if have == _column_names(columns):
        return
    if have:
        wh.execute(conn, f"drop table {table}")
    wh.execute(conn, f"create table {table} ({columns})")


def _column_names(columns: str) -> list[str]:
    """The names of a ``TABLES`` column list ("col type, ..."), in order."""
    return [c.strip().split()[0] for c in columns.split(",")]


DEFINITIONS_STATE = "meta.definitions_state"


def _definitions_fingerprint(data: dict[str, tuple[str, list[dict[str, Any]]]]) -> str:
    text = json.dumps({table: [columns, rows] for table, (columns, rows) in sorted(data.items())}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_definitions(wh, conn, cfg: Config) -> dict[str, int]:
    """Replace every ``meta.def_*`` table with the rows of the current config.

    ``meta.definitions_state`` holds the fingerprint of the columns and rows the tables were last given: when it
    matches and every table has its columns, nothing is written (two statements a night instead of three per
    table, which on Trino is seconds)."""
    data: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for module in modules():
        tables: dict[str, str] = getattr(module, "TABLES", {})
        if tables:
            rows = module.rows(cfg)
            data.update({table: (columns, rows.get(table, [])) for table, columns in tables.items()})
    counts = {table: len(rows) for table, (_columns, rows) in data.items()}
    fingerprint = _definitions_fingerprint(data)
    have = wh.schema_columns(conn, "meta")
    shaped = all(have.get(table) == _column_names(columns) for table, (columns, _rows) in data.items())
    if shaped and DEFINITIONS_STATE in have:
        if wh.scalar(conn, f"select max(fingerprint) from {DEFINITIONS_STATE}") == fingerprint:
            return counts
    for table, (columns, rows) in data.items():
        _ensure_table(wh, conn, table, columns, have.get(table, []))
        wh.execute(conn, f"delete from {table}")
        if rows:
            wh.insert_rows(conn, table, rows)
    if DEFINITIONS_STATE not in have:
        wh.execute(conn, f"create table if not exists {DEFINITIONS_STATE} (fingerprint varchar not null)")
    wh.execute(conn, f"delete from {DEFINITIONS_STATE}")
    wh.execute(conn, f"insert into {DEFINITIONS_STATE} (fingerprint) values (:f)", {"f": fingerprint})
    return counts


def definition_rows(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Every ``meta.def_*`` table's rows for the current config (what :func:`load_definitions` writes)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for module in modules():
        if getattr(module, "TABLES", None):
            data = module.rows(cfg)
            for table in module.TABLES:
                out[table] = data.get(table, [])
    return out

"""The BI contract: what each published table and column means, from the model ymls.

``sql/models/<name>.yml`` of every published model is the one source of truth
for the ``reports`` schema. Besides the model's own columns it declares, per
table, the ``grain`` and (where breakdown or overall rows exist) how the rows
relate (``rows``); per column the ``unit`` of a number and the decimals a
double is rounded to when published (``round``); a column published with
another type or value (``published: {type, expr, description, unit}``); and
columns only the published table has (``published_columns``, each with the
``expr`` that computes it from the model's row and the column it follows).

From these declarations come, so that they cannot drift apart:

* the DDL of ``reports.<table>`` and the SELECT that publishes it from
  ``models.<table>`` (:meth:`PublishedTable.create_sql`, :meth:`select_sql`);
* the table and column comments on PostgreSQL and in the DuckDB files;
* the Parquet field metadata of the snapshots;
* the reference document ``docs/reference.md`` (``cohortflow reference``).
"""

from __future__ import annotations

import hashlib
import importlib.resources
from dataclasses import dataclass
from functools import cache

import yaml

from cohortflow.warehouse import check_identifier

TYPE_NAMES = {"date", "bigint", "double", "varchar", "boolean", "timestamp"}

# How a reader tells an 'all users' row from a breakdown row, per column that carries it.
ALL_ROWS = {"breakdown_value": "all"}

REFERENCE_PATH = "docs/reference.md"


class ContractError(ValueError):
    """A model yml does not declare its published table completely."""


@dataclass(frozen=True)
class PublishedColumn:
    name: str
    type: str
    description: str
    unit: str | None = None
    round: int | None = None
    # Source-dialect SQL over the model's row; None = the model's column of the same name.
    expr: str | None = None

    @property
    def select_expr(self) -> str:
        value = self.expr or self.name
        if self.round is not None:
            value = f"round({value}, {self.round})"
        return value

    @property
    def comment(self) -> str:
        """The column comment: the description, then unit and rounding."""
        notes = []
        if self.unit:
            notes.append(f"unit: {self.unit}")
        if self.round is not None:
            notes.append(f"rounded to {self.round} decimals")
        return self.description + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class PublishedTable:
    name: str
    description: str
    grain: str
    rows: str | None
    partition_by: str | None
    columns: tuple[PublishedColumn, ...]

    @property
    def comment(self) -> str:
        """The table comment: description, grain and how the rows relate."""
        text = f"{self.description} Grain: {self.grain}."
        if self.rows:
            text += f" Rows: {self.rows}"
        return text

    def column(self, name: str) -> PublishedColumn:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"reports.{self.name} has no column {name!r}")

    def create_sql(self, schema: str = "reports") -> str:
        cols = ",\n    ".join(f"{c.name} {c.type}" for c in self.columns)
        return f"create table if not exists {schema}.{self.name} (\n    {cols}\n)"

    def select_sql(self, source: str | None = None, where: str = "") -> str:
        """The SELECT (source dialect) that gives the published rows from the model table."""
        exprs = ",\n    ".join(
            c.name if c.select_expr == c.name else f"{c.select_expr} as {c.name}" for c in self.columns
        )
        return f"select\n    {exprs}\nfrom {source or 'models.' + self.name}{where}"

    @property
    def fingerprint(self) -> str:
        """Changes whenever the published shape or values of the table change (names, types, expressions)."""
        text = "\n".join(f"{c.name} {c.type} {c.select_expr}" for c in self.columns)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def comments_fingerprint(self) -> str:
        """Changes whenever the table's or a column's comment changes."""
        text = "\n".join([self.comment, *(f"{c.name} {c.comment}" for c in self.columns)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ContractError(f"{where}: a non-empty description is required")
    return " ".join(value.split())


def _column(model: str, name: str, spec: dict, *, extra: bool) -> PublishedColumn:
    where = f"sql/models/{model}.yml: column {name}"
    check_identifier(name)
    over = spec.get("published") or {}
    ctype = over.get("type", spec.get("type"))
    if ctype not in TYPE_NAMES:
        raise ContractError(f"{where}: unknown type {ctype!r}")
    unit = over.get("unit", spec.get("unit"))
    rnd = over.get("round", spec.get("round"))
    if ctype in ("bigint", "double") and not unit:
        raise ContractError(f"{where}: a number needs its unit (unit: users, events, seconds, ratio 0-1 ...)")
    if ctype == "double" and rnd is None:
        raise ContractError(f"{where}: a double needs the decimals it is published with (round: 6)")
    if rnd is not None and ctype != "double":
        raise ContractError(f"{where}: round applies to doubles only")
    expr = over.get("expr", spec.get("expr") if extra else None)
    if extra and not expr:
        raise ContractError(f"{where}: a published-only column needs the expr that computes it")
    return PublishedColumn(
        name=name,
        type=ctype,
        description=_text(over.get("description", spec.get("description")), where),
        unit=unit,
        round=rnd,
        expr=expr,
    )


def table_from_yml(name: str, spec: dict) -> PublishedTable:
    """The published table a model yml declares."""
    where = f"sql/models/{name}.yml"
    if not spec.get("grain"):
        raise ContractError(f"{where}: a published model declares its grain")
    columns = [_column(name, col, c, extra=False) for col, c in (spec.get("columns") or {}).items()]
    for col, c in (spec.get("published_columns") or {}).items():
        after = c.get("after")
        names = [x.name for x in columns]
        if after not in names:
            raise ContractError(f"{where}: published column {col} must name the column it follows (after:)")
        columns.insert(names.index(after) + 1, _column(name, col, c, extra=True))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ContractError(f"{where}: a published column name repeats")
    if "breakdown_value" in names and not spec.get("rows"):
        raise ContractError(f"{where}: a table with breakdown rows says how they relate to the 'all' rows (rows:)")
    return PublishedTable(
        name=name,
        description=_text(spec.get("description"), where),
        grain=" ".join(str(spec["grain"]).split()),
        rows=" ".join(spec["rows"].split()) if spec.get("rows") else None,
        partition_by=spec.get("partition_by"),
        columns=tuple(columns),
    )


@cache
def published_tables() -> dict[str, PublishedTable]:
    """Every table of ``reports``, by name, in model order."""
    from cohortflow.models import published_models

    root = importlib.resources.files("cohortflow.sql")
    out = {}
    for model in published_models():
        spec = yaml.safe_load(root.joinpath(model.layer, f"{model.name}.yml").read_text(encoding="utf-8"))
        out[model.name] = table_from_yml(model.name, spec)
    return out


def table(name: str) -> PublishedTable:
    return published_tables()[name]


# -- the reference document ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """``docs/reference.md``: every published table and column, generated from the model ymls."""
    tables = published_tables()
    out = [
        "# Published tables (reports)",
        "",
        "<!-- Generated from sql/models/*.yml by `cohortflow reference --output docs/reference.md`; do not edit by hand."
        " `cohortflow reference --check` (and the test suite) fails when this file is out of date. -->",
        "",
        "The `reports` schema is cohortflow's public interface for BI tools. The same descriptions are the table and",
        "column comments on PostgreSQL, in the DuckDB copy `target/published/reports.duckdb`, and the field metadata",
        "of the Parquet snapshots. Schema changes are listed in `CHANGELOG.md`.",
        "",
        "## Reading the tables",
        "",
        "- **Dates** are calendar dates in the project time zone; weeks start on Monday.",
        "- **Numbers**: counts are integers (`bigint`) in the unit given per column (users, events, sessions ...).",
        "  Every `double` is published rounded to the decimals given per column: ratios are fractions between 0 and 1",
        "  (0.25 = 25 %), durations are in seconds.",
        "- **'all' rows.** Tables split by a breakdown hold, besides the rows of each breakdown value, rows with",
        "  `breakdown_value = 'all'` for every user. To read all users, filter `where breakdown_value = 'all'`; to",
        "  compare values, filter `where breakdown_value <> 'all'`. Never sum over both: every user would count",
        "  twice. `frequency_retention` has the same shape with `is_overall` (the rows over every cohort week).",
        "- **Rates over several rows** are `sum(numerator) / sum(denominator)` (e.g. `sum(retained_users) /",
        "  sum(cohort_users)`), never an average of rates.",
        "- **`is_complete`** is true once the row's window or period has ended by the business date, so that the",
        "  pipeline's later nights no longer change it; each table's `is_complete` column says exactly when. Rows",
        "  with `is_complete = false` are numbers so far: they can still rise. Charts draw them hatched or dotted.",
        "- **Reading while the pipeline runs**: PostgreSQL readers see each night's publish at once (one",
        "  transaction); DuckDB readers open `target/published/reports.duckdb` read-only (replaced whole after each",
        "  publish); snapshot readers read `target/snapshots/latest/<table>.parquet` (moved after a successful",
        "  night; `manifest.json` beside the files gives the business date, row counts and checksums).",
        "",
        "| table | grain |",
        "|---|---|",
    ]
    for t in tables.values():
        out.append(f"| [`{t.name}`](#{t.name}) | {_cell(t.grain)} |")
    for t in tables.values():
        out += ["", f"## {t.name}", "", t.description, "", f"**Grain:** {t.grain}."]
        if t.partition_by:
            out += ["", f"Rebuilt per `{t.partition_by}`."]
        if t.rows:
            out += ["", f"**Rows:** {t.rows}"]
        out += ["", "| column | type | unit | description |", "|---|---|---|---|"]
        for c in t.columns:
            unit = c.unit or ""
            if c.round is not None:
                unit += f", {c.round} decimals"
            out.append(f"| `{c.name}` | {c.type} | {_cell(unit)} | {_cell(c.description)} |")
    return "\n".join(out) + "\n"

"""Build the SQL models in ``sql/`` for the dates the new data can change.

Each model is one SELECT in ``sql/<layer>/<name>.sql``; ``sql/schema.yml``
says how it is materialised. The runner decides the materialisation:

* ``view``: recreated on every build (the staging layer: always current);
* ``partition``: rows for ``[start_date, end_date]`` of the partition column are
  deleted and re-inserted in one transaction per model.

The date range of a nightly build is the earliest date the business date's
load touched (its events' dates, and every date of the ids it newly linked),
or the day after the last build if nights were skipped, clipped to the
lookback, through the business date.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import yaml

from cohortflow.config import Config
from cohortflow.warehouse import Warehouse, check_identifier

TYPE_NAMES = {"date", "bigint", "double", "varchar", "boolean", "timestamp"}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class Model:
    name: str
    layer: str
    materialized: str
    description: str
    sql: str
    partition_by: str | None = None
    publish: bool = False
    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def table(self) -> str:
        return f"models.{self.name}"

    def create_sql(self, schema: str) -> str:
        cols = ",\n    ".join(f"{c.name} {c.type}" for c in self.columns)
        return f"create table if not exists {schema}.{self.name} (\n    {cols}\n)"


def _sql_root():
    return importlib.resources.files("cohortflow.sql")


@cache
def load_models() -> dict[str, Model]:
    """Every model of ``sql/schema.yml`` with its SQL, in declaration (dependency) order."""
    root = _sql_root()
    spec = yaml.safe_load(root.joinpath("schema.yml").read_text(encoding="utf-8"))["models"]
    models: dict[str, Model] = {}
    for name, m in spec.items():
        check_identifier(name)
        sql_file = root.joinpath(m["layer"], f"{name}.sql")
        sql = sql_file.read_text(encoding="utf-8")
        if not sql.lstrip().startswith("/*"):
            raise ValueError(f"sql/{m['layer']}/{name}.sql must open with a /* purpose and grain */ comment")
        columns = []
        for col, c in (m.get("columns") or {}).items():
            check_identifier(col)
            if c["type"] not in TYPE_NAMES:
                raise ValueError(f"model {name}: column {col} has unknown type {c['type']!r}")
            columns.append(Column(col, c["type"], c.get("description", "")))
        model = Model(
            name=name,
            layer=m["layer"],
            materialized=m["materialized"],
            description=m.get("description", ""),
            sql=sql,
            partition_by=m.get("partition_by"),
            publish=bool(m.get("publish", False)),
            columns=tuple(columns),
        )
        if model.materialized == "partition" and (not model.partition_by or not model.columns):
            raise ValueError(f"model {name}: a partition model needs partition_by and columns")
        models[name] = model
    return models


def published_models() -> list[Model]:
    return [m for m in load_models().values() if m.publish]


def model_statements(model: Model) -> list[str]:
    """The statements (source dialect, ``:start_date``/``:end_date`` bound) that build a model."""
    body = model.sql.strip().rstrip(";")
    if model.materialized == "view":
        return [f"create or replace view {model.table} as\n{body}"]
    cols = ", ".join(c.name for c in model.columns)
    return [
        model.create_sql("models"),
        f"delete from {model.table} where {model.partition_by} between :start_date and :end_date",
        f"insert into {model.table} ({cols})\nselect {cols} from (\n{body}\n) as model_rows",
    ]


def affected_range(wh: Warehouse, cfg: Config, business_date: dt.date) -> tuple[dt.date, dt.date]:
    """The dates the business date's load can change, clipped to the lookback."""
    floor = business_date - dt.timedelta(days=cfg.ingest.lookback_days)
    sql = """
        with loaded as (
            select min(event_date) as first_date from raw.events where load_date = :d
        ),
        newly_linked as (
            select min(e.event_date) as first_date
            from raw.events as e
            where e.distinct_id in (
                select l.link_anonymous_id from raw.events as l
                where l.load_date = :d and l.link_anonymous_id is not null
            )
        )
        select least(
            coalesce((select first_date from loaded), cast(:d as date)),
            coalesce((select first_date from newly_linked), cast(:d as date))
        )
    """
    with wh.begin() as conn:
        first = wh.scalar(conn, sql, {"d": business_date})
        # A night that never ran leaves a gap: fill it from the day after the last build.
        last_end = wh.scalar(
            conn, "select max(end_date) from meta.model_builds where business_date < :d", {"d": business_date}
        )
    if isinstance(first, dt.datetime):
        first = first.date()
    first = first or business_date
    if last_end is not None and last_end + dt.timedelta(days=1) < first:
        first = last_end + dt.timedelta(days=1)
    start = max(first, floor)
    return min(start, business_date), business_date


def build_models(
    wh: Warehouse,
    cfg: Config,
    start_date: dt.date,
    end_date: dt.date,
    progress: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Build every model for ``[start_date, end_date]``; return rows written per partition model."""
    params = {"start_date": start_date, "end_date": end_date}
    written: dict[str, int] = {}
    for model in load_models().values():
        with wh.begin() as conn:
            # Builds of one model wait for each other (two dates in parallel on PostgreSQL).
            wh.lock(conn, f"cohortflow:model:{model.name}")
            for stmt in model_statements(model):
                wh.execute(conn, stmt, params if ":" in stmt else None)
            if model.materialized == "partition":
                written[model.name] = wh.scalar(
                    conn,
                    f"select count(*) from {model.table} where {model.partition_by} between :start_date and :end_date",
                    params,
                )
        if progress:
            extra = f": {written[model.name]:,} rows" if model.name in written else ""
            progress(f"  built {model.table} ({model.materialized}){extra}")
    return written


def record_build(wh: Warehouse, business_date: dt.date, start: dt.date, end: dt.date) -> None:
    """Remember the range built for a business date; publish reads it."""
    with wh.begin() as conn:
        wh.execute(conn, "delete from meta.model_builds where business_date = :d", {"d": business_date})
        wh.execute(
            conn,
            "insert into meta.model_builds values (:d, :s, :e, :t)",
            {"d": business_date, "s": start, "e": end, "t": dt.datetime.now(dt.UTC).replace(tzinfo=None)},
        )


def built_range(wh: Warehouse, business_date: dt.date) -> tuple[dt.date, dt.date] | None:
    with wh.begin() as conn:
        row = wh.execute(
            conn, "select start_date, end_date from meta.model_builds where business_date = :d", {"d": business_date}
        ).first()
    return (row[0], row[1]) if row else None


def render_model(name: str, dialect: str, start_date: dt.date, end_date: dt.date) -> str:
    """The exact SQL a model runs on an engine, with the bound parameters listed."""
    from cohortflow.warehouse import render

    models = load_models()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; models: {', '.join(models)}")
    stmts = [render(s, dialect) for s in model_statements(models[name])]
    header = f"-- model {name} on {dialect}; bound parameters: start_date={start_date}, end_date={end_date}\n"
    return header + ";\n\n".join(stmts) + ";\n"

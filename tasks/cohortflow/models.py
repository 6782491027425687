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
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import sqlalchemy as sa
import sqlglot
import yaml

from cohortflow.config import Config
from cohortflow.warehouse import Warehouse, check_identifier, render, trino_scratch_tables, trino_table_ddl

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
    # Name of a reach function in cohortflow.analyses: how many days before the
    # changed dates this model's partitions can change (funnel window, horizon ...).
    reach: str | None = None
    depends_on: tuple[str, ...] = ()
    # Per-engine CTEs that replace the model's same-named CTEs (engine, sql: a WITH query in the source dialect);
    # each file explains its reason.
    overrides: tuple[tuple[str, str], ...] = ()
    # The model holds history other models read (not just the dates it is asked for): a full rebuild rebuilds it
    # from the first loaded event, whatever range it is given.
    is_history: bool = False
    # Planner settings applied (SET LOCAL) while the model builds on PostgreSQL; each explains its reason in the yml.
    postgres_settings: tuple[tuple[str, str], ...] = ()

    def sql_for(self, dialect: str) -> str | None:
        """The engine's replacement CTEs, if any."""
        return dict(self.overrides).get(dialect)

    @property
    def table(self) -> str:
        return f"models.{self.name}"

    def create_sql(self, schema: str) -> str:
        cols = ",\n    ".join(f"{c.name} {c.type}" for c in self.columns)
        return f"create table if not exists {schema}.{self.name} (\n    {cols}\n)"


def _sql_root():
    return importlib.resources.files("cohortflow.sql")


def _walk(node, prefix=""):
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir() and not child.name.startswith(("_", ".")):
            yield from _walk(child, f"{prefix}{child.name}/")
        elif child.name.endswith(".yml"):
            yield prefix, child


@cache
def load_models() -> dict[str, Model]:
    """Every model of ``sql/<layer>/<name>.yml`` + ``.sql``, in dependency order."""
    found: dict[str, Model] = {}
    deps: dict[str, list[str]] = {}
    for layer_path, yml in _walk(_sql_root()):
        layer = layer_path.rstrip("/")
        name = yml.name[: -len(".yml")]
        check_identifier(name)
        m = yaml.safe_load(yml.read_text(encoding="utf-8"))
        sql_file = yml.parent.joinpath(f"{name}.sql")
        sql = sql_file.read_text(encoding="utf-8")
        if not sql.lstrip().startswith("/*"):
            raise ValueError(f"sql/{layer}/{name}.sql must open with a /* purpose and grain */ comment")
        overrides = {}
        for engine in ("postgres", "duckdb", "trino"):
            variant = yml.parent.joinpath(f"{name}.{engine}.sql")
            if variant.is_file():
                text = variant.read_text(encoding="utf-8")
                if not text.lstrip().startswith("/*") or "reason" not in text.lower()[:1000]:
                    raise ValueError(f"sql/{layer}/{name}.{engine}.sql must open with a comment giving the reason for the override")
                try:
                    # (the call model_statements makes, so that render's cache serves the build)
                    render(sql.strip().rstrip(";"), engine, ctes=text)
                except (ValueError, sqlglot.errors.SqlglotError) as err:
                    raise ValueError(f"sql/{layer}/{name}.{engine}.sql: {err}") from err
                overrides[engine] = text
        columns = []
        for col, c in (m.get("columns") or {}).items():
            check_identifier(col)
            if c["type"] not in TYPE_NAMES:
                raise ValueError(f"model {name}: column {col} has unknown type {c['type']!r}")
            columns.append(Column(col, c["type"], c.get("description", "")))
        model = Model(
            name=name,
            layer=layer,
            materialized=m["materialized"],
            description=m.get("description", ""),
            sql=sql,
            partition_by=m.get("partition_by"),
            publish=bool(m.get("publish", False)),
            columns=tuple(columns),
            reach=m.get("reach"),
            overrides=tuple(sorted(overrides.items())),
            depends_on=tuple(m.get("depends_on") or []),
            postgres_settings=_postgres_settings(name, m.get("postgres_settings")),
            is_history=bool(m.get("history", False)),
        )
        if model.materialized not in ("view", "partition", "table"):
            raise ValueError(f"model {name}: materialized must be view, partition or table")
        if model.materialized == "partition" and (not model.partition_by or not model.columns):
            raise ValueError(f"model {name}: a partition model needs partition_by and columns")
        if model.materialized == "table" and not model.columns:
            raise ValueError(f"model {name}: a table model needs columns")
        if name in found:
            raise ValueError(f"model {name} is defined twice")
        found[name] = model
        deps[name] = list(m.get("depends_on") or [])
    ordered: dict[str, Model] = {}
    pending = sorted(found)
    while pending:
        ready = [n for n in pending if all(d in ordered for d in deps[n])]
        if not ready:
            missing = {d for n in pending for d in deps[n] if d not in found}
            raise ValueError(f"models cannot be ordered: {'unknown dependencies ' + str(sorted(missing)) if missing else 'a cycle among ' + str(pending)}")
        for n in ready:
            ordered[n] = found[n]
            pending.remove(n)
    return ordered


# The PostgreSQL settings a model may change for its own build (transaction-local, planner only).
POSTGRES_SETTINGS = {"enable_nestloop", "enable_mergejoin", "enable_hashjoin", "work_mem", "jit"}


# Applied to every model build on PostgreSQL. JIT compiles these long queries for seconds (4 s of a 4.3 s funnel
# build and 3.2 s of a 3.3 s retention build on the demo data), far more than it saves; a model can turn it back on.
POSTGRES_BUILD_DEFAULTS = {"jit": "off"}


def _postgres_settings(name: str, settings) -> tuple[tuple[str, str], ...]:
    if not settings:
        return ()
    if not isinstance(settings, dict):
        raise ValueError(f"model {name}: postgres_settings must be a mapping of setting to value")
    unknown = sorted(set(settings) - POSTGRES_SETTINGS)
    if unknown:
        raise ValueError(f"model {name}: postgres_settings {unknown} not allowed (allowed: {sorted(POSTGRES_SETTINGS)})")
    out = []
    for key, value in sorted(settings.items()):
        if isinstance(value, bool):
            value = "on" if value else "off"
        out.append((key, str(value)))
    return tuple(out)


def published_models() -> list[Model]:
    return [m for m in load_models().values() if m.publish]


def model_statements(model: Model, dialect: str) -> list[str]:
    """The statements, in ``dialect``, that build a model (``:start_date``/``:end_date`` bound).

    The model's SELECT is transpiled from the source dialect, with the CTEs of
    the model's override file for the engine (if any) in place of its own.
    """
    source, scratch = model.sql.strip().rstrip(";"), []
    if dialect == "trino" and model.materialized != "view":
        source, scratch = trino_scratch_tables(source, model.sql_for(dialect), f"models.scratch_{model.name}")
        select_sql = render(source, dialect)
    else:
        select_sql = render(source, dialect, ctes=model.sql_for(dialect))
    if model.materialized == "view":
        return [f"create or replace view {model.table} as\n" + select_sql]
    cols = ", ".join(c.name for c in model.columns)
    insert = f"insert into {model.table} ({cols})\nselect {cols} from (\n" + select_sql + "\n) as model_rows"
    clear = f"delete from {model.table}"
    if model.materialized == "partition":
        clear += f" where {model.partition_by} between :start_date and :end_date"
    create = render(model.create_sql("models"), dialect)
    if dialect == "trino":
        create = trino_table_ddl(create)
    statements = [create, render(clear, dialect), insert]
    if scratch:
        drops = [f"drop table if exists {table}" for table, _ in scratch]
        created = [f"create table {table} as\n" + render(query, dialect) for table, query in scratch]
        statements = drops + created + statements + drops
    return statements


def affected_range(wh: Warehouse, cfg: Config, business_date: dt.date) -> tuple[dt.date, dt.date]:
    """The first date the business date's load can change, through the business date.

    That is the earliest of: the dates of the events it loaded (never older
    than the late-arrival limit, which the ingest enforces; clipped to the
    lookback); the dates of every earlier event of an anonymous id it newly
    linked (a link re-attributes that whole history; clipped to
    ``ingest.identity_reach_days``); and the day after the last build when
    nights were skipped.
    """
    floor = business_date - dt.timedelta(days=cfg.ingest.lookback_days)
    identity_floor = business_date - dt.timedelta(days=cfg.ingest.identity_reach_days)
    sql = """
        select
            (select min(event_date) from raw.events where load_date = :d) as loaded_first,
            (
                select min(e.event_date)
                from raw.events as e
                where e.distinct_id in (
                    select l.link_anonymous_id from raw.events as l
                    where l.load_date = :d and l.link_anonymous_id is not null
                )
            ) as linked_first
    """
    with wh.begin() as conn:
        loaded_first, linked_first = wh.execute(conn, sql, {"d": business_date}).one()
        # A night that never ran leaves a gap: fill it from the day after the last build.
        last_built = wh.scalar(
            conn, "select max(business_date) from meta.model_builds where business_date < :d", {"d": business_date}
        )
    candidates = [business_date]
    if loaded_first is not None:
        candidates.append(max(_as_date(loaded_first), floor))
    if linked_first is not None:
        candidates.append(max(_as_date(linked_first), identity_floor))
    if last_built is not None:
        candidates.append(max(_as_date(last_built) + dt.timedelta(days=1), floor))
    return min(candidates), business_date


def rebuild_start(conn: sa.Connection, model: Model, start_date: dt.date) -> dt.date:
    """Where a full rebuild of ``model`` from ``start_date`` starts: a history model starts at the first loaded event."""
    if not model.is_history:
        return start_date
    # (read to the end: a Trino statement whose result is left unread is cancelled, which aborts the transaction)
    first = conn.execute(sa.text("select min(event_date) from raw.events")).all()[0][0]
    return start_date if first is None else min(start_date, _as_date(first))


def _as_date(value: dt.date | dt.datetime) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def model_range(model: Model, cfg: Config, start_date: dt.date, end_date: dt.date) -> tuple[dt.date, dt.date]:
    """The partitions of ``model`` that changes in ``[start_date, end_date]`` can reach."""
    from cohortflow.analyses import reach_days

    return start_date - dt.timedelta(days=reach_days(model.reach, cfg)), end_date


def build_models(
    wh: Warehouse,
    cfg: Config,
    start_date: dt.date,
    end_date: dt.date,
    progress: Callable[[str], None] | None = None,
    *,
    exact_range: bool = False,
    only: set[str] | None = None,
    dependencies: bool = True,
) -> dict[str, tuple[dt.date, dt.date, int]]:
    """Build every model for the dates changes in ``[start_date, end_date]`` can reach.

    Returns, per partition or table model, the range built and its rows. With
    ``exact_range`` (a full rebuild), every model is built for exactly the range
    (history models from the first event). ``only`` limits the build to those
    models and, unless ``dependencies`` is false, the models they read.
    """
    from cohortflow.analyses import load_definitions, model_params

    extra = model_params(cfg)
    with wh.begin() as conn:
        wh.lock(conn, "cohortflow:definitions")
        load_definitions(wh, conn, cfg)
    written: dict[str, tuple[dt.date, dt.date, int]] = {}
    models = load_models()
    if only is None:
        wanted = set(models)
    else:
        wanted = _with_dependencies(only, models) if dependencies else set(only)
    for model in models.values():
        if model.name not in wanted:
            continue
        lo, hi = (start_date, end_date) if exact_range else model_range(model, cfg, start_date, end_date)
        began = time.monotonic()
        with wh.begin() as conn:
            # Builds of one model wait for each other (two dates in parallel on PostgreSQL).
            wh.lock(conn, f"cohortflow:model:{model.name}")
            if exact_range:
                lo = rebuild_start(conn, model, lo)
            params = {**extra, "start_date": lo, "end_date": hi}
            if wh.dialect == "postgres":
                for key, value in {**POSTGRES_BUILD_DEFAULTS, **dict(model.postgres_settings)}.items():
                    conn.execute(sa.text("select set_config(:name, :value, true)"), {"name": key, "value": value})
            for stmt in model_statements(model, wh.dialect):
                wh.run(conn, stmt, params if ":" in stmt else {})
            if model.materialized == "partition":
                n = wh.scalar(
                    conn,
                    f"select count(*) from {model.table} where {model.partition_by} between :start_date and :end_date",
                    params,
                )
                written[model.name] = (lo, hi, n)
            elif model.materialized == "table":
                written[model.name] = (lo, hi, wh.scalar(conn, f"select count(*) from {model.table}"))
        if progress:
            info = f": {written[model.name][2]:,} rows for {lo}..{hi}" if model.name in written else ""
            progress(f"  built {model.table} ({model.materialized}){info} in {time.monotonic() - began:.1f} s")
    return written


def _with_dependencies(names: set[str], models: dict[str, Model]) -> set[str]:
    unknown = names - set(models)
    if unknown:
        raise KeyError(f"unknown models: {', '.join(sorted(unknown))}")
    out: set[str] = set()
    frontier = set(names)
    while frontier:
        out |= frontier
        frontier = {d for n in frontier for d in models[n].depends_on} - out
    return out


def record_build(wh: Warehouse, business_date: dt.date, built: dict[str, tuple[dt.date, dt.date, int]]) -> None:
    """Remember the ranges built for a business date; publish reads them."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {"business_date": business_date, "model_name": name, "start_date": lo, "end_date": hi, "built_at": now}
        for name, (lo, hi, _) in built.items()
    ]
    with wh.begin() as conn:
        wh.execute(conn, "delete from meta.model_builds where business_date = :d", {"d": business_date})
        # One statement: Trino's Hive tables take one insert per partition and transaction.
        if rows:
            wh.insert_rows(conn, "meta.model_builds", rows)


def built_ranges(wh: Warehouse, business_date: dt.date) -> dict[str, tuple[dt.date, dt.date]]:
    with wh.begin() as conn:
        rows = wh.execute(
            conn,
            "select model_name, start_date, end_date from meta.model_builds where business_date = :d",
            {"d": business_date},
        ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


# A ``:name`` bind parameter in rendered SQL (not a ``::type`` cast, nor a time like '10:30').
BIND_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


def render_model(
    name: str, dialect: str, start_date: dt.date, end_date: dt.date, params: Mapping[str, Any] | None = None
) -> str:
    """The exact SQL a model runs on an engine, with the value of every parameter it binds listed (``params``: the
    project's model parameters, :func:`cohortflow.analyses.model_params`)."""
    models = load_models()
    if name not in models:
        raise KeyError(f"unknown model {name!r}; models: {', '.join(models)}")
    stmts = model_statements(models[name], dialect)
    values = {**(params or {}), "start_date": start_date, "end_date": end_date}
    order = {"start_date": 0, "end_date": 1}
    used = sorted({name for stmt in stmts for name in BIND_PARAMETER.findall(stmt)}, key=lambda k: (order.get(k, 2), k))
    bound = ", ".join(f"{k}={values[k]}" if k in values else f"{k}=(unset)" for k in used)
    header = f"-- model {name} on {dialect}; bound parameters: {bound or 'none'}\n"
    return header + ";\n\n".join(stmts) + ";\n"

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
import hashlib
import importlib.resources
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2
import sqlalchemy as sa
import sqlglot
import yaml

from cohortflow.config import Config
from cohortflow.faults import checkpoint
from cohortflow.progress import plural
from cohortflow.warehouse import Warehouse, check_identifier, date_range, render, trino_scratch_tables, trino_table_ddl

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
    # How far after a changed input date this model's partitions can change: days, a reach name, or "all" (through
    # the as-of date, the default: the safe answer for a model that reads all history up to each date).
    reach_after: str | int = "all"
    # Partitions whose rows depend on the as-of date (is_complete, rows for periods begun by then) this far before
    # it: a reach name; they are rebuilt when the as-of date moves.
    as_of_reach: str | int | None = None
    # Partition dates can lie this many days before the first event date (a week or month period's first day).
    lead_days: int = 0
    # "user": rows are per user (a user_id column) and a build can rebuild the rows of some users only (those whose
    # input changed, from the first date their change can reach); "date": rows are rebuilt a date at a time.
    grain: str = "date"
    # A reach before, per input, where an input's changes reach less far than the model's ``reach`` (e.g. segment
    # membership, read on the entry or cohort date only).
    input_reach: dict = field(default_factory=dict)
    # A definition table (meta.<name>) without whose rows the model has none, whatever the events (segment
    # membership without segments): while it is empty, a build empties the table instead of running the SQL.
    empty_without: str | None = None

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


@cache
def _templates() -> jinja2.Environment:
    """Model files are Jinja templates: ``{% import 'macros/filters.sql' as filters %}`` shares one definition of a
    piece of logic (``sql/macros/``) between models, ``{% for %}`` writes repeated passes once. They render once, when
    the models load; everything after (sqlglot, the engines) sees plain SQL."""
    root = _sql_root()

    def load(name: str) -> str | None:
        path = root.joinpath(*name.split("/"))
        return path.read_text(encoding="utf-8") if path.is_file() else None

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )


def render_template(text: str, where: str) -> str:
    """A model file's SQL with its macros expanded; a template error names the file."""
    try:
        return _templates().from_string(text).render()
    except jinja2.TemplateError as err:
        line = f" line {err.lineno}" if getattr(err, "lineno", None) else ""
        raise ValueError(f"{where}{line}: {err}") from err


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
        sql = render_template(sql, f"sql/{layer}/{name}.sql")
        overrides = {}
        for engine in ("postgres", "duckdb", "trino"):
            variant = yml.parent.joinpath(f"{name}.{engine}.sql")
            if variant.is_file():
                text = variant.read_text(encoding="utf-8")
                if not text.lstrip().startswith("/*") or "reason" not in text.lower()[:1000]:
                    raise ValueError(f"sql/{layer}/{name}.{engine}.sql must open with a comment giving the reason for the override")
                text = render_template(text, f"sql/{layer}/{name}.{engine}.sql")
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
            reach_after=m.get("reach_after", "all"),
            as_of_reach=m.get("as_of_reach"),
            lead_days=int(m.get("lead_days", 0)),
            grain=m.get("rebuild_grain", "date"),
            input_reach=dict(m.get("input_reach") or {}),
            empty_without=m.get("empty_without"),
        )
        if model.empty_without is not None and model.empty_without not in set(_DEFINITION_TABLE.findall(model.sql)):
            raise ValueError(f"model {name}: empty_without names meta.{model.empty_without}, which its SQL does not read")
        if model.grain not in ("date", "user"):
            raise ValueError(f"model {name}: rebuild_grain must be date or user")
        if model.grain == "user" and (model.materialized != "partition" or "user_id" not in {c.name for c in model.columns}):
            raise ValueError(f"model {name}: a user-grain model is a partition model with a user_id column")
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
POSTGRES_SETTINGS = {"enable_nestloop", "enable_mergejoin", "enable_hashjoin", "enable_sort", "work_mem", "jit"}


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


def model_statements(model: Model, dialect: str, scratch_prefix: str | None = None) -> list[str]:
    """The statements, in ``dialect``, that build a model (``:start_date``/``:end_date`` bound).

    The model's SELECT is transpiled from the source dialect, with the CTEs of
    the model's override file for the engine (if any) in place of its own.
    ``scratch_prefix``: the names of Trino's scratch tables (default ``models.scratch_<model>``).
    """
    source, scratch = model.sql.strip().rstrip(";"), []
    if dialect == "trino" and model.materialized != "view":
        source, scratch = trino_scratch_tables(source, model.sql_for(dialect), scratch_prefix or f"models.scratch_{model.name}")
        select_sql = render(source, dialect)
    else:
        select_sql = render(source, dialect, ctes=model.sql_for(dialect))
    if model.materialized == "view":
        return [f"create or replace view {model.table} as\n" + select_sql]
    cols = ", ".join(c.name for c in model.columns)
    insert = f"insert into {model.table} ({cols})\nselect {cols} from (\n" + select_sql + "\n) as model_rows"
    insert += _clustered(model, dialect)
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


def _clustered(model: Model, dialect: str) -> str:
    """DuckDB: the ORDER BY that writes a partition model's rows in date order. A DuckDB table keeps each row group's
    min and max per column and skips the groups a date filter excludes, but only if the groups hold few dates: rows
    written in user order (a user-grain build's) put every date in every group, and a night's scan of the recent dates
    reads the whole history. (PostgreSQL's and Trino's tables have no such order to keep.)"""
    return f"\norder by {model.partition_by}" if dialect == "duckdb" and model.partition_by else ""


def create_views(wh: Warehouse, conn: sa.Connection) -> None:
    """(Re)create the view models (the staging layer), which read raw tables only; the ingest reads them too."""
    for model in load_models().values():
        if model.materialized == "view":
            for stmt in model_statements(model, wh.dialect):
                wh.run(conn, stmt)


def _as_date(value: dt.date | dt.datetime | None) -> dt.date | None:
    return value.date() if isinstance(value, dt.datetime) else value


def rebuild_start(conn: sa.Connection, model: Model, start_date: dt.date) -> dt.date:
    """Where a full rebuild of ``model`` from ``start_date`` starts: a history model starts at the first loaded event."""
    if not model.is_history:
        return start_date
    # (read to the end: a Trino statement whose result is left unread is cancelled, which aborts the transaction)
    first = conn.execute(sa.text("select min(event_date) from raw.events")).all()[0][0]
    return start_date if first is None else min(start_date, _as_date(first))


def _reach(value: str | int | None, cfg: Config) -> int | None:
    """Days of a reach declaration; None for "all"."""
    from cohortflow.analyses import reach_days

    if value is None:
        return 0
    if value == "all":
        return None
    if isinstance(value, int):
        return value
    return reach_days(value, cfg)


def _scratch_prefix(wh: Warehouse, conn: sa.Connection, model: Model) -> str | None:
    """Trino: the scratch tables' prefix for the next build statements of ``model`` in ``conn``'s transaction, new for
    each (a transaction keeps the files it listed of a table: one dropped and created again under the same name in
    it is read from the files it had)."""
    if wh.trino is None:
        return None
    used = conn.info.setdefault("cohortflow_scratch", {})
    n = used[model.name] = used.get(model.name, -1) + 1
    return f"models.scratch_{model.name}" + (f"_{n}" if n else "")


def _run_statements(wh: Warehouse, conn: sa.Connection, model: Model, params: Mapping[str, Any]) -> None:
    if wh.dialect == "postgres":
        for key, value in {**POSTGRES_BUILD_DEFAULTS, **dict(model.postgres_settings)}.items():
            conn.execute(sa.text("select set_config(:name, :value, true)"), {"name": key, "value": value})
    for stmt in model_statements(model, wh.dialect, _scratch_prefix(wh, conn, model)):
        wh.run(conn, stmt, dict(params) if ":" in stmt else {})


def build_models(
    wh: Warehouse,
    cfg: Config,
    start_date: dt.date,
    end_date: dt.date,
    progress: Callable[[str], None] | None = None,
    *,
    exact_range: bool = True,
    only: set[str] | None = None,
    dependencies: bool = True,
) -> dict[str, tuple[dt.date, dt.date, int]]:
    """Build models for exactly ``[start_date, end_date]`` as of ``end_date`` (history models from the first event),
    without touching the change bookkeeping: for tests and benchmarks that time or compare one build.

    Returns, per partition or table model, the range built and its rows. ``only`` limits the build to those models
    and, unless ``dependencies`` is false, the models they read. Operations use :func:`build_pending`.
    """
    from cohortflow.analyses import load_definitions, model_params

    extra = {**model_params(cfg), "as_of_date": end_date}
    with wh.begin() as conn:
        wh.lock(conn, "cohortflow:definitions")
        load_definitions(wh, conn, cfg)
    written: dict[str, tuple[dt.date, dt.date, int]] = {}
    models = load_models()
    wanted = set(models) if only is None else (_with_dependencies(only, models) if dependencies else set(only))
    for model in models.values():
        if model.name not in wanted:
            continue
        began = time.monotonic()
        with wh.begin() as conn:
            wh.lock(conn, f"cohortflow:model:{model.name}")
            lo = rebuild_start(conn, model, start_date)
            first = _as_date(conn.execute(sa.text("select min(event_date) from raw.events")).scalar()) or lo
            params = {**extra, "start_date": lo, "end_date": end_date, "first_date": first, "model_name": model.name, "scoped": False}
            _run_statements(wh, conn, model, params)
            if model.materialized == "partition":
                n = wh.scalar(
                    conn,
                    f"select count(*) from {model.table} where {model.partition_by} between :start_date and :end_date",
                    params,
                )
                written[model.name] = (lo, end_date, n)
            elif model.materialized == "table":
                written[model.name] = (lo, end_date, wh.scalar(conn, f"select count(*) from {model.table}"))
        if progress:
            info = f": {plural(written[model.name][2], 'row')} for {lo}..{end_date}" if model.name in written else ""
            progress(f"  built {model.table} ({model.materialized}){info} in {time.monotonic() - began:.1f} s")
    return written


# -- change-driven builds ------------------------------------------------------
#
# Every load is a change (meta.change_log) with the (user, event date) pairs it added, removed or re-attributed
# (meta.changed_pairs). A model is built through some change id (meta.model_state): a build catches it up with the
# changes after that id, rebuilding the partitions they can reach (its reach before and after each changed input
# date), plus, when the as-of date (the latest business date loaded) moved, the partitions whose rows depend on it.
# It records what it changed (meta.model_changes), which is what the models reading it, and publish, catch up with.
# A model whose definition changed (SQL, analysis definitions, parameters), that has no state yet, or whose history
# start moved, is rebuilt whole. The result is what a full rebuild from everything loaded gives, whatever the order
# of the loads (property-tested).


@dataclass
class BuildOutcome:
    """What one model build did: whole, or the dates rebuilt (and the rows in them); nothing when up to date."""

    model: str
    change_id: int
    whole: bool = False
    dates: tuple[dt.date, ...] = ()
    rows: int = 0
    seconds: float = 0.0
    users: int = 0

    @property
    def changed(self) -> bool:
        return self.whole or bool(self.dates) or bool(self.users)

    def describe(self) -> str:
        if self.whole:
            return f"rebuilt whole ({self.rows:,} rows)"
        parts = []
        if self.dates:
            runs = _runs(sorted(self.dates))
            text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in runs[:4]) + (" ..." if len(runs) > 4 else "")
            parts.append(f"{len(self.dates)} date{'s' if len(self.dates) != 1 else ''} ({text})")
        if self.users:
            parts.append(f"{self.users:,} user{'s' if self.users != 1 else ''}")
        if not parts:
            return "up to date"
        return " and ".join(parts) + f": {self.rows:,} rows"


def _runs(dates: list[dt.date], max_gap: int = 3, max_runs: int = 12) -> list[tuple[dt.date, dt.date]]:
    """Sorted dates as ranges: neighbours closer than ``max_gap`` days share a range, and at most ``max_runs``."""
    runs: list[list[dt.date]] = []
    for d in dates:
        if runs and (d - runs[-1][1]).days <= max_gap:
            runs[-1][1] = d
        else:
            runs.append([d, d])
    while len(runs) > max_runs:
        gaps = [((runs[i + 1][0] - runs[i][1]).days, i) for i in range(len(runs) - 1)]
        _, i = min(gaps)
        runs[i : i + 2] = [[runs[i][0], runs[i + 1][1]]]
    return [(a, b) for a, b in runs]


_DEFINITION_TABLE = re.compile(r"\bmeta\.(def_\w+)")


def fingerprint(model: Model, cfg: Config, params: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    """What a model's rows are a function of besides the loaded events: its SQL (and overrides), the parameters it
    binds and the rows of the definition tables it reads. A build whose fingerprint differs rebuilds the model whole.
    The SQL includes the views it reads (the staging layer, directly or through another view): they keep no state
    of their own, so a change to one (say, the identity map's tie order) must rebuild their readers; a change to a
    table model reaches its readers through its own whole rebuild."""
    text = model.sql + "".join(sql for _, sql in model.overrides) + _views_read(model, load_models())
    h = hashlib.blake2b(digest_size=16)
    for part in (text, repr(model.columns), cfg.timezone):
        h.update(part.encode())
    used = sorted(set(BIND_PARAMETER.findall(text)) - {"start_date", "end_date", "as_of_date", "first_date"})
    h.update(repr([(k, str(params.get(k))) for k in used]).encode())
    for table in sorted(set(_DEFINITION_TABLE.findall(text))):
        h.update(repr((table, definitions.get(f"meta.{table}"))).encode())
    return h.hexdigest()


def _views_read(model: Model, models: Mapping[str, Model]) -> str:
    """The SQL of the view models ``model`` reads, directly or through other views, in a fixed order."""
    seen: list[str] = []
    todo = list(model.depends_on)
    while todo:
        name = todo.pop(0)
        if name not in seen and models[name].materialized == "view":
            seen.append(name)
            todo.extend(models[name].depends_on)
    return "".join(models[name].sql + "".join(sql for _, sql in models[name].overrides) for name in seen)


def _states(wh: Warehouse, conn: sa.Connection) -> dict[str, tuple[int, dt.date | None, dt.date | None, str]]:
    """Every model's (change id, as-of date, first date, fingerprint), in one statement."""
    rows = wh.execute(conn, "select model_name, change_id, as_of_date, first_date, fingerprint from meta.model_state")
    return {r[0]: (int(r[1]), _as_date(r[2]), _as_date(r[3]), r[4]) for r in rows}


@dataclass
class _Reads:
    """What every model of one :func:`build_pending` reads alike, read once for all of them (a statement costs tens
    of milliseconds on Trino whatever it reads): the latest change, the start of the loaded history and the as-of
    date of each change id. A load committed while the models build is caught up by the next build, as when it
    commits after the build: the models of one build stay consistent with each other."""

    latest: int
    start: dt.date | None
    as_of: dict[int, dt.date | None] = field(default_factory=dict)
    _rebuilds: list[tuple[int, dt.date | None, dt.date | None]] | None = None

    @classmethod
    def read(cls, wh: Warehouse, conn: sa.Connection) -> _Reads:
        return cls(int(wh.scalar(conn, "select coalesce(max(change_id), 0) from meta.change_log")), history_start(wh, conn))

    def rebuilds(self, wh: Warehouse, conn: sa.Connection, low: int, high: int) -> list[tuple[dt.date | None, dt.date | None]]:
        """The requested rebuilds among the changes in (low, high] (high <= latest): their (start, end), None for
        whole; every one up to the latest change read once."""
        if self._rebuilds is None:
            self._rebuilds = [
                (int(r[0]), _as_date(r[1]), _as_date(r[2]))
                for r in wh.execute(
                    conn,
                    "select change_id, rebuild_start, rebuild_end from meta.change_log "
                    "where kind = 'rebuild' and change_id <= :latest order by change_id",
                    {"latest": self.latest},
                ).fetchall()
            ]
        return [(start, end) for change, start, end in self._rebuilds if low < change <= high]

    def as_of_date(self, wh: Warehouse, conn: sa.Connection, target: int) -> dt.date | None:
        if target not in self.as_of:
            self.as_of[target] = _as_date(
                wh.scalar(conn, "select max(business_date) from meta.change_log where change_id <= :t", {"t": target})
            )
        return self.as_of[target]


def _history_end(wh: Warehouse, conn: sa.Connection, model: Model, as_of: dt.date | None) -> dt.date | None:
    """The last date a build of ``model`` covers: the as-of date; for a user-grain model whose rows do not depend on
    it, the last event date when later (an event dated after its receipt day), so that its rows are there when the
    as-of date reaches them."""
    if model.grain != "user" or model.as_of_reach is not None or as_of is None:
        return as_of
    last = _as_date(wh.scalar(conn, "select max(event_date) from raw.events"))
    return as_of if last is None else max(as_of, last)


def history_start(wh: Warehouse, conn: sa.Connection) -> dt.date | None:
    """The first date of the loaded history: the earliest event date or business date loaded (an empty day counts)."""
    row = wh.execute(
        conn,
        "select (select min(event_date) from raw.events), "
        "(select min(business_date) from meta.change_log where kind = 'load')",
    ).one()
    dates = [_as_date(v) for v in row if v is not None]
    return min(dates) if dates else None


def _input_dates(
    wh: Warehouse,
    conn: sa.Connection,
    model: Model,
    models: dict[str, Model],
    low: int,
    high: int,
    reads: _Reads,
    *,
    all_users_only: bool = False,
) -> dict[str, set[dt.date]] | None:
    """The input dates changed by the changes in (low, high], per input ("" for requested rebuilds of a range);
    None when an input changed whole. With ``all_users_only`` (a user-grain model, which rebuilds the users of
    user-level changes on its own) only the dates changed for every user: requested rebuilds, and the date-wide
    changes of user-grain inputs."""
    params = {"lo": low, "hi": high}
    out: dict[str, set[dt.date]] = {"": set()}
    rebuilds = reads.rebuilds(wh, conn, low, high)
    for start, end in rebuilds:
        if start is None or end is None:
            return None
        out[""].update(date_range(start, end))
    if all_users_only and rebuilds:
        return None  # a requested rebuild of a range rebuilds a user-grain model whole
    for dep in model.depends_on:
        if models[dep].materialized == "view":
            if all_users_only:
                continue
            rows = wh.execute(
                conn,
                "select distinct event_date from meta.changed_pairs where change_id > :lo and change_id <= :hi",
                params,
            ).fetchall()
            out.setdefault(dep, set()).update(_as_date(r[0]) for r in rows)
            continue
        rows = wh.execute(
            conn,
            "select distinct changed_date, is_all from meta.model_changes "
            "where model_name = :m and change_id > :lo and change_id <= :hi"
            + (" and user_id is null" if all_users_only else ""),
            {**params, "m": dep},
        ).fetchall()
        if any(r[1] for r in rows):
            return None
        out.setdefault(dep, set()).update(_as_date(r[0]) for r in rows if r[0] is not None)
    return out


def _build_one(
    wh: Warehouse,
    conn: sa.Connection,
    cfg: Config,
    model: Model,
    models: dict[str, Model],
    params: Mapping[str, Any],
    definitions: Mapping[str, Any],
    reads: _Reads,
    *,
    whole: bool,
) -> BuildOutcome | None:
    target = reads.latest
    states = _states(wh, conn)
    for dep in model.depends_on:
        if models[dep].materialized != "view":
            dep_state = states.get(dep)
            target = min(target, dep_state[0] if dep_state else 0)
    as_of = reads.as_of_date(wh, conn, target)
    start = reads.start
    first = None if start is None else start - dt.timedelta(days=model.lead_days)
    fp = fingerprint(model, cfg, params, definitions)
    state = states.get(model.name)
    if state is not None and state[0] >= target and not whole and state[3] == fp and state[2] == first:
        return None
    outcome = BuildOutcome(model.name, target)
    began = time.monotonic()
    bound = {**params, "as_of_date": as_of, "first_date": start, "model_name": model.name, "scoped": False}
    dates: dict[str, set[dt.date]] | None = None
    rebuild_whole = whole or state is None or state[3] != fp or state[2] != first
    # Nothing defined (segment membership without segments): no rows, whatever changed. Emptied when its
    # definitions change, then only caught up, without running its SQL.
    empty = model.empty_without is not None and not definitions.get(f"meta.{model.empty_without}")
    if not (empty or rebuild_whole or model.materialized == "table"):
        dates = _input_dates(wh, conn, model, models, state[0], target, reads, all_users_only=model.grain == "user")
    if empty:
        if rebuild_whole:
            _build_whole(wh, conn, model, bound, None, None)
            outcome.whole = True
            _record_whole(wh, conn, model, target)
    elif dates is not None and as_of is not None and first is not None:
        wanted = _expand(model, cfg, dates, first, as_of, state[1])
        outcome.dates = tuple(sorted(wanted))
        # The dates recorded as changed: those with rows before or after the build. A date empty on both sides
        # (a new as-of date of a model no definition fills, such as segment membership without segments) changes
        # nothing its readers see, and would make every user-grain reader rebuild that date for all its users.
        # (Trino: every rebuilt date, without the two more statements a range.)
        changed: set[dt.date] = set()
        span = f"from {model.table} where {model.partition_by} between :lo and :hi"
        for lo, hi in _runs(list(outcome.dates)):
            if wh.trino is None:
                changed.update(_as_date(r[0]) for r in wh.execute(conn, f"select distinct {model.partition_by} {span}", {"lo": lo, "hi": hi}))
            _run_statements(wh, conn, model, {**bound, "start_date": lo, "end_date": hi})
            rows = wh.execute(conn, f"select {model.partition_by}, count(*) {span} group by {model.partition_by}", {"lo": lo, "hi": hi}).fetchall()
            outcome.rows += sum(int(r[1]) for r in rows)
            changed.update(_as_date(r[0]) for r in rows)
        recorded = outcome.dates if wh.trino is not None else tuple(sorted(changed))
        # (Trino: a user-grain build records its dates with its users, in the one insert its partition of
        # meta.model_changes takes in a transaction)
        if recorded and not (wh.trino is not None and model.grain == "user"):
            wh.insert_rows(
                conn,
                "meta.model_changes",
                [
                    {"model_name": model.name, "change_id": target, "user_id": None, "changed_date": d, "is_all": False}
                    for d in recorded
                ],
            )
        if model.grain == "user":
            outcome.users, rows = _build_users(
                wh, conn, cfg, model, models, bound, state[0], target, first, as_of, rebuilt=outcome.dates
            )
            outcome.rows += rows
    else:
        _build_whole(wh, conn, model, bound, first, _history_end(wh, conn, model, as_of))
        outcome.whole = True
        outcome.rows = int(wh.scalar(conn, f"select count(*) from {model.table}"))
        _record_whole(wh, conn, model, target)
    wh.execute(conn, "delete from meta.model_state where model_name = :m", {"m": model.name})
    wh.insert_rows(
        conn,
        "meta.model_state",
        [
            {
                "model_name": model.name,
                "change_id": target,
                "as_of_date": as_of,
                "first_date": first,
                "fingerprint": fp,
                "built_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
            }
        ],
    )
    outcome.seconds = time.monotonic() - began
    return outcome


def _record_whole(wh: Warehouse, conn: sa.Connection, model: Model, change_id: int) -> None:
    """Record that a build changed the whole of ``model`` (its readers rebuild whole)."""
    wh.insert_rows(
        conn,
        "meta.model_changes",
        [{"model_name": model.name, "change_id": change_id, "user_id": None, "changed_date": None, "is_all": True}],
    )


def _expand(
    model: Model,
    cfg: Config,
    inputs: dict[str, set[dt.date]],
    first: dt.date,
    as_of: dt.date,
    old_as_of: dt.date | None,
) -> set[dt.date]:
    """The partitions changed input dates can reach (the input's reach before, the model's after; a requested
    rebuild exactly its dates), and those whose rows depend on the as-of date when it moved, inside the history
    ``[first, as_of]``."""
    wanted: set[dt.date] = set()
    for source, dates in inputs.items():
        if source:
            before, after = _reach(model.input_reach.get(source, model.reach), cfg), _reach(model.reach_after, cfg)
        else:
            before, after = 0, 0
        for d in dates:
            lo = first if before is None else max(first, d - dt.timedelta(days=before))
            hi = as_of if after is None else min(as_of, d + dt.timedelta(days=after))
            if lo <= hi:
                wanted.update(date_range(lo, hi))
    # A user-grain model's rows exist where its users' events are (they come with the changes) unless it declares
    # rows that depend on the as-of date; a date-grain model has a row set for every date up to the as-of date.
    moved = old_as_of is None or old_as_of < as_of
    if moved and (model.grain == "date" or model.as_of_reach is not None):
        zone = 0 if model.as_of_reach is None else _reach(model.as_of_reach, cfg)
        since = first if (old_as_of is None or zone is None) else old_as_of - dt.timedelta(days=zone - 1)
        wanted.update(date_range(max(since, first), as_of))
    return wanted


def _build_whole(
    wh: Warehouse, conn: sa.Connection, model: Model, bound: Mapping[str, Any], first: dt.date | None, as_of: dt.date | None
) -> None:
    if model.materialized == "partition":
        wh.execute(conn, f"drop table if exists {model.table}")
    if first is not None and as_of is not None and first <= as_of:
        _run_statements(wh, conn, model, {**bound, "start_date": first, "end_date": as_of})
    else:
        wh.execute(conn, model.create_sql("models"))
        if model.materialized == "table":
            wh.execute(conn, f"delete from {model.table}")


# The rows of a user-grain model that a scoped build replaces: its users' rows from their first changed date on.
# (The bound on the partition column first: the scope's earliest date, a constant a table scan skips the older row
# groups or partitions by, so a night reads the recent part of a long history, not all of it.)
_IN_SCOPE = """{t}.{col} >= cast(:scope_from as date) and exists (
    select 1 from meta.build_scope as s
    where s.model_name = :model_name and s.user_id = {t}.user_id and {t}.{col} >= s.from_date
)"""

# A scoped build's record of what it changed; _RECORD_REPLACED + a source of (user_id, changed_date): the pairs whose
# rows it replaced.
_RECORD_CHANGES = "insert into meta.model_changes (model_name, change_id, user_id, changed_date, is_all) "
_RECORD_REPLACED = _RECORD_CHANGES + "select distinct :model_name, cast(:hi as bigint), user_id, changed_date, false from "


def _scoped_params(
    wh: Warehouse, conn: sa.Connection, model: Model, params: Mapping[str, Any], earliest: Any, as_of: dt.date | None
) -> dict[str, Any]:
    """The parameters of a scoped build's model SQL: the scope's users, from the earliest first date of theirs to the
    end of the history the build covers."""
    return {**params, "scoped": True, "start_date": _as_date(earliest), "end_date": _history_end(wh, conn, model, as_of)}


def _save_replaced_rows(wh: Warehouse, conn: sa.Connection, model: Model, scope_old: str, params: Mapping[str, Any]) -> None:
    """The temporary table replaced_rows: the (user, date) pairs of the rows in scope (``scope_old``) before the build."""
    wh.execute(conn, "drop table if exists replaced_rows")
    wh.execute(
        conn,
        f"create temporary table replaced_rows as select distinct user_id, {model.partition_by} as changed_date "
        f"from {model.table} as t where {scope_old}",
        params,
    )


def _rows_in_scope(wh: Warehouse, conn: sa.Connection, model: Model, scope_old: str, params: Mapping[str, Any]) -> int:
    return int(wh.scalar(conn, f"select count(*) from {model.table} as t where {scope_old}", params))


def _build_users(
    wh: Warehouse,
    conn: sa.Connection,
    cfg: Config,
    model: Model,
    models: dict[str, Model],
    bound: Mapping[str, Any],
    low: int,
    high: int,
    first: dt.date,
    as_of: dt.date,
    *,
    rebuilt: tuple[dt.date, ...] = (),
) -> tuple[int, int]:
    """Rebuild the rows of the users whose input changed in (low, high], each from the first date its change can
    reach; record the (user, date) pairs of the rows replaced. Returns (users, rows written). ``rebuilt``: the
    partitions this build has just rebuilt whole (for every user)."""
    inputs = []
    names: dict[str, Any] = {}
    for i, dep in enumerate(model.depends_on):
        before = _reach(model.input_reach.get(dep, model.reach), cfg)
        column = "event_date" if models[dep].materialized == "view" else "changed_date"
        from_date = "cast(:first as date)" if before is None else f"{column} - {int(before)}"
        if models[dep].materialized == "view":
            if any(models[d].materialized == "view" for d in model.depends_on[:i]):
                continue  # the staging views share one change record
            inputs.append(
                f"select user_id, {from_date} as from_date from meta.changed_pairs "
                "where change_id > :lo and change_id <= :hi"
            )
        else:
            names[f"dep{i}"] = dep
            inputs.append(
                f"select user_id, {from_date} as from_date from meta.model_changes where model_name = :dep{i} "
                "and change_id > :lo and change_id <= :hi and user_id is not null"
            )
    params = {**bound, "lo": low, "hi": high, "first": first, **names}
    scope_sql = (
        "insert into meta.build_scope (model_name, user_id, from_date) "
        f"select :model_name, user_id, greatest(min(from_date), cast(:first as date)) from ({' union all '.join(inputs)}) as changes "
        "group by user_id"
    )
    if wh.trino is not None:
        return _build_users_trino(wh, conn, model, params, scope_sql, rebuilt)
    wh.execute(conn, "delete from meta.build_scope where model_name = :model_name", params)
    wh.execute(conn, scope_sql, params)
    users, earliest = wh.execute(
        conn, "select count(*), min(from_date) from meta.build_scope where model_name = :model_name", params
    ).one()
    if not users:
        return 0, 0
    params["scope_from"] = earliest
    col, table = model.partition_by, model.table
    scope_old = _IN_SCOPE.format(t="t", col=col)
    cols = ", ".join(c.name for c in model.columns)
    select_sql = render(model.sql.strip().rstrip(";"), wh.dialect, ctes=model.sql_for(wh.dialect))
    scoped = _scoped_params(wh, conn, model, params, earliest, as_of)
    if wh.dialect == "postgres":
        for key, value in {**POSTGRES_BUILD_DEFAULTS, **dict(model.postgres_settings)}.items():
            conn.execute(sa.text("select set_config(:name, :value, true)"), {"name": key, "value": value})
    # The scope's rows as the model computes them now (new_rows) against those the table holds. Only the rows that
    # differ are deleted and inserted, and their (user, date) pairs recorded: a night's writes, and what its readers
    # rebuild, follow what changed, not every row of the users it touched (a returning user's older cohorts rows).
    # Exact for any multiset: every copy of a differing row is replaced by the model's copies of it.
    for temp in ("new_rows", "changed_rows"):
        wh.execute(conn, f"drop table if exists {temp}")
    conn.execute(
        sa.text(
            f"create temporary table new_rows as select {cols} from (\n{select_sql}\n) as model_rows\nwhere "
            + render(_IN_SCOPE.format(t="model_rows", col=col), wh.dialect)
        ),
        scoped,
    )
    # (grouping compares nulls as equal; copies: the model's copies of the row)
    wh.execute(
        conn,
        f"create temporary table changed_rows as select {cols}, sum(is_new) as copies from ("
        f"select {cols}, 0 as is_new from {table} as t where {scope_old} "
        f"union all select {cols}, 1 as is_new from new_rows) as both_sides "
        f"group by {cols} having count(*) <> 2 * sum(is_new)",
        params,
    )
    # (a changed row's user and date are in the scope: the date bound alone lets the scan skip older row groups)
    same = " and ".join(
        f"c.{c.name} = {{t}}.{c.name}" if c.name in ("user_id", col) else f"c.{c.name} is not distinct from {{t}}.{c.name}"
        for c in model.columns
    )
    changed = f"exists (select 1 from changed_rows as c where {same})"
    wh.execute(
        conn, f"delete from {table} as t where t.{col} >= cast(:scope_from as date) and " + changed.format(t="t"), params
    )
    wh.execute(
        conn,
        f"insert into {table} ({cols}) select {cols} from new_rows as n where "
        + changed.format(t="n")
        + _clustered(model, wh.dialect),
    )
    written = int(wh.scalar(conn, "select coalesce(sum(copies), 0) from changed_rows"))
    wh.execute(conn, _RECORD_REPLACED + f"(select user_id, {col} as changed_date from changed_rows) as changed", params)
    for temp in ("new_rows", "changed_rows"):
        wh.execute(conn, f"drop table {temp}")
    wh.execute(conn, "delete from meta.build_scope where model_name = :model_name", params)
    return int(users), written


def _build_users_trino(
    wh: Warehouse,
    conn: sa.Connection,
    model: Model,
    params: Mapping[str, Any],
    scope_sql: str,
    rebuilt: tuple[dt.date, ...],
) -> tuple[int, int]:
    """:func:`_build_users` on Trino, whose Hive tables delete whole partitions only and take one write per partition
    in a transaction: the partitions holding rows of the scope's users (old or new) are rewritten whole, with the other
    users' rows and the scope's new ones; those in ``rebuilt`` were just rebuilt for every user and stay as they are.

    The scope is a scratch table written outside the build's transaction (DDL), from committed changes: the model's
    shared CTEs are computed into scratch tables by DDL too, which sees committed rows only, and a transaction keeps
    what it read of a table (this one's meta.build_scope, read by the date builds before), so the build reads the
    scope there, in place of meta.build_scope. It is dropped when the transaction ends."""
    scope_table = wh.trino.scratch_name("raw", "scope")
    scope_select = scope_sql[scope_sql.index("select ") :]
    wh.trino.ddl(
        f"create table {scope_table} as select * from (\n"
        + render(scope_select.replace(":model_name", "cast(:model_name as varchar)", 1), "trino")
        + "\n) as scope (model_name, user_id, from_date)",
        params,
    )
    wh.trino.drop_after(conn, scope_table)
    wh.trino.register(scope_table, {"model_name": "varchar", "user_id": "varchar", "from_date": "date"})

    def scoped_sql(sql: str) -> str:
        return re.sub(r"\bmeta\.build_scope\b", scope_table, sql)

    users, earliest = wh.execute(conn, f"select count(*), min(from_date) from {scope_table}", params).one()
    date_rows = " ".join(
        f"union all select cast(:model_name as varchar), cast(:hi as bigint), cast(null as varchar), cast(:rb{i} as date), false"
        for i in range(len(rebuilt))
    )
    params = {**params, **{f"rb{i}": d for i, d in enumerate(rebuilt)}}
    if not users:
        if rebuilt:
            wh.execute(conn, _RECORD_CHANGES + date_rows.removeprefix("union all "), params)
        return 0, 0
    params["scope_from"] = earliest
    col, table = model.partition_by, model.table
    scope_old = scoped_sql(_IN_SCOPE.format(t="t", col=col))
    cols = ", ".join(c.name for c in model.columns)
    scoped = _scoped_params(wh, conn, model, params, earliest, _as_date(params["as_of_date"]))
    overrides = model.sql_for("trino")
    source, scratch = trino_scratch_tables(
        scoped_sql(model.sql.strip().rstrip(";")), overrides and scoped_sql(overrides), _scratch_prefix(wh, conn, model)
    )
    for name, _ in scratch:
        wh.run(conn, f"drop table if exists {name}")
    for name, query in scratch:
        wh.run(conn, f"create table {name} as\n" + render(query, "trino"), scoped)
    _save_replaced_rows(wh, conn, model, scope_old, params)
    wh.execute(conn, "drop table if exists new_rows")
    wh.execute(
        conn,
        f"create temporary table new_rows as select {cols} from (\n{source}\n) as model_rows where "
        + scoped_sql(_IN_SCOPE.format(t="model_rows", col=col)),
        scoped,
    )
    for name, _ in scratch:
        wh.run(conn, f"drop table if exists {name}")
    touched = wh.execute(
        conn, f"select changed_date from replaced_rows union select {col} from new_rows", params
    ).fetchall()
    # (the date builds rebuilt whole every partition of the ranges their dates were grouped into)
    written_whole = {d for lo, hi in _runs(sorted(rebuilt)) for d in date_range(lo, hi)}
    dates = sorted({_as_date(r[0]) for r in touched} - written_whole)
    if dates:
        wh.trino.rewrite_partitions(
            conn, table, cols, col, dates, f"not ({scope_old})", f"select {cols} from new_rows where {col} in ({{dates}})",
            params, kept="kept_rows", key="pd",
        )
    written = _rows_in_scope(wh, conn, model, scope_old, params)
    wh.execute(
        conn,
        _RECORD_REPLACED + "("
        f"select user_id, changed_date from replaced_rows union select user_id, {col} from {table} as t where {scope_old}"
        f") as replaced {date_rows}",
        params,
    )
    return int(users), written


def build_pending(
    wh: Warehouse,
    cfg: Config,
    progress: Callable[[str], None] | None = None,
    *,
    only: set[str] | None = None,
    dependencies: bool = True,
    whole: bool = False,
) -> dict[str, BuildOutcome]:
    """Catch every model (or ``only`` those, with the models they read unless ``dependencies`` is false) up with the
    loaded changes; ``whole`` rebuilds them from scratch. Returns what each build did."""
    from cohortflow.analyses import definition_rows, load_definitions, model_params

    params = {**model_params(cfg), "late_arrival_days": cfg.ingest.late_arrival_days}
    definitions = definition_rows(cfg)
    wh.bootstrap()
    with wh.begin() as conn:
        wh.lock(conn, "cohortflow:definitions")
        load_definitions(wh, conn, cfg)
    models = load_models()
    wanted = set(models) if only is None else (_with_dependencies(only, models) if dependencies else set(only))
    done: dict[str, BuildOutcome] = {}
    reads: _Reads | None = None
    for model in models.values():
        if model.name not in wanted:
            continue
        with wh.begin() as conn:
            if model.materialized == "view":
                _run_statements(wh, conn, model, {})
                continue
            # Builds of one model wait for each other (dates run in parallel on PostgreSQL).
            wh.lock(conn, f"cohortflow:model:{model.name}")
            reads = reads or _Reads.read(wh, conn)
            outcome = _build_one(wh, conn, cfg, model, models, params, definitions, reads, whole=whole)
        checkpoint("models", cfg.target_path)  # (fault tests: a model committed, the rest not built)
        if outcome is None:
            if progress:
                progress(f"  {model.table}: up to date")
            continue
        done[model.name] = outcome
        if progress:
            progress(f"  built {model.table}: {outcome.describe()} in {outcome.seconds:.1f} s")
    return done


def forget_changes(wh: Warehouse) -> None:
    """Drop the change rows every model and publish have caught up with."""
    with wh.begin() as conn:
        low = wh.scalar(
            conn,
            "select min(change_id) from (select change_id from meta.model_state "
            "union all select change_id from meta.publish_state) as s",
        )
        if low is None:
            return
        wh.execute(conn, "delete from meta.changed_pairs where change_id <= :c", {"c": low})
        # A model's changes stay until the models reading it and publish have read them.
        wh.execute(
            conn,
            "delete from meta.model_changes where change_id <= :c",
            {"c": low},
        )


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
    # As of the end date, with the history starting at the start date (a build binds the warehouse's own).
    values = {
        "as_of_date": end_date,
        "first_date": start_date,
        "model_name": name,
        "scoped": False,
        **(params or {}),
        "start_date": start_date,
        "end_date": end_date,
    }
    order = {"start_date": 0, "end_date": 1, "as_of_date": 2, "first_date": 3}
    used = sorted({name for stmt in stmts for name in BIND_PARAMETER.findall(stmt)}, key=lambda k: (order.get(k, 2), k))
    bound = ", ".join(f"{k}={values[k]}" if k in values else f"{k}=(unset)" for k in used)
    header = f"-- model {name} on {dialect}; bound parameters: {bound or 'none'}\n"
    return header + ";\n\n".join(stmts) + ";\n"

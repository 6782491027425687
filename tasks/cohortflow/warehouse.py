"""Warehouse access: one SQLAlchemy engine, one SQL dialect path, one binding path.

All SQL in the project is written in one source dialect (DuckDB) and goes
through :func:`render`, which transpiles it with sqlglot for the warehouse's
engine and keeps every parameter as a SQLAlchemy ``:name`` bind parameter.
Values are always bound by the driver, never formatted into SQL text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import io
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from cohortflow.config import Config

SOURCE_DIALECT = "duckdb"
SCHEMAS = ("raw", "models", "reports", "meta")


class WarehouseError(Exception):
    """A warehouse problem, with a one-line message safe to print (no secrets)."""


@functools.lru_cache(maxsize=512)
def render(sql: str, dialect: str, pretty: bool = True, ctes: str | None = None) -> str:
    """Transpile source-dialect SQL to ``dialect``, keeping ``:name`` bind parameters.

    sqlglot would rewrite placeholders per dialect (``$name``, ``%(name)s``),
    which SQLAlchemy's ``text()`` cannot bind; they are re-emitted as ``:name``
    so the driver binds them on every engine. ``ctes``: a WITH query (source
    dialect) whose CTEs replace the same-named ones of ``sql`` (see
    :func:`replace_ctes`).
    """
    target = "postgres" if dialect.startswith("postgres") else dialect

    def functions(node: exp.Expression) -> exp.Expression:
        if _is_call(node, "prop"):
            return _prop(node, target)
        if _is_call(node, "one_of"):
            return _one_of(node, target)
        if target == "postgres" and isinstance(node, exp.Round) and node.args.get("decimals") is not None:
            # PostgreSQL has round(numeric, int) but no round(double precision, int):
            # https://www.postgresql.org/docs/15/functions-math.html
            inner = exp.Round(this=exp.cast(node.this.copy(), "numeric"), decimals=node.args["decimals"].copy())
            return exp.cast(inner, "double")
        return node

    statements = []
    for tree in sqlglot.parse(sql, read=SOURCE_DIALECT):
        if tree is None:
            continue
        if ctes is not None:
            tree = replace_ctes(tree, ctes)
        tree = same_meaning(tree, target)
        # (placeholders in a pass of their own, after the functions: a transform does not visit the inside of a node
        # it replaced, and a function's arguments may hold a placeholder)
        tree = tree.transform(functions).transform(
            lambda node: exp.Var(this=":" + node.name) if isinstance(node, exp.Placeholder) and node.name else node
        )
        statements.append(tree.sql(dialect=target, pretty=pretty))
    return ";\n".join(statements)


def replace_ctes(tree: exp.Expression, ctes: str) -> exp.Expression:
    """``tree``, a WITH query (changed in place), with the CTEs of ``ctes`` (a WITH query whose final SELECT is not
    used) in place of its same-named CTEs. A CTE of ``ctes`` that ``tree`` does not have goes just before the next
    one that replaces one of its CTEs, so it can only be read by the replacements."""
    target = tree.args.get("with_")
    replacements = sqlglot.parse_one(ctes, read=SOURCE_DIALECT).args.get("with_")
    if target is None or replacements is None:
        raise ValueError("replacing CTEs needs a WITH query on both sides")
    merged = list(target.expressions)
    names = [cte.alias for cte in merged]
    pending: list[exp.CTE] = []
    for cte in replacements.expressions:
        if cte.alias not in names:
            pending.append(cte)
            continue
        at = names.index(cte.alias)
        merged[at : at + 1] = [*pending, cte]
        names[at : at + 1] = [*(p.alias for p in pending), cte.alias]
        pending = []
    if pending:
        raise ValueError(f"CTEs {', '.join(p.alias for p in pending)} are not followed by one that replaces a CTE of the query")
    target.set("expressions", merged)
    return tree


def _prop(node: exp.Anonymous, target: str) -> exp.Expression:
    """``prop(json_text, key)``: the text of a top-level property whose key is a value (a column or a bound parameter).

    Property keys come from config as data, so they cannot be part of a literal
    JSON path; each engine gets its own key lookup.
    """
    if len(node.expressions) != 2:
        raise ValueError("prop() takes (json_text, key)")
    doc, key = node.expressions
    if target == "postgres":
        return exp.Anonymous(this="jsonb_extract_path_text", expressions=[exp.cast(doc, "jsonb"), key])
    if target == "trino":
        # Trino's JSON paths must be constants: the document as a map from key to JSON value; a string value's
        # text is its cast to varchar, any other value's its JSON text (as DuckDB's json_extract_string). Only a
        # string is cast: Trino casts the JSON number 2.5 to '2.5E0'.
        value = exp.func(
            "element_at", exp.cast(exp.func("json_parse", doc), "map(varchar, json)", dialect="trino"), key
        )
        text = exp.func("json_format", value.copy())
        is_string = exp.func("starts_with", text.copy(), exp.Literal.string('"'))
        return exp.Coalesce(
            this=exp.If(this=is_string, true=exp.cast(value, "varchar")),
            expressions=[exp.Nullif(this=text, expression=exp.Literal.string("null"))],
        )
    # DuckDB: a JSONPath whose member name is the key quoted as a JSON string ($."a.b").
    path = exp.DPipe(this=exp.Literal.string("$."), expression=exp.cast(exp.func("to_json", key), "varchar"))
    return exp.Anonymous(this="json_extract_string", expressions=[doc, path])


def _is_call(node: exp.Expression, name: str) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.this).lower() == name


def _one_of(node: exp.Anonymous, target: str) -> exp.Expression:
    """``one_of(value, (select ...))``: ``value`` is among the few rows of an uncorrelated subquery (the names a
    definition table lists), as ``value in (select ...)``.

    On PostgreSQL it becomes ``value = any(array(select ...))``: the subquery runs once, before the scan, and the
    scan checks the value. PostgreSQL keeps ``in (select ...)`` a semi-join above the joins of the view it filters
    (models.stg_events: every event left-joined to the identity map), so a model reading a few named events joined
    every event to the identities first. The array is searched row by row: only for small subqueries.
    """
    if len(node.expressions) != 2 or not isinstance(node.expressions[1], exp.Subquery):
        raise ValueError("one_of() takes (value, (select ...))")
    value, subquery = node.expressions
    if target == "postgres":
        return exp.EQ(this=value, expression=exp.Any(this=exp.Paren(this=exp.Array(expressions=[subquery.this]))))
    return exp.In(this=value, query=subquery)


# -- same meaning on every engine ---------------------------------------------
#
# sqlglot translates syntax; a few source (DuckDB) constructs translate into valid SQL that means something else
# on another engine, or into SQL the engine lacks. same_meaning() rewrites them, with the types sqlglot infers
# from the project's table definitions, for every target; where the target already means what DuckDB means it
# leaves the node alone. tests/unit/test_dialect_semantics.py pins each case on every engine.
#
#   source (DuckDB)                     DuckDB / PostgreSQL        Trino as translated        rewritten for Trino
#   date + n, date - n (integer n)      date                       error (no date + integer)  date_add('day', n, date)
#   date - date                         integer days               interval day to second     date_diff('day', b, a)
#   date + interval                     timestamp                  date                       cast(date as timestamp) + interval
#   extract(dow), dayofweek()           0 = Sunday .. 6            1 = Monday .. 7 = Sunday   day_of_week(x) % 7
#                                       (PostgreSQL has no dayofweek(): extract(dow) there)
#   extract(isodow), isodow()           1 = Monday .. 7 = Sunday   error / day_of_week        day_of_week(x)
#   extract(epoch from timestamp)       seconds since 1970 (UTC)   session time zone          to_unixtime(with_timezone(x, 'UTC'))
#   median, quantile_cont,              exact, interpolated        no such function           sorted array, interpolated
#     percentile_cont within group                                  (approx_percentile only)
#   md5(text)                           hex text                   error (md5 of varbinary)   lower(to_hex(md5(to_utf8(x))))
#   generate_series(...) as t(c)        rows named c               rows named t               unnest(sequence(...)) as t(c)

_INTEGER_TYPES = {
    exp.DataType.Type.TINYINT,
    exp.DataType.Type.SMALLINT,
    exp.DataType.Type.INT,
    exp.DataType.Type.BIGINT,
    exp.DataType.Type.UTINYINT,
    exp.DataType.Type.USMALLINT,
    exp.DataType.Type.UINT,
    exp.DataType.Type.UBIGINT,
    exp.DataType.Type.INT128,
}


def same_meaning(tree: exp.Expression, target: str) -> exp.Expression:
    """``tree`` (source dialect) with the constructs whose meaning differs on ``target`` rewritten (see above)."""
    if target == "postgres":
        return _post_order(tree, _postgres_node)
    if target != "trino" or not isinstance(tree, exp.Query | exp.Insert | exp.Delete | exp.Update | exp.Create):
        return tree
    if isinstance(tree, exp.Create) and not isinstance(tree.expression, exp.Query):
        return tree
    _annotate(tree)
    return _post_order(tree, _trino_node)


def _postgres_node(node: exp.Expression) -> exp.Expression:
    # sqlglot writes DuckDB's dayofweek()/isodow() as functions PostgreSQL lacks; extract() means the same there.
    if isinstance(node, exp.DayOfWeekIso | exp.DayOfWeek) and not isinstance(node, exp.Extract):
        unit = "isodow" if isinstance(node, exp.DayOfWeekIso) else "dow"
        return exp.Extract(this=exp.var(unit), expression=node.this)
    return node


def _annotate(tree: exp.Expression) -> None:
    """Qualify ``tree``'s columns and infer every node's type, in place, from the project's table definitions.

    sqlglot builds a schema object from the mapping it is given on every call: only the tables ``tree`` names are
    passed (a name without its schema: that name in every schema, as sqlglot resolves it when it is unique)."""
    known = _known_schema()
    schema: dict[str, dict[str, dict[str, str]]] = {}
    for table in tree.find_all(exp.Table):
        for db in [table.db] if table.db else list(known):
            columns = known.get(db, {}).get(table.name)
            if columns is not None:
                schema.setdefault(db, {})[table.name] = columns
    _annotate_with(tree, schema)


def _annotate_with(tree: exp.Expression, schema: dict) -> None:
    from sqlglot.optimizer.annotate_types import annotate_types
    from sqlglot.optimizer.qualify import qualify

    qualify(tree, schema=schema, dialect=SOURCE_DIALECT, validate_qualify_columns=False, quote_identifiers=False)
    annotate_types(tree, schema=schema, dialect=SOURCE_DIALECT)


@functools.cache
def _known_schema() -> dict[str, dict[str, dict[str, str]]]:
    """schema -> table -> column -> type of every table the project defines (base tables, definitions, models)."""
    from cohortflow.analyses import modules
    from cohortflow.models import load_models

    schema: dict[str, dict[str, dict[str, str]]] = {}
    for ddl in BASE_TABLES:
        create = sqlglot.parse_one(ddl, read=SOURCE_DIALECT)
        if isinstance(create, exp.Alter):
            for action in create.args.get("actions") or []:
                if isinstance(action, exp.ColumnDef):
                    schema[create.this.db][create.this.name][action.name] = action.args["kind"].sql(SOURCE_DIALECT)
            continue
        if not isinstance(create.this, exp.Schema):
            # create table ... as select * from <a table defined before>: the same columns
            source = create.expression.find(exp.Table)
            schema.setdefault(create.this.db, {})[create.this.name] = dict(schema[source.db][source.name])
            continue
        table = create.this.this
        schema.setdefault(table.db, {})[table.name] = {
            c.name: c.args["kind"].sql(SOURCE_DIALECT) for c in create.this.expressions if isinstance(c, exp.ColumnDef)
        }
    for module in modules():
        for table, columns in getattr(module, "TABLES", {}).items():
            db, name = table.split(".")
            schema.setdefault(db, {})[name] = dict(
                (part.strip().split(None, 1)[0], part.strip().split(None, 1)[1]) for part in columns.split(",")
            )
    for model in load_models().values():  # in dependency order: a view's sources come first
        if model.columns:
            schema.setdefault("models", {})[model.name] = {c.name: c.type for c in model.columns}
        else:  # a view: the types of its SELECT's columns
            tree = sqlglot.parse_one(model.sql, read=SOURCE_DIALECT)
            _annotate_with(tree, schema)
            schema.setdefault("models", {})[model.name] = {
                select.alias_or_name: select.type.sql(SOURCE_DIALECT) if select.type else "unknown"
                for select in tree.selects
            }
    return schema


def _post_order(node: exp.Expression, fn) -> exp.Expression:
    """Apply ``fn`` to every node, children before parents (so a parent sees its children's rewritten types)."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _post_order(value, fn))
        elif isinstance(value, list):
            node.set(key, [_post_order(v, fn) if isinstance(v, exp.Expression) else v for v in value])
    return fn(node)


def _is(node: exp.Expression, *types: exp.DataType.Type) -> bool:
    return node.type is not None and node.type.this in types


def _typed(node: exp.Expression, type_name: str) -> exp.Expression:
    node.type = exp.DataType.build(type_name)
    return node


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    """``name(args)`` exactly as written (sqlglot would map a known name to its own node and argument order)."""
    return exp.Anonymous(this=name, expressions=list(args))


def _trino_sql(template: str, **parts: exp.Expression) -> exp.Expression:
    """A Trino expression from ``template`` with each ``{name}`` column replaced by a copy of ``parts[name]``."""
    tree = sqlglot.parse_one(template.format(**{k: f"cf_part_{k}" for k in parts}), read="trino")
    for column in list(tree.find_all(exp.Column)):
        if column.name.startswith("cf_part_") and not column.table:
            column.replace(parts[column.name[len("cf_part_") :]].copy())
    return tree


def _day_of_week(node: exp.Expression) -> exp.Expression | None:
    """The argument of a DuckDB day-of-week (``dow``: 0 = Sunday) or ISO day-of-week (``isodow``) node, and which."""
    if isinstance(node, exp.Extract):
        unit = node.this.name.lower()
        if unit in ("dow", "dayofweek", "weekday"):
            return node.expression, False
        if unit in ("isodow",):
            return node.expression, True
    if isinstance(node, exp.DayOfWeekIso):
        return node.this, True
    if isinstance(node, exp.DayOfWeek):
        return node.this, False
    return None


def _trino_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Add | exp.Sub):
        left, right = node.this, node.expression
        if isinstance(node, exp.Add) and _is(right, exp.DataType.Type.DATE) and not _is(left, exp.DataType.Type.DATE):
            left, right = right, left
        if (
            _is(left, exp.DataType.Type.DATE)
            and right.type is not None
            and right.type.this in _INTEGER_TYPES
            and not right.find(exp.Interval)  # n * interval '1 month' is typed by its integer factor
        ):
            days = right if isinstance(node, exp.Add) else exp.Neg(this=exp.Paren(this=right))
            return _typed(_call("date_add", exp.Literal.string("day"), days, left), "date")
        if isinstance(node, exp.Sub) and _is(right, exp.DataType.Type.DATE):
            return _typed(_call("date_diff", exp.Literal.string("day"), right, left), "bigint")
        if _is(left, exp.DataType.Type.DATE) and (_is(right, exp.DataType.Type.INTERVAL) or right.find(exp.Interval)):
            as_timestamp = exp.cast(left, "timestamp")
            return _typed(type(node)(this=as_timestamp, expression=right), "timestamp")
        return node
    if (dow := _day_of_week(node)) is not None:
        arg, iso = dow
        day = _call("day_of_week", arg)
        return _typed(day if iso else exp.Paren(this=exp.Mod(this=day, expression=exp.Literal.number(7))), "bigint")
    if isinstance(node, exp.Extract) and node.this.name.lower() == "epoch":
        return _typed(_trino_sql("to_unixtime(with_timezone({x}, 'UTC'))", x=node.expression), "double")
    if isinstance(node, exp.Median | exp.PercentileCont | exp.WithinGroup):
        return _exact_percentile(node)
    if isinstance(node, exp.Select) and node.args.get("windows"):
        _inline_frameless_windows(node)
        return node
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        # A planner hint Trino does not take (it plans each reference of a CTE on its own).
        node.set("materialized", None)
        return node
    if isinstance(node, exp.Collate):
        # Trino compares varchar by code point (the byte order of UTF-8): the order ``collate "C"`` asks for.
        return node.this
    if isinstance(node, exp.MD5):
        return _typed(_trino_sql("lower(to_hex(md5(to_utf8({x}))))", x=node.this), "varchar")
    if isinstance(node, exp.Table) and isinstance(node.this, exp.GenerateSeries) and node.alias:
        series = node.this
        sequence = _call("sequence", series.args["start"], series.args["end"], *[a for a in [series.args.get("step")] if a])
        return exp.Unnest(expressions=[sequence], alias=node.args["alias"])
    return node


# Window functions whose result does not depend on a frame; Trino refuses a frame for them (DuckDB ignores it).
_FRAMELESS = (exp.Lead, exp.Lag, exp.RowNumber, exp.Rank, exp.DenseRank, exp.Ntile, exp.PercentRank, exp.CumeDist)


def _inline_frameless_windows(select: exp.Select) -> None:
    """A frameless window function over a named window that has a frame gets the window's partition and order
    inline, without the frame (``lead(x) over w`` with ``w as (... rows between ...)``)."""
    named = {w.this.name: w for w in select.args["windows"] if isinstance(w.this, exp.Identifier)}
    for window in select.find_all(exp.Window):
        spec = named.get(window.alias) if isinstance(window.args.get("alias"), exp.Identifier) else None
        if spec is None or not isinstance(window.this, _FRAMELESS) or spec.args.get("spec") is None:
            continue
        window.set("alias", None)
        window.set("partition_by", [p.copy() for p in spec.args.get("partition_by") or []])
        if spec.args.get("order") is not None:
            window.set("order", spec.args["order"].copy())


def _exact_percentile(node: exp.Expression) -> exp.Expression:
    """median(x), quantile_cont(x, p), percentile_cont(p) within group (order by x) as Trino SQL: the non-null values
    sorted into an array, interpolated linearly between the two order statistics around 1 + p * (n - 1), as
    PostgreSQL's percentile_cont and DuckDB's quantile_cont do. Trino has only approx_percentile."""
    if isinstance(node, exp.Median):
        value, fraction = node.this, exp.Literal.number("0.5")
    elif isinstance(node, exp.PercentileCont):
        if node.expression is None:
            return node  # the inside of a WITHIN GROUP, rewritten with its parent
        value, fraction = node.this, node.expression
    else:
        inner = node.this
        if not isinstance(inner, exp.PercentileCont) or len(node.expression.expressions) != 1:
            return node
        ordered = node.expression.expressions[0]
        if ordered.args.get("desc"):
            raise ValueError("percentile_cont ... order by ... desc is not supported on Trino")
        value, fraction = ordered.this, inner.this
    if not isinstance(fraction, exp.Literal):
        raise ValueError(f"a percentile's fraction must be a number literal on Trino, not {fraction.sql()}")
    p = fraction.this
    template = (
        "element_at(transform(array[array_sort(array_agg(cast({x} as double)) filter (where {x} is not null))], "
        f"cf_sorted -> if(cardinality(cf_sorted) = 0, null, "
        f"element_at(cf_sorted, cast(floor(1 + {p} * (cardinality(cf_sorted) - 1)) as bigint)) "
        f"+ (1 + {p} * (cardinality(cf_sorted) - 1) - floor(1 + {p} * (cardinality(cf_sorted) - 1))) "
        f"* (element_at(cf_sorted, cast(ceiling(1 + {p} * (cardinality(cf_sorted) - 1)) as bigint)) "
        f"- element_at(cf_sorted, cast(floor(1 + {p} * (cardinality(cf_sorted) - 1)) as bigint))))), 1)"
    )
    return _typed(_trino_sql(template, x=value), "double")


def _safe_url_text(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


class Warehouse:
    """The project's warehouse: DuckDB file by default, PostgreSQL in production, Trino to scale out.

    Everything engine-specific of Trino lives in :class:`TrinoAccess` (``self.trino``); the methods here
    hand over to it.
    """

    trino: TrinoAccess | None = None
    # Set once bootstrap() has run: a process makes sure of the project's tables once (on Trino the thirty-odd
    # statements cost about a second, and every task, build and publish asks for them).
    _bootstrapped = False

    def __init__(self, cfg: Config, *, url: str | None = None) -> None:
        self.cfg = cfg
        sa_url = sa.make_url(url or cfg.warehouse_url)
        if sa_url.drivername.startswith("postgresql"):
            if sa_url.drivername == "postgresql":
                sa_url = sa_url.set(drivername="postgresql+psycopg")
            if cfg.warehouse.password is not None:
                sa_url = sa_url.set(password=cfg.warehouse.password)
            self.dialect = "postgres"
            self.engine = sa.create_engine(sa_url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        elif sa_url.drivername == "duckdb":
            self.dialect = "duckdb"
            if sa_url.database and sa_url.database != ":memory:":
                Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
            settings = {}
            if cfg.warehouse.memory_limit:
                settings["memory_limit"] = cfg.warehouse.memory_limit
            if cfg.warehouse.threads:
                settings["threads"] = cfg.warehouse.threads
            # One connection: DuckDB allows a single writer process.
            self.engine = sa.create_engine(
                sa_url, poolclass=sa.pool.SingletonThreadPool, connect_args={"config": settings} if settings else {}
            )
        elif sa_url.drivername == "trino":
            self.dialect = "trino"
            self.trino = TrinoAccess(cfg, sa_url)
            self.engine = self.trino.engine
        else:
            raise WarehouseError(f"unsupported warehouse URL scheme {sa_url.drivername!r}")
        self.url_text = _safe_url_text(sa_url)
        self.host = sa_url.host or sa_url.database or "?"

    # -- connections -------------------------------------------------------
    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction; errors become one-line WarehouseErrors without secrets."""
        opened: list[sa.Connection] = []
        try:
            with self.engine.begin() as conn:
                opened.append(conn)
                yield conn
        except sa.exc.OperationalError as exc:
            raise WarehouseError(self._describe(exc)) from None
        except sa.exc.DBAPIError as exc:
            raise WarehouseError(self._describe(exc)) from exc
        finally:
            if self.trino is not None and opened:
                # After the commit or rollback: drop the transaction's load tables, release its locks.
                self.trino.transaction_ended(opened[0])

    def _describe(self, exc: sa.exc.DBAPIError) -> str:
        orig = exc.orig
        # The Trino client's errors carry the server's message apart from the error's repr.
        text = getattr(orig, "message", None) or (str(orig) if orig is not None else str(exc))
        text = text.strip().splitlines()[0] if text.strip() else type(orig).__name__
        if self.cfg.warehouse.password:
            text = text.replace(self.cfg.warehouse.password, "***")
        return f"warehouse {self.host}: {text}"

    def lock(self, conn: sa.Connection, name: str) -> None:
        """Serialise writers of one resource until ``conn``'s transaction ends.

        PostgreSQL: a transaction-level advisory lock (other writers of the same
        resource wait). DuckDB needs none: it admits one writing process. Trino has
        no locks: a file lock serialises the writers on this machine (see :meth:`TrinoAccess.lock`).
        """
        if self.dialect == "postgres":
            conn.execute(sa.text("select pg_advisory_xact_lock(hashtext(:name))"), {"name": name})
        elif self.trino is not None:
            self.trino.lock(conn, name, wait=True)

    @contextlib.contextmanager
    def session_lock(self, name: str, *, unique: bool = False) -> Iterator[None]:
        """Serialise holders of ``name`` for the whole ``with`` block, across transactions and file writes.

        PostgreSQL: a session-level advisory lock on a connection of its own, released at the end of the block (or
        by the server when the process dies). Trino: a file lock held for the block (see :meth:`TrinoAccess.lock`).
        DuckDB needs none: it admits one writing process. ``unique``: no other holder ever waits for ``name`` (a
        running task's lock): Trino's lock file is removed with the lock.
        """
        if self.trino is not None:
            with self.trino.file_lock(name, wait=True, remove=unique):
                yield
            return
        if self.dialect != "postgres":
            yield
            return
        try:
            conn = self.engine.connect()
            conn.execute(sa.text("select pg_advisory_lock(hashtext(:name))"), {"name": name})
            conn.commit()
        except sa.exc.DBAPIError as exc:
            raise WarehouseError(self._describe(exc)) from None
        try:
            yield
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.execute(sa.text("select pg_advisory_unlock(hashtext(:name))"), {"name": name})
                conn.commit()
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()

    def forget_lock(self, name: str) -> None:
        """A ``unique`` session lock whose holder is known to have died (its task marked interrupted): on Trino its
        lock file, which the dead process could not remove, is deleted. (A lock is free while nobody holds it; the
        file is only where it would be held.)"""
        if self.trino is not None:
            self.trino.lock_path(name).unlink(missing_ok=True)

    def try_lock(self, conn: sa.Connection, name: str) -> bool:
        """Like :meth:`lock` but never waits: False when another session holds it."""
        if self.trino is not None:
            return self.trino.lock(conn, name, wait=False)
        if self.dialect != "postgres":
            return True
        return bool(conn.execute(sa.text("select pg_try_advisory_xact_lock(hashtext(:name))"), {"name": name}).scalar())

    def comment(self, conn: sa.Connection, kind: str, target: str, text: str) -> None:
        """``comment on table|column target is '<text>'``; the text is quoted as a literal by sqlglot."""
        if kind not in ("table", "column"):
            raise ValueError(kind)
        for part in target.split("."):
            check_identifier(part)
        literal = exp.Literal.string(text).sql(dialect="postgres" if self.dialect == "postgres" else "duckdb")
        statement = f"comment on {kind} {target} is {literal}"
        if self.trino is not None:
            self.trino.comment(statement, kind, target, text)
            return
        conn.execute(sa.text(statement.replace(":", r"\:")))

    def render(self, sql: str) -> str:
        return render(sql, self.dialect)

    def execute(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult:
        """Run source-dialect SQL with bound parameters."""
        if self.trino is not None:
            return self.trino.execute(conn, sql, params)
        return self.run(conn, self.render(sql), params)

    def run(self, conn: sa.Connection, statement: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult:
        """Run one statement already in the warehouse's dialect (from :meth:`render` or ``model_statements``)."""
        if self.trino is not None:
            return self.trino.run(conn, statement, params)
        return conn.execute(sa.text(statement), dict(params or {}))

    def scalar(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        # Every row is fetched: DuckDB keeps a result that was not read to its end open on the connection, and its
        # next query through the driver connection (an Arrow read, a registered view) is refused until then.
        rows = self.execute(conn, sql, params).fetchall()
        return rows[0][0] if rows else None

    def dispose(self) -> None:
        self.engine.dispose()
        if self.trino is not None:
            self.trino.autocommit.dispose()
            self.trino.release_owner()

    # -- schema ------------------------------------------------------------
    def bootstrap(self) -> None:
        """Create the schemas and the project's own tables when they are missing (once per instance). One catalog
        question says what exists; only what is missing is created or migrated (on Trino each statement costs tens
        of milliseconds whatever it does)."""
        if self._bootstrapped:
            return
        with self.begin() as conn:
            self.lock(conn, "cohortflow:bootstrap")
            schemas, existing = self._project_catalog(conn)
            for schema in SCHEMAS:
                if schema not in schemas:
                    self.run(conn, f"create schema if not exists {schema}")
            for ddl in BASE_TABLES:
                if bootstrap_needed(ddl, existing):
                    self.execute(conn, ddl)
            for table, column, type_, fill in MIGRATIONS:
                # A table missing from the catalog was created above, with every column of today.
                if table in existing and column not in existing[table]:
                    self.execute(conn, f"alter table {table} add column {column} {type_}")
                    self.execute(conn, f"update {table} set {column} = {fill}")
            if self.dialect == "postgres":
                for ddl in POSTGRES_INDEXES:
                    self.run(conn, ddl)
        self._bootstrapped = True

    def _project_catalog(self, conn: sa.Connection) -> tuple[set[str], dict[str, set[str]]]:
        """The project's schemas that exist in this database, and ``schema.table``: its columns for each of their
        tables and views, in one catalog question (on Trino the session's catalog is the only one its
        information_schema lists)."""
        names = ", ".join(f"'{schema}'" for schema in SCHEMAS)
        on_trino = self.trino is not None
        schemata_here = "" if on_trino else " and catalog_name = current_database()"
        columns_here = "" if on_trino else " and table_catalog = current_database()"
        schemas: set[str] = set()
        columns: dict[str, set[str]] = {}
        for schema, table, column in self.execute(
            conn,
            f"select schema_name, null, null from information_schema.schemata where schema_name in ({names}){schemata_here} "
            "union all "
            "select table_schema, table_name, column_name from information_schema.columns "
            f"where table_schema in ({names}){columns_here}",
        ).fetchall():
            if table is None:
                schemas.add(schema)
            else:
                columns.setdefault(f"{schema}.{table}", set()).add(column)
        return schemas, columns

    def schema_columns(self, conn: sa.Connection, schema: str) -> dict[str, list[str]]:
        """The columns of every table of ``schema`` (``schema.table``: columns in order), in one catalog question;
        the project's columns only (not Trino's whole-table partition)."""
        columns: dict[str, list[str]] = {}
        for table, column in self.execute(
            conn,
            "select table_name, column_name from information_schema.columns where table_schema = :s "
            "order by table_name, ordinal_position",
            {"s": schema},
        ).fetchall():
            if self.trino is None or column != WHOLE_TABLE_PARTITION:
                columns.setdefault(f"{schema}.{table}", []).append(column)
        return columns

    def table_exists(self, conn: sa.Connection, schema: str, table: str) -> bool:
        if self.trino is not None:
            # Asked outside the transaction, as every catalog question on Trino (see TrinoAccess.run).
            with self.trino.autocommit.connect() as other:
                return sa.inspect(other).has_table(table, schema=schema)
        return sa.inspect(conn).has_table(table, schema=schema)

    def table_names(self, conn: sa.Connection, schema: str) -> set[str]:
        """The tables of ``schema`` (none when it does not exist), in one catalog question."""
        if self.trino is not None:
            with self.trino.autocommit.connect() as other:
                return set(sa.inspect(other).get_table_names(schema=schema))
        return set(sa.inspect(conn).get_table_names(schema=schema))

    # -- bulk load ---------------------------------------------------------
    def load_batches(self, conn: sa.Connection, table: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        """Append record batches to ``schema.table`` (columns by name) inside ``conn``'s transaction, holding one batch
        in memory at a time. On Trino they are one write (a Hive partition takes one insert per transaction): the
        batches are streamed into one staged Parquet file, a row group each, and inserted from it."""
        if self.trino is not None:
            rows, staged = self.trino.stage_batches(conn, table, schema, batches)
            if rows:
                columns = ", ".join(schema.names)
                self.run(conn, f"insert into {self.trino.insert_target(conn, table)} ({columns}) select {columns} from {staged}")
            return rows
        return sum(self.load_arrow(conn, table, pa.Table.from_batches([rb], schema=schema)) for rb in batches)

    def load_arrow(self, conn: sa.Connection, table: str, data: pa.Table) -> int:
        """Append an Arrow table to ``schema.table`` (columns by name) inside ``conn``'s transaction."""
        if data.num_rows == 0:
            return 0
        columns = ", ".join(data.column_names)
        if self.trino is not None:
            staged = self.trino.stage(conn, table, data)
            self.run(conn, f"insert into {self.trino.insert_target(conn, table)} ({columns}) select {columns} from {staged}")
        elif self.dialect == "duckdb":
            raw = conn.connection.driver_connection
            view = "_cohortflow_load"
            raw.register(view, data)
            try:
                raw.execute(f"insert into {table} ({columns}) select {columns} from {view}")
            finally:
                raw.unregister(view)
        else:
            raw = conn.connection.driver_connection
            buf = io.BytesIO()
            import pyarrow.csv as pacsv

            pacsv.write_csv(data, buf, write_options=pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            with raw.cursor() as cur:
                with cur.copy(f"copy {table} ({columns}) from stdin with (format csv)") as copy:
                    copy.write(buf.getvalue())
        return data.num_rows

    def insert_rows(self, conn: sa.Connection, table: str, rows: list[Mapping[str, Any]], chunk: int = 200) -> int:
        """Insert a few rows (definitions from the config) inside ``conn``'s transaction: multi-row VALUES with bound
        parameters, ``chunk`` rows per statement; a key missing from a row is null. ``table`` and the keys are names
        from the project's code, not from the config. Cheaper than :meth:`load_arrow` for small tables (no Arrow
        table to build, which imports pandas on first use)."""
        columns = list(dict.fromkeys(key for row in rows for key in row))
        for name in columns:
            check_identifier(name)
        if self.trino is not None:
            chunk = max(chunk, len(rows))  # a Hive partition takes one insert per transaction
            table = self.trino.insert_target(conn, table)
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            values = ", ".join(
                "(" + ", ".join(f":v{i}_{j}" for j in range(len(columns))) + ")" for i in range(len(part))
            )
            params = {f"v{i}_{j}": row.get(col) for i, row in enumerate(part) for j, col in enumerate(columns)}
            self.run(conn, f"insert into {table} ({', '.join(columns)}) values {values}", params)
        return len(rows)

    @contextlib.contextmanager
    def staged(self, conn: sa.Connection, name: str, like: str, data: pa.Table) -> Iterator[str]:
        """``data`` as a relation ``conn``'s statements can read until the block ends; yields its name.

        DuckDB and PostgreSQL: a temporary table ``name`` shaped like ``like``, loaded in bulk (COPY on
        PostgreSQL, and analysed there: a temporary table has no statistics until analysed). Trino: a load
        table the data was written to as Parquet (see :meth:`TrinoAccess.stage`).
        """
        check_identifier(name)
        if self.trino is not None:
            yield self.trino.stage(conn, like, data)
            return
        self.execute(conn, f"drop table if exists {name}")
        self.execute(conn, f"create temporary table {name} as select * from {like} where 1 = 0")
        self.load_arrow(conn, name, data)
        if self.dialect == "postgres":
            self.execute(conn, f"analyze {name}")
        yield name
        self.execute(conn, f"drop table {name}")

def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def check_identifier(name: str) -> str:
    """Allow-list check for identifiers the project builds from its own names."""
    if not _IDENT_RE.match(name):
        raise ValueError(f"not a safe identifier: {name!r}")
    return name


# The project's own tables. Source dialect; transpiled like every model.
BASE_TABLES = [
    """
    create table if not exists raw.events (
        event_id varchar not null,
        event_name varchar not null,
        distinct_id varchar not null,
        event_time timestamp not null,
        event_date date not null,
        received_at timestamp not null,
        source_format varchar not null,
        app_id varchar,
        platform varchar,
        app_version varchar,
        channel varchar,
        session_id varchar,
        properties varchar,
        is_activity boolean not null,
        link_anonymous_id varchar,
        link_login_id varchar,
        load_date date not null,
        ingest_file varchar not null,
        ingest_line bigint not null,
        source_name varchar not null
    )
    """,
    # Every other copy of an event id of a source that raw.events holds (retried sends), with the same columns: kept so
    # that a rerun that removes the copy loaded can restore another, and so that each ledger counts from the tables.
    """
    create table if not exists raw.duplicates as select * from raw.events where 1 = 0
    """,
    """
    create table if not exists raw.quarantine (
        load_date date not null,
        ingest_file varchar not null,
        ingest_line bigint not null,
        source_format varchar not null,
        reason varchar not null,
        detail varchar,
        raw_line varchar,
        source_name varchar
    )
    """,
    """
    create table if not exists meta.ingest_ledger (
        load_date date not null,
        run_id varchar not null,
        source_name varchar not null,
        ingest_file varchar not null,
        lines_read bigint not null,
        events_loaded bigint not null,
        duplicates_removed bigint not null,
        lines_quarantined bigint not null,
        loaded_at timestamp not null,
        damage varchar
    )
    """,
    # Added later: what broke a damaged file off (null: the file was read to its end).
    "alter table meta.ingest_ledger add column if not exists damage varchar",
    """
    create table if not exists meta.run_log (
        run_id varchar not null,
        workflow varchar not null,
        task varchar not null,
        business_date date not null,
        status varchar not null,
        runner varchar not null,
        started_at timestamp not null,
        ended_at timestamp,
        rows_in bigint,
        rows_out bigint,
        error varchar
    )
    """,
    """
    create table if not exists meta.validation_results (
        run_id varchar not null,
        business_date date not null,
        suite varchar not null,
        expectation varchar not null,
        column_name varchar,
        severity varchar not null,
        success boolean not null,
        observed varchar,
        validated_at timestamp not null
    )
    """,
    # Every load (and every requested rebuild) is a change; models and publish catch up with the changes in order.
    """
    create table if not exists meta.change_log (
        change_id bigint not null,
        business_date date not null,
        kind varchar not null,
        run_id varchar not null,
        rebuild_start date,
        rebuild_end date,
        created_at timestamp not null
    )
    """,
    # The (resolved user, event date) pairs whose events a change added, removed or re-attributed (old and new user).
    """
    create table if not exists meta.changed_pairs (
        change_id bigint not null,
        user_id varchar not null,
        event_date date not null
    )
    """,
    # Per model: the change it is built through, the as-of date and history start it was built with, its fingerprint.
    """
    create table if not exists meta.model_state (
        model_name varchar not null,
        change_id bigint not null,
        as_of_date date,
        first_date date,
        fingerprint varchar not null,
        built_at timestamp not null
    )
    """,
    # What a model build changed: partition dates (and users, for user-grain models); a null date = every row.
    """
    create table if not exists meta.model_changes (
        model_name varchar not null,
        change_id bigint not null,
        user_id varchar,
        changed_date date,
        is_all boolean not null
    )
    """,
    # The users a user-grain model build rebuilds, and the first date of each (rows from it on are replaced).
    """
    create table if not exists meta.build_scope (
        model_name varchar not null,
        user_id varchar not null,
        from_date date not null
    )
    """,
    # Per published model: the change its reports table is published through.
    """
    create table if not exists meta.publish_state (
        model_name varchar not null,
        change_id bigint not null,
        as_of_date date,
        published_at timestamp not null
    )
    """,
    # Per reports table: the fingerprint of the contract's shape it was created with (a new one re-creates it), and
    # of the comments it was given (a new one comments it again; publish gives no comment otherwise).
    """
    create table if not exists meta.published_schema (
        table_name varchar not null,
        fingerprint varchar not null,
        applied_at timestamp not null
    )
    """,
    """
    create table if not exists meta.published_comments (
        table_name varchar not null,
        fingerprint varchar not null
    )
    """,
]

# PostgreSQL reads a table whole unless an index serves the filter. Every night selects the arrival date's rows of
# raw.events and raw.duplicates (by load_date: replacing the date's copies, re-judging a few days around it) and the
# models read the dates a change reaches (by event_date): without these, each of those statements read the whole
# history, so a night cost more as the months piled up (at 916,221 events, the night's two statements that move a
# date's duplicates took 1.4 s each, of a 8 s ingest). DuckDB and Trino prune on their own (zone maps, partitions).
POSTGRES_INDEXES = [
    "create index if not exists events_load_date on raw.events (load_date)",
    "create index if not exists events_event_date on raw.events (event_date)",
    "create index if not exists duplicates_load_date on raw.duplicates (load_date)",
    # The identity links (a few thousand rows among the events), which models.stg_identities reads and every reader
    # of models.stg_events with it: a partial index whose predicate is the view's filter (sql/staging/
    # stg_identities.sql; the planner uses it only while that filter implies this predicate). Without it each read
    # of the view scanned all of raw.events: 0.19 s at 946,532 events, several times per model build.
    "create index if not exists events_identity_links on raw.events (link_anonymous_id) "
    "where link_anonymous_id is not null and link_login_id is not null and link_anonymous_id <> link_login_id",
]

# What a statement of BASE_TABLES makes: a table (``create table if not exists``) or a column (``alter table ... add
# column if not exists``).
_BOOTSTRAP_RE = re.compile(
    r"\s*(?:create table if not exists ([a-z_]+\.[a-z_]+)\b|alter table ([a-z_]+\.[a-z_]+) add column if not exists ([a-z_]+)\b)"
)


def bootstrap_needed(ddl: str, existing: Mapping[str, Iterable[str]]) -> bool:
    """Whether the statement ``ddl`` of BASE_TABLES has something to do, given the tables and columns that exist."""
    made = _BOOTSTRAP_RE.match(ddl)
    if made is None:
        raise WarehouseError(f"a statement of BASE_TABLES makes neither a table nor a column: {ddl.strip()[:80]}")
    if made.group(1):
        return made.group(1) not in existing
    return made.group(3) not in existing.get(made.group(2), ())


# Columns added after a warehouse was first created: (table, column, type, value for existing rows).
MIGRATIONS = [
    ("raw.events", "source_name", "varchar", "source_format"),
    ("raw.quarantine", "source_name", "varchar", "source_format"),
    ("raw.duplicates", "source_name", "varchar", "source_format"),
]


# -- Trino ---------------------------------------------------------------------
#
# The warehouse on Trino is a Hive catalog (tables as Parquet files, a Hive metastore). What differs from
# DuckDB and PostgreSQL, and how each is met:
#
# * Transactions: the Hive connector keeps several INSERTs and partition deletes of one transaction invisible
#   until COMMIT, but only through the client's transaction mode (isolation level), not SQL START TRANSACTION.
#   A table created in a transaction cannot be written in it, so DDL runs on its own autocommitting connection
#   first; a transaction that began before still sees the new table.
# * Deletes: a Hive table without ACID deletes whole partitions only. Every table is partitioned by the columns
#   the project deletes by (TRINO_PARTITIONS, and each partition model's partition_by); an UPDATE (the run
#   log's) is run as an overwrite of the partitions it touches (insert_existing_partitions_behavior=OVERWRITE).
# * Bulk load: no COPY and no temporary tables; rows travel as a Parquet file written into the directory of a
#   load table created for the purpose, then move with INSERT ... SELECT (Trino's own writers), so a load is
#   one set-based statement inside the caller's transaction. The load tables are dropped after it ends.
# * Locks: Trino has none. Writers of one resource are serialised by a file lock on this machine.

TRINO_PARTITIONS = {
    "raw.events": ("load_date",),
    "raw.duplicates": ("load_date",),
    "meta.changed_pairs": ("change_id",),
    "meta.model_state": ("model_name",),
    "meta.model_changes": ("model_name", "change_id"),
    "meta.build_scope": ("model_name",),
    "meta.publish_state": ("model_name",),
    "meta.published_schema": ("table_name",),
    "meta.published_comments": ("table_name",),
    "raw.quarantine": ("load_date",),
    "meta.ingest_ledger": ("load_date",),
    "meta.run_log": ("run_id",),
    "meta.validation_results": ("business_date", "suite"),
    "meta.model_builds": ("business_date",),
}

# The partition column of a table without one of its own (always null: one partition). Not a project column.
WHOLE_TABLE_PARTITION = "cohortflow_whole"

_CATALOG_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_ARROW_TO_TRINO = [
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_integer, "bigint"),
    (pa.types.is_floating, "double"),
    (pa.types.is_date, "date"),
    (pa.types.is_timestamp, "timestamp(6)"),
    (pa.types.is_string, "varchar"),
    (pa.types.is_large_string, "varchar"),
    (pa.types.is_null, "varchar"),
]


def trino_partitions(table: str) -> tuple[str, ...]:
    """The partition columns of a project table on Trino (``schema.name``); none for an unpartitioned one."""
    if table in TRINO_PARTITIONS:
        return TRINO_PARTITIONS[table]
    schema, name = table.split(".")
    if schema in ("models", "reports"):
        from cohortflow.models import load_models

        model = load_models().get(name)
        if model is not None and model.materialized == "partition":
            return (model.partition_by,)
    return ()


def trino_scratch_tables(sql: str, ctes: str | None, prefix: str) -> tuple[str, list[tuple[str, str]]]:
    """A model's query (source dialect) for Trino, with some CTEs computed first into scratch tables
    ``<prefix>_<cte>``: see :func:`_trino_scratch_tables`. Worked out once per process for each query, override and
    prefix (each time, sqlglot infers the types of every scratch table's query: 18 builds of the funnel's
    models spent 19.4 s of 204 s there, under the profiler)."""
    query, scratch = _trino_scratch_tables(sql, ctes, prefix)
    return query, list(scratch)


@functools.lru_cache(maxsize=256)
def _trino_scratch_tables(sql: str, ctes: str | None, prefix: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A model's query (source dialect) for Trino, with some CTEs computed first into scratch tables
    ``<prefix>_<cte>``: ``(query reading them, [(table, query), ...])``, in CTE order.

    Trino inlines a CTE at every reference and unrolls a recursive CTE up to max_recursion_depth times, each
    copy with the whole subtree of its inputs. The funnel's plan did not finish in 10 minutes, and with fewer
    copies it still had so many stages that the coordinator's HTTP client queue overflowed. So these CTEs are
    computed once: every CTE read more than once (unless marked ``not materialized``: the source asks for it
    to be inlined, each reference filtering it its own way), every recursive CTE, and the CTEs its recursive
    part reads. Queries with none come back unchanged. Each scratch table's column types are registered in
    :func:`_known_schema` (process-wide, as this cache), for the type-aware rewrites of the queries that read it:
    clearing that cache means clearing this one too.
    """
    tree = sqlglot.parse_one(sql, read=SOURCE_DIALECT)
    if ctes is not None:
        tree = replace_ctes(tree, ctes)
    with_ = tree.args.get("with_")
    if with_ is None:
        return tree.sql(dialect=SOURCE_DIALECT), ()
    names = [cte.alias for cte in with_.expressions]
    reads = {name: 0 for name in names}
    for table in tree.find_all(exp.Table):
        if not table.db and table.name in reads:
            reads[table.name] += 1
    wanted = {
        cte.alias
        for cte in with_.expressions
        if reads[cte.alias] > 1 and cte.args.get("materialized") is not False
    }
    for cte in with_.expressions:
        body = cte.this
        if isinstance(body, exp.Union) and cte.alias in {t.name for t in body.find_all(exp.Table) if not t.db}:
            wanted.add(cte.alias)
            wanted |= {t.name for t in body.expression.find_all(exp.Table) if not t.db and t.name in names}
    scratch: list[tuple[str, str]] = []
    for at, cte in enumerate(with_.expressions):
        if cte.alias not in wanted:
            continue
        table = f"{prefix}_{check_identifier(cte.alias)}"
        query = exp.select("*").from_(cte.alias)
        query.set("with_", exp.With(expressions=[c.copy() for c in with_.expressions[: at + 1]], recursive=True))
        scratch.append((table, query.sql(dialect=SOURCE_DIALECT)))
        # The scratch table's column types, for the type-aware rewrites of the queries that read it.
        typed = query.copy()
        _annotate(typed)
        _known_schema().setdefault(table.split(".")[0], {})[table.split(".")[1]] = {
            select.alias_or_name: select.type.sql(SOURCE_DIALECT) if select.type else "unknown" for select in typed.selects
        }
        cte.set("this", exp.select("*").from_(exp.to_table(table)))
    return tree.sql(dialect=SOURCE_DIALECT), tuple(scratch)


def trino_table_ddl(statement: str) -> str:
    """A ``create table`` (Trino SQL) as the Hive connector needs it: Parquet, partitioned by the project's
    partition columns (moved last, as Hive requires), without NOT NULL (Hive tables have no constraints)."""
    tree = sqlglot.parse_one(statement, read="trino")
    if (
        isinstance(tree, exp.Create)
        and tree.kind == "TABLE"
        and isinstance(tree.expression, exp.Query)
        and tree.args.get("properties") is None
        and isinstance(tree.this, exp.Table)
        and (partitions := trino_partitions(f"{tree.this.db}.{tree.this.name}"))
    ):
        # create table ... as select (raw.duplicates, shaped like raw.events): the partition columns last
        query = tree.expression
        if isinstance(query, exp.Select) and not any(isinstance(e, exp.Star) for e in query.expressions):
            selects = query.expressions
            query.set(
                "expressions",
                [e for e in selects if e.alias_or_name not in partitions]
                + [e for p in partitions for e in selects if e.alias_or_name == p],
            )
        exists = " if not exists" if tree.args.get("exists") else ""
        properties = "format = 'PARQUET', partitioned_by = ARRAY[" + ", ".join(f"'{p}'" for p in partitions) + "]"
        return f"create table{exists} {tree.this.db}.{tree.this.name} with ({properties}) as {tree.expression.sql(dialect='trino')}"
    if not (isinstance(tree, exp.Create) and tree.kind == "TABLE" and isinstance(tree.this, exp.Schema)):
        return statement
    if tree.args.get("properties") is not None:
        return statement  # already has its table properties (this function's own output)
    table = tree.this.this
    name = f"{table.db}.{table.name}" if table.db else table.name
    columns = [c for c in tree.this.expressions if isinstance(c, exp.ColumnDef)]
    for column in columns:
        column.set("constraints", [k for k in column.constraints if not isinstance(k.kind, exp.NotNullColumnConstraint)])
        if column.args["kind"].this == exp.DataType.Type.TIMESTAMP:
            column.set("kind", exp.DataType.build("timestamp(6)", dialect="trino"))
    partitions = trino_partitions(name)
    if not partitions:
        # A table the project replaces whole (DELETE without WHERE, then INSERT, in one transaction): the
        # Hive connector allows that combination for partitioned tables only, so it gets one partition.
        columns.append(exp.ColumnDef(this=exp.to_identifier(WHOLE_TABLE_PARTITION), kind=exp.DataType.build("boolean")))
        partitions = (WHOLE_TABLE_PARTITION,)
    ordered = [c for c in columns if c.name not in partitions] + [c for p in partitions for c in columns if c.name == p]
    properties = ["format = 'PARQUET'", "partitioned_by = ARRAY[" + ", ".join(f"'{p}'" for p in partitions) + "]"]
    exists = " if not exists" if tree.args.get("exists") else ""
    body = ",\n    ".join(c.sql(dialect="trino") for c in ordered)
    return f"create table{exists} {name} (\n    {body}\n) with ({', '.join(properties)})"


# A scratch object's name: tmp_<kind>_<owner>_<n> (TrinoAccess.scratch_name).
_SCRATCH_RE = re.compile(r"tmp_[a-z0-9_]+_([0-9a-f]{12})_[0-9a-f]{8}")


def described(conn: sa.Connection, table: str) -> list[tuple[str, str]]:
    """The columns of ``table`` on Trino and their types as Trino spells them (``timestamp(6)``, ``decimal(38, 0)``),
    from the description of a query that reads no row (on one Trino node, with 30 tables in the schema: a median
    of 21 ms, against 49 ms for the same question to ``information_schema.columns``)."""
    result = conn.execute(sa.text(f"select * from {table} where false"))
    try:
        return [(column[0], column[1]) for column in result.cursor.description]
    finally:
        result.close()


# A temporary table's scratch table: Parquet, one partition (a Hive table without partitions cannot be read in the
# transaction that wrote it).
_SCRATCH_PROPERTIES = f"with (format = 'PARQUET', partitioned_by = ARRAY['{WHOLE_TABLE_PARTITION}'])"


def _owner_lock(owner: str) -> str:
    return f"cohortflow:scratch-owner:{owner}"


class TrinoAccess:
    """What the warehouse does differently on Trino: DDL, updates, loads, locks (see the notes above)."""

    def __init__(self, cfg: Config, url: sa.URL) -> None:
        self.cfg = cfg
        self.catalog = (url.database or "").split("/")[0]
        if not _CATALOG_RE.match(self.catalog):
            raise WarehouseError(
                f"warehouse.url: a Trino URL names its catalog, e.g. trino://cohortflow@host:8080/hive (got {self.catalog!r})"
            )
        connect_args: dict[str, Any] = {
            # Timestamps are UTC wall-clock values: the session zone must not shift them.
            "timezone": "UTC",
            # The long models (segments, funnels) plan to more stages than the default limit of 150.
            # Cost-based join enumeration over the long models' dozens of joins costs minutes of planning; the
            # joins are written in a sensible order already.
            "session_properties": {
                "query_max_run_time": "6h",
                "query_max_stage_count": 1000,
                "join_reordering_strategy": "NONE",
            },
        }
        if cfg.warehouse.password is not None:
            import trino.auth

            connect_args["auth"] = trino.auth.BasicAuthentication(url.username or "", cfg.warehouse.password)
            connect_args["http_scheme"] = "https"
        self.connect_args = connect_args
        url = url.set(database=self.catalog)
        # Two engines: transactions (the client's transaction mode), and autocommit for DDL and procedures
        # (the Trino dialect cannot switch one pooled connection between the two).
        # No pool: after a failed commit the client's connection keeps the dead transaction's id.
        self.engine = sa.create_engine(url, isolation_level="SERIALIZABLE", connect_args=connect_args, poolclass=sa.pool.NullPool)
        self.autocommit = sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)
        self._loads: dict[int, list[str]] = {}
        self._locks: dict[int, list[int]] = {}
        self._columns: dict[str, list[str]] = {}
        self._locations: dict[str, str] = {}
        self._comments: set[tuple[str, str]] = set()
        # Per connection: temporary table name -> its scratch table, the scratch tables written in the transaction,
        # and every scratch table to drop when the transaction ends.
        self._temps: dict[int, dict[str, str]] = {}
        self._written: dict[int, set[str]] = {}
        self._scratch: dict[int, list[str]] = {}
        # The scratch objects this process created and has not dropped, named after its owner token, whose file
        # lock it holds while it lives (see scratch_name and sweep_scratch).
        self.owner = uuid.uuid4().hex[:12]
        self._owner_fd: int | None = None
        self._live: set[str] = set()

    # -- temporary tables ------------------------------------------------------------
    #
    # Trino has no temporary tables. ``create temporary table t ...`` creates a scratch table ``raw.tmp_t_<id>``
    # (Parquet, one partition: a Hive table without partitions cannot be read in the transaction that wrote it) in
    # the transaction, by one CREATE TABLE (AS SELECT): it is what the transaction sees, and a rollback removes it.
    # The statements that follow on the connection read and write ``t`` as that table. A Hive partition takes one
    # write per transaction (a table created empty, ``where 1 = 0``, may take one more): a second insert into ``t``
    # creates a new scratch table of the old rows and the new ones, which ``t`` then names. ``drop table t`` forgets
    # the name; the scratch tables are dropped when the transaction ends (a table written in a transaction must
    # outlive it).

    def execute(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult | None:
        """Source-dialect SQL on Trino, with the connection's temporary tables in place (see above)."""
        temps = self._temps.get(id(conn), {})
        lowered = sql.lower()
        if "create temporary table" in lowered:
            self._create_temp(conn, sql, params)
            return None
        dropped = re.fullmatch(r"\s*drop\s+table\s+(?:if\s+exists\s+)?([a-z_][a-z0-9_]*)\s*", lowered)
        if dropped:
            temps.pop(dropped.group(1), None)
            return None
        if temps and any(re.search(rf"\b{name}\b", lowered) for name in temps):
            sql = self._with_temps(conn, sql, params)
            if sql is None:
                return None
        return self.run(conn, render(sql, "trino"), params)

    def insert_target(self, conn: sa.Connection, table: str) -> str:
        """The table an insert into ``table`` writes: the scratch table of a temporary table (see above)."""
        if "." in table:
            return table
        return self._prepare_insert(conn, table, None, None)

    def _scratch_name(self, conn: sa.Connection, name: str) -> str:
        scratch = self.scratch_name("raw", name)
        self._scratch.setdefault(id(conn), []).append(scratch)
        return scratch

    # -- scratch objects -------------------------------------------------------------
    #
    # The tables and views a process creates for a while (temporary tables, load tables, a build's scope, the view
    # a validation reads) are named <schema>.tmp_<kind>_<owner>_<n>: owner is this TrinoAccess's token, whose file
    # lock (in <target>/locks, as the other locks) it takes before it creates the first one and holds until it is
    # disposed or dies. A process killed before it dropped them leaves them; the next task started on this machine
    # drops them (sweep_scratch): an owner whose lock file is here and free is dead. Objects of other machines'
    # processes (no lock file here) and names of another form are left alone.

    def scratch_name(self, schema: str, kind: str) -> str:
        """A new name for a scratch object (table or view) of this process; drop it with :meth:`drop_scratch`."""
        check_identifier(schema)
        check_identifier(kind)
        if self._owner_fd is None:
            self._owner_fd = self._flock(_owner_lock(self.owner), wait=True)
        name = f"{schema}.tmp_{kind}_{self.owner}_{uuid.uuid4().hex[:8]}"
        self._live.add(name)
        return name

    def drop_scratch(self, name: str, *, view: bool = False) -> None:
        self.ddl(f"drop {'view' if view else 'table'} if exists {name}")
        self._live.discard(name)

    def release_owner(self) -> None:
        """On dispose: the owner's lock released, its file removed when every scratch object was dropped (else the
        next sweep finds them and the free lock)."""
        import os

        if self._owner_fd is None:
            return
        if not self._live:
            self.lock_path(_owner_lock(self.owner)).unlink(missing_ok=True)
        os.close(self._owner_fd)
        self._owner_fd = None

    def sweep_scratch(self) -> list[str]:
        """Drop the scratch objects whose owner process died on this machine; return their names."""
        import os

        with self.autocommit.connect() as other:
            rows = other.execute(
                sa.text(
                    "select table_schema, table_name, table_type from information_schema.tables "
                    "where table_name like 'tmp\\_%' escape '\\'"
                )
            ).fetchall()
        owned: dict[str, list[tuple[str, bool]]] = {}
        for schema, table, kind in rows:
            found = _SCRATCH_RE.fullmatch(table)
            if found and found.group(1) != self.owner:
                owned.setdefault(found.group(1), []).append((f"{schema}.{table}", kind == "VIEW"))
        dropped = []
        for owner, objects in sorted(owned.items()):
            lock = _owner_lock(owner)
            if not self.lock_path(lock).exists():
                continue  # another machine's process, or one that never took the lock here
            fd = self._flock(lock, wait=False)
            if fd is None:
                continue  # alive
            try:
                for name, is_view in sorted(objects):
                    self.drop_scratch(name, view=is_view)
                    dropped.append(name)
                self.lock_path(lock).unlink(missing_ok=True)
            finally:
                os.close(fd)
        return dropped

    def drop_after(self, conn: sa.Connection, table: str) -> None:
        """Drop ``table`` when ``conn``'s transaction ends."""
        self._scratch.setdefault(id(conn), []).append(table)

    def _create_temp(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None) -> None:
        tree = sqlglot.parse_one(sql, read=SOURCE_DIALECT)
        if not isinstance(tree, exp.Create):
            raise WarehouseError(f"not a create statement: {sql[:80]}")
        temps = self._temps.setdefault(id(conn), {})
        if isinstance(tree.this, exp.Schema):
            name = tree.this.this.name
            scratch = self._scratch_name(conn, name)
            columns = {c.name: c.args["kind"].sql(SOURCE_DIALECT) for c in tree.this.expressions if isinstance(c, exp.ColumnDef)}
            body = ", ".join(f"{c} {exp.DataType.build(t, dialect=SOURCE_DIALECT).sql('trino')}" for c, t in columns.items())
            self.finished(conn.execute(sa.text(f"create table {scratch} ({body}, {WHOLE_TABLE_PARTITION} boolean) {_SCRATCH_PROPERTIES}")))
            self.register(scratch, columns)
            temps[name] = scratch
            return
        name = tree.this.name
        query = self._replace_temps(conn, tree.expression)
        where = query.args.get("where") if isinstance(query, exp.Select) else None
        empty = where is not None and where.this.sql() == "1 = 0"
        select_sql = render(query.sql(dialect=SOURCE_DIALECT), "trino")
        scratch = self._scratch_name(conn, name)
        self._create_scratch(conn, scratch, select_sql, params, data=not empty)
        temps[name] = scratch

    def _create_scratch(
        self, conn: sa.Connection, scratch: str, select_sql: str, params: Mapping[str, Any] | None, *, data: bool
    ) -> None:
        """``create table scratch as select_sql`` (Trino SQL) in ``conn``'s transaction, its columns registered; without
        ``data`` the table is created empty, and the transaction may still write it once."""
        self.finished(
            conn.execute(
                sa.text(
                    f"create table {scratch} {_SCRATCH_PROPERTIES} as select q.*, cast(null as boolean) as {WHOLE_TABLE_PARTITION} from (\n{select_sql}\n) as q"
                    + ("" if data else " with no data")
                ),
                dict(params or {}),
            )
        )
        rows = described(conn, scratch)
        self.register(scratch, {c: re.sub(r"^timestamp\(\d+\)", "timestamp", t) for c, t in rows if c != WHOLE_TABLE_PARTITION})
        if data:
            self._written.setdefault(id(conn), set()).add(scratch)

    def register(self, scratch: str, columns: dict[str, str]) -> None:
        """The scratch table's columns and types, for the type-aware rewrites of the statements that read it."""
        schema, name = scratch.split(".")
        _known_schema().setdefault(schema, {})[name] = dict(columns)
        self._columns[scratch] = list(columns)

    def _replace_temps(self, conn: sa.Connection, tree: exp.Expression) -> exp.Expression:
        """``tree`` with every reference to a temporary table (not a CTE of the same name) naming its scratch table."""
        temps = self._temps.get(id(conn), {})
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        for table in list(tree.find_all(exp.Table)):
            if not table.db and table.name in temps and table.name not in ctes:
                alias = table.args.get("alias")
                replacement = exp.to_table(temps[table.name])
                replacement.set("alias", alias.copy() if alias is not None else exp.TableAlias(this=exp.to_identifier(table.name)))
                table.replace(replacement)
        return tree

    def _with_temps(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None) -> str | None:
        """``sql`` (source dialect) reading and writing the scratch tables of the connection's temporary tables; None
        when the statement (a second insert into a temporary table) has been run here."""
        tree = sqlglot.parse_one(sql, read=SOURCE_DIALECT)
        temps = self._temps.get(id(conn), {})
        if isinstance(tree, exp.Insert):
            target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            if isinstance(target, exp.Table) and not target.db and target.name in temps:
                listed = [c.name for c in tree.this.expressions] if isinstance(tree.this, exp.Schema) else None
                query = self._replace_temps(conn, tree.expression)
                scratch = self._prepare_insert(conn, target.name, listed, query, params)
                if scratch is None:
                    return None
                return exp.insert(query, exp.to_table(scratch), columns=listed or self._columns[scratch]).sql(dialect=SOURCE_DIALECT)
        return self._replace_temps(conn, tree).sql(dialect=SOURCE_DIALECT)

    def _prepare_insert(
        self,
        conn: sa.Connection,
        name: str,
        listed: list[str] | None,
        query: exp.Expression | None,
        params: Mapping[str, Any] | None = None,
    ) -> str | None:
        """The scratch table an insert into temporary table ``name`` writes; for a second insert in the transaction,
        a new scratch table gets the old rows and ``query``'s here (returns None)."""
        temps = self._temps.get(id(conn), {})
        if name not in temps:
            raise WarehouseError(f"no temporary table {name} on this connection")
        scratch = temps[name]
        written = self._written.setdefault(id(conn), set())
        if scratch not in written:
            written.add(scratch)
            return scratch
        columns = self._columns[scratch]
        cols = listed or columns
        if query is None or set(cols) != set(columns):
            raise WarehouseError(f"temporary table {name}: a second insert on Trino must be INSERT ... SELECT of every column")
        fresh = self._scratch_name(conn, name)
        union = exp.union(exp.select(*cols).from_(exp.to_table(scratch)), query.copy(), distinct=False)
        self._create_scratch(conn, fresh, render(union.sql(dialect=SOURCE_DIALECT), "trino"), params, data=True)
        temps[name] = fresh
        return None

    # -- statements ----------------------------------------------------------------
    def run(self, conn: sa.Connection, statement: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult:
        head = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else ""
        if head in ("create", "drop", "alter", "comment"):
            return self.ddl(self.table_ddl(statement) if head == "create" else statement, params)
        if head == "update":
            return self.update(conn, statement, params)
        if head == "select" and "information_schema." in statement.lower():
            # Catalog questions are asked outside the transaction: a transaction that looked a table up keeps
            # what it saw, and would miss a table created by the DDL the answer leads to.
            with self.autocommit.connect() as other:
                result = other.execute(sa.text(statement), dict(params or {}))
                return result.freeze()()
        return self.finished(conn.execute(sa.text(statement), dict(params or {})))

    @staticmethod
    def finished(result: sa.CursorResult) -> sa.CursorResult:
        """``result`` once its statement has finished. The client returns as soon as Trino accepts a statement;
        a write that is not read to its end may still run when the next statement (or COMMIT) arrives."""
        return result.freeze()() if result.returns_rows else result

    def ddl(self, statement: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult:
        """Run a DDL statement on its own autocommitting connection (see the notes above)."""
        with self.autocommit.connect() as other:
            return self.finished(other.execute(sa.text(statement), dict(params or {})))

    def table_ddl(self, statement: str) -> str:
        return trino_table_ddl(statement)

    def columns(self, conn: sa.Connection, table: str) -> list[str]:
        if table not in self._columns:
            self._columns[table] = [name for name, _type in described(conn, table)]
        return self._columns[table]

    def update(self, conn: sa.Connection, statement: str, params: Mapping[str, Any] | None) -> sa.CursorResult:
        """``update t set c = x where ...`` as an overwrite of the partitions of ``t`` the WHERE pins: the rows
        of those partitions rewritten with the new values where the WHERE holds, in ``conn``'s transaction."""
        tree = sqlglot.parse_one(statement, read="trino")
        table = tree.this
        name = f"{table.db}.{table.name}"
        partitions = set(trino_partitions(name))
        where = tree.args["where"].this
        conjuncts = list(where.flatten()) if isinstance(where, exp.And) else [where]
        pinned = [c for c in conjuncts if c.find(exp.Column) and {col.name for col in c.find_all(exp.Column)} <= partitions]
        if not pinned:
            raise WarehouseError(f"an UPDATE of {name} on Trino must name its partition ({', '.join(sorted(partitions)) or 'none'})")
        assigned = {e.this.name: e.expression for e in tree.expressions}
        select = ", ".join(
            exp.If(this=where.copy(), true=assigned[c].copy(), false=exp.column(c)).sql(dialect="trino") + f" as {c}"
            if c in assigned
            else c
            for c in self.columns(conn, name)
        )
        cols = ", ".join(self.columns(conn, name))
        keep = " and ".join(p.sql(dialect="trino") for p in pinned)
        return self.overwrite(conn, f"insert into {name} ({cols}) select {select} from {name} where {keep}", params)

    def overwrite(self, conn: sa.Connection, insert: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult:
        """Run ``insert`` (Trino SQL) replacing the partitions it writes (insert_existing_partitions_behavior =
        OVERWRITE), in ``conn``'s transaction. A partition it writes no row to is left as it was."""
        prop = f"{self.catalog}.insert_existing_partitions_behavior"
        self.finished(conn.execute(sa.text(f"set session {prop} = 'OVERWRITE'")))
        try:
            return self.finished(conn.execute(sa.text(insert), dict(params or {})))
        finally:
            self.finished(conn.execute(sa.text(f"reset session {prop}")))

    def rewrite_partitions(
        self,
        conn: sa.Connection,
        table: str,
        columns: str,
        partition: str,
        dates: Sequence[dt.date],
        keep: str,
        new_rows: str,
        params: Mapping[str, Any],
        *,
        kept: str,
        key: str,
    ) -> None:
        """Replace rows of the partitions of ``dates`` (source-dialect SQL, in ``conn``'s transaction): Hive tables
        delete whole partitions only and take one write per partition in a transaction, so each partition is
        rewritten whole. Its rows where ``keep`` holds (``t`` is the table) are kept in the temporary table ``kept``,
        the partitions deleted, and the kept rows written back with ``new_rows`` (a SELECT of ``columns``; ``{dates}``
        in it is the list of the dates). The dates are bound as ``:<key>0``, ``:<key>1`` ... beside ``params``."""
        listed = ", ".join(f":{key}{i}" for i in range(len(dates)))
        at = {**params, **{f"{key}{i}": d for i, d in enumerate(dates)}}
        self.execute(conn, f"drop table if exists {kept}")
        self.execute(conn, f"create temporary table {kept} as select {columns} from {table} as t where t.{partition} in ({listed}) and {keep}", at)
        self.execute(conn, f"delete from {table} where {partition} in ({listed})", at)
        self.execute(
            conn,
            f"insert into {table} ({columns}) select {columns} from {kept} union all " + new_rows.replace("{dates}", listed),
            at,
        )
        self.execute(conn, f"drop table {kept}")

    def comment(self, statement: str, kind: str, target: str, text: str) -> None:
        if (target, text) in self._comments:
            return
        self.ddl(statement.replace(":", r"\:"))
        self._comments.add((target, text))

    # -- bulk load -----------------------------------------------------------------
    def stage(self, conn: sa.Connection, like: str, data: pa.Table) -> str:
        """A load table holding ``data``, in the schema of ``like``: created, then ``data`` written into its
        directory as one Parquet file (a table without partitions reads every file in its directory). It lives
        until ``conn``'s transaction ends. Returns its name."""
        return self.stage_batches(conn, like, data.schema, data.to_batches(), keep_empty=True)[1]

    def stage_batches(
        self, conn: sa.Connection, like: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], keep_empty: bool = False
    ) -> tuple[int, str]:
        """:meth:`stage` for a stream of record batches, written one row group at a time (memory: one batch).
        Returns the rows written and the load table's name; without rows, no table and "" unless ``keep_empty``
        (then an empty table: its directory has no file)."""
        import itertools

        import pyarrow.parquet as pq

        batches = iter(batches)
        first = next((batch for batch in batches if batch.num_rows), None)
        if first is None and not keep_empty:
            return 0, ""

        schema_name = like.split(".")[0] if "." in like else "raw"
        check_identifier(schema_name)
        table = self.scratch_name(schema_name, "load")
        name = table.split(".")[1]
        columns = []
        for field in schema:
            check_identifier(field.name)
            sql_type = next((t for test, t in _ARROW_TO_TRINO if test(field.type)), None)
            if sql_type is None:
                raise WarehouseError(f"cannot load column {field.name} of type {field.type} into Trino")
            columns.append(f"{field.name} {sql_type}")
        self.ddl(f"create table {schema_name}.{name} ({', '.join(columns)}) with (format = 'PARQUET')")
        self._loads.setdefault(id(conn), []).append(f"{schema_name}.{name}")
        filesystem, folder = self._folder(f"{self._schema_location(schema_name)}/{name}")
        filesystem.create_dir(folder, recursive=True)
        # Trino reads Parquet timestamps of microseconds; Arrow's may be of other units.
        written = pa.schema([f.with_type(pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f for f in schema])
        rows = 0
        if first is None:
            return rows, f"{schema_name}.{name}"
        with pq.ParquetWriter(f"{folder}/part-0.parquet", written, filesystem=filesystem) as writer:
            for batch in itertools.chain([first], batches):
                if batch.num_rows:
                    writer.write_batch(batch.cast(written) if batch.schema != written else batch)
                    rows += batch.num_rows
        return rows, f"{schema_name}.{name}"

    def _schema_location(self, schema: str) -> str:
        if schema not in self._locations:
            with self.autocommit.connect() as other:
                text = other.execute(sa.text(f"show create schema {self.catalog}.{schema}")).scalar()
            found = re.search(r"location\s*=\s*'([^']+)'", text or "")
            if not found:
                raise WarehouseError(f"schema {self.catalog}.{schema} has no location: cannot write files for it")
            self._locations[schema] = found.group(1).rstrip("/")
        return self._locations[schema]

    def _folder(self, uri: str):
        """The file system and path where this machine writes the files of ``uri`` (a location in the catalog)."""
        import pyarrow.fs as pafs

        if uri.startswith("local:"):
            root = self.cfg.warehouse.storage_root
            if not root:
                raise WarehouseError(
                    f"warehouse.storage_root: the catalog keeps its tables on the local file system ({uri}); "
                    "set it to the folder the catalog's local.location names"
                )
            base = (self.cfg.base_dir / root).resolve()
            path = (base / uri[len("local:") :].lstrip("/")).resolve()
            if not path.is_relative_to(base):
                raise WarehouseError(f"{uri} is outside warehouse.storage_root {base}")
            return pafs.LocalFileSystem(), str(path)
        return pafs.FileSystem.from_uri(uri)

    # -- transactions and locks ------------------------------------------------------
    def lock(self, conn: sa.Connection, name: str, *, wait: bool) -> bool:
        """Hold a lock named ``name`` until ``conn``'s transaction ends: a file lock in ``<target>/locks``,
        which serialises the writers on this machine (Trino itself has no locks). False if ``wait`` is off
        and another process holds it."""
        fd = self._flock(name, wait=wait)
        if fd is None:
            return False
        self._locks.setdefault(id(conn), []).append(fd)
        return True

    @contextlib.contextmanager
    def file_lock(self, name: str, *, wait: bool, remove: bool = False) -> Iterator[bool]:
        """The file lock of :meth:`lock`, held for a ``with`` block (yields False, holding nothing, if ``wait`` is
        off and another process holds it); the kernel releases it when the process dies. ``remove``: delete the
        lock file on release (only for a name no other process waits for)."""
        import os

        fd = self._flock(name, wait=wait)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                if remove:
                    self.lock_path(name).unlink(missing_ok=True)
                os.close(fd)

    def lock_path(self, name: str) -> Path:
        import hashlib

        return self.cfg.target_path / "locks" / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".lock")

    def _flock(self, name: str, *, wait: bool) -> int | None:
        import fcntl
        import os

        path = self.lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def transaction_ended(self, conn: sa.Connection) -> None:
        import os

        self._temps.pop(id(conn), None)
        self._written.pop(id(conn), None)
        for table in self._scratch.pop(id(conn), []):
            self.drop_scratch(table)
            self._columns.pop(table, None)
            _known_schema().get("raw", {}).pop(table.split(".")[1], None)
        for table in self._loads.pop(id(conn), []):
            self.drop_scratch(table)
        for fd in self._locks.pop(id(conn), []):
            os.close(fd)

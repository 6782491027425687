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
from collections.abc import Iterator, Mapping
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

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder) and node.name:
            return exp.Var(this=":" + node.name)
        if isinstance(node, exp.Anonymous) and str(node.this).lower() == "prop":
            return _prop(node, target)
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
        statements.append(tree.transform(rewrite).sql(dialect=target, pretty=pretty))
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
    # DuckDB: a JSONPath whose member name is the key quoted as a JSON string ($."a.b").
    path = exp.DPipe(this=exp.Literal.string("$."), expression=exp.cast(exp.func("to_json", key), "varchar"))
    return exp.Anonymous(this="json_extract_string", expressions=[doc, path])


def _safe_url_text(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


class Warehouse:
    """The project's warehouse: DuckDB file by default, PostgreSQL in production."""

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
        else:
            raise WarehouseError(f"unsupported warehouse URL scheme {sa_url.drivername!r}")
        self.url_text = _safe_url_text(sa_url)
        self.host = sa_url.host or sa_url.database or "?"

    # -- connections -------------------------------------------------------
    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction; errors become one-line WarehouseErrors without secrets."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise WarehouseError(self._describe(exc)) from None
        except sa.exc.DBAPIError as exc:
            raise WarehouseError(self._describe(exc)) from exc

    def _describe(self, exc: sa.exc.DBAPIError) -> str:
        text = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        if self.cfg.warehouse.password:
            text = text.replace(self.cfg.warehouse.password, "***")
        return f"warehouse {self.host}: {text}"

    def lock(self, conn: sa.Connection, name: str) -> None:
        """Serialise writers of one resource until ``conn``'s transaction ends.

        PostgreSQL: a transaction-level advisory lock (other writers of the same
        resource wait). DuckDB needs none: it admits one writing process.
        """
        if self.dialect == "postgres":
            conn.execute(sa.text("select pg_advisory_xact_lock(hashtext(:name))"), {"name": name})

    @contextlib.contextmanager
    def session_lock(self, name: str) -> Iterator[None]:
        """Serialise holders of ``name`` for the whole ``with`` block, across transactions and file writes.

        PostgreSQL: a session-level advisory lock on a connection of its own, released at the end of the block (or
        by the server when the process dies). DuckDB needs none: it admits one writing process.
        """
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

    def try_lock(self, conn: sa.Connection, name: str) -> bool:
        """Like :meth:`lock` but never waits: False when another session holds it."""
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
        conn.execute(sa.text(f"comment on {kind} {target} is {literal}".replace(":", r"\:")))

    def render(self, sql: str) -> str:
        return render(sql, self.dialect)

    def execute(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> sa.CursorResult:
        """Run source-dialect SQL with bound parameters."""
        return conn.execute(sa.text(self.render(sql)), dict(params or {}))

    def scalar(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.execute(conn, sql, params).scalar()

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema ------------------------------------------------------------
    def bootstrap(self) -> None:
        """Create the schemas and the project's own tables when they are missing."""
        with self.begin() as conn:
            self.lock(conn, "cohortflow:bootstrap")
            for schema in SCHEMAS:
                conn.execute(sa.text(f"create schema if not exists {schema}"))
            for ddl in BASE_TABLES:
                self.execute(conn, ddl)
            for table, column, type_, fill in MIGRATIONS:
                schema, name = table.split(".")
                if not self._has_column(conn, schema, name, column):
                    self.execute(conn, f"alter table {table} add column {column} {type_}")
                    self.execute(conn, f"update {table} set {column} = {fill}")

    def _has_column(self, conn: sa.Connection, schema: str, table: str, column: str) -> bool:
        return bool(
            self.scalar(
                conn,
                "select count(*) from information_schema.columns "
                "where table_schema = :s and table_name = :t and column_name = :c",
                {"s": schema, "t": table, "c": column},
            )
        )

    def table_exists(self, conn: sa.Connection, schema: str, table: str) -> bool:
        return sa.inspect(conn).has_table(table, schema=schema)

    # -- bulk load ---------------------------------------------------------
    def load_arrow(self, conn: sa.Connection, table: str, data: pa.Table) -> int:
        """Append an Arrow table to ``schema.table`` (columns by name) inside ``conn``'s transaction."""
        if data.num_rows == 0:
            return 0
        columns = ", ".join(data.column_names)
        if self.dialect == "duckdb":
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
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            values = ", ".join(
                "(" + ", ".join(f":v{i}_{j}" for j in range(len(columns))) + ")" for i in range(len(part))
            )
            params = {f"v{i}_{j}": row.get(col) for i, row in enumerate(part) for j, col in enumerate(columns)}
            conn.execute(sa.text(f"insert into {table} ({', '.join(columns)}) values {values}"), params)
        return len(rows)

    def query_arrow(self, conn: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        result = self.execute(conn, sql, params)
        cols = list(result.keys())
        rows = result.fetchall()
        return pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})


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
]

# Columns added after a warehouse was first created: (table, column, type, value for existing rows).
MIGRATIONS = [
    ("raw.events", "source_name", "varchar", "source_format"),
    ("raw.quarantine", "source_name", "varchar", "source_format"),
    ("raw.duplicates", "source_name", "varchar", "source_format"),
]

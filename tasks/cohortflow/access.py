"""A read-only role for BI tools: ``reports`` only (PostgreSQL)."""

from __future__ import annotations

from psycopg import sql

from cohortflow.warehouse import Warehouse, WarehouseError, check_identifier


def grant_reader(wh: Warehouse, role: str, password: str | None) -> list[str]:
    """Create (or update) ``role`` with SELECT on every current and future table of ``reports``.

    Returns the statements run (with the password masked). The role gets no
    access to ``raw``, ``models`` or ``meta``.
    """
    if wh.dialect != "postgres":
        raise WarehouseError(
            "grant-reader needs a PostgreSQL warehouse; a DuckDB file is shared read-only by copying "
            "its Parquet snapshots (target/snapshots) or opening the file with read_only=True between runs"
        )
    check_identifier(role)
    wh.bootstrap()
    ident = sql.Identifier(role)
    login = sql.SQL("login password {}").format(sql.Literal(password)) if password else sql.SQL("nologin")
    statements = [
        sql.SQL(
            "do $cf$ begin if not exists (select from pg_roles where rolname = {name}) then "
            "create role {role}; end if; end $cf$"
        ).format(name=sql.Literal(role), role=ident),
        sql.SQL("alter role {} ").format(ident) + login,
        sql.SQL("grant usage on schema reports to {}").format(ident),
        sql.SQL("grant select on all tables in schema reports to {}").format(ident),
        sql.SQL("alter default privileges in schema reports grant select on tables to {}").format(ident),
        sql.SQL("revoke all on schema raw, models, meta from {}").format(ident),
        sql.SQL("revoke create on schema public from {}").format(ident),
    ]
    shown = []
    with wh.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            for st in statements:
                cur.execute(st)
                text = st.as_string(raw)
                shown.append(text.replace(sql.Literal(password).as_string(raw), "'***'") if password else text)
    return shown

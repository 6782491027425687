"""A read-only role for BI tools: ``reports`` only (PostgreSQL)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from cohortflow.warehouse import Warehouse, WarehouseError, check_identifier

SCRAM = b"scram-sha-256"


def scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` for ``role``, computed here by libpq (``PQencryptPasswordConn``):
    the password itself never reaches the server, its statement log or its error log."""
    verifier = conn.pgconn.encrypt_password(password.encode("utf-8"), role.encode("utf-8"), SCRAM).decode("ascii")
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise WarehouseError("grant-reader: could not compute a SCRAM-SHA-256 verifier for the reader password")
    return verifier


def grant_reader(wh: Warehouse, role: str, password: str | None) -> list[str]:
    """Create (or update) ``role`` with SELECT on every current and future table of ``reports``.

    Returns the statements run (with the password verifier masked). The role gets no
    access to ``raw``, ``models`` or ``meta``. The password is sent only as a
    SCRAM-SHA-256 verifier computed on this side (:func:`scram_verifier`), and
    every failure is a one-line :class:`WarehouseError` that never holds it.
    """
    if wh.dialect != "postgres":
        raise WarehouseError(
            "grant-reader needs a PostgreSQL warehouse; a DuckDB file is shared read-only by copying "
            "its Parquet snapshots (target/snapshots) or opening the file with read_only=True between runs"
        )
    try:
        check_identifier(role)
    except ValueError:
        raise WarehouseError(
            f"grant-reader: --role must be a lower-case name of letters, digits and underscores, not {role[:64]!r}"
        ) from None
    wh.bootstrap()
    try:
        return _grant(wh, role, password)
    except psycopg.Error as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if password:
            text = text.replace(password, "***")
        raise WarehouseError(f"grant-reader: warehouse {wh.host}: {text}") from None


def _grant(wh: Warehouse, role: str, password: str | None) -> list[str]:
    ident = sql.Identifier(role)
    statements = [
        sql.SQL(
            "do $cf$ begin if not exists (select from pg_roles where rolname = {name}) then "
            "create role {role}; end if; end $cf$"
        ).format(name=sql.Literal(role), role=ident),
        sql.SQL("grant usage on schema reports to {}").format(ident),
        sql.SQL("grant select on all tables in schema reports to {}").format(ident),
        sql.SQL("alter default privileges in schema reports grant select on tables to {}").format(ident),
        sql.SQL("revoke all on schema raw, models, meta from {}").format(ident),
        sql.SQL("revoke create on schema public from {}").format(ident),
    ]
    shown = []
    with wh.begin() as conn:
        raw = conn.connection.driver_connection
        if password:
            verifier = scram_verifier(raw, role, password)
            login = sql.SQL("login password {}").format(sql.Literal(verifier))
        else:
            login = sql.SQL("nologin")
        statements.insert(1, sql.SQL("alter role {} ").format(ident) + login)
        with raw.cursor() as cur:
            for st in statements:
                cur.execute(st)
                text = st.as_string(raw)
                shown.append(text.replace(sql.Literal(verifier).as_string(raw), "'SCRAM-SHA-256$***'") if password else text)
    return shown

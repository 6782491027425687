"""The reference of the operations tests: what a full rebuild of a copy of the warehouse publishes."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import sqlalchemy as sa

from cohortflow.contract import published_tables
from cohortflow.runner import rebuild_range
from cohortflow.warehouse import Warehouse
from tests.conftest import _fresh_trino_catalog, drop_pg_database, drop_trino_catalog, pg_settings, trino_settings


def normalise(rows) -> list[tuple]:
    return sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr)


def published(wh: Warehouse) -> dict[str, list[tuple]]:
    """Every reports table's rows, every column of the BI contract in its order (sorted, floats rounded)."""
    with wh.engine.connect() as conn:
        present = set(sa.inspect(conn).get_table_names(schema="reports"))
        return {
            name: normalise(conn.execute(sa.text(f"select {', '.join(published_columns(name))} from reports.{name}")).fetchall())
            for name in published_tables()
            if name in present
        }


def published_columns(name: str) -> list[str]:
    return [c.name for c in published_tables()[name].columns]


def full_rebuild(project, wh: Warehouse) -> dict[str, list[tuple]]:
    """Copy the project's warehouse (a file copy on DuckDB, a template database on PostgreSQL), rebuild every model
    whole from the loaded events there and return what it publishes. ``wh`` is disposed first (a copy needs no
    writer holding the file, and PostgreSQL copies only a database nobody is connected to). The rebuild's snapshots,
    BI copy and report go to a folder of their own, not the project's (whose newest snapshot and BI copy the tests
    compare with this reference)."""
    own = project.config()
    target = own.target_path.with_name(f"reference-target-{uuid.uuid4().hex[:8]}")
    cfg = own.model_copy(update={"target_dir": str(target)})
    wh.dispose()
    try:
        return _full_rebuild(project, cfg)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _full_rebuild(project, cfg) -> dict[str, list[tuple]]:
    if project.engine_name == "duckdb":
        url = sa.make_url(cfg.warehouse_url)
        copy = Path(url.database).with_name(f"reference-{uuid.uuid4().hex[:8]}.duckdb")
        shutil.copyfile(url.database, copy)
        ref = Warehouse(cfg, url=f"duckdb:///{copy}")
        try:
            rebuild_range(cfg, ref, echo=lambda _m: None)
            return published(ref)
        finally:
            ref.dispose()
            copy.unlink()
    if project.engine_name == "trino":
        return _trino_full_rebuild(project, cfg)
    base, password = pg_settings()
    source = sa.make_url(project.db_url).database
    name = "r_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(sa.make_url(base).set(password=password), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # A template must have no other session (validation's own engine may still hold an idle one). Client
        # sessions only: an autovacuum worker on the database counts as a superuser process that a non-superuser may
        # not signal, and CREATE DATABASE stops those itself.
        conn.execute(
            sa.text(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = :db and pid <> pg_backend_pid() and backend_type = 'client backend'"
            ),
            {"db": source},
        )
        conn.execute(sa.text(f'create database "{name}" template "{source}"'))
    admin.dispose()
    ref_url = str(sa.make_url(project.db_url).set(database=name).render_as_string(hide_password=True))
    ref = Warehouse(cfg, url=ref_url)
    try:
        rebuild_range(cfg, ref, echo=lambda _m: None)
        return published(ref)
    finally:
        ref.dispose()
        drop_pg_database(ref_url, password)


def _trino_full_rebuild(project, cfg) -> dict[str, list[tuple]]:
    """Trino: a new Hive catalog on the test cluster with a copy of every table of the project's raw and meta schemas
    (what was loaded and the change log: what a full rebuild reads), rebuilt whole there."""
    url, storage, catalog_file = trino_settings()
    source = sa.make_url(project.db_url).database
    ref_url = _fresh_trino_catalog(url, storage, catalog_file)
    target = sa.make_url(ref_url).database
    admin = sa.create_engine(sa.make_url(url).set(database="system"), poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            tables = conn.execute(
                sa.text(
                    f"select table_schema, table_name from {source}.information_schema.tables "
                    "where table_schema in ('raw', 'meta') and table_type = 'BASE TABLE' "
                    "and table_name not like 'tmp\\_%' escape '\\' and table_name not like 'load\\_%' escape '\\'"
                )
            ).all()
            for schema in {s for s, _ in tables}:
                conn.execute(sa.text(f"create schema {target}.{schema}"))
            for schema, table in tables:
                # (Trino refuses CREATE TABLE LIKE ... INCLUDING PROPERTIES across catalogs: the source's own DDL,
                # partitioning included, is replayed under the new name; driver SQL, as comments may hold colons)
                ddl = conn.exec_driver_sql(f"show create table {source}.{schema}.{table}").scalar()
                conn.exec_driver_sql(re.sub(r"^CREATE TABLE \S+", f"CREATE TABLE {target}.{schema}.{table}", ddl, count=1))
                conn.execute(sa.text(f"insert into {target}.{schema}.{table} select * from {source}.{schema}.{table}")).all()
    finally:
        admin.dispose()
    ref = Warehouse(cfg, url=ref_url)
    try:
        rebuild_range(cfg, ref, echo=lambda _m: None)
        return published(ref)
    finally:
        ref.dispose()
        drop_trino_catalog(ref_url, storage)

"""A BI reader in its own process: what one documented route shows of the published tables, as JSON on stdout.

    python bi_reader.py duckdb <reports.duckdb>        the DuckDB copy, opened read-only
    python bi_reader.py parquet <snapshot folder>      the Parquet files of a snapshot (e.g. snapshots/latest)
    python bi_reader.py postgres <url>                 the reports schema as a (read-only) role; password in $PGPASSWORD

Output: {"tables": {name: {"comment", "columns": [[name, type, comment]], "rows"}}, "denied": [...]}.
With --wait the reader reads once, prints, waits for a line on stdin and reads again (the pipeline runs meanwhile).
It imports nothing of cohortflow: it sees only what a BI tool sees.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TYPES = {"DATE": "date", "BIGINT": "bigint", "DOUBLE": "double", "VARCHAR": "varchar", "BOOLEAN": "boolean"}
PG_TYPES = {"date": "date", "bigint": "bigint", "double precision": "double", "character varying": "varchar",
            "text": "varchar", "boolean": "boolean"}
ARROW_TYPES = {"date32[day]": "date", "int64": "bigint", "double": "double", "string": "varchar", "bool": "boolean"}


def read_duckdb(path: str) -> dict:
    import duckdb

    con = duckdb.connect(path, read_only=True)
    try:
        tables = {}
        for name, comment in con.execute("select table_name, comment from duckdb_tables() where schema_name = 'main' order by 1").fetchall():
            cols = con.execute(
                "select column_name, data_type, comment from duckdb_columns() where schema_name = 'main' and table_name = ? "
                "order by column_index",
                [name],
            ).fetchall()
            rows = con.execute(f'select count(*) from "{name}"').fetchone()[0]
            tables[name] = {"comment": comment, "columns": [[c, TYPES.get(t, t), k] for c, t, k in cols], "rows": rows}
        return {"tables": tables, "denied": []}
    finally:
        con.close()


def read_parquet(folder: str) -> dict:
    import pyarrow.parquet as pq

    tables = {}
    for path in sorted(Path(folder).glob("*.parquet")):
        data = pq.read_table(path)
        meta = data.schema.metadata or {}
        tables[path.stem] = {
            "comment": meta.get(b"description", b"").decode() or None,
            "columns": [
                [f.name, ARROW_TYPES.get(str(f.type), str(f.type)), (f.metadata or {}).get(b"description", b"").decode() or None]
                for f in data.schema
            ],
            "rows": data.num_rows,
        }
    return {"tables": tables, "denied": []}


def read_postgres(url: str) -> dict:
    import os

    import psycopg

    with psycopg.connect(url, password=os.environ.get("PGPASSWORD"), autocommit=True) as con:
        tables = {}
        names = [r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = 'reports' order by 1").fetchall()]
        for name in names:
            comment = con.execute("select obj_description(to_regclass('reports.' || quote_ident(%s)), 'pg_class')", [name]).fetchone()[0]
            cols = con.execute(
                "select column_name, data_type, col_description(to_regclass('reports.' || quote_ident(%s)), ordinal_position::int) "
                "from information_schema.columns where table_schema = 'reports' and table_name = %s order by ordinal_position",
                [name, name],
            ).fetchall()
            rows = con.execute(f'select count(*) from reports."{name}"').fetchone()[0]
            tables[name] = {"comment": comment, "columns": [[c, PG_TYPES.get(t, t), k] for c, t, k in cols], "rows": rows}
        denied = []
        for other in ("meta.run_log", "raw.events", "models.stg_events"):
            try:
                con.execute(f"select 1 from {other} limit 1")
            except psycopg.errors.InsufficientPrivilege:
                denied.append(other)
        return {"tables": tables, "denied": denied}


READERS = {"duckdb": read_duckdb, "parquet": read_parquet, "postgres": read_postgres}


def main(argv: list[str]) -> int:
    wait = "--wait" in argv
    route, target = [a for a in argv if a != "--wait"]
    print(json.dumps(READERS[route](target)), flush=True)
    if wait:
        sys.stdin.readline()
        print(json.dumps(READERS[route](target)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

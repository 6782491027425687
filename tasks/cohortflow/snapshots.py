"""Dated Parquet snapshots of the published tables, each with a manifest.

After a publish, ``target/snapshots/<business date>/`` holds one Parquet file
per published table (the whole table, rows sorted, column types and
descriptions from the BI contract) and ``manifest.json``:

    {"business_date", "run_id", "written_at", "code_version", "config_fingerprint",
     "tables": {name: {"file", "rows", "sha256", "bytes", "columns", "contract"}}}

The folder is written under a temporary name and renamed into place, so a
snapshot folder is always complete. ``target/snapshots/latest`` is a symbolic
link to the snapshot of the most recent night that succeeded as a whole; it is
moved (atomically) only after everything else of the night is done. Snapshots
of business dates more than ``snapshots.keep_days`` before the newest one are
deleted after a successful night; the one ``latest`` points to never is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import shutil
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cohortflow.config import Config
from cohortflow.faults import checkpoint
from cohortflow.iofail import OutputError, describe
from cohortflow.contract import PublishedTable
from cohortflow.progress import plural
from cohortflow.warehouse import Warehouse

MANIFEST = "manifest.json"
LATEST = "latest"
MANIFEST_FORMAT = 1

ARROW_TYPES = {
    "date": pa.date32(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "varchar": pa.string(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}


class SnapshotError(Exception):
    """A snapshot could not be written or does not match its manifest."""


def snapshots_root(cfg: Config) -> Path:
    return cfg.target_path / "snapshots"


def snapshot_dir(cfg: Config, business_date: dt.date) -> Path:
    return snapshots_root(cfg) / business_date.isoformat()


def arrow_schema(table: PublishedTable) -> pa.Schema:
    """The Parquet schema of a published table: contract types, descriptions as field metadata."""
    fields = [
        pa.field(c.name, ARROW_TYPES[c.type], metadata={"description": c.comment}) for c in table.columns
    ]
    return pa.schema(fields, metadata={"table": table.name, "description": table.comment})


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@cache
def code_version() -> dict[str, str]:
    """The installed cohortflow version and a fingerprint of its code, SQL models and expectation suites."""
    h = hashlib.sha256()
    for package, patterns in (
        ("cohortflow", ("*.py",)),
        ("cohortflow.adapters", ("*.py",)),
        ("cohortflow.analyses", ("*.py",)),
        ("cohortflow.report", ("*.py", "*.html", "*.css", "*.js")),
        ("cohortflow.sql.staging", ("*.sql", "*.yml")),
        ("cohortflow.sql.models", ("*.sql", "*.yml")),
        ("cohortflow.sql.macros", ("*.sql",)),
        ("cohortflow.expectations", ("*.json",)),
        ("cohortflow.workflows", ("*.py",)),
    ):
        folder = Path(str(importlib.resources.files(package)))
        for pattern in patterns:
            for path in sorted(folder.glob(pattern)):
                h.update(f"{package}/{path.name}\0".encode())
                h.update(path.read_bytes())
    try:
        version = importlib.metadata.version("cohortflow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "unknown"
    return {"cohortflow": version, "source_sha256": h.hexdigest()}


def config_fingerprint(cfg: Config) -> str:
    """sha256 of the settings in force (no secrets; paths as configured), as canonical JSON."""
    data = cfg.model_dump(mode="json", by_alias=True)
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def row_order(table: PublishedTable) -> str:
    """The ORDER BY of a snapshot file's rows: every column ascending, text in byte order (as DuckDB and Trino sort
    it; a PostgreSQL database's own collation may be linguistic)."""
    return ", ".join(f'{c.name} collate "C"' if c.type == "varchar" else c.name for c in table.columns)


def _read_table(wh: Warehouse, conn, table: PublishedTable) -> pa.Table:
    cols = ", ".join(c.name for c in table.columns)
    rows = wh.execute(conn, f"select {cols} from reports.{table.name} order by {row_order(table)}").fetchall()
    schema = arrow_schema(table)
    arrays = [pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


def write_snapshot(
    wh: Warehouse,
    cfg: Config,
    business_date: dt.date,
    tables: list[PublishedTable],
    *,
    run_id: str | None,
) -> Path:
    """Write every published table and the manifest into the business date's snapshot folder (replaced whole)."""
    root = snapshots_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    final = snapshot_dir(cfg, business_date)
    tmp = root / f".{business_date.isoformat()}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        entries = {}
        # One transaction: every file of the snapshot shows the same published state.
        with wh.begin() as conn:
            for table in tables:
                data = _read_table(wh, conn, table)
                path = tmp / f"{table.name}.parquet"
                pq.write_table(data, path)
                checkpoint("snapshots", cfg.target_path)
                entries[table.name] = {
                    "file": path.name,
                    "rows": data.num_rows,
                    "sha256": sha256_file(path),
                    "bytes": path.stat().st_size,
                    "columns": [{"name": c.name, "type": c.type} for c in table.columns],
                    "contract": table.fingerprint,
                }
        manifest = {
            "format": MANIFEST_FORMAT,
            "business_date": business_date.isoformat(),
            "run_id": run_id,
            "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "project": cfg.project,
            "warehouse": wh.dialect,
            "code_version": code_version(),
            "config_fingerprint": config_fingerprint(cfg),
            "tables": entries,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(describe(exc, tmp, "the snapshot")) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    """Put the folder ``tmp`` at ``final``, replacing a previous one; readers never see a partial folder."""
    if not final.exists():
        os.rename(tmp, final)
        return
    old = final.with_name(f".{final.name}.{os.getpid()}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"{folder}: no {MANIFEST}") from None


def verify_snapshot(folder: Path) -> list[str]:
    """Problems of a snapshot folder against its manifest (empty when every file matches)."""
    manifest = read_manifest(folder)
    problems = []
    for name, entry in manifest["tables"].items():
        path = folder / entry["file"]
        if not path.is_file():
            problems.append(f"{name}: {entry['file']} is missing")
            continue
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: checksum differs from the manifest")
        rows = pq.read_metadata(path).num_rows
        if rows != entry["rows"]:
            problems.append(f"{name}: {plural(rows, 'row')}, the manifest says {entry['rows']:,}")
    return problems


def latest_path(cfg: Config) -> Path:
    return snapshots_root(cfg) / LATEST


def latest_date(cfg: Config) -> dt.date | None:
    """The business date ``latest`` points to, if any."""
    link = latest_path(cfg)
    if not link.is_symlink():
        return None
    try:
        return dt.date.fromisoformat(os.readlink(link))
    except ValueError:
        return None


def move_latest(cfg: Config, business_date: dt.date) -> Path:
    """Point ``latest`` at the business date's snapshot (a relative symbolic link, replaced atomically)."""
    target = snapshot_dir(cfg, business_date)
    if not (target / MANIFEST).is_file():
        raise SnapshotError(f"no complete snapshot for {business_date} in {target}")
    link = latest_path(cfg)
    tmp = link.with_name(f".{LATEST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(business_date.isoformat(), tmp)
    os.replace(tmp, link)
    return link


def dated_folders(root: Path) -> dict[dt.date, Path]:
    out = {}
    for p in root.iterdir() if root.is_dir() else []:
        if p.is_dir() and not p.is_symlink():
            try:
                out[dt.date.fromisoformat(p.name)] = p
            except ValueError:
                continue
    return out


def prune_snapshots(cfg: Config) -> list[Path]:
    """Delete the snapshots of business dates more than ``snapshots.keep_days`` before the newest one."""
    folders = dated_folders(snapshots_root(cfg))
    if not folders:
        return []
    cutoff = max(folders) - dt.timedelta(days=cfg.snapshots.keep_days)
    keep = latest_date(cfg)
    removed = []
    for d, path in sorted(folders.items()):
        if d < cutoff and d != keep:
            shutil.rmtree(path)
            removed.append(path)
    return removed

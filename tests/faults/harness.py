"""What the fault tests compare: a project's whole observable state after its nights, and how to run its CLI."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from cohortflow.demo import DemoSpec, generate
from cohortflow.faults import FAULT_ENV
from cohortflow.models import published_models
from cohortflow.publish import read_state
from tests.conftest import Project

START = dt.date(2026, 11, 1)
DAYS = 3
DATES = [START + dt.timedelta(days=i) for i in range(DAYS)]
TZ = "Asia/Shanghai"
LEFTOVER_SUFFIXES = (".tmp", ".tmp.wal")


def spec() -> DemoSpec:
    return DemoSpec(users=120, days=DAYS, start_date=START, timezone=TZ, seed=5, fmt="segment")


def make(root: Path, engine: str, **overrides) -> Project:
    project = Project(root, engine, timezone=TZ, sources=[{"name": "web", "format": "segment", "path": "seg"}], **overrides)
    generate(spec(), root / "landing" / "seg")
    return project


def cli(project: Project, *args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    full_env = {**inherited, **project.environ, "COHORTFLOW_CONFIG": str(project.config_path), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_night(project: Project, d: dt.date, **kw) -> subprocess.CompletedProcess:
    return cli(project, "run", "--date", d.isoformat(), **kw)


def start_night(project: Project, d: dt.date, fault: str) -> subprocess.Popen:
    """A night run in the background, stopping at a ``<point>:pause`` fault until the test lets it go on."""
    inherited = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env = {**inherited, **project.environ, "COHORTFLOW_CONFIG": str(project.config_path), FAULT_ENV: fault}
    return subprocess.Popen(
        [sys.executable, "-m", "cohortflow.cli", "run", "--date", d.isoformat()],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _rows(table) -> list[tuple]:
    return sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r.values()) for r in table.to_pylist()), key=repr)


def capture(project: Project) -> dict:
    """Every published table, every snapshot, the BI copy, the ledger and the loaded ids, in comparable form."""
    cfg = project.config()
    target = cfg.target_path
    state: dict = {}
    wh = project.warehouse()
    try:
        with wh.begin() as conn:
            for model in published_models():
                cols = ", ".join(c.name for c in model.columns)
                rows = wh.execute(conn, f"select {cols} from reports.{model.name}").fetchall()
                state[f"reports.{model.name}"] = sorted(
                    (tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr
                )
            state["ledger"] = sorted(
                tuple(r)
                for r in wh.execute(
                    conn,
                    "select load_date, source_name, ingest_file, lines_read, events_loaded, duplicates_removed, "
                    "lines_quarantined, damage from meta.ingest_ledger",
                ).fetchall()
            )
            state["raw.events"] = wh.execute(
                conn, "select count(*), count(distinct event_id), count(distinct load_date) from raw.events"
            ).one()
            state["raw.quarantine"] = sorted(
                tuple(r) for r in wh.execute(conn, "select load_date, ingest_file, ingest_line, reason from raw.quarantine").fetchall()
            )
            running = wh.scalar(conn, "select count(*) from meta.run_log where status = 'running'")
    finally:
        wh.dispose()
    state["snapshots"] = {
        str(p.relative_to(target)): _rows(pq.read_table(p)) for p in sorted((target / "snapshots").glob("*/*.parquet"))
    }
    reader = target / "published" / "reports.duckdb"
    if reader.exists():
        con = duckdb.connect(str(reader), read_only=True)
        try:
            names = [r[0] for r in con.execute("select table_name from information_schema.tables order by 1").fetchall()]
            state["reader_copy"] = {n: _rows(con.sql(f"select * from {n}").to_arrow_table()) for n in names}
        finally:
            con.close()
    marker = read_state(cfg)
    state["marker"] = (marker or {}).get("state"), (marker or {}).get("business_date")
    state["leftovers"] = sorted(
        str(p.relative_to(target)) for p in target.rglob("*") if p.name.endswith(LEFTOVER_SUFFIXES) or p.name.startswith(".fault-")
    )
    state["running_rows"] = running
    return state


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], f"{key} differs from the undisturbed run"


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


@contextlib.contextmanager
def small_filesystem(where: Path, size_mb: int):
    """A tmpfs of ``size_mb`` at ``where`` (root only); skipped outside CI when it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(where)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {proc.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system of ``folder`` until about ``leave_bytes`` are free; return the filler file."""
    filler = folder / "filler.bin"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as fh:
        block = b"\0" * (1 << 20)
        remaining = max(free - leave_bytes, 0)
        try:
            while remaining > 0:
                n = fh.write(block[: min(len(block), remaining)])
                remaining -= n
                fh.flush()
        except OSError:
            pass
    return filler

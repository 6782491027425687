"""The nightly models on Trino and on DuckDB, on the same generated events, as ratios; and Trino's memory.

    .venv/bin/python benchmarks/bench_trino.py [--users 2000] [--days 7] [--label 1-node]

Needs a Trino cluster (``scripts/trino.sh start``, then ``eval "$(scripts/trino.sh env)"``); run it once on a
single node and once with ``COHORTFLOW_TRINO_WORKERS=1`` (a coordinator and a worker process) to compare.
Both engines load every date first (ingest, validate), then ``cohortflow rebuild`` builds and publishes every
model over the whole range in its own process: that step is what is timed. On Trino the engine's own cost comes
from its REST API, per query: CPU time summed, and the peak memory of the largest query (the cluster's total
reservation, across nodes), and each local node's resident memory from /proc (its peak since it started: start the
cluster afresh for a clean number). The published tables must be equal on both engines before any number is
printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from _common import cleanup_on_sigterm, measure_wait4, published_tables  # noqa: E402


def _duration_s(text: str) -> float:
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(text)


def _size_mib(text: str) -> float:
    units = {"B": 1 / 2**20, "kB": 1 / 1024, "MB": 1.0, "GB": 1024.0, "TB": 2**20}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    raise ValueError(text)


def _trino_costs(url: str, since: dt.datetime) -> dict:
    """CPU seconds summed and the largest peak memory over the cluster's queries since ``since``."""
    u = sa.make_url(url)
    admin = sa.create_engine(u.set(database="system"))
    with admin.connect() as conn:
        ids = [r[0] for r in conn.execute(
            sa.text("select query_id from system.runtime.queries where created >= :t and query not like '%system.runtime%'"),
            {"t": since},
        ).all()]
        nodes = conn.execute(sa.text("select count(*) from system.runtime.nodes where state = 'active'")).scalar()
    admin.dispose()
    cpu, peak, planning = 0.0, 0.0, 0.0
    for query_id in ids:
        info = requests.get(f"http://{u.host}:{u.port}/v1/query/{query_id}", headers={"X-Trino-User": u.username or "bench"}, timeout=30)
        if info.status_code != 200:
            continue
        stats = info.json().get("queryStats", {})
        cpu += _duration_s(stats.get("totalCpuTime", "0s"))
        planning += _duration_s(stats.get("planningTime", "0s"))
        peak = max(peak, _size_mib(stats.get("peakTotalMemoryReservation", "0B")))
    return {"queries": len(ids), "cpu_s": cpu, "planning_s": planning, "peak_query_mib": peak, "nodes": nodes}


def _node_memory(storage: str) -> list[tuple[str, float, float]]:
    """Each local node of the cluster (``scripts/trino.sh`` keeps a PID file per node beside ``storage``): name, resident
    memory now and its high-water mark since the node started, in MiB (from /proc; empty for a remote cluster)."""
    out = []
    for pidfile in sorted(Path(storage).parent.glob("*/launcher.pid")):
        try:
            status = Path(f"/proc/{int(pidfile.read_text().strip())}/status").read_text()
        except (OSError, ValueError):
            continue
        kib = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
        out.append((pidfile.parent.name, kib.get("VmRSS", 0) / 1024, kib.get("VmHWM", 0) / 1024))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    cleanup_on_sigterm()
    url = os.environ.get("COHORTFLOW_TEST_TRINO_URL")
    storage = os.environ.get("COHORTFLOW_TEST_TRINO_STORAGE")
    catalog = os.environ.get("COHORTFLOW_TEST_TRINO_CATALOG")
    if not (url and storage and catalog):
        raise SystemExit('start a cluster and set its variables: scripts/trino.sh start; eval "$(scripts/trino.sh env)"')

    from cohortflow.demo import DemoSpec, generate
    from cohortflow.demo_project import arrival_dates, write_demo_config
    from tests.conftest import _fresh_trino_catalog, drop_trino_catalog

    cli = str(Path(sys.executable).parent / "cohortflow")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg_path = write_demo_config(root)
        landing = root / "landing" / "ark"
        summary = generate(DemoSpec(users=args.users, days=args.days, start_date=dt.date(2026, 11, 1), seed=7), landing)
        dates = arrival_dates(landing)
        trino_url = _fresh_trino_catalog(url, storage, catalog)
        engines = {
            "duckdb": {},
            "trino": {"COHORTFLOW_WAREHOUSE__URL": trino_url, "COHORTFLOW_WAREHOUSE__STORAGE_ROOT": storage},
        }
        results = {}
        try:
            for name, env in engines.items():
                env = {**env, "COHORTFLOW_TARGET_DIR": str(root / f"target-{name}")}
                for d in dates:
                    for task in ("ingest", "validate"):
                        subprocess.run([cli, "task", task, "--date", str(d), "--config", str(cfg_path)], env={**os.environ, **env},
                                       check=True, capture_output=True)
                since = dt.datetime.now(dt.UTC)
                rebuild = [cli, "rebuild", "--start", str(dates[0]), "--end", str(dates[-1]), "--config", str(cfg_path)]
                results[name] = measure_wait4(rebuild, env=env)
                if name == "trino":
                    results[name].update(_trino_costs(url, since))
                results[name]["tables"] = published_tables(cfg_path, env)
        finally:
            drop_trino_catalog(trino_url, storage)
    duck, trino = results["duckdb"], results["trino"]
    for table in duck["tables"]:
        if duck["tables"][table] != trino["tables"][table]:
            raise SystemExit(f"reports.{table} differs between DuckDB and Trino: no timing is meaningful")
    events = summary.events
    print(f"rebuild of every model over {len(dates)} dates, {args.users:,} users"
          + (f", {events:,} events" if events else "") + (f" [{args.label}]" if args.label else ""))
    print(f"published tables equal on both engines ({len(duck['tables'])} tables)")
    print(f"duckdb: {duck['seconds']:.1f} s wall, process peak {duck['peak_mib']:.0f} MiB")
    print(
        f"trino ({trino['nodes']} node(s)): {trino['seconds']:.1f} s wall, {trino['queries']} queries, "
        f"CPU {trino['cpu_s']:.1f} s, planning {trino['planning_s']:.1f} s, largest query peak {trino['peak_query_mib']:.0f} MiB, "
        f"client peak {trino['peak_mib']:.0f} MiB"
    )
    for node, rss, hwm in _node_memory(storage):
        print(f"trino node {node}: resident {rss:.0f} MiB, peak resident since it started {hwm:.0f} MiB (JVM heap included)")
    print(f"ratio trino / duckdb: wall {trino['seconds'] / duck['seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

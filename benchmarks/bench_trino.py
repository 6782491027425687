"""The nightly models on Trino and on DuckDB, on the same generated events, as ratios; and Trino's memory.

    .venv/bin/python benchmarks/bench_trino.py [--users 2000] [--days 7] [--runs 3] [--workdir DIR] [--label 1-node]

Needs a Trino cluster (``scripts/trino.sh start``, then ``eval "$(scripts/trino.sh env)"``); run it once on a
single node and once with ``COHORTFLOW_TRINO_WORKERS=1`` (a coordinator and a worker process) to compare.
Both engines load every date first (ingest, validate), then ``cohortflow rebuild`` builds and publishes every
model over the whole range in its own process: that step is what is timed, ``--runs`` times, the engines taking
turns. On Trino the engine's own cost comes from its REST API, per query: CPU time summed, and the peak memory of
the largest query (the cluster's total reservation, across nodes), and each local node's resident memory from /proc
(its peak since it started: start the cluster afresh for a clean number). The published tables must be equal on
both engines after every run before any number is printed. ``--users`` takes comma-separated sizes (e.g.
``2000,6000,20000``) for a scaling table at the end, each size in a catalog of its own; the logs of each size are
generated into ``--workdir`` and reused by later runs (default: a temporary folder).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from _common import cleanup_on_sigterm, demo_logs, demo_project, measure_wait4, print_medians, print_ratio, print_runs  # noqa: E402
from _common import print_scaling, published_tables, size_arguments, take_turns  # noqa: E402


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


def _bench_size(workdir: Path, users: int, days: int, runs: int, cluster: tuple[str, str, str], label: str) -> tuple[int, int, dict[str, float]]:
    from cohortflow.demo_project import arrival_dates
    from tests.conftest import _fresh_trino_catalog, drop_trino_catalog

    url, storage, catalog = cluster
    logs, counts = demo_logs(workdir / f"u{users}-d{days}", users, days)
    dates = arrival_dates(logs)
    project = workdir / "project"
    cfg_path = demo_project(project, logs)
    cli = str(Path(sys.executable).parent / "cohortflow")
    print(f"== {users:,} users: rebuild of every model over {len(dates)} dates, {counts['events']:,} events"
          + (f" [{label}]" if label else ""), flush=True)
    trino_url = _fresh_trino_catalog(url, storage, catalog)
    engines = {
        "duckdb": {"COHORTFLOW_TARGET_DIR": str(project / "target-duckdb")},
        "trino": {"COHORTFLOW_WAREHOUSE__URL": trino_url, "COHORTFLOW_WAREHOUSE__STORAGE_ROOT": storage,
                  "COHORTFLOW_TARGET_DIR": str(project / "target-trino")},
    }

    def rebuild(name: str) -> dict:
        env = engines[name]
        print(f"  {name}: rebuild", flush=True)
        since = dt.datetime.now(dt.UTC)
        m = measure_wait4([cli, "rebuild", "--start", str(dates[0]), "--end", str(dates[-1]), "--config", str(cfg_path)], env=env)
        result = {"seconds": m["seconds"], "peak_rss_mb": m["peak_mib"]}
        if name == "trino":
            result.update(_trino_costs(url, since))
        result["tables"] = published_tables(cfg_path, env)
        return result

    try:
        for name, env in engines.items():
            print(f"  {name}: loading {len(dates)} dates", flush=True)
            for d in dates:
                for task in ("ingest", "validate"):
                    subprocess.run([cli, "task", task, "--date", str(d), "--config", str(cfg_path)], env={**os.environ, **env},
                                   check=True, capture_output=True)
        results = take_turns(runs, {name: functools.partial(rebuild, name) for name in engines}, live=False)
    finally:
        drop_trino_catalog(trino_url, storage)
    first = results["duckdb"][0]["tables"]
    for name, rs in results.items():
        for run, r in enumerate(rs, 1):
            for table in first:
                if r["tables"][table] != first[table]:
                    raise SystemExit(f"reports.{table} differs between DuckDB and Trino ({name}, run {run}): no timing is meaningful")
    print(f"published tables equal on both engines ({len(first)} tables, every run of every engine)")
    print_runs(results)
    for run, r in enumerate(results["trino"], 1):
        print(f"  run {run}/{runs} trino ({r['nodes']} node(s)): {r['queries']} queries, CPU {r['cpu_s']:.1f} s, "
              f"planning {r['planning_s']:.1f} s, largest query peak {r['peak_query_mib']:.0f} MiB")
    times = print_medians(results)
    for node, rss, hwm in _node_memory(storage):
        print(f"trino node {node}: resident {rss:.0f} MiB, peak resident since it started {hwm:.0f} MiB (JVM heap included)")
    ratio = print_ratio(times, "trino", "duckdb")
    print(f"ratio trino / duckdb: wall {ratio:.2f}x")
    return users, counts["events"], {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = size_arguments(__doc__.splitlines()[0], 2000, 7, None, "keep the generated logs of each size here for later runs")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    cleanup_on_sigterm()
    url = os.environ.get("COHORTFLOW_TEST_TRINO_URL")
    storage = os.environ.get("COHORTFLOW_TEST_TRINO_STORAGE")
    catalog = os.environ.get("COHORTFLOW_TEST_TRINO_CATALOG")
    if not (url and storage and catalog):
        raise SystemExit('start a cluster and set its variables: scripts/trino.sh start; eval "$(scripts/trino.sh env)"')
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [_bench_size(workdir, users, args.days, args.runs, (url, storage, catalog), args.label) for users in args.users]
    if len(rows) > 1:
        print_scaling(rows, [("trino", "duckdb")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The nightly workflow on PostgreSQL at millions of events, model by model, against DuckDB on the same events.

    .venv/bin/python benchmarks/bench_postgres.py [--users 55000] [--days 30] [--runs 3] [--workdir target/bench-postgres]

``--users`` takes a comma-separated list (e.g. ``10000,30000,55000``) for a scaling curve: each size is a run of
its own, and a last table shows how each step's time grows with the events. The demo logs (about 95 events per
user over 30 days) are generated once per size into ``--workdir`` and reused by later runs.

Needs a PostgreSQL server: ``scripts/pgcluster.sh start`` and ``eval "$(scripts/pgcluster.sh env)"``. Per size and
engine, on a fresh warehouse (a new database on PostgreSQL):

1. load: every arrival date but the last, ingest then validate, in one process;
2. rebuild: ``cohortflow rebuild`` (every model whole, then publish), ``--runs`` times, each in its own process;
   each model's time is read from the command's "built <table> ... in N s" lines;
3. night: ``cohortflow run --date <last date>``: the last date's ingest, validate, models (the dates that date
   changes) and publish, as the scheduler runs it; task times from ``meta.run_log``.

The published tables of both engines must be equal after the night before any time is printed. Times are medians
over the runs (min..max shown); peak memory is the cohortflow process's (PostgreSQL's own server memory is not
included).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from _common import cleanup_on_sigterm, demo_logs, measure_wait4, model_seconds, published_tables  # noqa: E402

LOAD = """
import datetime as dt, json, sys, time
from cohortflow.config import load_config
from cohortflow.dag import load_workflows
from cohortflow.runner import run_task
from cohortflow.warehouse import Warehouse
cfg = load_config(sys.argv[1])
wh = Warehouse(cfg)
spent = {"ingest": 0.0, "validate": 0.0}
try:
    for d in json.loads(sys.argv[2]):
        for task in spent:
            t0 = time.perf_counter()
            run_task(cfg, wh, load_workflows()["cohortflow_nightly"], task, dt.date.fromisoformat(d), runner="cli", echo=lambda m: None)
            spent[task] += time.perf_counter() - t0
finally:
    wh.dispose()
print(json.dumps(spent))
"""


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--users: expected numbers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError("--users: give at least one positive number")
    return sizes


def _landing(workdir: Path, users: int, days: int) -> tuple[Path, int]:
    """The demo logs of this size (generated on first use); their event count."""
    landing, counts = demo_logs(workdir / f"u{users}-d{days}", users, days)
    return landing, counts["events"]


def _task_seconds(cfg_path: Path, env: dict[str, str], business_date: dt.date) -> dict[str, float]:
    from cohortflow.config import load_config
    from cohortflow.warehouse import Warehouse

    wh = Warehouse(load_config(cfg_path, environ={**os.environ, **env}))
    try:
        with wh.begin() as conn:
            rows = wh.execute(
                conn,
                "select task, started_at, ended_at from meta.run_log where business_date = :d and status = 'success' "
                "and workflow = 'cohortflow_nightly'",
                {"d": business_date},
            ).fetchall()
    finally:
        wh.dispose()
    return {task: (ended - started).total_seconds() for task, started, ended in rows}


def _run_engine(name: str, project: Path, env: dict[str, str], dates: list[dt.date], runs: int) -> dict:
    cfg_path = project / "cohortflow.yml"
    env = {**env, "COHORTFLOW_TARGET_DIR": str(project / "target")}
    print(f"  {name}: loading {len(dates) - 1} dates", flush=True)
    load = measure_wait4([sys.executable, "-c", LOAD, str(cfg_path), json.dumps([str(d) for d in dates[:-1]])], env=env)
    cli = str(Path(sys.executable).parent / "cohortflow")
    rebuilds = []
    for i in range(runs):
        print(f"  {name}: rebuild {i + 1} of {runs}", flush=True)
        m = measure_wait4([cli, "rebuild", "--config", str(cfg_path)], env=env)
        rebuilds.append({"seconds": m["seconds"], "peak_mib": m["peak_mib"], "models": model_seconds(m["stdout"] + m["stderr"])})
    print(f"  {name}: the night of {dates[-1]}", flush=True)
    night = measure_wait4([cli, "run", "--date", str(dates[-1]), "--config", str(cfg_path)], env=env)
    return {
        "load": load,
        "rebuilds": rebuilds,
        "night": {"seconds": night["seconds"], "peak_mib": night["peak_mib"],
                  "models": model_seconds(night["stdout"] + night["stderr"]),
                  "tasks": _task_seconds(cfg_path, env, dates[-1])},
        "tables": published_tables(cfg_path, env),
    }


def _median(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def _bench_size(workdir: Path, users: int, days: int, runs: int, url: str, password: str) -> dict:
    from cohortflow.demo_project import arrival_dates, write_demo_config

    landing, events = _landing(workdir, users, days)
    dates = arrival_dates(landing)
    if len(dates) < 2:
        raise SystemExit("need at least two arrival dates (--days 2 or more)")
    size_dir = workdir / f"run-u{users}-d{days}"
    shutil.rmtree(size_dir, ignore_errors=True)
    db = "bench_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(sa.make_url(url).set(password=password), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'create database "{db}"'))
    engines = {
        "duckdb": {},
        "postgres": {
            "COHORTFLOW_WAREHOUSE__URL": sa.make_url(url).set(database=db).render_as_string(hide_password=True),
            "COHORTFLOW_WAREHOUSE__PASSWORD": password,
        },
    }
    results = {}
    print(f"{users:,} users, {days} days: {events:,} events", flush=True)
    try:
        for name, env in engines.items():
            project = size_dir / name
            write_demo_config(project)
            os.symlink(landing.parent, project / "landing")  # (the logs are read in place)
            results[name] = _run_engine(name, project, env, dates, runs)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'drop database if exists "{db}" with (force)'))
        admin.dispose()
        shutil.rmtree(size_dir, ignore_errors=True)
    duck, pg = results["duckdb"], results["postgres"]
    for table in duck["tables"]:
        if duck["tables"][table] != pg["tables"][table]:
            raise SystemExit(f"reports.{table} differs between DuckDB and PostgreSQL: no timing is meaningful")
    print(f"published tables equal on both engines ({len(duck['tables'])} tables)")
    _print_size(users, days, events, runs, duck, pg)
    return {"users": users, "events": events, "duckdb": duck, "postgres": pg}


def _print_size(users: int, days: int, events: int, runs: int, duck: dict, pg: dict) -> None:
    print(f"\n{users:,} users x {days} days, {events:,} events; rebuild times are medians of {runs} run(s) (min..max)")
    print(f"{'step':28} {'duckdb s':>24} {'postgres s':>24} {'pg/duck':>8}")

    def row(label: str, d: list[float], p: list[float]) -> None:
        ratio = f"{statistics.median(p) / statistics.median(d):8.2f}" if statistics.median(d) > 0 else f"{'-':>8}"
        print(f"{label:28} {_median(d):>24} {_median(p):>24} {ratio}")

    for task in ("ingest", "validate"):
        row(f"load: {task}", [duck["load"]["out"][task]], [pg["load"]["out"][task]])
    row("rebuild (process)", [r["seconds"] for r in duck["rebuilds"]], [r["seconds"] for r in pg["rebuilds"]])
    models = list(duck["rebuilds"][0]["models"])
    for model in models:
        row(f"  {model}", [r["models"].get(model, 0.0) for r in duck["rebuilds"]], [r["models"].get(model, 0.0) for r in pg["rebuilds"]])
    row("night (process)", [duck["night"]["seconds"]], [pg["night"]["seconds"]])
    for task in ("ingest", "validate", "models", "publish"):
        row(f"  task {task}", [duck["night"]["tasks"].get(task, 0.0)], [pg["night"]["tasks"].get(task, 0.0)])
    for model in duck["night"]["models"]:
        row(f"    {model}", [duck["night"]["models"][model]], [pg["night"]["models"].get(model, 0.0)])
    print(f"peak memory of the cohortflow process, MiB: load {duck['load']['peak_mib']:.0f} / {pg['load']['peak_mib']:.0f}, "
          f"rebuild {max(r['peak_mib'] for r in duck['rebuilds']):.0f} / {max(r['peak_mib'] for r in pg['rebuilds']):.0f}, "
          f"night {duck['night']['peak_mib']:.0f} / {pg['night']['peak_mib']:.0f} (duckdb / postgres)")


def _print_scaling(sizes: list[dict]) -> None:
    base = sizes[0]
    print(f"\nscaling: each step's median time divided by its time at {base['events']:,} events")
    print(f"{'events':>12} {'x events':>9} {'duck rebuild':>13} {'pg rebuild':>11} {'duck load':>10} {'pg load':>8}")

    def med(r: dict, engine: str) -> float:
        return statistics.median(x["seconds"] for x in r[engine]["rebuilds"])

    def load(r: dict, engine: str) -> float:
        return sum(r[engine]["load"]["out"].values())

    for r in sizes:
        print(f"{r['events']:>12,} {r['events'] / base['events']:9.2f} {med(r, 'duckdb') / med(base, 'duckdb'):13.2f} "
              f"{med(r, 'postgres') / med(base, 'postgres'):11.2f} {load(r, 'duckdb') / load(base, 'duckdb'):10.2f} "
              f"{load(r, 'postgres') / load(base, 'postgres'):8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=_sizes, default=[55000], help="users (comma-separated sizes for a scaling curve)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3, help="rebuilds per engine and size (the night runs once)")
    ap.add_argument("--workdir", default="target/bench-postgres")
    args = ap.parse_args()
    cleanup_on_sigterm()
    url, password = os.environ.get("COHORTFLOW_TEST_PG_URL"), os.environ.get("COHORTFLOW_TEST_PG_PASSWORD")
    if not url or not password:
        raise SystemExit('set COHORTFLOW_TEST_PG_URL and COHORTFLOW_TEST_PG_PASSWORD: scripts/pgcluster.sh start; '
                         'eval "$(scripts/pgcluster.sh env)"')
    if args.runs < 1:
        raise SystemExit("--runs must be 1 or more")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [_bench_size(workdir, users, args.days, args.runs, url, password) for users in args.users]
    if len(sizes) > 1:
        _print_scaling(sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

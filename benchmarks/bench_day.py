"""One big business date end to end, task by task, and its ingest against DuckDB's read_json on the same files.

    .venv/bin/python benchmarks/bench_day.py [--users 60000,175000,580000] [--runs 3] [--workdir DIR]

For each size (demo users on one day: about 17 events per user, so 175,000 users
are about 3M events) the demo logs of one day are generated once into
``--workdir`` (reused by later runs). Each run starts a fresh DuckDB project on
those logs and runs ``cohortflow task ingest``, ``validate``, ``models`` and
``publish`` for the day's main arrival date, each in its own process; the peak
memory is the largest sum of the resident memory of the task's process and its
parser processes, sampled every 0.1 s. The reference is DuckDB's own
``read_json`` loading the same files in the same run (no ids, no dedup, no
quarantine, no ledger). Prints every run, then the medians per size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure_tree  # noqa: E402

TASKS = ("ingest", "validate", "models", "publish")

READ_JSON = r"""
import json, sys, time, duckdb
con = duckdb.connect(sys.argv[1])
files = sys.argv[2].split(",")
t0 = time.perf_counter()
con.execute("create table events as select * from read_json(?, format='newline_delimited', ignore_errors=true, union_by_name=true)", [files])
n = con.execute("select count(*) from events").fetchone()[0]
print(json.dumps({"rows": n, "inner_seconds": time.perf_counter() - t0}))
"""


def prepare(workdir: Path, users: int, fmt: str) -> tuple[Path, dt.date, list[str]]:
    """The demo logs of one day for ``users`` (generated once); the arrival date with the most bytes and its files."""
    from cohortflow.demo import DemoSpec, generate

    landing = workdir / f"u{users}" / "landing" / fmt
    done = landing.parent.parent / "generated"
    if not done.exists():
        shutil.rmtree(landing, ignore_errors=True)
        print(f"generating {users:,} users x 1 day ({fmt}) into {landing} ...", flush=True)
        generate(DemoSpec(users=users, days=1, start_date=dt.date(2026, 11, 1), seed=7, fmt=fmt), landing,
                 progress=lambda s: print(f"  {s}", flush=True))
        done.write_text("ok")
    folders = [p for p in landing.iterdir() if p.is_dir()]
    main = max(folders, key=lambda p: sum(f.stat().st_size for f in p.iterdir()))
    return landing, dt.date.fromisoformat(main.name), sorted(str(f) for f in main.iterdir())


def run_once(workdir: Path, users: int, fmt: str, landing: Path, day: dt.date, files: list[str], run: int) -> dict:
    from cohortflow.demo_project import write_demo_config

    proj = workdir / f"u{users}" / f"run{run}"
    shutil.rmtree(proj, ignore_errors=True)
    cfg_path = write_demo_config(proj, fmt)
    import yaml

    data = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    data["landing_root"] = str(landing.parent.resolve())  # the generated logs, shared by the runs
    cfg_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    cli = str(Path(sys.executable).parent / "cohortflow")
    result = {}
    for name in TASKS:
        m = measure_tree([cli, "task", name, "--config", str(cfg_path), "--date", day.isoformat(), "--run-id", f"bench{run}"])
        result[name] = m
    ref_db = proj / "ref.duckdb"
    result["read_json"] = measure_tree([sys.executable, "-c", READ_JSON, str(ref_db), ",".join(files)])
    ref_db.unlink(missing_ok=True)
    import duckdb

    con = duckdb.connect(str(proj / "target" / "warehouse.duckdb"), read_only=True)
    result["lines"] = con.execute("select sum(lines_read) from meta.ingest_ledger where load_date = ?", [day]).fetchone()[0]
    result["loaded"] = con.execute("select count(*) from raw.events where load_date = ?", [day]).fetchone()[0]
    con.close()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="60000,175000,580000", help="comma-separated sizes (demo users on one day)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--format", default="ark")
    ap.add_argument("--workdir", type=Path, default=Path("target/bench-day"))
    ap.add_argument("--keep", action="store_true", help="keep each run's project (warehouse) in the workdir")
    args = ap.parse_args()
    sizes = [int(u) for u in args.users.split(",")]
    summary = []
    for users in sizes:
        landing, day, files = prepare(args.workdir, users, args.format)
        size = sum(Path(f).stat().st_size for f in files)
        print(f"\n{users:,} users: arrival date {day}, {len(files)} files, {size / 1e6:,.0f} MB on disk", flush=True)
        print(f"{'run':>3} {'task':>10} {'seconds':>8} {'lines/s':>10} {'peak MiB':>9}", flush=True)
        runs = []
        for run in range(1, args.runs + 1):
            r = run_once(args.workdir, users, args.format, landing, day, files, run)
            for name in (*TASKS, "read_json"):
                m = r[name]
                print(f"{run:>3} {name:>10} {m['seconds']:8.1f} {r['lines'] / m['seconds']:10,.0f} {m['peak_mib']:9,.0f}", flush=True)
            ratio = r["ingest"]["seconds"] / r["read_json"]["seconds"]
            print(f"{run:>3} ingest / read_json {ratio:.2f}x ({r['lines']:,} lines read, {r['loaded']:,} events loaded; "
                  f"read_json loaded {r['read_json']['out'].get('rows', 0):,} rows)", flush=True)
            runs.append(r)
            if not args.keep:
                shutil.rmtree(args.workdir / f"u{users}" / f"run{run}", ignore_errors=True)
        med = {name: statistics.median(r[name]["seconds"] for r in runs) for name in (*TASKS, "read_json")}
        peak = {name: max(r[name]["peak_mib"] for r in runs) for name in (*TASKS, "read_json")}
        ratios = [r["ingest"]["seconds"] / r["read_json"]["seconds"] for r in runs]
        summary.append((users, runs[0]["lines"], med, peak, statistics.median(ratios)))
    print("\nmedians over runs (peak: the largest of the runs)")
    print(f"{'users':>9} {'lines':>11} " + " ".join(f"{n + ' s':>10} {'MiB':>6}" for n in TASKS) + f" {'read_json s':>11} {'ratio':>6}")
    for users, lines, med, peak, ratio in summary:
        cells = " ".join(f"{med[n]:10.1f} {peak[n]:6,.0f}" for n in TASKS)
        print(f"{users:>9,} {lines:>11,} {cells} {med['read_json']:11.1f} {ratio:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A night's cost follows its new data, identity links included: night N against night 2, as a ratio.

    .venv/bin/python benchmarks/bench_links.py [--users 20000] [--days 30] [--format segment] [--landing DIR]

Generates the demo logs (Segment by default: identify calls link anonymous ids every day, re-attributing
histories that reach back to the first day), then runs ``cohortflow run`` for every arrival date, each in its own
process as a scheduler would, on DuckDB. Prints each night's task times (from meta.run_log) and the ratio of the
last night to night 2 for the models stage and for the whole night. ``--landing`` reuses logs generated before
(the folder that holds the <YYYY-MM-DD> folders); ``--workdir`` keeps the project for inspection afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import BUILT, measure_wait4  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--format", default="segment")
    ap.add_argument("--landing", type=Path, default=None, help="reuse generated logs (a folder of date folders)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the project here (default: a temporary folder)")
    args = ap.parse_args()

    import duckdb

    from cohortflow.demo import DemoSpec, generate
    from cohortflow.demo_project import arrival_dates, write_demo_config

    cli = str(Path(sys.executable).parent / "cohortflow")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.workdir or Path(tmp) / "project"
        if base.exists():
            raise SystemExit(f"{base} exists: give a new --workdir")
        cfg_path = write_demo_config(base, args.format)
        landing = base / "landing" / args.format
        if args.landing:
            shutil.copytree(args.landing, landing)
        else:
            generate(
                DemoSpec(users=args.users, days=args.days, start_date=dt.date(2026, 11, 1), seed=7, fmt=args.format),
                landing,
            )
        dates = arrival_dates(landing)
        nights = []
        for d in dates:
            run = measure_wait4([cli, "run", "--config", str(cfg_path), "--date", d.isoformat()])
            built = {m: float(secs) for m, _, secs in BUILT.findall(run["stderr"])}
            nights.append({"date": d.isoformat(), "seconds": run["seconds"], "peak_mib": run["peak_mib"], "built": built})
        con = duckdb.connect(str(base / "target" / "warehouse.duckdb"), read_only=True)
        rows = con.execute(
            "select business_date, task, epoch(ended_at - started_at) from meta.run_log where status = 'success'"
        ).fetchall()
        events = con.execute("select count(*) from raw.events").fetchone()[0]
        con.close()
    tasks: dict[str, dict[str, float]] = {}
    for d, task, secs in rows:
        tasks.setdefault(d.isoformat(), {})[task] = float(secs)
    print(f"{len(dates)} nights, {events:,} events loaded ({args.format}, {args.users:,} users)")
    print(f"{'night':>5} {'date':<10} {'ingest':>7} {'validate':>8} {'models':>7} {'publish':>7} {'process':>8} {'peak MiB':>8}")
    for i, n in enumerate(nights, 1):
        t = tasks.get(n["date"], {})
        print(
            f"{i:>5} {n['date']:<10} {t.get('ingest', 0):7.2f} {t.get('validate', 0):8.2f} {t.get('models', 0):7.2f} "
            f"{t.get('publish', 0):7.2f} {n['seconds']:8.2f} {n['peak_mib']:8.0f}"
        )
    second, last = nights[1], nights[-1]
    models = tasks[last["date"]]["models"] / tasks[second["date"]]["models"]
    whole = last["seconds"] / second["seconds"]
    print(f"models stage, seconds per model (night 2, night {len(nights)}, ratio):")
    for name in sorted(set(second["built"]) | set(last["built"]), key=lambda m: -last["built"].get(m, 0)):
        a, b = second["built"].get(name, 0.0), last["built"].get(name, 0.0)
        print(f"  {name:<40} {a:7.2f} {b:7.2f} {b / a if a else float('nan'):6.2f}x")
    print(f"night {len(nights)} / night 2: models {models:.2f}x, whole night {whole:.2f}x")
    print(json.dumps({"models_ratio": round(models, 3), "night_ratio": round(whole, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A night's cost follows its new data, identity links included: night N against night 2, as a ratio.

    .venv/bin/python benchmarks/bench_links.py [--users 20000] [--days 30] [--format segment] [--runs 3]
        [--workdir DIR] [--landing DIR]

Generates the demo logs (Segment by default: identify calls link anonymous ids every day, re-attributing
histories that reach back to the first day), then runs ``cohortflow run`` for every arrival date, each in its own
process as a scheduler would, on DuckDB, ``--runs`` times on a fresh project each time. Prints each night's task
times (from meta.run_log; medians over the runs) and the ratio of the last night to night 2 for the models stage
and for the whole night. ``--users`` takes comma-separated sizes (e.g. ``5000,10000,20000``) for a scaling table at
the end. ``--workdir`` keeps the logs of each size for later runs and the last run's project for inspection
(default: a temporary folder); ``--landing`` reuses logs generated before (the folder that holds the <YYYY-MM-DD>
folders; one size only).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import BUILT, demo_logs, demo_project, measure_wait4, print_medians, print_ratio, print_scaling, size_arguments  # noqa: E402

TASKS = ("ingest", "validate", "models", "publish")


def _run(project: Path, logs: Path, fmt: str, dates: list) -> dict:
    """Every night of the logs on a fresh project: each night's process time, peak and models' build times, each
    task's time from meta.run_log, and the events loaded."""
    import duckdb

    cfg_path = demo_project(project, logs, fmt)
    cli = str(Path(sys.executable).parent / "cohortflow")
    nights = []
    for d in dates:
        run = measure_wait4([cli, "run", "--config", str(cfg_path), "--date", d.isoformat()])
        built = {m: float(secs) for m, _, secs in BUILT.findall(run["stderr"])}
        nights.append({"date": d.isoformat(), "seconds": run["seconds"], "peak_rss_mb": run["peak_mib"], "built": built})
    con = duckdb.connect(str(project / "target" / "warehouse.duckdb"), read_only=True)
    rows = con.execute("select business_date, task, epoch(ended_at - started_at) from meta.run_log where status = 'success'").fetchall()
    events = con.execute("select count(*) from raw.events").fetchone()[0]
    con.close()
    for d, task, secs in rows:
        nights[dates.index(d)][task] = float(secs)
    return {"nights": nights, "events": events}


def _median_night(runs: list[dict], i: int) -> dict:
    """Night ``i`` (0-based) with each number the median over the runs (the peak the largest)."""
    nights = [r["nights"][i] for r in runs]
    out = {key: statistics.median(n.get(key, 0.0) for n in nights) for key in ("seconds", *TASKS)}
    models = {m for n in nights for m in n["built"]}
    return {**out, "date": nights[0]["date"], "peak_rss_mb": max(n["peak_rss_mb"] for n in nights),
            "built": {m: statistics.median(n["built"].get(m, 0.0) for n in nights) for m in models}}


def _bench_size(workdir: Path, users: int, days: int, fmt: str, runs: int, landing: Path | None) -> tuple[int, int, dict[str, float]]:
    from cohortflow.demo_project import arrival_dates

    logs = landing.resolve() if landing else demo_logs(workdir / f"u{users}-d{days}-{fmt}", users, days, fmt)[0]
    dates = arrival_dates(logs)
    if len(dates) < 2:
        raise SystemExit("need at least two arrival dates (--days 2 or more)")
    print(f"== {len(dates)} nights of {fmt}, {users:,} users" if not landing else f"== {len(dates)} nights of {landing}", flush=True)
    results = []
    for run in range(1, runs + 1):
        r = _run(workdir / f"project-u{users}", logs, fmt, dates)
        second, last = r["nights"][1], r["nights"][-1]
        print(f"  run {run}/{runs}: night 2 {second['seconds']:.2f}s (models {second['models']:.2f}s), night {len(dates)} "
              f"{last['seconds']:.2f}s (models {last['models']:.2f}s), peak RSS {max(n['peak_rss_mb'] for n in r['nights']):,.0f} MB",
              flush=True)
        results.append(r)
    events = results[-1]["events"]
    nights = [_median_night(results, i) for i in range(len(dates))]
    print(f"{len(dates)} nights, {events:,} events loaded; medians of {runs} run(s), peak the largest")
    print(f"{'night':>5} {'date':<10} {'ingest':>7} {'validate':>8} {'models':>7} {'publish':>7} {'process':>8} {'peak MiB':>8}")
    for i, n in enumerate(nights, 1):
        print(f"{i:>5} {n['date']:<10} {n['ingest']:7.2f} {n['validate']:8.2f} {n['models']:7.2f} {n['publish']:7.2f} "
              f"{n['seconds']:8.2f} {n['peak_rss_mb']:8.0f}")
    second, last = nights[1], nights[-1]
    print(f"models stage, seconds per model (night 2, night {len(nights)}, ratio):")
    for name in sorted(set(second["built"]) | set(last["built"]), key=lambda m: -last["built"].get(m, 0)):
        a, b = second["built"].get(name, 0.0), last["built"].get(name, 0.0)
        print(f"  {name:<40} {a:7.2f} {b:7.2f} {b / a if a else float('nan'):6.2f}x")
    sides = {"night 2": [r["nights"][1] for r in results], "last night": [r["nights"][-1] for r in results],
             "models 2": [{**r["nights"][1], "seconds": r["nights"][1]["models"]} for r in results],
             "models last": [{**r["nights"][-1], "seconds": r["nights"][-1]["models"]} for r in results]}
    times = print_medians(sides)
    whole = print_ratio(times, "last night", "night 2")
    models = print_ratio(times, "models last", "models 2")
    print(f"night {len(nights)} / night 2: models {models:.2f}x, whole night {whole:.2f}x")
    print(json.dumps({"models_ratio": round(models, 3), "night_ratio": round(whole, 3)}))
    return users, events, {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = size_arguments(__doc__.splitlines()[0], 20000, 30, None,
                        "keep the generated logs of each size and the last run's project here (default: a temporary folder)")
    ap.add_argument("--format", default="segment")
    ap.add_argument("--landing", type=Path, default=None, help="reuse generated logs (a folder of date folders; one size)")
    args = ap.parse_args()
    if args.landing and len(args.users) > 1:
        raise SystemExit("--landing holds the logs of one size: give one --users")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [_bench_size(workdir, users, args.days, args.format, args.runs, args.landing) for users in args.users]
    if len(rows) > 1:
        print_scaling(rows, [("last night", "night 2"), ("models last", "models 2")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Ingest throughput on the demo logs vs DuckDB's own read_json on the same files.

    .venv/bin/python benchmarks/bench_ingest.py [--users 2000] [--days 14] [--format ark] [--runs 3] [--workdir DIR]

cohortflow's ingest does more than read_json (per-line adapters, event ids,
dedup within the batch and against loaded days, quarantine with reasons, the
ledger), so the ratio says what that exactness costs against the fastest
plain loader of the same bytes. Each side runs ``--runs`` times, each run in its
own process on a fresh warehouse, the two taking turns; the times compared are
each process's own load (``inner``: the interpreter's start and imports left
out). ``--users`` takes comma-separated sizes (e.g. ``1000,2000,4000``) for a
scaling table at the end. The logs of each size are generated into ``--workdir``
and reused by later runs (default: a temporary folder).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import demo_logs, demo_project, measure_wait4, print_medians, print_ratio, print_scaling, size_arguments, take_turns  # noqa: E402

INGEST = r"""
import datetime as dt, json, sys, time
from cohortflow.config import load_config
from cohortflow.ingest import load_day
from cohortflow.warehouse import Warehouse
cfg = load_config(sys.argv[1], environ={})
wh = Warehouse(cfg); wh.bootstrap()
dates = [dt.date.fromisoformat(d) for d in sys.argv[2].split(",")]
lines = loaded = 0
t0 = time.perf_counter()
for d in dates:
    ledger = load_day(wh, cfg, d, "bench")
    lines += ledger.lines_read; loaded += ledger.events_loaded
print(json.dumps({"lines": lines, "loaded": loaded, "inner_seconds": time.perf_counter() - t0}))
"""

READ_JSON = r"""
import json, sys, time, duckdb
con = duckdb.connect(sys.argv[1])
files = sys.argv[2].split(",")
t0 = time.perf_counter()
con.execute("create table events as select * from read_json(?, format='newline_delimited', ignore_errors=true, union_by_name=true)", [files])
n = con.execute("select count(*) from events").fetchone()[0]
print(json.dumps({"rows": n, "inner_seconds": time.perf_counter() - t0}))
"""


def _side(argv: list[str]) -> dict:
    """One run of a side's process; its own load's time ("inner_seconds") as its "seconds"."""
    m = measure_wait4([sys.executable, "-c", *argv])
    return {**m["out"], "seconds": m["out"]["inner_seconds"], "wall": m["seconds"], "peak_rss_mb": m["peak_mib"]}


def _bench_size(workdir: Path, users: int, days: int, fmt: str, runs: int) -> tuple[int, int, dict[str, float]]:
    from cohortflow.demo_project import arrival_dates

    logs, counts = demo_logs(workdir / f"u{users}-d{days}-{fmt}", users, days, fmt)
    dates = arrival_dates(logs)
    files = sorted(str(p) for d in dates for p in (logs / d.isoformat()).iterdir())
    size = sum(Path(f).stat().st_size for f in files)
    print(f"== {users:,} users: {counts['lines']:,} lines in {len(files)} files ({size / 1e6:.1f} MB on disk), "
          f"{len(dates)} arrival dates", flush=True)
    project, ref_db = workdir / "project", workdir / "ref.duckdb"

    def ingest() -> dict:
        cfg_path = demo_project(project, logs, fmt)
        return _side([INGEST, str(cfg_path), ",".join(d.isoformat() for d in dates)])

    def read_json() -> dict:
        ref_db.unlink(missing_ok=True)
        try:
            return _side([READ_JSON, str(ref_db), ",".join(files)])
        finally:
            ref_db.unlink(missing_ok=True)

    results = take_turns(runs, {"ingest": ingest, "read_json": read_json})
    times = print_medians(results)
    ratio = print_ratio(times, "ingest", "read_json")
    ours, ref = results["ingest"], results["read_json"]
    wall = statistics.median(r["wall"] for r in ours) / statistics.median(r["wall"] for r in ref)
    peak = max(r["peak_rss_mb"] for r in ours) / max(r["peak_rss_mb"] for r in ref)
    lines, rows = ours[0]["lines"], ref[0]["rows"]
    print(f"lines/s (medians): ingest {lines / statistics.median(times['ingest']):,.0f}, "
          f"read_json {rows / statistics.median(times['read_json']):,.0f}")
    print(f"ratio cohortflow / read_json: time {ratio:.2f}x (process wall {wall:.2f}x), peak memory {peak:.2f}x")
    print(f"(read_json loaded {rows:,} rows, neither deduplicating nor reporting malformed lines; "
          f"cohortflow loaded {ours[0]['loaded']:,} and accounted for every line)")
    return users, lines, {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = size_arguments(__doc__.splitlines()[0], 2000, 14, None, "keep the generated logs of each size here for later runs")
    ap.add_argument("--format", default="ark")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [_bench_size(workdir, users, args.days, args.format, args.runs) for users in args.users]
    if len(rows) > 1:
        print_scaling(rows, [("ingest", "read_json")], unit="lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

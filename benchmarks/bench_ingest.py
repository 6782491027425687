"""Ingest throughput on the demo logs vs DuckDB's own read_json on the same files.

    .venv/bin/python benchmarks/bench_ingest.py [--users 2000] [--days 14] [--format ark]

cohortflow's ingest does more than read_json (per-line adapters, event ids,
dedup within the batch and against loaded days, quarantine with reasons, the
ledger), so the ratio says what that exactness costs against the fastest
plain loader of the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import measure_wait4  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--format", default="ark")
    args = ap.parse_args()

    from cohortflow.demo import DemoSpec, generate
    from cohortflow.demo_project import arrival_dates, write_demo_config

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg_path = write_demo_config(root / "proj", args.format)
        landing = root / "proj" / "landing" / args.format
        spec = DemoSpec(users=args.users, days=args.days, start_date=dt.date(2026, 11, 1), seed=7, fmt=args.format)
        summary = generate(spec, landing)
        dates = arrival_dates(landing)
        files = sorted(str(p) for d in dates for p in (landing / d.isoformat()).iterdir())
        size = sum(Path(f).stat().st_size for f in files)
        print(f"input: {summary.lines_written:,} lines in {len(files)} files ({size / 1e6:.1f} MB on disk), {len(dates)} arrival dates")

        ours = measure_wait4([sys.executable, "-c", INGEST, str(cfg_path), ",".join(d.isoformat() for d in dates)])
        ref = measure_wait4([sys.executable, "-c", READ_JSON, str(root / "ref.duckdb"), ",".join(files)])

    lines = ours["out"]["lines"]
    print(f"{'':28} {'wall s':>8} {'inner s':>8} {'lines/s':>10} {'peak MiB':>9}")
    for name, m, n in (("cohortflow ingest", ours, lines), ("duckdb read_json", ref, ref["out"]["rows"])):
        inner = m["out"]["inner_seconds"]
        print(f"{name:28} {m['seconds']:8.2f} {inner:8.2f} {n / inner:10,.0f} {m['peak_mib']:9.0f}")
    print(
        f"ratio cohortflow / read_json: time {ours['out']['inner_seconds'] / ref['out']['inner_seconds']:.2f}x "
        f"(process wall {ours['seconds'] / ref['seconds']:.2f}x), peak memory {ours['peak_mib'] / ref['peak_mib']:.2f}x"
    )
    print(f"(read_json loaded {ref['out']['rows']:,} rows, neither deduplicating nor reporting malformed lines; "
          f"cohortflow loaded {ours['out']['loaded']:,} and accounted for every line)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

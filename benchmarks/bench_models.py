"""Funnel and retention models at scale vs ClickHouse (chdb) on the same input; nightly cost vs history.

    .venv/bin/python benchmarks/bench_models.py [--users 1000000] [--days 30] [--workdir target/bench-models]

1. Generates about 1.5 events per user-day (users x days x 25 % active x 6
   events: 45 million at the default size) straight into ``raw.events`` of a
   DuckDB warehouse (the ingest is benchmarked by bench_ingest.py), and the
   same rows as Parquet for ClickHouse.
2. Builds, with cohortflow, a 5-step funnel with a 1-day window for every
   entry date, and the day-retention triangle (first-time cohorts, any
   activity, horizon 30); and computes the same with chdb: ``windowFunnel(
   86400000, 'strict_once')`` per (user, entry date) and a retention query.
   Each side runs in its own process: wall time and peak memory. The results
   are compared (they must be equal) before any time is reported.
3. Runs the nightly ``models`` + ``publish`` tasks for day 2 on a warehouse
   holding days 1-2, and for day 31 on one holding days 1-31, each after the
   previous night was built and published and with the day's load recorded
   as the ingest records it (``--nightly-only``: this step alone): the ratio
   shows whether a night's cost follows the new data or the whole history.
   Each night is timed ``--repeat`` times (3), alternating, on fresh copies of
   its prepared warehouse; the median of the runs' ratios is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import BUILT, measure_wait4  # noqa: E402

START = dt.date(2026, 10, 1)
STEPS = ["step1", "step2", "step3", "step4", "step5"]
WINDOW_MS = 86_400_000
HORIZON = 30

CONFIG = {
    "project": "bench",
    "timezone": "UTC",
    "sources": [{"name": "bench", "format": "canonical", "path": "none"}],
    "warehouse": {"url": "duckdb:///bench.duckdb"},
    "ingest": {"lookback_days": 2, "late_arrival_days": 2},
    "analyses": {
        "funnels": [{"name": "bench5", "steps": [{"event": s} for s in STEPS], "window_seconds": WINDOW_MS // 1000}],
        "retention": [{"name": "day_any", "period": "day", "horizon": HORIZON}],
    },
}

GENERATE = """
insert into raw.events
with active as (
    select u, d from range(?) as t(u), range(?) as s(d)
    where hash(u, d, 17) % 1000 < 250
),
events as (
    select u, d, i, hash(u, d, i) as h from active, range(6) as r(i)
),
timed as (
    select *, cast(? as timestamp) + to_days(cast(d as integer)) + to_milliseconds(cast(h % 86400000 as bigint)) as ts
    from events
)
select
    'e' || u || '_' || d || '_' || i as event_id,
    case
        when h % 100 < 12 then 'step1' when h % 100 < 22 then 'step2' when h % 100 < 31 then 'step3'
        when h % 100 < 39 then 'step4' when h % 100 < 46 then 'step5' else 'other_' || cast(h % 7 as varchar)
    end as event_name,
    'u' || u as distinct_id,
    ts as event_time,
    cast(ts as date) as event_date,
    ts as received_at,
    'canonical' as source_format,
    'bench' as app_id, null as platform, null as app_version, null as channel, null as session_id,
    '{}' as properties,
    true as is_activity,
    null as link_anonymous_id, null as link_login_id,
    cast(ts as date) as load_date,
    'bench' as ingest_file,
    0 as ingest_line,
    'app' as source_name
from timed
"""

# A funnel or retention build: the user-grain model and the published table aggregating it.
FUNNEL = "funnel_user_steps,funnel_conversion_daily"
RETENTION = "retention_user_cohorts,retention_cohorts"

BUILD = r"""
import datetime as dt, json, sys, time
from cohortflow.config import load_config
from cohortflow.models import build_models
from cohortflow.warehouse import Warehouse
cfg = load_config(sys.argv[1], environ={})
wh = Warehouse(cfg)
start, end = dt.date.fromisoformat(sys.argv[3]), dt.date.fromisoformat(sys.argv[4])
# The models it reads were built by DEPENDENCIES in another process (the staged views, the activity table, segment
# membership): this process's time and peak memory are the model's alone, as a night builds it after them. The
# activity table is timed on its own (ACTIVITY).
t0 = time.perf_counter()
names = sys.argv[2].split(",")
built = build_models(wh, cfg, start, end, exact_range=True, only=set(names), dependencies=False)
seconds = time.perf_counter() - t0
with wh.begin() as conn:
    if "funnel_conversion_daily" in names:
        rows = wh.execute(conn, "select entry_date, step_index, reached_users from models.funnel_conversion_daily "
                                "where breakdown_value = 'all' and entry_date between :s and :e order by 1, 2",
                          {"s": start, "e": end}).fetchall()
    else:
        rows = wh.execute(conn, "select cohort_date, period_number, retained_users from models.retention_cohorts "
                                "where breakdown_value = 'all' and cohort_date between :s and :e order by 1, 2",
                          {"s": start, "e": end}).fetchall()
print(json.dumps({"inner_seconds": seconds, "rows": [[str(a), int(b), int(c)] for a, b, c in rows]}))
"""

# ClickHouse reads its own MergeTree table (loaded from the Parquet export before the clock starts), as cohortflow
# reads its own warehouse table; only the query is timed.
DEPENDENCIES = r"""
import datetime as dt, sys
from cohortflow.config import load_config
from cohortflow.models import _with_dependencies, build_models, load_models
from cohortflow.warehouse import Warehouse
cfg = load_config(sys.argv[1], environ={})
wh = Warehouse(cfg)
start, end = dt.date.fromisoformat(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
models = load_models()
targets = {"funnel_user_steps", "funnel_conversion_daily", "retention_user_cohorts", "retention_cohorts"}
build_models(wh, cfg, start, end, exact_range=True, only=_with_dependencies(targets, models) - targets)
"""

ACTIVITY = r"""
import datetime as dt, json, sys, time
from cohortflow.config import load_config
from cohortflow.models import build_models
from cohortflow.warehouse import Warehouse
cfg = load_config(sys.argv[1], environ={})
wh = Warehouse(cfg)
start, end = dt.date.fromisoformat(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
build_models(wh, cfg, start, end, exact_range=True, only={"stg_events"})
t0 = time.perf_counter()
build_models(wh, cfg, start, end, exact_range=True, only={"user_activity_daily"}, dependencies=False)
print(json.dumps({"inner_seconds": time.perf_counter() - t0}))
"""

CH_LOAD = """
create table if not exists default.events (user_id String, event_name LowCardinality(String), t_ms UInt64, event_date Date)
engine = MergeTree order by (user_id, t_ms)
"""

CH_COMMON = r"""
import json, sys, time
from chdb import session
path, sess_dir = sys.argv[1], sys.argv[2]
sess = session.Session(sess_dir)
sess.query("drop table if exists default.events")
sess.query(__LOAD__)
sess.query(f"insert into default.events select user_id, event_name, t_ms, event_date from file('{path}', Parquet)")

def timed(sql):
    t0 = time.perf_counter()
    out = sess.query(sql, "JSONCompact")
    seconds = time.perf_counter() - t0
    sess.close()
    print(json.dumps({"inner_seconds": seconds, "rows": json.loads(out.bytes())["data"]}))
""".replace("__LOAD__", repr(CH_LOAD))

CH_FUNNEL = CH_COMMON + r"""
start, end = sys.argv[3], sys.argv[4]
conds = ", ".join(f"event_name = 'step{k}'" for k in range(2, 6))
timed(f'''
select toString(entry_date), level, count() from (
    select user_id, entry_date,
        windowFunnel(__WINDOW__, 'strict_once')(t_ms, event_name = 'step1' and event_date = entry_date, {conds}) as level
    from default.events
    array join [event_date, event_date - 1] as entry_date
    where event_name in ('step1', 'step2', 'step3', 'step4', 'step5')
      and entry_date between toDate('{start}') and toDate('{end}')
    group by user_id, entry_date
)
where level > 0
group by entry_date, level
order by 1, 2
''')
""".replace("__WINDOW__", str(WINDOW_MS))

CH_RETENTION = CH_COMMON + r"""
horizon = int(sys.argv[3])
timed(f'''
with active as (select distinct user_id, event_date from default.events),
first as (select user_id, min(event_date) as cohort_date from active group by user_id)
select toString(cohort_date), dateDiff('day', cohort_date, event_date) as k, uniqExact(user_id)
from active inner join first using (user_id)
where k between 0 and {horizon}
group by cohort_date, k
order by 1, 2
''')
"""


def _prepare(workdir: Path, users: int, days: int) -> Path:
    """The warehouse and Parquet file, generated once per size (reused when present)."""
    import duckdb

    marker = workdir / "generated.json"
    want = {"users": users, "days": days, "version": 1}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return workdir / "cohortflow.yml"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    cfg_path = workdir / "cohortflow.yml"
    cfg_path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    from cohortflow.config import load_config
    from cohortflow.warehouse import Warehouse

    wh = Warehouse(load_config(cfg_path, environ={}))
    wh.bootstrap()
    wh.dispose()
    con = duckdb.connect(str(workdir / "bench.duckdb"))
    print(f"generating {users:,} users x {days} days into {workdir} ...", flush=True)
    con.execute(GENERATE, [users, days, START.isoformat()])
    n = con.execute("select count(*) from raw.events").fetchone()[0]
    con.execute(
        "copy (select distinct_id as user_id, event_name, cast(epoch_ms(event_time) as ubigint) as t_ms, event_date "
        f"from raw.events) to '{workdir / 'events.parquet'}' (format parquet)"
    )
    con.close()
    print(f"  {n:,} events", flush=True)
    marker.write_text(json.dumps(want))
    return cfg_path


def _levels_to_reached(rows: list) -> dict[tuple[str, int], int]:
    """chdb (entry_date, level, users) -> users reaching >= k, per (entry_date, k)."""
    by_date: dict[str, dict[int, int]] = {}
    for d, level, n in rows:
        by_date.setdefault(d, {})[int(level)] = int(n)
    out = {}
    for d, levels in by_date.items():
        for k in range(1, len(STEPS) + 1):
            out[(d, k)] = sum(n for lv, n in levels.items() if lv >= k)
    return out


def _row(name: str, m: dict) -> str:
    return f"{name:38} {m['seconds']:8.1f} {m['out']['inner_seconds']:8.1f} {m['peak_mib']:9.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--workdir", type=Path, default=Path("target/bench-models"))
    ap.add_argument("--skip-nightly", action="store_true")
    ap.add_argument("--nightly-only", action="store_true", help="only the day-31 / day-2 nightly comparison")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each night (alternating), default 3")
    ap.add_argument("--memory-limit", help="also build both models with this DuckDB memory_limit, e.g. 3GB")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    cfg_path = _prepare(workdir, args.users, args.days + 1)
    parquet = workdir / "events.parquet"
    end = START + dt.timedelta(days=args.days - 1)
    py = sys.executable
    if args.nightly_only:
        _nightly(workdir, cfg_path, args.days, args.repeat)
        return 0

    measure_wait4([py, "-c", DEPENDENCIES, str(cfg_path), str(START), str(end)])
    results = {}
    results["cohortflow funnel (DuckDB)"] = measure_wait4([py, "-c", BUILD, str(cfg_path), FUNNEL, str(START), str(end)])
    results["chdb windowFunnel"] = measure_wait4([py, "-c", CH_FUNNEL, str(parquet), str(workdir / "chdb"), str(START), str(end)])
    results["cohortflow activity table (DuckDB)"] = measure_wait4([py, "-c", ACTIVITY, str(cfg_path), str(START), str(end)])
    results["cohortflow retention (DuckDB)"] = measure_wait4([py, "-c", BUILD, str(cfg_path), RETENTION, str(START), str(end)])
    results["chdb retention"] = measure_wait4([py, "-c", CH_RETENTION, str(parquet), str(workdir / "chdb"), str(HORIZON)])
    if args.memory_limit:
        limited = workdir / "limited.yml"
        spec = yaml.safe_load(cfg_path.read_text())
        spec["warehouse"]["memory_limit"] = args.memory_limit
        limited.write_text(yaml.safe_dump(spec, sort_keys=False))
        for model, label in ((FUNNEL, "funnel"), (RETENTION, "retention")):
            results[f"cohortflow {label} (DuckDB, {args.memory_limit})"] = measure_wait4(
                [py, "-c", BUILD, str(limited), model, str(START), str(end)]
            )

    # Same numbers first: a fast wrong answer is not a result.
    ours_f = {(d, k): n for d, k, n in results["cohortflow funnel (DuckDB)"]["out"]["rows"]}
    ch_f = {key: n for key, n in _levels_to_reached(results["chdb windowFunnel"]["out"]["rows"]).items() if key[0] <= str(end)}
    assert ours_f == {k: v for k, v in ch_f.items() if k in ours_f or v}, "funnel results differ from ClickHouse"
    ours_r = {(d, k): n for d, k, n in results["cohortflow retention (DuckDB)"]["out"]["rows"] if d <= str(end) and n}
    ch_r = {(d, int(k)): int(n) for d, k, n in results["chdb retention"]["out"]["rows"] if d <= str(end)}
    # The data holds one more day (for the day-31 night below); a build up to `end` counts returns up to `end` only.
    last = str(end)
    want_r = {k: v for k, v in ch_r.items() if (dt.date.fromisoformat(k[0]) + dt.timedelta(days=k[1])).isoformat() <= last}
    differing = sorted(key for key in set(ours_r) | set(want_r) if ours_r.get(key) != want_r.get(key))
    for key in differing[:10]:
        print("retention differs", key, ours_r.get(key), want_r.get(key))
    assert ours_r == want_r, \
        "retention results differ from ClickHouse"

    for name, m in results.items():
        for label in ("funnel", "retention"):
            if name.startswith(f"cohortflow {label} (DuckDB, "):
                assert m["out"]["rows"] == results[f"cohortflow {label} (DuckDB)"]["out"]["rows"], f"{name}: results differ"

    print(f"{'step':38} {'wall s':>8} {'inner s':>8} {'peak MiB':>9}")
    for name, m in results.items():
        print(_row(name, m))
    f_ratio = results["cohortflow funnel (DuckDB)"]["out"]["inner_seconds"] / results["chdb windowFunnel"]["out"]["inner_seconds"]
    r_ratio = results["cohortflow retention (DuckDB)"]["out"]["inner_seconds"] / results["chdb retention"]["out"]["inner_seconds"]
    activity = results["cohortflow activity table (DuckDB)"]["out"]["inner_seconds"]
    r_full = (results["cohortflow retention (DuckDB)"]["out"]["inner_seconds"] + activity) / results["chdb retention"]["out"]["inner_seconds"]
    print(f"ratio cohortflow / ClickHouse (query time; results equal): funnel {f_ratio:.2f}x, retention {r_ratio:.2f}x "
          f"({r_full:.2f}x counting a full build of the activity table, which nights maintain a day at a time)")

    if not args.skip_nightly:
        _nightly(workdir, cfg_path, args.days, args.repeat)
    return 0


def _nightly(workdir: Path, cfg_path: Path, days: int, repeat: int = 3) -> None:
    """Nightly models + publish of day 2 (on 1 day of history) vs day days+1 (on days of history), each as a night
    runs after the ingest: the previous nights built and published (not timed), then the day's rows and its change
    record (a load of the business date, with the (user, date) pairs it added) written as the ingest writes them.

    Both nights are prepared first; then each is timed ``repeat`` times, alternating, each time on a fresh copy of
    its prepared warehouse, so that a drift of the machine's speed weighs on both sides of every ratio alike. The
    ratio reported is the median of the runs' ratios."""
    import statistics

    cli = str(Path(sys.executable).parent / "cohortflow")
    nights = {}
    for label, d in (("day 2", START + dt.timedelta(days=1)), (f"day {days + 1}", START + dt.timedelta(days=days))):
        night = workdir / f"night-{label.split()[1]}"
        if night.exists():
            shutil.rmtree(night)
        night.mkdir()
        cfg = night / "cohortflow.yml"
        shutil.copy(cfg_path, cfg)
        print(f"{label}: preparing (the nights before built and published, then the day's load) ...", flush=True)
        _load_night(workdir / "bench.duckdb", night / "bench.duckdb", until=d - dt.timedelta(days=1))
        for task in ("models", "publish"):
            measure_wait4([cli, "task", task, "--date", str(d - dt.timedelta(days=1)), "--config", str(cfg)])
        _load_night(workdir / "bench.duckdb", night / "bench.duckdb", until=d, only=d)
        shutil.copy(night / "bench.duckdb", night / "prepared.duckdb")
        nights[label] = (night, cfg, d)
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in nights}
    for rep in range(repeat):
        for label, (night, cfg, d) in nights.items():
            shutil.copy(night / "prepared.duckdb", night / "bench.duckdb")
            total = peak = 0.0
            for task in ("models", "publish"):
                m = measure_wait4([cli, "task", task, "--date", str(d), "--config", str(cfg)])
                total += m["seconds"]
                peak = max(peak, m["peak_mib"])
                if task == "models" and rep == repeat - 1:
                    print(f"{label}: models task {m['seconds']:.1f} s (run {rep + 1})", flush=True)
                    for model, what, secs in BUILT.findall(m["stderr"]):
                        print(f"  {model:<40} {float(secs):7.1f} s  {what}", flush=True)
            runs[label].append((total, peak))
            print(f"run {rep + 1}, {label}: models + publish {total:.1f} s, peak {peak:.0f} MiB", flush=True)
    for night, _, _ in nights.values():
        shutil.rmtree(night)
    (first, early), (last, late) = runs.items()
    ratios = [b[0] / a[0] for a, b in zip(early, late, strict=True)]
    print(f"{'nightly models + publish':38} {'runs, wall s':>24} {'peak MiB':>9}")
    for label, rs in runs.items():
        print(f"{label:38} {', '.join(f'{t:.1f}' for t, _ in rs):>24} {max(p for _, p in rs):9.0f}")
    print(f"ratio {last} / {first} per run: {', '.join(f'{r:.2f}x' for r in ratios)}; median {statistics.median(ratios):.2f}x")


def _load_night(source: Path, target: Path, until: dt.date, only: dt.date | None = None) -> None:
    """Copy the generated events dated up to ``until`` (or only those of ``only``) into ``target``'s raw.events, with
    one load change per business date and its changed (user, date) pairs, as the ingest records them."""
    import duckdb

    from cohortflow.config import load_config
    from cohortflow.warehouse import Warehouse

    if only is None:
        wh = Warehouse(load_config(target.parent / "cohortflow.yml", environ={}))
        wh.bootstrap()
        wh.dispose()
    con = duckdb.connect(str(target))
    con.execute(f"attach '{source}' as src (read_only)")
    low = only or START
    con.execute("insert into raw.events select * from src.raw.events where event_date between ? and ?", [low, until])
    con.execute("detach src")
    first = con.execute("select coalesce(max(change_id), 0) + 1 from meta.change_log").fetchone()[0]
    for i in range((until - low).days + 1):
        d = low + dt.timedelta(days=i)
        con.execute(
            "insert into meta.change_log (change_id, business_date, kind, run_id, created_at) values (?, ?, 'load', 'bench', ?)",
            [first + i, d, dt.datetime.now()],
        )
        con.execute(
            "insert into meta.changed_pairs (change_id, user_id, event_date) "
            "select distinct ?, distinct_id, event_date from raw.events where load_date = ?",
            [first + i, d],
        )
    con.close()


if __name__ == "__main__":
    raise SystemExit(main())

"""Helpers: run a step in a child process and report its wall time and peak memory; the shared steps of the
engine-versus-engine harnesses."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def cleanup_on_sigterm() -> None:
    """A SIGTERM (``timeout``, a scheduler's kill) exits through the ``finally`` blocks, as Ctrl-C does, so that a
    benchmark drops the database or catalog it created instead of leaving it behind."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def measure(code: str, env: dict[str, str] | None = None) -> dict:
    """Run python ``code`` in a fresh interpreter; return seconds, peak RSS (MiB) and its JSON output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step failed:\n{proc.stdout}\n{proc.stderr}")
    # ru_maxrss of children is the max over all children so far: run the largest last or use wait4.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    return {"seconds": seconds, "peak_mib": max(peak, before) / 1024, "out": out}


# A progress line of the models task: "  built models.funnel_user_steps: 3 dates (...): 1,234 rows in 0.8 s".
BUILT = re.compile(r"built (\S+): (.*) in ([0-9.]+) s$", re.M)


def measure_wait4(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a command; its own peak RSS via wait4 (not the max over earlier children)."""
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        t0 = time.perf_counter()
        # Output goes to files, not pipes: a child writing more than a pipe holds would block before wait4 returns.
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out_file, stderr=err_file, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out_file.seek(0)
        err_file.seek(0)
        stdout, stderr = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"step failed: {' '.join(argv)}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
    try:
        out = json.loads(last)
    except json.JSONDecodeError:
        out = {}
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "out": out, "stdout": stdout, "stderr": stderr}


def _tree_memory(root: int, hwm: dict[int, int]) -> int:
    """Resident bytes of ``root`` and all its descendants now (from /proc); updates ``hwm`` with each process's own
    high-water mark (VmHWM, counted from its exec)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status", "rb") as fh:
                fields = dict(line.split(b":", 1) for line in fh.read().splitlines() if b":" in line)
        except OSError:
            continue
        if b"VmRSS" in fields:
            total += int(fields[b"VmRSS"].split()[0]) * 1024
            hwm[pid] = max(hwm.get(pid, 0), int(fields[b"VmHWM"].split()[0]) * 1024)
    return total


def measure_tree(argv: list[str], env: dict[str, str] | None = None, every: float = 0.1) -> dict:
    """Like :func:`measure_wait4`, for a command that starts worker processes: the peak is the largest of the sum of
    the resident memory of the command and its descendants (sampled every ``every`` seconds) and of any one process's
    own high-water mark. (wait4's ru_maxrss is not used: a child's starts from its parent's at the fork.)"""
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out_file, stderr=err_file, text=True)
        peak, hwm = 0, {}
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_memory(proc.pid, hwm))
            time.sleep(every)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out_file.seek(0)
        err_file.seek(0)
        stdout, stderr = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"step failed: {' '.join(argv)}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
    try:
        out = json.loads(last)
    except json.JSONDecodeError:
        out = {}
    peak_mib = max([peak, *hwm.values()]) / 2**20
    return {"seconds": seconds, "peak_mib": peak_mib, "out": out, "stderr": stderr}


# -- the engine-versus-engine harnesses (bench_funnel, bench_retention) ----------------------------------------


def bench_config(workdir: Path, analyses: dict):
    """A canonical-source project in ``workdir/proj`` with the given analyses."""
    from cohortflow.config import load_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import write_config

    path = write_config(workdir / "proj", sources=[{"name": "app", "format": "canonical", "path": "events"}], analyses=analyses)
    return load_config(path, environ={})


def prepare_warehouse(cfg, insert_sql: str, params: dict, start: dt.date, end: dt.date, export_sql: str, parquet: Path) -> None:
    """Fill ``raw.events`` with ``insert_sql`` (DuckDB SQL generating synthetic events), build the staging layer and
    segment membership the models read, and export ``export_sql`` (a query of models.stg_events) to ``parquet`` for
    the reference engine."""
    import sqlalchemy as sa

    from cohortflow.models import build_models
    from cohortflow.warehouse import Warehouse

    wh = Warehouse(cfg)
    wh.bootstrap()
    t0 = time.monotonic()
    with wh.begin() as conn:
        conn.execute(sa.text("delete from raw.events"))
        conn.execute(sa.text(insert_sql), params)
        n = conn.execute(sa.text("select count(*) from raw.events")).scalar()
    build_models(wh, cfg, start, end, exact_range=True, only={"stg_events", "segment_membership_daily"})
    with wh.begin() as conn:
        conn.connection.driver_connection.execute(f"copy ({export_sql}) to '{parquet}' (format parquet)")
    wh.dispose()
    (parquet.parent / "prepared.json").write_text(json.dumps({"events": n}))
    print(f"prepared {n:,} events in {time.monotonic() - t0:.1f}s", flush=True)


def time_model_build(cfg, names: tuple[str, ...], start: dt.date, end: dt.date, result_sql: str, memory_limit: str | None = None):
    """Build ``names`` (a published model and the user-grain model it aggregates) for [start, end] from scratch, as
    an explicit range build runs them; return the build's seconds and the rows of ``result_sql`` read afterwards."""
    import sqlalchemy as sa

    from cohortflow.models import build_models
    from cohortflow.warehouse import Warehouse

    wh = Warehouse(cfg)
    with wh.begin() as conn:
        for name in names:
            conn.execute(sa.text(f"drop table if exists models.{name}"))
        if memory_limit:
            conn.connection.driver_connection.execute(f"set memory_limit = '{memory_limit}'")
    t0 = time.monotonic()
    build_models(wh, cfg, start, end, exact_range=True, only=set(names), dependencies=False)
    seconds = time.monotonic() - t0
    with wh.begin() as conn:
        rows = conn.execute(sa.text(result_sql)).fetchall()
    wh.dispose()
    return seconds, rows


def time_chdb_query(workdir: Path, source: str, table_ddl: str, query: Callable[[str], str]) -> tuple[float, str]:
    """Run ``query(source_table)`` in chdb over the exported Parquet file: from a MergeTree table created with
    ``table_ddl`` (columns and engine of ``default.stg_events``) and loaded beforehand when ``source`` is "table",
    straight from the file when "parquet". Returns the query's seconds and its TSV output."""
    from chdb import session

    parquet = workdir / "stg_events.parquet"
    sess = session.Session(str(workdir / "chdb"))
    if source == "table":
        sess.query("drop table if exists default.stg_events")
        sess.query(f"create table default.stg_events {table_ddl}")
        sess.query(f"insert into default.stg_events select * from file('{parquet}', Parquet)")
        src = "default.stg_events"
    else:
        src = f"file('{parquet}', Parquet)"
    t0 = time.monotonic()
    out = str(sess.query(query(src)))
    seconds = time.monotonic() - t0
    sess.close()
    return seconds, out


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry over the parent's across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_child_result(workdir: Path, child: str, result: dict) -> None:
    """A child process's result (with its own peak memory) for ``compare_engines`` to read."""
    result["peak_rss_mb"] = peak_rss_mb()
    (workdir / f"result-{child}.json").write_text(json.dumps(result))


def _run_line(run: int, runs: int, name: str, result: dict) -> str:
    return f"  run {run}/{runs} {name:13s} {result['seconds']:7.2f}s  peak RSS {result['peak_rss_mb']:,.0f} MB"


def take_turns(runs: int, sides: dict[str, Callable[[], dict]], live: bool = True) -> dict[str, list[dict]]:
    """Run each side ``runs`` times, the sides taking turns (so that a change in the machine's state falls on all of
    them). A side returns at least its "seconds" and "peak_rss_mb"; each run's line is printed as it ends when
    ``live``, else by :func:`print_runs` once the results are checked. Returns each side's results in run order."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for run in range(1, runs + 1):
        for name, side in sides.items():
            results[name].append(side())
            if live:
                print(_run_line(run, runs, name, results[name][-1]), flush=True)
    return results


def print_runs(results: dict[str, list[dict]]) -> None:
    """The lines :func:`take_turns` prints as it goes, after the fact."""
    runs = max(len(rs) for rs in results.values())
    for run in range(runs):
        for name, rs in results.items():
            print(_run_line(run + 1, runs, name, rs[run]))


def print_medians(results: dict[str, list[dict]]) -> dict[str, list[float]]:
    """Each side's median time (min..max) and largest peak memory over its runs; returns each side's times."""
    times = {name: [r["seconds"] for r in rs] for name, rs in results.items()}
    for name, t in times.items():
        peak = max(r["peak_rss_mb"] for r in results[name])
        print(f"{name:13s} median {statistics.median(t):7.2f}s ({min(t):.2f}..{max(t):.2f})  peak RSS {peak:,.0f} MB")
    return times


def print_ratio(times: dict[str, list[float]], side: str, reference: str) -> float:
    """The ratio of ``side``'s median time to ``reference``'s, and run by run; returns the ratio of the medians."""
    by_run = ", ".join(f"{a / b:.2f}" for a, b in zip(times[side], times[reference], strict=True))
    ratio = statistics.median(times[side]) / statistics.median(times[reference])
    print(f"{side} / {reference}: {ratio:.2f} (medians; run by run {by_run})")
    return ratio


def compare_engines(
    script: str, workdir: Path, children: list[str], child_args: list[str], what: str, runs: int = 1
) -> tuple[bool, dict[str, list[float]]]:
    """Run each engine ``runs`` times, each run in its own process (``script --child NAME``), the engines taking
    turns; print every run, then each engine's median time (min..max) and largest peak memory, whether every run of
    every engine gave the same cells, and the ratio of duckdb's median time to each reference's (with the ratio run
    by run). Returns (cells equal, times per engine)."""

    def run_child(child: str) -> dict:
        subprocess.run([sys.executable, script, "--child", child, "--workdir", str(workdir), *child_args], check=True)
        return json.loads((workdir / f"result-{child}.json").read_text())

    results = take_turns(runs, {child: functools.partial(run_child, child) for child in children})
    times = print_medians(results)
    cells = [r["cells"] for rs in results.values() for r in rs]
    same = all(c == cells[0] for c in cells)
    print(f"{what} equal: {same} ({len(cells[0]) if cells else 0} cells, every run of every engine)")
    if "duckdb" in times:
        for ref in children:
            if ref != "duckdb":
                print_ratio(times, "duckdb", ref)
    return same, times


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected user counts separated by commas, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"user counts must be positive, got {text!r}")
    return sizes


def _runs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of runs, 1 or more, got {text!r}")
    return int(text)


def size_arguments(description: str, users: int, days: int, workdir: str | None, workdir_help: str) -> argparse.ArgumentParser:
    """The options of a harness with a scaling curve: ``--users a,b,c``, ``--days``, ``--runs``, ``--workdir``."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=_sizes, default=[users],
                   help=f"users of the generated data; several, separated by commas, for a scaling curve (default {users})")
    p.add_argument("--days", type=int, default=days)
    p.add_argument("--runs", type=_runs, default=3, help="timed runs of each side at each size (default 3)")
    p.add_argument("--workdir", default=workdir, help=workdir_help)
    return p


def engine_arguments(description: str, users: int, workdir: str) -> argparse.ArgumentParser:
    """The options of every engine-versus-engine harness (a harness adds its own before parsing)."""
    p = size_arguments(description, users, 30, workdir, "data of each size in its folder u<users> here")
    p.add_argument("--skip-prepare", action="store_true", help="reuse the data a previous run prepared")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p


def run_engines(
    script: str,
    args: argparse.Namespace,
    prepare: Callable[[Path, int], None],
    child: Callable[[Path], dict],
    children: list[str],
    child_args: list[str],
    what: str,
) -> int:
    """A harness's main step: in a child process (``--child NAME``), run that engine (``child``) and write its
    result; otherwise, at each size of ``--users``, generate the data (``prepare(workdir, users)``) unless
    ``--skip-prepare`` and :func:`compare_engines`; then the scaling table (median times at each size, and their
    growth from the smallest). Exit code 1 when the cells differ at any size."""
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        write_child_result(workdir, args.child, child(workdir))
        return 0
    rows = []
    equal = True
    for users in args.users:
        sized = workdir / f"u{users}"
        sized.mkdir(parents=True, exist_ok=True)
        print(f"== {users:,} users", flush=True)
        if not args.skip_prepare:
            prepare(sized, users)
        same, times = compare_engines(script, sized, children, child_args, what, args.runs)
        equal = equal and same
        prepared = sized / "prepared.json"
        events = json.loads(prepared.read_text())["events"] if prepared.exists() else None
        rows.append((users, events, {c: statistics.median(t) for c, t in times.items()}))
    if len(rows) > 1:
        print_scaling(rows, [("duckdb", c) for c in children if c != "duckdb" and "duckdb" in children])
    return 0 if equal else 1


def print_scaling(rows: list[tuple[int, int | None, dict[str, float]]], ratios: list[tuple[str, str]], unit: str = "events") -> None:
    """The scaling table: per size (``rows``, smallest first: users, events or lines, each side's median seconds) each
    side's median and its growth from the smallest size, and the ratio of the medians of each (side, reference) pair."""
    print("scaling (median seconds; x: growth from the smallest size):")
    base_users, base_count, base = rows[0]
    for users, count, medians in rows:
        grown = f"{count / base_count:.2f}x {unit}" if count and base_count else f"{users / base_users:.2f}x users"
        cells = "  ".join(f"{c} {m:.2f}s ({m / base[c]:.2f}x)" if base[c] else f"{c} {m:.2f}s" for c, m in medians.items())
        ratio = "".join(f"  {a}/{b} {medians[a] / medians[b]:.2f}" if medians[b] else f"  {a}/{b} -" for a, b in ratios)
        print(f"  {users:>9,} users  {count or 0:>12,} {unit} ({grown})  {cells}{ratio}")


def demo_logs(folder: Path, users: int, days: int, fmt: str = "ark") -> tuple[Path, dict]:
    """The demo logs of ``users`` over ``days`` in ``folder/fmt`` (a folder of date folders), generated on first use
    and reused after; their counts ({"events": ..., "lines": ...})."""
    from cohortflow.demo import DemoSpec, generate

    done = folder / "summary.json"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating the demo logs of {users:,} users over {days} days into {folder}", flush=True)
        summary = generate(DemoSpec(users=users, days=days, start_date=dt.date(2026, 11, 1), seed=7, fmt=fmt), folder / fmt)
        done.write_text(json.dumps({"events": summary.events, "lines": summary.lines_written}))
    return folder / fmt, json.loads(done.read_text())


def demo_project(project: Path, logs: Path, fmt: str = "ark") -> Path:
    """A fresh demo project in ``project`` (anything there before is removed) that reads ``logs`` (a folder of date
    folders) in place; the path of its config."""
    import yaml

    from cohortflow.demo_project import write_demo_config

    shutil.rmtree(project, ignore_errors=True)
    cfg_path = write_demo_config(project, fmt)
    data = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    data["landing_root"] = str(logs.resolve().parent)
    data["sources"][0]["path"] = logs.resolve().name
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return cfg_path


def published_tables(cfg_path: Path, env: dict[str, str]) -> dict[str, list[tuple]]:
    """Every published table of a project (``env`` overrides its settings), rows sorted, floats rounded to 9 places:
    what two engines' runs must agree on before any time is printed."""
    from cohortflow.config import load_config
    from cohortflow.models import published_models
    from cohortflow.warehouse import Warehouse

    wh = Warehouse(load_config(cfg_path, environ={**os.environ, **env}))
    out = {}
    try:
        with wh.begin() as conn:
            for model in published_models():
                cols = ", ".join(c.name for c in model.columns)
                rows = wh.execute(conn, f"select {cols} from reports.{model.name}").fetchall()
                out[model.name] = sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr)
    finally:
        wh.dispose()
    return out


_BUILT = re.compile(r"\bbuilt (?:[a-z_]+\.)?([a-z0-9_]+)\b.* in ([0-9.]+) ?s\b")


def model_seconds(output: str) -> dict[str, float]:
    """Each model's build time from a ``cohortflow run``/``rebuild`` output (its "built <table> ... in N s" lines)."""
    out: dict[str, float] = {}
    for line in output.splitlines():
        m = _BUILT.search(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out

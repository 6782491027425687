"""``cohortflow demo``: a ready-to-run project with realistic logs, run night by night."""

from __future__ import annotations

import datetime as dt
import importlib.resources
from collections.abc import Callable
from pathlib import Path

import yaml

from cohortflow.config import load_config
from cohortflow.progress import plural


def write_demo_config(project_dir: Path, fmt: str = "ark", timezone: str | None = None) -> Path:
    """Copy the example config into ``project_dir``, pointed at a source of format ``fmt``."""
    text = importlib.resources.files("cohortflow").joinpath("cohortflow.example.yml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["sources"] = [{"name": "app", "format": fmt, "path": fmt}]
    if timezone:
        data["timezone"] = timezone
    project_dir.mkdir(parents=True, exist_ok=True)
    path = project_dir / "cohortflow.yml"
    header = "# Demo project written by `cohortflow demo`; see cohortflow.example.yml for every key.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def arrival_dates(landing: Path) -> list[dt.date]:
    out = []
    for p in landing.iterdir() if landing.exists() else []:
        try:
            out.append(dt.date.fromisoformat(p.name))
        except ValueError:
            continue
    return sorted(out)


def run_demo(
    project_dir: Path,
    *,
    users: int = 2000,
    days: int = 14,
    start: dt.date = dt.date(2026, 11, 1),
    fmt: str = "ark",
    seed: int = 7,
    run: bool = True,
    echo: Callable[[str], None] = print,
    result: Callable[[str], None] | None = None,
) -> Path:
    """Generate logs into ``project_dir`` and run the nightly workflow for each arrival date.

    ``echo`` gets the progress lines, ``result`` (default: ``echo``) the closing summary.
    """
    import time

    from cohortflow.demo import DemoSpec, generate
    from cohortflow.progress import eta

    result = result or echo

    config_path = write_demo_config(project_dir, fmt)
    cfg = load_config(config_path, environ={})
    landing = cfg.landing_path / fmt
    truth = project_dir / "truth" / "ground_truth.jsonl.gz"
    truth.parent.mkdir(parents=True, exist_ok=True)
    echo(f"generating {plural(users, 'user')} over {plural(days, 'day')} of {fmt} logs into {landing}")
    summary = generate(
        DemoSpec(users=users, days=days, start_date=start, timezone=cfg.timezone, seed=seed, fmt=fmt),
        landing,
        truth_path=truth,
        progress=lambda m: echo(f"  {m}"),
    )
    echo(f"  {summary}")
    if not run:
        echo(f"logs written; run them with: cohortflow run --config {config_path} --date {start}")
        return config_path

    from cohortflow.dag import load_workflows
    from cohortflow.runner import run_workflow
    from cohortflow.warehouse import Warehouse

    wf = load_workflows()["cohortflow_nightly"]
    wh = Warehouse(cfg)
    try:
        dates = arrival_dates(landing)
        t0 = time.monotonic()
        for i, d in enumerate(dates, 1):
            echo(f"== night of business date {d} ({eta(i - 1, len(dates), time.monotonic() - t0, 'nights')})")
            run_workflow(cfg, wh, wf, d, echo=echo)
        result("")
        result(_results_text(wh, cfg, dates[-1]))
    finally:
        wh.dispose()
    result("")
    result(f"config:    {config_path}")
    result(f"warehouse: {cfg.warehouse_url}  (schemas: reports, models, raw, meta)")
    result(f"snapshots: {cfg.target_path / 'snapshots'} (latest: {cfg.target_path / 'snapshots' / 'latest'})")
    result(f"BI copy:   {cfg.target_path / 'published' / 'reports.duckdb'}")
    if cfg.report.enabled:
        result(f"report:    {cfg.target_path / 'reports' / (dates[-1].isoformat() + '.html')} (all dates: {cfg.target_path / 'reports' / 'index.html'})")
    result(f"try:       cohortflow status --config {config_path}")
    return config_path


def _results_text(wh, cfg, last: dt.date) -> str:
    with wh.begin() as conn:
        rows = wh.execute(
            conn,
            "select activity_date, dau, wau, mau, stickiness from reports.active_users_daily "
            "where activity_date <= :last order by activity_date desc limit 7",
            {"last": last},
        ).fetchall()
        ledger = wh.execute(
            conn,
            "select sum(lines_read), sum(events_loaded), sum(duplicates_removed), sum(lines_quarantined) from meta.ingest_ledger",
        ).first()
    lines = ["reports.active_users_daily (latest 7 dates):", "  date          dau    wau    mau  stickiness"]
    for d, dau, wau, mau, st in reversed(rows):
        lines.append(f"  {d}  {dau:5d}  {wau:5d}  {mau:5d}  {st:10.3f}")
    with wh.begin() as conn:
        funnel = wh.execute(
            conn,
            "select step_index, step_event, sum(entered_users), sum(reached_users) from reports.funnel_conversion_daily "
            "where funnel_name = 'signup' and breakdown_value = 'all' and is_complete "
            "group by step_index, step_event order by step_index",
        ).fetchall()
        retention = wh.execute(
            conn,
            "select period_number, sum(retained_users), sum(cohort_users) from reports.retention_cohorts "
            "where retention_name = 'daily_active' and breakdown_value = 'all' and is_complete "
            "and period_number in (1, 3, 7) group by period_number order by period_number",
        ).fetchall()
    if funnel and all(entered for _, _, entered, _ in funnel):
        lines.append("reports.funnel_conversion_daily, signup funnel over complete entry dates:")
        for step, event, entered, reached in funnel:
            lines.append(f"  {step}. {event:<15} {reached:6,d} users  {reached / entered:6.1%} of entered")
    if retention and all(c for _, _, c in retention):
        text = ", ".join(f"day {k}: {r / c:.1%}" for k, r, c in retention)
        lines.append(f"reports.retention_cohorts, daily_active over complete cohorts: {text}")
    lines.append(
        f"all nights: lines read {ledger[0]:,} = loaded {ledger[1]:,} + duplicates {ledger[2]:,} + quarantined {ledger[3]:,}"
    )
    return "\n".join(lines)

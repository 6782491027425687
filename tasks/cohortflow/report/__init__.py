"""The HTML report of a business date: one self-contained file that works offline.

``write_report`` reads the published tables and the run records
(:mod:`cohortflow.report.data`), draws the charts with plotly.js, the copy
bundled in the pinned ``plotly`` package and inlined into the page (no CDN,
no request of any kind), and writes ``<target>/reports/<business date>.html``
with its pages: overview (active users, lifecycle, sessions, top events),
funnels, retention, engagement (frequency → retention, top paths, segments)
and data quality (ingest ledger per file, quarantined lines with samples,
validation results, late data, the run log). ``<target>/reports/index.html``
links every date's report.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cohortflow.config import Config
from cohortflow.warehouse import Warehouse

INDEX = "index.html"


@dataclass(frozen=True)
class ReportResult:
    path: Path
    bytes: int
    data: dict[str, Any]
    charts: dict[str, int]  # chart id -> marks it draws


def reports_dir(cfg: Config) -> Path:
    return cfg.target_path / "reports"


def report_path(cfg: Config, business_date: dt.date) -> Path:
    return reports_dir(cfg) / f"{business_date.isoformat()}.html"


@cache
def plotly_js() -> str:
    """plotly.js as shipped inside the pinned ``plotly`` package."""
    return importlib.resources.files("plotly").joinpath("package_data", "plotly.min.js").read_text(encoding="utf-8")


@cache
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cohortflow.report", "."),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from cohortflow.report import charts

    env.filters["seconds"] = charts.human_seconds
    env.filters["pct"] = charts.pct
    env.filters["num"] = lambda v: "-" if v is None else f"{v:,}"
    return env


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no '</' or '<!--' can end it)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """The page of a report's data, and the marks each chart draws."""
    from cohortflow.report import charts as C
    from cohortflow.snapshots import code_version

    overview = [C.active_users(data["active_users"]), C.lifecycle(data["lifecycle"]), C.sessions(data["sessions"])]
    funnels = [(f, C.funnel_dropoff(i, f), C.funnel_by_date(i, f)) for i, f in enumerate(data["funnels"])]
    retention = [(r, C.retention_curve(i, r)) for i, r in enumerate(data["retention"])]
    frequency = [C.frequency(i, f) for i, f in enumerate(data["frequency"]) if f["buckets"]]
    engagement = [*frequency]
    if data["paths"]["paths"]:
        engagement.append(C.top_paths(data["paths"]))
    if data["segments"]:
        engagement.append(C.segments(data["segments"]))
    q = data["quality"]
    quality = [C.ledger_trend(q["ledger_trend"]), C.late_by_lag(q["late_by_lag"], data["business_date"]), C.late_trend(q["late_trend"])]
    if q["quarantine"]:
        quality.insert(1, C.quarantine_reasons(q["quarantine"]))
    all_charts = [*overview, *(c for _, a, b in funnels for c in (a, b)), *(c for _, c in retention), *engagement, *quality]
    latest = data["active_users"][-1] if data["active_users"] else None
    latest_sessions = data["sessions"][-1] if data["sessions"] else None
    html = _environment().get_template("report.html").render(
        data=data,
        overview=overview,
        funnels=funnels,
        retention=retention,
        engagement=engagement,
        quality=quality,
        latest=latest,
        latest_sessions=latest_sessions,
        version=code_version()["cohortflow"],
        generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        charts_json=_script_json({c.id: {"data": c.figure["data"], "layout": c.figure["layout"]} for c in all_charts}),
        data_json=_script_json(data),
        plotly_js=plotly_js(),
    )
    return html, {c.id: c.marks for c in all_charts}


def write_report(wh: Warehouse, cfg: Config, business_date: dt.date, out: Path | None = None) -> ReportResult:
    """Write the report of ``business_date`` (atomically: a temporary file renamed into place) and the index."""
    from cohortflow.report.data import collect

    data = collect(wh, cfg, business_date)
    html, marks = render_html(data)
    path = out or report_path(cfg, business_date)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, html)
    if out is None:
        write_index(wh, cfg)
    return ReportResult(path, path.stat().st_size, data, marks)


def report_dates(cfg: Config) -> list[dt.date]:
    out = []
    folder = reports_dir(cfg)
    for p in folder.glob("*.html") if folder.is_dir() else []:
        try:
            out.append(dt.date.fromisoformat(p.stem))
        except ValueError:
            continue
    return sorted(out, reverse=True)


def write_index(wh: Warehouse, cfg: Config) -> Path:
    """``reports/index.html``: every date that has a report, newest first, with its headline numbers."""
    dates = report_dates(cfg)
    rows = []
    if dates:
        with wh.begin() as conn:
            au = {
                r[0]: r[1:]
                for r in wh.execute(
                    conn,
                    "select activity_date, dau, wau, mau from reports.active_users_daily where activity_date between :lo and :hi",
                    {"lo": min(dates), "hi": max(dates)},
                ).fetchall()
            }
            ledger = {
                r[0]: r[1:]
                for r in wh.execute(
                    conn,
                    "select load_date, sum(lines_read), sum(lines_quarantined) from meta.ingest_ledger "
                    "where load_date between :lo and :hi group by load_date",
                    {"lo": min(dates), "hi": max(dates)},
                ).fetchall()
            }
        for d in dates:
            a = au.get(d, (None, None, None))
            led = ledger.get(d, (None, None))
            rows.append(
                {
                    "date": d.isoformat(),
                    "href": f"{d.isoformat()}.html",
                    "dau": a[0], "wau": a[1], "mau": a[2],
                    "lines_read": None if led[0] is None else int(led[0]),
                    "quarantined": None if led[1] is None else int(led[1]),
                    "bytes": report_path(cfg, d).stat().st_size,
                }
            )
    html = _environment().get_template("index.html").render(
        project=cfg.project, rows=rows, generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )
    path = reports_dir(cfg) / INDEX
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, html)
    return path


def _write_atomically(path: Path, text: str) -> None:
    """Write under a temporary name and rename into place: a reader sees the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prune_reports(cfg: Config) -> list[Path]:
    """Delete the reports of business dates more than ``report.keep_days`` before the newest one."""
    dates = report_dates(cfg)
    if not dates:
        return []
    cutoff = dates[0] - dt.timedelta(days=cfg.report.keep_days)
    removed = []
    for d in dates:
        if d < cutoff:
            path = report_path(cfg, d)
            path.unlink()
            removed.append(path)
    return removed

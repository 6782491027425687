"""Plotly figures of a report, built from :mod:`cohortflow.report.data`.

Each chart is a :class:`Chart`: a Plotly figure (validated by plotly's
graph objects, shipped as JSON and drawn by the plotly.js that the ``plotly``
package bundles) and ``marks``, the number of data marks (bars and markers)
it must draw, which the browser test counts. Incomplete numbers are drawn
hatched (bars) or dotted (lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

BLUE = "#2563eb"
LIGHT_BLUE = "#93c5fd"
TEAL = "#0d9488"
ORANGE = "#ea580c"
PURPLE = "#7c3aed"
GREY = "#9ca3af"
RED = "#dc2626"
SERIES = (BLUE, TEAL, ORANGE, PURPLE, "#db2777", "#65a30d", "#0891b2", "#a16207")
HATCH = {"shape": "/", "fgcolor": "#ffffff", "size": 6, "solidity": 0.35}

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'Noto Sans CJK SC', sans-serif"


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    figure: dict[str, Any]
    marks: int
    note: str = ""


def _layout(fig: go.Figure, *, height: int = 300, x_title: str = "", y_title: str = "", legend: bool = True) -> None:
    fig.update_layout(
        height=height,
        margin={"l": 64, "r": 24, "t": 16, "b": 48},
        font={"family": FONT, "size": 12, "color": "#1f2937"},
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        hoverlabel={"font": {"family": FONT}},
    )
    fig.update_xaxes(title_text=x_title, showgrid=False, linecolor="#d1d5db", ticks="outside")
    fig.update_yaxes(title_text=y_title, gridcolor="#e5e7eb", zerolinecolor="#d1d5db", rangemode="tozero")


def _json(fig: go.Figure) -> dict[str, Any]:
    return fig.to_plotly_json()


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s:02d} s"
    if seconds < 86400:
        h, m = divmod(int(round(seconds / 60)), 60)
        return f"{h} h {m:02d} min"
    d, h = divmod(int(round(seconds / 3600)), 24)
    return f"{d} d {h} h"


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


# -- activity ----------------------------------------------------------------------------------------------------


def active_users(rows: list[dict]) -> Chart:
    fig = go.Figure()
    dates = [r["date"] for r in rows]
    for key, name, color in (("mau", "MAU (30 days)", GREY), ("wau", "WAU (7 days)", TEAL), ("dau", "DAU", BLUE)):
        fig.add_trace(
            go.Scatter(
                x=dates, y=[r[key] for r in rows], name=name, mode="lines+markers",
                line={"color": color, "width": 2}, marker={"size": 5},
                hovertemplate="%{x}<br>" + name + ": %{y:,d} users<extra></extra>",
            )
        )
    _layout(fig, x_title="Activity date", y_title="Active users")
    fig.update_yaxes(tickformat=",d")
    return Chart("active-users", "Active users: DAU, WAU and MAU", _json(fig), marks=3 * len(rows))


def lifecycle(rows: list[dict]) -> Chart:
    fig = go.Figure()
    dates = [r["date"] for r in rows]
    for state, color, sign in (("new", BLUE, 1), ("returning", TEAL, 1), ("resurrecting", PURPLE, 1), ("dormant", GREY, -1)):
        fig.add_trace(
            go.Bar(
                x=dates, y=[sign * r[state] for r in rows], name=state, marker={"color": color},
                customdata=[r[state] for r in rows],
                hovertemplate="%{x}<br>" + state + ": %{customdata:,d} users<extra></extra>",
            )
        )
    _layout(fig, x_title="Activity date", y_title="Users (dormant below zero)")
    fig.update_layout(barmode="relative", bargap=0.25)
    fig.update_yaxes(tickformat=",d", rangemode="normal")
    return Chart(
        "lifecycle", "Lifecycle: new, returning, resurrecting and dormant users", _json(fig), marks=4 * len(rows),
        note="Dormant users (active the day before, not on the date) are drawn below zero.",
    )


def sessions(rows: list[dict]) -> Chart:
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=[r["date"] for r in rows], y=[r["sessions"] for r in rows], name="sessions", marker={"color": LIGHT_BLUE},
            customdata=[[human_seconds(r["avg_duration_seconds"]), pct(r["bounce_rate"])] for r in rows],
            hovertemplate="%{x}<br>%{y:,d} sessions<br>average %{customdata[0]}, bounce %{customdata[1]}<extra></extra>",
        )
    )
    _layout(fig, x_title="Session date (date of the first event)", y_title="Sessions", legend=False, height=240)
    fig.update_yaxes(tickformat=",d")
    return Chart("sessions", "Sessions per day", _json(fig), marks=len(rows))


# -- funnels -----------------------------------------------------------------------------------------------------


def funnel_dropoff(i: int, funnel: dict) -> Chart:
    steps = funnel["steps"]
    labels = [f"{s['index']}. {s['event']}" for s in steps]
    hatched = funnel["basis"] != "complete"
    colors = [RED if s["is_largest_drop"] else BLUE for s in steps]
    reached = go.Bar(
        x=labels, y=[s["reached"] for s in steps], name="reached the step",
        marker={"color": colors, **({"pattern": HATCH} if hatched else {})},
        customdata=[[pct(s["conversion_from_first"]), pct(s["conversion_from_previous"]), human_seconds(s["median_seconds"])] for s in steps],
        hovertemplate="%{x}<br>%{y:,d} users reached it<br>%{customdata[0]} of entered, %{customdata[1]} of the previous step"
        "<br>median time from step 1: %{customdata[2]}<extra></extra>",
    )
    lost = go.Bar(
        x=labels[1:], y=[s["lost"] for s in steps[1:]], name="lost at the step", marker={"color": "#fecaca"},
        customdata=[pct(s["drop"]) for s in steps[1:]],
        hovertemplate="%{x}<br>%{y:,d} users lost (%{customdata} of the previous step)<extra></extra>",
    )
    fig = go.Figure([reached, lost])
    _layout(fig, x_title="Step", y_title="Users", height=320)
    fig.update_layout(barmode="stack", bargap=0.35)
    fig.update_yaxes(tickformat=",d")
    for s, label in zip(steps, labels, strict=True):
        if s["index"] == 1:
            text = f"{s['reached']:,} entered"
        else:
            text = f"{pct(s['conversion_from_previous'])} of previous · +{human_seconds(s['step_seconds'])}"
            flags = [w for w, on in (("largest drop", s["is_largest_drop"]), ("slowest", s["is_slowest"])) if on]
            if flags:
                text = f"<b>{text}<br>{' and '.join(flags)}</b>"
        fig.add_annotation(
            x=label, y=s["reached"] + s["lost"], text=text, showarrow=False, yshift=14,
            font={"size": 11, "color": RED if (s["is_largest_drop"] or s["is_slowest"]) else "#374151"},
        )
    dates = funnel["entry_dates"]
    note = (
        f"Sum over the {dates['used']} complete entry dates of {dates['start']} .. {dates['end']}."
        if funnel["basis"] == "complete"
        else f"No entry date of {dates['start']} .. {dates['end']} is complete yet: hatched bars are numbers so far."
    )
    note += " Time a step adds: increase of the median time from step 1 (per entry date; the median over the dates, weighted by users)."
    return Chart(f"funnel-{i}", f"Funnel {funnel['name']}: drop-off per step", _json(fig), marks=2 * len(steps) - 1, note=note)


def funnel_by_date(i: int, funnel: dict) -> Chart:
    rows = [r for r in funnel["by_date"] if r["rate"] is not None]
    done = [r for r in rows if r["is_complete"]]
    running = [r for r in rows if not r["is_complete"]]
    fig = go.Figure()
    for part, name, extra in ((done, "complete", {}), (running, "incomplete (window still open)", {"pattern": HATCH})):
        fig.add_trace(
            go.Bar(
                x=[r["date"] for r in part], y=[r["rate"] for r in part], name=name,
                marker={"color": TEAL if not extra else LIGHT_BLUE, **extra},
                customdata=[[r["converted"], r["entered"]] for r in part],
                hovertemplate="%{x}<br>%{y:.1%} converted (%{customdata[0]:,d} of %{customdata[1]:,d})<extra></extra>",
            )
        )
    _layout(fig, x_title="Entry date", y_title="Converted to the last step", height=240)
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(bargap=0.2)
    return Chart(f"funnel-dates-{i}", f"Funnel {funnel['name']}: conversion by entry date", _json(fig), marks=len(rows))


# -- retention ---------------------------------------------------------------------------------------------------


def retention_curve(i: int, definition: dict) -> Chart:
    curve = definition["curve"]
    complete = [c for c in curve if c["rate_complete"] is not None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[c["k"] for c in curve if c["rate_all"] is not None], y=[c["rate_all"] for c in curve if c["rate_all"] is not None],
            name="with running periods (so far)", mode="lines+markers", line={"color": LIGHT_BLUE, "dash": "dot", "width": 2},
            marker={"size": 5}, customdata=[c["cohorts"] for c in curve if c["rate_all"] is not None],
            hovertemplate=definition["period"] + " %{x}: %{y:.1%} over %{customdata} cohorts<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[c["k"] for c in complete], y=[c["rate_complete"] for c in complete], name="complete periods",
            mode="lines+markers", line={"color": BLUE, "width": 2.5}, marker={"size": 6},
            customdata=[c["cohorts_complete"] for c in complete],
            hovertemplate=definition["period"] + " %{x}: %{y:.1%} over %{customdata} complete cohorts<extra></extra>",
        )
    )
    _layout(fig, x_title=f"{definition['period'].capitalize()}s after the cohort {definition['period']}", y_title="Retained users", height=280)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02])
    fig.update_xaxes(dtick=1 if definition["max_period"] <= 16 else None)
    n = sum(1 for c in curve if c["rate_all"] is not None) + len(complete)
    return Chart(f"retention-curve-{i}", f"Retention {definition['name']}: curve", _json(fig), marks=n)


def frequency(i: int, definition: dict) -> Chart:
    buckets = definition["buckets"]
    labels = [b["label"] for b in buckets]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=labels, y=[b["users"] for b in buckets], name="users", marker={"color": "#e5e7eb"}, yaxis="y2",
            hovertemplate="%{x} × " + definition["event"] + ": %{y:,d} users<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=labels, y=[b["rate"] for b in buckets], name="retained", mode="lines+markers",
            line={"color": BLUE, "width": 2.5}, marker={"size": 7},
            customdata=[[b["retained"], b["users"]] for b in buckets],
            hovertemplate="%{x} × " + definition["event"] + ": %{y:.1%} retained (%{customdata[0]:,d} of %{customdata[1]:,d})<extra></extra>",
        )
    )
    _layout(
        fig, x_title=f"{definition['event']} events in the first {definition['first_days']} days",
        y_title=f"Retained (active on day {definition['target_from_day']}-{definition['target_to_day']})", height=300,
    )
    fig.update_layout(
        yaxis={"tickformat": ".0%", "range": [0, 1.02]},
        yaxis2={"overlaying": "y", "side": "right", "title": {"text": "Users"}, "showgrid": False, "tickformat": ",d", "rangemode": "tozero"},
        margin={"r": 64},
    )
    fig.update_xaxes(type="category")
    return Chart(f"frequency-{i}", f"Frequency → retention: {definition['name']}", _json(fig), marks=2 * len(buckets))


# -- paths, segments ---------------------------------------------------------------------------------------------


def top_paths(paths: dict) -> Chart:
    rows = list(reversed(paths["paths"]))

    def label(r: dict) -> str:
        text = r["path"] if len(r["path"]) <= 56 else r["path"][:55] + "…"
        return f"#{r['rank']} {text}"

    fig = go.Figure(
        go.Bar(
            y=[label(r) for r in rows], x=[r["sessions"] for r in rows], orientation="h", marker={"color": TEAL},
            customdata=[[r["path"], r["users"]] for r in rows],
            hovertemplate="%{customdata[0]}<br>%{x:,d} sessions, %{customdata[1]:,d} users<extra></extra>",
        )
    )
    _layout(fig, x_title="Sessions", y_title="", legend=False, height=max(220, 30 * len(rows) + 80))
    fig.update_xaxes(tickformat=",d")
    fig.update_yaxes(automargin=True, tickfont={"size": 11})
    return Chart("top-paths", f"Top paths on {paths['date']}", _json(fig), marks=len(rows))


def segments(items: list[dict]) -> Chart:
    fig = go.Figure()
    marks = 0
    for n, s in enumerate(items):
        fig.add_trace(
            go.Scatter(
                x=[p["date"] for p in s["points"]], y=[p["users"] for p in s["points"]], name=s["name"],
                mode="lines+markers", line={"color": SERIES[n % len(SERIES)], "width": 2}, marker={"size": 5},
                hovertemplate="%{x}<br>" + s["name"] + ": %{y:,d} users<extra></extra>",
            )
        )
        marks += len(s["points"])
    _layout(fig, x_title="As-of date", y_title="Members", height=260)
    fig.update_yaxes(tickformat=",d")
    return Chart("segments", "Segment sizes", _json(fig), marks=marks)


# -- data quality ------------------------------------------------------------------------------------------------


def ledger_trend(rows: list[dict]) -> Chart:
    fig = go.Figure()
    for key, name, color in (("loaded", "loaded", BLUE), ("duplicates", "duplicates removed", GREY), ("quarantined", "quarantined", RED)):
        fig.add_trace(
            go.Bar(
                x=[r["date"] for r in rows], y=[r[key] for r in rows], name=name, marker={"color": color},
                hovertemplate="%{x}<br>" + name + ": %{y:,d} lines<extra></extra>",
            )
        )
    _layout(fig, x_title="Load date (business date of the ingest)", y_title="Lines", height=260)
    fig.update_layout(barmode="stack", bargap=0.25)
    fig.update_yaxes(tickformat=",d")
    return Chart("ledger-trend", "Ingest ledger per load date", _json(fig), marks=3 * len(rows))


def late_by_lag(rows: list[dict], business_date: str) -> Chart:
    fig = go.Figure(
        go.Bar(
            x=[str(r["lag_days"]) for r in rows], y=[r["events"] for r in rows],
            marker={"color": [BLUE if r["lag_days"] <= 0 else ORANGE for r in rows]},
            hovertemplate="%{x} days late: %{y:,d} events<extra></extra>",
        )
    )
    _layout(fig, x_title=f"Days between the event date and the load date {business_date}", y_title="Events loaded", legend=False, height=240)
    fig.update_xaxes(type="category")
    fig.update_yaxes(tickformat=",d")
    return Chart("late-by-lag", "Late data loaded on the business date", _json(fig), marks=len(rows))


def late_trend(rows: list[dict]) -> Chart:
    fig = go.Figure(
        go.Bar(
            x=[r["date"] for r in rows], y=[r["late_events"] / r["events"] if r["events"] else 0 for r in rows],
            marker={"color": ORANGE}, customdata=[[r["late_events"], r["events"]] for r in rows],
            hovertemplate="%{x}<br>%{y:.1%} late (%{customdata[0]:,d} of %{customdata[1]:,d} events)<extra></extra>",
        )
    )
    _layout(fig, x_title="Load date", y_title="Late share of events", legend=False, height=220)
    fig.update_yaxes(tickformat=".0%")
    return Chart("late-trend", "Late-data volume per load date", _json(fig), marks=len(rows))


def quarantine_reasons(rows: list[dict]) -> Chart:
    rows = list(reversed(rows))
    fig = go.Figure(
        go.Bar(
            y=[r["reason"] for r in rows], x=[r["lines"] for r in rows], orientation="h", marker={"color": RED},
            hovertemplate="%{y}: %{x:,d} lines<extra></extra>",
        )
    )
    _layout(fig, x_title="Quarantined lines", y_title="", legend=False, height=max(160, 32 * len(rows) + 70))
    fig.update_xaxes(tickformat=",d")
    fig.update_layout(margin={"l": 150})
    return Chart("quarantine-reasons", "Quarantined lines by reason", _json(fig), marks=len(rows))

"""A number published as complete never changes on a later night.

Nights are replayed one by one on generated data whose late events, and identity links, stay inside the configured
late-arrival window: events arrive up to 2 days after they happened, links up to 2 days after the login, and an
anonymous history starts at most a day before its link (``late_arrival_days`` is 3). Every row published with
``is_complete = true`` must be published with the same values every night after.
"""

from __future__ import annotations

import datetime as dt
import json
import random

from cohortflow.dag import load_workflows
from cohortflow.models import published_models
from cohortflow.runner import run_workflow
from tests.conftest import short_analyses

START = dt.date(2026, 11, 1)
NIGHTS = 14
LATE = 3
NAMES = ["app_start", "view_item", "add_to_cart", "checkout", "pay_order", "signup_start", "signup_submit", "signup_verify", "signup_done"]


def generate(landing, seed: int = 5, people: int = 120) -> None:
    rng = random.Random(seed)
    arrivals: dict[dt.date, list[dict]] = {START + dt.timedelta(days=i): [] for i in range(NIGHTS)}
    n = 0

    def emit(distinct: str, name: str, when: dt.datetime, delay_days: int, **extra) -> None:
        nonlocal n
        n += 1
        arrival = min(when.date() + dt.timedelta(days=delay_days), START + dt.timedelta(days=NIGHTS - 1))
        arrivals[arrival].append(
            {"event_id": f"e{n}", "event_name": name, "distinct_id": distinct, "event_time": when.isoformat(timespec="milliseconds") + "Z", **extra}
        )

    for p in range(people):
        login, anon = f"u{p}", f"x{p}"
        first = rng.randrange(NIGHTS)
        link_day = first + rng.choice([0, 1]) if rng.random() < 0.5 else None
        for day in range(first, NIGHTS):
            if rng.random() < 0.45 and day != first:
                continue
            date = START + dt.timedelta(days=day)
            distinct = anon if link_day is not None and day < link_day else (login if link_day is not None else anon)
            for _ in range(rng.randint(1, 6)):
                when = dt.datetime.combine(date, dt.time()) + dt.timedelta(seconds=rng.randrange(86400))
                delay = rng.choice([0, 0, 0, 0, 1, 2])
                name = rng.choice(NAMES)
                emit(distinct, name, when, delay, properties={"amount": rng.choice([20, 80])} if name == "pay_order" else {})
            if link_day is not None and day == link_day:
                when = dt.datetime.combine(date, dt.time(23, 0))
                emit(login, "$identify", when, rng.choice([0, 1, 2]), is_activity=False, link_anonymous_id=anon, link_login_id=login)
    for day, rows in arrivals.items():
        folder = landing / day.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


KEYS = {
    "active_users_daily": ("activity_date",),
    "funnel_conversion_daily": ("funnel_name", "entry_date", "breakdown_value", "step_index"),
    "retention_cohorts": ("retention_name", "cohort_date", "breakdown_value", "period_number"),
    "frequency_retention": ("frequency_name", "cohort_week", "is_overall", "frequency_bucket"),
}


def complete_rows(wh) -> dict[tuple, tuple]:
    out = {}
    models = {m.name: m for m in published_models()}
    with wh.begin() as conn:
        for name, keys in KEYS.items():
            # as_of_date says when the table was computed, not what it counts
            cols = [c.name for c in models[name].columns if c.name != "as_of_date"]
            for row in wh.execute(conn, f"select {', '.join(cols)} from reports.{name} where is_complete").fetchall():
                values = dict(zip(cols, row, strict=True))
                key = (name, *(values[k] for k in keys))
                out[key] = tuple(round(v, 9) if isinstance(v, float) else v for v in row)
    return out


def test_no_cell_published_as_complete_changes_later(make_project, engine):
    analyses = short_analyses()
    analyses["retention"][0]["horizon"] = 5
    project = make_project(
        engine,
        sources=[{"name": "app", "format": "canonical", "path": "events"}],
        ingest={"late_arrival_days": LATE, "lookback_days": LATE},
        analyses=analyses,
    )
    generate(project.root / "landing" / "events")
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    final: dict[tuple, tuple] = {}
    try:
        for i in range(NIGHTS):
            run_workflow(cfg, wh, wf, START + dt.timedelta(days=i), echo=lambda _m: None)
            now = complete_rows(wh)
            for key, row in final.items():
                assert now.get(key) == row, f"night {i + 1}: {key} was published complete as {row}, now {now.get(key)}"
            final.update(now)
    finally:
        wh.dispose()
    kinds = {key[0] for key in final}
    assert kinds >= {"active_users_daily", "funnel_conversion_daily", "retention_cohorts"}, kinds

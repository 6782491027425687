"""The HTML report of a demo run, opened in a real headless Chromium; and what its funnel data shows.

* every page renders with no console error, no page error and no request
  but the file itself, and every chart draws exactly its number of marks
  (bars and markers), which are also checked against the published tables;
* the data-quality page shows the quarantined lines by reason, with their
  sample lines as text (a line holding markup is shown, never run);
* a demo whose sign-up funnel loses half its users at one step, which takes
  minutes, gives a report whose funnel data names that step as both the
  largest drop and the slowest step.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
import yaml

from cohortflow.config import load_config
from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.demo_project import arrival_dates, run_demo, write_demo_config
from cohortflow.report import report_path, write_report
from cohortflow.report.data import FUNNEL_ENTRY_DAYS, RETENTION_COHORTS
from cohortflow.runner import run_workflow
from cohortflow.warehouse import Warehouse
from tests.e2e.browser import PAGES, open_report

START = dt.date(2026, 11, 1)
DAYS = 10
LAST = START + dt.timedelta(days=DAYS - 1)
WF = load_workflows()["cohortflow_nightly"]
# A quarantined line that holds markup: the report must show it as text.
MARKUP_LINE = '{"appid": "demo-app", "xwho": "<script>alert(1)</script>", "xwhat": "app_start", "xwhen": "soon"}'


# Two more funnels and one more retention definition than the example config: five and three in all, the number a
# report must show without clutter.
MORE_FUNNELS = [
    {"name": "search_to_cart", "steps": [{"event": "search"}, {"event": "view_item"}, {"event": "add_to_cart"}],
     "window_seconds": 3600, "breakdown": "$platform"},
    {"name": "share_after_view", "steps": [{"event": "view_item"}, {"event": "share"}], "window_seconds": 86400,
     "mode": "strictly_increasing"},
]
# The example's frequency definition needs 14 days of history; this one has users in the 10 days of the demo.
MORE_FREQUENCY = [{"name": "views_first_days", "event": "view_item", "first_days": 3, "target_from_day": 3,
                   "target_to_day": 5, "cap": 5}]
MORE_RETENTION = [{"name": "searchers", "start": {"event": "search"}, "return": {"event": "search"}, "period": "day",
                   "horizon": 14, "cohort_type": "recurring"}]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo project (the example config with 5 funnels and 3 retention definitions, Ark logs), with one extra file
    of bad lines on the last date, run night by night."""
    root = tmp_path_factory.mktemp("report-demo")
    config_path = run_demo(root / "demo", users=300, days=DAYS, start=START, run=False, echo=lambda _m: None)
    spec = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    spec["analyses"]["funnels"] += MORE_FUNNELS
    spec["analyses"]["retention"] += MORE_RETENTION
    spec["analyses"]["frequency_retention"] += MORE_FREQUENCY
    config_path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    cfg = load_config(config_path, environ={})
    assert len(cfg.analyses.funnels) == 5 and len(cfg.analyses.retention) == 3
    extra = cfg.landing_path / "ark" / LAST.isoformat() / "zz-bad.jsonl"
    extra.write_text("\n".join([MARKUP_LINE, "not json at all", '{"xwho": "u1"}']) + "\n", encoding="utf-8")
    wh = Warehouse(cfg)
    try:
        for d in arrival_dates(cfg.landing_path / "ark"):
            run_workflow(cfg, wh, WF, d, echo=lambda _m: None)
    finally:
        wh.dispose()
    return cfg


def _scalar(cfg, sql, params=None):
    wh = Warehouse(cfg)
    try:
        with wh.begin() as conn:
            return wh.execute(conn, sql, params or {}).fetchall()
    finally:
        wh.dispose()


def test_publish_wrote_the_report_and_the_index(demo):
    path = report_path(demo, LAST)
    assert path.is_file() and (path.parent / "index.html").is_file()
    index = (path.parent / "index.html").read_text(encoding="utf-8")
    for i in range(DAYS):
        assert f'href="{(START + dt.timedelta(days=i)).isoformat()}.html"' in index
    html = path.read_text(encoding="utf-8")
    assert "<script src=" not in html and "<link " not in html, "the report loads nothing from outside"
    assert re.search(r"plotly\.js v\d", html), "plotly.js is inlined"


def test_report_renders_in_chromium_with_every_mark_and_no_network(demo):
    path = report_path(demo, LAST)
    drawn = {}
    with open_report(path) as visit:
        for name in PAGES:
            visit.show(name)
            marks = visit.marks(name)
            visit.screenshot(f"report-{name}")
            for chart, (want, got) in marks.items():
                assert want > 0, f"{name}/{chart} has nothing to draw"
                assert got == want, f"{name}/{chart}: drew {got} marks, expected {want}"
            drawn.update({k: v[0] for k, v in marks.items()})
        heat = visit.page.evaluate(
            "[...document.querySelectorAll('table.heat')].map(t => [Number(t.dataset.cells), t.querySelectorAll('td.cell').length,"
            " t.querySelectorAll('td.cell.incomplete').length])"
        )
        summary = visit.page.evaluate("[...document.querySelectorAll('#funnel-summary tbody tr')].length")
        visit.show("retention")
        retention_summary = visit.page.evaluate("[...document.querySelectorAll('#retention-summary tbody tr')].length")
        console_errors = [m for m in visit.console if m[0] in ("error", "warning")]
        assert not console_errors, console_errors
        assert not visit.errors, visit.errors
        assert {r.split("#")[0] for r in visit.requests} == {visit.url}, visit.requests
    assert summary == 5 and retention_summary == 3, "one summary line per funnel and retention definition"
    # The marks match the published tables.
    lo = LAST - dt.timedelta(days=demo.report.history_days - 1)
    days = _scalar(demo, "select count(*) from reports.active_users_daily where activity_date between :lo and :hi", {"lo": lo, "hi": LAST})[0][0]
    assert drawn["active-users"] == 3 * days and drawn["lifecycle"] == 4 * days
    for i, funnel in enumerate(demo.analyses.funnels):
        assert drawn[f"funnel-{i}"] == 2 * len(funnel.steps) - 1
        entered = _scalar(
            demo,
            "select count(*) from reports.funnel_conversion_daily where funnel_name = :f and breakdown_value = 'all' "
            "and step_index = 1 and entered_users > 0 and entry_date between :lo and :hi",
            {"f": funnel.name, "lo": LAST - dt.timedelta(days=FUNNEL_ENTRY_DAYS - 1), "hi": LAST},
        )[0][0]
        assert drawn[f"funnel-dates-{i}"] == entered
    assert len(heat) == len(demo.analyses.retention)
    hatched = 0
    for (want, got, incomplete), definition in zip(heat, demo.analyses.retention, strict=True):
        cohorts = _scalar(
            demo,
            "select cohort_date, count(*), sum(case when is_complete then 0 else 1 end) from reports.retention_cohorts "
            "where retention_name = :r and breakdown_value = 'all' group by cohort_date order by cohort_date",
            {"r": definition.name},
        )[-RETENTION_COHORTS[definition.period]:]
        assert want == got == sum(n for _, n, _ in cohorts), definition.name
        assert incomplete == sum(k for _, _, k in cohorts), "every incomplete cell, and only those, is drawn hatched"
        hatched += incomplete
    assert hatched > 0
    quarantine_reasons = _scalar(demo, "select count(distinct reason) from raw.quarantine where load_date = :d", {"d": LAST})[0][0]
    assert drawn["quarantine-reasons"] == quarantine_reasons


def test_data_quality_page_shows_the_quarantined_lines(demo):
    want = dict(_scalar(demo, "select reason, count(*) from raw.quarantine where load_date = :d group by reason", {"d": LAST}))
    ledger = _scalar(demo, "select ingest_file, lines_quarantined from meta.ingest_ledger where load_date = :d", {"d": LAST})
    with open_report(report_path(demo, LAST)) as visit:
        visit.show("quality")
        visit.screenshot("report-quality-quarantine")
        rows = visit.page.evaluate(
            "[...document.querySelectorAll('#quarantine tr.reason')].map(tr => [tr.cells[0].innerText.trim(),"
            " Number(tr.cells[1].innerText.replace(/,/g, '')), [...tr.querySelectorAll('pre.sample')].map(p => p.innerText)])"
        )
        ledger_files = visit.page.evaluate("[...document.querySelectorAll('#ledger tbody tr')].map(tr => tr.cells[1].innerText)")
        samples_in_dom = visit.page.evaluate("document.querySelectorAll('#quarantine script').length")
        assert not visit.errors and not visit.dialogs, (visit.errors, visit.dialogs)
        marks = visit.marks("quality")
    assert {r: n for r, n, _ in rows} == want
    assert all(1 <= len(samples) <= 3 for _, _, samples in rows)
    shown = [s for _, _, samples in rows for s in samples]
    assert MARKUP_LINE in shown, "the quarantined line is shown as its text"
    assert samples_in_dom == 0, "markup in a quarantined line is never run"
    assert "zz-bad.jsonl" in " ".join(ledger_files) and len(ledger_files) == len(ledger) + 1  # + the total row
    assert marks["quarantine-reasons"] == (len(want), len(want))


@pytest.fixture(scope="module")
def slow_step_demo(tmp_path_factory):
    """A demo whose sign-up funnel loses half of its users at signup_verify, which takes ten times longer."""
    root = tmp_path_factory.mktemp("slow-step")
    config_path = write_demo_config(root)
    cfg = load_config(config_path, environ={})
    spec = DemoSpec(users=400, days=DAYS, start_date=START, timezone=cfg.timezone, seed=3,
                    funnel_conversion=(0.9, 0.5, 0.9), funnel_time_factor=(1.0, 10.0, 1.0))
    generate(spec, cfg.landing_path / "ark")
    wh = Warehouse(cfg)
    try:
        for d in arrival_dates(cfg.landing_path / "ark"):
            run_workflow(cfg, wh, WF, d, echo=lambda _m: None)
        result = write_report(wh, cfg, LAST)
    finally:
        wh.dispose()
    return result


def test_the_lossy_slow_step_stands_out(slow_step_demo):
    embedded = re.search(r'<script id="report-data" type="application/json">(.*?)</script>',
                         slow_step_demo.path.read_text(encoding="utf-8"), re.S)
    data = json.loads(embedded.group(1))
    assert data == json.loads(json.dumps(slow_step_demo.data, default=str)), "the page carries the data it was built from"
    signup = next(f for f in data["funnels"] if f["name"] == "signup")
    steps = {s["event"]: s for s in signup["steps"]}
    verify = steps["signup_verify"]
    assert signup["largest_drop_step"] == verify["index"] == 3
    assert signup["slowest_step"] == 3
    assert verify["is_largest_drop"] and verify["is_slowest"]
    assert 0.35 < verify["drop"] < 0.65, "about half the users are lost at the step"
    assert verify["step_seconds"] >= 60, "the step takes minutes"
    others = [s for s in signup["steps"] if s["index"] not in (1, 3)]
    assert all(s["step_seconds"] < verify["step_seconds"] and s["drop"] < verify["drop"] / 2 for s in others)
    charts = json.loads(re.search(r'<script id="charts" type="application/json">(.*?)</script>',
                                  slow_step_demo.path.read_text(encoding="utf-8"), re.S).group(1))
    i = [f["name"] for f in data["funnels"]].index("signup")
    labels = {a["x"]: a["text"] for a in charts[f"funnel-{i}"]["layout"]["annotations"]}
    assert "largest drop and slowest" in labels["3. signup_verify"], labels
    assert "largest drop" not in labels["2. signup_submit"] + labels["4. signup_done"]
    colors = charts[f"funnel-{i}"]["data"][0]["marker"]["color"]
    assert colors[2] != colors[1] and colors[1] == colors[3], "the largest drop's bar stands out"


def test_breakdown_rows_add_up_to_the_all_rows_as_documented(demo):
    """What docs/reference.md says of the 'all' rows holds on the demo's tables (5 funnels, 3 retention definitions)."""
    funnel_gaps = _scalar(
        demo,
        """
        with parts as (
            select funnel_name, entry_date, step_index,
                   sum(case when breakdown_value = 'all' then entered_users else 0 end) as all_entered,
                   sum(case when breakdown_value = 'all' then reached_users else 0 end) as all_reached,
                   sum(case when breakdown_value <> 'all' then entered_users else 0 end) as split_entered,
                   sum(case when breakdown_value <> 'all' then reached_users else 0 end) as split_reached,
                   count(*) as n
            from reports.funnel_conversion_daily group by funnel_name, entry_date, step_index
        )
        select * from parts where n > 1 and (all_entered <> split_entered or all_reached <> split_reached)
        """,
    )
    assert funnel_gaps == []
    retention_gaps = _scalar(
        demo,
        """
        with parts as (
            select retention_name, cohort_date, period_number,
                   sum(case when breakdown_value = 'all' then cohort_users else 0 end) as all_cohort,
                   sum(case when breakdown_value = 'all' then retained_users else 0 end) as all_retained,
                   sum(case when breakdown_value <> 'all' then cohort_users else 0 end) as split_cohort,
                   sum(case when breakdown_value <> 'all' then retained_users else 0 end) as split_retained,
                   count(*) as n
            from reports.retention_cohorts group by retention_name, cohort_date, period_number
        )
        select * from parts where n > 1 and (all_cohort <> split_cohort or all_retained <> split_retained)
        """,
    )
    assert retention_gaps == []
    split = _scalar(demo, "select count(distinct funnel_name) from reports.funnel_conversion_daily where breakdown_value <> 'all'")
    assert split[0][0] >= 3, "the demo has funnels with breakdowns"
    frequency_gaps = _scalar(
        demo,
        """
        select o.frequency_name, o.frequency_bucket from reports.frequency_retention as o
        join (select frequency_name, frequency_bucket, sum(users) as users, sum(retained_users) as retained
              from reports.frequency_retention where not is_overall group by frequency_name, frequency_bucket) as w
          on w.frequency_name = o.frequency_name and w.frequency_bucket = o.frequency_bucket
        where o.is_overall and (o.users <> w.users or o.retained_users <> w.retained)
        """,
    )
    assert frequency_gaps == []
    weekly = _scalar(demo, "select count(*) from reports.frequency_retention where not is_overall and users > 0")
    assert weekly[0][0] > 0, "the check above compared real rows"
    for funnel in demo.analyses.funnels:
        if funnel.breakdown is None and funnel.breakdown_segment is None:
            only_all = _scalar(
                demo, "select count(*) from reports.funnel_conversion_daily where funnel_name = :f and breakdown_value <> 'all'",
                {"f": funnel.name},
            )
            assert only_all[0][0] == 0, f"{funnel.name} has no breakdown: only 'all' rows"

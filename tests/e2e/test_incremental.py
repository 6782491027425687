"""Incremental nights equal a full rebuild, on data with late events and late aliases (both engines)."""

from __future__ import annotations

import datetime as dt

from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.contract import published_tables
from cohortflow.models import published_models
from cohortflow.runner import rebuild_range, run_workflow
from tests.conftest import short_analyses

START = dt.date(2026, 11, 1)
DAYS = 10


def _published(wh) -> dict[str, list[tuple]]:
    out = {}
    with wh.begin() as conn:
        for model in published_models():
            # Every column of the published table (the contract's: the model's and those added at publish).
            cols = ", ".join(c.name for c in published_tables()[model.name].columns)
            rows = wh.execute(conn, f"select {cols} from reports.{model.name}").fetchall()
            out[model.name] = sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr)
    return out


def test_incremental_nights_equal_a_full_rebuild(make_project, engine):
    project = make_project(engine, timezone="America/New_York", analyses=short_analyses())
    summary = generate(
        DemoSpec(users=400, days=DAYS, start_date=START, timezone="America/New_York", seed=6), project.landing
    )
    assert summary.late_events > 0 and summary.late_links > 0, "the data must have late events and late aliases"
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    try:
        for d in dates:
            run_workflow(cfg, wh, wf, d, echo=lambda _m: None)
        nightly = _published(wh)
        rebuild_range(cfg, wh, START, dates[-1], echo=lambda _m: None)
        full = _published(wh)
    finally:
        wh.dispose()
    for name in nightly:
        assert nightly[name], f"{name} is empty"
        assert nightly[name] == full[name], f"reports.{name}: incremental nights differ from a full rebuild"


def test_a_partial_rebuild_rebuilds_the_activity_history(make_project):
    """Rebuilding only the last days still rebuilds the activity history (user_activity_daily) from the first event:
    with that table lost, first-time cohorts and lifecycle states come out as the nightly runs made them."""
    project = make_project("duckdb", analyses=short_analyses())
    generate(DemoSpec(users=150, days=6, start_date=START, seed=11), project.landing)
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    dates = [START + dt.timedelta(days=i) for i in range(6)]
    try:
        for d in dates:
            run_workflow(cfg, wh, wf, d, echo=lambda _m: None)
        nightly = _published(wh)
        with wh.begin() as conn:
            wh.execute(conn, "drop table models.user_activity_daily")
        rebuild_range(cfg, wh, dates[-2], dates[-1], echo=lambda _m: None)
        with wh.begin() as conn:
            first = wh.scalar(conn, "select min(activity_date) from models.user_activity_daily")
            first_event = wh.scalar(conn, "select min(event_date) from models.stg_events where is_activity")
        rebuilt = _published(wh)
    finally:
        wh.dispose()
    assert first == first_event < dates[-2]
    for name in ("retention_cohorts", "lifecycle_daily", "active_users_daily"):
        assert nightly[name], f"{name} is empty"
        assert rebuilt[name] == nightly[name], f"reports.{name} differs after a partial rebuild"


def test_an_analysis_not_defined_is_built_empty_until_it_is(make_project, engine):
    """A model declaring ``empty_without: <definition table>`` is kept empty without running its SQL while nothing is
    defined there. The declaration is true (its SQL, run over the same events, gives no rows), and once the
    analyses are defined the nights that follow publish what a full rebuild does."""
    from cohortflow.analyses import model_params
    from cohortflow.models import load_models
    from tests.conftest import build_fresh, write_config

    analyses = short_analyses()
    bare = {k: v for k, v in analyses.items() if k not in ("funnels", "retention", "segments")}
    project = make_project(engine, analyses=bare)
    generate(DemoSpec(users=150, days=5, start_date=START, seed=3), project.landing)
    wf = load_workflows()["cohortflow_nightly"]
    dates = [START + dt.timedelta(days=i) for i in range(5)]
    declared = {m.name for m in load_models().values() if m.empty_without}
    assert declared == {
        "segment_membership_daily", "segment_size_daily", "funnel_user_steps", "funnel_conversion_daily",
        "retention_user_cohorts", "retention_cohorts",
    }
    cfg, wh = project.config(), project.warehouse()
    try:
        for d in dates[:4]:
            run_workflow(cfg, wh, wf, d, echo=lambda _m: None)
        with wh.begin() as conn:
            kept = {name: wh.scalar(conn, f"select count(*) from models.{name}") for name in declared}
            state = {r[0] for r in wh.execute(conn, "select model_name from meta.model_state").fetchall()}
        assert kept == dict.fromkeys(declared, 0)
        assert declared <= state, "the empty models are caught up like the others"
        with wh.begin() as conn:
            params = {**model_params(cfg), "start_date": START, "end_date": dates[3], "first_date": START}
            build_fresh(wh, conn, params, declared)
            ran = {name: wh.scalar(conn, f"select count(*) from models.{name}") for name in declared}
        assert ran == dict.fromkeys(declared, 0), "a model declared empty without its definitions has rows without them"
    finally:
        wh.dispose()
    write_config(project.root, analyses=analyses)
    cfg, wh = project.config(), project.warehouse()
    try:
        run_workflow(cfg, wh, wf, dates[4], echo=lambda _m: None)
        nightly = _published(wh)
        rebuild_range(cfg, wh, START, dates[4], echo=lambda _m: None)
        full = _published(wh)
    finally:
        wh.dispose()
    for name in ("funnel_conversion_daily", "retention_cohorts", "segment_size_daily"):
        assert nightly[name], f"{name} is empty once defined"
    assert nightly == full


def test_a_whole_rebuild_republishes_what_it_rebuilt(make_project):
    """Published rows that differ from a full rebuild (here: rows lost from a model and from its published table, as
    a faulty build would leave them) are replaced by ``rebuild`` without a range, although every model was already
    built through the last change."""
    project = make_project("duckdb", analyses=short_analyses())
    generate(DemoSpec(users=120, days=3, start_date=START, seed=5), project.landing)
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    try:
        for i in range(3):
            run_workflow(cfg, wh, wf, START + dt.timedelta(days=i), echo=lambda _m: None)
        clean = _published(wh)
        with wh.begin() as conn:
            for table in ("models.event_metrics_daily", "reports.event_metrics_daily"):
                wh.execute(conn, f"delete from {table} where event_date = :d", {"d": START})
        assert _published(wh)["event_metrics_daily"] != clean["event_metrics_daily"]
        rebuild_range(cfg, wh, echo=lambda _m: None)
        rebuilt = _published(wh)
    finally:
        wh.dispose()
    assert clean["event_metrics_daily"] and rebuilt == clean

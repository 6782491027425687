"""What operators do to a project, case by case: reruns, typos, backfills, late days, overlapping sources.

Each case ends with the published tables compared with a full rebuild of a copy of the warehouse (the invariant
the state-machine test checks on random sequences), plus the case's own expectation.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.dag import load_workflows
from cohortflow.runner import TaskFailed, rebuild_range, run_workflow
from tests.conftest import short_analyses
from tests.e2e.reference import full_rebuild, published

D = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(10)]
WF = load_workflows()["cohortflow_nightly"]
QUIET = {"echo": lambda _m: None}


def event(eid: str, user: str, when: dt.datetime, name: str = "app_start", **extra) -> dict:
    return {"event_id": eid, "event_name": name, "distinct_id": user, "event_time": when.isoformat() + "Z", **extra}


def at(day: dt.date, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute))


def write(project, day: dt.date, rows: list[dict], source: str = "events") -> None:
    folder = project.root / "landing" / source / day.isoformat()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def canonical_project(make_project, engine, **overrides):
    settings = {
        "sources": [{"name": "app", "format": "canonical", "path": "events"}],
        "ingest": {"lookback_days": 3, "late_arrival_days": 3},
        "analyses": short_analyses(),
        **overrides,
    }
    return make_project(engine, **settings)


def dau(wh) -> dict[dt.date, int]:
    with wh.begin() as conn:
        return {r[0]: r[1] for r in wh.execute(conn, "select activity_date, dau from reports.active_users_daily").fetchall()}


def test_a_rerun_whose_input_lost_late_events_updates_the_earlier_dates(make_project, engine):
    project = canonical_project(make_project, engine)
    cfg, wh = project.config(), project.warehouse()
    for i, day in enumerate(D[:4]):
        write(project, day, [event(f"d{i}-{u}", f"u{u}", at(day)) for u in range(5)])
    late = [event(f"late-{i}", f"late{i}", at(D[i], 20)) for i in (1, 2)]
    write(project, D[3], [event(f"d3-{u}", f"u{u}", at(D[3])) for u in range(5)] + late)
    try:
        for day in D[:4]:
            run_workflow(cfg, wh, WF, day, **QUIET)
        assert [dau(wh)[d] for d in D[:4]] == [5, 6, 6, 5]
        # Some late events of the last file were wrong: the file is corrected and the date rerun.
        write(project, D[3], [event(f"d3-{u}", f"u{u}", at(D[3])) for u in range(5)] + late[1:])
        run_workflow(cfg, wh, WF, D[3], resume=False, **QUIET)
        assert [dau(wh)[d] for d in D[:4]] == [5, 5, 6, 5]
        assert published(wh) == full_rebuild(project, wh)
    finally:
        wh.dispose()


@pytest.mark.parametrize("typo", ["landing_root", "source_path", "date_folder"])
def test_missing_input_fails_the_ingest_and_deletes_nothing(make_project, typo):
    project = canonical_project(make_project, "duckdb")
    for i, day in enumerate(D[:2]):
        write(project, day, [event(f"d{i}-{u}", f"u{u}", at(day)) for u in range(4)])
    cfg, wh = project.config(), project.warehouse()
    for day in D[:2]:
        run_workflow(cfg, wh, WF, day, **QUIET)
    before = published(wh)
    with wh.begin() as conn:
        loaded = wh.scalar(conn, "select count(*) from raw.events where load_date = :d", {"d": D[1]})
    wh.dispose()
    config = project.config_path
    text = config.read_text(encoding="utf-8")
    if typo == "landing_root":
        config.write_text(text + "landing_root: landig\n", encoding="utf-8")
        setting = "landing_root"
    elif typo == "source_path":
        config.write_text(text.replace("path: events", "path: evnets"), encoding="utf-8")
        setting = "sources.0.path"
    else:
        shutil.rmtree(project.root / "landing" / "events" / D[1].isoformat())
        setting = "sources.0.path"
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--date", D[1].isoformat(), "--restart"])
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if "does not exist" in line]
    assert error and setting in error[0], result.output
    wh = project.warehouse()
    try:
        assert published(wh) == before, "a missing folder must publish nothing"
        with wh.begin() as conn:
            assert wh.scalar(conn, "select count(*) from raw.events where load_date = :d", {"d": D[1]}) == loaded
    finally:
        wh.dispose()


def test_an_empty_day_is_an_existing_empty_folder_or_an_optional_source(make_project):
    project = canonical_project(
        make_project,
        "duckdb",
        sources=[
            {"name": "app", "format": "canonical", "path": "events"},
            {"name": "web", "format": "canonical", "path": "web", "optional": True},
        ],
    )
    write(project, D[0], [event("a", "u1", at(D[0]))])
    (project.root / "landing" / "events" / D[1].isoformat()).mkdir(parents=True)
    cfg, wh = project.config(), project.warehouse()
    try:
        for day in D[:2]:
            run_workflow(cfg, wh, WF, day, **QUIET)
        assert dau(wh) == {D[0]: 1, D[1]: 0}
    finally:
        wh.dispose()


def test_backfill_and_rebuild_of_past_dates_never_roll_the_published_tables_back(make_project, engine):
    from cohortflow.demo import DemoSpec, generate

    project = make_project(engine, analyses=short_analyses())
    generate(DemoSpec(users=150, days=8, start_date=D[0], seed=3), project.landing)
    cfg, wh = project.config(), project.warehouse()
    try:
        for day in D[:8]:
            run_workflow(cfg, wh, WF, day, **QUIET)
        latest = published(wh)
        assert latest["frequency_retention"] and latest["retention_cohorts"]
        for day in D[2:5]:  # a backfill of past dates
            run_workflow(cfg, wh, WF, day, resume=False, **QUIET)
        assert published(wh) == latest
        rebuild_range(cfg, wh, D[1], D[3], **QUIET)
        assert published(wh) == latest
    finally:
        wh.dispose()


def test_a_day_loaded_after_later_days_dedups_against_them_and_updates_them(make_project, engine):
    """11-04's files arrive after 11-05 ran: a retried send in both is loaded once, and 11-05's rows are current."""
    project = canonical_project(make_project, engine)
    cfg, wh = project.config(), project.warehouse()
    day4, day5 = D[3], D[4]
    write(project, D[2], [event("c1", "u1", at(D[2]))])
    first_copy = event("r1", "u2", at(day4, 23, 50), received_at=at(day4, 23, 55).isoformat() + "Z")
    retry = dict(first_copy, received_at=at(day5, 0, 10).isoformat() + "Z")
    write(project, day5, [retry, event("e5", "u3", at(day5))])
    try:
        run_workflow(cfg, wh, WF, D[2], **QUIET)
        (project.root / "landing" / "events" / day4.isoformat()).mkdir(parents=True)
        run_workflow(cfg, wh, WF, day4, **QUIET)  # the files are late: an empty folder for now
        run_workflow(cfg, wh, WF, day5, **QUIET)
        write(project, day4, [first_copy, event("e4", "u4", at(day4))])
        run_workflow(cfg, wh, WF, day4, resume=False, **QUIET)
        with wh.begin() as conn:
            copies = wh.execute(
                conn, "select load_date from raw.events where source_name = 'app' and event_id like '%r1'"
            ).fetchall()
            ledger = dict(
                wh.execute(conn, "select load_date, sum(duplicates_removed) from meta.ingest_ledger group by load_date").fetchall()
            )
        assert [r[0] for r in copies] == [day4], "the copy received first counts, once"
        assert ledger[day5] == 1 and ledger[day4] == 0
        assert dau(wh)[day4] == 2 and dau(wh)[day5] == 1
        assert published(wh) == full_rebuild(project, wh)
    finally:
        wh.dispose()


def test_two_sources_with_overlapping_event_ids_lose_nothing(make_project, engine):
    project = canonical_project(
        make_project,
        engine,
        sources=[
            {"name": "app", "format": "canonical", "path": "events"},
            {"name": "web", "format": "canonical", "path": "web"},
        ],
    )
    rows_app = [event(str(i), f"a{i}", at(D[0], 10)) for i in range(1, 21)]
    rows_web = [event(str(i), f"w{i}", at(D[0], 11)) for i in range(1, 21)]
    write(project, D[0], rows_app)
    write(project, D[0], rows_web, source="web")
    cfg, wh = project.config(), project.warehouse()
    try:
        run_workflow(cfg, wh, WF, D[0], **QUIET)
        assert dau(wh)[D[0]] == 40
        with wh.begin() as conn:
            assert wh.scalar(conn, "select sum(duplicates_removed) from meta.ingest_ledger") == 0
    finally:
        wh.dispose()


def test_lateness_beyond_the_duplicate_window_is_refused_by_the_config(tmp_path):
    from cohortflow.config import ConfigError, load_config
    from tests.conftest import write_config

    path = write_config(tmp_path, ingest={"late_arrival_days": 14, "lookback_days": 3})
    with pytest.raises(ConfigError, match="lookback_days .* must be at least late_arrival_days"):
        load_config(path, environ={})


def test_an_event_accepted_late_always_reaches_the_published_tables(make_project):
    project = canonical_project(make_project, "duckdb", ingest={"late_arrival_days": 14, "lookback_days": 14})
    cfg, wh = project.config(), project.warehouse()
    try:
        for i, day in enumerate(D[:10]):
            rows = [event(f"d{i}", "u1", at(day))]
            if i == 9:
                rows.append(event("old", "u2", at(D[1], 9)))  # 8 days late, inside the 14 accepted
            write(project, day, rows)
            run_workflow(cfg, wh, WF, day, **QUIET)
        assert dau(wh)[D[1]] == 2
    finally:
        wh.dispose()


def test_a_day_whose_volume_collapses_stops_before_publish_until_it_is_fixed(make_project):
    project = canonical_project(make_project, "duckdb")
    cfg, wh = project.config(), project.warehouse()
    full_day = lambda i, day: [event(f"d{i}-{u}", f"u{u}", at(day)) for u in range(20)]  # noqa: E731
    try:
        for i, day in enumerate(D[:5]):
            write(project, day, full_day(i, day))
            run_workflow(cfg, wh, WF, day, **QUIET)
        before = published(wh)
        write(project, D[5], [event("lonely", "u1", at(D[5]))])  # a lost file: one line of the day
        with pytest.raises(TaskFailed, match="validate"):
            run_workflow(cfg, wh, WF, D[5], **QUIET)
        assert published(wh) == before, "a collapsed day must publish nothing"
        write(project, D[6], full_day(6, D[6]))
        with pytest.raises(TaskFailed, match=f"{D[5]}.*failed a critical validation"):
            run_workflow(cfg, wh, WF, D[6], **QUIET)
        assert published(wh) == before
        write(project, D[5], full_day(5, D[5]))  # the file is found; the day is rerun
        run_workflow(cfg, wh, WF, D[5], resume=False, **QUIET)
        run_workflow(cfg, wh, WF, D[6], **QUIET)
        assert dau(wh)[D[5]] == 20 and dau(wh)[D[6]] == 20
        assert published(wh) == full_rebuild(project, wh)
    finally:
        wh.dispose()

"""SQL models as data: given raw events, expected rows, per model, on every engine.

Each file in ``tests/fixtures/models/*.yml`` holds one or more cases::

    model: active_users_daily          # the table compared (models.<model>; reports.<model> is checked against it)
    cases:
      - name: what the case shows
        timezone: Asia/Shanghai        # project time zone (default UTC)
        arrivals:                      # business date -> canonical JSONL events that arrive that day
          2026-11-01:
            - {distinct_id: a, event_name: app_start, event_time: "2026-10-31T16:00:00.000Z"}
        expected:                      # rows of models.<model>, compared as a set (after `where`)
          - {activity_date: 2026-11-01, dau: 1, wau: 1, mau: 1}
        where: {activity_date: [2026-11-01, 2026-11-02]}   # optional: compare only this range

Every arrival date is run through the whole nightly workflow (ingest, validate,
models, publish), so the fixtures pin the time-zone handling of the ingest too.
On Trino, where a night of this workflow costs about half a minute whatever the
data (several hundred statements at tens of milliseconds each), one case per
model (``TRINO_WORKFLOW_CASES`` in tests/conftest.py) ingests and validates the
dates before the last only, and the last night builds and publishes everything
they changed at once, as after nights whose models task failed: the published
tables equal the same rebuild either way (the nightly path night by night on
Trino is tests/e2e/test_nightly.py's). That this gives the same rows is itself
a test: every case with several arrival dates runs that way on DuckDB too
(``test_model_fixture_caught_up_in_one_night``). The other cases on Trino
ingest every arrival date and build their model and the models it reads, and
compare that model's rows only: the model's SQL on Trino is what they check;
validation, the other models and publish on Trino are the whole-workflow
cases' and tests/e2e/test_nightly.py's.
Only the columns named in ``expected`` are compared, with the model's exact
values; then (after a publish) every row of ``reports.<model>`` must equal the
BI contract's presentation of the model's rows (published types, rounding,
added columns).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from cohortflow.dag import load_workflows
from cohortflow.models import build_pending
from cohortflow.runner import run_task, run_workflow
from tests.conftest import trino_whole_workflow

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "models").glob("*.yml"))


def _cases():
    for path in FIXTURES:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        for case in spec["cases"]:
            yield pytest.param(spec["model"], case, id=f"{path.stem}:{case['name']}")


def _norm(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    if hasattr(value, "__float__") and not isinstance(value, int | bool):
        return round(float(value), 6)
    return value


@pytest.mark.parametrize(("model", "case"), list(_cases()))
def test_model_fixture(request, make_project, engine, model, case):
    if engine != "trino":
        how = "nightly"
    else:
        how = "caught_up" if trino_whole_workflow(request.node.nodeid) else "model_only"
    _check_case(make_project, engine, model, case, how=how)


@pytest.mark.parametrize(("model", "case"), [c for c in _cases() if len(c.values[1]["arrivals"]) > 1])
def test_model_fixture_caught_up_in_one_night(make_project, model, case):
    """The earlier dates ingested and validated only (their models and publish failed, say), then one night: the
    same rows, as the invariant wants (published tables equal a rebuild from everything loaded), and what the Trino
    variants of the fixtures rely on. On DuckDB, for the cases with several arrival dates."""
    _check_case(make_project, "duckdb", model, case, how="caught_up")


def _check_case(make_project, engine, model, case, *, how: str):
    """``how`` the arrival dates run (see the module's docstring): ``nightly``, the whole workflow for each;
    ``caught_up``, the earlier dates ingested and validated only, then the whole workflow for the last;
    ``model_only``, every date ingested, then the model and the models it reads built, nothing else."""
    overrides = {
        "timezone": case.get("timezone", "UTC"),
        "sources": [{"name": "app", "format": "canonical", "path": "events"}],
        # A fixture's days hold a handful of events, some none: a volume collapse here is the case, not an incident.
        "validation": {"volume_severity": "warning"},
    }
    overrides.update(case.get("config", {}))
    project = make_project(engine, **overrides)
    landing = project.root / "landing" / "events"
    arrivals = {dt.date.fromisoformat(str(d)): rows for d, rows in case["arrivals"].items()}
    for d, rows in arrivals.items():
        folder = landing / d.isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows or []), encoding="utf-8")
    cfg = project.config()
    wh = project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    try:
        if how == "model_only":
            for d in sorted(arrivals):
                run_task(cfg, wh, wf, "ingest", d, echo=lambda _m: None)
            built = build_pending(wh, cfg, only={model})
            assert model in built, f"models.{model} was not built"
        else:
            *earlier, last = sorted(arrivals)
            for d in earlier:
                if how == "caught_up":
                    for task in ("ingest", "validate"):
                        run_task(cfg, wh, wf, task, d, echo=lambda _m: None)
                else:
                    run_workflow(cfg, wh, wf, d, echo=lambda _m: None)
            run_workflow(cfg, wh, wf, last, echo=lambda _m: None)
        expected = case["expected"] or []
        columns = list(expected[0]) if expected else ["1"]
        sql = f"select {', '.join(columns)} from models.{model}"
        params = {}
        if where := case.get("where"):
            (col, (lo, hi)), = where.items()
            sql += f" where {col} between :lo and :hi"
            params = {"lo": dt.date.fromisoformat(str(lo)), "hi": dt.date.fromisoformat(str(hi))}
        with wh.begin() as conn:
            got = [tuple(_norm(v) for v in row) for row in wh.execute(conn, sql, params).fetchall()]
            published, presented = ([], []) if how == "model_only" else _published_and_presented(wh, conn, model)
    finally:
        wh.dispose()
    want = [tuple(_norm(row[c]) for c in columns) for row in expected]
    assert sorted(got, key=repr) == sorted(want, key=repr)
    assert published == presented, f"reports.{model} is not the contract's presentation of models.{model}"


def _published_and_presented(wh, conn, model):
    """Every row of reports.<model>, and the contract's SELECT over models.<model>: equal after a publish."""
    from cohortflow.contract import published_tables

    table = published_tables().get(model)
    if table is None:  # not a published model
        return [], []
    cols = ", ".join(c.name for c in table.columns)
    published = wh.execute(conn, f"select {cols} from reports.{model}").fetchall()
    presented = wh.execute(conn, f"select {cols} from ({table.select_sql()}) as presented").fetchall()
    return sorted(map(tuple, published), key=repr), sorted(map(tuple, presented), key=repr)


def test_fixture_files_exist():
    assert FIXTURES, "no model fixtures found"
    for path in FIXTURES:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert spec["model"] and spec["cases"], path
        for case in spec["cases"]:
            assert "expected" in case and case["arrivals"], f"{path.name}: {case.get('name')}"

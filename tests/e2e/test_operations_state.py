"""Whatever an operator does, every published table equals a full rebuild from everything loaded.

A hypothesis state machine drives a small two-source project (canonical JSONL; the sources' event ids overlap)
through random sequences of what operators do: nightly runs in any date order, reruns of a date whose input changed,
backfills of past dates, rebuilds of a range or of everything, and runs that fail at a task and are resumed. The
input has late events, retried sends (on the same and on other dates), identity links that arrive late and links
that move. After every completed operation, each ``reports`` table, the BI copy and the newest snapshot equal what
a full rebuild of a copy of the warehouse publishes. Runs on DuckDB, PostgreSQL and Trino (one short sequence).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cohortflow.dag import load_workflows
from cohortflow.publish import reader_file_path
from cohortflow.runner import FAIL_ENV, TaskFailed, rebuild_range, run_workflow
from tests.conftest import TRINO_SKIP_REASON, Project, pg_settings, short_analyses, trino_selected, trino_settings
from tests.e2e.reference import full_rebuild, normalise, published, published_columns

START = dt.date(2026, 11, 1)
DATES = [START + dt.timedelta(days=i) for i in range(6)]
LATE_DAYS = 2
SOURCES = ("a", "b")
NAMES = ("view_item", "add_to_cart", "checkout", "pay_order", "signup_start", "signup_done", "app_start")
USERS = ("u1", "u2", "u3")
ANONYMOUS = ("x1", "x2", "x3")

# One line of canonical JSONL: (event id number, name, distinct id, days before arrival, minute of day, link target).
line = st.tuples(
    st.integers(0, 14),
    st.sampled_from(NAMES),
    st.sampled_from(USERS + ANONYMOUS),
    st.integers(0, LATE_DAYS + 1),  # LATE_DAYS + 1: too late, quarantined
    st.integers(0, 24 * 60 - 1),
    st.one_of(st.none(), st.sampled_from(USERS)),
)
day_input = st.fixed_dictionaries({s: st.lists(line, max_size=7) for s in SOURCES})


def _render(source: str, arrival: dt.date, lines) -> str:
    out = []
    for number, name, distinct, days_back, minute, link in lines:
        when = dt.datetime.combine(arrival - dt.timedelta(days=days_back), dt.time()) + dt.timedelta(minutes=minute)
        obj = {
            "event_id": f"e{number}",
            "event_name": name if link is None else "$identify",
            "distinct_id": distinct,
            "event_time": when.isoformat() + "Z",
            "received_at": (dt.datetime.combine(arrival, dt.time(23, 59))).isoformat() + "Z",
            "properties": {"amount": 60} if name == "pay_order" else {},
        }
        if link is not None and distinct in ANONYMOUS:
            obj.update(link_anonymous_id=distinct, link_login_id=link, is_activity=False)
        out.append(json.dumps(obj))
    return "\n".join(out) + ("\n" if out else "")


class Operations(RuleBasedStateMachine):
    engine_name = "duckdb"
    root: Path

    @initialize(first=day_input)
    def setup(self, first):
        self.dir = self.root / uuid.uuid4().hex[:8]
        self.project = Project(
            self.dir,
            self.engine_name,
            timezone="UTC",
            sources=[{"name": s, "format": "canonical", "path": s} for s in SOURCES],
            ingest={"lookback_days": LATE_DAYS, "late_arrival_days": LATE_DAYS},
            validation={"volume_min_ratio": 0.0001, "volume_max_ratio": 1000},
            analyses=short_analyses(),
        )
        self.cfg = self.project.config()
        self.wh = self.project.warehouse()
        self.wf = load_workflows()["cohortflow_nightly"]
        self.inputs = {DATES[0]: first}
        self.loaded: set[dt.date] = set()
        self.checked = True

    def teardown(self):
        if hasattr(self, "wh"):
            self.wh.dispose()
            self.project.cleanup()
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- what operators do --------------------------------------------------

    def _write(self, d: dt.date) -> None:
        for s in SOURCES:
            folder = self.cfg.landing_path / s / d.isoformat()
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "part-0.jsonl").write_text(_render(s, d, self.inputs[d][s]), encoding="utf-8")

    def _run(self, d: dt.date, *, restart: bool = False) -> None:
        self._write(d)
        run_workflow(self.cfg, self.wh, self.wf, d, resume=not restart, echo=lambda _m: None)
        self.loaded.add(d)
        self.checked = False

    @rule(index=st.integers(0, len(DATES) - 1), data=day_input)
    def nightly_run(self, index, data):
        """A date runs (for the first time, or again with the input it has), in any order."""
        d = DATES[index]
        self.inputs.setdefault(d, data)
        self._run(d)

    @precondition(lambda self: self.loaded)
    @rule(data=st.data(), new_input=day_input)
    def rerun_with_changed_input(self, data, new_input):
        """A loaded date's files change (lines removed, added, corrected) and the date is rerun."""
        d = data.draw(st.sampled_from(sorted(self.loaded)))
        self.inputs[d] = new_input
        self._run(d, restart=True)

    @precondition(lambda self: self.loaded)
    @rule(data=st.data(), inputs=st.lists(day_input, min_size=3, max_size=3))
    def backfill(self, data, inputs):
        """Past dates run one after the other, oldest first (new dates, or again)."""
        last = data.draw(st.sampled_from(sorted(self.loaded)))
        days = [d for d in DATES if d <= last][-3:]
        for d, given in zip(days, inputs, strict=False):
            self.inputs.setdefault(d, given)
            self._run(d)

    @precondition(lambda self: self.loaded)
    @rule(data=st.data())
    def rebuild(self, data):
        """A rebuild of a range of dates, or of everything."""
        if data.draw(st.booleans()):
            rebuild_range(self.cfg, self.wh, echo=lambda _m: None)
        else:
            a, b = sorted(data.draw(st.lists(st.sampled_from(DATES), min_size=2, max_size=2)))
            rebuild_range(self.cfg, self.wh, a, b, echo=lambda _m: None)
        self.checked = False

    @rule(index=st.integers(0, len(DATES) - 1), task=st.sampled_from(["validate", "models", "publish"]), data=day_input)
    def fail_then_resume(self, index, task, data):
        """A run fails at a task; the operator fixes the cause and reruns the date, which resumes it."""
        d = DATES[index]
        self.inputs.setdefault(d, data)
        self._write(d)
        os.environ[FAIL_ENV] = task
        try:
            with pytest.raises(TaskFailed):
                run_workflow(self.cfg, self.wh, self.wf, d, echo=lambda _m: None)
        finally:
            del os.environ[FAIL_ENV]
        self._run(d)

    # -- the invariant --------------------------------------------------------

    @invariant()
    def published_tables_equal_a_full_rebuild(self):
        if self.checked or not self.loaded:
            return
        self.checked = True
        now = published(self.wh)
        expected = full_rebuild(self.project, self.wh)
        assert set(now) == set(expected)
        for name in expected:
            assert now[name] == expected[name], f"reports.{name} differs from a full rebuild"
        newest = max((self.cfg.target_path / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime)
        for name in expected:
            table = pq.read_table(newest / f"{name}.parquet")
            cols = published_columns(name)
            rows = normalise(zip(*(table.column(c).to_pylist() for c in cols), strict=True))
            assert rows == expected[name], f"the newest snapshot of {name} differs from reports"
        if self.engine_name == "duckdb":
            with duckdb.connect(str(reader_file_path(self.cfg)), read_only=True) as bi:
                for name in expected:
                    rows = normalise(bi.execute(f"select {', '.join(published_columns(name))} from {name}").fetchall())
                    assert rows == expected[name], f"the BI copy of {name} differs from reports"


# Trino runs a night in about a minute on the 2-core CI machine (and a full rebuild of the copy after each operation):
# one short sequence there.
# (examples, steps per example): what fits the CI budget on each engine
EXAMPLES = {"duckdb": (6, 8), "postgres": (3, 8), "trino": (1, 4)}


@pytest.mark.parametrize("engine_name", ["duckdb", "postgres", "trino"])
def test_operations_keep_reports_equal_to_a_full_rebuild(engine_name, tmp_path, request):
    if engine_name == "postgres":
        pg_settings()
    if engine_name == "trino":
        if not trino_selected(request.node.nodeid):
            pytest.skip(TRINO_SKIP_REASON)
        trino_settings()
    machine = type(f"Operations_{engine_name}", (Operations,), {"engine_name": engine_name, "root": tmp_path})
    examples, steps = EXAMPLES[engine_name]
    machine.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    machine.TestCase().runTest()

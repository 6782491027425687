"""Trino beyond one node, and a publish killed half way.

* The nightly models on a two-node cluster started by ``scripts/trino.sh`` (a coordinator with
  ``node-scheduler.include-coordinator=false`` and a separate worker process): the published tables equal
  DuckDB's on the same logs, and most of the funnel's tasks ran in the worker process.
* A publish process killed while its transaction is open (after some of the tables were written in it): the
  published tables are the old state or the new one, never a mix; rerunning the publish gives the new one.
* What the builds rely on: a CREATE TABLE AS (DDL, run outside the transaction) does not see the rows inserted
  earlier in the transaction.
* A process killed while it holds scratch objects (a temporary table, a load table, a validation's view): the next
  task started drops them, and leaves a live process's and other names alone.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.models import published_models
from cohortflow.runner import run_task, run_workflow
from tests.conftest import TRINO_SKIP_REASON, Project, short_analyses, trino_selected, trino_settings

REPO = Path(__file__).resolve().parents[2]
START = dt.date(2026, 11, 1)
TZ = "Asia/Shanghai"


def _published(wh) -> dict[str, list[tuple]]:
    out = {}
    with wh.begin() as conn:
        for model in published_models():
            cols = ", ".join(c.name for c in model.columns)
            rows = wh.execute(conn, f"select {cols} from reports.{model.name}").fetchall()
            out[model.name] = sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr)
    return out


def _run_nights(project: Project, days: int) -> dict[str, list[tuple]]:
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    try:
        for i in range(days):
            run_workflow(cfg, wh, wf, START + dt.timedelta(days=i), echo=lambda _m: None)
        return _published(wh)
    finally:
        wh.dispose()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A coordinator and one worker on their own ports, with the test cluster's settings otherwise."""
    # Two more JVMs beside the test cluster: about 7 minutes on a 2-core machine (the lane of tests/conftest.py).
    if not trino_selected("tests/integration/test_trino_cluster.py::test_the_models_run_distributed"):
        pytest.skip(TRINO_SKIP_REASON)
    trino_settings()
    folder = tmp_path_factory.mktemp("trino-two-nodes")
    env = {
        **os.environ,
        "COHORTFLOW_TRINO_DIR": str(folder),
        "COHORTFLOW_TRINO_PORT": os.environ.get("COHORTFLOW_TEST_TRINO_CLUSTER_PORT", "18090"),
        "COHORTFLOW_TRINO_WORKERS": "1",
        "PYTHON": sys.executable,
    }
    subprocess.run([str(REPO / "scripts" / "trino.sh"), "start"], env=env, check=True, timeout=900)
    try:
        lines = subprocess.run(
            [str(REPO / "scripts" / "trino.sh"), "env"], env=env, check=True, capture_output=True, text=True
        ).stdout
        yield dict(line.removeprefix("export ").split("=", 1) for line in lines.splitlines())
    finally:
        subprocess.run([str(REPO / "scripts" / "trino.sh"), "stop"], env=env, check=False, timeout=300)


def test_the_models_run_distributed_on_a_coordinator_and_a_worker(two_nodes, tmp_path, monkeypatch):
    # (two nights: each costs a few minutes on the two-node cluster beside the rest of the suite)
    spec = DemoSpec(users=80, days=2, start_date=START, timezone=TZ, seed=5, fmt="ark")
    duck = Project(tmp_path / "duck", "duckdb", timezone=TZ, analyses=short_analyses())
    generate(spec, duck.landing)
    expected = _run_nights(duck, spec.days)

    for key, value in two_nodes.items():
        monkeypatch.setenv(key, value)
    project = Project(tmp_path / "two", "trino", timezone=TZ, analyses=short_analyses())
    try:
        generate(spec, project.landing)
        began = dt.datetime.now(dt.UTC)
        got = _run_nights(project, spec.days)
        admin = sa.create_engine(two_nodes["COHORTFLOW_TEST_TRINO_URL"])
        with admin.connect() as conn:
            nodes = dict(conn.execute(sa.text("select node_id, coordinator from system.runtime.nodes where state = 'active'")).all())
            where = (
                "q.created >= :began and lower(q.query) like :text and q.state = 'FINISHED'"
            )
            task_nodes = conn.execute(
                sa.text(
                    "select t.node_id, count(*) from system.runtime.tasks as t "
                    f"join system.runtime.queries as q on q.query_id = t.query_id where {where} group by t.node_id"
                ),
                {"began": began, "text": "%insert into models.funnel_conversion_daily%"},
            ).all()
        admin.dispose()
    finally:
        project.cleanup()
    assert nodes == {"coordinator": True, "worker1": False}, nodes
    # The worker process runs most of the funnel's tasks; the coordinator runs the stages Trino keeps on it
    # (output and commit, and some single-task stages: observed with the Hive connector on local files).
    tasks = dict(task_nodes)
    assert tasks.get("worker1", 0) > tasks.get("coordinator", 0), f"the funnel's tasks by node: {task_nodes}"
    assert set(got) == set(expected)
    # (two nights are too few for frequency_retention's target window: it is empty on both)
    for name in ("funnel_conversion_daily", "retention_cohorts", "active_users_daily", "session_metrics_daily"):
        assert expected[name], f"{name} is empty: the comparison would prove nothing"
    for name in expected:
        assert got[name] == expected[name], f"reports.{name} differs between DuckDB and two-node Trino"


def _publish_inserts_seen(admin, began: dt.datetime) -> int:
    with admin.connect() as conn:
        return conn.execute(
            sa.text(
                "select count(*) from system.runtime.queries where created >= :began "
                "and lower(query) like '%insert into reports.%' and state = 'FINISHED'"
            ),
            {"began": began},
        ).scalar()


def test_a_publish_killed_half_way_leaves_the_old_state_or_the_new(make_project):
    kill_after = 4  # tables written in the publish transaction before the kill (of 11)
    project = make_project("trino", timezone=TZ, analyses=short_analyses())
    spec = DemoSpec(users=60, days=2, start_date=START, timezone=TZ, seed=8, fmt="ark")
    generate(spec, project.landing)
    old = _run_nights(project, 1)
    last = START + dt.timedelta(days=1)
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    try:
        for task in ("ingest", "validate", "models"):
            run_task(cfg, wh, wf, task, last, echo=lambda _m: None)
    finally:
        wh.dispose()
    admin = sa.create_engine(sa.make_url(project.db_url).set(database="system"))
    env = {**os.environ, **project.environ}
    began = dt.datetime.now(dt.UTC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cohortflow.cli", "task", "publish", "--date", last.isoformat(), "--config", str(project.config_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while proc.poll() is None and _publish_inserts_seen(admin, began) < kill_after and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    admin.dispose()
    assert killed, "the publish finished before it could be killed: the test shows nothing"
    wh = project.warehouse()
    try:
        after_kill = _published(wh)
    finally:
        wh.dispose()
    cfg, wh = project.config(), project.warehouse()
    try:
        run_task(cfg, wh, wf, "publish", last, echo=lambda _m: None)
        new = _published(wh)
    finally:
        wh.dispose()
    assert new != old, "the last night must change the published tables, or old and new cannot be told apart"
    assert after_kill in (old, new), "a killed publish left a mix of the old and the new state"
    assert after_kill == old, "the transaction was open when the process died: nothing of it may be visible"



def test_a_create_table_as_does_not_see_rows_inserted_earlier_in_its_transaction(make_project):
    """What the model builds rely on: the warehouse runs DDL on Trino on its own autocommitting connection (a table
    created in a transaction cannot be written in it), CREATE TABLE AS included, so the scratch tables of a build read
    committed rows only, while an INSERT ... SELECT in the transaction sees the rows it inserted. Hence the
    definitions (meta.def_*) are committed before the builds, as every build path commits them (and the tests'
    tests/conftest.py load_and_build_fresh). A temporary table's CREATE TABLE AS runs in the transaction, and sees them."""
    project = make_project("trino")
    wh = project.warehouse()
    wh.bootstrap()
    try:
        with wh.begin() as conn:
            wh.run(conn, "create table meta.seen (x integer)")
            wh.run(conn, "create table meta.seen_by_insert (x integer)")
        with wh.begin() as conn:
            wh.run(conn, "insert into meta.seen (x) values (1)")
            assert wh.scalar(conn, "select count(*) from meta.seen") == 1
            wh.run(conn, "create table meta.seen_by_ctas as select x from meta.seen")
            wh.run(conn, "insert into meta.seen_by_insert (x) select x from meta.seen")
            # A temporary table is created in the transaction (TrinoAccess._create_temp): it sees the rows too.
            wh.execute(conn, "create temporary table seen_by_temp as select x from meta.seen")
            assert wh.scalar(conn, "select count(*) from seen_by_temp") == 1
        with wh.begin() as conn:
            counts = [wh.scalar(conn, f"select count(*) from meta.{t}") for t in ("seen", "seen_by_ctas", "seen_by_insert")]
        assert counts == [1, 0, 1]
    finally:
        wh.dispose()


# Creates one scratch object of each kind a task makes (a temporary table, a load table, the view validation reads),
# says so, and waits, in its transaction, to be killed.
HOLD_SCRATCH = """
import sys, time
import pyarrow as pa
from cohortflow.config import load_config
from cohortflow.warehouse import Warehouse
wh = Warehouse(load_config(sys.argv[1]))
with wh.begin() as conn:
    wh.execute(conn, "create temporary table held as select 1 as x")
    wh.trino.stage(conn, "raw.events", pa.table({"x": [1]}))
    view = wh.trino.scratch_name("raw", "validate_20261101")
    wh.trino.ddl(f"create view {view} as select 1 as x")
    print(wh.trino.owner, wh.trino._temps[id(conn)]["held"], flush=True)  # (the scratch table of "held")
    time.sleep(600)
"""


def _scratch_objects(wh) -> set[str]:
    with wh.trino.autocommit.connect() as conn:
        rows = conn.execute(
            sa.text("select table_schema, table_name from information_schema.tables where table_name like 'tmp%'")
        ).fetchall()
    return {f"{schema}.{name}" for schema, name in rows}


def test_scratch_objects_of_a_killed_process_are_dropped_by_the_next_task(make_project):
    project = make_project("trino")
    wh = project.warehouse()
    wh.bootstrap()
    try:
        wh.trino.ddl("create table raw.tmp_named_by_hand (x integer)")  # not a scratch object's name
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_SCRATCH, str(project.config_path)],
            env={**os.environ, **project.environ},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            dead_owner, held_temp = (proc.stdout.readline().split() + ["", ""])[:2]
            assert len(dead_owner) == 12, "the holding process failed before it created its scratch objects"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=60)
        left = {name for name in _scratch_objects(wh) if dead_owner in name}
        # The temporary table's scratch table was created in the killed process's transaction: no one else sees it,
        # and Trino removes it when it aborts the transaction. The load table and the view were created outside.
        assert dead_owner in held_temp and held_temp not in left
        assert len(left) == 2, f"expected a load table and a view of the killed process: {left}"

        # A live process's scratch object (this one's, and another process's whose lock is held) stays.
        alive = wh.trino.scratch_name("raw", "alive")
        wh.trino.ddl(f"create table {alive} (x integer)")
        other = project.warehouse()
        try:
            held = other.trino.scratch_name("raw", "held")
            other.trino.ddl(f"create table {held} (x integer)")
            events: list[str] = []
            run_task(project.config(), wh, load_workflows()["cohortflow_nightly"], "validate", START, echo=events.append)
            after = _scratch_objects(wh)
            assert not {name for name in after if dead_owner in name}, "the killed process's scratch objects were left"
            assert {alive, held, "raw.tmp_named_by_hand"} <= after
            assert any("dropped 2 scratch objects left by ended processes" in line for line in events), events
            other.trino.drop_scratch(held)
        finally:
            other.dispose()
        assert not wh.trino.lock_path(f"cohortflow:scratch-owner:{dead_owner}").exists()
        assert not wh.trino.lock_path(f"cohortflow:scratch-owner:{other.trino.owner}").exists(), (
            "a process that dropped its scratch objects removes its owner lock file when disposed"
        )
        wh.trino.drop_scratch(alive)
    finally:
        wh.dispose()

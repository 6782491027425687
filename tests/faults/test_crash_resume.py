"""Crash, lost server and full disk, then a rerun: the result equals an undisturbed run (DuckDB and PostgreSQL).

Each scenario runs the real CLI in a subprocess over three generated nights
and compares everything a user can observe (every published table, every
snapshot, the BI reader copy, the ingest ledger, the loaded ids, the
quarantine, the completion marker) with the same nights run undisturbed, and
checks that no temporary file and no "running" run-log row is left.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from cohortflow.faults import FAULT_ENV, POINTS
from tests.conftest import Project, pg_settings
from tests.faults.harness import (
    DATES,
    assert_same,
    capture,
    cli,
    fill,
    free_port,
    make,
    run_night,
    small_filesystem,
    start_night,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The undisturbed nights, once per engine (built on first use)."""
    made: dict[str, tuple[Project, dict]] = {}

    def get(engine: str) -> dict:
        if engine not in made:
            project = make(tmp_path_factory.mktemp(f"undisturbed-{engine}"), engine)
            for d in DATES:
                proc = run_night(project, d)
                assert proc.returncode == 0, proc.stderr
            made[engine] = (project, capture(project))
        return made[engine][1]

    yield get
    for project, _ in made.values():
        project.cleanup()


def _run_log(project: Project, d) -> list[tuple[str, str]]:
    wh = project.warehouse()
    try:
        with wh.begin() as conn:
            return [
                tuple(r)
                for r in wh.execute(
                    conn, "select task, status from meta.run_log where business_date = :d order by started_at", {"d": d}
                ).fetchall()
            ]
    finally:
        wh.dispose()


def test_sigkill_inside_every_task_then_rerun_equals_an_undisturbed_run(engine, tmp_path, baseline):
    want = baseline(engine)
    project = make(tmp_path / "p", engine)
    try:
        assert run_night(project, DATES[0]).returncode == 0
        points = [p for p in POINTS if engine == "duckdb" or p != "reader_copy"]
        target = project.config().target_path
        for point in points:
            # Each run resumes the previous one and dies at the next point, inside the next task.
            proc = run_night(project, DATES[1], env={FAULT_ENV: f"{point}:kill"})
            assert proc.returncode == -signal.SIGKILL, f"{point}: {proc.stdout[-1500:]} {proc.stderr[-1500:]}"
            if point == "snapshots":
                assert list((target / "snapshots").glob(".*.tmp")), "the kill should leave a snapshot temp folder"
            if point == "reader_copy":
                assert list((target / "published").glob(".reports.duckdb.*.tmp")), "the kill should leave the copy's temp file"
        proc = run_night(project, DATES[1])
        assert proc.returncode == 0, proc.stderr
        assert "interrupted task run(s)" in proc.stdout + proc.stderr
        log = _run_log(project, DATES[1])
        task_of = {"snapshots": "publish", "reader_copy": "publish"}
        assert [t for t, s in log if s == "interrupted"] == [task_of.get(p, p) for p in points], log
        assert {t for t, s in log if s == "success"} == {"ingest", "validate", "models", "publish"}
        if engine == "duckdb":
            _status_while_a_run_holds_the_file(project)
        else:
            assert run_night(project, DATES[2]).returncode == 0
        assert_same(capture(project), want)
    finally:
        project.cleanup()


def _status_while_a_run_holds_the_file(project: Project) -> None:
    """``cohortflow status`` answers while another process holds the DuckDB file: it says what is running."""
    flag = project.config().target_path / ".fault-models"
    run = start_night(project, DATES[2], "models:pause")
    try:
        wait_for(flag)
        status = cli(project, "status")
        assert status.returncode == 0, status.stderr
        assert "in use by a running process" in status.stdout
        assert "running: task models for business date " + DATES[2].isoformat() in status.stdout
        assert "last publish: complete for business date " + DATES[1].isoformat() in status.stdout
    finally:
        flag.unlink(missing_ok=True)
        out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err


def error_line(err: str) -> tuple[str, str]:
    """A failed command's error (the one log line saying ``error:``) and the line after it (what to do), from its
    stderr, where progress lines come first."""
    lines = err.strip().splitlines()
    errors = [i for i, line in enumerate(lines) if " error: " in line]
    assert len(errors) == 1 and errors[0] == len(lines) - 2, err
    return lines[-2].split(" error: ", 1)[1], lines[-1].strip()


def _pgcluster(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([str(REPO / "scripts" / "pgcluster.sh"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_postgres_stopped_mid_task_then_restarted(tmp_path, baseline):
    """The server dies while the models task runs: the task fails with one line, the rerun resumes it and the
    result equals an undisturbed run."""
    import os

    pg_settings()
    want = baseline("postgres")
    # Outside pytest's folders (mode 700): the server runs as the 'postgres' user, which must reach its files.
    pg_dir = Path(tempfile.gettempdir()) / f"cohortflow-pg-{uuid.uuid4().hex[:8]}"
    cluster = {**os.environ, "COHORTFLOW_PG_DIR": str(pg_dir), "COHORTFLOW_PG_PORT": str(free_port())}
    _pgcluster(cluster, "start")
    try:
        project = make(tmp_path / "p", "duckdb")
        password = (pg_dir / "password").read_text().strip()
        project.environ = {
            "COHORTFLOW_WAREHOUSE__URL": f"postgresql+psycopg://cohortflow@127.0.0.1:{cluster['COHORTFLOW_PG_PORT']}/cohortflow",
            "COHORTFLOW_WAREHOUSE__PASSWORD": password,
        }
        assert run_night(project, DATES[0]).returncode == 0
        flag = project.config().target_path / ".fault-models"
        run = start_night(project, DATES[1], "models:pause")
        wait_for(flag)
        _pgcluster(cluster, "halt")
        flag.unlink()
        out, err = run.communicate(timeout=600)
        assert run.returncode == 1, out + err
        # One error line naming the server (no traceback), never the password.
        assert "127.0.0.1" in error_line(err)[0] and "Traceback" not in err, err
        assert password not in out + err
        _pgcluster(cluster, "resume")
        proc = run_night(project, DATES[1])
        assert proc.returncode == 0, proc.stderr
        assert "resuming run" in proc.stdout + proc.stderr and "[ingest] already succeeded" in proc.stdout + proc.stderr
        assert ("models", "interrupted") in _run_log(project, DATES[1])
        assert run_night(project, DATES[2]).returncode == 0
        assert_same(capture(project), want)
    finally:
        _pgcluster(cluster, "stop")


@pytest.fixture
def own_cluster():
    """A PostgreSQL cluster of the test's own (started by scripts/pgcluster.sh), which it may halt or starve."""
    import os

    pg_settings()
    made = []

    def start(pg_dir: Path) -> tuple[Project, dict]:
        cluster = {**os.environ, "COHORTFLOW_PG_DIR": str(pg_dir), "COHORTFLOW_PG_PORT": str(free_port())}
        made.append(cluster)
        _pgcluster(cluster, "start")
        return cluster

    yield start
    for cluster in made:
        _pgcluster(cluster, "stop")


def _on_cluster(project: Project, cluster: dict) -> Project:
    password = (Path(cluster["COHORTFLOW_PG_DIR"]) / "password").read_text().strip()
    project.environ = {
        "COHORTFLOW_WAREHOUSE__URL": f"postgresql+psycopg://cohortflow@127.0.0.1:{cluster['COHORTFLOW_PG_PORT']}/cohortflow",
        "COHORTFLOW_WAREHOUSE__PASSWORD": password,
    }
    return project


def test_disk_full_under_the_postgres_warehouse(tmp_path, baseline, own_cluster):
    """The server's data directory fills up while the models build: the task fails naming the full disk, and once
    space is freed the rerun equals an undisturbed run."""
    want = baseline("postgres")
    fs_dir = Path(tempfile.gettempdir()) / f"cohortflow-pgfull-{uuid.uuid4().hex[:8]}"
    with small_filesystem(fs_dir, 512) as fs:
        cluster = own_cluster(fs / "pg")
        project = _on_cluster(make(tmp_path / "p", "duckdb"), cluster)
        assert run_night(project, DATES[0]).returncode == 0
        err = _disk_full_night(project, fs, "models")
        assert "no space left on device" in err.lower(), err
        assert project.environ["COHORTFLOW_WAREHOUSE__PASSWORD"] not in err
        # Start the server again should the full disk have stopped it (if it is still running, this does nothing).
        subprocess.run([str(REPO / "scripts" / "pgcluster.sh"), "resume"], env=cluster, capture_output=True, timeout=300)
        for d in DATES[1:]:
            proc = run_night(project, d)
            assert proc.returncode == 0, proc.stderr
        assert_same(capture(project), want)
        _pgcluster(cluster, "stop")


def _disk_full_night(project: Project, fs: Path, point: str) -> str:
    """Run the second night, fill ``fs`` while it waits at ``point``, let it fail; free the space; return the
    failure's line (the run's message, then the line saying how to resume)."""
    flag = project.config().target_path / f".fault-{point}"
    run = start_night(project, DATES[1], f"{point}:pause")
    wait_for(flag)
    filler = fill(fs)
    flag.unlink()
    out, err = run.communicate(timeout=600)
    filler.unlink()
    assert run.returncode == 1, out + err
    first, resume = error_line(err)
    assert resume.startswith("fix the cause and rerun"), err
    return first


def test_disk_full_under_the_duckdb_warehouse(tmp_path, baseline):
    want = baseline("duckdb")
    with small_filesystem(tmp_path / "wh", 256) as fs:
        project = make(tmp_path / "p", "duckdb", warehouse={"url": f"duckdb:///{fs}/warehouse.duckdb"})
        assert run_night(project, DATES[0]).returncode == 0
        err = _disk_full_night(project, fs, "models")
        assert "no space left on device" in err.lower() and "warehouse.duckdb" in err, err
        assert not [p for p in fs.iterdir() if p.name.endswith(".tmp")]
        for d in DATES[1:]:
            proc = run_night(project, d)
            assert proc.returncode == 0, proc.stderr
        assert_same(capture(project), want)


@pytest.mark.parametrize("point", ["publish", "reader_copy"])
def test_disk_full_under_the_snapshots_and_reader_copy(engine, tmp_path, baseline, point):
    """The outputs' file system fills up: at the snapshots (after the reports commit) or inside the BI copy."""
    if point == "reader_copy" and engine != "duckdb":
        pytest.skip("the BI reader copy is DuckDB's")
    want = baseline(engine)
    with small_filesystem(tmp_path / "out", 64) as fs:
        overrides = {"target_dir": str(fs)}
        if engine == "duckdb":
            overrides["warehouse"] = {"url": f"duckdb:///{tmp_path / 'wh' / 'warehouse.duckdb'}"}
        project = make(tmp_path / "p", engine, **overrides)
        try:
            assert run_night(project, DATES[0]).returncode == 0
            err = _disk_full_night(project, fs, point)
            what = "the snapshot" if point == "publish" else "the BI reader copy"
            assert f"no space left on device writing {what}" in err, err
            assert "CHECKPOINT" not in err
            leftovers = [p for p in fs.rglob("*") if p.name.endswith((".tmp", ".tmp.wal"))]
            assert not leftovers, leftovers
            for d in DATES[1:]:
                proc = run_night(project, d)
                assert proc.returncode == 0, proc.stderr
            assert_same(capture(project), want)
        finally:
            project.cleanup()


def test_two_publishes_of_one_date_at_once(tmp_path):
    """Two publishes of the same date at the same time (PostgreSQL admits both): they take turns under the publish
    lock, so each snapshot is whole and equals the published table, and no temporary file is left."""
    import os
    import sys

    pg_settings()
    project = make(tmp_path / "p", "postgres")
    try:
        assert run_night(project, DATES[0]).returncode == 0
        env = {**os.environ, **project.environ, "COHORTFLOW_CONFIG": str(project.config_path)}
        env.pop(FAULT_ENV, None)
        procs = [
            subprocess.Popen([sys.executable, "-m", "cohortflow.cli", "task", "publish", "--date", str(DATES[0])],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], results
        state = capture(project)
        assert state["leftovers"] == [] and state["marker"] == ("complete", DATES[0].isoformat())
        for name, rows in state["snapshots"].items():
            table = name.split("/")[-1].removesuffix(".parquet")
            assert rows == sorted(state[f"reports.{table}"], key=repr), f"snapshot {name} differs from reports.{table}"
    finally:
        project.cleanup()

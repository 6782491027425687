"""No secret in any output, log or server log (PostgreSQL test cluster).

The warehouse password and a reader password go through check-config (also
with the password refused inside the URL), a YAML error on the line that holds
it, failing runs (with tracebacks on) and grant-reader failures; then every
output, every file of the project (logs, validation results, snapshots, status
and marker files), every run-log row and the part of the server's log written
meanwhile are searched for both.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from cohortflow.demo import DemoSpec, generate
from tests.conftest import Project, pg_settings

START = dt.date(2026, 11, 1)
READER_SECRET = "Rd/r-S3cret@?x=1"


def _cli(project: Project, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **project.environ, "COHORTFLOW_CONFIG": str(project.config_path), **(env or {})}
    return subprocess.run([sys.executable, "-m", "cohortflow.cli", *args], env=full, capture_output=True, text=True, timeout=600)


def _server_log() -> Path:
    log = os.environ.get("COHORTFLOW_TEST_PG_LOG")
    if not log or not Path(log).is_file():
        if os.environ.get("CI"):
            pytest.fail("COHORTFLOW_TEST_PG_LOG is not set: the server log cannot be searched")
        pytest.skip("the test cluster's log is not known (COHORTFLOW_TEST_PG_LOG; scripts/pgcluster.sh env sets it)")
    return Path(log)


def test_no_password_in_any_output_log_row_snapshot_or_server_log(tmp_path):
    pg_settings()
    log = _server_log()
    log_start = log.stat().st_size
    project = Project(tmp_path / "p", "postgres", timezone="UTC")
    password = project.password
    generate(DemoSpec(users=60, days=2, start_date=START, timezone="UTC", seed=4), project.landing)
    role = "bi_" + project.db_url.rsplit("/", 1)[1][-8:]
    outputs: list[str] = []
    try:
        def run(*args: str, env: dict | None = None, code: int | None = None) -> subprocess.CompletedProcess:
            proc = _cli(project, *args, env=env)
            outputs.append(proc.stdout + proc.stderr)
            if code is not None:
                assert proc.returncode == code, (args, proc.stdout[-2000:], proc.stderr[-2000:])
            return proc

        run("check-config", code=0)
        host_db = project.db_url.split("@", 1)[1]
        for url in (
            f"postgresql+psycopg://cohortflow@{host_db}?password={password}",
            f"postgresql+psycopg://cohortflow:{password}/x@{host_db}",
        ):
            run("check-config", env={"COHORTFLOW_WAREHOUSE__URL": url}, code=2)
        bad_yaml = tmp_path / "bad.yml"
        bad_yaml.write_text(f"project: x\nwarehouse:\n  note: '{password}\n  : - [\n", encoding="utf-8")
        proc = run("check-config", "--config", str(bad_yaml), code=2)
        assert "not valid YAML at line" in proc.stderr

        run("run", "--date", str(START), env={"COHORTFLOW_FAIL_TASK": "models", "COHORTFLOW_DEBUG": "1"}, code=1)
        run("run", "--date", str(START), code=0)
        run("run", "--date", str(START + dt.timedelta(days=1)), env={"COHORTFLOW_FAIL_TASK": "publish"}, code=1)
        run("status", code=0)

        # grant-reader failures, each one line: a role the connecting role may not alter (the server logs the failed
        # statement), a name that is not an identifier.
        # (exit 1: the server refused; exit 2: a usage error)
        for bad_role, code in (("postgres", 1), ("Bad-Name", 2)):
            proc = run("grant-reader", "--role", bad_role, env={"COHORTFLOW_READER_PASSWORD": READER_SECRET}, code=code)
            # one log line: "<date> <time> error: ..."
            assert proc.stderr.strip().count("\n") == 0 and proc.stderr.split(" ", 2)[2].startswith("error: "), proc.stderr
            assert "Traceback" not in proc.stderr
        proc = run("grant-reader", "--role", role, env={"COHORTFLOW_READER_PASSWORD": READER_SECRET}, code=0)
        assert "SCRAM-SHA-256$***" in proc.stdout
        reader = sa.create_engine(sa.make_url(project.db_url).set(username=role, password=READER_SECRET))
        with reader.connect() as conn:  # the verifier computed here lets the reader log in
            assert conn.execute(sa.text("select count(*) from reports.active_users_daily")).scalar() >= 1
        reader.dispose()

        wh = project.warehouse()
        with wh.begin() as conn:
            rows = [" ".join(map(str, r)) for r in wh.execute(conn, "select * from meta.run_log").fetchall()]
            rows += [" ".join(map(str, r)) for r in wh.execute(conn, "select * from meta.validation_results").fetchall()]
        wh.dispose()
        files = [p for p in (tmp_path / "p").rglob("*") if p.is_file() and "landing" not in p.parts]
        assert any(p.suffix == ".parquet" for p in files) and any(p.name == "run-status.json" for p in files)
        with open(log, "rb") as fh:
            fh.seek(log_start)
            server_log = fh.read()
        assert b"must be superuser" in server_log or b"permission denied" in server_log, "the failed ALTER ROLE should be logged"
        for secret in (password, READER_SECRET):
            for text in outputs + rows:
                assert secret not in text
            for path in files:
                assert secret.encode() not in path.read_bytes(), path
            assert secret.encode() not in server_log
    finally:
        project.cleanup()
        admin = sa.create_engine(sa.make_url(project.db_url).set(database="cohortflow", password=project.password))
        with admin.begin() as conn:
            conn.execute(sa.text(f'drop role if exists "{role}"'))
        admin.dispose()

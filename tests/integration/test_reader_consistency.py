"""The README's route for BI on PostgreSQL: one transaction at REPEATABLE READ sees one night across all tables.

A reader reads one published table, a whole night is published meanwhile,
then it reads another table in the same transaction: at REPEATABLE READ both
answers belong to the same night; at READ COMMITTED (the default) the second
already shows the next night, which is why the README asks for the former.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from cohortflow.demo import DemoSpec, generate
from tests.conftest import Project, pg_settings

START = dt.date(2026, 11, 1)


def _run(project: Project, d: dt.date) -> None:
    env = {**os.environ, **project.environ, "COHORTFLOW_CONFIG": str(project.config_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "cohortflow.cli", "run", "--date", str(d)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("isolation", "mixed"), [("REPEATABLE READ", False), ("READ COMMITTED", True)])
def test_one_repeatable_read_transaction_never_sees_two_nights(tmp_path, isolation, mixed):
    pg_settings()
    project = Project(tmp_path / "p", "postgres", timezone="UTC")
    generate(DemoSpec(users=80, days=3, start_date=START, timezone="UTC", seed=9), project.landing)
    reader = sa.create_engine(sa.make_url(project.db_url).set(password=project.password), isolation_level=isolation)
    try:
        _run(project, START)
        for night in (1, 2):
            with reader.connect() as conn, conn.begin():
                dates_a = conn.execute(sa.text("select count(*) from reports.active_users_daily")).scalar()
                _run(project, START + dt.timedelta(days=night))  # a whole night is published meanwhile
                dates_b = conn.execute(sa.text("select count(distinct event_date) from reports.event_metrics_daily")).scalar()
            assert dates_a == night
            assert (dates_b != dates_a) is mixed, f"{isolation}: {dates_a} active-user dates, {dates_b} event-metric dates"
            with reader.connect() as conn, conn.begin():
                assert conn.execute(sa.text("select count(*) from reports.active_users_daily")).scalar() == night + 1
    finally:
        reader.dispose()
        project.cleanup()

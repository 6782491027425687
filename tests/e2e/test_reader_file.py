"""DuckDB: BI reads a published copy that is swapped atomically, while runs write the warehouse."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.publish import reader_file_path
from cohortflow.runner import run_workflow

START = dt.date(2026, 11, 1)

READER = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    print(con.execute("select count(*) from active_users_daily").fetchone()[0], flush=True)
    sys.stdin.readline()  # the test publishes the next night meanwhile
    print(con.execute("select count(*) from active_users_daily").fetchone()[0], flush=True)
    """
)


def test_bi_reads_the_published_copy_while_the_next_night_runs(make_project):
    project = make_project("duckdb")
    generate(DemoSpec(users=100, days=3, start_date=START, timezone="UTC", seed=2), project.landing)
    cfg, wh = project.config(), project.warehouse()
    wf = load_workflows()["cohortflow_nightly"]
    try:
        run_workflow(cfg, wh, wf, START, echo=lambda _m: None)
        path = reader_file_path(cfg)
        reader = subprocess.Popen(
            [sys.executable, "-c", READER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert reader.stdout.readline().strip() == "1"
        # The writer holds the working warehouse; the reader holds the published copy: both work.
        run_workflow(cfg, wh, wf, START + dt.timedelta(days=1), echo=lambda _m: None)
        out, _ = reader.communicate("go\n", timeout=60)
        assert out.strip() == "1", "an open reader keeps the complete state it opened"
    finally:
        wh.dispose()
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys, duckdb; print(duckdb.connect(sys.argv[1], read_only=True)"
         ".execute('select count(*) from active_users_daily').fetchone()[0])", str(path)],
        capture_output=True, text=True, check=True,
    )
    assert fresh.stdout.strip() == "2", "a new reader sees the newly published state"

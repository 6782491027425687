"""One nightly run through a DolphinScheduler server vs the same run locally (``cohortflow run``).

Generates demo logs into two twin projects (same config and landing files,
each its own DuckDB warehouse), registers the nightly workflow on the server,
starts it for the first business date and polls the REST API until it
finishes; then runs the same date locally in a child process. Prints both wall
times, the ratio (server / local), the server's time spent inside tasks, and
the server JVM's resident memory. The published tables of both must be equal
before any time is printed.

Run it where the server listens, with its environment:

    eval "$(scripts/dolphinscheduler.sh env)"
    PYDS_USER_PASSWORD=... scripts/dolphinscheduler.sh exec .venv/bin/python benchmarks/bench_dolphinscheduler.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cohortflow.config import load_config  # noqa: E402
from cohortflow.demo import DemoSpec, generate  # noqa: E402
from cohortflow.ds_api import FINISHED_STATES, DolphinSchedulerApi  # noqa: E402
from cohortflow.models import published_models  # noqa: E402
from cohortflow.register import register  # noqa: E402
from cohortflow.warehouse import Warehouse  # noqa: E402
from tests.conftest import write_config  # noqa: E402

START = dt.date(2026, 11, 1)
WORKFLOW = "cohortflow_nightly"


def _published(cfg) -> dict:
    wh = Warehouse(cfg)
    try:
        with wh.begin() as conn:
            return {
                m.name: sorted(map(repr, wh.execute(conn, f"select * from reports.{m.name}").fetchall()))
                for m in published_models()
            }
    finally:
        wh.dispose()


def _rss_mib(pid: str | None, field: str) -> str:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return f"{int(line.split()[1]) // 1024} MiB"
    except (OSError, ValueError):
        pass
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=3, help="days of logs generated (the run is for the first)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ds-"))
    ds = {"project": "cohortflow_bench", "tenant": os.environ.get("COHORTFLOW_DOLPHINSCHEDULER__TENANT", "root")}
    paths = {}
    for side in ("server", "local"):
        paths[side] = write_config(root / side, timezone="UTC", dolphinscheduler=ds)
    generate(DemoSpec(users=args.users, days=args.days, start_date=START, timezone="UTC", seed=3, fmt="ark"), root / "server" / "landing" / "ark")
    shutil.copytree(root / "server" / "landing", root / "local" / "landing")
    cfg = load_config(paths["server"])

    register(cfg, dry_run=False, config_path=paths["server"], echo=lambda _m: None)
    api = DolphinSchedulerApi(cfg, WORKFLOW)
    known = {i["id"] for i in api.recent_instances(50)}
    t0 = time.perf_counter()
    api.start_date(START)
    while True:
        new = [i for i in api.recent_instances(10) if i["id"] not in known]
        if new and new[0]["state"] in FINISHED_STATES:
            break
        time.sleep(1)
    server_seconds = time.perf_counter() - t0
    inst = new[0]
    if inst["state"] != "SUCCESS":
        raise SystemExit(f"the server run ended {inst['state']}")
    fmt = "%Y-%m-%d %H:%M:%S"
    tasks = api.task_instances(inst["id"])
    in_tasks = sum(
        (dt.datetime.strptime(t["endTime"], fmt) - dt.datetime.strptime(t["startTime"], fmt)).total_seconds() for t in tasks
    )

    cli = str(Path(sys.executable).parent / "cohortflow")
    t0 = time.perf_counter()
    subprocess.run([cli, "run", "--date", str(START), "--config", str(paths["local"])], check=True, capture_output=True)
    local_seconds = time.perf_counter() - t0

    if _published(cfg) != _published(load_config(paths["local"])):
        raise SystemExit("the published tables differ between the server run and the local run")
    pid = os.environ.get("COHORTFLOW_DS_PID")
    print(f"nightly run for {START}, {args.users} users, DuckDB, {len(tasks)} tasks on the server")
    print(f"  DolphinScheduler 3.1.1: {server_seconds:.1f} s from start to finished (inside tasks {in_tasks:.0f} s)")
    print(f"  local cohortflow run:   {local_seconds:.1f} s")
    print(f"  ratio server / local:   {server_seconds / local_seconds:.2f}x")
    print(f"  server JVM: RSS {_rss_mib(pid, 'VmRSS')}, peak {_rss_mib(pid, 'VmHWM')}")
    print(f"  (projects in {root})")


if __name__ == "__main__":
    main()

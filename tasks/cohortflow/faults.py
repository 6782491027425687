"""Named points inside the tasks where the fault tests stop a run the hard way.

``COHORTFLOW_FAULT=<point>:kill`` makes the process SIGKILL itself when it
reaches ``<point>`` (nothing is cleaned up, as after a power cut or the OOM
killer); ``<point>:pause`` writes ``<target>/.fault-<point>`` and waits (up to
ten minutes) until that file is removed, so a test can stop the database
meanwhile. Unset (always, in production), :func:`checkpoint` does nothing.

The points: ``ingest`` (rows loaded, transaction not committed),
``validate`` (results computed, not stored), ``models`` (the first models
committed, the rest not built), ``publish`` (reports written, not committed),
``snapshots`` (reports committed, the first snapshot written under its
temporary name), ``reader_copy`` (the BI copy half written under its
temporary name).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

FAULT_ENV = "COHORTFLOW_FAULT"
POINTS = ("ingest", "validate", "models", "publish", "snapshots", "reader_copy")
_fired: set[str] = set()


def checkpoint(point: str, target: Path | None = None) -> None:
    """Act on the fault named by ``COHORTFLOW_FAULT`` the first time this process reaches ``point``."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, action = spec.partition(":")
    if name != point or point in _fired:
        return
    _fired.add(point)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "pause" and target is not None:
        flag = target / f".fault-{point}"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text(str(os.getpid()))
        deadline = time.monotonic() + 600
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

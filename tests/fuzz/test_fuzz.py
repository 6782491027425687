"""A sample of the ingest fuzz (tests/fuzz/fuzz_ingest.py) on every engine, run as its documented command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import pg_settings

REPO = Path(__file__).resolve().parents[2]
SAMPLE = 300  # mutated lines per format; the full run is --lines 10000 (README, "Fault tolerance")


def test_fuzzed_lines_and_damaged_files_never_stop_the_night(engine):
    if engine == "postgres":
        pg_settings()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.fuzz_ingest", "--lines", str(SAMPLE), "--engine", engine, "--seed", "7"],
        cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = summary["outcomes"]
    assert summary["mutated_per_format"] == SAMPLE
    # Every targeted reason occurred: the sample exercises each documented rule.
    for reason in ("event_in_future", "event_too_late", "invalid_field", "value_too_long", "invalid_encoding", "invalid_json"):
        assert outcomes.get(reason, 0) > 0, (reason, outcomes)
    assert outcomes.get("loaded", 0) > 0 and outcomes.get("duplicate", 0) > 0

"""Helpers: run a step in a child process and report its wall time and peak memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def measure(code: str, env: dict[str, str] | None = None) -> dict:
    """Run python ``code`` in a fresh interpreter; return seconds, peak RSS (MiB) and its JSON output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"step failed:\n{proc.stdout}\n{proc.stderr}")
    # ru_maxrss of children is the max over all children so far: run the largest last or use wait4.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    return {"seconds": seconds, "peak_mib": max(peak, before) / 1024, "out": out}


def measure_wait4(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a command; its own peak RSS via wait4 (not the max over earlier children)."""
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        t0 = time.perf_counter()
        # Output goes to files, not pipes: a child writing more than a pipe holds would block before wait4 returns.
        proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out_file, stderr=err_file, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out_file.seek(0)
        err_file.seek(0)
        stdout, stderr = out_file.read(), err_file.read()
    if proc.returncode != 0:
        raise SystemExit(f"step failed: {' '.join(argv)}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
    try:
        out = json.loads(last)
    except json.JSONDecodeError:
        out = {}
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "out": out}

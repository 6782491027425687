"""Helpers: run a step in a child process and report its wall time and peak memory."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
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
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    stdout = proc.stdout.read()
    stderr = proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"step failed: {' '.join(argv)}\n{stdout[-2000:]}\n{stderr[-2000:]}")
    last = stdout.strip().splitlines()[-1] if stdout.strip() else "{}"
    try:
        out = json.loads(last)
    except json.JSONDecodeError:
        out = {}
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "out": out}

"""Recent runs and their task states, from the local run log."""

from __future__ import annotations

import json

from cohortflow.config import Config
from cohortflow.warehouse import Warehouse


def local_status(wh: Warehouse, limit: int = 10) -> str:
    wh.bootstrap()
    with wh.begin() as conn:
        rows = wh.execute(
            conn,
            """
            with runs as (
                select run_id, min(started_at) as first_start
                from meta.run_log
                group by run_id
                order by first_start desc
                limit :limit
            )
            select l.run_id, l.business_date, l.workflow, l.task, l.status, l.runner,
                   l.started_at, l.ended_at, l.rows_in, l.rows_out, l.error
            from meta.run_log as l
            join runs on runs.run_id = l.run_id
            order by runs.first_start desc, l.started_at
            """,
            {"limit": limit},
        ).fetchall()
    if not rows:
        return "no runs yet"
    out: list[str] = []
    current = None
    for run_id, d, wf, task, status, runner, started, ended, rows_in, rows_out, error in rows:
        if run_id != current:
            current = run_id
            out.append(f"run {run_id}  {wf}  business date {d}")
        secs = f"{(ended - started).total_seconds():.1f}s" if ended else "-"
        counts = f" in={rows_in:,}" if rows_in is not None else ""
        counts += f" out={rows_out:,}" if rows_out is not None else ""
        line = f"  {task:<10} {status:<16} {runner:<6} {started:%Y-%m-%d %H:%M:%S} {secs:>7}{counts}"
        if error:
            line += f"\n             {error.splitlines()[0][:200]}"
        out.append(line)
    return "\n".join(out)


def busy_status(cfg: Config, reason: str) -> str:
    """What can be said without the warehouse, when a run holds the DuckDB file: the running task (from the status
    file the runner keeps) and the last publish (from its completion marker)."""
    from cohortflow.publish import read_state
    from cohortflow.runner import status_file

    lines = [f"the warehouse is in use by a running process, so the run log cannot be read now ({reason})"]
    try:
        doc = json.loads(status_file(cfg).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if doc:
        lines.append(
            f"  {doc.get('state', '?')}: task {doc.get('task')} for business date {doc.get('business_date')} "
            f"(run {doc.get('run_id')}, pid {doc.get('pid')} on {doc.get('host')}, since {doc.get('started_at')})"
        )
    state = read_state(cfg)
    if state:
        lines.append(f"  last publish: {state.get('state')} for business date {state.get('business_date')} at {state.get('updated_at')}")
        if state.get("reader_file"):
            lines.append(f"  BI reader copy (readable now): {state['reader_file']}")
    return "\n".join(lines)


def is_busy(message: str) -> bool:
    """A DuckDB file held by another process."""
    return "Could not set lock on file" in message or "Conflicting lock" in message

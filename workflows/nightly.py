"""The nightly workflow: one business date from raw logs to published tables.

    ingest ──► validate ──┐
       │                  ├──► publish
       └────► models ─────┘

- ingest:   read the date's landing files, map, dedupe, quarantine, load raw.events
- validate: Great Expectations suites on the loaded rows; critical failures stop here
- models:   rebuild the model tables for the dates the new data can change
- publish:  swap the new partitions into ``reports`` at once, write the Parquet snapshot (with its
            manifest) and the HTML report, then move ``snapshots/latest``

Each task runs ``cohortflow task <name> --date <business date>``; on
DolphinScheduler the date is the built-in ``${system.biz.date}``, passed as the
workflow parameter ``bizdate``. On a server ``models`` is one task per SQL model
(edges from the models' ``depends_on``), and on a DuckDB warehouse (one writer)
every task waits for the one before it:

    ingest ──► validate ──► stg_identities ──► stg_events ──► ... models ... ──► publish
"""

from cohortflow.dag import Task, Workflow

WORKFLOW = Workflow(
    name="cohortflow_nightly",
    description="Nightly cohortflow run: ingest raw SDK logs, validate, build models, publish reports.",
    schedule="0 30 2 * * ? *",
    tasks=(
        Task(
            name="ingest",
            description="Load the business date's raw SDK logs into raw.events; quarantine bad lines; print the ledger.",
            timeout_minutes=60,
        ),
        Task(
            name="validate",
            description="Run the Great Expectations suites on the loaded rows; stop on critical failures.",
            upstream=("ingest",),
            timeout_minutes=30,
        ),
        Task(
            name="models",
            description="Rebuild model tables for every date the new data can change (bounded by the lookback).",
            upstream=("ingest",),
            timeout_minutes=120,
            per_model=True,
        ),
        Task(
            name="publish",
            description="Atomically publish the rebuilt partitions to the reports schema; write the snapshot and the HTML report.",
            upstream=("validate", "models"),
            timeout_minutes=30,
        ),
    ),
)

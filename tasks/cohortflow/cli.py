"""The ``cohortflow`` command line: the DAG's stages and the operator's jobs.

Exit codes: 0 success, 1 a task or run failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import time
from pathlib import Path

import click

from cohortflow.config import Config, ConfigError, load_config, parse_business_date

EXIT_FAILED = 1
EXIT_USAGE = 2


class DateParam(click.ParamType):
    name = "DATE"

    def convert(self, value, param, ctx):  # type: ignore[override]
        if isinstance(value, dt.date):
            return value
        try:
            return parse_business_date(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DATE = DateParam()

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="COHORTFLOW_CONFIG",
    show_envvar=True,
    help="Project config file (default: ./cohortflow.yml).",
)


def _load(config_path: Path | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _warehouse(cfg: Config):
    from cohortflow.warehouse import Warehouse, WarehouseError

    try:
        return Warehouse(cfg)
    except WarehouseError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _workflow(name: str):
    from cohortflow.dag import load_workflows

    workflows = load_workflows()
    if name not in workflows:
        click.echo(f"error: unknown workflow {name!r}; declared: {', '.join(workflows)}", err=True)
        sys.exit(EXIT_USAGE)
    return workflows[name]


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


class _Group(click.Group):
    """Every verb: a warehouse that cannot be reached, or refuses, is one line naming it (no traceback)."""

    def invoke(self, ctx: click.Context):
        from cohortflow.warehouse import WarehouseError

        try:
            return super().invoke(ctx)
        except WarehouseError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cohortflow")
def main() -> None:
    """cohortflow: product-analytics tables from raw SDK tracking logs."""


@main.command()
@config_option
@click.option("--date", "business_date", type=DATE, required=True, help="Business date, YYYY-MM-DD or YYYYMMDD.")
@click.option("--workflow", default="cohortflow_nightly", show_default=True)
@click.option("--restart", is_flag=True, help="Start a new run instead of resuming an unfinished one.")
def run(config_path, business_date, workflow, restart):
    """Run the declared workflow for one business date, task by task."""
    from cohortflow.runner import TaskFailed, run_workflow
    from cohortflow.warehouse import WarehouseError

    cfg = _load(config_path)
    wh = _warehouse(cfg)
    try:
        run_id = run_workflow(cfg, wh, _workflow(workflow), business_date, resume=not restart, echo=click.echo)
    except (TaskFailed, WarehouseError) as exc:
        _fail(str(exc))
    finally:
        wh.dispose()
    click.echo(f"run {run_id} for {business_date} succeeded")


@main.command()
@config_option
@click.argument("name")
@click.option("--date", "business_date", type=DATE, required=True, help="Business date, YYYY-MM-DD or YYYYMMDD.")
@click.option("--workflow", default="cohortflow_nightly", show_default=True)
@click.option("--run-id", default=None, help="Run id to log under (default: a new one, or $COHORTFLOW_RUN_ID).")
def task(config_path, name, business_date, workflow, run_id):
    """Run one task of a workflow (the command a DolphinScheduler Shell task runs)."""
    from cohortflow.runner import TaskFailed, run_task, task_names
    from cohortflow.warehouse import WarehouseError

    wf = _workflow(workflow)
    names = [t.name for t in wf.tasks] if any(t.name == name for t in wf.tasks) else task_names(wf)
    if name not in names:
        click.echo(f"error: unknown task {name!r}; tasks: {', '.join(names)}", err=True)
        sys.exit(EXIT_USAGE)
    cfg = _load(config_path)
    wh = _warehouse(cfg)
    try:
        run_task(cfg, wh, wf, name, business_date, run_id=run_id, runner="cli", echo=click.echo)
    except (TaskFailed, WarehouseError) as exc:
        _fail(str(exc))
    finally:
        wh.dispose()


@main.command()
@config_option
@click.option("--start", "start", type=DATE, required=True)
@click.option("--end", "end", type=DATE, required=True)
@click.option("--workflow", default="cohortflow_nightly", show_default=True)
@click.option(
    "--on",
    "on",
    type=click.Choice(["local", "dolphinscheduler"]),
    default="local",
    show_default=True,
    help="Run here, or start a backfill (complement data) of the registered workflow on DolphinScheduler.",
)
@click.option(
    "--parallelism",
    type=click.IntRange(min=1),
    default=None,
    help="Dates DolphinScheduler runs at once (PostgreSQL warehouses only; default: one after the other).",
)
def backfill(config_path, start, end, workflow, on, parallelism):
    """Run the workflow for every date from START to END (inclusive), in order."""
    from cohortflow.runner import TaskFailed, run_workflow
    from cohortflow.warehouse import WarehouseError, date_range

    if end < start:
        click.echo("error: --end is before --start", err=True)
        sys.exit(EXIT_USAGE)
    if on == "dolphinscheduler":
        _backfill_on_dolphinscheduler(config_path, start, end, workflow, parallelism)
        return
    if parallelism is not None:
        click.echo("error: --parallelism applies to --on dolphinscheduler; a local backfill runs one date at a time", err=True)
        sys.exit(EXIT_USAGE)
    cfg = _load(config_path)
    wh = _warehouse(cfg)
    wf = _workflow(workflow)
    days = date_range(start, end)
    try:
        for i, d in enumerate(days, 1):
            click.echo(f"== {d} ({i}/{len(days)})")
            run_workflow(cfg, wh, wf, d, echo=click.echo)
    except (TaskFailed, WarehouseError) as exc:
        _fail(str(exc))
    finally:
        wh.dispose()
    click.echo(f"backfill {start}..{end} succeeded ({len(days)} dates)")


def _backfill_on_dolphinscheduler(config_path, start, end, workflow, parallelism):
    from cohortflow.ds_api import DolphinSchedulerApi, DSApiError, DSConfigError, backfill_mode

    cfg = _load(config_path)
    _workflow(workflow)
    try:
        run_mode, n = backfill_mode(cfg.warehouse_url, parallelism)
        api = DolphinSchedulerApi(cfg, workflow)
        api.start_backfill(start, end, parallelism=n, run_mode=run_mode)
    except DSConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except DSApiError as exc:
        _fail(str(exc))
    how = f"{n} dates at a time" if n else "one date after the other, oldest first"
    click.echo(
        f"backfill {start}..{end} of {workflow} started on DolphinScheduler ({how}); "
        "follow it with 'cohortflow status --server'"
    )


@main.command()
@config_option
@click.option(
    "--on",
    "on",
    type=click.Choice(["dolphinscheduler"]),
    required=True,
    help="Where the failed run is (a local run resumes with 'cohortflow run --date D').",
)
@click.option("--workflow", default="cohortflow_nightly", show_default=True)
@click.option("--instance", "instance_id", type=int, default=None, help="Workflow instance id (default: the latest failed one).")
def rerun(config_path, on, workflow, instance_id):
    """Rerun a failed workflow instance from its failed tasks (they and their downstream run again)."""
    from cohortflow.ds_api import DolphinSchedulerApi, DSApiError, DSConfigError

    cfg = _load(config_path)
    _workflow(workflow)
    try:
        api = DolphinSchedulerApi(cfg, workflow)
        if instance_id is None:
            instance_id = int(api.latest_failed_instance()["id"])
        api.rerun_failed(instance_id)
    except DSConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except DSApiError as exc:
        _fail(str(exc))
    click.echo(
        f"instance {instance_id} of {workflow} rerun from its failed tasks on DolphinScheduler; "
        "follow it with 'cohortflow status --server'"
    )


@main.command()
@config_option
@click.option("--start", "start", type=DATE, default=None, help="First date to rebuild (with --end; default: every model whole).")
@click.option("--end", "end", type=DATE, default=None, help="Last date to rebuild.")
def rebuild(config_path, start, end):
    """Rebuild the models from the loaded events and publish: the dates START..END of every model, or every model whole."""
    from cohortflow.runner import TaskFailed, rebuild_range
    from cohortflow.warehouse import WarehouseError

    if (start is None) != (end is None):
        click.echo("error: give both --start and --end, or neither (a whole rebuild)", err=True)
        sys.exit(EXIT_USAGE)
    if start is not None and end < start:
        click.echo("error: --end is before --start", err=True)
        sys.exit(EXIT_USAGE)
    cfg = _load(config_path)
    wh = _warehouse(cfg)
    try:
        rebuild_range(cfg, wh, start, end, echo=click.echo)
    except (TaskFailed, WarehouseError) as exc:
        _fail(str(exc))
    finally:
        wh.dispose()


@main.command()
@config_option
@click.option("--limit", default=10, show_default=True, help="How many runs to show.")
@click.option("--server", is_flag=True, help="Read the workflow instances from the DolphinScheduler REST API instead of the local run log.")
def status(config_path, limit, server):
    """Show recent runs and their task states from the run log."""
    from cohortflow.status import local_status

    cfg = _load(config_path)
    if server:
        from cohortflow.ds_api import DolphinSchedulerApi, DSApiError, DSConfigError, server_status

        try:
            click.echo(server_status(DolphinSchedulerApi(cfg), limit))
        except DSConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except DSApiError as exc:
            _fail(str(exc))
        return
    from cohortflow.status import busy_status, is_busy
    from cohortflow.warehouse import WarehouseError

    wh = _warehouse(cfg)
    try:
        click.echo(local_status(wh, limit))
    except WarehouseError as exc:
        if wh.dialect == "duckdb" and is_busy(str(exc)):
            click.echo(busy_status(cfg, "DuckDB admits one process at a time"))
            return
        _fail(str(exc))
    finally:
        wh.dispose()


@main.command("register")
@config_option
@click.option("--dry-run", is_flag=True, help="Print the workflow definitions as JSON (placeholder task codes); contact no server.")
@click.option("--workflow", default=None, help="Register only this workflow (default: every declared one).")
def register_cmd(config_path, dry_run, workflow):
    """Submit the declared workflows to DolphinScheduler (PyDolphinScheduler); again = update in place."""
    from cohortflow.config import find_config_path
    from cohortflow.register import GatewayError, RegistrationError, register

    from cohortflow.ds_api import DSApiError, DSConfigError

    cfg = _load(config_path)
    try:
        register(cfg, dry_run, workflow=workflow, config_path=find_config_path(config_path), echo=click.echo)
    except (GatewayError, DSApiError) as exc:
        if isinstance(exc, DSConfigError):
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        _fail(str(exc))
    except RegistrationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@config_option
@click.argument("model")
@click.option("--date", "business_date", type=DATE, required=True)
@click.option("--start", "start", type=DATE, default=None, help="First date of the range (default: --date).")
@click.option("--dialect", type=click.Choice(["duckdb", "postgres"]), default=None, help="Engine (default: the configured warehouse's).")
def render(config_path, model, business_date, start, dialect):
    """Print the exact SQL a model runs for a date on an engine, and the values it binds."""
    from cohortflow.analyses import model_params
    from cohortflow.models import render_model

    cfg = _load(config_path)
    if dialect is None:
        dialect = "postgres" if cfg.warehouse_url.startswith("postgresql") else "duckdb"
    try:
        click.echo(render_model(model, dialect, start or business_date, business_date, model_params(cfg)))
    except KeyError as exc:
        click.echo(f"error: {exc.args[0]}", err=True)
        sys.exit(EXIT_USAGE)


@main.command("grant-reader")
@config_option
@click.option("--role", default="cohortflow_reader", show_default=True, help="Role to create or update.")
@click.option("--password-env", default="COHORTFLOW_READER_PASSWORD", show_default=True, help="Environment variable holding the role's password (unset: a NOLOGIN role to grant to users).")
def grant_reader_cmd(config_path, role, password_env):
    """Create a read-only role for BI tools with access to the reports schema only (PostgreSQL)."""
    import os

    from cohortflow.access import grant_reader
    from cohortflow.warehouse import WarehouseError

    cfg = _load(config_path)
    wh = _warehouse(cfg)
    try:
        for statement in grant_reader(wh, role, os.environ.get(password_env) or None):
            click.echo(statement)
    except (WarehouseError, ValueError, OSError) as exc:
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    finally:
        wh.dispose()
    click.echo(f"role {role} can read reports.* (and nothing else of the warehouse)")


@main.command("check-config")
@config_option
@click.option("--offline", is_flag=True, help="Check the file only: do not contact the warehouse.")
def check_config(config_path, offline):
    """Validate the project config, check that its landing root exists, the password variable is set when the
    warehouse needs one and the warehouse answers; print the settings in force (no secrets). Exit 2 on a problem."""
    from cohortflow.warehouse import WarehouseError

    cfg = _load(config_path)
    click.echo(f"config ok: project {cfg.project}, time zone {cfg.timezone}")
    problems: list[str] = []
    wh = _warehouse(cfg)
    click.echo(f"  warehouse: {wh.url_text}")
    click.echo(f"  landing root: {cfg.landing_path}")
    if not cfg.landing_path.is_dir():
        problems.append(f"landing root {cfg.landing_path} does not exist (setting landing_root)")
    for i, src in enumerate(cfg.sources):
        folder = cfg.landing_path / src.path
        click.echo(f"  source {src.name}: {src.format} files under {folder}/<YYYY-MM-DD>/")
        if cfg.landing_path.is_dir() and not folder.is_dir():
            problems.append(f"source folder {folder} does not exist (setting sources.{i}.path)")
    click.echo(f"  outputs: {cfg.target_path}")
    click.echo(
        f"  windows: late arrivals accepted {cfg.ingest.late_arrival_days} days, "
        f"duplicates recognised {cfg.ingest.lookback_days} days apart"
    )
    if wh.dialect == "postgres" and cfg.warehouse.password is None:
        problems.append("the warehouse is PostgreSQL and COHORTFLOW_WAREHOUSE__PASSWORD is not set")
    elif wh.dialect == "duckdb" and not Path(wh.engine.url.database or "").exists():
        click.echo("  warehouse file not created yet (the first run creates it)")
    elif not offline:
        try:
            with wh.begin() as conn:
                wh.scalar(conn, "select 1")
            click.echo("  warehouse answers")
        except WarehouseError as exc:
            problems.append(str(exc))
    wh.dispose()
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    if problems:
        sys.exit(EXIT_USAGE)


@main.command()
@click.option("--dir", "project_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True, help="Folder of the demo project (config, landing files, outputs).")
@click.option("--users", default=2000, show_default=True, help="People in the generated logs.")
@click.option("--days", default=14, show_default=True, help="Business dates to generate and run.")
@click.option("--start", "start", type=DATE, default="2026-11-01", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["ark", "sensors", "segment", "posthog", "canonical"]), default="ark", show_default=True)
@click.option("--seed", default=7, show_default=True)
@click.option("--generate-only", is_flag=True, help="Write the logs and the config; do not run the workflow.")
@click.option("--force", is_flag=True, help="Replace an existing demo folder.")
def demo(project_dir, users, days, start, fmt, seed, generate_only, force):
    """Generate realistic raw SDK logs and run the nightly workflow on every date."""
    from cohortflow.demo_project import run_demo

    if project_dir.exists() and any(project_dir.iterdir()):
        if not force:
            click.echo(f"error: {project_dir} exists and is not empty; pass --force to replace it", err=True)
            sys.exit(EXIT_USAGE)
        shutil.rmtree(project_dir)
    t0 = time.monotonic()
    try:
        run_demo(project_dir, users=users, days=days, start=start, fmt=fmt, seed=seed, run=not generate_only, echo=click.echo)
    except Exception as exc:  # noqa: BLE001 - report, exit non-zero
        from cohortflow.runner import TaskFailed

        if isinstance(exc, TaskFailed):
            _fail(str(exc))
        raise
    click.echo(f"demo finished in {time.monotonic() - t0:.0f}s")


if __name__ == "__main__":  # pragma: no cover
    main()

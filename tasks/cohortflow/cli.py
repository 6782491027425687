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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    from cohortflow.runner import STAGES, TaskFailed, run_task
    from cohortflow.warehouse import WarehouseError

    if name not in STAGES:
        click.echo(f"error: unknown task {name!r}; tasks: {', '.join(STAGES)}", err=True)
        sys.exit(EXIT_USAGE)
    cfg = _load(config_path)
    wh = _warehouse(cfg)
    try:
        run_task(cfg, wh, _workflow(workflow), name, business_date, run_id=run_id, runner="cli", echo=click.echo)
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
@click.option("--start", "start", type=DATE, required=True)
@click.option("--end", "end", type=DATE, required=True)
def rebuild(config_path, start, end):
    """Rebuild every model for a date range from the loaded events, and publish it."""
    from cohortflow.runner import TaskFailed, rebuild_range
    from cohortflow.warehouse import WarehouseError

    if end < start:
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
    wh = _warehouse(cfg)
    try:
        click.echo(local_status(wh, limit))
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

    cfg = _load(config_path)
    try:
        register(cfg, dry_run, workflow=workflow, config_path=find_config_path(config_path), echo=click.echo)
    except GatewayError as exc:
        _fail(str(exc))
    except RegistrationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@config_option
@click.argument("model")
@click.option("--date", "business_date", type=DATE, required=True)
@click.option("--start", "start", type=DATE, default=None, help="First date of the range (default: --date).")
@click.option("--dialect", type=click.Choice(["duckdb", "postgres", "trino"]), default=None, help="Engine (default: the configured warehouse's).")
def render(config_path, model, business_date, start, dialect):
    """Print the exact SQL a model runs for a date on an engine, and the values it binds."""
    from cohortflow.analyses import model_params
    from cohortflow.models import render_model

    cfg = _load(config_path)
    if dialect is None:
        url = cfg.warehouse_url
        dialect = "postgres" if url.startswith("postgresql") else "trino" if url.startswith("trino") else "duckdb"
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
    except (WarehouseError, ValueError) as exc:
        _fail(str(exc))
    finally:
        wh.dispose()
    click.echo(f"role {role} can read reports.* (and nothing else of the warehouse)")


@main.command("check-config")
@config_option
def check_config(config_path):
    """Validate the project config and print the settings in force (no secrets)."""
    cfg = _load(config_path)
    click.echo(f"config ok: project {cfg.project}, time zone {cfg.timezone}")
    from cohortflow.warehouse import Warehouse

    click.echo(f"  warehouse: {Warehouse(cfg).url_text}")
    click.echo(f"  landing root: {cfg.landing_path}")
    for s in cfg.sources:
        click.echo(f"  source {s.name}: {s.format} files under {cfg.landing_path / s.path}/<YYYY-MM-DD>/")
    click.echo(f"  outputs: {cfg.target_path}")


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

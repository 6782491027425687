"""The ``cohortflow`` command line: the DAG's stages and the operator's jobs.

Exit codes: 0 success, 1 a task or run failed, 2 bad usage or configuration.
Progress and outcomes are timestamped log lines on stderr (``--log-format
json``, ``--log-file``, ``--quiet``: see :mod:`cohortflow.logs`); what a
command is asked for (SQL, status, definitions) goes to stdout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import click

from cohortflow import logs
from cohortflow.config import Config, ConfigError, load_config, parse_business_date
from cohortflow.progress import duration, eta, plural

EXIT_FAILED = 1
EXIT_USAGE = 2

WORKFLOW_HELP = "Declared workflow to run (see workflows/)."


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


def _set_log_format(ctx, param, value):
    if value is not None:
        logs.configure(fmt=value)
    return value


def _set_quiet(ctx, param, value):
    if value:
        logs.configure(quiet=True)
    return value


def _set_log_file(ctx, param, value):
    if value is not None:
        try:
            logs.configure(file=value)
        except OSError as exc:
            raise click.BadParameter(f"cannot write the log file: {exc.strerror or exc}", ctx=ctx, param=param) from None
    return value


def log_options(f):
    """The logging options; accepted before the command and after it (``cohortflow -q run ...`` = ``run ... -q``)."""
    f = click.option(
        "--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None, expose_value=False,
        callback=_set_log_file, envvar="COHORTFLOW_LOG_FILE", show_envvar=True,
        help="Also append every log line to this file (all levels, even with --quiet).",
    )(f)
    f = click.option(
        "--log-format", type=click.Choice(logs.FORMATS), default=None, expose_value=False, callback=_set_log_format,
        envvar="COHORTFLOW_LOG_FORMAT", show_envvar=True,
        help="Log lines as timestamped text (default) or as one JSON object per line.",
    )(f)
    f = click.option(
        "-q", "--quiet", is_flag=True, default=False, expose_value=False, callback=_set_quiet,
        help="Only warnings and errors on the terminal (the output a command is asked for still prints).",
    )(f)
    return f


def _usage(message: str) -> None:
    logs.error(message)
    sys.exit(EXIT_USAGE)


def _fail(message: str) -> None:
    logs.error(message)
    sys.exit(EXIT_FAILED)


def _load(config_path: Path | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        _usage(str(exc))


def _warehouse(cfg: Config):
    from cohortflow.warehouse import Warehouse, WarehouseError

    try:
        return Warehouse(cfg)
    except WarehouseError as exc:
        _usage(str(exc))


@contextlib.contextmanager
def _command_warehouse(cfg: Config) -> Iterator:
    """The warehouse of a command: a failed task or a warehouse error ends the command with its one-line message
    (exit 1); the warehouse is disposed of either way."""
    from cohortflow.runner import TaskFailed
    from cohortflow.warehouse import WarehouseError

    wh = _warehouse(cfg)
    try:
        yield wh
    except (TaskFailed, WarehouseError) as exc:
        _fail(str(exc))
    finally:
        wh.dispose()


def _workflow(name: str):
    from cohortflow.dag import load_workflows

    workflows = load_workflows()
    if name not in workflows:
        _usage(f"unknown workflow {name!r}; declared: {', '.join(workflows)}")
    return workflows[name]


def model_names() -> list[str]:
    """Names of the SQL models (from the file names: cheap, for --help)."""
    import importlib.resources

    root = importlib.resources.files("cohortflow.sql")
    names = []
    for layer in ("staging", "models"):
        names += [p.name[: -len(".yml")] for p in root.joinpath(layer).iterdir() if p.name.endswith(".yml")]
    return sorted(names)


def task_names(workflow: str = "cohortflow_nightly") -> list[str]:
    """The names ``cohortflow task`` accepts: the workflow's stages and, for a task run per model on a server, the
    models."""
    from cohortflow.dag import load_workflows
    from cohortflow.runner import task_names as workflow_task_names

    workflows = load_workflows()
    return workflow_task_names(workflows[workflow]) if workflow in workflows else []


class ListingCommand(click.Command):
    """A command whose --help ends with the names an argument accepts, read when the help is shown."""

    def __init__(self, *args, listing=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.listing = listing

    def format_epilog(self, ctx, formatter):
        if self.listing is not None:
            title, names = self.listing()
            with formatter.section(title):
                formatter.write_text(", ".join(names))
        super().format_epilog(ctx, formatter)


class Main(click.Group):
    """Turns an unexpected exception into one error line and exit 1 (COHORTFLOW_DEBUG=1 prints the traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence of the command line
            from cohortflow.warehouse import WarehouseError

            if isinstance(exc, WarehouseError):  # a warehouse that cannot be reached, or refuses: one line naming it
                logs.error(str(exc))
                sys.exit(EXIT_FAILED)
            if os.environ.get("COHORTFLOW_DEBUG"):
                traceback.print_exc()
            logs.error(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                       " (set COHORTFLOW_DEBUG=1 for the traceback)")
            sys.exit(EXIT_FAILED)


def _start_logging(ctx, param, value):
    # Every command line starts from the default log settings (tests run many in one process).
    logs.reset()
    return value


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--_reset", hidden=True, is_flag=True, expose_value=False, callback=_start_logging, is_eager=True)
@log_options
@click.version_option(package_name="cohortflow")
def main() -> None:
    """cohortflow: product-analytics tables from raw SDK tracking logs.

    Every command takes --config PATH (default ./cohortflow.yml, or $COHORTFLOW_CONFIG). Exit codes: 0 success,
    1 a task or run failed, 2 bad usage or configuration.
    """


@main.command()
@config_option
@click.option("--date", "business_date", type=DATE, required=True, help="Business date, YYYY-MM-DD or YYYYMMDD.")
@click.option("--workflow", default="cohortflow_nightly", show_default=True, help=WORKFLOW_HELP)
@click.option("--restart", is_flag=True, help="Start a new run instead of resuming an unfinished one.")
@log_options
def run(config_path, business_date, workflow, restart):
    """Run the declared workflow for one business date, task by task (resumes an unfinished run)."""
    from cohortflow.runner import run_workflow

    cfg = _load(config_path)
    with _command_warehouse(cfg) as wh:
        wf = _workflow(workflow)
        run_id = run_workflow(cfg, wh, wf, business_date, resume=not restart, echo=logs.info)
    logs.info(f"run {run_id} for {business_date} succeeded")


@main.command(cls=ListingCommand, listing=lambda: ("Tasks", task_names()))
@config_option
@click.argument("name")
@click.option("--date", "business_date", type=DATE, required=True, help="Business date, YYYY-MM-DD or YYYYMMDD.")
@click.option("--workflow", default="cohortflow_nightly", show_default=True, help=WORKFLOW_HELP)
@click.option("--run-id", default=None, help="Run id to log under (default: $COHORTFLOW_RUN_ID, or a new one).")
@log_options
def task(config_path, name, business_date, workflow, run_id):
    """Run one task NAME of a workflow (the command a DolphinScheduler Shell task runs)."""
    from cohortflow.runner import run_task

    wf = _workflow(workflow)
    if name not in task_names(workflow):
        _usage(f"unknown task {name!r}; tasks: {', '.join(task_names(workflow))}")
    cfg = _load(config_path)
    with _command_warehouse(cfg) as wh:
        run_task(cfg, wh, wf, name, business_date, run_id=run_id, runner="cli", echo=logs.info)


@main.command()
@config_option
@click.option("--start", "start", type=DATE, required=True, help="First business date, YYYY-MM-DD or YYYYMMDD.")
@click.option("--end", "end", type=DATE, required=True, help="Last business date (inclusive).")
@click.option("--workflow", default="cohortflow_nightly", show_default=True, help=WORKFLOW_HELP)
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
@log_options
def backfill(config_path, start, end, workflow, on, parallelism):
    """Run the workflow for every date from START to END (inclusive), in order."""
    from cohortflow.runner import run_workflow
    from cohortflow.warehouse import date_range

    if end < start:
        _usage("--end is before --start")
    if on == "dolphinscheduler":
        _backfill_on_dolphinscheduler(config_path, start, end, workflow, parallelism)
        return
    if parallelism is not None:
        _usage("--parallelism applies to --on dolphinscheduler; a local backfill runs one date at a time")
    cfg = _load(config_path)
    with _command_warehouse(cfg) as wh:
        wf = _workflow(workflow)
        days = date_range(start, end)
        t0 = time.monotonic()
        for i, d in enumerate(days, 1):
            logs.info(f"== {d} ({eta(i - 1, len(days), time.monotonic() - t0)})")
            run_workflow(cfg, wh, wf, d, echo=logs.info)
    took = time.monotonic() - t0
    logs.info(f"backfill {start}..{end} succeeded ({plural(len(days), 'date')} in {duration(took)})")


def _backfill_on_dolphinscheduler(config_path, start, end, workflow, parallelism):
    from cohortflow.ds_api import DolphinSchedulerApi, DSApiError, DSConfigError, backfill_mode

    cfg = _load(config_path)
    _workflow(workflow)
    try:
        run_mode, n = backfill_mode(cfg.warehouse_url, parallelism)
        api = DolphinSchedulerApi(cfg, workflow)
        api.start_backfill(start, end, parallelism=n, run_mode=run_mode)
    except DSConfigError as exc:
        _usage(str(exc))
    except DSApiError as exc:
        _fail(str(exc))
    how = f"{plural(n, 'date')} at a time" if n else "one date after the other, oldest first"
    # What the command did on the server and where to follow it: the command's output.
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
@click.option("--workflow", default="cohortflow_nightly", show_default=True, help=WORKFLOW_HELP)
@click.option("--instance", "instance_id", type=int, default=None, help="Workflow instance id (default: the latest failed one).")
@log_options
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
        _usage(str(exc))
    except DSApiError as exc:
        _fail(str(exc))
    click.echo(
        f"instance {instance_id} of {workflow} rerun from its failed tasks on DolphinScheduler; "
        "follow it with 'cohortflow status --server'"
    )


@main.command()
@config_option
@click.option("--start", "start", type=DATE, default=None, help="First date to rebuild (with --end; default: every model whole).")
@click.option("--end", "end", type=DATE, default=None, help="Last date to rebuild (inclusive).")
@log_options
def rebuild(config_path, start, end):
    """Rebuild the models from the loaded events and publish: the dates START..END of every model, or every model whole."""
    from cohortflow.runner import rebuild_range

    if (start is None) != (end is None):
        _usage("give both --start and --end, or neither (a whole rebuild)")
    if start is not None and end < start:
        _usage("--end is before --start")
    cfg = _load(config_path)
    with _command_warehouse(cfg) as wh:
        rebuild_range(cfg, wh, start, end, echo=logs.info)


@main.command()
@config_option
@click.option("--limit", type=click.IntRange(min=1), default=10, show_default=True, help="How many runs to show.")
@click.option("--server", is_flag=True, help="Read the workflow instances from the DolphinScheduler REST API instead of the local run log.")
@log_options
def status(config_path, limit, server):
    """Show recent runs and their task states from the run log."""
    from cohortflow.status import local_status

    cfg = _load(config_path)
    if server:
        from cohortflow.ds_api import DolphinSchedulerApi, DSApiError, DSConfigError, server_status

        try:
            click.echo(server_status(DolphinSchedulerApi(cfg), limit))
        except DSConfigError as exc:
            _usage(str(exc))
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
@log_options
def register_cmd(config_path, dry_run, workflow):
    """Submit the declared workflows to DolphinScheduler (PyDolphinScheduler); again = update in place."""
    from cohortflow.config import find_config_path
    from cohortflow.ds_api import DSApiError, DSConfigError
    from cohortflow.register import GatewayError, RegistrationError, register

    cfg = _load(config_path)
    try:
        register(cfg, dry_run, workflow=workflow, config_path=find_config_path(config_path),
                 echo=click.echo if dry_run else logs.info)
    except (GatewayError, DSApiError) as exc:
        if isinstance(exc, DSConfigError):
            _usage(str(exc))
        _fail(str(exc))
    except RegistrationError as exc:
        _usage(str(exc))


@main.command(cls=ListingCommand, listing=lambda: ("Models", model_names()))
@config_option
@click.argument("model")
@click.option("--date", "business_date", type=DATE, required=True, help="Business date: the last date of the range built.")
@click.option("--start", "start", type=DATE, default=None, help="First date of the range (default: --date).")
@click.option("--dialect", type=click.Choice(["duckdb", "postgres", "trino"]), default=None, help="Engine (default: the configured warehouse's).")
@log_options
def render(config_path, model, business_date, start, dialect):
    """Print the exact SQL a MODEL runs for a date on an engine, and the values it binds."""
    from cohortflow.analyses import model_params
    from cohortflow.models import render_model

    if model not in model_names():
        _usage(f"unknown model {model!r}; models: {', '.join(model_names())}")
    cfg = _load(config_path)
    if dialect is None:
        url = cfg.warehouse_url
        dialect = "postgres" if url.startswith("postgresql") else "trino" if url.startswith("trino") else "duckdb"
    try:
        click.echo(render_model(model, dialect, start or business_date, business_date, model_params(cfg)))
    except KeyError as exc:
        _usage(str(exc.args[0]))


@main.command()
@config_option
@click.option("--date", "business_date", type=DATE, required=True, help="Business date of the report, YYYY-MM-DD or YYYYMMDD.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="HTML file to write (default: <target>/reports/<date>.html, and the index of dates beside it).",
)
@log_options
def report(config_path, business_date, output):
    """Write the self-contained HTML report of a business date from the published tables."""
    from cohortflow.report import write_report

    cfg = _load(config_path)
    with _command_warehouse(cfg) as wh:
        t0 = time.monotonic()
        with wh.begin() as conn:
            if not wh.table_exists(conn, "reports", "active_users_daily"):
                _usage(f"nothing is published in {wh.url_text} yet: run 'cohortflow run --date {business_date}' first")
        result = write_report(wh, cfg, business_date, out=output)
    logs.info(
        f"report for {business_date}: {result.path} ({result.bytes / 1048576:.1f} MiB, "
        f"{plural(len(result.charts), 'chart')}) in {duration(time.monotonic() - t0)}"
    )


@main.command()
@click.option("--check", is_flag=True, help="Exit 1 when the reference document differs from the model ymls, writing nothing.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the document here (e.g. docs/reference.md); default: print it.",
)
@log_options
def reference(check, output):
    """Generate the reference of the published tables (docs/reference.md) from sql/models/*.yml."""
    from cohortflow.contract import REFERENCE_PATH, reference_markdown

    text = reference_markdown()
    if check:
        path = output or Path(REFERENCE_PATH)
        if not path.is_file():
            _usage(f"{path} not found (run from the project's folder or pass --output)")
        if path.read_text(encoding="utf-8") != text:
            _fail(f"{path} is out of date: regenerate it with 'cohortflow reference --output {path}'")
        logs.info(f"{path} is up to date")
        return
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    logs.info(f"wrote {output}")


@main.command("grant-reader")
@config_option
@click.option("--role", default="cohortflow_reader", show_default=True, help="Role to create or update.")
@click.option("--password-env", default="COHORTFLOW_READER_PASSWORD", show_default=True, help="Environment variable holding the role's password (unset: a NOLOGIN role to grant to users).")
@log_options
def grant_reader_cmd(config_path, role, password_env):
    """Create a read-only role for BI tools with access to the reports schema only (PostgreSQL)."""
    from cohortflow.access import grant_reader
    from cohortflow.warehouse import WarehouseError, check_identifier

    try:
        check_identifier(role)
    except ValueError as exc:
        _usage(f"--role: {exc}")
    cfg = _load(config_path)
    wh = _warehouse(cfg)
    if wh.dialect != "postgres":
        wh.dispose()
        _usage(
            "grant-reader needs a PostgreSQL warehouse; a DuckDB project's BI readers open "
            "target/published/reports.duckdb read-only, or the Parquet snapshots in target/snapshots"
        )
    try:
        for statement in grant_reader(wh, role, os.environ.get(password_env) or None):
            click.echo(statement)
    except (WarehouseError, ValueError, OSError) as exc:
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    finally:
        wh.dispose()
    logs.info(f"role {role} can read reports.* (and nothing else of the warehouse)")


@main.command("check-config")
@config_option
@click.option("--offline", is_flag=True, help="Check the file only: do not contact the warehouse.")
@log_options
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
        f"  windows: late arrivals accepted {plural(cfg.ingest.late_arrival_days, 'day')}, "
        f"duplicates recognised {plural(cfg.ingest.lookback_days, 'day')} apart"
    )
    click.echo(f"  snapshots: kept {plural(cfg.snapshots.keep_days, 'day')} before the newest; reports: "
               f"{'written at every publish' if cfg.report.enabled else 'off'}, kept {plural(cfg.report.keep_days, 'day')}")
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
        logs.error(problem)
    if problems:
        sys.exit(EXIT_USAGE)


@main.command()
@click.option("--dir", "project_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"), show_default=True, help="Folder of the demo project (config, landing files, outputs).")
@click.option("--users", type=click.IntRange(min=1), default=2000, show_default=True, help="People in the generated logs.")
@click.option("--days", type=click.IntRange(min=1, max=400), default=14, show_default=True, help="Business dates to generate and run.")
@click.option("--start", "start", type=DATE, default="2026-11-01", show_default=True, help="First business date.")
@click.option("--format", "fmt", type=click.Choice(["ark", "sensors", "segment", "posthog", "canonical"]), default="ark", show_default=True, help="SDK format of the generated logs.")
@click.option("--seed", type=int, default=7, show_default=True, help="Random seed: the same seed gives the same logs.")
@click.option("--generate-only", is_flag=True, help="Write the logs and the config; do not run the workflow.")
@click.option("--force", is_flag=True, help="Replace an existing demo folder.")
@log_options
def demo(project_dir, users, days, start, fmt, seed, generate_only, force):
    """Generate realistic raw SDK logs and run the nightly workflow on every date."""
    from cohortflow.demo_project import run_demo
    from cohortflow.runner import TaskFailed

    if project_dir.exists() and any(project_dir.iterdir()):
        if not force:
            _usage(f"{project_dir} exists and is not empty; pass --force to replace it")
        shutil.rmtree(project_dir)
    t0 = time.monotonic()
    try:
        run_demo(project_dir, users=users, days=days, start=start, fmt=fmt, seed=seed, run=not generate_only,
                 echo=logs.info, result=click.echo)
    except TaskFailed as exc:
        _fail(str(exc))
    logs.info(f"demo finished in {duration(time.monotonic() - t0)}")


if __name__ == "__main__":  # pragma: no cover
    main()

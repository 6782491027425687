"""Registration: compile the declared workflows to PyDolphinScheduler objects and submit them.

The declarations in ``workflows/`` are inert (:mod:`cohortflow.dag`); this module
is the one place that turns them into SDK objects, and only when asked to:

- :func:`compile_workflow` builds one SDK ``Workflow`` of ``Shell`` tasks: the
  project, tenant, worker group and alert group of ``cfg.dolphinscheduler``, the
  declared 7-field Quartz schedule in the *project's* time zone (``cfg.timezone``,
  never the SDK's Asia/Shanghai default), retries, timeouts with their notify
  strategy, descriptions and the declared edges. Every task runs
  ``cohortflow task NAME --date ${system.biz.date} --config PATH --workflow WF``
  on a worker where the project is installed.
- :func:`definitions` returns the exact payloads ``submit()`` sends (per workflow:
  ``get_define()`` plus the schedule).
- :func:`register` prints them (``dry_run``) or submits every workflow.
  Registering again updates in place: the gateway looks each task up by project,
  workflow and task name and keeps its code, takes the workflow (and its
  schedule) offline, updates it, and puts both back online.

The SDK reads its ``PYDS_*`` settings when it is imported and, on import, probes
the gateway for its version. :func:`_sdk` sets those settings from the project
config first, and imports without the probe; every value that matters is also
passed explicitly, so the result does not depend on which code imported the SDK
first. Secrets come from the environment only: the gateway token from
``PYDS_JAVA_GATEWAY_AUTH_TOKEN`` and the password the SDK gives its
DolphinScheduler user from ``PYDS_USER_PASSWORD`` (the SDK resets that user's
password on every submit; without the variable it would be the SDK's public
default).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cohortflow.config import DEFAULT_CONFIG_NAME, Config
from cohortflow.dag import BIZ_DATE, Workflow, load_workflows

TOKEN_ENV = "PYDS_JAVA_GATEWAY_AUTH_TOKEN"
USER_PASSWORD_ENV = "PYDS_USER_PASSWORD"
CLI_EXECUTABLE = "cohortflow"
# DolphinScheduler built-in: the id of the workflow instance, the same for every
# task (and retry) of one run, so the run log groups a DolphinScheduler run as one.
WORKFLOW_INSTANCE_ID = "${system.workflow.instance.id}"
DRY_RUN_NOTE = (
    "dry run: nothing was sent to DolphinScheduler; task codes are local placeholders "
    "(the gateway assigns the real ones at registration, and keeps them on re-registration)"
)

Echo = Callable[[str], None]


class RegistrationError(Exception):
    """A registration problem, with a one-line message that says what to do."""


class GatewayError(RegistrationError):
    """The gateway could not be reached, or refused or failed a call (not a configuration problem)."""


def _py4j_reason(exc: Exception) -> str:
    """One line out of a py4j error: the Java exception's line when there is one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    java = [ln.lstrip(": ") for ln in lines if ln.startswith(": ")]
    return (java or lines or [type(exc).__name__])[0][:300]


# -- the SDK, imported lazily ---------------------------------------------------------------


def _sdk_environment(cfg: Config) -> dict[str, str]:
    """The ``PYDS_*`` settings the SDK reads at import time, from the project config."""
    ds = cfg.dolphinscheduler
    return {
        "PYDS_JAVA_GATEWAY_ADDRESS": ds.gateway_address,
        "PYDS_JAVA_GATEWAY_PORT": str(ds.gateway_port),
        "PYDS_USER_TENANT": ds.tenant,
        "PYDS_WORKFLOW_PROJECT": ds.project,
        "PYDS_WORKFLOW_WORKER_GROUP": ds.worker_group,
        "PYDS_WORKFLOW_TIME_ZONE": cfg.timezone,
    }


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _NoConnection:
    """Stands in for py4j's JavaGateway while the SDK is imported: its version probe fails at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @property
    def entry_point(self) -> Any:
        from py4j.protocol import Py4JError

        raise Py4JError("no gateway connection while importing the SDK")


@contextlib.contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _sdk(cfg: Config) -> dict[str, Any]:
    """Import the SDK (once per process) configured from ``cfg``, without touching the network.

    ``pydolphinscheduler.java_gateway`` creates its gateway object at import time
    and asks the server for its version (a TCP connection, a logged traceback and
    a warning when there is no server). The import runs with py4j's JavaGateway
    replaced by a stub that fails that probe at once; the real class is put back
    and the cached connection dropped, so a registration connects lazily, to the
    address set in :func:`_connect`.
    """
    if "pydolphinscheduler.java_gateway" not in sys.modules:
        import py4j.java_gateway as py4j_gateway

        real = py4j_gateway.JavaGateway
        with (
            _environ(_sdk_environment(cfg)),
            _quiet_loggers("py4j", "pydolphinscheduler.configuration"),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            py4j_gateway.JavaGateway = _NoConnection  # type: ignore[misc,assignment]
            try:
                import pydolphinscheduler.java_gateway as sdk_gateway
            finally:
                py4j_gateway.JavaGateway = real  # type: ignore[misc]
        sdk_gateway.JavaGateway = real  # type: ignore[attr-defined]
        sdk_gateway.gateway._gateway = None
    from pydolphinscheduler.core import task as sdk_task
    from pydolphinscheduler.core.workflow import Workflow as SdkWorkflow
    from pydolphinscheduler.java_gateway import gateway
    from pydolphinscheduler.models import User
    from pydolphinscheduler.tasks.shell import Shell

    return {"Workflow": SdkWorkflow, "Shell": Shell, "User": User, "Task": sdk_task.Task, "gateway": gateway}


_WORKFLOW_CLASS: type | None = None


def _workflow_class(cfg: Config) -> type:
    """The SDK Workflow, with the user it creates on submit taken from the config, not from import-time defaults."""
    global _WORKFLOW_CLASS
    if _WORKFLOW_CLASS is None:
        sdk = _sdk(cfg)
        base, user_cls = sdk["Workflow"], sdk["User"]

        class CohortflowWorkflow(base):  # type: ignore[misc,valid-type]
            """An SDK Workflow whose user gets the configured tenant and the password from the environment."""

            tenant: str | None = None
            user_password: str | None = None

            @property
            def user(self):  # type: ignore[override]
                kwargs: dict[str, Any] = {}
                if self.tenant is not None:
                    kwargs["tenant"] = self.tenant
                if self.user_password is not None:
                    kwargs["password"] = self.user_password
                return user_cls(name=self._user, **kwargs)

        _WORKFLOW_CLASS = CohortflowWorkflow
    return _WORKFLOW_CLASS


@contextlib.contextmanager
def local_task_codes() -> Iterator[None]:
    """Build tasks without a gateway: deterministic placeholder codes instead of ``getCodeAndVersion``.

    The SDK asks the gateway for a code when a task is constructed
    (``Task.gen_code_and_version``); its own tests patch that method, and so
    does this context manager: the code is a stable hash of project, workflow and
    task name (13 digits, like real codes), the version 0 (a task the server has
    not seen). The SDK must already be imported (see :func:`_sdk`).
    """
    from pydolphinscheduler.core.task import Task as SdkTask

    def placeholder(self) -> tuple[int, int]:
        key = f"{self.workflow._project}/{self.workflow.name}/{self.name}"
        return 10**12 + int(hashlib.sha256(key.encode()).hexdigest(), 16) % (9 * 10**12), 0

    original = SdkTask.__dict__["gen_code_and_version"]
    SdkTask.gen_code_and_version = placeholder  # type: ignore[method-assign]
    try:
        yield
    finally:
        SdkTask.gen_code_and_version = original  # type: ignore[method-assign]


# -- compiling ------------------------------------------------------------------------------


def alert_settings(cfg: Config) -> tuple[str, int]:
    """(warning type, alert group id): alerts on failure when an alert group is configured."""
    group = cfg.dolphinscheduler.alert_group  # validated as a positive int by the config
    return ("NONE", 0) if group is None else ("FAILURE", group)


def schedule_of(wf: Workflow, cfg: Config) -> str:
    """The workflow's declared schedule, unless the project config overrides it."""
    return cfg.schedule.cron or wf.schedule


def task_command(wf: Workflow, task_name: str, config_path: str | Path) -> str:
    """The shell command of one task: the CLI verb the local runner runs, with the DolphinScheduler date.

    Quoted with :func:`shlex.join`; DolphinScheduler substitutes ``${...}``
    parameters in the script text before the shell runs it, so the single quotes
    around them are harmless.
    """
    args = [
        CLI_EXECUTABLE,
        *wf.task(task_name).command_args(BIZ_DATE),
        "--config",
        str(config_path),
        "--workflow",
        wf.name,
        "--run-id",
        f"ds-{WORKFLOW_INSTANCE_ID}",
    ]
    return shlex.join(args)


def _execution_type(cfg: Config) -> str:
    # DuckDB is one file with one writer: instances of a workflow wait for each other.
    return "PARALLEL" if cfg.warehouse_url.startswith("postgresql") else "SERIAL_WAIT"


def default_config_path(cfg: Config) -> Path:
    return (cfg.base_dir / DEFAULT_CONFIG_NAME).resolve()


def compile_workflow(
    wf: Workflow,
    cfg: Config,
    *,
    config_path: str | Path | None = None,
    today: dt.date | None = None,
):
    """The SDK ``Workflow`` for a declared workflow (tasks get their codes from the gateway, or a patch).

    ``config_path`` is the config file as the workers see it (default:
    ``cohortflow.yml`` in the config's folder); ``today`` (default: today in the
    project time zone) is the first day of the schedule.
    """
    ds = cfg.dolphinscheduler
    shell = _sdk(cfg)["Shell"]
    workflow_cls = _workflow_class(cfg)
    warning_type, warning_group_id = alert_settings(cfg)
    config_path = config_path or default_config_path(cfg)
    start = today or dt.datetime.now(cfg.tz).date()

    sdk_wf = workflow_cls(
        name=wf.name,
        description=wf.description,
        schedule=schedule_of(wf, cfg),
        online_schedule=True,
        start_time=f"{start:%Y-%m-%d} 00:00:00",
        timezone=cfg.timezone,
        project=ds.project,
        worker_group=ds.worker_group,
        warning_type=warning_type,
        warning_group_id=warning_group_id,
        execution_type=_execution_type(cfg),
        release_state="online",
    )
    sdk_wf.tenant = ds.tenant
    by_name = {}
    for t in wf.ordered():
        by_name[t.name] = shell(
            name=t.name,
            command=task_command(wf, t.name, config_path),
            description=t.description,
            worker_group=ds.worker_group,
            fail_retry_times=t.retries,
            fail_retry_interval=t.retry_interval_minutes,
            timeout=t.timeout_minutes,
            timeout_notify_strategy=t.timeout_notify_strategy,
            workflow=sdk_wf,
        )
        for up in t.upstream:
            by_name[up] >> by_name[t.name]
    if len(sdk_wf.tasks) != len(wf.tasks):
        raise RegistrationError(f"workflow {wf.name}: the gateway gave two tasks the same code")
    return sdk_wf


def payload(sdk_wf) -> dict[str, Any]:
    """What ``submit()`` sends for a workflow: ``get_define()`` (without the Python task objects) and the schedule."""
    define = sdk_wf.get_define()
    define.pop("tasks", None)  # the Task objects; their definitions are taskDefinitionJson
    define["taskRelationJson"] = sorted(define["taskRelationJson"], key=lambda r: (r["preTaskCode"], r["postTaskCode"]))
    define["schedule"] = sdk_wf.schedule_json
    define["onlineSchedule"] = sdk_wf.online_schedule
    return define


def _selected(workflow: str | None) -> list[Workflow]:
    workflows = load_workflows()
    if workflow is None:
        return [workflows[name] for name in sorted(workflows)]
    if workflow not in workflows:
        raise RegistrationError(f"unknown workflow {workflow!r}; declared: {', '.join(sorted(workflows))}")
    return [workflows[workflow]]


def definitions(
    cfg: Config,
    *,
    workflow: str | None = None,
    config_path: str | Path | None = None,
    today: dt.date | None = None,
) -> list[dict[str, Any]]:
    """The payloads of every declared workflow (or one), as ``submit()`` would send them.

    Task codes come from the gateway unless the caller is inside
    :func:`local_task_codes` (as the dry run is) or patches them (as tests do).
    """
    _sdk(cfg)
    return [payload(compile_workflow(wf, cfg, config_path=config_path, today=today)) for wf in _selected(workflow)]


# -- registering ----------------------------------------------------------------------------


def _connect(cfg: Config, token: str) -> None:
    """Point the SDK's gateway at the configured address and check it answers with a matching version."""
    from py4j.protocol import Py4JError
    from pydolphinscheduler.constants import Version
    from pydolphinscheduler.utils.versions import version_match

    ds = cfg.dolphinscheduler
    gateway = _sdk(cfg)["gateway"]
    gateway.address, gateway.port, gateway.auth_token = ds.gateway_address, ds.gateway_port, token
    gateway._gateway = None
    where = f"{ds.gateway_address}:{ds.gateway_port}"
    try:
        with _quiet_loggers("py4j"):
            version = gateway.get_gateway_version()
    except Py4JError as exc:
        reason = _py4j_reason(exc)
        raise GatewayError(
            f"cannot reach the DolphinScheduler Python gateway at {where} ({reason}); check that the API server "
            f"runs with python-gateway enabled and that {TOKEN_ENV} is its auth token"
        ) from None
    if not version_match(Version.DS, str(version)):
        raise GatewayError(
            f"the gateway at {where} is DolphinScheduler {version}; apache-dolphinscheduler 4.1.0 needs 3.2.x"
        )


def register(
    cfg: Config,
    dry_run: bool,
    *,
    workflow: str | None = None,
    config_path: str | Path | None = None,
    echo: Echo = print,
) -> list[dict[str, Any]]:
    """Print (``dry_run``) or submit the declared workflows; return the definitions or the registered codes.

    A dry run needs no server, token or password: it prints one JSON document,
    ``{"dry_run": true, "note": ..., "workflows": [payload, ...]}``, with
    placeholder task codes. A real registration needs ``PYDS_JAVA_GATEWAY_AUTH_TOKEN``
    and ``PYDS_USER_PASSWORD`` in the environment and submits each workflow;
    registering again updates it in place (same workflow and task codes, new
    versions, schedule updated and back online).
    """
    _sdk(cfg)
    if dry_run:
        with local_task_codes():
            defs = definitions(cfg, workflow=workflow, config_path=config_path)
        echo(json.dumps({"dry_run": True, "note": DRY_RUN_NOTE, "workflows": defs}, indent=2, sort_keys=True, ensure_ascii=False))
        return defs

    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise RegistrationError(
            f"{TOKEN_ENV} is not set: export the Python gateway's auth token (api.python-gateway.auth-token in the "
            "API server's application.yaml) to register; it is never read from the config file. "
            "'cohortflow register --dry-run' needs no server"
        )
    password = os.environ.get(USER_PASSWORD_ENV)
    if not password:
        raise RegistrationError(
            f"{USER_PASSWORD_ENV} is not set: the SDK creates or updates its DolphinScheduler user on every "
            "registration and would give it the SDK's public default password; export the password to use"
        )
    from py4j.protocol import Py4JError

    selected = _selected(workflow)
    _connect(cfg, token)
    registered: list[dict[str, Any]] = []
    ds = cfg.dolphinscheduler
    for wf in selected:
        try:
            sdk_wf = compile_workflow(wf, cfg, config_path=config_path)
            sdk_wf.user_password = password
            code = sdk_wf.submit()
        except Py4JError as exc:
            raise GatewayError(f"registering {wf.name} failed on the gateway: {_py4j_reason(exc)}") from None
        registered.append({"name": wf.name, "code": code})
        echo(
            f"registered {wf.name} (workflow code {code}) in project {ds.project}: {len(wf.tasks)} Shell tasks, "
            f"schedule '{schedule_of(wf, cfg)}' in {cfg.timezone}, online"
        )
    echo("registering again updates these workflows in place")
    return registered

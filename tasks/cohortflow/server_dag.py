"""The compile step: a declared workflow as the DAG a DolphinScheduler server runs.

One function, :func:`compile_workflow`, turns a declaration of ``workflows/``
(:mod:`cohortflow.dag`), the SQL models and the project config into a
:class:`ServerWorkflow`: plain data that a thin adapter per SDK generation
(:mod:`cohortflow.sdk_ds31`, :mod:`cohortflow.sdk_ds32`) turns into SDK objects.
What it decides, for every generation alike:

- **One task per model.** A declared task with ``per_model`` becomes one task
  per SQL model (named after the model), with an edge for each ``depends_on``
  between models; the models with no model upstream hang off the declared
  task's own upstream, and the declared task's downstream waits for every
  model that nothing else reads. So the server shows which model failed, and a
  rerun from the failed task rebuilds it and what depends on it only.
- **The warehouse's concurrency.** DuckDB is one file with one writer: the
  tasks are chained in one order (the declared edges all hold along the chain)
  so that no two run at once, and instances of the workflow wait for each
  other (``SERIAL_WAIT``). On PostgreSQL the declared edges stand and
  instances may run in parallel.
- **The business date** comes through the workflow parameter ``bizdate``
  (= ``${system.biz.date}``, the schedule date minus one day): DolphinScheduler
  3.1 does not substitute built-ins written in a Shell script.
- **The time zone** of the schedule is the project's, always.
- **Retries** are 0 on DolphinScheduler 3.1.x: a failed task with retries left
  keeps a 3.1.1 workflow in RUNNING_EXECUTION forever (upstream bug, fixed in
  3.1.2). From 3.2 the declared retries stand.
- **The command** of each task runs ``cohortflow`` by an absolute path (the
  worker's PATH does not matter).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, Literal

from cohortflow.config import Config
from cohortflow.dag import Task, Workflow, downstream_of

Generation = Literal["3.1", "3.2"]
GENERATIONS: tuple[Generation, ...] = ("3.1", "3.2")

# The workflow parameter that carries the business date into every task.
BIZ_DATE_PARAM = "bizdate"
BIZ_DATE_REF = "${" + BIZ_DATE_PARAM + "}"
BIZ_DATE_BUILTIN = "${system.biz.date}"
# DolphinScheduler built-in: the id of the workflow instance, the same for every task (and
# rerun) of one run, so the run log groups a DolphinScheduler run as one.
WORKFLOW_INSTANCE_ID = "${system.workflow.instance.id}"


@dataclass(frozen=True)
class ServerTask:
    name: str
    description: str
    args: tuple[str, ...]  # after the cohortflow executable
    upstream: tuple[str, ...]
    retries: int
    retry_interval_minutes: int
    timeout_minutes: int
    timeout_notify_strategy: str


@dataclass(frozen=True)
class ServerWorkflow:
    name: str
    description: str
    schedule: str
    timezone: str
    start_date: dt.date
    execution_type: str  # PARALLEL or SERIAL_WAIT
    params: dict[str, str]
    project: str
    tenant: str
    worker_group: str
    warning_type: str
    warning_group_id: int
    executable: str
    tasks: tuple[ServerTask, ...] = field(default_factory=tuple)

    def task(self, name: str) -> ServerTask:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"workflow {self.name!r} has no task {name!r}")

    def command(self, task: ServerTask) -> str:
        """The Shell script of a task: DolphinScheduler substitutes ``${...}`` in it before the shell runs it."""
        return shlex.join([self.executable, *task.args])

    def edges(self) -> set[tuple[str, str]]:
        return {(up, t.name) for t in self.tasks for up in t.upstream}

    def downstream(self, name: str) -> set[str]:
        """Every task that depends, directly or not, on ``name``."""
        return downstream_of(self.tasks, name)

    def workflow_arguments(self) -> dict[str, Any]:
        """The keyword arguments of the SDK's workflow (``ProcessDefinition`` in 3.1, ``Workflow`` in 3.2) that every
        generation takes alike."""
        return {
            "name": self.name,
            "description": self.description,
            "schedule": self.schedule,
            "start_time": f"{self.start_date:%Y-%m-%d} 00:00:00",
            "timezone": self.timezone,
            "project": self.project,
            "worker_group": self.worker_group,
            "warning_type": self.warning_type,
            "warning_group_id": self.warning_group_id,
            "release_state": "online",
            "param": dict(self.params),
        }

    def shell_arguments(self, task: ServerTask) -> dict[str, Any]:
        """The keyword arguments of the SDK's ``Shell`` task that every generation takes alike (the adapter adds
        the workflow it belongs to and what differs)."""
        return {
            "name": task.name,
            "command": self.command(task),
            "description": task.description,
            "worker_group": self.worker_group,
            "fail_retry_times": task.retries,
            "fail_retry_interval": task.retry_interval_minutes,
            "timeout_notify_strategy": task.timeout_notify_strategy,
            "timeout": task.timeout_minutes,
        }

    def link_tasks(self, make: Callable[[ServerTask], Any]) -> None:
        """Make each task's SDK object (``make(task)``, in dependency order) and set its upstream edges on it."""
        by_name = {}
        for t in self.tasks:
            by_name[t.name] = make(t)
            for up in t.upstream:
                by_name[up] >> by_name[t.name]


@contextlib.contextmanager
def placeholder_task_codes(task_class: type, workflow_of: Callable[[Any], Any]) -> Iterator[None]:
    """While open, the SDK's ``task_class`` gets deterministic placeholder codes instead of asking the gateway
    (``gen_code_and_version``): a stable hash of project, workflow (``workflow_of(task)``) and task name, 13 digits
    like real codes, and version 0 (a task the server has not seen)."""

    def placeholder(self) -> tuple[int, int]:
        workflow = workflow_of(self)
        key = f"{workflow._project}/{workflow.name}/{self.name}"
        return 10**12 + int(hashlib.sha256(key.encode()).hexdigest(), 16) % (9 * 10**12), 0

    original = task_class.__dict__["gen_code_and_version"]
    task_class.gen_code_and_version = placeholder
    try:
        yield
    finally:
        task_class.gen_code_and_version = original


def is_single_writer(cfg: Config) -> bool:
    """DuckDB takes one writing process at a time; PostgreSQL takes many."""
    return not cfg.warehouse_url.startswith("postgresql")


def default_executable() -> str:
    """The ``cohortflow`` console script of the running interpreter's environment, as an absolute path."""
    return str(Path(sys.executable).absolute().parent / "cohortflow")


def model_graph() -> dict[str, tuple[str, ...]]:
    """Every SQL model and the models it reads, in dependency order."""
    from cohortflow.models import load_models

    return {name: tuple(m.depends_on) for name, m in load_models().items()}


def expand(wf: Workflow, models: dict[str, tuple[str, ...]]) -> list[Task]:
    """The declared tasks with every ``per_model`` task replaced by one task per model."""
    expanded: dict[str, list[str]] = {}  # per-model task -> the model tasks its downstream waits for
    out: list[Task] = []
    for t in wf.ordered():
        upstream = tuple(u2 for u in t.upstream for u2 in expanded.get(u, [u]))
        if not t.per_model:
            out.append(Task(**{**t.__dict__, "upstream": upstream}))
            continue
        clash = sorted(set(models) & {x.name for x in wf.tasks})
        if clash:
            raise ValueError(f"workflow {wf.name!r}: task names {clash} are also model names")
        read = {d for deps in models.values() for d in deps}
        for name, deps in models.items():
            out.append(
                Task(
                    name=name,
                    description=f"Build the model {name} for the dates the new data can change ({t.name}).",
                    upstream=deps if deps else upstream,
                    retries=t.retries,
                    retry_interval_minutes=t.retry_interval_minutes,
                    timeout_minutes=t.timeout_minutes,
                    timeout_notify_strategy=t.timeout_notify_strategy,
                )
            )
        expanded[t.name] = [n for n in models if n not in read]
    return out


def serial_chain(tasks: list[Task]) -> list[Task]:
    """The tasks in one dependency order, each waiting for the one before (every declared edge still holds)."""
    ordered = Workflow("chain", "", "0 0 0 * * ? *", tuple(tasks)).ordered()
    return [Task(**{**t.__dict__, "upstream": (ordered[i - 1].name,) if i else ()}) for i, t in enumerate(ordered)]


def alert_settings(cfg: Config) -> tuple[str, int]:
    """(warning type, alert group id): alerts on failure when an alert group is configured."""
    group = cfg.dolphinscheduler.alert_group
    return ("NONE", 0) if group is None else ("FAILURE", group)


def schedule_of(wf: Workflow, cfg: Config) -> str:
    """The workflow's declared schedule, unless the project config overrides it."""
    return cfg.schedule.cron or wf.schedule


def compile_workflow(
    wf: Workflow,
    cfg: Config,
    generation: Generation,
    *,
    config_path: str | Path,
    executable: str | None = None,
    today: dt.date | None = None,
    alert_group: int | None = None,
) -> ServerWorkflow:
    """The server DAG of a declared workflow for a DolphinScheduler generation (see the module docstring).

    ``config_path`` is the config file as the workers see it; ``executable`` the
    absolute path of ``cohortflow`` on the workers (default: the config's
    ``dolphinscheduler.executable``, else this environment's); ``today``
    (default: today in the project time zone) the first day of the schedule;
    ``alert_group`` an alert group id that overrides the configured one.
    """
    if generation not in GENERATIONS:
        raise ValueError(f"unknown DolphinScheduler generation {generation!r} (known: {', '.join(GENERATIONS)})")
    ds = cfg.dolphinscheduler
    executable = executable or ds.executable or default_executable()
    if not Path(executable).is_absolute():
        raise ValueError(f"dolphinscheduler.executable: must be an absolute path, got {executable!r}")
    tasks = expand(wf, model_graph())
    single_writer = is_single_writer(cfg)
    if single_writer:
        tasks = serial_chain(tasks)
    warning_type, warning_group_id = alert_settings(cfg)
    if alert_group is not None:
        warning_type, warning_group_id = "FAILURE", alert_group
    server_tasks = tuple(
        ServerTask(
            name=t.name,
            description=t.description,
            args=(
                "task",
                t.name,
                "--date",
                BIZ_DATE_REF,
                "--config",
                str(config_path),
                "--workflow",
                wf.name,
                "--run-id",
                f"ds-{WORKFLOW_INSTANCE_ID}",
            ),
            upstream=t.upstream,
            # DolphinScheduler 3.1.1 never finishes a workflow whose failed task has retries left.
            retries=0 if generation == "3.1" else t.retries,
            retry_interval_minutes=t.retry_interval_minutes,
            timeout_minutes=t.timeout_minutes,
            timeout_notify_strategy=t.timeout_notify_strategy,
        )
        for t in tasks
    )
    return ServerWorkflow(
        name=wf.name,
        description=wf.description,
        schedule=schedule_of(wf, cfg),
        timezone=cfg.timezone,
        start_date=today or dt.datetime.now(cfg.tz).date(),
        execution_type="SERIAL_WAIT" if single_writer else "PARALLEL",
        params={BIZ_DATE_PARAM: BIZ_DATE_BUILTIN},
        project=ds.project,
        tenant=ds.tenant,
        worker_group=ds.worker_group,
        warning_type=warning_type,
        warning_group_id=warning_group_id,
        executable=executable,
        tasks=server_tasks,
    )

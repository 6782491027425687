"""The declared-workflow vocabulary: plain, inert data read by two consumers.

``workflows/*.py`` declare :class:`Workflow` objects with these classes. The
local runner (:mod:`cohortflow.runner`) executes them task by task; the
registration (:mod:`cohortflow.register`) compiles them to PyDolphinScheduler
objects only at registration time, so loading a declaration needs no server.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from functools import cache
from pathlib import Path
from types import ModuleType
from dataclasses import dataclass, field
from typing import Literal

TimeoutStrategy = Literal["WARN", "FAILED", "WARNFAILED"]

# The DolphinScheduler built-in parameter for the business date: the schedule
# date minus one day, as yyyyMMdd (the CLI accepts it as is).
BIZ_DATE = "${system.biz.date}"


@dataclass(frozen=True)
class Task:
    """One stage: a CLI command run with ``--date <business date>``."""

    name: str
    description: str
    upstream: tuple[str, ...] = ()
    retries: int = 1
    retry_interval_minutes: int = 5
    timeout_minutes: int = 60
    timeout_notify_strategy: TimeoutStrategy = "WARNFAILED"
    # On a server this task becomes one task per SQL model, with the edges of the models'
    # ``depends_on`` (see :mod:`cohortflow.server_dag`); the local runner runs it as one task.
    per_model: bool = False

    def command_args(self, date_text: str) -> list[str]:
        """The CLI arguments (after ``cohortflow``) that run this task for a date."""
        return ["task", self.name, "--date", date_text]


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str
    schedule: str  # 7-field Quartz cron; the time zone is the project's
    tasks: tuple[Task, ...] = field(default_factory=tuple)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"workflow {self.name!r} has no task {name!r}")

    def ordered(self) -> list[Task]:
        """Tasks in a dependency order (stable: declaration order among ready tasks)."""
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {self.name!r} has repeated task names")
        done: list[str] = []
        pending = list(self.tasks)
        while pending:
            ready = [t for t in pending if all(u in done for u in t.upstream)]
            if not ready:
                missing = {u for t in pending for u in t.upstream if u not in names}
                why = f"unknown upstream {sorted(missing)}" if missing else "a cycle"
                raise ValueError(f"workflow {self.name!r} cannot be ordered: {why}")
            done.append(ready[0].name)
            pending.remove(ready[0])
        return [self.task(n) for n in done]

    def downstream(self, name: str) -> set[str]:
        """Every task that depends, directly or not, on ``name``."""
        return downstream_of(self.tasks, name)


def downstream_of(tasks, name: str) -> set[str]:
    """The names of the ``tasks`` (each with ``name`` and ``upstream``) that depend, directly or not, on ``name``."""
    out: set[str] = set()
    frontier = {name}
    while frontier:
        nxt = {t.name for t in tasks if frontier & set(t.upstream)} - out
        out |= nxt
        frontier = nxt
    return out


def workflow_files() -> list[Path]:
    """The declaration files of the ``workflows/`` folder (shipped beside the package; read as files)."""
    folder = Path(str(importlib.resources.files("cohortflow.workflows")))
    return sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))


def load_workflow_file(path: Path) -> ModuleType:
    """Execute one declaration file (like a scheduler's DAG folder: the file is read, not imported by name)."""
    spec = importlib.util.spec_from_file_location(f"cohortflow_workflow_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load workflow file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def declaring_modules() -> dict[str, ModuleType]:
    """Every workflow name and the module of the file that declares it as ``WORKFLOW``."""
    found: dict[str, ModuleType] = {}
    for path in workflow_files():
        module = load_workflow_file(path)
        wf = getattr(module, "WORKFLOW", None)
        if isinstance(wf, Workflow):
            if wf.name in found:
                raise ValueError(f"workflow name {wf.name!r} declared twice")
            found[wf.name] = module
    return found


def load_workflows() -> dict[str, Workflow]:
    """Every ``WORKFLOW`` declared in the ``workflows/`` folder, by name."""
    return {name: module.WORKFLOW for name, module in declaring_modules().items()}

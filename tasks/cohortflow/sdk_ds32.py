"""Adapter for DolphinScheduler 3.2.x: the compiled DAG as PyDolphinScheduler 4.1.0 objects.

``apache-dolphinscheduler==4.1.0`` (extra ``ds32``) speaks the 3.2 Python
gateway: ``Workflow`` and ``Shell``; ``submit()`` calls ``createOrUpdateWorkflow``
and, with ``online_schedule``, leaves the schedule online.

The SDK reads its ``PYDS_*`` settings when it is imported and, on import, probes
the gateway for its version. :func:`_sdk` sets those settings from the project
config first, and imports without the probe; every value that matters is also
passed explicitly, so the result does not depend on which code imported the SDK
first. The gateway token comes from ``PYDS_JAVA_GATEWAY_AUTH_TOKEN`` and the
password the SDK gives its DolphinScheduler user from ``PYDS_USER_PASSWORD``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from cohortflow.config import Config
from cohortflow.server_dag import ServerWorkflow, placeholder_task_codes

GENERATION = "3.2"
SDK_VERSION = "4.1.0"


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
    does this context manager (:func:`cohortflow.server_dag.placeholder_task_codes`).
    The SDK must already be imported (see :func:`_sdk`).
    """
    from pydolphinscheduler.core.task import Task as SdkTask

    with placeholder_task_codes(SdkTask, lambda task: task.workflow):
        yield


def prepare(cfg: Config) -> None:
    """Import the SDK configured from ``cfg`` without touching the network."""
    _sdk(cfg)


def build(sw: ServerWorkflow, cfg: Config):
    """The SDK ``Workflow`` of a compiled workflow (task codes from the gateway, or :func:`local_task_codes`)."""
    sdk = _sdk(cfg)
    shell = sdk["Shell"]
    sdk_wf = _workflow_class(cfg)(**sw.workflow_arguments(), online_schedule=True, execution_type=sw.execution_type)
    sdk_wf.tenant = sw.tenant
    sw.link_tasks(lambda t: shell(**sw.shell_arguments(t), workflow=sdk_wf))
    if len(sdk_wf.tasks) != len(sw.tasks):
        raise ValueError(f"workflow {sw.name}: the gateway gave two tasks the same code")
    return sdk_wf


def payload(sdk_wf) -> dict[str, Any]:
    """What ``submit()`` sends for a workflow: ``get_define()`` (without the Python task objects) and the schedule."""
    define = sdk_wf.get_define()
    define.pop("tasks", None)  # the Task objects; their definitions are taskDefinitionJson
    define["taskRelationJson"] = sorted(define["taskRelationJson"], key=lambda r: (r["preTaskCode"], r["postTaskCode"]))
    define["globalParams"] = sdk_wf.param_json  # what submit() sends for ``param``
    define["schedule"] = sdk_wf.schedule_json
    define["onlineSchedule"] = sdk_wf.online_schedule
    return define


def connect(cfg: Config, token: str) -> str:
    """Point the SDK's gateway at the configured address; return the DolphinScheduler version it reports."""
    ds = cfg.dolphinscheduler
    gateway = _sdk(cfg)["gateway"]
    gateway.address, gateway.port, gateway.auth_token = ds.gateway_address, ds.gateway_port, token
    gateway._gateway = None
    with _quiet_loggers("py4j"):
        return str(gateway.get_gateway_version())


def version_ok(version: str) -> bool:
    """Whether the server's version is one this SDK speaks (3.2.x)."""
    from pydolphinscheduler.constants import Version
    from pydolphinscheduler.utils.versions import version_match

    return bool(version_match(Version.DS, version))


def submit(sdk_wf, password: str) -> int:
    sdk_wf.user_password = password
    return int(sdk_wf.submit())

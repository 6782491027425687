"""Adapter for DolphinScheduler 3.1.x: the compiled DAG as PyDolphinScheduler 3.1.1 objects.

``apache-dolphinscheduler==3.1.1`` (extra ``ds31``) speaks the 3.1 Python
gateway: ``ProcessDefinition`` and ``Shell``; ``submit()`` calls
``createOrUpdateProcessDefinition``. It reads its ``PYDS_*`` settings when
imported but opens no connection then; every call opens one to
``configuration.JAVA_GATEWAY_ADDRESS``/``PORT``, which :func:`connect` sets
from the project config. The 3.1 gateway has no auth token: keep it on
loopback (``scripts/dolphinscheduler.sh`` runs it in its own network
namespace).

What this generation needs beyond the SDK's own arguments:
- the execution type (``SERIAL_WAIT`` on DuckDB) is a Java enum the SDK 3.1.1
  never sends: :func:`submit` passes it through the gateway's JVM view;
- the SDK creates its user with ``configuration.USER_PASSWORD`` (a public
  default): the user here gets the password from the environment.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from cohortflow.config import Config
from cohortflow.server_dag import ServerWorkflow, placeholder_task_codes

GENERATION = "3.1"
SDK_VERSION = "3.1.1"


def _classes() -> dict[str, Any]:
    from pydolphinscheduler.core.process_definition import ProcessDefinition
    from pydolphinscheduler.models import User
    from pydolphinscheduler.tasks.shell import Shell

    return {"ProcessDefinition": ProcessDefinition, "Shell": Shell, "User": User}


_DEFINITION_CLASS: type | None = None


def _definition_class() -> type:
    global _DEFINITION_CLASS
    if _DEFINITION_CLASS is None:
        sdk = _classes()
        base, user_cls = sdk["ProcessDefinition"], sdk["User"]

        class CohortflowProcessDefinition(base):  # type: ignore[misc,valid-type]
            """A ProcessDefinition whose user gets the password from the environment and that sends its execution type."""

            user_password: str | None = None
            execution_type: str = "PARALLEL"

            @property
            def user(self):  # type: ignore[override]
                kwargs: dict[str, Any] = {"tenant": self._tenant}
                if self.user_password is not None:
                    kwargs["password"] = self.user_password
                return user_cls(name=self._user, **kwargs)

            def submit(self) -> int:
                from pydolphinscheduler.java_gateway import JavaGate

                self._ensure_side_model_exists()
                self._pre_submit_check()
                gate = JavaGate()
                enum = gate.java_gateway.jvm.org.apache.dolphinscheduler.common.enums.ProcessExecutionTypeEnum
                self._process_definition_code = gate.java_gateway.entry_point.createOrUpdateProcessDefinition(
                    self._user,
                    self._project,
                    self.name,
                    str(self.description) if self.description else "",
                    json.dumps(self.param_json),
                    json.dumps(self.schedule_json) if self.schedule_json else None,
                    self.warning_type,
                    self.warning_group_id,
                    self.timeout,
                    self.worker_group,
                    self._tenant,
                    self.release_state,
                    json.dumps(self.task_relation_json),
                    json.dumps(self.task_definition_json),
                    None,
                    enum.valueOf(self.execution_type),
                )
                return self._process_definition_code

        _DEFINITION_CLASS = CohortflowProcessDefinition
    return _DEFINITION_CLASS


def prepare(cfg: Config) -> None:
    """Import the SDK (it opens no connection on import)."""
    _classes()


def build(sw: ServerWorkflow, cfg: Config):
    """The SDK ProcessDefinition of a compiled workflow (task codes from the gateway, or :func:`local_task_codes`)."""
    shell = _classes()["Shell"]
    pd = _definition_class()(**sw.workflow_arguments(), tenant=sw.tenant)
    pd.execution_type = sw.execution_type
    sw.link_tasks(lambda t: shell(**sw.shell_arguments(t), timeout_flag="OPEN", process_definition=pd))
    if len(pd.tasks) != len(sw.tasks):
        raise ValueError(f"workflow {sw.name}: two tasks got the same code")
    return pd


def payload(pd) -> dict[str, Any]:
    """What :func:`submit` sends for a workflow (the gateway's arguments, by name)."""
    return {
        "name": pd.name,
        "description": pd.description,
        "project": pd._project,
        "tenant": pd._tenant,
        "workerGroup": pd.worker_group,
        "warningType": pd.warning_type,
        "warningGroupId": pd.warning_group_id,
        "releaseState": pd.release_state,
        "executionType": pd.execution_type,
        "globalParams": pd.param_json,
        "taskDefinitionJson": pd.task_definition_json,
        "taskRelationJson": sorted(pd.task_relation_json, key=lambda r: (r["preTaskCode"], r["postTaskCode"])),
        "schedule": pd.schedule_json,
    }


@contextlib.contextmanager
def local_task_codes() -> Iterator[None]:
    """Build tasks without a gateway: deterministic placeholder codes instead of ``getCodeAndVersion``."""
    from pydolphinscheduler.core.task import Task as SdkTask

    with placeholder_task_codes(SdkTask, lambda task: task.process_definition):
        yield


def connect(cfg: Config, token: str | None) -> str:
    """Point the SDK at the gateway and check that it answers (the 3.1 gateway takes no token)."""
    from pydolphinscheduler import configuration
    from pydolphinscheduler.java_gateway import JavaGate

    ds = cfg.dolphinscheduler
    configuration.JAVA_GATEWAY_ADDRESS, configuration.JAVA_GATEWAY_PORT = ds.gateway_address, ds.gateway_port
    return str(JavaGate(ds.gateway_address, ds.gateway_port).java_gateway.entry_point.ping())


def version_ok(version: str) -> bool:
    """The 3.1 gateway reports no version (its ``ping`` answers): any answer will do."""
    return True


def submit(pd, password: str) -> int:
    pd.user_password = password
    return int(pd.submit())

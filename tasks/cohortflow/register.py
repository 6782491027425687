"""Registration: compile the declared workflows for the server and submit them with its SDK.

The declarations in ``workflows/`` are inert (:mod:`cohortflow.dag`). One compile
step (:func:`cohortflow.server_dag.compile_workflow`) turns a declaration into the
DAG the server runs, and a thin adapter per SDK generation turns that into SDK
objects: :mod:`cohortflow.sdk_ds31` (``apache-dolphinscheduler==3.1.1``, extra
``ds31``, DolphinScheduler 3.1.x) or :mod:`cohortflow.sdk_ds32` (``4.1.0``,
extra ``ds32``, 3.2.x). The installed SDK picks the adapter.

- :func:`definitions` returns the exact payloads a submit sends.
- :func:`register` prints them (``dry_run``, no server needed) or submits every
  workflow, then, over the REST API (:mod:`cohortflow.ds_api`): sets up the
  failure alert when ``dolphinscheduler.alert_webhook`` is configured (an HTTP
  alert plugin instance and an alert group, created or updated by name) and
  brings each workflow's schedule online (SDK 3.1.1 leaves a re-submitted
  schedule offline). Registering again updates everything in place: same
  workflow and task codes, new versions, the schedule online.

Secrets come from the environment only: ``PYDS_USER_PASSWORD`` (the password
the SDK gives its DolphinScheduler user; it resets it on every submit),
``PYDS_JAVA_GATEWAY_AUTH_TOKEN`` (the 3.2 gateway's token; the 3.1 gateway has
none), and the REST credentials of :mod:`cohortflow.ds_api`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from cohortflow.config import DEFAULT_CONFIG_NAME, Config
from cohortflow.dag import Workflow, load_workflows
from cohortflow.server_dag import Generation, compile_workflow

TOKEN_ENV = "PYDS_JAVA_GATEWAY_AUTH_TOKEN"
USER_PASSWORD_ENV = "PYDS_USER_PASSWORD"
ADAPTERS: dict[Generation, str] = {"3.1": "cohortflow.sdk_ds31", "3.2": "cohortflow.sdk_ds32"}
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


def installed_sdk() -> tuple[str, Generation]:
    """(SDK version, DolphinScheduler generation) of the installed PyDolphinScheduler.

    ``cohortflow[ds31]`` installs apache-dolphinscheduler 3.1.1 (DolphinScheduler
    3.1.x), ``cohortflow[ds32]`` 4.1.0 (3.2.x); the two extras pin different
    versions of one package, so pip refuses to install both.
    """
    try:
        version = importlib.metadata.version("apache-dolphinscheduler")
    except importlib.metadata.PackageNotFoundError:
        raise RegistrationError(
            "the PyDolphinScheduler SDK is not installed: pip install 'cohortflow[ds31]' for DolphinScheduler 3.1.x "
            "or 'cohortflow[ds32]' for 3.2.x"
        ) from None
    for generation, module in ADAPTERS.items():
        if version == importlib.import_module(module).SDK_VERSION:
            return version, generation
    raise RegistrationError(
        f"apache-dolphinscheduler {version} is installed; cohortflow supports 3.1.1 (extra ds31, DolphinScheduler 3.1.x) "
        "and 4.1.0 (extra ds32, DolphinScheduler 3.2.x)"
    )


def adapter(generation: Generation | None = None) -> ModuleType:
    """The SDK adapter of a generation (default: the installed SDK's)."""
    generation = generation or installed_sdk()[1]
    return importlib.import_module(ADAPTERS[generation])


def default_config_path(cfg: Config) -> Path:
    return (cfg.base_dir / DEFAULT_CONFIG_NAME).resolve()


def _selected(workflow: str | None) -> list[Workflow]:
    workflows = load_workflows()
    if workflow is None:
        return [workflows[name] for name in sorted(workflows)]
    if workflow not in workflows:
        raise RegistrationError(f"unknown workflow {workflow!r}; declared: {', '.join(sorted(workflows))}")
    return [workflows[workflow]]


def _compile(wf: Workflow, cfg: Config, generation: Generation, config_path, today=None, alert_group=None):
    try:
        return compile_workflow(
            wf, cfg, generation, config_path=config_path or default_config_path(cfg), today=today, alert_group=alert_group
        )
    except ValueError as exc:
        raise RegistrationError(str(exc)) from None


def definitions(
    cfg: Config,
    *,
    workflow: str | None = None,
    config_path: str | Path | None = None,
    today: dt.date | None = None,
    generation: Generation | None = None,
) -> list[dict[str, Any]]:
    """The payloads of every declared workflow (or one), as a submit would send them.

    Task codes come from the gateway unless the caller is inside the adapter's
    ``local_task_codes()`` (as the dry run is) or patches them (as tests do).
    """
    sdk = adapter(generation)
    gen: Generation = sdk.GENERATION
    sdk.prepare(cfg)
    return [sdk.payload(sdk.build(_compile(wf, cfg, gen, config_path, today), cfg)) for wf in _selected(workflow)]


def _connect(sdk: ModuleType, cfg: Config, token: str | None) -> None:
    """Check that the gateway answers (and, on 3.2, that its version matches the SDK)."""
    from py4j.protocol import Py4JError

    ds = cfg.dolphinscheduler
    where = f"{ds.gateway_address}:{ds.gateway_port}"
    try:
        version = sdk.connect(cfg, token)
    except Py4JError as exc:
        hint = f" and that {TOKEN_ENV} is its auth token" if sdk.GENERATION != "3.1" else ""
        raise GatewayError(
            f"cannot reach the DolphinScheduler Python gateway at {where} ({_py4j_reason(exc)}); check that the API "
            f"server runs with python-gateway enabled{hint}"
        ) from None
    if not sdk.version_ok(version):
        raise GatewayError(
            f"the gateway at {where} is DolphinScheduler {version}; apache-dolphinscheduler {sdk.SDK_VERSION} "
            f"needs {sdk.GENERATION}.x (install the other extra: ds31 for 3.1.x, ds32 for 3.2.x)"
        )


def register(
    cfg: Config,
    dry_run: bool,
    *,
    workflow: str | None = None,
    config_path: str | Path | None = None,
    echo: Echo = print,
    api=None,
) -> list[dict[str, Any]]:
    """Print (``dry_run``) or submit the declared workflows; return the definitions or the registered codes.

    A dry run needs no server, token or password: it prints one JSON document,
    ``{"dry_run": true, "generation": ..., "note": ..., "workflows": [payload, ...]}``,
    with placeholder task codes. A real registration needs ``PYDS_USER_PASSWORD``
    (and on 3.2 ``PYDS_JAVA_GATEWAY_AUTH_TOKEN``) and the REST credentials;
    ``api`` is a :class:`cohortflow.ds_api.DolphinSchedulerApi` (default: one for
    the configured server).
    """
    sdk = adapter()
    generation: Generation = sdk.GENERATION
    sdk.prepare(cfg)
    if dry_run:
        with sdk.local_task_codes():
            defs = definitions(cfg, workflow=workflow, config_path=config_path, generation=generation)
        doc = {"dry_run": True, "generation": generation, "note": DRY_RUN_NOTE, "workflows": defs}
        echo(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False))
        return defs

    token = os.environ.get(TOKEN_ENV)
    if generation != "3.1" and not token:
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

    from cohortflow.ds_api import DolphinSchedulerApi, DSApiError

    selected = _selected(workflow)
    if api is None:
        try:
            api = DolphinSchedulerApi(cfg)
        except DSApiError as exc:
            raise RegistrationError(f"{exc} (registering also sets up alerts and schedules over the REST API)") from None
    _connect(sdk, cfg, token)
    ds = cfg.dolphinscheduler
    alert_group = None
    if ds.alert_webhook:
        alert_group = api.ensure_webhook_alert(f"cohortflow-{ds.project}", ds.alert_webhook)
        echo(f"failure alerts of project {ds.project} go to alert group {alert_group} (HTTP POST to the configured webhook)")
    registered: list[dict[str, Any]] = []
    for wf in selected:
        sw = _compile(wf, cfg, generation, config_path, alert_group=alert_group)
        try:
            code = sdk.submit(sdk.build(sw, cfg), password)
        except Py4JError as exc:
            raise GatewayError(f"registering {wf.name} failed on the gateway: {_py4j_reason(exc)}") from None
        schedule = api.ensure_schedule_online(code)
        registered.append({"name": wf.name, "code": code, "schedule": schedule})
        echo(
            f"registered {wf.name} (workflow code {code}) in project {ds.project}: {len(sw.tasks)} Shell tasks "
            f"({sw.execution_type.lower().replace('_', ' ')}), schedule '{sw.schedule}' in {sw.timezone}, "
            f"{schedule.get('releaseState', '?').lower()}"
        )
    echo("registering again updates these workflows in place")
    return registered

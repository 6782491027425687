"""A small client of the DolphinScheduler REST API (3.1 and 3.2): runs, backfills, reruns, alerts, schedules.

The SDK (:mod:`cohortflow.register`) only defines workflows; starting a
backfill, rerunning from the failed task, reading instance states, setting up
alerts and bringing a schedule online are REST-only. This client uses the
standard library (``urllib``) and the endpoints of the API server at
``cfg.dolphinscheduler.api_url`` (``.../dolphinscheduler``). 3.1 and 3.2 share
these paths (3.3 renamed ``process-definition``/``process-instances`` to
``workflow-*``, and has no SDK release); 3.2 also wants the tenant of a run
(``tenantCode``), which 3.1 ignores.

- ``POST /login`` (form ``userName``, ``userPassword``) returns a ``sessionId``,
  sent back as the ``sessionId`` header; or an access token is sent as the
  ``token`` header. Credentials come from the environment only:
  ``COHORTFLOW_DS_TOKEN``, or ``COHORTFLOW_DS_USER`` and ``COHORTFLOW_DS_PASSWORD``.
- ``GET /projects``, ``GET /projects/{code}/process-definition`` find the codes.
- ``POST /projects/{code}/executors/start-process-instance`` with
  ``execType=COMPLEMENT_DATA`` starts a backfill ("complement data").
- ``GET /projects/{code}/process-instances`` and ``.../process-instances/{id}/tasks``
  read the states.
- ``POST /projects/{code}/executors/execute`` with ``START_FAILURE_TASK_PROCESS``
  reruns an instance from its failed tasks (same instance; succeeded tasks kept).
- ``GET /projects/{code}/schedules`` and ``POST .../schedules/{id}/online``.
- ``/ui-plugins``, ``/alert-plugin-instances`` and ``/alert-groups`` set up the
  failure alert (an HTTP alert plugin instance and its group).

Every answer is ``{"code": 0, "msg": "success", "data": ...}``; anything else
becomes a :class:`DSApiError` whose one-line message names the method and URL
(never a password, token or session id).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from cohortflow.config import Config

TOKEN_ENV = "COHORTFLOW_DS_TOKEN"
USER_ENV = "COHORTFLOW_DS_USER"
PASSWORD_ENV = "COHORTFLOW_DS_PASSWORD"

RUN_MODE_SERIAL = "RUN_MODE_SERIAL"
RUN_MODE_PARALLEL = "RUN_MODE_PARALLEL"
FINISHED_STATES = frozenset({"SUCCESS", "FAILURE", "STOP", "PAUSE", "BLOCK", "FORCED_SUCCESS", "KILL"})

_SCHEDULE_FORMAT = "%Y-%m-%d %H:%M:%S"


class DSApiError(Exception):
    """A DolphinScheduler API call failed; the message is one line with the URL."""


class DSConfigError(DSApiError):
    """The client cannot be set up (missing credentials, bad parallelism): a usage problem."""


def backfill_mode(warehouse_url: str, parallelism: int | None) -> tuple[str, int | None]:
    """(run mode, expected parallelism) of a DolphinScheduler backfill on this warehouse.

    Dates run in parallel only when the warehouse takes concurrent writers
    (PostgreSQL, where the model builds serialise on advisory locks) and more than
    one date at a time was asked for. DuckDB is one file with one writer: its
    backfills run one date after the other.
    """
    if parallelism is not None and parallelism < 1:
        raise DSConfigError(f"--parallelism must be at least 1, got {parallelism}")
    if parallelism is None or parallelism == 1:
        return RUN_MODE_SERIAL, None
    if not warehouse_url.startswith("postgresql"):
        raise DSConfigError(
            "a DuckDB warehouse takes one writer at a time, so its backfills run one date after the other; "
            "drop --parallelism (or use a PostgreSQL warehouse to run dates in parallel)"
        )
    return RUN_MODE_PARALLEL, parallelism


def complement_schedule(start: dt.date, end: dt.date) -> dict[str, str]:
    """The ``scheduleTime`` of a backfill of business dates ``start``..``end`` (inclusive).

    DolphinScheduler's ``${system.biz.date}`` is the schedule date minus one day,
    so business date D is the run scheduled on D + 1: the range is shifted by one
    day, and covers whole days (00:00:00 to 23:59:59) so that the run the
    workflow's cron fires on each of those days (02:30, say) falls inside it.
    The server reads these wall-clock times in the REST user's time zone and
    evaluates the cron in its own; whole days keep each date once unless those
    zones are far apart.
    """
    if end < start:
        raise DSConfigError(f"backfill end {end} is before start {start}")
    first = dt.datetime.combine(start + dt.timedelta(days=1), dt.time(0, 0, 0))
    last = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(23, 59, 59))
    return {"complementStartDate": first.strftime(_SCHEDULE_FORMAT), "complementEndDate": last.strftime(_SCHEDULE_FORMAT)}


class DolphinSchedulerApi:
    """The REST API of one project (and optionally one workflow) of the configured server."""

    def __init__(
        self,
        cfg: Config,
        workflow: str | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        env = os.environ if environ is None else environ
        self.cfg = cfg
        self.base_url = cfg.dolphinscheduler.api_url.rstrip("/")
        self.project = cfg.dolphinscheduler.project
        self.workflow = workflow
        self.timeout = timeout
        self._token = env.get(TOKEN_ENV) or None
        self._user = env.get(USER_ENV) or None
        self._password = env.get(PASSWORD_ENV) or None
        self._session: str | None = None
        self._project_code: int | None = None
        self._workflow_code: int | None = None
        if not self._token and not (self._user and self._password):
            raise DSConfigError(
                f"no DolphinScheduler API credentials: set {TOKEN_ENV} (an access token, Security > Token Manage) "
                f"or {USER_ENV} and {PASSWORD_ENV}"
            )

    # -- transport --------------------------------------------------------------------------

    def _url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def _auth_headers(self) -> dict[str, str]:
        if self._token:
            return {"token": self._token}
        if self._session is None:
            self.login()
        return {"sessionId": self._session or ""}

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        form: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> Any:
        url = self._url(path, query)
        headers = {"Accept": "application/json"}
        body = None
        if form is not None:
            body = urllib.parse.urlencode({k: v for k, v in form.items() if v is not None}).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if auth:
            headers.update(self._auth_headers())
        request = urllib.request.Request(url, data=body, headers=headers, method=method)
        where = f"DolphinScheduler API {method} {url}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            hint = " (check the token or user and password)" if exc.code == 401 else ""
            raise DSApiError(f"{where}: HTTP {exc.code} {exc.reason}{hint}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DSApiError(f"{where}: cannot connect ({reason})") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise DSApiError(f"{where}: the answer is not JSON ({raw[:80]!r})") from None
        if not isinstance(answer, dict) or answer.get("code") != 0:
            code = answer.get("code") if isinstance(answer, dict) else None
            msg = answer.get("msg") if isinstance(answer, dict) else answer
            raise DSApiError(f"{where}: error {code}: {str(msg).splitlines()[0] if msg else 'no message'}")
        return answer.get("data")

    def login(self) -> None:
        """Open a session with the user and password from the environment."""
        data = self._call("POST", "/login", form={"userName": self._user, "userPassword": self._password}, auth=False)
        session = (data or {}).get("sessionId") if isinstance(data, dict) else None
        if not session:
            raise DSApiError(f"DolphinScheduler API POST {self._url('/login')}: no sessionId in the answer")
        self._session = session

    # -- codes ------------------------------------------------------------------------------

    def _find(self, path: str, name: str, what: str, query: Mapping[str, Any] | None = None) -> int:
        page = self._call("GET", path, query={"searchVal": name, "pageNo": 1, "pageSize": 100, **(query or {})})
        items = (page or {}).get("totalList") or []
        for item in items:
            if item.get("name") == name:
                return int(item["code"])
        raise DSApiError(f"DolphinScheduler API GET {self._url(path)}: no {what} named {name!r} (run 'cohortflow register' first)")

    @property
    def project_code(self) -> int:
        if self._project_code is None:
            self._project_code = self._find("/projects", self.project, "project")
        return self._project_code

    @property
    def workflow_code(self) -> int:
        if self.workflow is None:
            raise DSConfigError("no workflow given")
        if self._workflow_code is None:
            self._workflow_code = self._find(
                f"/projects/{self.project_code}/process-definition", self.workflow, f"workflow in project {self.project}"
            )
        return self._workflow_code

    # -- operations -------------------------------------------------------------------------

    def start_backfill(
        self,
        start: dt.date,
        end: dt.date,
        parallelism: int | None = None,
        run_mode: str = RUN_MODE_SERIAL,
        failure_strategy: str = "END",
    ) -> Any:
        """Start a backfill ("complement data") of business dates ``start``..``end``; return the trigger code.

        Dates run oldest first (``executionOrder=ASC_ORDER``, as the local
        backfill does); a serial backfill stops at the first failed date
        (``failureStrategy=END``).
        """
        if run_mode not in (RUN_MODE_SERIAL, RUN_MODE_PARALLEL):
            raise DSConfigError(f"run mode must be {RUN_MODE_SERIAL} or {RUN_MODE_PARALLEL}, got {run_mode!r}")
        ds = self.cfg.dolphinscheduler
        warning_type, warning_group_id = self.alert_settings()
        form = {
            "processDefinitionCode": self.workflow_code,
            "scheduleTime": json.dumps(complement_schedule(start, end)),
            "execType": "COMPLEMENT_DATA",
            "failureStrategy": failure_strategy,
            "warningType": warning_type,
            "warningGroupId": warning_group_id or None,
            "runMode": run_mode,
            "expectedParallelismNumber": parallelism if run_mode == RUN_MODE_PARALLEL else None,
            "executionOrder": "ASC_ORDER",
            "complementDependentMode": "OFF_MODE",
            "taskDependType": "TASK_POST",
            "processInstancePriority": "MEDIUM",
            "workerGroup": ds.worker_group,
            "tenantCode": ds.tenant,
            "dryRun": 0,
            "testFlag": 0,
        }
        return self._call("POST", f"/projects/{self.project_code}/executors/start-process-instance", form=form)

    def alert_settings(self) -> tuple[str, int]:
        """(warning type, alert group id) of runs started here: the group that ``register`` set up, else the configured one."""
        from cohortflow.server_dag import alert_settings

        ds = self.cfg.dolphinscheduler
        if ds.alert_webhook:
            group = self.find_alert_group(f"cohortflow-{ds.project}")
            if group is not None:
                return "FAILURE", group
        return alert_settings(self.cfg)

    def start_date(self, business_date: dt.date) -> Any:
        """Run the workflow for one business date now (a one-date complement run, so the date is exact).

        A failed task stops only what depends on it (``failureStrategy=CONTINUE``,
        as scheduled runs do): the other branches finish, so a rerun from the
        failed task runs that task and its downstream only.
        """
        return self.start_backfill(business_date, business_date, failure_strategy="CONTINUE")

    def rerun_failed(self, instance_id: int) -> Any:
        """Rerun a finished instance from its failed tasks: they and their downstream run again, the rest is kept."""
        form = {"processInstanceId": int(instance_id), "executeType": "START_FAILURE_TASK_PROCESS"}
        return self._call("POST", f"/projects/{self.project_code}/executors/execute", form=form)

    def instance(self, instance_id: int) -> dict[str, Any]:
        return self._call("GET", f"/projects/{self.project_code}/process-instances/{int(instance_id)}") or {}

    def latest_failed_instance(self) -> dict[str, Any]:
        for inst in self.recent_instances(50):
            if inst.get("state") == "FAILURE":
                return inst
        raise DSApiError(f"no failed instance of {self.workflow or 'any workflow'} among the latest 50 in project {self.project}")

    # -- schedules --------------------------------------------------------------------------

    def schedule(self, workflow_code: int) -> dict[str, Any] | None:
        page = self._call(
            "GET",
            f"/projects/{self.project_code}/schedules",
            query={"processDefinitionCode": int(workflow_code), "pageNo": 1, "pageSize": 10},
        )
        items = (page or {}).get("totalList") or []
        return items[0] if items else None

    def ensure_schedule_online(self, workflow_code: int) -> dict[str, Any]:
        """Bring the workflow's schedule online if it is not (SDK 3.1.1 leaves a re-submitted one offline)."""
        sched = self.schedule(workflow_code)
        if sched is None:
            raise DSApiError(f"workflow {workflow_code} in project {self.project} has no schedule")
        if sched.get("releaseState") != "ONLINE":
            self._call("POST", f"/projects/{self.project_code}/schedules/{int(sched['id'])}/online")
            sched = self.schedule(workflow_code) or sched
        return sched

    # -- alerts -----------------------------------------------------------------------------

    def find_alert_group(self, name: str) -> int | None:
        for group in self._call("GET", "/alert-groups/list") or []:
            if group.get("groupName") == name:
                return int(group["id"])
        return None

    def ensure_webhook_alert(self, name: str, url: str) -> int:
        """An HTTP alert plugin instance that POSTs to ``url`` and an alert group holding it, both named ``name``.

        Created, or updated in place when they exist; returns the alert group id.
        The POST body is JSON: ``{"source": "cohortflow", "text": <the alert>}``.
        """
        plugins = self._call("GET", "/ui-plugins/query-by-type", query={"pluginType": "ALERT"}) or []
        http = next((p for p in plugins if str(p.get("pluginName", "")).lower() == "http"), None)
        if http is None:
            raise DSApiError(f"DolphinScheduler API GET {self._url('/ui-plugins/query-by-type')}: no Http alert plugin")
        detail = self._call("GET", f"/ui-plugins/{int(http['id'])}") or {}
        params = json.loads(detail.get("pluginParams") or "[]")
        values = {
            "url": url,
            "requestType": "POST",
            "headerParams": json.dumps({"Content-Type": "application/json"}),
            "bodyParams": json.dumps({"source": "cohortflow"}),
            "contentField": "text",
        }
        for param in params:
            if param.get("field") in values:
                param["value"] = values[param["field"]]
        form = {"instanceName": name, "pluginInstanceParams": json.dumps(params)}
        existing = next(
            (i for i in self._call("GET", "/alert-plugin-instances/list") or [] if i.get("instanceName") == name), None
        )
        if existing is None:
            self._call("POST", "/alert-plugin-instances", form={**form, "pluginDefineId": int(http["id"])})
            existing = next(i for i in self._call("GET", "/alert-plugin-instances/list") or [] if i.get("instanceName") == name)
        else:
            self._call("PUT", f"/alert-plugin-instances/{int(existing['id'])}", form=form)
        group_form = {"groupName": name, "description": "cohortflow: failed runs", "alertInstanceIds": str(existing["id"])}
        group = self.find_alert_group(name)
        if group is None:
            self._call("POST", "/alert-groups", form=group_form)
            group = self.find_alert_group(name)
        else:
            self._call("PUT", f"/alert-groups/{group}", form=group_form)
        if group is None:
            raise DSApiError(f"DolphinScheduler API POST {self._url('/alert-groups')}: the group {name!r} was not created")
        return group

    def recent_instances(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest workflow instances of the project (of the workflow, when one was given), newest first."""
        query = {"pageNo": 1, "pageSize": limit}
        if self.workflow is not None:
            query["processDefineCode"] = self.workflow_code
        page = self._call("GET", f"/projects/{self.project_code}/process-instances", query=query)
        return list((page or {}).get("totalList") or [])[:limit]

    def workflows(self) -> list[dict[str, Any]]:
        """The workflow definitions of the project."""
        page = self._call("GET", f"/projects/{self.project_code}/process-definition", query={"pageNo": 1, "pageSize": 100})
        return list((page or {}).get("totalList") or [])

    def task_attempts(self, instance_id: int) -> list[dict[str, Any]]:
        """Every task instance of a workflow instance, reruns included (``task_instances`` has the current ones)."""
        page = self._call(
            "GET",
            f"/projects/{self.project_code}/task-instances",
            query={"processInstanceId": int(instance_id), "pageNo": 1, "pageSize": 500},
        )
        return list((page or {}).get("totalList") or [])

    def definition(self, workflow_code: int) -> dict[str, Any]:
        """The workflow definition as the server holds it: tasks and relations."""
        return self._call("GET", f"/projects/{self.project_code}/process-definition/{int(workflow_code)}") or {}

    def task_instances(self, instance_id: int) -> list[dict[str, Any]]:
        """The task instances of one workflow instance."""
        data = self._call("GET", f"/projects/{self.project_code}/process-instances/{int(instance_id)}/tasks")
        return list((data or {}).get("taskList") or [])


def _business_date(schedule_time: Any) -> str:
    """``${system.biz.date}`` of an instance: its schedule date minus one day."""
    if not schedule_time:
        return "-"
    try:
        day = dt.datetime.strptime(str(schedule_time)[:10], "%Y-%m-%d").date()
    except ValueError:
        return "-"
    return str(day - dt.timedelta(days=1))


def server_status(api: DolphinSchedulerApi, limit: int = 10) -> str:
    """Recent workflow instances on the server with their task states, then the workflows' schedules, as text."""
    instances = api.recent_instances(limit)
    out: list[str] = [] if instances else [f"no workflow instances in project {api.project}"]
    for inst in instances:
        out.append(
            f"instance {inst.get('id')}  {inst.get('name', '')}  {inst.get('state', '?')}  "
            f"{inst.get('commandType', '')}  business date {_business_date(inst.get('scheduleTime'))}"
        )
        for t in sorted(api.task_instances(inst["id"]), key=lambda t: str(t.get("startTime") or "")):
            retries = f" retries={t['retryTimes']}" if t.get("retryTimes") else ""
            out.append(
                f"  {t.get('name', '?'):<10} {t.get('state', '?'):<16} {t.get('startTime') or '-'} -> {t.get('endTime') or '-'}"
                f"{retries}"
            )
    for wf in api.workflows():
        sched = api.schedule(int(wf["code"]))
        when = f"schedule '{sched.get('crontab')}' in {sched.get('timezoneId')}, {sched.get('releaseState')}" if sched else "no schedule"
        out.append(f"workflow {wf.get('name')} (code {wf.get('code')}, {wf.get('releaseState', '?')}): {when}")
    return "\n".join(out)

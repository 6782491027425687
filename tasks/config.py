"""Project configuration: one YAML file, validated on load, overridable by env.

Every key can be overridden by an environment variable named
``COHORTFLOW_`` + the upper-cased key path joined by ``__``, e.g.
``COHORTFLOW_WAREHOUSE__URL`` or ``COHORTFLOW_INGEST__LOOKBACK_DAYS``. Secrets
(the warehouse password) are read from the environment only and never
defaulted: ``COHORTFLOW_WAREHOUSE__PASSWORD``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cohortflow.adapters import FORMATS

ENV_PREFIX = "COHORTFLOW_"
CONFIG_ENV = "COHORTFLOW_CONFIG"
DEFAULT_CONFIG_NAME = "cohortflow.yml"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ConfigError(Exception):
    """A configuration problem, with a message that names the key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """One stream of raw logs: files under ``landing_root/path/<arrival date>/``."""

    name: str
    format: Literal["ark", "sensors", "segment", "posthog", "canonical"]
    path: str = Field(description="folder under the landing root; one sub-folder per arrival date")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be a simple name (letters, digits, underscore)")
        return v

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside the landing root (no '..', not absolute)")
        return v


class Warehouse(_Strict):
    url: str = Field(default="duckdb:///target/warehouse.duckdb")
    password: str | None = Field(default=None, repr=False, exclude=True)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("duckdb://") or v.startswith("postgresql")):
            raise ValueError("must be a duckdb:/// or postgresql+psycopg:// URL")
        if re.match(r"^[a-z+]+://[^/@]*:[^/@]+@", v):
            raise ValueError(
                "must not contain a password; set it in the environment as COHORTFLOW_WAREHOUSE__PASSWORD"
            )
        return v


class Ingest(_Strict):
    lookback_days: int = Field(default=7, ge=1, le=400, description="days of loaded events checked for duplicates and rebuilt by models")
    late_arrival_days: int = Field(default=7, ge=0, le=400, description="events older than this many days before the business date are quarantined")
    max_event_name_length: int = Field(default=256, ge=1)
    max_value_length: int = Field(default=65536, ge=16, description="longest string property value accepted")
    max_line_bytes: int = Field(default=1_048_576, ge=256)


class TrackedEvent(_Strict):
    name: str
    description: str = ""
    properties: dict[str, Literal["string", "number", "boolean", "object", "array"]] = Field(default_factory=dict)
    required: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _required_known(self) -> TrackedEvent:
        unknown = [p for p in self.required if p not in self.properties]
        if unknown:
            raise ValueError(f"required properties {unknown} are not declared in properties")
        return self


class TrackingPlan(_Strict):
    events: list[TrackedEvent] = Field(default_factory=list)

    @property
    def event_names(self) -> list[str]:
        return [e.name for e in self.events]


class Validation(_Strict):
    volume_trailing_days: int = Field(default=7, ge=1)
    volume_min_ratio: float = Field(default=0.3, gt=0, description="warn when volume < ratio * trailing median")
    volume_max_ratio: float = Field(default=3.0, gt=1, description="warn when volume > ratio * trailing median")


class Sessions(_Strict):
    timeout_minutes: int = Field(default=30, ge=1, le=1440)


class ActiveUsers(_Strict):
    """Options of the active-user and event-metric models."""

    wau_days: Literal[7] = 7
    mau_days: Literal[30] = 30


class Analyses(_Strict):
    active_users: ActiveUsers = Field(default_factory=ActiveUsers)
    sessions: Sessions = Field(default_factory=Sessions)
    # Funnels, retention and segments are declared here; their models read them.
    funnels: list[dict[str, Any]] = Field(default_factory=list)
    retention: list[dict[str, Any]] = Field(default_factory=list)
    segments: list[dict[str, Any]] = Field(default_factory=list)


class Schedule(_Strict):
    cron: str = Field(default="0 0 2 * * ? *", description="7-field Quartz cron, in the project time zone")

    @field_validator("cron")
    @classmethod
    def _quartz(cls, v: str) -> str:
        if len(v.split()) != 7:
            raise ValueError("must be a 7-field Quartz cron, e.g. '0 0 2 * * ? *'")
        return v


class DolphinScheduler(_Strict):
    project: str = "cohortflow"
    tenant: str = "default"
    gateway_address: str = "127.0.0.1"
    gateway_port: int = 25333
    api_url: str = "http://127.0.0.1:12345/dolphinscheduler"
    worker_group: str = "default"
    alert_group: str | None = None


class Config(_Strict):
    project: str = "cohortflow"
    timezone: str = "UTC"
    landing_root: str = "landing"
    target_dir: str = "target"
    sources: list[Source] = Field(min_length=1)
    warehouse: Warehouse = Field(default_factory=Warehouse)
    ingest: Ingest = Field(default_factory=Ingest)
    validation: Validation = Field(default_factory=Validation)
    tracking_plan: TrackingPlan = Field(default_factory=TrackingPlan)
    analyses: Analyses = Field(default_factory=Analyses)
    schedule: Schedule = Field(default_factory=Schedule)
    dolphinscheduler: DolphinScheduler = Field(default_factory=DolphinScheduler)
    # Folder of the config file: relative paths resolve against it.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. 'UTC', 'Asia/Shanghai', 'America/New_York')") from None
        return v

    @model_validator(mode="after")
    def _unique_sources(self) -> Config:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        return self

    # Derived paths -------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def landing_path(self) -> Path:
        return (self.base_dir / self.landing_root).resolve()

    @property
    def target_path(self) -> Path:
        return (self.base_dir / self.target_dir).resolve()

    @property
    def warehouse_url(self) -> str:
        """The warehouse URL with relative DuckDB paths resolved against the config folder."""
        url = self.warehouse.url
        if url.startswith("duckdb:///") and not url.startswith("duckdb:////") and ":memory:" not in url:
            rel = url[len("duckdb:///") :]
            return "duckdb:///" + str((self.base_dir / rel).resolve())
        return url


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    """Overlay ``COHORTFLOW_A__B=value`` onto ``data['a']['b']`` (YAML-parsed value)."""
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        # Only keys of the config file; other COHORTFLOW_* variables (RUN_ID, DEBUG ...) are the CLI's.
        if not path or path[0] not in Config.model_fields or path[0] == "base_dir":
            continue
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if path == ["warehouse", "password"]:
            node[path[-1]] = raw  # secrets are never YAML-parsed (a password like 'yes' stays a string)
        else:
            try:
                node[path[-1]] = yaml.safe_load(raw) if raw != "" else raw
            except yaml.YAMLError:
                node[path[-1]] = raw
    return data


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the config reference in README.md)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def find_config_path(path: str | Path | None = None) -> Path:
    candidate = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)
    if not candidate.is_file():
        raise ConfigError(
            f"config file not found: {candidate} (pass --config, set {CONFIG_ENV}, "
            f"or run 'cohortflow demo' to create an example project)"
        )
    return candidate.resolve()


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load, env-overlay and validate the project config; raise ConfigError with a readable message."""
    cfg_path = find_config_path(path)
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping of keys")
    if "password" in (data.get("warehouse") or {}):
        raise ConfigError(
            f"{cfg_path}: warehouse.password must not be written in the config file; "
            "set COHORTFLOW_WAREHOUSE__PASSWORD in the environment"
        )
    data = _apply_env(data, dict(os.environ if environ is None else environ))
    data["base_dir"] = cfg_path.parent
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(cfg_path))) from None


def parse_business_date(value: str | dt.date) -> dt.date:
    """Accept ``YYYY-MM-DD`` and DolphinScheduler's ``YYYYMMDD``."""
    if isinstance(value, dt.date):
        return value
    text = value.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD or YYYYMMDD")

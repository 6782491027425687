"""Project configuration: one YAML file, validated on load, overridable by env.

Every key can be overridden by an environment variable named
``COHORTFLOW_`` + the upper-cased key path joined by ``__``, e.g.
``COHORTFLOW_WAREHOUSE__URL`` or ``COHORTFLOW_INGEST__LOOKBACK_DAYS``. Secrets
(the warehouse password, the pseudonymisation key) are read from the
environment only and never defaulted: ``COHORTFLOW_WAREHOUSE__PASSWORD``,
``COHORTFLOW_PRIVACY__KEY``.

The whole document is checked before any data is touched
(:func:`check_text`): control and invisible characters, NUL, globs in paths,
over-long names and passwords in any URL are refused, naming the key and never
echoing the value (it may hold a secret).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import unicodedata
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


ENV_PREFIX = "COHORTFLOW_"
CONFIG_ENV = "COHORTFLOW_CONFIG"
DEFAULT_CONFIG_NAME = "cohortflow.yml"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _simple_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise ValueError("must be a simple name (letters, digits, underscore)")
    return v


# A name that SQL and file paths can carry as it is (sources, funnels, retention and segment definitions).
SimpleName = Annotated[str, AfterValidator(_simple_name)]

# Characters a file or folder name of the landing root may not hold: the ingest reads paths literally, never as
# patterns, so a pattern would silently find nothing.
_GLOB_CHARS = frozenset("*?[]{}")
# The longest text any config value may be (a name, a filter value, a description).
MAX_TEXT_CHARS = 4096
# Secrets: the keys whose values are read from the environment only.
SECRET_KEYS = {("warehouse", "password"): "COHORTFLOW_WAREHOUSE__PASSWORD", ("privacy", "key"): "COHORTFLOW_PRIVACY__KEY"}
# Query parameters of a URL that carry a secret (compared case-insensitively, as substrings).
_SECRET_PARAMS = ("password", "passwd", "pwd", "secret", "token")


class ConfigError(Exception):
    """A configuration problem, with a message that names the key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """One stream of raw logs: files under ``landing_root/path/<arrival date>/``."""

    name: SimpleName
    format: Literal["ark", "sensors", "segment", "posthog", "canonical"]
    path: str = Field(description="folder under the landing root; one sub-folder per arrival date")
    optional: bool = Field(
        default=False,
        description="a missing date folder means no data from this source that day (otherwise a missing folder fails the ingest)",
    )

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = Path(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside the landing root (no '..', not absolute)")
        _no_glob(v)
        return v


def _no_glob(v: str) -> str:
    if any(c in _GLOB_CHARS for c in v):
        raise ValueError("must be a literal path: wildcard characters (* ? [ ] { }) are not allowed")
    return v


_SIZE = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,3})?) ?(KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


# Below this DuckDB fails the pipeline's statements with "Out of Memory Error" (a load of 2,000 events failed at
# 1MB): a typo such as "1MB" for "1GB" is refused with the config, not at 2 a.m. in the load.
MIN_MEMORY_LIMIT = 128 * 10**6


def _memory_size(v: str | None) -> str | None:
    if v is not None and not _SIZE.fullmatch(v):
        raise ValueError("must be a size like '3GB' or '512MiB'")
    if v is not None and size_bytes(v) < MIN_MEMORY_LIMIT:
        raise ValueError("must be at least 128MB (DuckDB fails statements with less)")
    return v


def size_bytes(size: str) -> int:
    """Bytes in a size as DuckDB's memory_limit takes it ('3GB', '512 MiB')."""
    number, unit = _SIZE.fullmatch(size).groups()
    return int(float(number) * _SIZE_UNITS[unit])


class Warehouse(_Strict):
    url: str = Field(default="duckdb:///target/warehouse.duckdb")
    password: str | None = Field(default=None, repr=False, exclude=True)
    memory_limit: str | None = Field(
        default=None,
        description="DuckDB only: memory the engine may use before spilling to disk, e.g. '3GB' (default: DuckDB's, 80 % of RAM)",
    )
    threads: int | None = Field(default=None, ge=1, le=1024, description="DuckDB only: worker threads (default: one per core)")
    storage_root: str | None = Field(
        default=None,
        description=(
            "Trino only, for a catalog on the local file system: the folder its local.location names, where this "
            "machine writes the Parquet files of a load (locations s3://, gs://, abfs://, hdfs:// need none)"
        ),
    )

    _memory_limit = field_validator("memory_limit")(_memory_size)

    @model_validator(mode="after")
    def _duckdb_only(self) -> Warehouse:
        if not self.url.startswith("duckdb") and (self.memory_limit is not None or self.threads is not None):
            raise ValueError("memory_limit and threads apply to a DuckDB warehouse only (set PostgreSQL's on the server)")
        if self.storage_root is not None and not self.url.startswith("trino://"):
            raise ValueError("storage_root applies to a Trino warehouse only")
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("duckdb://") or v.startswith("postgresql") or v.startswith("trino://")):
            raise ValueError("must be a duckdb:///, postgresql+psycopg:// or trino://user@host:port/catalog URL")
        if url_secret(v):
            raise ValueError(
                "must not contain a password; set it in the environment as COHORTFLOW_WAREHOUSE__PASSWORD"
            )
        return v


def url_secret(value: str) -> str | None:
    """Where a URL holds a secret ("user info", "query parameter NAME"), else None.

    The user info is everything before the first ``@`` after ``://``; a ``:`` in it is read as user:password, whatever
    the password holds (``/``, ``@``, ``?``, percent escapes). Query parameter names are compared decoded.
    """
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", value)
    if m is None:
        return None
    rest = value[m.end() :]
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        return "user info"
    if "?" in rest:
        for key, _ in urllib.parse.parse_qsl(rest.split("?", 1)[1], keep_blank_values=True):
            if any(word in key.lower() for word in _SECRET_PARAMS):
                return "query parameter"
    return None


class Ingest(_Strict):
    lookback_days: int = Field(
        default=7,
        ge=1,
        le=400,
        description="copies of an event id loaded this many days apart or closer are duplicates of each other; at least late_arrival_days",
    )
    late_arrival_days: int = Field(
        default=7,
        ge=0,
        le=400,
        description="events older than this many days before the business date are quarantined; numbers are complete this long after their period",
    )
    identity_reach_days: int | None = Field(
        default=None,
        ge=0,
        le=3660,
        description="no longer used: a new identity link re-attributes the linked id's whole history (kept so older configs load)",
    )
    max_event_name_length: int = Field(default=256, ge=1)
    max_value_length: int = Field(default=65536, ge=16, description="longest string property value accepted")
    max_line_bytes: int = Field(default=1_048_576, ge=256)
    workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="processes (the ingest's own included) that parse a day's files in parallel, once the day holds 32 MB of lines or more; 0: one per CPU core",
    )
    memory_limit: str | None = Field(
        default="1GB",
        description=(
            "DuckDB only: memory the load of a day may use, whatever the day's size (beyond it DuckDB spills to disk; "
            "the warehouse's memory_limit when that is smaller); null: the warehouse's"
        ),
    )

    _memory_limit = field_validator("memory_limit")(_memory_size)

    @model_validator(mode="after")
    def _windows_agree(self) -> Ingest:
        # A retried send arrives up to late_arrival_days after the first copy; a shorter duplicate window would load both.
        if self.lookback_days < self.late_arrival_days:
            raise ValueError(
                f"lookback_days ({self.lookback_days}) must be at least late_arrival_days ({self.late_arrival_days}): "
                "a copy of an event accepted that late must still be recognised as a duplicate"
            )
        return self


class Privacy(_Strict):
    """Pseudonymisation and property drops at ingest (see :mod:`cohortflow.privacy`)."""

    pseudonymize_ids: bool = Field(default=False, description="replace user, device and anonymous ids by a keyed hash (HMAC-SHA-256) at ingest")
    key: str | None = Field(default=None, repr=False, exclude=True, description="from COHORTFLOW_PRIVACY__KEY only")
    id_properties: list[str] = Field(
        default_factory=lambda: [
            "$device_id", "device_id", "$anon_distinct_id", "$original_id", "original_id", "anonymous_id",
            "anonymousId", "login_id", "user_id", "userId", "distinct_id", "alias",
        ],
        description="top-level properties that hold ids: hashed like the ids when pseudonymize_ids is on",
    )
    drop_properties: list[str] = Field(default_factory=list, description="property keys removed (at any depth) before storing")
    drop_ip_properties: bool = Field(default=False, description="remove properties named like an IP address field or holding an IP address")


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
    volume_min_ratio: float = Field(default=0.3, gt=0, description="a day with fewer events than ratio * trailing median is out of bounds")
    volume_max_ratio: float = Field(default=3.0, gt=1, description="warn when volume > ratio * trailing median")
    volume_severity: Literal["critical", "warning"] = Field(
        default="critical",
        description="a day outside the volume bounds stops before publish (critical) or is only reported (warning)",
    )
    part_rows: int = Field(
        default=500_000,
        ge=1,
        description="DuckDB validates the day in pandas, in parts of about this many rows (split on a hash of the "
        "uniqueness columns, so every outcome is the whole day's): memory is bounded by the part",
    )


class Sessions(_Strict):
    timeout_minutes: int = Field(default=30, ge=1, le=1440)


class ActiveUsers(_Strict):
    """Options of the active-user and event-metric models."""

    wau_days: Literal[7] = 7
    mau_days: Literal[30] = 30


class PropertyFilter(_Strict):
    """A condition on an event property (or a preset column) of the event."""

    property: str = Field(description="property key in the event's properties, or one of platform/app_version/channel")
    op: Literal["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "is_set", "is_not_set"] = "eq"
    value: str | int | float | bool | list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _value_shape(self) -> PropertyFilter:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op in ("is_set", "is_not_set") and self.value is not None:
            raise ValueError(f"op {self.op!r} takes no value")
        if self.op not in ("in", "not_in", "is_set", "is_not_set") and (self.value is None or isinstance(self.value, list)):
            raise ValueError(f"op {self.op!r} needs a single value")
        return self


class FunnelStep(_Strict):
    event: str
    where: list[PropertyFilter] = Field(default_factory=list, description="all must hold (AND)")
    label: str | None = None


class Funnel(_Strict):
    name: SimpleName
    steps: list[FunnelStep] = Field(min_length=2, max_length=32)
    window_seconds: int = Field(default=7 * 86400, ge=1, description="conversion window from the first step")
    mode: Literal["ordered", "strictly_increasing"] = "ordered"
    breakdown: str | None = Field(default=None, description="property of the user's earliest step-1 event on the entry date")
    segment: str | None = Field(default=None, description="only members of this segment on the entry date")
    breakdown_segment: str | None = Field(
        default=None, description="break down by membership of this segment on the entry date: 'in NAME' / 'not in NAME'"
    )


class EventRef(_Strict):
    """An event (with optional filters), or any activity when ``event`` is omitted."""

    event: str | None = Field(default=None, description="event name; omitted = any activity event")
    where: list[PropertyFilter] = Field(default_factory=list)


class Retention(_Strict):
    name: SimpleName
    start: EventRef = Field(default_factory=EventRef)
    returning: EventRef = Field(default_factory=EventRef, alias="return")
    period: Literal["day", "week", "month"] = "day"
    horizon: int = Field(default=30, ge=1, le=400, description="number of periods after the cohort period")
    cohort_type: Literal["first_time", "recurring"] = "first_time"
    mode: Literal["on", "on_or_after"] = "on"
    breakdown: str | None = None
    segment: str | None = None
    breakdown_segment: str | None = Field(
        default=None, description="break down by membership of this segment on the cohort date: 'in NAME' / 'not in NAME'"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_on(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `mode: on` as the boolean true.
        return "on" if v is True else v


class FrequencyRetention(_Strict):
    """The "magic number": retention by how often users did an event in their first days."""

    name: str
    event: str
    first_days: int = Field(default=7, ge=1, le=90, description="count events in [d0, d0 + first_days)")
    target_from_day: int = Field(default=7, ge=1, description="retained = active on a day in [d0 + from, d0 + to]")
    target_to_day: int = Field(default=13, ge=1)
    cap: int = Field(default=20, ge=1, le=1000, description="counts above cap share one 'cap+' bucket")

    @model_validator(mode="after")
    def _window(self) -> FrequencyRetention:
        if self.target_to_day < self.target_from_day:
            raise ValueError("target_to_day must be >= target_from_day")
        return self


class SegmentRule(_Strict):
    """One rule, or a combination of rules with and / or / not."""

    # Leaves
    did_event: str | None = Field(default=None, description="did this event at least `min_count` times in the last `days` days")
    min_count: int = Field(default=1, ge=1)
    days: int = Field(default=30, ge=1, le=400)
    first_seen_within_days: int | None = Field(default=None, ge=1, le=400, description="first active within the last N days")
    latest_property: PropertyFilter | None = Field(default=None, description="the property on the user's latest event")
    # Combinations
    and_: list[SegmentRule] | None = Field(default=None, alias="and")
    or_: list[SegmentRule] | None = Field(default=None, alias="or")
    not_: SegmentRule | None = Field(default=None, alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind(self) -> SegmentRule:
        kinds = [
            self.did_event is not None,
            self.first_seen_within_days is not None,
            self.latest_property is not None,
            self.and_ is not None,
            self.or_ is not None,
            self.not_ is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError("a rule has exactly one of: did_event, first_seen_within_days, latest_property, and, or, not")
        return self


def _rule_depth(rule: SegmentRule) -> int:
    """Levels of a rule tree: a leaf is 1, each and / or / not adds one."""
    children = [*(rule.and_ or []), *(rule.or_ or []), *([rule.not_] if rule.not_ is not None else [])]
    return 1 + max((_rule_depth(c) for c in children), default=0)


def _empty_combination(rule: SegmentRule) -> bool:
    if rule.and_ == [] or rule.or_ == []:
        return True
    children = [*(rule.and_ or []), *(rule.or_ or []), *([rule.not_] if rule.not_ is not None else [])]
    return any(_empty_combination(c) for c in children)


# The segment model evaluates rule trees level by level, one SQL pass per level.
MAX_SEGMENT_DEPTH = 8


class Segment(_Strict):
    name: SimpleName
    rule: SegmentRule

    @model_validator(mode="after")
    def _shape(self) -> Segment:
        if _empty_combination(self.rule):
            raise ValueError("an 'and' or 'or' needs at least one rule")
        depth = _rule_depth(self.rule)
        if depth > MAX_SEGMENT_DEPTH:
            raise ValueError(
                f"the rule is nested {depth} levels deep; at most {MAX_SEGMENT_DEPTH} are supported "
                "(a leaf is one level, each and / or / not adds one)"
            )
        return self


class Paths(_Strict):
    start_event: str | None = Field(default=None, min_length=1, description="paths are counted from this event (default: session start)")
    max_steps: int = Field(default=5, ge=1, le=20)
    top_n: int = Field(default=20, ge=1, le=1000)


class Analyses(_Strict):
    active_users: ActiveUsers = Field(default_factory=ActiveUsers)
    sessions: Sessions = Field(default_factory=Sessions)
    funnels: list[Funnel] = Field(default_factory=list)
    retention: list[Retention] = Field(default_factory=list)
    frequency_retention: list[FrequencyRetention] = Field(default_factory=list)
    segments: list[Segment] = Field(default_factory=list)
    paths: Paths = Field(default_factory=Paths)
    breakdowns: list[Literal["platform", "app_version", "channel"]] = Field(
        default_factory=lambda: ["platform", "app_version", "channel"],
        description="breakdowns of the event metrics",
    )

    @model_validator(mode="after")
    def _names_and_refs(self) -> Analyses:
        for kind in ("funnels", "retention", "frequency_retention", "segments"):
            names = [d.name for d in getattr(self, kind)]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind}: names must be unique; repeated: {dupes}")
        segments = {s.name for s in self.segments}
        for d in [*self.funnels, *self.retention]:
            for key in ("segment", "breakdown_segment"):
                name = getattr(d, key)
                if name is not None and name not in segments:
                    raise ValueError(f"{d.name}: {key} {name!r} is not defined under analyses.segments")
            if d.breakdown is not None and d.breakdown_segment is not None:
                raise ValueError(f"{d.name}: breakdown and breakdown_segment cannot both be set (one breakdown per definition)")
        return self


class Schedule(_Strict):
    cron: str | None = Field(
        default=None,
        description="7-field Quartz cron in the project time zone; overrides the schedule declared in workflows/ when set",
    )

    @field_validator("cron")
    @classmethod
    def _quartz(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 7:
            raise ValueError("must be a 7-field Quartz cron, e.g. '0 0 2 * * ? *'")
        return v


class DolphinScheduler(_Strict):
    project: str = "cohortflow"
    tenant: str = "default"
    gateway_address: str = "127.0.0.1"
    gateway_port: int = 25333
    api_url: str = "http://127.0.0.1:12345/dolphinscheduler"
    worker_group: str = "default"
    alert_group: int | None = Field(default=None, ge=1, description="id of the DolphinScheduler alarm group notified on failure")
    alert_webhook: str | None = Field(
        default=None,
        description="URL that 'cohortflow register' sets up as an HTTP alert (plugin instance and alert group) for failed runs",
    )
    executable: str | None = Field(
        default=None,
        description="absolute path of the cohortflow executable on the workers (default: the registering environment's)",
    )

    @field_validator("executable")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path (tasks must not depend on the worker's PATH)")
        return v

    @field_validator("alert_webhook")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class Snapshots(_Strict):
    keep_days: int = Field(
        default=30,
        ge=0,
        le=3660,
        description=(
            "snapshot folders of business dates more than this many days before the newest one are deleted after "
            "a successful night (0 keeps the newest only); the one 'latest' points to is always kept"
        ),
    )


class Report(_Strict):
    enabled: bool = Field(default=True, description="write the HTML report of the business date at every publish")
    history_days: int = Field(default=90, ge=7, le=3660, description="days of history the report's trend charts show")
    keep_days: int = Field(
        default=90, ge=0, le=3660, description="reports of business dates more than this many days before the newest are deleted"
    )


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
    privacy: Privacy = Field(default_factory=Privacy)
    snapshots: Snapshots = Field(default_factory=Snapshots)
    report: Report = Field(default_factory=Report)
    # Folder of the config file: relative paths resolve against it.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown IANA time zone (e.g. 'UTC', 'Asia/Shanghai', 'America/New_York')") from None
        return v

    @field_validator("landing_root", "target_dir")
    @classmethod
    def _literal_path(cls, v: str) -> str:
        return _no_glob(v)

    @model_validator(mode="after")
    def _name_lengths(self) -> Config:
        """An event name longer than the ingest accepts could never match an event: refuse it here, by key."""
        limit = self.ingest.max_event_name_length
        for key, name in _event_names(self):
            if len(name) > limit:
                raise ValueError(f"{key}: event name of {len(name)} characters is longer than ingest.max_event_name_length ({limit})")
        return self

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


def _event_names(cfg: Config):
    """(key path, event name) of every event name the config refers to."""
    for i, e in enumerate(cfg.tracking_plan.events):
        yield f"tracking_plan.events.{i}.name", e.name
    a = cfg.analyses
    for i, f in enumerate(a.funnels):
        for j, step in enumerate(f.steps):
            yield f"analyses.funnels.{i}.steps.{j}.event", step.event
    for i, r in enumerate(a.retention):
        for part in ("start", "returning"):
            ref = getattr(r, part)
            if ref.event is not None:
                yield f"analyses.retention.{i}.{'return' if part == 'returning' else part}.event", ref.event
    for i, fr in enumerate(a.frequency_retention):
        yield f"analyses.frequency_retention.{i}.event", fr.event
    if a.paths.start_event is not None:
        yield "analyses.paths.start_event", a.paths.start_event
    for i, seg in enumerate(a.segments):
        stack = [(f"analyses.segments.{i}.rule", seg.rule)]
        while stack:
            key, rule = stack.pop()
            if rule.did_event is not None:
                yield f"{key}.did_event", rule.did_event
            for word, children in (("and", rule.and_), ("or", rule.or_)):
                stack.extend((f"{key}.{word}.{j}", c) for j, c in enumerate(children or []))
            if rule.not_ is not None:
                stack.append((f"{key}.not", rule.not_))


def _bad_char(text: str, allow: str = "") -> str | None:
    """The first character of ``text`` no config value may hold (control, format/invisible, separators other than the
    space, private-use or unassigned), as ``U+XXXX (category)``; None when all are printable."""
    for c in text:
        if c == " " or c in allow or c.isprintable():
            continue
        return f"U+{ord(c):04X} ({unicodedata.category(c)})"
    return None


def check_text(data: Any, where: str = "") -> list[str]:
    """Problems of the raw config document, each ``key: why`` (never the value, which may hold a secret).

    Every mapping key and string value: printable characters only (descriptions may also hold tabs and line
    breaks), at most ``MAX_TEXT_CHARS`` characters; a URL anywhere must not hold a password.
    """
    problems: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            key = f"{where}.{k}" if where else str(k)
            if isinstance(k, str):
                if (bad := _bad_char(k)) is not None:
                    problems.append(f"{where or '(top level)'}: a key contains an invisible or control character {bad}")
                    continue
                if len(k) > MAX_TEXT_CHARS:
                    problems.append(f"{where or '(top level)'}: a key is longer than {MAX_TEXT_CHARS} characters")
                    continue
            problems.extend(check_text(v, key) if not isinstance(v, str) else _check_string(v, key, str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            key = f"{where}.{i}"
            problems.extend(check_text(v, key) if not isinstance(v, str) else _check_string(v, key, ""))
    return problems


def _check_string(value: str, key: str, leaf: str) -> list[str]:
    secret_env = next((env for path, env in SECRET_KEYS.items() if key == ".".join(path)), None)
    if secret_env is not None:
        return []  # a secret is never looked at here (it comes from the environment, refused in the file)
    if (bad := _bad_char(value, allow="\t\n\r" if leaf == "description" else "")) is not None:
        return [f"{key}: contains an invisible or control character {bad}; only printable characters are allowed"]
    if len(value) > MAX_TEXT_CHARS:
        return [f"{key}: is {len(value)} characters long; at most {MAX_TEXT_CHARS} are allowed"]
    if (where := url_secret(value)) is not None:
        return [f"{key}: a URL must not contain a password ({where}); passwords come from the environment only"]
    return []


def _apply_env(data: dict[str, Any], environ: dict[str, str], origins: dict[str, str] | None = None) -> dict[str, Any]:
    """Overlay ``COHORTFLOW_A__B=value`` onto ``data['a']['b']`` (YAML-parsed value); ``origins`` gets each overridden
    key path (``a.b``) and the variable that set it, so that errors name the variable, not the file."""
    for key, raw in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        # Only keys of the config file; other COHORTFLOW_* variables (RUN_ID, DEBUG ...) are the CLI's.
        if not path or path[0] not in Config.model_fields or path[0] == "base_dir":
            continue
        if origins is not None:
            origins[".".join(path)] = key
        node = data
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if tuple(path) in SECRET_KEYS:
            node[path[-1]] = raw  # secrets are never YAML-parsed (a password like 'yes' stays a string)
        else:
            try:
                node[path[-1]] = yaml.safe_load(raw) if raw != "" else raw
            except yaml.YAMLError:
                node[path[-1]] = raw
    return data


def _format_errors(err: ValidationError, source: str, origins: dict[str, str] | None = None) -> str:
    origins = origins or {}
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        # A value set by an environment variable is named by it (the file may not even hold the key).
        variable = next((v for k, v in origins.items() if loc == k or loc.startswith(k + ".")), None)
        if variable:
            loc = f"{variable} (environment variable, {loc})"
        msg = e["msg"].removeprefix("Value error, ")
        if not e["loc"] and re.match(r"^[\w.]+: ", msg):
            loc, msg = msg.split(": ", 1)  # a model-level check that names its key itself
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


def _yaml_error(exc: yaml.YAMLError) -> str:
    """Where and why the YAML is invalid, without the offending text (the line may hold a secret)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    # Keep quoted token names ('<scalar>', ':') but no quoted document text.
    problem = re.sub(r"'([^']*)'", lambda m: m.group(0) if len(m.group(1)) <= 2 or m.group(1).startswith("<") else "'...'", problem)
    problem = re.sub(r'"[^"]*"', '"..."', problem)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML{where}: {problem}"


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load, env-overlay and validate the project config; raise ConfigError with a readable message."""
    cfg_path = find_config_path(path)
    try:
        text = cfg_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not valid UTF-8 (at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: {_yaml_error(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: the top level must be a mapping of keys")
    for (section, key), env in SECRET_KEYS.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(
                f"{cfg_path}: {section}.{key} must not be written in the config file; set {env} in the environment"
            )
    origins: dict[str, str] = {}
    data = _apply_env(data, dict(os.environ if environ is None else environ), origins)
    problems = check_text(data)
    if problems:
        raise ConfigError("\n".join([f"invalid configuration in {cfg_path}:", *(f"  - {p}" for p in problems)]))
    data["base_dir"] = cfg_path.parent
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(cfg_path), origins)) from None


def parse_business_date(value: str | dt.date) -> dt.date:
    """Accept ``YYYY-MM-DD`` and DolphinScheduler's ``YYYYMMDD``."""
    if isinstance(value, dt.date):
        return value
    text = value.strip()
    # strptime alone would take '2026115' (ambiguous): require the exact shapes first.
    for shape, fmt in ((r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"), (r"\d{8}", "%Y%m%d")):
        if re.fullmatch(shape, text):
            try:
                return dt.datetime.strptime(text, fmt).date()
            except ValueError as exc:
                # The shape is right, the calendar says no (2026-02-30, 2026-13-01).
                raise ValueError(f"invalid date {value!r}: no such day in the calendar ({exc})") from None
    raise ValueError(f"invalid date {value!r}: expected YYYY-MM-DD or YYYYMMDD")

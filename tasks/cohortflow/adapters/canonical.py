"""The project's own JSONL schema, for sources transformed upstream.

One JSON object per line (UTF-8). Fields:

=====================  ===========================================  ========
field                  type                                         required
=====================  ===========================================  ========
``event_name``         string                                       yes
``distinct_id``        string or integer                            yes
``event_time``         ISO-8601 date-time string (``Z``/offset;     yes
                       no zone = UTC) or epoch milliseconds
                       (integer or digit string)
``event_id``           string or integer: the source's event id     no
                       (dedup key); absent -> content hash
``received_at``        same forms as ``event_time``: receipt time   no
``app_id``             string or integer                            no
``platform``           string                                       no
``app_version``        string                                       no
``channel``            string                                       no
``session_id``         string or integer                            no
``properties``         object                                       no (``{}``)
``is_activity``        boolean: false for identity/profile          no (true)
                       bookkeeping events
``link_anonymous_id``  string or integer: this event says           with the
                       "anonymous id A is login id L"               other one
``link_login_id``      string or integer                            with the
                                                                    other one
=====================  ===========================================  ========

Rules: ``null`` or an empty string means absent. Times must fall in
2000-01-01 .. 2100-01-01 UTC and are truncated to milliseconds. The two link
fields come together or not at all (one alone is ``missing_field``); a link of
an id to itself is ignored. Unknown fields are ignored. The event id is
``s:<event_id>`` when given, else the hash of (app_id, distinct_id,
event_name, event time ms, properties).

Example::

    {"event_id": "e-1", "event_name": "purchase", "distinct_id": "u42",
     "event_time": "2024-05-01T10:00:00.123Z", "platform": "iOS",
     "properties": {"amount": 9.99}}
"""

from __future__ import annotations

from cohortflow.adapters._common import (
    Unusual,
    fast_epoch,
    fast_id,
    fast_object,
    fast_required,
    fast_text,
    id_and_json,
    link,
    load_object,
    new_event,
    optional_bool,
    optional_id,
    optional_object,
    optional_str,
    present,
    require_id,
    require_str,
    time_ms,
)
from cohortflow.events import MISSING_FIELD, CanonicalEvent, LineError, source_event_id

SOURCE_FORMAT = "canonical"


def _time(obj: dict, key: str, required: bool) -> int | None:
    value = present(obj, key, required=required)
    return None if value is None else time_ms(value, key)


def parse_line(raw: bytes) -> CanonicalEvent:
    obj = load_object(raw)
    event_name = require_str(obj, "event_name")
    distinct_id = require_id(obj, "distinct_id")
    event_time = _time(obj, "event_time", required=True)
    received = _time(obj, "received_at", required=False)
    anon = optional_id(obj, "link_anonymous_id")
    login = optional_id(obj, "link_login_id")
    if (anon is None) != (login is None):
        missing = "link_login_id" if login is None else "link_anonymous_id"
        raise LineError(MISSING_FIELD, f"{missing} is missing; link fields come together")
    anon, login = link(anon, login)
    event_id = optional_id(obj, "event_id")

    columns = {
        "app_id": optional_id(obj, "app_id"),
        "platform": optional_str(obj, "platform"),
        "app_version": optional_str(obj, "app_version"),
        "channel": optional_str(obj, "channel"),
        "session_id": optional_id(obj, "session_id"),
    }
    props = optional_object(obj, "properties")
    source_id = None if event_id is None else source_event_id(event_id)
    is_activity = optional_bool(obj, "is_activity", default=True)
    return new_event(
        SOURCE_FORMAT, event_name, distinct_id, event_time, props,
        source_id=source_id, link_ids=(anon, login), received_at_ms=received, is_activity=is_activity, **columns,
    )


def map_fast(obj: dict) -> tuple:
    """The mapped row of a common clean line (see ``_common.MAPPED``): no link fields, ``properties`` an object or absent,
    the times integers. Anything else is left to :func:`parse_line`."""
    event_name = fast_required(obj.get("event_name"))
    distinct_id = fast_required(obj.get("distinct_id"))
    event_time = fast_epoch(obj.get("event_time"))
    received_at = obj.get("received_at")
    received = None if received_at is None else fast_epoch(received_at)
    props = fast_object(obj.get("properties"))
    is_activity = obj.get("is_activity", True)
    if type(is_activity) is not bool \
            or obj.get("link_anonymous_id") is not None or obj.get("link_login_id") is not None:
        raise Unusual
    app_id = fast_id(obj.get("app_id"))
    event_id = fast_id(obj.get("event_id"))
    event_id, props_json = id_and_json(app_id, distinct_id, event_name, event_time, props,
                                       None if event_id is None else source_event_id(event_id))
    return (event_id, event_name, distinct_id, event_time, received, app_id, fast_text(obj.get("platform")),
            fast_text(obj.get("app_version")), fast_text(obj.get("channel")), fast_id(obj.get("session_id")),
            props_json, is_activity, None, None)

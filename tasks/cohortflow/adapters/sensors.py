"""Sensors Analytics (神策) lines -> canonical events.

Raw line::

    {"type": "track", "event": "ViewProduct", "distinct_id": "...",
     "anonymous_id": "...", "login_id": "...", "time": 1700000000000,
     "project": "default", "properties": {"$os": "iOS", ...},
     "_track_id": 123456, "original_id": "..."}

* Required: ``type``, ``distinct_id`` (string or integer), ``time`` (epoch
  milliseconds); ``event`` for ``track``. ``project`` (-> ``app_id``),
  ``properties`` (object), ``_track_id``, ``original_id`` are optional.
* ``type``:

  - ``track``: a normal (activity) event named ``event``;
  - ``track_signup``: event ``event`` (default ``$SignUp``), links anonymous
    ``original_id`` (required) -> login ``distinct_id``; bookkeeping;
  - ``profile_*`` (``profile_set``, ``profile_set_once``, ...) and ``item_*``
    (``item_set``, ``item_delete``): bookkeeping events named after the type.
    ``item_*`` lines usually have no ``distinct_id``; theirs is then
    ``item:<item_type>:<item_id>`` (``item_id`` required);
  - anything else (including ID-Mapping 3 ``track_id_bind`` /
    ``track_id_unbind``) -> ``unsupported_type``.
* Dimension columns from ``properties``: platform ``$platform`` else ``$os``;
  app version ``$app_version``; channel ``$channel`` (UTM properties are not
  used); session ``$session_id`` else ``$event_session_id``.
* Event id: with ``_track_id``, a hash of (``_track_id``, distinct id, event
  name, time) -- Sensors' own dedup key; otherwise the content hash.
"""

from __future__ import annotations

from cohortflow.adapters._common import (
    Unusual,
    dimension,
    epoch_ms,
    fast_epoch,
    fast_id,
    fast_object,
    fast_required,
    id_and_json,
    link,
    load_object,
    new_event,
    optional_id,
    optional_object,
    optional_str,
    present,
    preset_dimensions,
    require_id,
    require_str,
)
from cohortflow.events import MISSING_FIELD, UNSUPPORTED_TYPE, CanonicalEvent, LineError, source_event_id

SOURCE_FORMAT = "sensors"

SIGNUP_EVENT = "$SignUp"


def parse_line(raw: bytes) -> CanonicalEvent:
    obj = load_object(raw)
    type_ = require_str(obj, "type")
    is_activity = False
    anonymous_id = login_id = None

    if type_ == "track":
        event_name = require_str(obj, "event")
        distinct_id = require_id(obj, "distinct_id")
        is_activity = True
    elif type_ == "track_signup":
        event_name = optional_str(obj, "event") or SIGNUP_EVENT
        distinct_id = require_id(obj, "distinct_id")
        original_id = optional_id(obj, "original_id")
        if original_id is None:
            raise LineError(MISSING_FIELD, "original_id is missing or empty on track_signup")
        anonymous_id, login_id = link(original_id, distinct_id)
    elif type_.startswith("profile_"):
        event_name = type_
        distinct_id = require_id(obj, "distinct_id")
    elif type_.startswith("item_"):
        event_name = type_
        distinct_id = optional_id(obj, "distinct_id")
        if distinct_id is None:
            item_id = require_id(obj, "item_id")
            item_type = optional_id(obj, "item_type") or ""
            distinct_id = f"item:{item_type}:{item_id}"
    else:
        raise LineError(UNSUPPORTED_TYPE, f"type {type_[:60]!r} is not track, track_signup, profile_* or item_*")

    event_time = epoch_ms(present(obj, "time", required=True), "time")
    app_id = optional_id(obj, "project")
    props = optional_object(obj, "properties")
    track_id = optional_id(obj, "_track_id")

    columns = preset_dimensions(props, platform=("$platform", "$os"), session_id=("$session_id", "$event_session_id"))
    source_id = None if track_id is None else source_event_id(track_id, distinct_id, event_name, event_time)
    link_ids = (anonymous_id, login_id)
    return new_event(
        SOURCE_FORMAT, event_name, distinct_id, event_time, props,
        source_id=source_id, link_ids=link_ids, app_id=app_id, is_activity=is_activity, **columns,
    )


def map_fast(obj: dict) -> tuple:
    """The mapped row of a common clean line (see ``_common.MAPPED``): a ``track`` with ``properties`` an object (or absent) and
    ``time`` an integer. Anything else is left to :func:`parse_line`."""
    if obj.get("type") != "track":
        raise Unusual
    event_name = fast_required(obj.get("event"))
    distinct_id = fast_required(obj.get("distinct_id"))
    event_time = fast_epoch(obj.get("time"))
    props = fast_object(obj.get("properties"))
    app_id = fast_id(obj.get("project"))
    track_id = fast_id(obj.get("_track_id"))
    source_id = None if track_id is None else source_event_id(track_id, distinct_id, event_name, event_time)
    event_id, props_json = id_and_json(app_id, distinct_id, event_name, event_time, props, source_id)
    return (event_id, event_name, distinct_id, event_time, None, app_id, dimension(props, "$platform", "$os"),
            dimension(props, "$app_version"), dimension(props, "$channel"),
            dimension(props, "$session_id", "$event_session_id"), props_json, True, None, None)

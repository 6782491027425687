"""Analysys Ark (易观方舟) lines -> canonical events.

Raw line::

    {"appid": "...", "xwho": "<distinct id>", "xwhat": "<event>",
     "xwhen": 1700000000000, "xcontext": {"$platform": "iOS", ...}}

* Required: ``xwho`` (string or integer), ``xwhat`` (string), ``xwhen``
  (epoch milliseconds, integer or digit string). ``appid`` (string or
  integer) and ``xcontext`` (object) are optional.
* ``properties`` is the whole ``xcontext``. Dimension columns come from its
  presets: platform ``$platform``, app version ``$app_version``, channel
  ``$channel``, session ``$session_id``.
* ``$alias``: links anonymous ``xcontext.$original_id`` -> login ``xwho``
  (``$original_id`` is required). ``$alias`` and the ``$profile_*`` events
  are bookkeeping (``is_activity = False``).
* Ark sends no event id, so the id is the hash of (appid, xwho, xwhat,
  xwhen, xcontext): a retried line gets the same id.
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
    present,
    preset_dimensions,
    require_id,
    require_str,
)
from cohortflow.events import MISSING_FIELD, CanonicalEvent, LineError

SOURCE_FORMAT = "ark"

ALIAS_EVENT = "$alias"
PROFILE_EVENTS = frozenset(
    {
        "$profile_set",
        "$profile_set_once",
        "$profile_increment",
        "$profile_append",
        "$profile_unset",
        "$profile_delete",
    }
)


def parse_line(raw: bytes) -> CanonicalEvent:
    obj = load_object(raw)
    distinct_id = require_id(obj, "xwho")
    event_name = require_str(obj, "xwhat")
    event_time = epoch_ms(present(obj, "xwhen", required=True), "xwhen")
    app_id = optional_id(obj, "appid")
    context = optional_object(obj, "xcontext")

    is_activity = True
    anonymous_id = login_id = None
    if event_name == ALIAS_EVENT:
        original = optional_id(context, "$original_id", "xcontext.$original_id")
        if original is None:
            raise LineError(MISSING_FIELD, "xcontext.$original_id is missing or empty on $alias")
        anonymous_id, login_id = link(original, distinct_id)
        is_activity = False
    elif event_name in PROFILE_EVENTS:
        is_activity = False

    columns = preset_dimensions(context, platform=("$platform",))
    link_ids = (anonymous_id, login_id)
    return new_event(
        SOURCE_FORMAT, event_name, distinct_id, event_time, context,
        link_ids=link_ids, app_id=app_id, is_activity=is_activity, **columns,
    )


def map_fast(obj: dict) -> tuple:
    """The mapped row of a common clean line (see ``_common.MAPPED``): not ``$alias``, ``xcontext`` an object or absent,
    ``xwhen`` an integer, ``appid`` a string or absent. Anything else is left to :func:`parse_line`."""
    distinct_id = fast_required(obj.get("xwho"))
    event_name = fast_required(obj.get("xwhat"))
    event_time = fast_epoch(obj.get("xwhen"))
    context = fast_object(obj.get("xcontext"))
    if event_name == ALIAS_EVENT:
        raise Unusual
    app_id = fast_id(obj.get("appid"))
    event_id, props_json = id_and_json(app_id, distinct_id, event_name, event_time, context, None)
    return (event_id, event_name, distinct_id, event_time, None, app_id, dimension(context, "$platform"),
            dimension(context, "$app_version"), dimension(context, "$channel"), dimension(context, "$session_id"),
            props_json, event_name not in PROFILE_EVENTS, None, None)

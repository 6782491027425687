"""Segment spec messages -> canonical events.

Raw line (one message)::

    {"type": "track", "event": "Order Completed", "userId": "u1",
     "anonymousId": "a1", "messageId": "m-1",
     "timestamp": "2024-05-01T10:00:00.123Z",
     "originalTimestamp": "...", "sentAt": "...", "receivedAt": "...",
     "properties": {...}, "context": {...}}

* ``type``: ``track`` (``event`` required) | ``page`` -> ``$pageview`` |
  ``screen`` -> ``$screen`` | ``identify`` -> ``$identify`` | ``alias`` ->
  ``$create_alias``; any other type (e.g. ``group``) -> ``unsupported_type``.
* ``distinct_id`` = ``userId``, else ``anonymousId`` (one is required; ids are
  strings or integers). ``alias`` requires ``userId`` and ``previousId`` and
  links ``previousId`` -> ``userId``; ``identify`` with both ``userId`` and
  ``anonymousId`` links ``anonymousId`` -> ``userId``. Both are bookkeeping.
* Times are ISO-8601 strings (``Z`` or an offset, no zone = UTC, any number of
  fractional digits, truncated to ms). A time field that is present but not a
  valid ISO time quarantines the line (``invalid_timestamp``). Event time:

  1. ``receivedAt - (sentAt - originalTimestamp)`` when all three are present
     (Segment's clock-skew correction), else
  2. ``timestamp``, else ``originalTimestamp``, else ``receivedAt`` (Segment
     itself falls back to the receipt time).

  ``received_at_ms`` = ``receivedAt`` when present.
* ``properties`` = ``properties`` (object); ``page``/``screen`` add the top-level
  ``name`` as ``properties.name`` unless already set; ``identify`` (which has
  no properties) uses its ``traits`` object.
* Dimension columns (first usable value wins):

  - platform: ``context.os.name`` -> ``context.device.type`` ->
    ``properties.$platform``;
  - app version: ``context.app.version`` -> ``properties.$app_version``;
  - channel: ``context.campaign.source`` -> ``properties.$channel``;
  - session: ``properties.$session_id``.

  ``context`` must be an object when present; inside it the extraction is
  lenient (a wrong-typed sub-object is ignored).
* Event id: ``messageId`` when present (so a retry with another ``sentAt`` is a
  duplicate), else the content hash.
"""

from __future__ import annotations

from typing import Any

from cohortflow.adapters._common import (
    Unusual,
    check_range,
    dimension,
    fast_id,
    fast_iso,
    fast_object,
    fast_required,
    first_value,
    id_and_json,
    iso_ms,
    link,
    load_object,
    nested,
    new_event,
    optional_id,
    optional_object,
    present,
    require_id,
    require_str,
)
from cohortflow.events import MAX_EPOCH_MS, MIN_EPOCH_MS, MISSING_FIELD, UNSUPPORTED_TYPE, CanonicalEvent, LineError, source_event_id

SOURCE_FORMAT = "segment"

EVENT_NAMES = {"page": "$pageview", "screen": "$screen", "identify": "$identify", "alias": "$create_alias"}


def _time(obj: dict[str, Any], key: str) -> int | None:
    value = present(obj, key)
    return None if value is None else iso_ms(value, key)


def parse_line(raw: bytes) -> CanonicalEvent:
    obj = load_object(raw)
    type_ = require_str(obj, "type")
    if type_ == "track":
        event_name = require_str(obj, "event")
    elif type_ in EVENT_NAMES:
        event_name = EVENT_NAMES[type_]
    else:
        raise LineError(UNSUPPORTED_TYPE, f"type {type_[:60]!r} is not track, page, screen, identify or alias")

    user_id = optional_id(obj, "userId")
    anonymous = optional_id(obj, "anonymousId")
    is_activity = True
    link_anon = link_login = None
    if type_ == "alias":
        user_id = require_id(obj, "userId")
        previous = require_id(obj, "previousId")
        link_anon, link_login = link(previous, user_id)
        is_activity = False
    elif type_ == "identify":
        link_anon, link_login = link(anonymous, user_id)
        is_activity = False
    distinct_id = user_id or anonymous
    if distinct_id is None:
        raise LineError(MISSING_FIELD, "userId and anonymousId are both missing or empty")

    timestamp = _time(obj, "timestamp")
    original = _time(obj, "originalTimestamp")
    sent = _time(obj, "sentAt")
    received = _time(obj, "receivedAt")
    if sent is not None and received is not None and original is not None:
        event_time = check_range(received - (sent - original), "skew-corrected time")
    elif timestamp is not None:
        event_time = timestamp
    elif original is not None:
        event_time = original
    elif received is not None:
        event_time = received
    else:
        raise LineError(MISSING_FIELD, "timestamp, originalTimestamp and receivedAt are all missing")

    if type_ == "identify" and obj.get("properties") is None:
        props = optional_object(obj, "traits")
    else:
        props = optional_object(obj, "properties")
    if type_ in ("page", "screen"):
        name = obj.get("name")
        if name is not None and "name" not in props:
            props = {**props, "name": name}
    context = optional_object(obj, "context")

    columns = {
        "platform": first_value(nested(context, "os", "name"), nested(context, "device", "type"), props.get("$platform")),
        "app_version": first_value(nested(context, "app", "version"), props.get("$app_version")),
        "channel": first_value(nested(context, "campaign", "source"), props.get("$channel")),
        "session_id": dimension(props, "$session_id"),
    }
    message_id = optional_id(obj, "messageId")
    source_id = None if message_id is None else source_event_id(message_id)
    link_ids = (link_anon, link_login)
    return new_event(
        SOURCE_FORMAT, event_name, distinct_id, event_time, props,
        source_id=source_id, link_ids=link_ids, received_at_ms=received, is_activity=is_activity, **columns,
    )


def map_fast(obj: dict) -> tuple:
    """The mapped row of a common clean line (see ``_common.MAPPED``): a ``track`` with ``properties`` and
    ``context`` objects (or absent), ``timestamp`` and ``receivedAt`` (and ``sentAt`` and ``originalTimestamp`` both or neither)
    in the ISO shape SDKs send. Anything else is left to :func:`parse_line`."""
    if obj.get("type") != "track":
        raise Unusual
    event_name = fast_required(obj.get("event"))
    user_id = fast_id(obj.get("userId"))
    anonymous = fast_id(obj.get("anonymousId"))  # read even when userId is set: parse_line checks its type
    distinct_id = user_id or anonymous
    props = fast_object(obj.get("properties"))
    context = fast_object(obj.get("context"))
    if distinct_id is None:
        raise Unusual
    received = fast_iso(obj.get("receivedAt"))
    event_time = fast_iso(obj.get("timestamp"))  # (valid, as parse_line requires of every time field present)
    sent, original = obj.get("sentAt"), obj.get("originalTimestamp")
    if sent is not None or original is not None:  # both, or the line is left to parse_line
        event_time = received - (fast_iso(sent) - fast_iso(original))
        if not MIN_EPOCH_MS <= event_time < MAX_EPOCH_MS:
            raise Unusual
    message_id = fast_id(obj.get("messageId"))
    event_id, props_json = id_and_json(None, distinct_id, event_name, event_time, props,
                                       None if message_id is None else source_event_id(message_id))
    return (event_id, event_name, distinct_id, event_time, received, None,
            first_value(nested(context, "os", "name"), nested(context, "device", "type"), props.get("$platform")),
            first_value(nested(context, "app", "version"), props.get("$app_version")),
            first_value(nested(context, "campaign", "source"), props.get("$channel")),
            dimension(props, "$session_id"), props_json, True, None, None)

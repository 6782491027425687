"""PostHog capture events -> canonical events.

Raw line (one captured event)::

    {"event": "$pageview", "distinct_id": "u1", "uuid": "0190...",
     "timestamp": "2024-05-01T10:00:00.123Z", "sent_at": "...",
     "properties": {"$os": "iOS", "$session_id": "...", ...}}

* Required: ``event`` (string), ``distinct_id`` (string or integer; when the
  top-level one is missing, ``properties.distinct_id`` is used, as posthog-js
  sends it there), ``timestamp`` (ISO-8601 string or epoch milliseconds as a
  number / digit string). PostHog's server replaces a missing timestamp with
  its own receipt time (``now``), which a stored line does not carry, and it
  ignores ``properties.$time``; so a line without ``timestamp`` is
  quarantined (``missing_field``).
* ``received_at_ms`` = ``sent_at`` when present (ISO-8601 or epoch ms).
* Identity: ``$identify`` links ``properties.$anon_distinct_id`` ->
  ``distinct_id`` (no link when it is absent, e.g. a server-side identify);
  ``$create_alias`` links ``properties.alias`` (required) -> ``distinct_id``.
  ``$identify``, ``$create_alias``, ``$merge_dangerously`` (never linked:
  login ids do not merge), ``$set`` and ``$groupidentify`` are bookkeeping.
* Dimension columns from ``properties``: platform ``$os`` else ``$lib``;
  app version ``$app_version``; channel ``$channel``; session ``$session_id``.
* Event id: ``uuid`` when present, else the content hash. ``app_id`` is not set.
"""

from __future__ import annotations

from cohortflow.adapters._common import (
    Unusual,
    dimension,
    fast_id,
    fast_iso,
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
    time_ms,
)
from cohortflow.events import MISSING_FIELD, CanonicalEvent, LineError, source_event_id

SOURCE_FORMAT = "posthog"

BOOKKEEPING_EVENTS = frozenset({"$identify", "$create_alias", "$merge_dangerously", "$set", "$groupidentify"})


def parse_line(raw: bytes) -> CanonicalEvent:
    obj = load_object(raw)
    event_name = require_str(obj, "event")
    props = optional_object(obj, "properties")
    distinct_id = optional_id(obj, "distinct_id")
    if distinct_id is None:
        distinct_id = require_id(props, "distinct_id", "distinct_id")
    event_time = time_ms(present(obj, "timestamp", required=True), "timestamp")
    sent_at = present(obj, "sent_at")
    received = None if sent_at is None else time_ms(sent_at, "sent_at")

    anonymous_id = login_id = None
    if event_name == "$identify":
        anon = optional_id(props, "$anon_distinct_id", "properties.$anon_distinct_id")
        anonymous_id, login_id = link(anon, distinct_id)
    elif event_name == "$create_alias":
        alias = optional_id(props, "alias", "properties.alias")
        if alias is None:
            raise LineError(MISSING_FIELD, "properties.alias is missing or empty on $create_alias")
        anonymous_id, login_id = link(alias, distinct_id)

    columns = preset_dimensions(props, platform=("$os", "$lib"))
    uuid = optional_id(obj, "uuid")
    source_id = None if uuid is None else source_event_id(uuid)
    is_activity = event_name not in BOOKKEEPING_EVENTS
    link_ids = (anonymous_id, login_id)
    return new_event(
        SOURCE_FORMAT, event_name, distinct_id, event_time, props,
        source_id=source_id, link_ids=link_ids, received_at_ms=received, is_activity=is_activity, **columns,
    )


def map_fast(obj: dict) -> tuple:
    """The mapped row of a common clean line (see ``_common.MAPPED``): not ``$identify`` or ``$create_alias``, a
    top-level ``distinct_id``, ``properties`` an object (or absent) and the times in the ISO shape SDKs send. Anything else is
    left to :func:`parse_line`."""
    event_name = fast_required(obj.get("event"))
    distinct_id = fast_required(obj.get("distinct_id"))
    props = fast_object(obj.get("properties"))
    if event_name == "$identify" or event_name == "$create_alias":
        raise Unusual
    event_time = fast_iso(obj.get("timestamp"))
    sent_at = obj.get("sent_at")
    received = None if sent_at is None else fast_iso(sent_at)
    uuid = fast_id(obj.get("uuid"))
    event_id, props_json = id_and_json(None, distinct_id, event_name, event_time, props,
                                       None if uuid is None else source_event_id(uuid))
    return (event_id, event_name, distinct_id, event_time, received, None, dimension(props, "$os", "$lib"),
            dimension(props, "$app_version"), dimension(props, "$channel"), dimension(props, "$session_id"),
            props_json, event_name not in BOOKKEEPING_EVENTS, None, None)

"""Optional pseudonymisation at ingest (config ``privacy``), applied before anything is stored.

* ``pseudonymize_ids``: the distinct id, both ids of an identity link and the
  id-bearing properties (``id_properties``) are replaced by a keyed hash,
  HMAC-SHA-256 with the key in ``COHORTFLOW_PRIVACY__KEY`` (from the
  environment only). Equal ids give equal pseudonyms, so identity stitching,
  deduplication, funnels and retention work as before; without the key nobody
  can recompute or reverse them. An event id the source sent is kept (it
  orders events of equal time); a content-hash event id (``h:``, for sources
  that send none) is recomputed from the pseudonymised event, so it cannot be
  used to test guesses of a raw id. Quarantined lines then keep their reason,
  file and line number but not their raw text.
* ``drop_properties``: property keys removed wherever they occur (any depth).
* ``drop_ip_properties``: properties that hold an IP address removed: keys
  named like one (``ip``, ``$ip``, ``client_ip``, ``ip_address``...) and any
  string value that is an IPv4 or IPv6 address.

Pseudonyms look like ``p:`` + 32 hex digits (128 bits of the HMAC).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import Any

from cohortflow.config import Privacy
from cohortflow.events import CanonicalEvent, hashed_event_id

KEY_ENV = "COHORTFLOW_PRIVACY__KEY"
MIN_KEY_CHARS = 16

_IP_KEY = re.compile(r"(?:^|[_$.\-])ip(?:_?address|_?addr)?$", re.IGNORECASE)
# A quick filter before the exact parse: only hex digits, dots, colons (and an IPv6 zone / v4 tail) can form one.
_IP_CHARS = re.compile(r"[0-9A-Fa-f.:%]{2,45}")


class PrivacyError(Exception):
    """The privacy settings cannot be applied (e.g. the key is missing); names the setting."""


class Pseudonymizer:
    """Applies the configured pseudonymisation and property drops to one event at a time."""

    def __init__(self, settings: Privacy) -> None:
        self.settings = settings
        self.active = settings.pseudonymize_ids or bool(settings.drop_properties) or settings.drop_ip_properties
        self._key: bytes | None = None
        if settings.pseudonymize_ids:
            key = settings.key
            if not key:
                raise PrivacyError(f"privacy.pseudonymize_ids is on but {KEY_ENV} is not set in the environment")
            if len(key) < MIN_KEY_CHARS:
                raise PrivacyError(f"{KEY_ENV} must be at least {MIN_KEY_CHARS} characters long")
            self._key = key.encode("utf-8", "surrogatepass")
        self._drop = frozenset(settings.drop_properties)
        self._id_props = frozenset(settings.id_properties)

    @property
    def withholds_raw_text(self) -> bool:
        """Quarantined raw lines would show the ids in clear: they are not stored when ids are pseudonymised."""
        return self._key is not None

    def pseudonym(self, value: str) -> str:
        assert self._key is not None
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return "p:" + digest[:32]

    def apply(self, ev: CanonicalEvent) -> CanonicalEvent:
        if not self.active:
            return ev
        props = ev.properties
        if self._drop or self.settings.drop_ip_properties:
            props = self._without_dropped(props)
        if self._key is not None:
            ev.distinct_id = self.pseudonym(ev.distinct_id)
            if ev.link_anonymous_id is not None:
                ev.link_anonymous_id = self.pseudonym(ev.link_anonymous_id)
            if ev.link_login_id is not None:
                ev.link_login_id = self.pseudonym(ev.link_login_id)
            if self._id_props and any(k in self._id_props for k in props):
                props = {
                    k: self.pseudonym(str(v)) if k in self._id_props and isinstance(v, (str, int)) and not isinstance(v, bool) else v
                    for k, v in props.items()
                }
        ev.properties = props
        ev.properties_json = None
        if self._key is not None and ev.event_id.startswith("h:"):
            ev.event_id = hashed_event_id(ev.app_id, ev.distinct_id, ev.event_name, ev.event_time_ms, ev.properties)
        return ev

    def _without_dropped(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: self._without_dropped(v)
                for k, v in value.items()
                if not self._dropped(k, v)
            }
        if isinstance(value, list):
            return [self._without_dropped(v) for v in value if not (self.settings.drop_ip_properties and _is_ip(v))]
        return value

    def _dropped(self, key: Any, value: Any) -> bool:
        if key in self._drop:
            return True
        if self.settings.drop_ip_properties:
            return (isinstance(key, str) and _IP_KEY.search(key) is not None) or _is_ip(value)
        return False


def _is_ip(value: Any) -> bool:
    if not isinstance(value, str) or not _IP_CHARS.fullmatch(value):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True

"""SDK adapters: good lines of each kind, every kind of bad line, fuzzing."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.adapters import FORMATS, get_adapter
from cohortflow.adapters._common import iso_ms
from cohortflow.events import (
    ENCODING,
    INVALID_FIELD,
    INVALID_JSON,
    INVALID_TIMESTAMP,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    REASONS,
    UNSUPPORTED_TYPE,
    CanonicalEvent,
    LineError,
    hashed_event_id,
    source_event_id,
)

UTC = timezone.utc


def ms(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


T = ms(datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC))  # 2024-05-01T10:00:00.123Z
T_ISO = "2024-05-01T10:00:00.123Z"


def line(obj: Any) -> bytes:
    return orjson.dumps(obj)


def parse(fmt: str, raw: bytes) -> CanonicalEvent:
    return get_adapter(fmt)(raw)


def reason_of(fmt: str, raw: bytes) -> str:
    with pytest.raises(LineError) as info:
        parse(fmt, raw)
    err = info.value
    assert err.reason in REASONS
    assert err.detail and len(err.detail) < 200, err.detail
    return err.reason


def without(obj: dict, dotted: str) -> dict:
    out = copy.deepcopy(obj)
    *path, last = dotted.split(".")
    target = out
    for key in path:
        target = target[key]
    del target[last]
    return out


def with_(obj: dict, dotted: str, value: Any) -> dict:
    out = copy.deepcopy(obj)
    *path, last = dotted.split(".")
    target = out
    for key in path:
        target = target[key]
    target[last] = value
    return out


# --------------------------------------------------------------------------- base lines

ARK_CTX = {
    "$platform": "iOS",
    "$app_version": "2.1.0",
    "$channel": "AppStore",
    "$session_id": "sess-1",
    "$lib": "iOS",
    "$is_login": True,
    "price": 9.5,
}
ARK = {"appid": "app1", "xwho": "u1", "xwhat": "buy", "xwhen": T, "xcontext": ARK_CTX}

SENSORS_PROPS = {"$os": "Android", "$platform": "android-app", "$app_version": "3.0", "$channel": "huawei",
                 "$event_session_id": "es-1", "sku": "A1"}
SENSORS = {
    "type": "track",
    "event": "ViewProduct",
    "distinct_id": "u1",
    "anonymous_id": "dev-1",
    "login_id": "u1",
    "time": T,
    "project": "default",
    "properties": SENSORS_PROPS,
    "_track_id": 424242,
}

SEGMENT_CONTEXT = {
    "os": {"name": "iOS", "version": "17.4"},
    "device": {"type": "ios"},
    "app": {"version": "5.2.0", "build": "520"},
    "campaign": {"source": "newsletter", "medium": "email"},
}
SEGMENT = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u1",
    "anonymousId": "a1",
    "messageId": "msg-1",
    "timestamp": T_ISO,
    "properties": {"revenue": 12.5, "$session_id": "sess-9"},
    "context": SEGMENT_CONTEXT,
}

POSTHOG_PROPS = {"$os": "Mac OS X", "$lib": "web", "$app_version": "1.4", "$channel": "ads",
                 "$session_id": "ph-s1", "$current_url": "https://x.example/"}
POSTHOG = {
    "event": "$pageview",
    "distinct_id": "u1",
    "uuid": "0190a6f0-0000-7000-8000-000000000001",
    "timestamp": T_ISO,
    "sent_at": "2024-05-01T10:00:05.000Z",
    "properties": POSTHOG_PROPS,
}

CANONICAL = {
    "event_id": "e-1",
    "event_name": "purchase",
    "distinct_id": "u1",
    "event_time": T_ISO,
    "received_at": "2024-05-01T10:01:00Z",
    "app_id": "shop",
    "platform": "iOS",
    "app_version": "1.0.0",
    "channel": "organic",
    "session_id": "s-1",
    "properties": {"amount": 9.99},
    "is_activity": True,
}

BASE = {"ark": ARK, "sensors": SENSORS, "segment": SEGMENT, "posthog": POSTHOG, "canonical": CANONICAL}


def test_every_format_has_a_base_line():
    assert set(BASE) == set(FORMATS)
    for fmt, obj in BASE.items():
        assert isinstance(parse(fmt, line(obj)), CanonicalEvent)


# --------------------------------------------------------------------------- malformed lines, all formats


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", INVALID_JSON),
        (b"   \t ", INVALID_JSON),
        (b"not json", INVALID_JSON),
        (b'{"a": 1,}', INVALID_JSON),
        (b'{"a":', INVALID_JSON),
        (b"{'a': 1}", INVALID_JSON),
        (b'{"a": NaN}', INVALID_JSON),
        (b'{"a": 1e400}', INVALID_JSON),
        (b'{"a": "\\ud800"}', INVALID_JSON),  # lone surrogate escape
        (b"[" * 2000, INVALID_JSON),
        (b"[1, 2]", NOT_AN_OBJECT),
        (b'"text"', NOT_AN_OBJECT),
        (b"42", NOT_AN_OBJECT),
        (b"null", NOT_AN_OBJECT),
        (b"true", NOT_AN_OBJECT),
        (b'{"a": "\xff"}', ENCODING),
        (b'{"a": "\xc3\x28"}', ENCODING),
        (b"\xed\xa0\x80", ENCODING),  # UTF-8-encoded surrogate
        (b"\x80", ENCODING),
    ],
)
def test_unusable_lines(fmt, raw, reason):
    assert reason_of(fmt, raw) == reason


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_line(fmt):
    raw = line(BASE[fmt])
    for cut in (1, 2, len(raw) // 2, len(raw) - 1):
        assert reason_of(fmt, raw[:cut]) == INVALID_JSON


@pytest.mark.parametrize("fmt", FORMATS)
def test_invalid_utf8_inside_valid_line(fmt):
    raw = line(BASE[fmt]).replace(b'"u1"', b'"u\xfe1"', 1)
    assert reason_of(fmt, raw) == ENCODING


@pytest.mark.parametrize("fmt", FORMATS)
def test_bom_crlf_and_whitespace_tolerated(fmt):
    raw = line(BASE[fmt])
    expected = parse(fmt, raw)
    assert parse(fmt, b"\xef\xbb\xbf" + raw) == expected
    assert parse(fmt, raw + b"\r") == expected
    assert parse(fmt, b"  " + raw + b"  ") == expected
    assert parse(fmt, bytearray(raw)) == expected


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_object(fmt):
    assert reason_of(fmt, b"{}") == MISSING_FIELD


# which dotted field holds the distinct id / event name / time / properties
FIELDS = {
    "ark": {"id": "xwho", "name": "xwhat", "time": "xwhen", "props": "xcontext"},
    "sensors": {"id": "distinct_id", "name": "event", "time": "time", "props": "properties"},
    "segment": {"id": "userId", "name": "event", "time": "timestamp", "props": "properties"},
    "posthog": {"id": "distinct_id", "name": "event", "time": "timestamp", "props": "properties"},
    "canonical": {"id": "distinct_id", "name": "event_name", "time": "event_time", "props": "properties"},
}

REQUIRED = {
    "ark": ["xwho", "xwhat", "xwhen"],
    "sensors": ["type", "event", "distinct_id", "time"],
    "segment": ["type", "event"],  # ids and times: see dedicated tests
    "posthog": ["event", "distinct_id", "timestamp"],
    "canonical": ["event_name", "distinct_id", "event_time"],
}


@pytest.mark.parametrize("fmt, field", [(f, k) for f, ks in REQUIRED.items() for k in ks])
def test_missing_required_field(fmt, field):
    base = BASE[fmt]
    assert reason_of(fmt, line(without(base, field))) == MISSING_FIELD
    assert reason_of(fmt, line(with_(base, field, None))) == MISSING_FIELD
    assert reason_of(fmt, line(with_(base, field, ""))) == MISSING_FIELD
    with pytest.raises(LineError) as info:
        parse(fmt, line(without(base, field)))
    assert field in info.value.detail


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [{"a": 1}, [1], True, 1.5])
def test_wrong_type_distinct_id(fmt, bad):
    assert reason_of(fmt, line(with_(BASE[fmt], FIELDS[fmt]["id"], bad))) == INVALID_FIELD


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [{"a": 1}, ["x"], 7, False])
def test_wrong_type_event_name(fmt, bad):
    assert reason_of(fmt, line(with_(BASE[fmt], FIELDS[fmt]["name"], bad))) == INVALID_FIELD


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", [[1, 2], "props", 3, True])
def test_wrong_type_properties(fmt, bad):
    raw = line(with_(BASE[fmt], FIELDS[fmt]["props"], bad))
    assert reason_of(fmt, raw) == INVALID_FIELD
    with pytest.raises(LineError) as info:
        parse(fmt, raw)
    assert FIELDS[fmt]["props"] in info.value.detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_integer_distinct_id_becomes_string(fmt):
    event = parse(fmt, line(with_(BASE[fmt], FIELDS[fmt]["id"], 12345678901234)))
    assert event.distinct_id == "12345678901234"


BAD_EPOCHS = [
    1_714_557_600,  # seconds, not ms
    99_999_999_999_999,
    -1,
    0,
    True,
    1714557600123.5,
    "17145576OO123",
    "1714557600123ms",
    "\u0661\u0667\u0661\u0664\u0665\u0665\u0667\u0666\u0660\u0660\u0661\u0662\u0663",  # Arabic-Indic digits
    "\u00b2",  # superscript two: str.isdigit() is True
    [T],
    {"ms": T},
]
BAD_ISO = [
    "yesterday",
    "2024-13-01T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:60:00Z",
    "2024-01-01T23:59:60Z",
    "2024-01-01",  # a date without a time
    "2024-01-01T10:00:00+24:00",
    "2024-01-01T10:00:00 UTC",
    "1999-12-31T23:59:59.999Z",  # before 2000
    "2100-01-01T00:00:00Z",  # not before 2100
    "０２４-01-01T00:00:00Z",  # full-width digits
    "2024-01-01T10:00:00.Z",
]


@pytest.mark.parametrize("fmt", ["ark", "sensors"])
@pytest.mark.parametrize("bad", BAD_EPOCHS)
def test_bad_epoch_times(fmt, bad):
    assert reason_of(fmt, line(with_(BASE[fmt], FIELDS[fmt]["time"], bad))) == INVALID_TIMESTAMP


@pytest.mark.parametrize("fmt", ["segment", "posthog", "canonical"])
@pytest.mark.parametrize("bad", BAD_ISO + [1_714_557_600, -5, True, {"t": 1}])
def test_bad_iso_times(fmt, bad):
    assert reason_of(fmt, line(with_(BASE[fmt], FIELDS[fmt]["time"], bad))) == INVALID_TIMESTAMP


def test_segment_rejects_epoch_numbers():
    assert reason_of("segment", line(with_(SEGMENT, "timestamp", T))) == INVALID_TIMESTAMP


@pytest.mark.parametrize("fmt", FORMATS)
def test_properties_nested_too_deep(fmt):
    # 300 levels parse (orjson reads up to 1024) but cannot be stored as JSON (orjson writes up to 254)
    deep = b'{"k":' * 300 + b"1" + b"}" * 300
    raw = line(with_(BASE[fmt], FIELDS[fmt]["props"], "@@")).replace(b'"@@"', deep)
    assert reason_of(fmt, raw) == INVALID_FIELD
    # the same for sources that carry their own event id
    shallow = b'{"k":' * 200 + b"1" + b"}" * 200
    assert parse(fmt, line(with_(BASE[fmt], FIELDS[fmt]["props"], "@@")).replace(b'"@@"', shallow))


@pytest.mark.parametrize("fmt", FORMATS)
def test_unicode_and_long_values(fmt):
    long_value = "長い値🚀" * 50_000
    obj = with_(BASE[fmt], FIELDS[fmt]["id"], "用户_🚀_ユーザー")
    obj = with_(obj, FIELDS[fmt]["name"], "購入✓")
    obj = with_(obj, FIELDS[fmt]["props"], {"描述": long_value, "emoji": "😀", "nested": {"ключ": ["значение"]}})
    event = parse(fmt, line(obj))
    assert event.distinct_id == "用户_🚀_ユーザー"
    assert event.event_name == "購入✓"
    assert event.properties["描述"] == long_value
    assert event.properties["nested"] == {"ключ": ["значение"]}


# --------------------------------------------------------------------------- ISO parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2024-05-01T10:00:00.123Z", T),
        ("2024-05-01T10:00:00.123z", T),
        ("2024-05-01 10:00:00.123Z", T),
        ("2024-05-01T10:00:00.123", T),  # no zone = UTC
        ("2024-05-01T10:00:00.123+00:00", T),
        ("2024-05-01T18:00:00.123+08:00", T),
        ("2024-05-01T18:00:00.123+0800", T),
        ("2024-05-01T18:00:00.123+08", T),
        ("2024-05-01T05:00:00.123-05:00", T),
        ("2024-05-01T15:30:00.123+05:30", T),
        ("2024-05-01T10:00:00.1239999Z", T),  # truncated, not rounded
        ("2024-05-01T10:00:00.123456789Z", T),
        ("2024-05-01T10:00:00,123Z", T),
        ("2024-05-01T10:00:00.1Z", T - 23),
        ("2024-05-01T10:00:00Z", T - 123),
        ("2024-05-01T10:00Z", T - 123),
        ("  2024-05-01T10:00:00.123Z\n", T),  # surrounding whitespace is ignored
        ("2024-05-02T00:30:00.123+14:30", T),
        ("2000-01-01T00:00:00Z", 946_684_800_000),
        ("2099-12-31T23:59:59.999Z", 4_102_444_799_999),
        ("2024-02-29T00:00:00Z", ms(datetime(2024, 2, 29, tzinfo=UTC))),
    ],
)
def test_iso_parsing(text, expected):
    assert iso_ms(text, "t") == expected


@pytest.mark.parametrize("bad", BAD_ISO + ["2023-02-29T00:00:00Z", "", "T", "2024-05-01T10:00:00+05:60"])
def test_iso_parsing_rejects(bad):
    with pytest.raises(LineError) as info:
        iso_ms(bad, "t")
    assert info.value.reason == INVALID_TIMESTAMP


@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-7, minutes=-30))])))
def test_iso_parsing_matches_datetime(dt):
    expected = ms(dt.replace(microsecond=dt.microsecond // 1000 * 1000))
    assert iso_ms(dt.isoformat(), "t") == expected


# --------------------------------------------------------------------------- Ark


def test_ark_track():
    event = parse("ark", line(ARK))
    assert event == CanonicalEvent(
        event_id=hashed_event_id("app1", "u1", "buy", T, ARK_CTX),
        event_name="buy",
        distinct_id="u1",
        event_time_ms=T,
        source_format="ark",
        app_id="app1",
        platform="iOS",
        app_version="2.1.0",
        channel="AppStore",
        session_id="sess-1",
        properties=ARK_CTX,
        received_at_ms=None,
        is_activity=True,
        link_anonymous_id=None,
        link_login_id=None,
    )
    assert event.event_id.startswith("h:")


def test_hashed_event_ids_stay_what_they_were():
    """The ids of events without one of their own are stored and judged against later loads: they never change
    (these two were computed by the first implementation, which fed blake2b part by part)."""
    props = {"b": [1, {"z": None}], "a": "\u00e9\u4e2d"}
    assert hashed_event_id("app1", "u1", "buy", 1762000000123, props) == "h:c822be2d1aacb12c48094c97f87eaeb3"
    assert hashed_event_id(None, "7", "open", 1762000000000, {}) == "h:e52f9e46bb9751e6a1130b02e58d9fea"


def test_ark_digit_string_time_and_minimal_line():
    event = parse("ark", line({"xwho": 7, "xwhat": "open", "xwhen": f" {T} "}))
    assert event == CanonicalEvent(
        event_id=hashed_event_id(None, "7", "open", T, {}),
        event_name="open",
        distinct_id="7",
        event_time_ms=T,
        source_format="ark",
    )


def test_ark_alias():
    ctx = {"$original_id": "anon-1", "$platform": "Android"}
    event = parse("ark", line({"appid": "app1", "xwho": "login-1", "xwhat": "$alias", "xwhen": T, "xcontext": ctx}))
    assert event == CanonicalEvent(
        event_id=hashed_event_id("app1", "login-1", "$alias", T, ctx),
        event_name="$alias",
        distinct_id="login-1",
        event_time_ms=T,
        source_format="ark",
        app_id="app1",
        platform="Android",
        properties=ctx,
        is_activity=False,
        link_anonymous_id="anon-1",
        link_login_id="login-1",
    )


def test_ark_alias_to_itself_links_nothing():
    event = parse("ark", line({"xwho": "u", "xwhat": "$alias", "xwhen": T, "xcontext": {"$original_id": "u"}}))
    assert (event.link_anonymous_id, event.link_login_id, event.is_activity) == (None, None, False)


@pytest.mark.parametrize("ctx", [{}, {"$original_id": ""}, {"$original_id": None}])
def test_ark_alias_without_original_id(ctx):
    raw = line({"xwho": "u", "xwhat": "$alias", "xwhen": T, "xcontext": ctx})
    assert reason_of("ark", raw) == MISSING_FIELD
    assert reason_of("ark", line({"xwho": "u", "xwhat": "$alias", "xwhen": T})) == MISSING_FIELD


def test_ark_alias_original_id_wrong_type():
    raw = line({"xwho": "u", "xwhat": "$alias", "xwhen": T, "xcontext": {"$original_id": ["a"]}})
    assert reason_of("ark", raw) == INVALID_FIELD


@pytest.mark.parametrize(
    "name",
    ["$profile_set", "$profile_set_once", "$profile_increment", "$profile_append", "$profile_unset", "$profile_delete"],
)
def test_ark_profile_events_are_bookkeeping(name):
    ctx = {"$platform": "JS", "vip": True}
    event = parse("ark", line({"appid": "a", "xwho": "u1", "xwhat": name, "xwhen": T, "xcontext": ctx}))
    assert event == CanonicalEvent(
        event_id=hashed_event_id("a", "u1", name, T, ctx),
        event_name=name,
        distinct_id="u1",
        event_time_ms=T,
        source_format="ark",
        app_id="a",
        platform="JS",
        properties=ctx,
        is_activity=False,
    )


def test_ark_retry_gets_same_id_and_property_change_a_new_one():
    a = parse("ark", line(ARK))
    assert parse("ark", line(ARK)).event_id == a.event_id
    reordered = dict(ARK, xcontext=dict(reversed(list(ARK_CTX.items()))))
    assert parse("ark", line(reordered)).event_id == a.event_id
    assert parse("ark", line(with_(ARK, "xcontext.price", 9.6))).event_id != a.event_id
    assert parse("ark", line(with_(ARK, "xwhen", T + 1))).event_id != a.event_id
    assert parse("ark", line(with_(ARK, "appid", "app2"))).event_id != a.event_id


@pytest.mark.parametrize(
    "field, bad", [("xcontext", [1]), ("xcontext", "x"), ("appid", {"a": 1}), ("appid", 1.5)]
)
def test_ark_wrong_types(field, bad):
    assert reason_of("ark", line(with_(ARK, field, bad))) == INVALID_FIELD


def test_ark_lenient_preset_types():
    ctx = {"$platform": ["iOS"], "$app_version": 2.1, "$channel": None, "$session_id": 99}
    event = parse("ark", line(with_(ARK, "xcontext", ctx)))
    assert (event.platform, event.app_version, event.channel, event.session_id) == (None, "2.1", None, "99")
    assert event.properties == ctx


# --------------------------------------------------------------------------- Sensors


def test_sensors_track():
    event = parse("sensors", line(SENSORS))
    assert event == CanonicalEvent(
        event_id=source_event_id(424242, "u1", "ViewProduct", T),
        event_name="ViewProduct",
        distinct_id="u1",
        event_time_ms=T,
        source_format="sensors",
        app_id="default",
        platform="android-app",
        app_version="3.0",
        channel="huawei",
        session_id="es-1",
        properties=SENSORS_PROPS,
        is_activity=True,
    )


def test_sensors_preset_fallbacks():
    props = {"$os": "iOS", "$session_id": "s-main", "$event_session_id": "s-other", "$utm_source": "x"}
    event = parse("sensors", line(with_(SENSORS, "properties", props)))
    assert (event.platform, event.session_id, event.channel, event.app_version) == ("iOS", "s-main", None, None)


def test_sensors_without_track_id_is_hashed():
    obj = without(SENSORS, "_track_id")
    event = parse("sensors", line(obj))
    assert event.event_id == hashed_event_id("default", "u1", "ViewProduct", T, SENSORS_PROPS)


def test_sensors_track_id_dedup_key():
    a = parse("sensors", line(SENSORS)).event_id
    assert parse("sensors", line(with_(SENSORS, "properties.sku", "B2"))).event_id == a  # same send
    assert parse("sensors", line(with_(SENSORS, "_track_id", "424242"))).event_id == a
    assert parse("sensors", line(with_(SENSORS, "time", T + 1))).event_id != a
    assert parse("sensors", line(with_(SENSORS, "distinct_id", "u2"))).event_id != a
    assert parse("sensors", line(with_(SENSORS, "_track_id", 1))).event_id != a


def test_sensors_track_signup():
    obj = {"type": "track_signup", "event": "$SignUp", "distinct_id": "login-9", "original_id": "anon-9",
           "time": T, "project": "p", "properties": {"$os": "iOS"}, "_track_id": 5}
    event = parse("sensors", line(obj))
    assert event == CanonicalEvent(
        event_id=source_event_id(5, "login-9", "$SignUp", T),
        event_name="$SignUp",
        distinct_id="login-9",
        event_time_ms=T,
        source_format="sensors",
        app_id="p",
        platform="iOS",
        properties={"$os": "iOS"},
        is_activity=False,
        link_anonymous_id="anon-9",
        link_login_id="login-9",
    )
    assert parse("sensors", line(without(obj, "event"))).event_name == "$SignUp"
    assert parse("sensors", line(with_(obj, "event", "Registered"))).event_name == "Registered"


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_sensors_track_signup_without_original_id(bad):
    obj = {"type": "track_signup", "event": "$SignUp", "distinct_id": "l", "time": T, "original_id": bad}
    assert reason_of("sensors", line(obj)) == MISSING_FIELD


@pytest.mark.parametrize("type_", ["profile_set", "profile_set_once", "profile_increment", "profile_append",
                                   "profile_unset", "profile_delete"])
def test_sensors_profile(type_):
    obj = {"type": type_, "distinct_id": "u1", "time": T, "project": "p", "properties": {"vip": True}}
    event = parse("sensors", line(obj))
    assert event == CanonicalEvent(
        event_id=hashed_event_id("p", "u1", type_, T, {"vip": True}),
        event_name=type_,
        distinct_id="u1",
        event_time_ms=T,
        source_format="sensors",
        app_id="p",
        properties={"vip": True},
        is_activity=False,
    )


def test_sensors_item_without_distinct_id():
    obj = {"type": "item_set", "item_type": "book", "item_id": "b-1", "time": T, "properties": {"price": 3}}
    event = parse("sensors", line(obj))
    assert event == CanonicalEvent(
        event_id=hashed_event_id(None, "item:book:b-1", "item_set", T, {"price": 3}),
        event_name="item_set",
        distinct_id="item:book:b-1",
        event_time_ms=T,
        source_format="sensors",
        properties={"price": 3},
        is_activity=False,
    )
    assert reason_of("sensors", line(without(obj, "item_id"))) == MISSING_FIELD


@pytest.mark.parametrize("type_", ["foo", "track_id_bind", "TRACK", "Track"])
def test_sensors_unsupported_type(type_):
    assert reason_of("sensors", line(with_(SENSORS, "type", type_))) == UNSUPPORTED_TYPE


@pytest.mark.parametrize("field, bad", [("type", 1), ("type", ["track"]), ("project", {"p": 1}),
                                        ("_track_id", {"id": 1}), ("_track_id", 1.5), ("original_id", [1])])
def test_sensors_wrong_types(field, bad):
    obj = with_(SENSORS, field, bad)
    if field == "original_id":
        obj["type"] = "track_signup"
    assert reason_of("sensors", line(obj)) == INVALID_FIELD


def test_sensors_profile_without_event_field_ok_but_track_needs_it():
    assert parse("sensors", line(without(with_(SENSORS, "type", "profile_set"), "event"))).event_name == "profile_set"
    assert reason_of("sensors", line(without(SENSORS, "event"))) == MISSING_FIELD


# --------------------------------------------------------------------------- Segment


def test_segment_track():
    event = parse("segment", line(SEGMENT))
    assert event == CanonicalEvent(
        event_id=source_event_id("msg-1"),
        event_name="Order Completed",
        distinct_id="u1",
        event_time_ms=T,
        source_format="segment",
        platform="iOS",
        app_version="5.2.0",
        channel="newsletter",
        session_id="sess-9",
        properties={"revenue": 12.5, "$session_id": "sess-9"},
        is_activity=True,
    )
    assert event.event_id == "s:msg-1"


def test_segment_skew_correction_and_retry_with_other_sent_at():
    obj = dict(SEGMENT)
    del obj["timestamp"]
    obj.update(originalTimestamp="2024-05-01T09:59:00.000Z",  # device clock 1 min behind
               sentAt="2024-05-01T09:59:30.000Z",
               receivedAt="2024-05-01T10:00:30.500Z")
    first = parse("segment", line(obj))
    expected_time = ms(datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC))
    assert first.event_time_ms == expected_time
    assert first.received_at_ms == ms(datetime(2024, 5, 1, 10, 0, 30, 500000, tzinfo=UTC))
    retry = dict(obj, sentAt="2024-05-01T10:04:30.000Z", receivedAt="2024-05-01T10:05:30.500Z")
    second = parse("segment", line(retry))
    assert second.event_id == first.event_id == "s:msg-1"
    assert second.event_time_ms == expected_time
    # a timestamp field present too does not override the correction
    assert parse("segment", line(dict(obj, timestamp="2024-05-01T12:00:00Z"))).event_time_ms == expected_time


def test_segment_time_fallbacks():
    base = without(SEGMENT, "timestamp")
    only_original = dict(base, originalTimestamp="2024-05-01T10:00:00.123+02:00")
    assert parse("segment", line(only_original)).event_time_ms == T - 2 * 3600 * 1000
    sent_no_received = dict(only_original, sentAt="2024-05-01T12:00:00Z", timestamp=T_ISO)
    assert parse("segment", line(sent_no_received)).event_time_ms == T
    only_received = dict(base, receivedAt=T_ISO)
    event = parse("segment", line(only_received))
    assert (event.event_time_ms, event.received_at_ms) == (T, T)
    assert reason_of("segment", line(base)) == MISSING_FIELD


@pytest.mark.parametrize("field", ["sentAt", "receivedAt", "originalTimestamp"])
def test_segment_bad_auxiliary_time(field):
    assert reason_of("segment", line(with_(SEGMENT, field, "2024-05-01T25:00:00Z"))) == INVALID_TIMESTAMP


def test_segment_skew_corrected_time_out_of_range():
    obj = dict(without(SEGMENT, "timestamp"), originalTimestamp="2001-01-01T00:00:00Z",
               sentAt="2099-01-01T00:00:00Z", receivedAt="2024-01-01T00:00:00Z")
    assert reason_of("segment", line(obj)) == INVALID_TIMESTAMP


def test_segment_page_and_screen():
    page = {"type": "page", "anonymousId": "a1", "name": "Pricing", "messageId": 77, "timestamp": T_ISO,
            "properties": {"path": "/pricing", "$platform": "web", "$app_version": "w1", "$channel": "seo"}}
    event = parse("segment", line(page))
    assert event == CanonicalEvent(
        event_id="s:77",
        event_name="$pageview",
        distinct_id="a1",
        event_time_ms=T,
        source_format="segment",
        platform="web",
        app_version="w1",
        channel="seo",
        properties={"path": "/pricing", "$platform": "web", "$app_version": "w1", "$channel": "seo",
                    "name": "Pricing"},
    )
    screen = {"type": "screen", "userId": "u1", "name": "Home", "timestamp": T_ISO,
              "context": {"device": {"type": "android"}, "os": "not-an-object"}}
    event = parse("segment", line(screen))
    assert event == CanonicalEvent(
        event_id=hashed_event_id(None, "u1", "$screen", T, {"name": "Home"}),
        event_name="$screen",
        distinct_id="u1",
        event_time_ms=T,
        source_format="segment",
        platform="android",
        properties={"name": "Home"},
    )
    # an explicit properties.name wins over the top-level name
    assert parse("segment", line(dict(page, properties={"name": "P"}))).properties == {"name": "P"}


def test_segment_identify():
    obj = {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m-id", "timestamp": T_ISO,
           "traits": {"email": "x@example.com"}}
    event = parse("segment", line(obj))
    assert event == CanonicalEvent(
        event_id="s:m-id",
        event_name="$identify",
        distinct_id="u1",
        event_time_ms=T,
        source_format="segment",
        properties={"email": "x@example.com"},
        is_activity=False,
        link_anonymous_id="a1",
        link_login_id="u1",
    )
    only_user = parse("segment", line(without(obj, "anonymousId")))
    assert (only_user.link_anonymous_id, only_user.link_login_id, only_user.is_activity) == (None, None, False)
    only_anon = parse("segment", line(without(obj, "userId")))
    assert (only_anon.distinct_id, only_anon.link_anonymous_id) == ("a1", None)


def test_segment_alias():
    obj = {"type": "alias", "userId": "u1", "previousId": "a-old", "messageId": "m-al", "timestamp": T_ISO}
    event = parse("segment", line(obj))
    assert event == CanonicalEvent(
        event_id="s:m-al",
        event_name="$create_alias",
        distinct_id="u1",
        event_time_ms=T,
        source_format="segment",
        is_activity=False,
        link_anonymous_id="a-old",
        link_login_id="u1",
    )
    assert reason_of("segment", line(without(obj, "previousId"))) == MISSING_FIELD
    assert reason_of("segment", line(dict(without(obj, "userId"), anonymousId="x"))) == MISSING_FIELD


def test_segment_ids():
    assert parse("segment", line(with_(SEGMENT, "userId", ""))).distinct_id == "a1"
    assert parse("segment", line(without(SEGMENT, "userId"))).distinct_id == "a1"
    assert reason_of("segment", line(without(without(SEGMENT, "userId"), "anonymousId"))) == MISSING_FIELD
    assert reason_of("segment", line(with_(SEGMENT, "anonymousId", {"a": 1}))) == INVALID_FIELD
    assert reason_of("segment", line(with_(SEGMENT, "messageId", ["m"]))) == INVALID_FIELD
    no_msg = parse("segment", line(without(SEGMENT, "messageId")))
    assert no_msg.event_id == hashed_event_id(None, "u1", "Order Completed", T, SEGMENT["properties"])


def test_segment_context_fallbacks():
    props = {"$platform": "p-prop", "$app_version": "v-prop", "$channel": "c-prop"}
    event = parse("segment", line(dict(without(SEGMENT, "context"), properties=props)))
    assert (event.platform, event.app_version, event.channel) == ("p-prop", "v-prop", "c-prop")
    ctx = {"os": {"name": ""}, "device": {"type": "tablet"}, "app": {"version": 5}, "campaign": ["x"]}
    event = parse("segment", line(dict(SEGMENT, context=ctx, properties=props)))
    assert (event.platform, event.app_version, event.channel) == ("tablet", "5", "c-prop")
    assert reason_of("segment", line(with_(SEGMENT, "context", "ctx"))) == INVALID_FIELD


@pytest.mark.parametrize("type_", ["group", "Track", "batch"])
def test_segment_unsupported_type(type_):
    assert reason_of("segment", line(with_(SEGMENT, "type", type_))) == UNSUPPORTED_TYPE


# --------------------------------------------------------------------------- PostHog


def test_posthog_pageview():
    event = parse("posthog", line(POSTHOG))
    assert event == CanonicalEvent(
        event_id="s:0190a6f0-0000-7000-8000-000000000001",
        event_name="$pageview",
        distinct_id="u1",
        event_time_ms=T,
        source_format="posthog",
        platform="Mac OS X",
        app_version="1.4",
        channel="ads",
        session_id="ph-s1",
        properties=POSTHOG_PROPS,
        received_at_ms=T + 5000 - 123,
        is_activity=True,
    )


@pytest.mark.parametrize("ts", [T, str(T), float(T), "2024-05-01T18:00:00.123+08:00"])
def test_posthog_timestamp_forms(ts):
    assert parse("posthog", line(with_(POSTHOG, "timestamp", ts))).event_time_ms == T


def test_posthog_optional_fields():
    obj = {"event": "clicked", "timestamp": T_ISO, "properties": {"distinct_id": 42, "$lib": "posthog-python"}}
    event = parse("posthog", line(obj))
    assert event == CanonicalEvent(
        event_id=hashed_event_id(None, "42", "clicked", T, obj["properties"]),
        event_name="clicked",
        distinct_id="42",
        event_time_ms=T,
        source_format="posthog",
        platform="posthog-python",
        properties=obj["properties"],
    )
    assert reason_of("posthog", line(with_(POSTHOG, "sent_at", "soon"))) == INVALID_TIMESTAMP
    assert reason_of("posthog", line(with_(POSTHOG, "uuid", {"u": 1}))) == INVALID_FIELD


def test_posthog_identify():
    props = {"$anon_distinct_id": "anon-1", "$set": {"email": "x@example.com"}}
    obj = {"event": "$identify", "distinct_id": "u1", "uuid": "id-1", "timestamp": T_ISO, "properties": props}
    event = parse("posthog", line(obj))
    assert event == CanonicalEvent(
        event_id="s:id-1",
        event_name="$identify",
        distinct_id="u1",
        event_time_ms=T,
        source_format="posthog",
        properties=props,
        is_activity=False,
        link_anonymous_id="anon-1",
        link_login_id="u1",
    )
    no_anon = parse("posthog", line(with_(obj, "properties", {})))
    assert (no_anon.link_anonymous_id, no_anon.is_activity) == (None, False)
    assert reason_of("posthog", line(with_(obj, "properties.$anon_distinct_id", [1]))) == INVALID_FIELD


def test_posthog_create_alias():
    obj = {"event": "$create_alias", "distinct_id": "u1", "uuid": "id-2", "timestamp": T_ISO,
           "properties": {"alias": "anon-2"}}
    event = parse("posthog", line(obj))
    assert event == CanonicalEvent(
        event_id="s:id-2",
        event_name="$create_alias",
        distinct_id="u1",
        event_time_ms=T,
        source_format="posthog",
        properties={"alias": "anon-2"},
        is_activity=False,
        link_anonymous_id="anon-2",
        link_login_id="u1",
    )
    assert reason_of("posthog", line(with_(obj, "properties", {}))) == MISSING_FIELD


@pytest.mark.parametrize("name", ["$set", "$groupidentify", "$merge_dangerously"])
def test_posthog_bookkeeping(name):
    obj = {"event": name, "distinct_id": "u1", "uuid": "id-3", "timestamp": T_ISO,
           "properties": {"$set": {"plan": "pro"}, "alias": "other-login"}}
    event = parse("posthog", line(obj))
    assert event == CanonicalEvent(
        event_id="s:id-3",
        event_name=name,
        distinct_id="u1",
        event_time_ms=T,
        source_format="posthog",
        properties=obj["properties"],
        is_activity=False,
    )


# --------------------------------------------------------------------------- canonical


def test_canonical_full_line():
    event = parse("canonical", line(CANONICAL))
    assert event == CanonicalEvent(
        event_id="s:e-1",
        event_name="purchase",
        distinct_id="u1",
        event_time_ms=T,
        source_format="canonical",
        app_id="shop",
        platform="iOS",
        app_version="1.0.0",
        channel="organic",
        session_id="s-1",
        properties={"amount": 9.99},
        received_at_ms=ms(datetime(2024, 5, 1, 10, 1, tzinfo=UTC)),
        is_activity=True,
    )


def test_canonical_minimal_line_and_epoch():
    obj = {"event_name": "open", "distinct_id": 5, "event_time": T}
    assert parse("canonical", line(obj)) == CanonicalEvent(
        event_id=hashed_event_id(None, "5", "open", T, {}),
        event_name="open",
        distinct_id="5",
        event_time_ms=T,
        source_format="canonical",
    )
    assert parse("canonical", line(dict(obj, event_time=str(T), received_at=T + 9))).received_at_ms == T + 9


def test_canonical_link():
    obj = {"event_name": "login", "distinct_id": "L", "event_time": T_ISO, "is_activity": False,
           "link_anonymous_id": "A", "link_login_id": "L"}
    event = parse("canonical", line(obj))
    assert event == CanonicalEvent(
        event_id=hashed_event_id(None, "L", "login", T, {}),
        event_name="login",
        distinct_id="L",
        event_time_ms=T,
        source_format="canonical",
        is_activity=False,
        link_anonymous_id="A",
        link_login_id="L",
    )
    assert reason_of("canonical", line(without(obj, "link_login_id"))) == MISSING_FIELD
    assert reason_of("canonical", line(without(obj, "link_anonymous_id"))) == MISSING_FIELD


@pytest.mark.parametrize(
    "field, bad",
    [("is_activity", "yes"), ("is_activity", 1), ("platform", 3), ("app_version", 1.0), ("channel", ["c"]),
     ("session_id", {"s": 1}), ("app_id", True), ("event_id", 1.5), ("link_login_id", {"l": 1})],
)
def test_canonical_wrong_types(field, bad):
    assert reason_of("canonical", line(with_(CANONICAL, field, bad))) == INVALID_FIELD


def test_canonical_bad_received_at():
    assert reason_of("canonical", line(with_(CANONICAL, "received_at", "later"))) == INVALID_TIMESTAMP


def test_canonical_docstring_documents_every_field():
    from cohortflow.adapters import canonical

    for field in ("event_id", "event_name", "distinct_id", "event_time", "received_at", "app_id", "platform",
                  "app_version", "channel", "session_id", "properties", "is_activity", "link_anonymous_id",
                  "link_login_id"):
        assert f"``{field}``" in canonical.__doc__


# --------------------------------------------------------------------------- fuzzing

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)

time_like = (
    st.integers(min_value=946_684_800_000 - 10, max_value=4_102_444_800_000 + 10)
    | st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000).map(str)
    | st.datetimes(min_value=datetime(1999, 12, 31), max_value=datetime(2100, 1, 2),
                   timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]))
    .map(lambda d: d.isoformat())
    | st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?\Z")
    | json_values
)
id_like = st.sampled_from(["u1", "a1", "", " ", 0, 7]) | json_values
name_like = st.sampled_from(["buy", "$alias", "$identify", "$create_alias", "$set", "$profile_set", ""]) | json_values
preset_props = st.dictionaries(
    st.sampled_from(["$platform", "$os", "$lib", "$app_version", "$channel", "$session_id", "$event_session_id",
                     "$original_id", "$anon_distinct_id", "alias", "distinct_id", "name", "x"]),
    id_like,
    max_size=6,
) | json_values


def maybe(strategies: dict) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional=strategies)


FUZZ_OBJECTS = {
    "ark": maybe({"appid": id_like, "xwho": id_like, "xwhat": name_like, "xwhen": time_like, "xcontext": preset_props}),
    "sensors": maybe({
        "type": st.sampled_from(["track", "track_signup", "profile_set", "item_set", "item_delete", "x"]) | json_values,
        "event": name_like, "distinct_id": id_like, "original_id": id_like, "time": time_like, "project": id_like,
        "properties": preset_props, "_track_id": id_like, "item_id": id_like, "item_type": id_like,
    }),
    "segment": maybe({
        "type": st.sampled_from(["track", "identify", "alias", "page", "screen", "group"]) | json_values,
        "event": name_like, "userId": id_like, "anonymousId": id_like, "previousId": id_like, "messageId": id_like,
        "timestamp": time_like, "originalTimestamp": time_like, "sentAt": time_like, "receivedAt": time_like,
        "properties": preset_props, "traits": preset_props, "name": json_values,
        "context": maybe({"os": maybe({"name": json_values}) | json_values,
                          "device": maybe({"type": json_values}) | json_values,
                          "app": maybe({"version": json_values}) | json_values,
                          "campaign": maybe({"source": json_values}) | json_values}) | json_values,
    }),
    "posthog": maybe({"event": name_like, "distinct_id": id_like, "uuid": id_like, "timestamp": time_like,
                      "sent_at": time_like, "properties": preset_props}),
    "canonical": maybe({
        "event_id": id_like, "event_name": name_like, "distinct_id": id_like, "event_time": time_like,
        "received_at": time_like, "app_id": id_like, "platform": json_values, "app_version": json_values,
        "channel": json_values, "session_id": id_like, "properties": preset_props, "is_activity": json_values,
        "link_anonymous_id": id_like, "link_login_id": id_like,
    }),
}


def check_contract(fmt: str, raw: bytes) -> None:
    try:
        event = parse(fmt, raw)
    except LineError as err:
        assert err.reason in REASONS
        assert len(err.detail) < 200
        return
    assert isinstance(event, CanonicalEvent)
    assert event.source_format == fmt
    assert isinstance(event.event_id, str) and event.event_id[:2] in ("h:", "s:")
    assert isinstance(event.distinct_id, str) and event.distinct_id
    assert isinstance(event.event_name, str) and event.event_name
    assert 946_684_800_000 <= event.event_time_ms < 4_102_444_800_000
    assert isinstance(event.properties, dict)
    assert (event.link_anonymous_id is None) == (event.link_login_id is None)
    for value in (event.app_id, event.platform, event.app_version, event.channel, event.session_id):
        assert value is None or isinstance(value, str)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(raw=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(fmt, raw):
    check_contract(fmt, raw)


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(value=json_values)
def test_fuzz_arbitrary_json(fmt, value):
    check_contract(fmt, orjson.dumps(value))


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_fuzz_format_shaped_objects(fmt, data):
    obj = data.draw(FUZZ_OBJECTS[fmt])
    raw = orjson.dumps(obj)
    check_contract(fmt, raw)
    # mutated bytes of a plausible line
    if raw:
        pos = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        byte = data.draw(st.integers(min_value=0, max_value=255))
        check_contract(fmt, raw[:pos] + bytes([byte]) + raw[pos + 1 :])
        check_contract(fmt, raw[:pos])


@pytest.mark.parametrize("fmt", FORMATS)
@FUZZ
@given(data=st.data())
def test_fuzz_base_line_with_one_field_replaced(fmt, data):
    base = BASE[fmt]
    key = data.draw(st.sampled_from(sorted(base)))
    obj = dict(base)
    obj[key] = data.draw(json_values | time_like | id_like)
    check_contract(fmt, orjson.dumps(obj))

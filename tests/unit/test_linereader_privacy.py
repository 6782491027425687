"""The landing-file reader (damaged files end at the break) and the privacy step, as units."""

from __future__ import annotations

import gzip

import pytest

from cohortflow.config import Privacy, url_secret
from cohortflow.events import CanonicalEvent
from cohortflow.linereader import FileLines
from cohortflow.privacy import Pseudonymizer, PrivacyError


def _lines(path):
    reader = FileLines(path)
    return [raw for _, raw in reader], reader.damage


def test_intact_files_give_their_physical_lines(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"a\r\nb\n\nc")
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(b"a\nb") + gzip.compress(b"c\r\n") + b"\0\0")
    (tmp_path / "c.jsonl.gz").write_bytes(b"")
    assert _lines(tmp_path / "a.jsonl") == ([b"a", b"b", b"", b"c"], None)
    assert _lines(tmp_path / "b.jsonl.gz") == ([b"a", b"bc"], None)  # members concatenate, as gzip defines
    assert _lines(tmp_path / "c.jsonl.gz") == ([], None)


def test_a_damaged_file_gives_the_lines_before_the_break_and_says_why(tmp_path):
    data = b"".join(b'{"n": %d}\n' % i for i in range(5000))
    whole = gzip.compress(data)
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "plain.jsonl.gz").write_bytes(data)
    (tmp_path / "tail.jsonl.gz").write_bytes(whole + b"junk")
    lines, damage = _lines(tmp_path / "cut.jsonl.gz")
    assert damage.startswith("truncated") and 0 < len(lines) < 5000
    assert lines[:-1] == data.split(b"\n")[: len(lines) - 1]  # whole lines, then the fragment at the break
    assert _lines(tmp_path / "plain.jsonl.gz")[0] == [] and _lines(tmp_path / "plain.jsonl.gz")[1].startswith("not gzip data")
    lines, damage = _lines(tmp_path / "tail.jsonl.gz")
    assert len(lines) == 5000 and damage.startswith("not gzip data")


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("postgresql+psycopg://u:p@h/db", "user info"),
        ("postgresql+psycopg://u:p/a@s?s@h/db", "user info"),
        ("postgresql+psycopg://u@h/db?password=x", "query parameter"),
        ("postgresql+psycopg://u@h/db?sslmode=require&SSLPASSWORD=x", "query parameter"),
        ("postgresql+psycopg://u@h/db?pass%77ord=x", "query parameter"),
        ("http://admin:pw@127.0.0.1:12345/ds", "user info"),
        ("postgresql+psycopg://u@h:5432/db?sslmode=require", None),
        ("duckdb:///target/warehouse.duckdb", None),
        ("not a url: user:pw@host", None),
    ],
)
def test_passwords_are_found_anywhere_in_a_url(url, where):
    assert url_secret(url) == where


def _event(**kw) -> CanonicalEvent:
    base = dict(event_id="h:x", event_name="buy", distinct_id="anon-1", event_time_ms=1_800_000_000_000, source_format="ark")
    return CanonicalEvent(**{**base, **kw})


def test_pseudonyms_are_keyed_stable_and_drop_what_is_configured():
    p = Pseudonymizer(Privacy(pseudonymize_ids=True, key="k" * 16, drop_properties=["email"], drop_ip_properties=True))
    other = Pseudonymizer(Privacy(pseudonymize_ids=True, key="q" * 16))
    props = {"email": "a@b", "$ip": "1.2.3.4", "zip": "10115", "nested": {"addr": "::1", "email": "c@d", "n": [1, "8.8.8.8"]}, "$device_id": "dev-9"}
    a = p.apply(_event(properties=dict(props), link_anonymous_id="anon-1", link_login_id="u-1"))
    b = p.apply(_event(properties=dict(props), distinct_id="u-1"))
    assert a.distinct_id == a.link_anonymous_id != a.link_login_id == b.distinct_id
    assert a.distinct_id.startswith("p:") and len(a.distinct_id) == 34
    assert other.apply(_event()).distinct_id != a.distinct_id
    assert a.properties == {"zip": "10115", "nested": {"n": [1]}, "$device_id": p.pseudonym("dev-9")}
    assert a.event_id.startswith("h:") and a.event_id != "h:x"
    assert p.apply(_event(event_id="s:m-1")).event_id == "s:m-1"
    with pytest.raises(PrivacyError, match="COHORTFLOW_PRIVACY__KEY"):
        Pseudonymizer(Privacy(pseudonymize_ids=True))

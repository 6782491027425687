"""The ingest loses nothing: lines read = loaded + duplicates + quarantined, on any mix of lines."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cohortflow.config import load_config
from cohortflow import ingest
from cohortflow.ingest import IngestError, load_day
from cohortflow.warehouse import Warehouse
from tests.conftest import write_config

D1 = dt.date(2026, 11, 1)
D2 = dt.date(2026, 11, 2)
T0 = int(dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC).timestamp() * 1000)


def ark(who: str, what: str, when: int, **ctx) -> str:
    return json.dumps({"appid": "a", "xwho": who, "xwhat": what, "xwhen": when, "xcontext": ctx}, ensure_ascii=False)


BROKEN = [
    "{not json",
    "[1, 2, 3]",
    '{"appid": "a", "xwhat": "x", "xwhen": 1761984000000, "xcontext": {}}',  # no xwho
    '{"appid": "a", "xwho": "u", "xwhat": "x", "xwhen": "yesterday", "xcontext": {}}',
    '{"appid": "a", "xwho": "u", "xwhat": "x", "xwhen": 99, "xcontext": {}}',
    "",
    ark("u", "too_late", T0 - 40 * 86_400_000),  # older than the late-arrival limit
    ark("u", "future", T0 + 10 * 86_400_000),  # more than a day after receipt
]

good_line = st.builds(
    lambda who, what, dt_ms, prop: ark(who, what, T0 + dt_ms, p=prop),
    st.sampled_from(["anon-1", "anon-2", "u_1", "用户"]),
    st.sampled_from(["app_start", "view_item", "pay_order"]),
    st.integers(min_value=0, max_value=3_600_000),
    st.text(max_size=5),
)


def _write(folder: Path, name: str, lines: list[str], gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = ("\n".join(lines) + "\n").encode() if lines else b""
    if gz:
        (folder / (name + ".jsonl.gz")).write_bytes(gzip.compress(data))
    else:
        (folder / (name + ".jsonl")).write_bytes(data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    day1=st.lists(st.one_of(good_line, st.sampled_from(BROKEN)), max_size=25),
    day2_new=st.lists(good_line, max_size=10),
    repeat=st.lists(st.integers(min_value=0, max_value=40), max_size=10),
    split=st.integers(min_value=0, max_value=25),
    gz=st.booleans(),
)
def test_ledger_is_exact_for_any_mix(tmp_path_factory, day1, day2_new, repeat, split, gz):
    root = tmp_path_factory.mktemp("p")
    cfg = load_config(write_config(root, warehouse={"url": "duckdb:///:memory:"}), environ={})
    wh = Warehouse(cfg)
    wh.bootstrap()
    landing = root / "landing" / "ark"
    # Day 1: the lines in two files; day 2: new lines plus retries of day-1 lines.
    _write(landing / D1.isoformat(), "a", day1[:split], gz)
    _write(landing / D1.isoformat(), "b", day1[split:], not gz)
    retries = [day1[i] for i in repeat if i < len(day1)]
    _write(landing / D2.isoformat(), "a", day2_new + retries, gz)

    def expected(lines, seen):
        quarantined = sum(1 for ln in lines if ln in BROKEN)
        loaded = dups = 0
        for ln in lines:
            if ln in BROKEN:
                continue
            if ln in seen:
                dups += 1
            else:
                seen.add(ln)
                loaded += 1
        return loaded, dups, quarantined

    seen: set[str] = set()
    for d, lines in ((D1, day1), (D2, day2_new + retries)):
        ledger = load_day(wh, cfg, d, run_id="t")
        loaded, dups, quarantined = expected(lines, seen)
        assert ledger.lines_read == len(lines)
        assert (ledger.events_loaded, ledger.duplicates_removed, ledger.lines_quarantined) == (loaded, dups, quarantined)
        assert ledger.balanced
        with wh.begin() as conn:
            assert wh.scalar(conn, "select count(*) from raw.events where load_date = :d", {"d": d}) == loaded
            assert wh.scalar(conn, "select count(*) from raw.quarantine where load_date = :d", {"d": d}) == quarantined
            stored = wh.execute(
                conn,
                "select sum(lines_read), sum(events_loaded), sum(duplicates_removed), sum(lines_quarantined) "
                "from meta.ingest_ledger where load_date = :d",
                {"d": d},
            ).first()
        if lines:
            assert tuple(stored) == (len(lines), loaded, dups, quarantined)
    wh.dispose()


def _project(tmp_path: Path):
    cfg = load_config(write_config(tmp_path, warehouse={"url": "duckdb:///:memory:"}), environ={})
    wh = Warehouse(cfg)
    wh.bootstrap()
    return cfg, wh, tmp_path / "landing" / "ark"


def test_rerun_replaces_exactly_what_the_date_loaded(tmp_path):
    cfg, wh, landing = _project(tmp_path)
    _write(landing / D1.isoformat(), "a", [ark("u", "app_start", T0), "{bad"], False)
    _write(landing / D2.isoformat(), "a", [ark("u", "app_start", T0 + 86_400_000)], False)
    load_day(wh, cfg, D1, "r1")
    load_day(wh, cfg, D2, "r1")
    load_day(wh, cfg, D1, "r2")  # rerun of day 1
    with wh.begin() as conn:
        rows = wh.execute(conn, "select load_date, count(*) from raw.events group by 1 order by 1").fetchall()
        q = wh.scalar(conn, "select count(*) from raw.quarantine")
        runs = wh.execute(conn, "select distinct run_id from meta.ingest_ledger where load_date = :d", {"d": D1}).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(D1, 1), (D2, 1)]
    assert q == 1
    assert runs == [("r2",)]


def test_quarantine_keeps_reason_raw_text_file_and_line(tmp_path):
    cfg, wh, landing = _project(tmp_path)
    _write(landing / D1.isoformat(), "a", [ark("u", "app_start", T0), '{"xwho": 1', "[]"], False)
    load_day(wh, cfg, D1, "r")
    with wh.begin() as conn:
        rows = wh.execute(conn, "select ingest_file, ingest_line, reason, raw_line from raw.quarantine order by ingest_line").fetchall()
    assert rows == [
        ("ark/2026-11-01/a.jsonl", 2, "invalid_json", '{"xwho": 1'),
        ("ark/2026-11-01/a.jsonl", 3, "not_an_object", "[]"),
    ]


def test_source_paths_are_confined_to_the_landing_root(tmp_path):
    cfg, wh, landing = _project(tmp_path)
    outside = tmp_path / "elsewhere"
    _write(outside, "secret", [ark("u", "x", T0)], False)
    (landing / D1.isoformat()).mkdir(parents=True)
    (landing / D1.isoformat() / "link.jsonl").symlink_to(outside / "secret.jsonl")
    with pytest.raises(IngestError, match="outside the landing root"):
        load_day(wh, cfg, D1, "r")


def test_config_rejects_a_source_path_that_escapes(tmp_path):
    from cohortflow.config import ConfigError

    path = write_config(tmp_path, sources=[{"name": "app", "format": "ark", "path": "../../etc"}])
    with pytest.raises(ConfigError, match=r"sources\.0\.path"):
        load_config(path, environ={})


def test_first_copy_received_wins(tmp_path):
    """Segment retries with different send times: the copy received first is the one kept."""
    cfg = load_config(
        write_config(tmp_path, warehouse={"url": "duckdb:///:memory:"}, sources=[{"name": "web", "format": "segment", "path": "seg"}]),
        environ={},
    )
    wh = Warehouse(cfg)
    wh.bootstrap()

    def seg(received: str, sent: str) -> str:
        return json.dumps({
            "type": "track", "event": "view_item", "userId": "u1", "messageId": "m-1",
            "originalTimestamp": "2026-11-01T08:00:00.000Z", "sentAt": sent, "receivedAt": received,
            "properties": {"sent": sent},
        })

    late_copy = seg("2026-11-01T08:00:09.000Z", "2026-11-01T08:00:08.000Z")
    first_copy = seg("2026-11-01T08:00:02.000Z", "2026-11-01T08:00:01.000Z")
    _write(tmp_path / "landing" / "seg" / D1.isoformat(), "a", [late_copy], False)
    _write(tmp_path / "landing" / "seg" / D1.isoformat(), "b", [first_copy], False)
    ledger = load_day(wh, cfg, D1, "r")
    assert (ledger.events_loaded, ledger.duplicates_removed) == (1, 1)
    with wh.begin() as conn:
        row = wh.execute(conn, "select ingest_file, event_time from raw.events").first()
    assert row[0] == "seg/2026-11-01/b.jsonl"
    assert row[1] == dt.datetime(2026, 11, 1, 8, 0, 1)  # skew-corrected: received - (sent - original)


def test_nul_bytes_and_invalid_utf8_are_quarantined_and_stored_on_every_engine(make_project, engine):
    project = make_project(engine)
    cfg, wh = project.config(), project.warehouse()
    wh.bootstrap()
    nul_id = json.dumps({"appid": "a", "xwho": "u\u0000x", "xwhat": "x", "xwhen": T0, "xcontext": {}})
    raw = b"garbage\x00\xff\xfe line\n" + nul_id.encode() + b"\n" + ark("u", "app_start", T0).encode() + b"\n"
    folder = project.landing / D1.isoformat()
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_bytes(raw)
    ledger = load_day(wh, cfg, D1, "r")
    with wh.begin() as conn:
        rows = wh.execute(conn, "select ingest_line, reason, raw_line from raw.quarantine order by ingest_line").fetchall()
    wh.dispose()
    assert (ledger.events_loaded, ledger.lines_quarantined) == (1, 2)
    assert rows[0][1] == "invalid_encoding" and rows[0][2] == "garbage\\x00\\xff\\xfe line"
    assert rows[1][1] == "invalid_field"


def test_size_limits_quarantine_long_names_and_values(tmp_path):
    cfg = load_config(
        write_config(tmp_path, warehouse={"url": "duckdb:///:memory:"}, ingest={"max_value_length": 100, "max_event_name_length": 20}),
        environ={},
    )
    wh = Warehouse(cfg)
    wh.bootstrap()
    lines = [
        ark("u", "ok", T0, nested={"deep": ["x" * 101]}),  # a long value deep inside
        ark("u", "ok", T0 + 1, a="x" * 60, b="y" * 60),  # long document, short values: fine
        ark("u", "n" * 21, T0 + 2),
        ark("u", "ok", T0 + 3, 长="值" * 100),  # 100 characters is the limit, not bytes
    ]
    _write(tmp_path / "landing" / "ark" / D1.isoformat(), "a", lines, False)
    ledger = load_day(wh, cfg, D1, "r")
    with wh.begin() as conn:
        reasons = [r[0] for r in wh.execute(conn, "select reason from raw.quarantine order by ingest_line").fetchall()]
    assert (ledger.events_loaded, ledger.lines_quarantined) == (2, 2)
    assert reasons == ["value_too_long", "value_too_long"]


def _stored(wh: Warehouse) -> dict[str, list]:
    queries = {
        "events": "select * from raw.events order by ingest_file, ingest_line",
        "duplicates": "select * from raw.duplicates order by ingest_file, ingest_line",
        "quarantine": "select * from raw.quarantine order by ingest_file, ingest_line",
        "ledger": "select source_name, ingest_file, lines_read, events_loaded, duplicates_removed, lines_quarantined, "
        "damage from meta.ingest_ledger order by ingest_file",
    }
    with wh.begin() as conn:
        return {name: [tuple(r) for r in wh.execute(conn, sql).fetchall()] for name, sql in queries.items()}


def test_parallel_and_chunked_parsing_load_what_a_serial_read_loads(tmp_path, monkeypatch):
    """The day's files parsed by two processes, or spooled a few rows at a time, load exactly the rows, duplicates,
    quarantined lines, line numbers and ledger (damaged file included) of one serial read in one chunk."""
    import cohortflow.ingest as ingest

    lines = [ark(f"u{i % 7}", "app_start", T0 + i * 1000, n=i) for i in range(40)]
    day = D1.isoformat()

    def fill(landing: Path) -> None:
        _write(landing / day, "a", lines[:15] + BROKEN + lines[:3], True)  # retries of its own first lines
        _write(landing / day, "b", lines[15:30] + ["{bad"], False)
        _write(landing / day, "c", lines[30:] + lines[20:25], True)  # copies of file b's events
        whole = gzip.compress(("\n".join(lines[5:12]) + "\n").encode())
        (landing / day / "d.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # breaks off part way
        _write(landing / day, "e", ["{bad", "[]"], False)  # no event at all: an empty spool file

    results = []
    # ("glob": a project folder whose name DuckDB's file reader would expand as a glob pattern; "striped": every
    # file parsed in stripes of blocks of 4 lines, by three parsers; "others": the parser processes alone)
    for name, chunk, workers, parallel_min in (("serial", 10**6, 1, 1 << 40), ("chunked", 3, 1, 1 << 40),
                                               ("parallel", 10**6, 2, 0), ("glob", 4, 1, 1 << 40),
                                               ("striped", 2, 3, 0), ("others", 10**6, 2, 0)):
        monkeypatch.setattr(ingest, "CHUNK_ROWS", chunk)
        monkeypatch.setattr(ingest, "PARALLEL_MIN_BYTES", parallel_min)
        monkeypatch.setattr(ingest, "STRIPE_MIN_BYTES", 0 if name == "striped" else 1 << 40)
        monkeypatch.setattr(ingest, "STRIPE_LINES", 4)
        monkeypatch.setattr(ingest, "PARENT_PARSES", name != "others")
        root = tmp_path / ("project[1]" if name == "glob" else name)
        cfg = load_config(write_config(root, warehouse={"url": "duckdb:///:memory:"}, ingest={"workers": workers}), environ={})
        wh = Warehouse(cfg)
        wh.bootstrap()
        fill(root / "landing" / "ark")
        said: list[str] = []
        ledger = load_day(wh, cfg, D1, "r", progress=said.append)
        assert ledger.balanced and ledger.damaged_files
        if name in ("parallel", "others"):
            assert any("with 2 processes" in s for s in said), said
        if name == "striped":
            assert any("with 3 processes" in s for s in said) and any("(part 3 of 3)" in s for s in said), said
        results.append(_stored(wh))
        wh.dispose()
    serial, chunked, parallel, globbed, striped, others = results
    # Each of the 40 events once; the retries, the copies of file b and the damaged file's lines are duplicates.
    assert len(serial["events"]) == 40 and len(serial["duplicates"]) >= 8
    assert len(serial["quarantine"]) >= len(BROKEN) + 3
    assert chunked == serial
    assert parallel == serial
    assert globbed == serial
    assert striped == serial
    assert others == serial


def test_the_spool_of_parsed_lines_is_removed_also_when_a_killed_ingest_left_it(tmp_path):
    """Parsed lines are spooled under the target folder while the day loads; the spool is gone afterwards, and one a
    killed ingest left behind (its process no longer exists) is removed by the next ingest."""
    from cohortflow.ingest import SPOOL_PREFIX

    cfg, wh, landing = _project(tmp_path)
    _write(landing / D1.isoformat(), "a", [ark("u", "app_start", T0)], False)
    cfg.target_path.mkdir(parents=True, exist_ok=True)
    left = cfg.target_path / f"{SPOOL_PREFIX}{2**22 + 12345}-dead"  # above pid_max's default: no such process
    left.mkdir()
    (left / "0-events.parquet").write_bytes(b"x" * 100)
    load_day(wh, cfg, D1, "r")
    assert not list(cfg.target_path.glob(SPOOL_PREFIX + "*"))


def test_a_script_without_a_main_guard_still_loads_the_day_when_parser_processes_fail(tmp_path):
    """Spawned parser processes re-run a calling script that has no ``if __name__ == "__main__"`` guard, and die
    there; the ingest then reads the day in its own process and loads it whole."""
    import subprocess
    import sys

    cfg, wh, landing = _project(tmp_path)
    wh.dispose()
    for name in ("a", "b"):
        _write(landing / D1.isoformat(), name, [ark(f"{name}{i}", "app_start", T0 + i) for i in range(20)], False)
    db = tmp_path / "w.duckdb"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import datetime as dt\n"
        "import cohortflow.ingest as ingest\n"
        "from cohortflow.config import load_config\n"
        "from cohortflow.warehouse import Warehouse\n"
        "ingest.PARALLEL_MIN_BYTES = 0\n"
        "ingest.PARENT_PARSES = False\n"
        f"cfg = load_config({str(tmp_path / 'cohortflow.yml')!r}, environ={{'COHORTFLOW_WAREHOUSE__URL': 'duckdb:///{db}',"
        " 'COHORTFLOW_INGEST__WORKERS': '2'})\n"
        "wh = Warehouse(cfg)\n"
        "wh.bootstrap()\n"
        "ledger = ingest.load_day(wh, cfg, dt.date(2026, 11, 1), 'r', progress=print)\n"
        "print('loaded', ledger.events_loaded, ledger.balanced)\n",
        encoding="utf-8",
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the parser processes failed" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "loaded 40 True"


@pytest.mark.parametrize("own", [None, "2GB", "512MB"])
def test_the_load_runs_under_the_ingest_memory_limit_and_puts_the_warehouse_limit_back(tmp_path, monkeypatch, own):
    """DuckDB's memory limit is the database's: the load lowers it to ingest.memory_limit (unless the warehouse's own
    is smaller), and after the load, also a failed one, it is what it was."""
    warehouse = {"url": "duckdb:///:memory:", **({"memory_limit": own} if own else {})}
    cfg = load_config(write_config(tmp_path, warehouse=warehouse), environ={})
    wh = Warehouse(cfg)
    wh.bootstrap()
    _write(tmp_path / "landing" / "ark" / D1.isoformat(), "a", [ark("u", "app_start", T0)], False)

    def limit() -> str:
        with wh.begin() as conn:
            return wh.scalar(conn, "select current_setting('memory_limit')")

    before = limit()
    during = []
    real = ingest._load_batch_in

    def spy(*args, **kwargs):
        during.append(limit())
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "_load_batch_in", spy)
    load_day(wh, cfg, D1, "r1")
    assert during == [("488.2 MiB" if own == "512MB" else "953.6 MiB")]  # 512MB; the ingest's default, 1GB
    assert limit() == before

    def broken(*args, **kwargs):
        during.append(limit())
        raise RuntimeError("the load failed")

    monkeypatch.setattr(ingest, "_load_batch_in", broken)
    with pytest.raises(RuntimeError):
        load_day(wh, cfg, D1, "r2")
    assert (during[-1] == before) == (own == "512MB") and limit() == before
    wh.dispose()

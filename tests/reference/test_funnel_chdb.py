"""Cross-check: funnel_conversion_daily against ClickHouse windowFunnel (through chdb) on the demo data.

The demo generator (``cohortflow.demo``) writes about 120,000 events of 2,500
people over 10 days in the canonical format (sessions with same-millisecond
steps, repeated views, retries, late identity links, Shanghai time). They go
through the project's ingest into a DuckDB warehouse, the model is built for
every date, and the staged events are exported to Parquet. For every funnel
and entry date E, ClickHouse computes each user's level with

    windowFunnel(window_ms, 'strict_once')(toUInt64(event_ms), cond1 AND event_date = E, cond2, ...)

(``'strict_increase', 'strict_once'`` for mode strictly_increasing) over the
events whose date is E .. E + window days, and the users reaching each step
must equal the model's. chdb's windowFunnel was checked against a brute
force on ties, repeated steps and overlapping conditions before relying on it.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

chdb = pytest.importorskip("chdb")

from cohortflow.analyses import load_definitions, model_params  # noqa: E402
from cohortflow.analyses.funnels import window_days  # noqa: E402
from cohortflow.config import load_config  # noqa: E402
from cohortflow.demo import DemoSpec, generate  # noqa: E402
from cohortflow.ingest import load_day  # noqa: E402
from cohortflow.warehouse import Warehouse  # noqa: E402
from tests.conftest import build_fresh, write_config  # noqa: E402

SPEC = DemoSpec(users=2500, days=10, fmt="canonical", timezone="Asia/Shanghai", seed=11)
FUNNELS = [
    {"name": "purchase", "window_seconds": 86400,
     "steps": [{"event": e} for e in ("app_start", "view_item", "add_to_cart", "checkout", "pay_order")]},
    {"name": "views", "window_seconds": 3600,
     "steps": [{"event": "view_item"}, {"event": "view_item"}, {"event": "add_to_cart"}, {"event": "view_item"}]},
    {"name": "views_strict", "window_seconds": 3600, "mode": "strictly_increasing",
     "steps": [{"event": "view_item"}, {"event": "view_item"}, {"event": "add_to_cart"}, {"event": "view_item"}]},
    {"name": "signup", "window_seconds": 7 * 86400,
     "steps": [{"event": e} for e in ("signup_start", "signup_submit", "signup_verify", "signup_done")]},
]
MODELS = ("stg_identities", "stg_events", "segment_membership_daily", "funnel_conversion_daily")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("funnel_chdb")
    summary = generate(SPEC, root / "landing" / "events", root / "truth.jsonl")
    assert summary.events >= 100_000
    cfg = load_config(
        write_config(
            root,
            timezone=SPEC.timezone,
            sources=[{"name": "app", "format": "canonical", "path": "events"}],
            analyses={"funnels": FUNNELS},
        ),
        environ={},
    )
    wh = Warehouse(cfg)
    wh.bootstrap()
    dates = sorted(dt.date.fromisoformat(p.name) for p in (root / "landing" / "events").iterdir())
    for d in dates:
        load_day(wh, cfg, d, run_id="chdb-check")
    start, end = dates[0], dates[-1]
    params = {**model_params(cfg), "start_date": start, "end_date": end}
    with wh.begin() as conn:
        load_definitions(wh, conn, cfg)
        build_fresh(wh, conn, params, MODELS)
        n_events = conn.execute(sa.text("select count(*) from models.stg_events")).scalar()
        rows = conn.execute(
            sa.text(
                "select funnel_name, entry_date, step_index, reached_users from models.funnel_conversion_daily "
                "where breakdown_value = 'all'"
            )
        ).fetchall()
        parquet = root / "stg_events.parquet"
        conn.connection.driver_connection.execute(
            "copy (select user_id, cast(extract(epoch from event_time) * 1000 as bigint) as event_ms, event_name, "
            f"event_date, properties from models.stg_events) to '{parquet}' (format parquet)"
        )
    wh.dispose()
    ours = {(r[0], r[1], r[2]): r[3] for r in rows}
    return cfg, parquet, start, end, n_events, ours


def _condition(step: dict) -> str:
    # test-only SQL for ClickHouse: the names are this file's literals
    return f"event_name = {json.dumps(step['event'])}".replace('"', "'")


def clickhouse_reached(parquet, funnel: dict, timezone: str, start: dt.date, end: dt.date) -> dict:
    """Users reaching step k per entry date, from windowFunnel's level of each (user, E)."""
    from cohortflow.config import Funnel

    f = Funnel.model_validate(funnel)
    conditions = [f"({_condition(funnel['steps'][0])}) and event_date = entry_date"]
    conditions += [_condition(s) for s in funnel["steps"][1:]]
    mode = "'strict_increase', 'strict_once'" if f.mode == "strictly_increasing" else "'strict_once'"
    days = window_days(f, timezone)
    names = ", ".join(sorted({_condition(s).split(" = ")[1] for s in funnel["steps"]}))
    sql = f"""
        select toString(entry_date), level, count()
        from (
            select user_id, entry_date,
                   windowFunnel({f.window_seconds * 1000}, {mode})(toUInt64(event_ms), {', '.join(conditions)}) as level
            from (
                select user_id, event_ms, event_name, event_date,
                       arrayJoin(arrayMap(k -> event_date - k, range({days + 1}))) as entry_date
                from file('{parquet}', Parquet)
                where event_name in ({names})
            )
            where entry_date between toDate('{start}') and toDate('{end}')
            group by user_id, entry_date
        )
        where level > 0
        group by entry_date, level
        format TSV
    """
    levels: dict[tuple[dt.date, int], int] = {}
    for line in str(chdb.query(sql)).strip().splitlines():
        day, level, users = line.split("\t")
        levels[(dt.date.fromisoformat(day), int(level))] = int(users)
    out = {}
    d = start
    while d <= end:
        for k in range(1, len(f.steps) + 1):
            out[(f.name, d, k)] = sum(n for (day, level), n in levels.items() if day == d and level >= k)
        d += dt.timedelta(days=1)
    return out


def test_windowfunnel_ties_and_repeats_match_the_definition():
    """chdb 4.x windowFunnel(strict_once) on the subtle cases, as SEMANTICS.md defines them."""
    cases = [
        ([(5, "A"), (5, "B")], ["A", "B"], 2),  # one millisecond, consecutive steps
        ([(5, "A")], ["A", "A"], 1),  # one event fills one step
        ([(5, "A"), (5, "A"), (5, "B")], ["A", "A", "B"], 3),
        ([(0, "A"), (10, "B")], ["A", "B"], 2),  # exactly at t1 + window (10)
        ([(0, "A"), (11, "B")], ["A", "B"], 1),  # 1 ms after
        ([(0, "A"), (5, "A"), (12, "B")], ["A", "B"], 2),  # the first A's window expired
    ]
    for events, steps, level in cases:
        values = ", ".join(f"({t}, '{n}')" for t, n in events)
        conds = ", ".join(f"n = '{s}'" for s in steps)
        got = str(chdb.query(
            f"select windowFunnel(10, 'strict_once')(toUInt64(t), {conds}) from values('t UInt64, n String', {values})"
        )).strip()
        assert int(got) == level, (events, steps)


@pytest.mark.parametrize("funnel", FUNNELS, ids=[f["name"] for f in FUNNELS])
def test_reached_users_match_clickhouse(built, funnel):
    cfg, parquet, start, end, n_events, ours = built
    assert n_events >= 100_000
    theirs = clickhouse_reached(parquet, funnel, cfg.timezone, start, end)
    mine = {key: n for key, n in ours.items() if key[0] == funnel["name"]}
    assert sum(theirs.values()) > 0
    assert mine == theirs

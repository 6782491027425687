"""Property test: DAU, WAU and MAU of ``active_users_daily`` for any build range against the brute force.

A nightly build computes a few recent dates; before its range the model reads each user's latest active day only
(the windows ending in the range reach an earlier day of a user exactly when they reach the latest). Random active
days of a few users over 70 days, and a random range to build, with the counts of SEMANTICS.md done by hand: DAU the
users active on the date, WAU in the 7 days ending on it, MAU in the 30 days ending on it.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortflow.models import load_models
from cohortflow.warehouse import render

DAY0 = dt.date(2026, 9, 1)
USERS = ("a", "b", "c", "d", "e")


def _brute(days: set[tuple[str, dt.date]], d: dt.date) -> tuple[int, int, int]:
    def active(within: int) -> int:
        return len({u for u, a in days if d - dt.timedelta(days=within - 1) <= a <= d})

    return active(1), active(7), active(30)


@settings(max_examples=120, deadline=None)
@given(
    days=st.sets(st.tuples(st.sampled_from(USERS), st.integers(0, 69).map(lambda i: DAY0 + dt.timedelta(days=i))), max_size=40),
    start=st.integers(0, 69),
    length=st.integers(0, 6),
)
def test_windows_of_any_build_range_equal_the_brute_force(days, start, length):
    model = load_models()["active_users_daily"]
    lo = DAY0 + dt.timedelta(days=start)
    hi = min(lo + dt.timedelta(days=length), DAY0 + dt.timedelta(days=69))
    engine = sa.create_engine("duckdb:///:memory:")
    with engine.begin() as conn:
        conn.execute(sa.text("create schema models"))
        conn.execute(sa.text("create table models.user_activity_daily (activity_date date, user_id varchar)"))
        if days:
            conn.execute(
                sa.text("insert into models.user_activity_daily values (:d, :u)"), [{"d": a, "u": u} for u, a in days]
            )
        rows = conn.execute(
            sa.text(render(model.sql.strip().rstrip(";"), "duckdb")),
            {"start_date": lo, "end_date": hi, "as_of_date": hi, "first_date": DAY0, "late_arrival_days": 2},
        ).fetchall()
    engine.dispose()
    got = {r.activity_date: (r.dau, r.wau, r.mau) for r in rows}
    want = {lo + dt.timedelta(days=i): _brute(days, lo + dt.timedelta(days=i)) for i in range((hi - lo).days + 1)}
    assert got == want

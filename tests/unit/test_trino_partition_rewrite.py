"""The Trino partition rewrite (keep the untouched rows of the partitions, delete them, write the kept and new rows
back), which the ingest and the user-grain model builds share: the statements it runs, in order, and what it binds.
The rewrite itself runs on Trino in tests/e2e (COHORTFLOW_TEST_TRINO_ALL=1)."""

from __future__ import annotations

import datetime as dt

from cohortflow.warehouse import TrinoAccess


class Recorder:
    """Stands in for the Trino access object: records what the rewrite executes."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, dict]] = []

    def execute(self, conn, sql, params=None):
        self.statements.append((sql, dict(params or {})))


def test_rewrite_keeps_untouched_rows_and_writes_them_back_with_the_new_ones():
    recorder = Recorder()
    dates = [dt.date(2024, 5, 1), dt.date(2024, 5, 3)]
    TrinoAccess.rewrite_partitions(
        recorder,
        None,
        "models.t",
        "a, b, d",
        "d",
        dates,
        "not t.a = :x",
        "select a, b, d from new_rows where d in ({dates})",
        {"x": 1},
        kept="kept_rows",
        key="pd",
    )
    sqls = [sql for sql, _ in recorder.statements]
    assert sqls == [
        "drop table if exists kept_rows",
        "create temporary table kept_rows as select a, b, d from models.t as t where t.d in (:pd0, :pd1) and not t.a = :x",
        "delete from models.t where d in (:pd0, :pd1)",
        "insert into models.t (a, b, d) select a, b, d from kept_rows union all "
        "select a, b, d from new_rows where d in (:pd0, :pd1)",
        "drop table kept_rows",
    ]
    bound = {"x": 1, "pd0": dates[0], "pd1": dates[1]}
    assert [params for _, params in recorder.statements[1:4]] == [bound, bound, bound]

"""Per-engine CTE overrides (``sql/models/<table>.<engine>.sql``): what replaces what, and what is refused."""

from __future__ import annotations

import duckdb
import pytest

from cohortflow.models import load_models, model_statements
from cohortflow.warehouse import render

BASE = "with a as (select 1 as x), b as (select x + 1 as x from a), c as (select x * 10 as x from b) select x from c"


def run(sql: str) -> list[tuple]:
    return duckdb.sql(sql).fetchall()


def test_a_replacement_takes_the_place_of_its_namesake():
    assert run(render(BASE, "duckdb")) == [(20,)]
    assert run(render(BASE, "duckdb", ctes="with b as (select x + 5 as x from a) select 0")) == [(60,)]


def test_new_ctes_go_just_before_the_replacement_that_reads_them():
    ctes = "with helper as (select 7 as y), b as (select x + y as x from a, helper) select 0"
    sql = render(BASE, "duckdb", ctes=ctes)
    assert sql.index("helper AS") < sql.index("b AS") < sql.index("c AS")
    assert run(sql) == [(80,)]


def test_a_new_cte_that_replaces_nothing_is_refused():
    with pytest.raises(ValueError, match="helper"):
        render(BASE, "duckdb", ctes="with b as (select 1 as x), helper as (select 2) select 0")


def test_replacing_needs_with_queries():
    with pytest.raises(ValueError, match="WITH"):
        render("select 1", "duckdb", ctes="with b as (select 1) select 0")


def test_the_funnel_override_applies_to_duckdb_only():
    model = load_models()["funnel_user_steps"]
    duck = "\n".join(model_statements(model, "duckdb"))
    pg = "\n".join(model_statements(model, "postgresql"))
    assert "LIST_REDUCE" in duck and "fold_states" in duck
    assert "fold_states" not in pg and "LIST_REDUCE" not in pg.upper()
    # The shared chain CTEs are still there on both (for funnels that repeat a step's event).
    assert "chains" in duck and "chains" in pg

"""Source-dialect constructs that translate into SQL meaning something else on another engine, pinned on every engine.

Each case is one expression in the source dialect (DuckDB) and the value DuckDB gives it; the same expression,
rendered through ``cohortflow.warehouse.render`` (sqlglot plus ``same_meaning``), must give that value on every
engine. Without the rewrites, Trino gives the "trino_without" value (or fails), which is why each case is here.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlglot

from cohortflow.warehouse import render

SUNDAY = dt.date(2026, 11, 1)  # a Sunday
MONDAY = dt.date(2026, 11, 2)

# prop() reads a key that is a value (a column): here from bound parameters, through a subquery.
PROP = "(select prop(t.j, t.k) from (select cast(:j as varchar) as j, cast(:k as varchar) as k) as t)"

LISTED = "(select t.x from (select 'a' as x union all select 'b' as x) as t)"
LISTED_NULL = "(select t.x from (select 'a' as x union all select cast(null as varchar) as x) as t)"

# (name, source expression, bound parameters, expected value, what plain sqlglot translation gives on Trino)
CASES = [
    ("extract(dow) on a Sunday is 0", "extract(dow from cast(:d as date))", {"d": SUNDAY}, 0, "7"),
    ("extract(dow) on a Monday is 1", "extract(dow from cast(:d as date))", {"d": MONDAY}, 1, "1"),
    ("dayofweek() on a Sunday is 0", "dayofweek(cast(:d as date))", {"d": SUNDAY}, 0, "1"),
    ("dayofweek() on a Saturday is 6", "dayofweek(cast(:d as date))", {"d": dt.date(2026, 11, 7)}, 6, "0"),
    ("extract(isodow) on a Sunday is 7", "extract(isodow from cast(:d as date))", {"d": SUNDAY}, 7, "error"),
    ("date - integer is a date", "cast(:d as date) - 29", {"d": SUNDAY}, dt.date(2026, 10, 3), "error"),
    ("date + integer is a date", "cast(:d as date) + 1", {"d": dt.date(2026, 12, 31)}, dt.date(2027, 1, 1), "error"),
    ("integer + date is a date", "2 + cast(:d as date)", {"d": SUNDAY}, dt.date(2026, 11, 3), "error"),
    ("date - integer - integer", "cast(:d as date) - 2 - 3", {"d": SUNDAY}, dt.date(2026, 10, 27), "error"),
    ("date - date is whole days", "cast(:a as date) - cast(:b as date)", {"a": MONDAY, "b": dt.date(2026, 1, 1)}, 305, "an interval"),
    (
        "date + interval is a timestamp",
        "cast(:d as date) + interval 1 day",
        {"d": SUNDAY},
        dt.datetime(2026, 11, 2, 0, 0),
        "a date",
    ),
    (
        "date + n months, cast back to a date",
        "cast(cast(:d as date) + 3 * interval '1 month' as date)",
        {"d": dt.date(2026, 11, 30)},
        dt.date(2027, 2, 28),
        "error",
    ),
    (
        "epoch seconds of a timestamp are UTC",
        "cast(extract(epoch from cast(:t as timestamp)) * 1000 as bigint)",
        {"t": dt.datetime(2026, 11, 1, 23, 59, 59, 999000)},
        1793577599999,
        "the session zone's",
    ),
    ("integer / integer is fractional", "cast(:a as integer) / cast(:b as integer)", {"a": 7, "b": 2}, 3.5, "3.5"),
    ("md5 is lower-case hex of the UTF-8 text", "md5(cast(:s as varchar))", {"s": "é|1"}, "0c9b128a3f6cfaff6dbc69f571e8f6a4", "—"),
    ("a property of the JSON text", PROP, {"j": '{"a.b": "x", "n": 2}', "k": "a.b"}, "x", "—"),
    ("a number property as text", PROP, {"j": '{"a.b": "x", "n": 2}', "k": "n"}, "2", "—"),
    # Trino's cast of a JSON number to varchar is 2.5E0: the property filters compared that text
    ("a fractional number property as text", PROP, {"j": '{"n": 2.5}', "k": "n"}, "2.5", "—"),
    ("a boolean property as text", PROP, {"j": '{"b": true}', "k": "b"}, "true", "—"),
    ("a null property is null", PROP, {"j": '{"z": null}', "k": "z"}, None, "—"),
    ("a missing property is null", PROP, {"j": '{"z": 1}', "k": "y"}, None, "—"),
    # one_of(): `in (select ...)`, on PostgreSQL `= any(array(select ...))` (warehouse._one_of); null as `in` gives it
    ("one_of a listed value", f"one_of(cast(:v as varchar), {LISTED})", {"v": "b"}, True, "—"),
    ("one_of an unlisted value", f"one_of(cast(:v as varchar), {LISTED})", {"v": "c"}, False, "—"),
    ("one_of an unlisted value, a null listed", f"one_of(cast(:v as varchar), {LISTED_NULL})", {"v": "c"}, None, "—"),
    ("one_of a listed value, a null listed", f"one_of(cast(:v as varchar), {LISTED_NULL})", {"v": "a"}, True, "—"),
]

AGGREGATES = [
    # exact percentiles, interpolated between order statistics (Trino has only approx_percentile)
    ("median of 1, 2, 4, 10", "median(x)", [1, 2, 4, 10], 3.0),
    ("quantile_cont 0.9", "quantile_cont(x, 0.9)", [1, 2, 4, 10], 8.2),
    ("percentile_cont 0.25 within group", "percentile_cont(0.25) within group (order by x)", [1, 2, 4, 10], 1.75),
    ("median ignores nulls", "median(x)", [None, 5, 1], 3.0),
    ("median of one value", "median(x)", [7], 7.0),
]


def _rows(values: list) -> str:
    return " union all ".join(f"select cast({'null' if v is None else v} as double) as x" for v in values)


@pytest.fixture
def warehouse(make_project, engine):
    wh = make_project(engine).warehouse()
    yield wh
    wh.dispose()


def test_silent_differences_mean_the_same_on_every_engine(warehouse):
    wrong = []
    with warehouse.begin() as conn:
        for name, expression, params, expected, _ in CASES:
            got = warehouse.scalar(conn, f"select {expression} as v", params)
            if isinstance(expected, float):
                ok = got is not None and abs(float(got) - expected) < 1e-9
            elif isinstance(expected, dt.datetime):
                ok = isinstance(got, dt.datetime) and got.replace(tzinfo=None) == expected
            elif isinstance(expected, bool):
                ok = isinstance(got, bool) and got == expected
            elif isinstance(expected, int):  # any numeric type (PostgreSQL's extract() is numeric)
                ok = got is not None and not isinstance(got, dt.date | str | bool) and got == expected
            else:  # a date must be a date (not a timestamp), text must be text, null null
                ok = type(got) is type(expected) and got == expected
            if not ok:
                wrong.append(f"{name}: {expression} gave {got!r} ({type(got).__name__}), expected {expected!r}")
        for name, aggregate, values, expected in AGGREGATES:
            got = warehouse.scalar(conn, f"select {aggregate} as v from ({_rows(values)}) as t")
            if got is None or abs(float(got) - expected) > 1e-9:
                wrong.append(f"{name}: {aggregate} over {values} gave {got!r}, expected {expected}")
    assert not wrong, "\n".join(wrong)


# Texts around the limits of a property read as a number (macros/filters.sql as_number): 200 digits before and after
# the point, an exponent of 1-2 digits; the reference is tests/reference/segments.py's NUMBER.
NUMBER_TEXTS = [
    "0", "-7", "2.50", "1e5", "-1.5E-09", "1.", ".5", "1e", "1e100", "+1", "1,5", " 1", "1 ", "--1", "1.2.3", "0x10",
    "9" * 200, "9" * 201, "-" + "9" * 200, "1." + "9" * 200, "1." + "9" * 201, "9" * 200 + "." + "9" * 200 + "e99",
    "9" * 201 + ".5", "5." + "9" * 201 + "e1", "9" * 200 + "." + "9" * 201, "12" * 150,
]


def test_a_property_is_a_number_up_to_its_digit_limits_on_every_engine(warehouse):
    from cohortflow.models import render_template
    from tests.reference.segments import NUMBER

    expression = render_template("{% import 'macros/filters.sql' as f %}{{ f.as_number('cast(:t as varchar)') }}", "test")
    wrong = []
    with warehouse.begin() as conn:
        for text in NUMBER_TEXTS:
            got = warehouse.scalar(conn, f"select {expression} as v", {"t": text})
            want = float(text) if NUMBER.fullmatch(text) else None
            if got != want:
                wrong.append(f"{text[:20]}... ({len(text)} characters): {got!r}, expected {want!r}")
    assert not wrong, "\n".join(wrong)
    # both sides of every limit are among the texts
    assert sum(NUMBER.fullmatch(t) is not None for t in NUMBER_TEXTS) >= 8 and sum(len(t) > 200 for t in NUMBER_TEXTS) >= 8


def test_generate_series_keeps_its_column_name(warehouse):
    sql = (
        "select cast(day as date) as d from generate_series(cast(:a as date), cast(:b as date), interval 1 day) as days(day) "
        "order by d"
    )
    with warehouse.begin() as conn:
        got = [r[0] for r in warehouse.execute(conn, sql, {"a": SUNDAY, "b": dt.date(2026, 11, 3)}).fetchall()]
    assert got == [SUNDAY, MONDAY, dt.date(2026, 11, 3)]


def test_lead_over_a_named_window_with_a_frame(warehouse):
    sql = (
        "select x, lead(x) over w as nxt, max(x) over w as running from (select 1 as x union all select 2 union all select 3) as t "
        "window w as (order by x rows between unbounded preceding and current row) order by x"
    )
    with warehouse.begin() as conn:
        got = [tuple(r) for r in warehouse.execute(conn, sql).fetchall()]
    assert got == [(1, 2, 1), (2, 3, 2), (3, None, 3)]


REWRITTEN = [c for c in CASES if c[4] not in ("—", "3.5", "1")]


@pytest.mark.parametrize(("name", "expression", "params", "expected", "trino_without"), REWRITTEN, ids=[c[0] for c in REWRITTEN])
def test_each_case_that_plain_translation_gets_wrong_is_rewritten_for_trino(name, expression, params, expected, trino_without):
    """sqlglot's own translation differs from the rendered Trino SQL for each case it gets wrong (``trino_without``)."""
    plain = sqlglot.transpile(f"select {expression} as v", read="duckdb", write="trino")[0]
    ours = render(f"select {expression} as v", "trino", pretty=False)
    assert _canon(ours) != _canon(plain), f"{name}: not rewritten: {ours}"


def _canon(sql: str) -> str:
    return re.sub(r"[:?$]\w*|\s", "", sql).lower()


def test_types_are_inferred_from_the_tables_a_statement_names_as_from_the_whole_schema():
    """The Trino rewrites infer types from a schema of the tables the statement names only (warehouse._annotate):
    on every model's SQL that gives the same qualified SQL and the same type on every node as the whole schema."""
    from sqlglot import exp

    from cohortflow.models import load_models
    from cohortflow.warehouse import SOURCE_DIALECT, _annotate, _annotate_with, _known_schema

    def types(tree: exp.Expression) -> list[str | None]:
        return [n.type.sql(SOURCE_DIALECT) if n.type else None for n in tree.walk()]

    compared = typed = 0
    for model in load_models().values():
        try:
            named = sqlglot.parse_one(model.sql, read=SOURCE_DIALECT)
        except sqlglot.errors.ParseError:
            continue  # a template, rendered per night
        whole = named.copy()
        _annotate(named)
        _annotate_with(whole, _known_schema())
        assert named.sql(SOURCE_DIALECT) == whole.sql(SOURCE_DIALECT), model.name
        assert types(named) == types(whole), model.name
        compared += 1
        typed += sum(1 for n in named.find_all(exp.Column) if n.type and not n.type.is_type(exp.DataType.Type.UNKNOWN))
    assert compared >= 10 and typed > 100, (compared, typed)


def test_a_models_scratch_tables_are_worked_out_once_per_process(monkeypatch):
    """Every build of a model on Trino asks for its scratch tables (warehouse.trino_scratch_tables); the type
    inference behind them runs on the first build only, and every build gets the same tables in a list of its own,
    with their column types known to the rewrites of the statements that read them."""
    import cohortflow.warehouse as warehouse
    from cohortflow.models import load_models

    model = load_models()["funnel_user_steps"]
    prefix = "models.scratch_cache_test"
    warehouse._trino_scratch_tables.cache_clear()
    inferred = []
    real = warehouse._annotate
    monkeypatch.setattr(warehouse, "_annotate", lambda tree: (inferred.append(tree), real(tree))[1])
    first = warehouse.trino_scratch_tables(model.sql, model.sql_for("trino"), prefix)
    after_first = len(inferred)
    second = warehouse.trino_scratch_tables(model.sql, model.sql_for("trino"), prefix)
    assert after_first > 0 and len(inferred) == after_first
    assert first == second and first[1] is not second[1] and first[1]
    for table, _query in first[1]:
        schema, name = table.split(".")
        assert warehouse._known_schema()[schema][name], table

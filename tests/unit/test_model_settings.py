"""Per-model PostgreSQL settings: only planner settings on an allow-list, applied for the build's transaction."""

import pytest

from cohortflow.models import POSTGRES_SETTINGS, _postgres_settings, load_models


def test_settings_are_normalised_to_text():
    assert _postgres_settings("m", {"enable_nestloop": False, "work_mem": "256MB"}) == (
        ("enable_nestloop", "off"),
        ("work_mem", "256MB"),
    )
    assert _postgres_settings("m", None) == ()


@pytest.mark.parametrize("bad", [{"search_path": "raw"}, {"role": "postgres"}, ["enable_nestloop"]])
def test_other_settings_are_refused(bad):
    with pytest.raises(ValueError, match="model m: postgres_settings"):
        _postgres_settings("m", bad)


@pytest.mark.parametrize(
    ("model", "wanted"),
    [
        # (Nested loops, merge joins and sorts of the step events, each planned on estimates of a row or so.)
        ("funnel_user_steps", {"enable_nestloop": "off", "enable_mergejoin": "off", "enable_sort": "off"}),
        # (Once meta.def_retention is analysed, PostgreSQL planned this model's joins as nested loops: 229 s for 2 s.)
        ("retention_user_cohorts", {"enable_nestloop": "off", "enable_sort": "off"}),
        ("frequency_retention", {"enable_sort": "off"}),
        # (A merge join on user_id alone, the session's first number left to its filter: 22.3M pairs thrown away.)
        ("session_events", {"enable_mergejoin": "off"}),
        ("segment_membership_daily", {"enable_sort": "off"}),
    ],
)
def test_the_models_that_plan_badly_on_their_estimates_turn_those_plans_off(model, wanted):
    settings = dict(load_models()[model].postgres_settings)
    assert settings == wanted
    assert set(settings) <= POSTGRES_SETTINGS


def test_a_build_sets_them_in_its_own_transaction(make_project, engine):
    """On PostgreSQL the funnel build runs with nested loops, merge joins, sorts and JIT off, and the two models
    without settings of their own built beside it with JIT off only; the settings are transaction-local, so the
    connection is back to the server defaults afterwards."""
    import datetime as dt

    import sqlalchemy as sa

    from cohortflow.models import build_models

    project = make_project(engine)
    cfg, wh = project.config(), project.warehouse()
    seen: list[tuple[str, dict]] = []
    sa.event.listen(wh.engine, "before_cursor_execute", lambda conn, cur, stmt, params, ctx, many: seen.append((stmt, params)))
    try:
        wh.bootstrap()
        day = dt.date(2026, 3, 6)
        build_models(wh, cfg, day, day, exact_range=True, only={"funnel_conversion_daily", "active_users_daily"})
        with wh.begin() as conn:
            shown = ("enable_nestloop", "enable_mergejoin", "enable_sort", "jit")
            after = {k: conn.execute(sa.text(f"show {k}")).scalar() for k in shown} if engine == "postgres" else {}
    finally:
        wh.dispose()

    def settings_before(table: str) -> dict:
        applied, current = {}, {}
        for stmt, params in seen:
            if "set_config" in stmt:
                current[params["name"]] = params["value"]
            elif stmt.lstrip().lower().startswith(f"insert into models.{table}"):
                applied = dict(current)
            elif stmt.lstrip().lower().startswith("select pg_advisory_xact_lock"):
                current = {}
        return applied

    if engine == "postgres":
        funnel = {"jit": "off", "enable_nestloop": "off", "enable_mergejoin": "off", "enable_sort": "off"}
        assert settings_before("funnel_user_steps") == funnel
        assert settings_before("funnel_conversion_daily") == {"jit": "off"}
        assert settings_before("active_users_daily") == {"jit": "off"}
        assert after == {"enable_nestloop": "on", "enable_mergejoin": "on", "enable_sort": "on", "jit": "on"}
    else:
        assert not any("set_config" in stmt for stmt, _ in seen)

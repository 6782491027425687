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


def test_the_funnel_model_turns_nested_loops_and_merge_joins_off():
    settings = dict(load_models()["funnel_user_steps"].postgres_settings)
    assert settings == {"enable_nestloop": "off", "enable_mergejoin": "off"}
    assert set(settings) <= POSTGRES_SETTINGS


def test_the_retention_model_turns_nested_loops_off():
    """(Once meta.def_retention is analysed, PostgreSQL planned this model's joins as nested loops: 229 s for 2 s.)"""
    assert dict(load_models()["retention_user_cohorts"].postgres_settings) == {"enable_nestloop": "off"}


def test_a_build_sets_them_in_its_own_transaction(make_project, engine):
    """On PostgreSQL the funnel build runs with nested loops, merge joins and JIT off; other models only with JIT off;
    the settings are transaction-local, so the connection is back to the server defaults afterwards."""
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
            shown = ("enable_nestloop", "enable_mergejoin", "jit")
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
        funnel = {"jit": "off", "enable_nestloop": "off", "enable_mergejoin": "off"}
        assert settings_before("funnel_user_steps") == funnel
        assert settings_before("funnel_conversion_daily") == {"jit": "off"}
        assert settings_before("active_users_daily") == {"jit": "off"}
        assert after == {"enable_nestloop": "on", "enable_mergejoin": "on", "jit": "on"}
    else:
        assert not any("set_config" in stmt for stmt, _ in seen)

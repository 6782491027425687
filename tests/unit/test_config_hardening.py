"""Hostile config is refused before any data is touched, by key, without echoing the value; every name the config
accepts works in the tracking-plan expectation on every engine."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.config import Config, ConfigError, load_config
from tests.conftest import write_config

SECRET = "Pa5s/w0rd@x?y"


def _funnel(event_b: str = "b", prop: str = "k", value: str = "v") -> dict:
    return {"funnels": [{"name": "f", "steps": [{"event": "a"}, {"event": event_b, "where": [{"property": prop, "value": value}]}]}]}


@pytest.mark.parametrize(
    ("overrides", "key", "why"),
    [
        ({"tracking_plan": {"events": [{"name": "pay\u202eevil"}]}}, "tracking_plan.events.0.name", "U+202E"),
        ({"analyses": _funnel(event_b="b\u200b")}, "analyses.funnels.0.steps.1.event", "U+200B"),
        ({"analyses": _funnel(prop="k\x00")}, "analyses.funnels.0.steps.1.where.0.property", "U+0000"),
        ({"analyses": _funnel(value="v\u2066")}, "analyses.funnels.0.steps.1.where.0.value", "U+2066"),
        ({"analyses": _funnel(value="v\u00a0")}, "analyses.funnels.0.steps.1.where.0.value", "U+00A0"),
        ({"analyses": _funnel(value="line\nbreak")}, "analyses.funnels.0.steps.1.where.0.value", "U+000A"),
        ({"sources": [{"name": "app", "format": "ark", "path": "ar*"}]}, "sources.0.path", "wildcard"),
        ({"landing_root": "logs/[0-9]"}, "landing_root", "wildcard"),
        ({"tracking_plan": {"events": [{"name": "x" * 300}]}}, "tracking_plan.events.0.name", "max_event_name_length"),
        ({"analyses": _funnel(value="v" * 5000)}, "analyses.funnels.0.steps.1.where.0.value", "at most 4096"),
        ({"warehouse": {"url": f"postgresql+psycopg://user@host/db?password={SECRET}"}}, "warehouse.url", "password"),
        ({"warehouse": {"url": f"postgresql+psycopg://user@host/db?sslmode=require&PassWord={SECRET}"}}, "warehouse.url", "password"),
        ({"warehouse": {"url": f"postgresql+psycopg://user:{SECRET}@host/db"}}, "warehouse.url", "password"),
        ({"warehouse": {"url": "postgresql+psycopg://user:pa%2Fss@host/db"}}, "warehouse.url", "password"),
        ({"dolphinscheduler": {"api_url": f"http://admin:{SECRET}@127.0.0.1:12345/dolphinscheduler"}}, "dolphinscheduler.api_url", "password"),
    ],
)
def test_hostile_values_are_refused_by_key_without_the_value(tmp_path, overrides, key, why):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, **overrides), environ={})
    text = str(err.value)
    assert f"{key}:" in text and why in text, text
    assert SECRET not in text and "evil" not in text


def test_a_password_in_the_url_from_the_environment_is_refused(tmp_path):
    env = {"COHORTFLOW_WAREHOUSE__URL": f"postgresql+psycopg://u:{SECRET}@h/db"}
    with pytest.raises(ConfigError, match="warehouse.url") as err:
        load_config(write_config(tmp_path), environ=env)
    assert SECRET not in str(err.value)


def test_printable_names_of_any_script_are_accepted(tmp_path):
    names = ["$pageview", "o'brien", "100%", "a:b", "back\\slash\\u", "{x}", "名前 と スペース", "%(x)s", "quote\"d", "émoji 🎉"]
    cfg = load_config(
        write_config(tmp_path, tracking_plan={"events": [{"name": n, "description": "two\nlines\tand a tab"} for n in names]}),
        environ={},
    )
    assert cfg.tracking_plan.event_names == names


def test_a_yaml_error_names_the_line_not_its_text(tmp_path):
    path = tmp_path / "cohortflow.yml"
    path.write_text(f"project: x\nwarehouse:\n  url: postgresql://u@h/db\n  note: '{SECRET}\n  : x: - [\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "not valid YAML at line" in str(err.value) and SECRET not in str(err.value)
    path.write_text(f"project: x\nsources: *{SECRET.replace('/', '')}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "undefined alias" in str(err.value) and SECRET.replace("/", "") not in str(err.value)
    path.write_bytes(b"project: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(path, environ={})


def test_check_config_never_prints_a_password_it_refuses(tmp_path):
    cfg = write_config(tmp_path)
    for url in (f"postgresql+psycopg://u@h/db?password={SECRET}", f"postgresql+psycopg://u:{SECRET}@h/db"):
        result = CliRunner().invoke(main, ["check-config", "--config", str(cfg)], env={"COHORTFLOW_WAREHOUSE__URL": url})
        assert result.exit_code == 2, result.output
        assert SECRET not in result.output and "warehouse.url" in result.output


def test_the_privacy_key_comes_from_the_environment_only(tmp_path):
    with pytest.raises(ConfigError, match="COHORTFLOW_PRIVACY__KEY"):
        load_config(write_config(tmp_path, privacy={"pseudonymize_ids": True, "key": "k" * 20}), environ={})
    cfg = load_config(
        write_config(tmp_path, privacy={"pseudonymize_ids": True}), environ={"COHORTFLOW_PRIVACY__KEY": "yes-" + "k" * 20}
    )
    assert cfg.privacy.key == "yes-" + "k" * 20 and "kkkk" not in repr(cfg)


def _day_with_events(project, names: list[str]) -> dt.date:
    d = dt.date(2026, 11, 1)
    t0 = int(dt.datetime(2026, 11, 1, 8, tzinfo=dt.UTC).timestamp() * 1000)
    folder = project.landing / d.isoformat()
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text(
        "".join(json.dumps({"xwho": "u", "xwhat": n, "xwhen": t0 + i, "xcontext": {}}) + "\n" for i, n in enumerate(names)),
        encoding="utf-8",
    )
    return d


@pytest.mark.parametrize(
    "plan",
    [
        # Names the config accepts: quotes, %, :, backslashes, braces, any script.
        ["o'brien", "100%", "a:b", "back\\slash\\u", "{x}", "名前", "%(x)s", ":x", "quote\"d"],
        # Names the config refuses, given to the check directly: the check itself must still work (GX's unexpected-index
        # query re.sub()s each value's repr, and '\u200b' / '\xa0' made it raise on the SQL data source).
        ["zero\u200bwidth", "no\u00a0break"],
    ],
)
def test_the_tracking_plan_check_works_for_any_name_on_every_engine(make_project, engine, plan):
    from cohortflow.ingest import load_day
    from cohortflow.validate import validate_day

    project = make_project(engine)
    d = _day_with_events(project, ["$unplanned", *plan])
    base = project.config()
    cfg = Config.model_validate({**base.model_dump(), "base_dir": base.base_dir,
                                 "tracking_plan": {"events": [{"name": n} for n in plan]},
                                 "warehouse": {"url": base.warehouse.url, "password": base.warehouse.password}})
    wh = project.warehouse()
    try:
        wh.bootstrap()
        load_day(wh, cfg, d, "r")
        outcome = validate_day(wh, cfg, d, "r")
    finally:
        wh.dispose()
    in_set = next(r for r in outcome.results if r.expectation == "expect_column_values_to_be_in_set" and r.column == "event_name")
    assert not in_set.success and in_set.severity == "warning"
    assert in_set.observed.startswith(f"1 of {len(plan) + 1} rows unexpected"), in_set.observed
    assert "'$unplanned'" in in_set.observed

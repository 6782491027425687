"""CLI conventions: --help describes every option and lists models and tasks; exit 2 for every usage or
configuration error; timestamped log lines on stderr (text or JSON, optionally into a file, --quiet); plurals."""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from cohortflow.cli import main, model_names, task_names
from cohortflow.progress import Meter, eta, plural, rate
from tests.conftest import write_config

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} ")


def _invoke(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def test_every_option_of_every_command_is_described():
    assert main.params and all(p.help for p in main.params if isinstance(p, click.Option) and not p.hidden)
    for name, command in main.commands.items():
        assert command.help, f"{name} has no description"
        for p in command.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.help, f"cohortflow {name} {p.opts[0]} has no help"
        result = _invoke(name, "--help")
        assert result.exit_code == 0
        for p in command.params:
            if isinstance(p, click.Option) and not p.hidden:
                assert p.opts[-1] in result.output


def test_help_lists_the_model_and_task_names():
    render = _invoke("render", "--help").output
    assert "Models:" in render
    for name in model_names():
        assert name in render
    assert {"active_users_daily", "funnel_conversion_daily", "stg_events"} <= set(model_names())
    task = _invoke("task", "--help").output
    assert "Tasks:" in task and all(t in task for t in task_names())
    # the stages, then (a task per model on a server) every model
    assert task_names()[:4] == ["ingest", "validate", "models", "publish"]
    assert set(task_names()[4:]) == set(model_names())


@pytest.mark.parametrize(
    "args",
    [
        ("run", "--date", "20261101", "--config", "{missing}"),
        ("run", "--date", "20261101", "--config", "{bad}"),
        ("run", "--date", "2026-13-01", "--config", "{cfg}"),
        ("run", "--config", "{cfg}"),
        ("run", "--date", "20261101", "--workflow", "nosuch", "--config", "{cfg}"),
        ("task", "nosuch", "--date", "20261101", "--config", "{cfg}"),
        ("render", "nosuch", "--date", "20261101", "--config", "{cfg}"),
        ("backfill", "--start", "20261105", "--end", "20261101", "--config", "{cfg}"),
        ("rebuild", "--start", "20261105", "--end", "20261101", "--config", "{cfg}"),
        ("backfill", "--start", "20261101", "--end", "20261102", "--parallelism", "2", "--config", "{cfg}"),
        ("grant-reader", "--config", "{cfg}"),
        ("grant-reader", "--role", "Bad-Role", "--config", "{cfg}"),
        ("report", "--date", "20261101", "--config", "{cfg}"),
        ("status", "--limit", "0", "--config", "{cfg}"),
        ("demo", "--users", "0", "--dir", "{tmp}/d"),
        ("demo", "--dir", "{nonempty}"),
        ("--log-format", "xml", "check-config", "--config", "{cfg}"),
        ("check-config", "--log-file", "{tmp}", "--config", "{cfg}"),
        ("nosuchcommand",),
    ],
)
def test_usage_and_configuration_errors_exit_2(tmp_path, args):
    cfg = write_config(tmp_path / "ok")
    bad = write_config(tmp_path / "bad", timezone="Nowhere/City")
    nonempty = tmp_path / "full"
    nonempty.mkdir()
    (nonempty / "x").write_text("x")
    values = {"cfg": cfg, "bad": bad, "missing": tmp_path / "none.yml", "tmp": tmp_path, "nonempty": nonempty}
    result = _invoke(*(a.format(**values) for a in args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_log_lines_are_timestamped_on_stderr_and_results_on_stdout(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "landing" / "ark" / "2026-11-01").mkdir(parents=True)
    (tmp_path / "landing" / "ark" / "2026-11-01" / "part-0.jsonl").write_text(
        '{"appid": "a", "xwho": "u1", "xwhat": "app_start", "xwhen": 1793491200000}\n', encoding="utf-8"
    )
    result = _invoke("task", "ingest", "--date", "20261101", "--config", str(cfg))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(STAMP.match(line) or line.startswith(" ") for line in lines), lines
    assert "1 file," in result.stderr and "1 line in" in result.stderr and "lines/s" in result.stderr
    assert not re.search(r"\b1 (rows|files|lines|models|tables|dates|expectations)\b", result.stderr)
    rendered = _invoke("render", "active_users_daily", "--date", "20261101", "--config", str(cfg))
    assert rendered.stdout.startswith("-- model active_users_daily") and rendered.stderr == ""


def test_json_log_format_quiet_and_log_file(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "landing" / "ark" / "2026-11-01").mkdir(parents=True)
    log_file = tmp_path / "logs" / "cohortflow.log"
    result = _invoke("--log-format", "json", "run", "--date", "20261101", "--config", str(cfg), "--log-file", str(log_file))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert records and all(set(r) == {"time", "level", "message"} for r in records)
    assert re.match(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2}$", records[0]["time"])
    assert any(r["message"].startswith("run ") and r["message"].endswith("succeeded") for r in records)
    assert [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()] == records
    quiet = _invoke("run", "--date", "20261101", "--config", str(cfg), "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    failed = _invoke("-q", "run", "--date", "20261101", "--restart", "--config", str(cfg), env={"COHORTFLOW_FAIL_TASK": "models"})
    assert failed.exit_code == 1
    assert failed.stderr.splitlines()[0].split(" ", 2)[2].startswith("error: run "), failed.stderr
    env = _invoke("check-config", "--config", str(cfg), env={"COHORTFLOW_LOG_FORMAT": "json"})
    assert env.stdout.startswith("config ok")


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path, monkeypatch):
    cfg = write_config(tmp_path)
    import cohortflow.status

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(cohortflow.status, "local_status", boom)
    result = _invoke("status", "--config", str(cfg))
    assert result.exit_code == 1
    assert "error: RuntimeError: disk on fire" in result.stderr and "second line" not in result.stderr
    assert "Traceback" not in result.output


def test_plurals_and_rates():
    assert [plural(n, "row") for n in (0, 1, 2, 1234)] == ["0 rows", "1 row", "2 rows", "1,234 rows"]
    assert plural(1, "entry") == "1 entry" and plural(3, "entry") == "3 entries"
    assert rate(15000, 1.0, "lines") == "15,000 lines/s" and rate(1, 30, "dates") == "2.0 dates/min"
    assert eta(0, 4, 0.0) == "0/4 dates" and eta(2, 4, 60.0).startswith("2/4 dates, 2.0 dates/min, about 1 min 00 s left")
    said = []
    meter = Meter(said.append, "read f", "line", every=0.0)
    for _ in range(4096):
        meter.add()
    assert said and "4,096 lines so far" in said[0]
    assert meter.done().startswith("read f: 4,096 lines in ")

"""Every declared workflow loads without a server and is well formed."""

from __future__ import annotations

import click
import pytest

from cohortflow.cli import main
from cohortflow.dag import BIZ_DATE, declaring_modules, load_workflows
from cohortflow.runner import STAGES

WORKFLOWS = load_workflows()


def _declaring_module(wf):
    return declaring_modules()[wf.name]


def test_at_least_the_nightly_workflow_is_declared():
    assert "cohortflow_nightly" in WORKFLOWS


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_workflow_is_well_formed(name):
    wf = WORKFLOWS[name]
    module = _declaring_module(wf)
    assert module.__doc__ and "──" in module.__doc__, "the module docstring draws the DAG"
    assert wf.description
    fields = wf.schedule.split()
    assert len(fields) == 7, "a 7-field Quartz cron"
    names = [t.name for t in wf.tasks]
    assert len(names) == len(set(names))
    ordered = [t.name for t in wf.ordered()]
    for t in wf.tasks:
        for up in t.upstream:
            assert ordered.index(up) < ordered.index(t.name)
        assert t.retries >= 1
        assert t.timeout_minutes > 0 and t.timeout_notify_strategy in {"WARN", "FAILED", "WARNFAILED"}
        assert t.description


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_every_task_command_is_a_real_cli_verb(name):
    wf = WORKFLOWS[name]
    for t in wf.tasks:
        args = t.command_args(BIZ_DATE)
        ctx = click.Context(main)
        cmd = main.get_command(ctx, args[0])
        assert cmd is not None, f"{args[0]} is not a cohortflow verb"
        assert args[1] in STAGES
        # The CLI parses the arguments (with a real date in place of the DolphinScheduler parameter).
        real = [a if a != BIZ_DATE else "20261101" for a in args[1:]]
        with cmd.make_context(args[0], list(real), resilient_parsing=False) as sub:
            assert str(sub.params["business_date"]) == "2026-11-01"


def test_ordering_rejects_cycles_and_unknown_upstreams():
    from cohortflow.dag import Task, Workflow

    cyc = Workflow("c", "d", "0 0 1 * * ? *", (Task("a", "x", ("b",)), Task("b", "x", ("a",))))
    with pytest.raises(ValueError, match="cycle"):
        cyc.ordered()
    unk = Workflow("u", "d", "0 0 1 * * ? *", (Task("a", "x", ("zz",)),))
    with pytest.raises(ValueError, match="unknown upstream"):
        unk.ordered()

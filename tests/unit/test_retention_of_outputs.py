"""Pruning of snapshots and reports by their configured retention; ``latest`` is never pruned."""

from __future__ import annotations

import datetime as dt

import pytest

from cohortflow import snapshots
from cohortflow.config import ConfigError, load_config
from cohortflow.report import prune_reports, report_dates, report_path
from tests.conftest import write_config

D = dt.date(2026, 11, 30)


def _snapshot(cfg, d):
    folder = snapshots.snapshot_dir(cfg, d)
    folder.mkdir(parents=True)
    (folder / snapshots.MANIFEST).write_text("{}", encoding="utf-8")


def test_old_snapshots_are_pruned_but_never_latest(tmp_path):
    cfg = load_config(write_config(tmp_path, snapshots={"keep_days": 3}), environ={})
    dates = [D - dt.timedelta(days=k) for k in range(8)]
    for d in dates:
        _snapshot(cfg, d)
    snapshots.move_latest(cfg, dates[-1])  # an old night is the latest that succeeded
    removed = {p.name for p in snapshots.prune_snapshots(cfg)}
    assert removed == {d.isoformat() for d in dates[4:-1]}
    left = sorted(snapshots.dated_folders(snapshots.snapshots_root(cfg)))
    assert left == sorted([*dates[:4], dates[-1]])
    assert snapshots.latest_date(cfg) == dates[-1]


def test_latest_moves_only_to_a_complete_snapshot(tmp_path):
    cfg = load_config(write_config(tmp_path), environ={})
    snapshots.snapshot_dir(cfg, D).mkdir(parents=True)  # no manifest: not a complete snapshot
    with pytest.raises(snapshots.SnapshotError):
        snapshots.move_latest(cfg, D)
    assert snapshots.latest_date(cfg) is None


def test_old_reports_are_pruned(tmp_path):
    cfg = load_config(write_config(tmp_path, report={"keep_days": 2}), environ={})
    for k in range(5):
        path = report_path(cfg, D - dt.timedelta(days=k))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("<html></html>", encoding="utf-8")
    assert len(prune_reports(cfg)) == 2
    assert report_dates(cfg) == [D - dt.timedelta(days=k) for k in range(3)]


@pytest.mark.parametrize("key", [{"snapshots": {"keep_days": -1}}, {"report": {"keep_days": "a"}}, {"snapshots": {"keep": 3}}])
def test_retention_settings_are_validated(tmp_path, key):
    with pytest.raises(ConfigError):
        load_config(write_config(tmp_path, **key), environ={})

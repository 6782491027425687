"""Pseudonymisation at ingest: no raw id is stored, and every published table equals the run without it."""

from __future__ import annotations

import datetime as dt
import json

from cohortflow.dag import load_workflows
from cohortflow.demo import DemoSpec, generate
from cohortflow.models import published_models
from cohortflow.runner import run_workflow
from tests.conftest import short_analyses

START = dt.date(2026, 11, 1)
DAYS = 7
KEY = "k3y-from-the-environment-0123456789"


def _published(wh) -> dict[str, list[tuple]]:
    out = {}
    with wh.begin() as conn:
        for model in published_models():
            cols = ", ".join(c.name for c in model.columns)
            rows = wh.execute(conn, f"select {cols} from reports.{model.name}").fetchall()
            out[model.name] = sorted((tuple(round(v, 9) if isinstance(v, float) else v for v in r) for r in rows), key=repr)
    return out


def _nights(project) -> tuple[dict, list[tuple]]:
    cfg, wh = project.config(), project.warehouse()
    try:
        for i in range(DAYS):
            run_workflow(cfg, wh, load_workflows()["cohortflow_nightly"], START + dt.timedelta(days=i), echo=lambda _m: None)
        with wh.begin() as conn:
            raw = wh.execute(
                conn, "select distinct_id, link_anonymous_id, link_login_id, event_id, properties from raw.events"
            ).fetchall()
            raw += wh.execute(conn, "select raw_line, detail, '', '', '' from raw.quarantine").fetchall()
        return _published(wh), raw
    finally:
        wh.dispose()


def test_pseudonymised_ids_give_the_same_tables_and_store_no_raw_id(make_project):
    spec = DemoSpec(users=100, days=DAYS, start_date=START, timezone="UTC", seed=12, fmt="posthog")
    sources = [{"name": "app", "format": "posthog", "path": "ph"}]
    plain = make_project("duckdb", name="plain", sources=sources, analyses=short_analyses())
    private = make_project(
        "duckdb", name="private", sources=sources, analyses=short_analyses(),
        privacy={"pseudonymize_ids": True, "drop_properties": ["email"], "drop_ip_properties": True},
    )
    private.environ = {"COHORTFLOW_PRIVACY__KEY": KEY}
    for p in (plain, private):
        generate(spec, p.root / "landing" / "ph")
        # A line with an e-mail address and IP addresses, and one that is quarantined.
        extra = p.root / "landing" / "ph" / START.isoformat() / "extra.jsonl"
        extra.write_text(
            json.dumps({"event": "app_start", "distinct_id": "anon-secret-7", "uuid": "x-1", "timestamp": f"{START}T08:00:00Z",
                        "properties": {"email": "a@b.example", "$ip": "10.1.2.3", "nested": {"addr": "2001:db8::1", "keep": "9.9"}}})
            + "\n" + json.dumps({"event": "app_start", "distinct_id": "anon-secret-8"}) + "\n",
            encoding="utf-8",
        )
    plain_tables, plain_raw = _nights(plain)
    private_tables, private_raw = _nights(private)
    for name, rows in plain_tables.items():
        assert rows, f"{name} is empty"
        assert private_tables[name] == rows, f"reports.{name} differs with pseudonymised ids"
    raw_ids = {r[0] for r in plain_raw if r[0] and not r[0].startswith("{")} | {"anon-secret-7", "anon-secret-8"}
    stored = " ".join(str(v) for row in private_raw for v in row)
    leaked = [i for i in raw_ids if len(i) > 3 and i in stored]
    assert not leaked, leaked[:5]
    assert all(r[0].startswith("p:") for r in private_raw if r[3])  # every loaded distinct id
    assert "a@b.example" not in stored and "10.1.2.3" not in stored and "2001:db8::1" not in stored
    assert '"keep":"9.9"' in stored.replace(" ", "")

"""A model's fingerprint (a build whose fingerprint differs from the stored one rebuilds the model whole) covers the
SQL of the views it reads: the staging views keep no state, so a change there must rebuild their readers."""

import dataclasses

from cohortflow import models
from cohortflow.config import load_config
from tests.conftest import write_config


def test_a_change_to_a_staging_view_changes_the_fingerprint_of_the_models_that_read_it(tmp_path, monkeypatch):
    cfg = load_config(write_config(tmp_path))
    real = models.load_models()
    tables = [name for name, m in real.items() if m.materialized != "view"]
    before = {name: models.fingerprint(real[name], cfg, {}, {}) for name in tables}

    identities = real["stg_identities"]
    changed = {**real, "stg_identities": dataclasses.replace(identities, sql=identities.sql.replace("ingest_line", "ingest_line desc"))}
    assert changed["stg_identities"].sql != identities.sql
    monkeypatch.setattr(models, "load_models", lambda: changed)
    after = {name: models.fingerprint(changed[name], cfg, {}, {}) for name in tables}

    # stg_events reads stg_identities: every model reading either view reads the identity map.
    readers = {name for name in tables if {"stg_events", "stg_identities"} & set(real[name].depends_on)}
    assert readers and readers != set(tables)
    assert {name for name in tables if after[name] != before[name]} == readers

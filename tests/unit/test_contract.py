"""The BI contract: one declaration per published table and column, the reference document generated from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.contract import REFERENCE_PATH, ContractError, published_tables, reference_markdown, table_from_yml
from cohortflow.models import load_models, published_models

ROOT = Path(__file__).resolve().parents[2]


def test_the_reference_document_is_generated_from_the_ymls():
    committed = (ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == reference_markdown(), (
        f"{REFERENCE_PATH} is out of date: run 'cohortflow reference --output {REFERENCE_PATH}'"
    )


def test_reference_check_fails_on_a_stale_document(tmp_path):
    stale = tmp_path / "reference.md"
    stale.write_text(reference_markdown().replace("Grain:", "Grain (old):", 1), encoding="utf-8")
    result = CliRunner().invoke(main, ["reference", "--check", "--output", str(stale)])
    assert result.exit_code == 1 and "out of date" in result.output
    fresh = tmp_path / "fresh.md"
    assert CliRunner().invoke(main, ["reference", "--output", str(fresh)]).exit_code == 0
    assert CliRunner().invoke(main, ["reference", "--check", "--output", str(fresh)]).exit_code == 0


def test_every_published_table_and_column_is_documented():
    tables = published_tables()
    assert set(tables) == {m.name for m in published_models()}
    doc = reference_markdown()
    for t in tables.values():
        assert t.grain and t.description
        assert f"## {t.name}\n" in doc
        for c in t.columns:
            assert c.description, f"{t.name}.{c.name}"
            assert f"| `{c.name}` | {c.type} |" in doc
            if c.type in ("bigint", "double"):
                assert c.unit, f"{t.name}.{c.name} has no unit"
            if c.type == "double":
                assert c.round == 6, f"{t.name}.{c.name}: doubles are published with 6 decimals"
        if any(c.name == "breakdown_value" for c in t.columns):
            assert t.rows and "'all'" in t.rows, f"{t.name} must say how its 'all' rows relate to the others"


def test_published_columns_follow_the_model_columns():
    models = load_models()
    for name, t in published_tables().items():
        model_cols = [c.name for c in models[name].columns]
        published = [c.name for c in t.columns if c.expr is None or c.name in model_cols]
        assert published == model_cols, f"{name}: the model's columns keep their order in reports"


def test_frequency_buckets_are_numbers_that_sort():
    t = published_tables()["frequency_retention"]
    assert t.column("frequency_bucket").type == "bigint"
    assert t.column("frequency_label").type == "varchar"
    assert t.column("is_capped").type == "boolean"
    names = [c.name for c in t.columns]
    assert names.index("frequency_label") == names.index("frequency_bucket") + 1


def test_rates_and_times_are_rounded_in_the_published_select():
    sql = published_tables()["retention_cohorts"].select_sql()
    assert "round(retention_rate, 6) as retention_rate" in sql
    assert "from models.retention_cohorts" in sql


def _spec(**changes):
    spec = {
        "description": "A table.",
        "grain": "one row per d",
        "columns": {
            "d": {"type": "date", "description": "A date."},
            "n": {"type": "bigint", "unit": "users", "description": "Users."},
        },
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"grain": None}, "grain"),
        ({"columns": {"n": {"type": "bigint", "description": "Users."}}}, "unit"),
        ({"columns": {"r": {"type": "double", "unit": "ratio 0-1", "description": "A rate."}}}, "round"),
        ({"columns": {"r": {"type": "double", "unit": "ratio 0-1", "round": 6}}}, "description"),
        ({"columns": {"breakdown_value": {"type": "varchar", "description": "v"}}}, "rows"),
        ({"published_columns": {"x": {"type": "varchar", "description": "x", "after": "d"}}}, "expr"),
        ({"published_columns": {"x": {"type": "varchar", "description": "x", "expr": "d", "after": "zz"}}}, "after"),
    ],
)
def test_an_incomplete_declaration_is_refused(change, message):
    with pytest.raises(ContractError, match=message):
        table_from_yml("t", _spec(**change))


def test_the_model_ymls_parse_with_the_contract_keys():
    for path in sorted((ROOT / "sql" / "models").glob("*.yml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if spec.get("publish"):
            table_from_yml(path.stem, spec)

"""The documented results schema (docs/results.md) is the one harness/schema.py (and so every
writer) uses."""

import re
from pathlib import Path

import pytest

from harness import results, schema

SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def documented_columns(table: str) -> list[str]:
    text = SCHEMA_DOC.read_text(encoding="utf-8")
    marker = f"<!-- schema:{table} -->"
    assert marker in text, f"{SCHEMA_DOC.name} lacks {marker}"
    block = text.split(marker, 1)[1].strip().split("\n\n", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", block, flags=re.MULTILINE)


@pytest.mark.parametrize(
    "table, keys",
    [("trials", schema.TRIAL_KEYS), ("metrics", schema.METRIC_KEYS), ("layers", schema.LAYER_KEYS)],
)
def test_the_docs_document_exactly_the_schema(table: str, keys: dict) -> None:
    assert documented_columns(table) == list(keys)


def test_writers_use_the_schema_columns() -> None:
    assert results.TRIALS_SCHEMA.names == list(schema.TRIAL_KEYS)
    assert results.METRICS_SCHEMA.names == ["trial_id", *schema.METRIC_KEYS]
    assert results.LAYERS_SCHEMA.names == ["trial_id", "iteration", *schema.LAYER_KEYS]


def test_statuses() -> None:
    assert schema.STATUSES == ("COMPLETED", "PRUNED", "FAILED", "DIVERGED")

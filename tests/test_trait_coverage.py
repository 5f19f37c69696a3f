"""Trait coverage per class: species with labels, the tables behind them, uncovered classes."""

from __future__ import annotations

import polars as pl

from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.curate.traits.coverage import class_coverage, coverage_summary


def _species() -> pl.DataFrame:
    rows = []
    spec = [
        ("Aves", {"trait_diet_fruit": (1, "avonet"),
                  "trait_activity_nocturnal": (0, "eltontraits")}),
        ("Aves", {}),
        ("Mammalia", {"trait_diet_fruit": (0, "eltontraits")}),
        ("Insecta", {}),
        ("Insecta", {}),
    ]  # fmt: skip
    for i, (cls, labels) in enumerate(spec):
        row = {"species_id": i, "class": cls}
        for col in TRAIT_COLUMNS:
            value, table = labels.get(col, (None, None))
            row[col] = value
            row[col.replace("trait_", "provenance_", 1)] = table
        rows.append(row)
    schema = {"species_id": pl.Int64, "class": pl.String}
    schema |= {c: pl.Int8 for c in TRAIT_COLUMNS}
    schema |= {c.replace("trait_", "provenance_", 1): pl.String for c in TRAIT_COLUMNS}
    return pl.DataFrame(rows, schema=schema)


def test_per_class_counts_and_tables() -> None:
    per_class = {r["class"]: r for r in class_coverage(_species())}
    assert per_class["Aves"] == {"class": "Aves", "species": 2, "with_labels": 1, "share": 0.5,
                                 "tables": ["avonet", "eltontraits"]}  # fmt: skip
    assert per_class["Mammalia"]["with_labels"] == 1  # a known 0 is a label too
    assert per_class["Mammalia"]["tables"] == ["eltontraits"]
    assert per_class["Insecta"] == {"class": "Insecta", "species": 2, "with_labels": 0,
                                    "share": 0.0, "tables": []}  # fmt: skip


def test_summary_names_the_uncovered_classes() -> None:
    summary = coverage_summary(_species())
    assert summary["uncovered_classes"] == ["Insecta"]
    assert summary["no_public_table"] == ["Insecta", "Reptilia"]
    assert summary["public_tables_cover"] == ["Amphibia", "Aves", "Mammalia"]
    assert coverage_summary(_species().clear())["per_class"] == []

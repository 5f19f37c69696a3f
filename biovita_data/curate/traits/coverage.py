"""Trait coverage per class: how many species have labels, from which tables, and which classes
no table covers."""

from __future__ import annotations

import polars as pl

from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.curate.traits.releases import COVERED_CLASSES, UNCOVERED_SCOPE

PROVENANCE = [c.replace("trait_", "provenance_", 1) for c in TRAIT_COLUMNS]


def class_coverage(species: pl.DataFrame) -> list[dict]:
    """One row per class: species, species with any label (and the share), the tables used."""
    if species.is_empty():
        return []
    labelled = pl.any_horizontal([pl.col(c).is_not_null() for c in TRAIT_COLUMNS])
    tables = pl.concat_list([pl.col(c) for c in PROVENANCE]).list.drop_nulls()
    per_class = (
        species.with_columns(_any=labelled, _tables=tables)
        .group_by(pl.col("class").fill_null("(no class)"))
        .agg(
            pl.len().alias("species"),
            pl.col("_any").sum().alias("with_labels"),
            pl.col("_tables")
            .list.explode(keep_nulls=False, empty_as_null=False)
            .drop_nulls()
            .unique()
            .sort()
            .alias("tables"),
        )
        .sort("class")
    )
    return [
        {**row, "share": round(row["with_labels"] / row["species"], 4) if row["species"] else 0.0}
        for row in per_class.to_dicts()
    ]


def coverage_summary(species: pl.DataFrame) -> dict:
    """Per-class coverage, the classes no table covered in this build, and the classes no public
    table covers (insects and reptiles today, plus any other corpus class outside them)."""
    per_class = class_coverage(species)
    return {
        "per_class": per_class,
        "uncovered_classes": [r["class"] for r in per_class if r["with_labels"] == 0],
        "no_public_table": sorted(
            {r["class"] for r in per_class if r["class"] not in COVERED_CLASSES}
            | set(UNCOVERED_SCOPE)
        ),
        "public_tables_cover": list(COVERED_CLASSES),
    }

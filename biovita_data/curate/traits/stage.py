"""The `traits` stage: fill species.parquet's labels, write coverage, update unmatched names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, SPECIES, UNMATCHED
from biovita_data.core.tables import read_table, replace_failures, write_json_atomic, write_table
from biovita_data.curate.traits.combine import Resolver, TraitResult, attach_traits
from biovita_data.curate.traits.coverage import coverage_summary
from biovita_data.curate.traits.readers import KINDS

UNMATCHED_ORDER = ("modality", "source", "name", "normalized", "reason", "closest", "count")


def coverage_path(out: Path) -> Path:
    """OUT/manifests/traits_coverage.json."""
    return layout.manifests_dir(out) / "traits_coverage.json"


def run_traits(out: Path, tables: Sequence[tuple[str, Path]], resolve: Resolver) -> TraitResult:
    """Run the stage on OUT: species labels, coverage JSON and the traits rows of unmatched."""
    species_file = layout.species_path(out)
    if not species_file.exists():
        raise ValueError(f"{species_file} does not exist: run `biovita-data align` first")
    species = pl.from_arrow(read_table(species_file, SPECIES))
    assert isinstance(species, pl.DataFrame)
    result = attach_traits(species, tables, resolve)
    result.coverage["classes"] = coverage_summary(result.species)
    write_table(result.species.select(SPECIES.names).to_arrow().cast(SPECIES), species_file)
    write_json_atomic(result.coverage, coverage_path(out))
    if result.failures is not None:  # rows a table could not give: reported, not fatal
        replace_failures(out, "traits", KINDS, result.failures.to_arrow().cast(FAILURE))

    unmatched_file = layout.unmatched_path(out)
    old = pl.from_arrow(read_table(unmatched_file, UNMATCHED))
    assert isinstance(old, pl.DataFrame)
    kept = old.filter(pl.col("modality").ne_missing("traits"))
    merged = pl.concat([kept, result.unmatched], how="vertical_relaxed").sort(
        list(UNMATCHED_ORDER), nulls_last=True
    )
    write_table(merged.select(UNMATCHED.names).to_arrow().cast(UNMATCHED), unmatched_file)
    return result


def print_coverage(result: TraitResult, console: Console | None = None) -> None:
    """Print rows matched per table and labels known per category."""
    console = console or Console()
    coverage = result.coverage
    per_table = Table(title="trait tables", title_justify="left")
    widest = max((len(t["file"]) for t in coverage["tables"]), default=4)
    per_table.add_column("table")
    per_table.add_column("file", min_width=widest)
    for column in ("rows", "bad rows", "matched", "unmatched", "not in corpus"):
        per_table.add_column(column, justify="right")
    for t in coverage["tables"]:
        per_table.add_row(
            t["table"],
            t["file"],
            str(t["rows"]),
            str(t.get("bad_rows", 0)),
            *(str(t[k]) for k in ("matched", "unmatched", "not_in_corpus")),
        )
    console.print(per_table)
    n = coverage["species"]
    per_category = Table(title=f"labels known ({n} species)", title_justify="left")
    for column in ("category", "labels", "known values", "species with any"):
        per_category.add_column(column, justify="left" if column == "category" else "right")
    for category, c in coverage["categories"].items():
        cells = c["labels"] * n
        share = f" ({c['known'] / cells:.0%})" if cells else ""
        per_category.add_row(
            category, str(c["labels"]), f"{c['known']}{share}", str(c["species_with_any"])
        )
    console.print(per_category)
    console.print(
        f"{coverage['species_with_any_label']} of {n} species have at least one known label "
        f"({coverage['fraction_with_any_label']:.1%})"
    )
    if "classes" in coverage:
        print_class_coverage(coverage["classes"], console)


def print_class_coverage(classes: dict, console: Console) -> None:
    """Per class: species with labels and the tables they came from; the uncovered classes."""
    t = Table(title="trait coverage per class", title_justify="left")
    for column in ("class", "species", "with labels", "tables"):
        t.add_column(column, justify="left" if column in ("class", "tables") else "right")
    for row in classes["per_class"]:
        share = f"{row['with_labels']} ({row['share']:.0%})"
        t.add_row(row["class"], str(row["species"]), share, ", ".join(row["tables"]) or "-")
    console.print(t)
    if classes["uncovered_classes"]:
        console.print(f"no trait table covers: {', '.join(classes['uncovered_classes'])}")
    if classes["no_public_table"]:
        console.print(
            f"no public trait table (AVONET, EltonTraits, AmphiBIO) covers: "
            f"{', '.join(classes['no_public_table'])}"
        )

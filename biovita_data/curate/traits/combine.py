"""Attach trait tables to the corpus species: resolve names, combine rows and tables, count."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from biovita_data.core.schemas import FAILURE, SPECIES, UNMATCHED
from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS
from biovita_data.curate.traits.readers import read_trait_rows

# resolve(distinct raw names, source label) -> name, species_id, match_kind, reason, closest
Resolver = Callable[[list[str], str], pl.DataFrame]

PROVENANCE_COLUMNS: tuple[str, ...] = tuple(
    c.replace("trait_", "provenance_", 1) for c in TRAIT_COLUMNS
)
SPECIES_SCHEMA: pl.Schema = pl.from_arrow(SPECIES.empty_table()).schema  # type: ignore[union-attr]
FAILURE_SCHEMA: pl.Schema = pl.from_arrow(FAILURE.empty_table()).schema  # type: ignore[union-attr]
UNMATCHED_SCHEMA: pl.Schema = pl.from_arrow(UNMATCHED.empty_table()).schema  # type: ignore[union-attr]
_RESOLVED_SCHEMA: dict[str, pl.DataType] = {
    "name": pl.String(),
    "species_id": pl.Int64(),
    "match_kind": pl.String(),
    "reason": pl.String(),
    "closest": pl.String(),
    "normalized": pl.String(),
}
_UNMATCHED_PART: dict[str, pl.DataType] = {
    "name": pl.String(),
    "source": pl.String(),
    "normalized": pl.String(),
    "count": pl.Int64(),
    "reason": pl.String(),
    "closest": pl.String(),
}


@dataclass(frozen=True)
class TraitResult:
    """What the traits stage produces: species with labels, unmatched names, coverage counts."""

    species: pl.DataFrame  # SPECIES columns (trait_* and provenance_* filled), then any extras
    unmatched: pl.DataFrame  # UNMATCHED schema, modality "traits"
    coverage: dict[str, Any]  # JSON-able counts
    failures: pl.DataFrame | None = None  # rows of the tables that could not be read (FAILURE)


def _resolve(resolve: Resolver, names: list[str], source: str) -> pl.DataFrame:
    """Call the resolver and bring its answer to one typed row per name."""
    if not names:
        return pl.DataFrame(schema=_RESOLVED_SCHEMA)
    answer = resolve(names, source)
    missing = [c for c in ("name", "species_id") if c not in answer.columns]
    if missing:
        raise ValueError(f"the name resolver's answer lacks columns: {', '.join(missing)}")
    return (
        answer.select(
            pl.col(c).cast(t) if c in answer.columns else pl.lit(None, t).alias(c)
            for c, t in _RESOLVED_SCHEMA.items()
        )
        .filter(pl.col("name").is_not_null())
        .unique(subset="name", keep="first", maintain_order=True)
    )


def _empty_labels() -> pl.DataFrame:
    """A per-table label frame with no rows."""
    schema = {"species_id": pl.Int64, **dict.fromkeys(TRAIT_COLUMNS, pl.Int8)}
    return pl.DataFrame(schema={**schema, "rank": pl.Int32, "table": pl.String})


def _combine(per_table: list[pl.DataFrame]) -> pl.DataFrame:
    """Across tables: the first table (lowest rank) with a non-null value wins, and is named."""
    stacked = pl.concat([_empty_labels(), *per_table], how="vertical").sort("species_id", "rank")
    return stacked.group_by("species_id", maintain_order=True).agg(
        *[pl.col(c).drop_nulls().first().alias(c) for c in TRAIT_COLUMNS],
        *[
            pl.col("table").filter(pl.col(c).is_not_null()).first().alias(p)
            for c, p in zip(TRAIT_COLUMNS, PROVENANCE_COLUMNS, strict=True)
        ],
    )


def _coverage(species: pl.DataFrame, tables: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per table, per label and per category, and the share of species with any label."""
    n = species.height
    counts = species.select(
        *[pl.col(c).is_not_null().sum().alias(f"known:{c}") for c in TRAIT_COLUMNS],
        *[(pl.col(c) == 1).sum().alias(f"ones:{c}") for c in TRAIT_COLUMNS],
        pl.any_horizontal(pl.col(TRAIT_COLUMNS).is_not_null()).sum().alias("any"),
        *[
            pl.any_horizontal(pl.col([f"trait_{cat}_{x}" for x in labels]).is_not_null())
            .sum()
            .alias(f"any:{cat}")
            for cat, labels in TRAIT_CATEGORIES.items()
        ],
    ).row(0, named=True)
    categories = {
        cat: {
            "labels": len(labels),
            "known": int(sum(counts[f"known:trait_{cat}_{x}"] for x in labels)),
            "species_with_any": int(counts[f"any:{cat}"]),
        }
        for cat, labels in TRAIT_CATEGORIES.items()
    }
    return {
        "species": n,
        "species_with_any_label": int(counts["any"]),
        "fraction_with_any_label": round(counts["any"] / n, 6) if n else 0.0,
        "tables": tables,
        "labels": {
            c: {"known": int(counts[f"known:{c}"]), "ones": int(counts[f"ones:{c}"])}
            for c in TRAIT_COLUMNS
        },
        "categories": categories,
    }


def attach_traits(
    species: pl.DataFrame, tables: Sequence[tuple[str, Path]], resolve: Resolver
) -> TraitResult:
    """Fill trait_* and provenance_* of `species` from `tables` (earlier tables win)."""
    missing = [c for c in ("species_id", "scientific_name") if c not in species.columns]
    if missing:
        raise ValueError(f"the species frame lacks columns: {', '.join(missing)}")
    corpus = species.get_column("species_id").cast(pl.Int64).drop_nulls().unique()
    per_table: list[pl.DataFrame] = []
    unmatched: list[pl.DataFrame] = []
    stats: list[dict[str, Any]] = []
    bad_rows: list[dict[str, Any]] = []
    for rank, (kind, path) in enumerate(tables):
        rows, bad = read_trait_rows(kind, Path(path))
        bad_rows += [
            {
                "stage": "traits",
                "source": kind,
                "modality": "traits",
                "record_id": f"{Path(path).name}:{b.line}",
                "name": None,
                "reason": b.reason,
                "detail": f"{Path(path).name} {b.detail}",
            }
            for b in bad
        ]
        names = rows.get_column("name").unique().sort().to_list()
        rows = rows.join(_resolve(resolve, names, kind), on="name", how="left").with_columns(
            status=pl.when(pl.col("species_id").is_null())
            .then(pl.lit("unmatched"))
            .when(pl.col("species_id").is_in(corpus.implode()))
            .then(pl.lit("matched"))
            .otherwise(pl.lit("not_in_corpus"))
        )
        matched = rows.filter(pl.col("status") == "matched")
        # within a table: 1 if any row says 1, else 0 if any says 0, else null
        per_table.append(
            matched.group_by("species_id")
            .agg(pl.col(TRAIT_COLUMNS).max())
            .with_columns(rank=pl.lit(rank, pl.Int32), table=pl.lit(kind, pl.String))
        )
        unmatched.append(
            rows.filter(pl.col("status") == "unmatched")
            .group_by("name")
            .agg(
                pl.col("normalized").drop_nulls().first(),
                pl.len().cast(pl.Int64).alias("count"),
                pl.col("reason").drop_nulls().first(),
                pl.col("closest").drop_nulls().first(),
            )
            .with_columns(source=pl.lit(kind, pl.String))
            .select(list(_UNMATCHED_PART))
        )
        status = rows.get_column("status").value_counts()
        by_status = dict(zip(status["status"], status["count"], strict=True))
        stats.append(
            {
                "table": kind,
                "file": Path(path).name,
                "rows": rows.height,
                "bad_rows": len(bad),
                **{k: int(by_status.get(k, 0)) for k in ("matched", "unmatched", "not_in_corpus")},
                "species": matched.get_column("species_id").n_unique(),
            }
        )

    labels = _combine(per_table)
    base = species.drop([c for c in (*TRAIT_COLUMNS, *PROVENANCE_COLUMNS) if c in species.columns])
    base = base.with_columns(pl.col("species_id").cast(pl.Int64))
    joined = base.join(labels, on="species_id", how="left", maintain_order="left")
    extras = [c for c in joined.columns if c not in SPECIES_SCHEMA]
    filled = joined.select(
        *[
            (pl.col(c) if c in joined.columns else pl.lit(None)).cast(t).alias(c)
            for c, t in SPECIES_SCHEMA.items()
        ],
        *extras,
    )
    names = (
        pl.concat([pl.DataFrame(schema=_UNMATCHED_PART), *unmatched], how="vertical")
        .group_by("name", "source")
        .agg(
            pl.col("normalized").drop_nulls().first(),
            pl.col("count").sum(),
            pl.col("reason").drop_nulls().first().fill_null("no_match"),
            pl.col("closest").drop_nulls().first(),
        )
        .with_columns(modality=pl.lit("traits"))
        .select([pl.col(c).cast(t) for c, t in UNMATCHED_SCHEMA.items()])
        .sort("source", "name")
    )
    failures = pl.DataFrame(bad_rows, schema=FAILURE_SCHEMA)
    return TraitResult(filled, names, _coverage(filled, stats), failures)

"""`biovita-data stats`: what the corpus holds, printed and written to OUT/stats.json."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.schemas import MEDIA, SPECIES
from biovita_data.core.tables import read_table, write_json_atomic
from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS
from biovita_data.curate.traits.coverage import coverage_summary
from biovita_data.curate.traits.stage import print_class_coverage

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def _per_rank(species: pl.DataFrame, rank: str) -> list[dict]:
    return (
        species.group_by(rank)
        .agg(species=pl.len(), audio=pl.col("n_audio").sum(), image=pl.col("n_image").sum())
        .sort(rank, nulls_last=True)
        .to_dicts()
    )


def _long_tail(counts: pl.Series) -> dict:
    """Records per species: quantiles, and the share of records held by the top 10 % of species."""
    if counts.is_empty():
        return {}
    s = counts.sort(descending=True)
    top = max(1, len(s) // 10)
    return {
        "quantiles": {f"p{int(q * 100)}": float(s.quantile(q, "nearest")) for q in QUANTILES},
        "mean": round(float(s.mean()), 2),
        "top10pct_share": round(float(s[:top].sum()) / max(1, float(s.sum())), 4),
    }


def _per_source(media: dict[str, pl.DataFrame]) -> list[dict]:
    """Records and species per source and modality (Xeno-canto, iNaturalist, GBIF, ToL, ...)."""
    rows = []
    for modality, df in media.items():
        per = df.group_by("source").agg(records=pl.len(), species=pl.col("species_id").n_unique())
        rows += [{"modality": modality, **r} for r in per.sort("source").to_dicts()]
    return rows


def compute_stats(out: Path) -> dict:
    path = layout.species_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `biovita-data align` first")
    species = pl.from_arrow(read_table(path, SPECIES))
    media = {m: pl.from_arrow(read_table(layout.media_manifest_path(out, m), MEDIA)) for m in
             ("audio", "image")}  # fmt: skip
    n = max(1, species.height)
    known = species.select([pl.col(c).is_not_null().sum().alias(c) for c in TRAIT_COLUMNS]).row(
        0, named=True
    )
    ones = species.select([(pl.col(c) == 1).sum().alias(c) for c in TRAIT_COLUMNS]).row(
        0, named=True
    )
    any_label = species.select(
        pl.any_horizontal([pl.col(c).is_not_null() for c in TRAIT_COLUMNS]).sum()
    ).item()
    categories = {}
    for cat, labels in TRAIT_CATEGORIES.items():
        cols = [f"trait_{cat}_{lab}" for lab in labels]
        any_known = species.select(pl.any_horizontal([pl.col(c).is_not_null() for c in cols]).sum())
        categories[cat] = round(any_known.item() / n, 4)
    return {
        "species": species.height,
        "audio": media["audio"].height,
        "image": media["image"].height,
        "audio_hours": round(float(media["audio"]["duration_s"].fill_null(0).sum()) / 3600, 2),
        "per_source": _per_source(media),
        "per_class": _per_rank(species, "class"),
        "per_order": _per_rank(species, "order"),
        "per_family": _per_rank(species, "family"),
        "records_per_species": {
            "audio": _long_tail(species["n_audio"]),
            "image": _long_tail(species["n_image"]),
        },
        "licenses": {
            m: dict(sorted(df.group_by("license").len().fill_null("none").iter_rows()))
            for m, df in media.items()
        },
        "trait_coverage": {
            "species_with_any_label": round(any_label / n, 4),
            "per_category": categories,
            "per_label": {c: {"known": known[c], "ones": ones[c]} for c in TRAIT_COLUMNS},
            **coverage_summary(species),
        },
        "splits": {
            "species": dict(
                sorted(species.group_by("split_group").len().fill_null("none").iter_rows())
            ),
            **{
                m: dict(sorted(df.group_by("split").len().fill_null("none").iter_rows()))
                for m, df in media.items()
            },
        },
    }


def print_stats(stats: dict, console: Console, class_coverage: bool = True) -> None:
    t = Table(title=f"corpus: {stats['species']} species, {stats['audio']} recordings "
              f"({stats['audio_hours']} h), {stats['image']} photos")  # fmt: skip
    for col in ("class", "species", "recordings", "photos"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for row in stats["per_class"]:
        t.add_row(str(row["class"]), str(row["species"]), str(row["audio"]), str(row["image"]))
    console.print(t)
    t = Table(title="sources")
    for col in ("modality", "source", "records", "species"):
        t.add_column(col, justify="right" if col in ("records", "species") else "left")
    for row in stats.get("per_source", []):
        t.add_row(row["modality"], row["source"], str(row["records"]), str(row["species"]))
    console.print(t)
    t = Table(title="records per species (long tail)")
    for col in ("modality", "min", "median", "p90", "max", "top 10 % of species hold"):
        t.add_column(col, justify="right")
    for m, tail in stats["records_per_species"].items():
        if tail:
            q = tail["quantiles"]
            t.add_row(m, *(str(int(q[k])) for k in ("p0", "p50", "p90", "p100")),
                      f"{tail['top10pct_share']:.0%}")  # fmt: skip
    console.print(t)
    t = Table(title="licences, splits, trait coverage")
    t.add_column("what")
    t.add_column("counts")
    for m, lic in stats["licenses"].items():
        t.add_row(f"{m} licences", ", ".join(f"{k} {v}" for k, v in lic.items()))
    for what, sizes in stats["splits"].items():
        t.add_row(f"{what} splits", ", ".join(f"{k} {v}" for k, v in sizes.items()))
    cov = stats["trait_coverage"]
    t.add_row(
        "traits known",
        f"{cov['species_with_any_label']:.0%} of species; "
        + ", ".join(f"{k} {v:.0%}" for k, v in cov["per_category"].items()),
    )
    console.print(t)
    if class_coverage and cov.get("per_class") is not None:
        print_class_coverage(cov, console)


def stats(out: Path, console: Console | None = None, class_coverage: bool = True) -> dict:
    """Compute, write OUT/stats.json and print the tables (`class_coverage`: the per-class one)."""
    result = compute_stats(out)
    dups = duplicates_per_source_pair(out)
    if dups is not None:
        result["duplicates"] = dups
    write_json_atomic(result, out / "stats.json")
    print_stats(result, console or Console(), class_coverage)
    if dups:
        pairs = ", ".join(
            f"{r['sources']} {r['modality']} {r['kind']}: {r['groups']}" for r in dups
        )
        (console or Console()).print(f"duplicate groups per source pair: {pairs}")
    return result


def duplicates_per_source_pair(out: Path) -> list[dict] | None:
    """Duplicate groups (dedup) by modality, kind and the sources they span; None: not run."""
    from biovita_data.core.layout import duplicates_path

    path = duplicates_path(out)
    if not path.exists():
        return None
    groups = (
        pl.read_parquet(path)
        .group_by("group_id", "modality")
        .agg(
            pl.when((pl.col("kind") == "exact").all())
            .then(pl.lit("exact"))
            .when((pl.col("kind") == "metadata").all())
            .then(pl.lit("metadata"))
            .otherwise(pl.lit("near"))
            .alias("kind"),
            pl.col("source").unique().sort().str.join(" + ").alias("sources"),
        )
        .group_by("modality", "kind", "sources")
        .agg(pl.len().alias("groups"))
        .sort("modality", "kind", "sources")
    )
    return groups.to_dicts()

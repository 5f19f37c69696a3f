"""Synthetic manifests for the split and release tests: a long-tailed corpus of recordings and
photos (observation groups), written as align leaves them (split null)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console

from biovita_data.core import layout
from biovita_data.core.schemas import MEDIA, SPECIES
from biovita_data.core.tables import write_table

KEY = ["source", "modality", "record_id"]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def make_items(rng: np.random.Generator, species: list[int], start: int, n: int) -> pl.DataFrame:
    """`n` new items from id `start` on, of the given species (drawn at random): recordings
    (half of them iNaturalist sounds, one per observation) and photos (1-3 per observation)."""
    rows = []
    rid = start
    while len(rows) < n:
        sp = int(rng.choice(species))
        if rng.random() < 0.5:
            inat = rng.random() < 0.5
            rows.append(
                ("inaturalist" if inat else "xeno-canto", "audio", rid, sp, rid if inat else None)
            )
            rid += 1
        else:
            obs = rid
            for _ in range(int(rng.integers(1, 4))):
                rows.append(("inaturalist", "image", rid, sp, obs))
                rid += 1
    return pl.DataFrame(
        rows,
        schema={"source": pl.String, "modality": pl.String, "record_id": pl.Int64,
                "species_id": pl.Int64, "observation_id": pl.Int64},
        orient="row",
    ).with_columns(pl.col("record_id").cast(pl.String))  # fmt: skip


def base_corpus(seed: int = 7, n_species: int = 80, n_items: int = 3000) -> pl.DataFrame:
    """A corpus with a long tail: some species have 1-2 recordings (unseen), most many."""
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.2, n_species) + 0.02
    species = list(range(1000, 1000 + n_species))
    rows = []
    for sp, w in zip(species, weights / weights.sum(), strict=True):
        rows.append(make_items(rng, [sp], 10**6 * (sp - 999), max(1, int(w * n_items))))
    return pl.concat(rows)


def write_manifests(out: Path, items: pl.DataFrame, order_seed: int | None = None) -> None:
    """species/audio/image manifests as align leaves them (split null)."""
    out.mkdir(parents=True, exist_ok=True)
    items = items.with_columns(
        scientific_name=pl.format("Genus sp{}", "species_id"), match_kind=pl.lit("exact")
    )
    for m in ("audio", "image"):
        df = items.filter(pl.col("modality") == m).sort("source", "record_id")
        if order_seed is not None:
            df = df.sample(fraction=1.0, shuffle=True, seed=order_seed)
        full = pl.DataFrame(schema=pl.Schema(MEDIA)).vstack(
            df.select(
                pl.col(c) if c in df.columns else pl.lit(None).alias(c) for c in MEDIA.names
            ).cast(dict(pl.Schema(MEDIA)))
        )
        write_table(full.to_arrow().cast(MEDIA), layout.media_manifest_path(out, m))
    counts = items.group_by("species_id").agg(
        scientific_name=pl.col("scientific_name").first(),
        n_audio=(pl.col("modality") == "audio").sum().cast(pl.Int32),
        n_image=(pl.col("modality") == "image").sum().cast(pl.Int32),
    )
    sp = counts.select(
        pl.col(c) if c in counts.columns else pl.lit(None).alias(c) for c in SPECIES.names
    ).sort("species_id")
    write_table(sp.to_arrow().cast(SPECIES), layout.species_path(out))

"""The split stage: unseen species held out whole; a seeded 10 % of each seen species -> test.

Items are split by observation, not by photo: the photos of one iNaturalist observation show the
same animal, so they always land on the same side (no near-duplicate leakage into `test`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.schemas import MEDIA, SPECIES
from biovita_data.core.tables import read_table, write_table


@dataclass
class SplitResult:
    species: dict[str, int]  # split_group -> species
    audio: dict[str, int]  # split -> recordings
    image: dict[str, int]


def _assign(media: pl.DataFrame, unseen: pl.DataFrame, seed: int, fraction: float) -> pl.DataFrame:
    """Add `split`: unseen for unseen species, else a seeded share of observation groups -> test."""
    group = pl.when(pl.col("observation_id").is_not_null()).then(
        pl.format("{}:obs:{}", "source", "observation_id")
    )
    df = media.with_row_index("_i").with_columns(
        _g=group.otherwise(pl.format("{}:{}", "source", "record_id"))
    )
    groups = df.select("species_id", "_g").unique().sort("species_id", "_g")
    rng = np.random.default_rng(seed)
    groups = groups.with_columns(_r=pl.Series(rng.random(groups.height)))
    n = pl.len().over("species_id")
    n_test = pl.when(n >= 2).then((n * fraction + 0.5).floor().clip(lower_bound=1)).otherwise(0)
    groups = groups.with_columns(
        _test=pl.col("_r").rank("ordinal").over("species_id") <= n_test,
    )
    df = df.join(groups.select("species_id", "_g", "_test"), on=["species_id", "_g"], how="left")
    is_unseen = pl.col("species_id").is_in(unseen["species_id"].implode())
    split = (
        pl.when(is_unseen)
        .then(pl.lit("unseen"))
        .when(pl.col("_test"))
        .then(pl.lit("test"))
        .otherwise(pl.lit("train"))
    )
    return df.with_columns(split=split).sort("_i").select([f.name for f in MEDIA])


def split(
    out: Path,
    *,
    seed: int = 0,
    test_fraction: float = 0.1,
    unseen_max_audio: int = 2,
    console: Console | None = None,
) -> SplitResult:
    """Write `split` on audio/image manifests and `split_group` on species; deterministic."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"--test-fraction must be between 0 and 1, not {test_fraction}")
    path = layout.species_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `biovita-data align` first")
    species = pl.from_arrow(read_table(path, SPECIES))
    unseen = species.filter(pl.col("n_audio") <= unseen_max_audio).select("species_id")
    species = species.with_columns(
        split_group=pl.when(pl.col("species_id").is_in(unseen["species_id"].implode()))
        .then(pl.lit("unseen"))
        .otherwise(pl.lit("seen"))
    )
    counts = {}
    for m in ("audio", "image"):
        mpath = layout.media_manifest_path(out, m)
        media = pl.from_arrow(read_table(mpath, MEDIA))
        media = _assign(media, unseen, seed + (0 if m == "audio" else 1), test_fraction)
        write_table(media.to_arrow().cast(MEDIA), mpath)
        counts[m] = dict(sorted(media.group_by("split").len().iter_rows()))
    write_table(species.to_arrow().cast(SPECIES), path)
    result = SplitResult(
        species=dict(sorted(species.group_by("split_group").len().iter_rows())),
        audio=counts["audio"],
        image=counts["image"],
    )
    table = Table(title="split")
    for col in ("", "train", "test", "unseen"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("recordings", *(str(result.audio.get(s, 0)) for s in ("train", "test", "unseen")))
    table.add_row("photos", *(str(result.image.get(s, 0)) for s in ("train", "test", "unseen")))
    seen = str(result.species.get("seen", 0))
    table.add_row("species", seen, seen, str(result.species.get("unseen", 0)))
    (console or Console()).print(table)
    return result

"""Reading dedup's duplicate groups (OUT/manifests/duplicates.parquet) for the later stages."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from biovita_data.core import layout
from biovita_data.core.schemas import DUPLICATES
from biovita_data.core.tables import read_table


def withheld_copies(out: Path, modality: str | None = None) -> pl.DataFrame:
    """modality, source, record_id, copy_of of the exact copies dedup found (of `modality`, or
    all): each is published once, as the member named in `copy_of`, so a copy is neither drawn
    into the bench nor published."""
    dups = pl.from_arrow(read_table(layout.duplicates_path(out), DUPLICATES))
    assert isinstance(dups, pl.DataFrame)
    copies = dups.filter(pl.col("copy_of").is_not_null())
    if modality is not None:
        copies = copies.filter(pl.col("modality") == modality)
    return copies.select("modality", "source", "record_id", "copy_of")

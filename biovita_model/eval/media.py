"""Bench items' media in a published dataset folder, found by (source, record_id).

A bench item (`ids/<modality>_index`: source, record_id; or the official CSV's file_path
`<modality>/<source>/<record_id>.<ext>`) is found among the rows of the dataset's audio or image
config (segment 0 of a segmented recording). Items the media stage dropped after the bench was
built are reported as missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import polars as pl

from biovita_data.core.layout import MEDIA_SPLITS
from biovita_data.curate.bench.csv_layout import media_keys
from biovita_data.loader.index import MediaIndex, index_rows, resolve_folder, split_files

_KEYS = ("source", "record_id", "segment")


class PublishedMedia:
    """The media rows of a published folder, found by (source, record_id) across its splits."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = resolve_folder(folder)
        self._keys: dict[tuple[str, tuple[str, ...]], tuple[MediaIndex, pl.DataFrame]] = {}

    def keys(
        self, modality: str, splits: Sequence[str] = MEDIA_SPLITS
    ) -> tuple[MediaIndex, pl.DataFrame]:
        """(index of every row of the splits, its first row per (source, record_id): `_pos`)."""
        key = (modality, tuple(splits))
        if key not in self._keys:
            files = [p for s in splits for p in split_files(self.folder, modality, s)]
            index, meta = index_rows(files, _KEYS)
            rows = pl.from_arrow(meta) if meta.num_columns else pl.DataFrame()
            assert isinstance(rows, pl.DataFrame)
            if rows.height:
                rows = rows.with_row_index("_pos")
                if "segment" in rows.columns:
                    rows = rows.sort("segment", maintain_order=True)
                rows = rows.unique(["source", "record_id"], keep="first", maintain_order=True)
            self._keys[key] = (index, rows)
        return self._keys[key]

    def locate(
        self, modality: str, index: pl.DataFrame, splits: Sequence[str] = MEDIA_SPLITS
    ) -> tuple[MediaIndex, np.ndarray]:
        """Rows of a bench index (source + record_id, or file_path) in the dataset's splits.

        Returns (MediaIndex of the items found, in id order; the ids not found). An item the
        media stage dropped after the bench was built (e.g. a silent file) is not found.
        """
        all_rows, rows = self.keys(modality, splits)
        if not all_rows.files:
            raise FileNotFoundError(f"no {modality}/{list(splits)} shards under {self.folder}")
        wanted = media_keys(index)
        if not rows.height:
            rows = pl.DataFrame(
                schema={"source": pl.String, "record_id": pl.String, "_pos": pl.UInt32}
            )
        found = wanted.join(rows, on=["source", "record_id"], how="left").sort("id")
        missing = found.filter(pl.col("_pos").is_null())["id"].to_numpy()
        if missing.size == found.height and found.height:
            raise ValueError(
                f"none of the bench's {modality} items is in {self.folder} {list(splits)}: "
                "is it the dataset this bench was built with?"
            )
        pos = found["_pos"].drop_nulls().to_numpy().astype(np.int64)
        return all_rows.take(pos), missing

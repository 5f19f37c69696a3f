"""Split writers: rows in, `<split>-{i:05d}-of-{n:05d}.parquet` shards of at most about N bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Rows per Parquet row group: small for media (the Hub's viewer, streaming and the training
# loader read whole row groups), and a media row group also closes once its rows reach about
# MEDIA_GROUP_BYTES. An audio row group holds one recording: the training loader crops random
# recordings, and a lone value stored plainly it reads in place from the mapped file instead of
# decoding (copying) a row group (loader.index.RowReader; 4 MiB row groups cost it ~1 CPU-ms
# more per sample, benchmarks/loader.py). The price: ~2.7 kB of footer per recording (~0.3 % of
# a recording of a few MB), parsed once by each reader of a shard.
MEDIA_ROW_GROUP = 100
MEDIA_GROUP_BYTES = 4 * 2**20
AUDIO_ROW_GROUP = 1
TABLE_ROW_GROUP = 10_000


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00000-of-00003.parquet`."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def row_sizes(table: pa.Table, media_column: str | None = None) -> np.ndarray:
    """Each row's size estimate in bytes: its media bytes plus an even share of the rest."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    rest = [c for c in table.column_names if c != media_column]
    share = table.select(rest).nbytes / table.num_rows
    sizes = np.full(table.num_rows, share, dtype=np.float64)
    if media_column is not None:
        lengths = pc.binary_length(pc.struct_field(table.column(media_column), "bytes"))
        sizes += lengths.fill_null(0).to_numpy()
    return np.ceil(sizes).astype(np.int64)


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Dotted paths of the leaf columns (`audio.bytes`, `audio.path`, `label`, ...)."""
    paths = []
    for f in schema:
        if pa.types.is_struct(f.type):
            paths += [f"{f.name}.{c.name}" for c in f.type]
        else:
            paths.append(f.name)
    return paths


def parquet_options(schema: pa.Schema, media_column: str | None = None) -> dict:
    """ParquetWriter options of a published shard: zstd and dictionaries except on the media
    `bytes` (encoded audio and JPEG do not shrink under either: stored plainly, which also lets the
    loader read one value without decoding its row group), no statistics on the media column, a
    page index."""
    media_bytes = f"{media_column}.bytes"
    leaves = _leaf_paths(schema)
    return {
        "compression": {c: "none" if c == media_bytes else "zstd" for c in leaves},
        "use_dictionary": [c for c in leaves if c != media_bytes],
        "write_statistics": [n for n in schema.names if n != media_column],
        "write_page_index": True,
    }


class SplitWriter:
    """Writes one split of one config as numbered shards, each at most about `max_bytes`; a row
    group closes at row_group_rows rows or, with a media column, once its rows' bytes reach
    MEDIA_GROUP_BYTES."""

    def __init__(
        self,
        folder: Path,
        split: str,
        schema: pa.Schema,
        max_bytes: int,
        *,
        row_group_rows: int = TABLE_ROW_GROUP,
        media_column: str | None = None,
    ) -> None:
        self.folder, self.split, self.schema = folder, split, schema
        self.max_bytes, self.row_group_rows = max(1, int(max_bytes)), row_group_rows
        self.media_column = media_column
        self.rows = 0
        self.parts: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._size = 0
        self._shard_rows = 0
        self._pending: list[pa.Table] = []
        self._pending_sizes: list[np.ndarray] = []  # each pending row's size (row_sizes)
        self._pending_rows = 0
        self._options = parquet_options(schema, media_column)

    def write(self, table: pa.Table) -> None:
        """Append rows (already in the split's schema), opening a new shard when one is full."""
        table = table.cast(self.schema)
        sizes = row_sizes(table, self.media_column)
        offset = 0
        while offset < table.num_rows:
            csum = np.cumsum(sizes[offset:])
            take = int(np.searchsorted(csum, self.max_bytes - self._size, side="right"))
            if take == 0:
                if self._shard_rows:
                    self._close_shard()
                    continue
                take = 1  # a single row larger than the limit gets a shard of its own
            self._append(table.slice(offset, take), sizes[offset : offset + take])
            offset += take
            if offset < table.num_rows:
                self._close_shard()

    def _append(self, table: pa.Table, sizes: np.ndarray) -> None:
        if self._writer is None:
            path = self.folder / f".{self.split}-{len(self.parts):05d}.parquet.part"
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self.schema, **self._options)
            self.parts.append(path)
        self._pending.append(table)
        self._pending_sizes.append(sizes)
        self._pending_rows += table.num_rows
        self._size += int(sizes.sum())
        self._shard_rows += table.num_rows
        self.rows += table.num_rows
        while (limit := self._full_group()) is not None:
            self._flush(limit)

    def _full_group(self) -> int | None:
        """The rows of the next complete row group among the pending rows (row_group_rows, or
        with a media column the fewest whose bytes reach MEDIA_GROUP_BYTES); None if none is."""
        if self.media_column is not None and self._pending_rows:
            csum = np.cumsum(np.concatenate(self._pending_sizes))
            end = int(np.searchsorted(csum, MEDIA_GROUP_BYTES, side="left")) + 1
            if end <= csum.size:
                return min(end, self.row_group_rows)
        return self.row_group_rows if self._pending_rows >= self.row_group_rows else None

    def _flush(self, limit: int) -> None:
        assert self._writer is not None
        merged = pa.concat_tables(self._pending)
        self._writer.write_table(merged.slice(0, limit), row_group_size=limit)
        rest = merged.slice(limit)
        sizes = np.concatenate(self._pending_sizes)[limit:]
        self._pending = [rest] if rest.num_rows else []
        self._pending_sizes = [sizes] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        if self._pending_rows:
            self._flush(self._pending_rows)
        self._writer.close()
        self._writer, self._size, self._shard_rows = None, 0, 0

    def close(self) -> list[Path]:
        """Finish the last shard and name every shard `<split>-i-of-n`. An empty split writes no
        file (`datasets` cannot read a Parquet file without rows) and is left out of the card."""
        self._close_shard()
        final = []
        for i, part in enumerate(self.parts):
            target = self.folder / shard_name(self.split, i, len(self.parts))
            part.replace(target)
            final.append(target)
        return final

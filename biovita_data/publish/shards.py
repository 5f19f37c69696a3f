"""Split writers: rows in, `<split>-{i:05d}-of-{n:05d}.parquet` shards of at most about N bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Rows per Parquet row group: small for media (the Hub's viewer, streaming and the training
# loader read whole row groups), and a media row group also closes at about MEDIA_GROUP_BYTES.
MEDIA_ROW_GROUP = 100
MEDIA_GROUP_BYTES = 4 * 2**20
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
    """Writes one split of one config as numbered shards, each at most about `max_bytes`."""

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
        self._pending_rows = 0
        self._options = parquet_options(schema, media_column)
        self._pending_bytes = 0

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
            self._append(table.slice(offset, take), int(csum[take - 1]))
            offset += take
            if offset < table.num_rows:
                self._close_shard()

    def _append(self, table: pa.Table, size: int) -> None:
        if self._writer is None:
            path = self.folder / f".{self.split}-{len(self.parts):05d}.parquet.part"
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(path, self.schema, **self._options)
            self.parts.append(path)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._size += size
        self._shard_rows += table.num_rows
        self.rows += table.num_rows
        if self.media_column is not None:
            self._pending_bytes += size
            if self._pending_bytes >= MEDIA_GROUP_BYTES:
                self._flush(min(self._pending_rows, self.row_group_rows))
        while self._pending_rows >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def _flush(self, limit: int) -> None:
        assert self._writer is not None
        merged = pa.concat_tables(self._pending)
        self._writer.write_table(merged.slice(0, limit), row_group_size=limit)
        rest = merged.slice(limit)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows
        if self.media_column is not None:
            self._pending_bytes = (
                int(row_sizes(rest, self.media_column).sum()) if rest.num_rows else 0
            )

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

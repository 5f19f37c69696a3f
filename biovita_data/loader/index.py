"""Where each item of a published dataset lives (file, row group, row), and a lazy row reader.

The index is a few small NumPy arrays built from the `label` column and the Parquet footers, cheap
to pickle into DataLoader workers. The reader opens Parquet files on first use in each process and
reads rows through pyarrow, keeping a few decoded row groups. A media value is read alone (only its
`bytes` leaf, handed on as a view: no copy), and publish gives an audio row group about one
recording (publish.shards.AUDIO_GROUP_BYTES), so a random item reads about its own bytes. A
hand-written reader that copied one value out of a row group instead of decoding it saved nothing
measurable next to decoding the crop (`benchmarks/loader.py`: -7 % to +12 % of the loader's CPU
per sample), so it was removed.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core.layout import MEDIA_SPLITS

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$")


def resolve_folder(
    path_or_repo: str | os.PathLike[str],
    *,
    splits: Sequence[str] = MEDIA_SPLITS,
    revision: str | None = None,
) -> Path:
    """A local dataset folder: the path itself (or its hf/), or a Hub snapshot of a repo id
    (`NS/NAME`, or `NS/NAME@REVISION`: a release tag, branch or commit; `revision` wins)."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        if not (path / "audio").is_dir() and (path / "hf" / "audio").is_dir():
            return path / "hf"  # a build folder OUT
        return path
    repo_id, _, pinned = str(path_or_repo).partition("@")
    revision = revision or pinned or None
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"{repo_id!r} is neither a folder nor a Hub repo id (namespace/name)"
        )
    from huggingface_hub import snapshot_download  # optional: only for repo ids

    patterns = [f"{c}/{s}-*.parquet" for c in ("audio", "image") for s in splits]
    patterns += ["species/*.parquet", "README.md"]
    local = snapshot_download(
        repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns
    )
    return Path(local)


def split_files(folder: Path, config: str, split: str) -> list[Path]:
    """The shards {config}/{split}-{i:05d}-of-{n:05d}.parquet, in shard order (checked complete)."""
    found: list[tuple[int, int, Path]] = []
    for path in (folder / config).glob(f"{split}-*.parquet"):
        match = _SHARD.match(path.name)
        if match and match["split"] == split:
            found.append((int(match["i"]), int(match["n"]), path))
    found.sort()
    if found:
        totals = {n for _, n, _ in found}
        if len(totals) != 1 or [i for i, _, _ in found] != list(range(totals.pop())):
            names = ", ".join(p.name for _, _, p in found)
            raise ValueError(f"incomplete or mixed shards in {folder / config}: {names}")
    return [p for _, _, p in found]


@dataclass(frozen=True)
class MediaIndex:
    """One entry per row of a config's split: its file, row group, row in the group and label."""

    files: tuple[str, ...]
    file: np.ndarray  # int32
    row_group: np.ndarray  # int32
    row: np.ndarray  # int32, within the row group
    label: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def by_label(self) -> tuple[np.ndarray, np.ndarray]:
        """(order, starts): rows of label k are order[starts[k]:starts[k + 1]]."""
        order = np.argsort(self.label, kind="stable")
        n = int(self.label.max()) + 1 if len(self) else 0
        starts = np.searchsorted(self.label[order], np.arange(n + 1))
        return order, starts

    def take(self, rows: np.ndarray) -> MediaIndex:
        """The entries at `rows` (positions into this index), in that order."""
        return MediaIndex(
            self.files, self.file[rows], self.row_group[rows], self.row[rows], self.label[rows]
        )


def label_rows(order: np.ndarray, starts: np.ndarray, label: int) -> np.ndarray:
    """The rows of `label` given MediaIndex.by_label()'s (order, starts); empty for a label past
    the last one."""
    if label + 1 >= starts.shape[0]:
        return order[:0]
    return order[starts[label] : starts[label + 1]]


def build_index(files: Sequence[Path]) -> MediaIndex:
    """Read only the label column and the footers of the shards."""
    return index_rows(files)[0]


def index_rows(files: Sequence[Path], columns: Sequence[str] = ()) -> tuple[MediaIndex, pa.Table]:
    """The MediaIndex of the shards and, row for row, their `columns` (those present; no media
    bytes unless asked). A shard without `label` gets label 0. One read per shard: a shard may
    hold a row group per recording."""
    parts: dict[str, list[np.ndarray]] = {"file": [], "row_group": [], "row": [], "label": []}
    tables = []
    for k, path in enumerate(files):
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        present = [c for c in dict.fromkeys(["label", *columns]) if c in names]
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        n = sum(sizes)
        t = pf.read(columns=present, use_threads=False)
        parts["file"].append(np.full(n, k, dtype=np.int32))
        parts["row_group"].append(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))
        starts = np.repeat(np.cumsum([0, *sizes])[:-1], sizes).astype(np.int32)
        parts["row"].append(np.arange(n, dtype=np.int32) - starts)
        label = t.column("label").to_numpy() if "label" in names else np.zeros(n)
        parts["label"].append(label.astype(np.int64, copy=False))
        tables.append(t.select([c for c in present if c in columns]))
    arrays = {
        key: np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        for key, chunks in parts.items()
    }
    index = MediaIndex(
        files=tuple(str(p) for p in files),
        file=arrays["file"].astype(np.int32, copy=False),
        row_group=arrays["row_group"].astype(np.int32, copy=False),
        row=arrays["row"].astype(np.int32, copy=False),
        label=arrays["label"].astype(np.int64, copy=False),
    )
    meta = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return index, meta


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at `at`: (value, position after it)."""
    value = shift = 0
    while at < len(data):
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at
    raise ValueError("truncated varint")


def single_plain_value(chunk: memoryview, max_definition_level: int) -> memoryview | None:
    """The value of a Parquet column chunk that holds one non-null BYTE_ARRAY stored PLAIN and
    uncompressed in one v1 data page (publish's media `bytes` in a row group of one row), as a
    view of `chunk`; None when the chunk is not exactly that.

    Only the page header's first three fields are read (thrift compact protocol: type,
    uncompressed and compressed page size); the page is the chunk's last compressed-size bytes:
    definition levels (when the column has them: a 4-byte length, then the levels), the value's
    4-byte length, the value, which must end the page exactly."""
    fields, at = [], 0
    try:
        for _ in range(3):  # field header 0x15: field id delta 1, type i32; zigzag varints
            if at >= len(chunk) or chunk[at] != 0x15:
                return None
            raw, at = _varint(chunk, at + 1)
            fields.append((raw >> 1) ^ -(raw & 1))
    except ValueError:
        return None
    page_type, _, size = fields
    if page_type != 0 or not 0 < size <= len(chunk) - at:  # 0: DATA_PAGE (v1)
        return None
    page = chunk[len(chunk) - size :]
    levels = 4 + int.from_bytes(page[:4], "little") if max_definition_level > 0 else 0
    if levels + 4 > size:
        return None
    length = int.from_bytes(page[levels : levels + 4], "little")
    return page[levels + 4 :] if levels + 4 + length == size else None


@dataclass(frozen=True)
class _Lone:
    """Where the media values that are alone in their row group lie in one shard: the byte range
    of each row group's media `bytes` column chunk (start -1: not a lone plain value), and the
    leaf's maximum definition level. Kept for every shard seen (16 bytes a row group), so a
    shard's footer is parsed once per process however often the shard is reopened."""

    start: np.ndarray  # int64, per row group
    size: np.ndarray  # int64, per row group
    max_definition_level: int


def lone_values(metadata: pq.FileMetaData, leaf_path: str) -> _Lone:
    """The _Lone of a shard from its footer: row groups of one row whose `leaf_path` column chunk
    is one uncompressed PLAIN BYTE_ARRAY value without dictionary."""
    n = metadata.num_row_groups
    start, size = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    schema = metadata.schema
    paths = [schema.column(j).path for j in range(len(schema))]
    if leaf_path not in paths:
        return _Lone(start, size, -1)
    leaf = paths.index(leaf_path)
    for g in range(n):
        group = metadata.row_group(g)
        if group.num_rows != 1:
            continue
        chunk = group.column(leaf)
        plain = chunk.compression == "UNCOMPRESSED" and not chunk.has_dictionary_page
        plain = plain and set(chunk.encodings) <= {"PLAIN", "RLE", "BIT_PACKED"}
        if plain and chunk.num_values == 1 and chunk.physical_type == "BYTE_ARRAY":
            start[g], size[g] = chunk.data_page_offset, chunk.total_compressed_size
    return _Lone(start, size, schema.column(leaf).max_definition_level)


class RowReader:
    """Reads single rows (a few columns) of indexed Parquet shards; lazy and fork-safe.

    At most max_open shards stay open per process (a paper-scale split has thousands of shards,
    more than a process may hold descriptors for), and cache_size row groups stay decoded. A
    media value alone in its row group and stored plainly (publish's audio layout) is handed out
    as a view of the memory-mapped file (`single_plain_value`): no decode, no copy, the decoder
    touches only the pages it reads, and a shard's footer is parsed once per process even when
    thousands of shards take turns; any other layout is read through pyarrow.
    """

    def __init__(
        self, index: MediaIndex, columns: Sequence[str], cache_size: int = 2, max_open: int = 64
    ) -> None:
        self.index = index
        self.columns = list(columns)
        self.cache_size = max(1, cache_size)
        self.max_open = max(1, max_open)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._maps: OrderedDict[int, pa.Buffer] = OrderedDict()  # whole files, memory-mapped
        self._lone: dict[int, _Lone] = {}
        self._cache: OrderedDict[tuple[int, int, tuple[str, ...]], pa.Table] = OrderedDict()

    def __getstate__(self) -> dict:
        keep = ("index", "columns", "cache_size", "max_open")
        return {name: self.__dict__[name] for name in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    def _file(self, k: int) -> pq.ParquetFile:
        if os.getpid() != self._pid:  # forked: do not share handles or cache with the parent
            self._reset()
        pf = self._files.get(k)
        if pf is None:
            pf = pq.ParquetFile(self.index.files[k], memory_map=True)
            self._files[k] = pf
            while len(self._files) > self.max_open:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(k)
        return pf

    def _mapped(self, k: int) -> pa.Buffer:
        """Shard k memory-mapped whole (no descriptor kept; at most max_open stay mapped)."""
        buf = self._maps.get(k)
        if buf is None:
            with pa.memory_map(self.index.files[k]) as f:
                buf = f.read_buffer()  # stays valid after close, and while a view of it lives
            self._maps[k] = buf
            while len(self._maps) > self.max_open:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(k)
        return buf

    def _lone_value(self, k: int, g: int) -> memoryview | None:
        """The media value of row group g of shard k as a view of the mapped file when it is the
        group's only row and stored plainly; else None (read it through pyarrow)."""
        if os.getpid() != self._pid:  # forked: do not share handles or cache with the parent
            self._reset()
        lone = self._lone.get(k)
        if lone is None:
            lone = lone_values(self._file(k).metadata, f"{self.columns[0]}.bytes")
            self._lone[k] = lone
        start, size = int(lone.start[g]), int(lone.size[g])
        if start < 0:
            return None
        view = memoryview(self._mapped(k))[start : start + size]
        return single_plain_value(view, lone.max_definition_level)

    def row_group(self, k: int, g: int, columns: Sequence[str] | None = None) -> pa.Table:
        """Row group g of shard k (`columns`, by default the reader's), from the cache when
        there."""
        if os.getpid() != self._pid:  # forked: do not share handles or cache with the parent
            self._reset()
        names = tuple(self.columns if columns is None else columns)
        key = (k, g, names)
        table = self._cache.get(key)
        if table is not None:
            self._cache.move_to_end(key)
            return table
        table = self._file(k).read_row_group(g, columns=list(names), use_threads=False)
        self._cache[key] = table
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return table

    def media_view(self, i: int) -> memoryview | None:
        """The `bytes` of row i's media struct (the reader's first column) as a read-only view,
        no copy: of the mapped file (a plain value alone in its row group) or of the decoded
        row group (only that leaf column is read); None when null."""
        k, g, r = int(self.index.file[i]), int(self.index.row_group[i]), int(self.index.row[i])
        if r == 0 and (view := self._lone_value(k, g)) is not None:
            return view
        column = self.columns[0]
        value = self.row_group(k, g, [f"{column}.bytes"]).column(column)[r]
        data = value["bytes"] if value.is_valid else None
        return memoryview(data.as_buffer()) if data is not None and data.is_valid else None

    def media(self, i: int) -> bytes | None:
        """The `bytes` of row i's media struct (the reader's first column); None when null."""
        view = self.media_view(i)
        return None if view is None else bytes(view)

    def read(self, i: int) -> dict[str, object]:
        """Row i of the index as a dict of Python values."""
        k, g, r = int(self.index.file[i]), int(self.index.row_group[i]), int(self.index.row[i])
        table = self.row_group(k, g)
        return {name: table.column(name)[r].as_py() for name in self.columns}

    def close(self) -> None:
        """Drop open files and the cache."""
        for pf in self._files.values():
            pf.close()
        self._reset()

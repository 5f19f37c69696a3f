"""Where each item of a published dataset lives (file, row group, row), and a lazy row reader.

The index is a few small NumPy arrays built from the `label` column and the Parquet footers, cheap
to pickle into DataLoader workers. The reader opens Parquet files on first use in each process.

A media column as publish writes it (`bytes` uncompressed, PLAIN, no dictionary) is read one value
at a time: the reader walks the column chunk's page headers and the 4-byte length prefixes of the
PLAIN values once per row group (a few hundred bytes), then copies only the wanted value out of a
memory map, instead of decoding the whole row group (about 4 MB) for one row. Anything else
(compressed or dictionary pages, other columns) goes through pyarrow and an LRU cache of decoded
row groups.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """A local dataset folder: the path itself (or its hf/), or a Hub snapshot of a repo id."""
    path = Path(path_or_repo).expanduser()
    if path.is_dir():
        if not (path / "audio").is_dir() and (path / "hf" / "audio").is_dir():
            return path / "hf"  # a build folder OUT
        return path
    repo_id = str(path_or_repo)
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
    bytes unless asked). A shard without `label` gets label 0."""
    parts: dict[str, list[np.ndarray]] = {"file": [], "row_group": [], "row": [], "label": []}
    tables = []
    for k, path in enumerate(files):
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        present = [c for c in dict.fromkeys(["label", *columns]) if c in names]
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=present)
            n = t.num_rows
            parts["file"].append(np.full(n, k, dtype=np.int32))
            parts["row_group"].append(np.full(n, g, dtype=np.int32))
            parts["row"].append(np.arange(n, dtype=np.int32))
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


# -- one PLAIN value out of an uncompressed Parquet column chunk ----------------------------------

_U32 = struct.Struct("<I")
_PLAIN, _RLE = 0, 3  # parquet Encoding
_DATA_PAGE, _INDEX_PAGE, _DATA_PAGE_V2 = 0, 1, 3  # parquet PageType


class _Unsupported(Exception):
    """The column chunk is not laid out as the fast path expects: use pyarrow."""


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 70:
            raise _Unsupported("bad varint")


def _zigzag(buf: Any, pos: int) -> tuple[int, int]:
    v, pos = _varint(buf, pos)
    return (v >> 1) ^ -(v & 1), pos


def _thrift_value(buf: Any, pos: int, kind: int) -> tuple[Any, int]:
    """One value of thrift compact type `kind` (structs as {field id: value}; lists skipped)."""
    if kind in (1, 2):  # bool in a field header
        return kind == 1, pos
    if kind == 3:
        return buf[pos], pos + 1
    if kind in (4, 5, 6):
        return _zigzag(buf, pos)
    if kind == 7:
        return None, pos + 8
    if kind == 8:
        n, pos = _varint(buf, pos)
        return None, pos + n
    if kind in (9, 10):  # list, set
        head = buf[pos]
        pos += 1
        n, elem = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        for _ in range(n):
            pos = pos + 1 if elem in (1, 2) else _thrift_value(buf, pos, elem)[1]
        return None, pos
    if kind == 11:  # map
        n, pos = _varint(buf, pos)
        if n:
            types = buf[pos]
            pos += 1
            for _ in range(n):
                for t in (types >> 4, types & 0x0F):
                    pos = pos + 1 if t in (1, 2) else _thrift_value(buf, pos, t)[1]
        return None, pos
    if kind == 12:
        return _thrift_struct(buf, pos)
    raise _Unsupported(f"thrift type {kind}")


def _thrift_struct(buf: Any, pos: int) -> tuple[dict[int, Any], int]:
    fields: dict[int, Any] = {}
    last = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        kind, delta = head & 0x0F, head >> 4
        if delta:
            last += delta
        else:
            last, pos = _zigzag(buf, pos)
        fields[last], pos = _thrift_value(buf, pos, kind)


def _levels(buf: Any, pos: int, end: int, bit_width: int, n: int) -> list[int]:
    """n levels of the RLE / bit-packed hybrid encoding in buf[pos:end]."""
    out: list[int] = []
    width = (bit_width + 7) // 8
    mask = (1 << bit_width) - 1
    while len(out) < n:
        if pos >= end:
            raise _Unsupported("levels run short")
        head, pos = _varint(buf, pos)
        if head & 1:  # bit-packed groups of 8
            count = (head >> 1) * 8
            bits = int.from_bytes(buf[pos : pos + count * bit_width // 8], "little")
            pos += count * bit_width // 8
            out.extend((bits >> (j * bit_width)) & mask for j in range(count))
        else:
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
            out.extend([value] * (head >> 1))
    return out[:n]


def plain_value_spans(
    buf: Any, offset: int, size: int, rows: int, max_def: int
) -> list[tuple[int, int] | None]:
    """(start, length) in buf of each row's value in an uncompressed PLAIN BYTE_ARRAY column chunk
    (buf[offset:offset + size], no dictionary, not repeated); None for a null row."""
    spans: list[tuple[int, int] | None] = []
    end, width = offset + size, max_def.bit_length()
    pos = offset
    while len(spans) < rows:
        if pos >= end:
            raise _Unsupported("column chunk ends early")
        header, body = _thrift_struct(buf, pos)
        page_type, page_size = header.get(1), header.get(3)
        if page_type is None or page_size is None:
            raise _Unsupported("page header")
        pos = body + page_size
        if page_type == _DATA_PAGE:
            info = header.get(5) or {}
            n, encoding = info.get(1), info.get(2)
            if max_def and info.get(3) != _RLE:
                raise _Unsupported("definition level encoding")
            start = body
            if max_def:
                length = _U32.unpack_from(buf, body)[0]
                levels = _levels(buf, body + 4, body + 4 + length, width, n or 0)
                start = body + 4 + length
        elif page_type == _DATA_PAGE_V2:
            info = header.get(8) or {}
            n, encoding = info.get(1), info.get(4)
            def_bytes, rep_bytes = info.get(5, 0), info.get(6, 0)
            if rep_bytes:
                raise _Unsupported("repeated column")
            if max_def:
                levels = _levels(buf, body, body + def_bytes, width, n or 0)
            start = body + def_bytes
        elif page_type == _INDEX_PAGE:
            continue
        else:  # a dictionary page, or something newer
            raise _Unsupported(f"page type {page_type}")
        if encoding != _PLAIN or n is None:
            raise _Unsupported(f"encoding {encoding}")
        if not max_def:
            levels = [0] * n
        for level in levels:
            if level == max_def:
                length = _U32.unpack_from(buf, start)[0]
                spans.append((start + 4, length))
                start += 4 + length
            else:
                spans.append(None)
        if start > pos:
            raise _Unsupported("values overrun the page")
    if len(spans) != rows or pos != end:
        raise _Unsupported("row count or chunk size mismatch")
    return spans


@dataclass
class _FastGroup:
    """A row group of a media struct column read a value at a time: where each `bytes` value lies
    in the shard, and (on the first read() that needs them) the struct's other fields."""

    spans: list[tuple[int, int] | None]
    rows: list[dict[str, Any] | None] | None = None  # the struct without `bytes`, per row


class RowReader:
    """Reads single rows (a few columns) of indexed Parquet shards; lazy and fork-safe.

    At most max_open shards stay open per process (a paper-scale split has thousands of shards,
    more than a process may hold descriptors for), and cache_size row groups stay decoded. With
    one media column ({bytes, path} struct, `bytes` stored as publish writes it), rows are read a
    value at a time (see the module docstring): only the value read is copied.
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
        self._maps: dict[int, mmap.mmap] = {}
        self._cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self._fast: OrderedDict[tuple[int, int], _FastGroup | None] = OrderedDict()

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
                old, handle = self._files.popitem(last=False)
                handle.close()
                mapped = self._maps.pop(old, None)
                if mapped is not None:
                    mapped.close()
        else:
            self._files.move_to_end(k)
        return pf

    def _map(self, k: int) -> mmap.mmap:
        """A read-only memory map of shard k (opened with, and closed with, its ParquetFile)."""
        self._file(k)
        mapped = self._maps.get(k)
        if mapped is None:
            with open(self.index.files[k], "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[k] = mapped
        return mapped

    def row_group(self, k: int, g: int) -> pa.Table:
        """Row group g of shard k (the reader's columns), from the cache when there."""
        if os.getpid() != self._pid:  # forked: do not share handles or cache with the parent
            self._reset()
        key = (k, g)
        table = self._cache.get(key)
        if table is not None:
            self._cache.move_to_end(key)
            return table
        table = self._file(k).read_row_group(g, columns=self.columns, use_threads=False)
        self._cache[key] = table
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return table

    def _fast_group(self, k: int, g: int) -> _FastGroup | None:
        """The value-at-a-time view of row group g of shard k, or None where it does not apply."""
        if os.getpid() != self._pid:
            self._reset()
        key = (k, g)
        if key in self._fast:
            self._fast.move_to_end(key)
            return self._fast[key]
        group = None
        if len(self.columns) == 1:
            try:
                group = self._open_fast_group(k, g)
            except (_Unsupported, IndexError, struct.error, ValueError, OSError):
                group = None
        self._fast[key] = group
        while len(self._fast) > _FAST_GROUPS:
            self._fast.popitem(last=False)
        return group

    def _open_fast_group(self, k: int, g: int) -> _FastGroup | None:
        pf = self._file(k)
        field = pf.schema_arrow.field(self.columns[0])
        if not pa.types.is_struct(field.type) or field.type.get_field_index("bytes") < 0:
            return None
        if not pa.types.is_binary(field.type.field("bytes").type):
            return None
        schema = pf.schema
        path = f"{self.columns[0]}.bytes"
        leaf = next((j for j in range(len(schema)) if schema.column(j).path == path), None)
        if leaf is None or schema.column(leaf).max_repetition_level:
            return None
        meta = pf.metadata.row_group(g)
        chunk = meta.column(leaf)
        if (
            chunk.compression != "UNCOMPRESSED"
            or chunk.has_dictionary_page
            or chunk.physical_type != "BYTE_ARRAY"
        ):
            return None
        spans = plain_value_spans(
            self._map(k),
            chunk.data_page_offset,
            chunk.total_compressed_size,
            meta.num_rows,
            schema.column(leaf).max_definition_level,
        )
        return _FastGroup(spans)

    def _struct_rows(self, k: int, g: int, group: _FastGroup) -> list[dict[str, Any] | None]:
        """The media struct of every row of the group without `bytes` (None: a null struct)."""
        if group.rows is None:
            name = self.columns[0]
            struct_type = self._file(k).schema_arrow.field(name).type
            fields = [struct_type.field(j).name for j in range(struct_type.num_fields)]
            rest = [f"{name}.{c}" for c in fields if c != "bytes"]
            if rest:
                table = self._file(k).read_row_group(g, columns=rest, use_threads=False)
                rows = table.column(name).to_pylist()
            else:  # only `bytes`: read the validity of the struct
                table = self._file(k).read_row_group(g, columns=[name], use_threads=False)
                rows = [None if v is None else {} for v in table.column(name).to_pylist()]
            group.rows = [None if row is None else {c: row.get(c) for c in fields} for row in rows]
        return group.rows

    def _value(self, k: int, group: _FastGroup, r: int) -> bytes | None:
        span = group.spans[r]
        if span is None:
            return None
        return self._map(k)[span[0] : span[0] + span[1]]

    def media(self, i: int) -> bytes | None:
        """The `bytes` of row i's media struct (the reader's one column); None when null."""
        k, g, r = int(self.index.file[i]), int(self.index.row_group[i]), int(self.index.row[i])
        group = self._fast_group(k, g)
        if group is not None:
            return self._value(k, group, r)
        value = self.row_group(k, g).column(self.columns[0])[r].as_py()
        return None if value is None else value["bytes"]

    def read(self, i: int) -> dict[str, object]:
        """Row i of the index as a dict of Python values."""
        k, g, r = int(self.index.file[i]), int(self.index.row_group[i]), int(self.index.row[i])
        group = self._fast_group(k, g)
        if group is not None:
            row = self._struct_rows(k, g, group)[r]
            if row is None:
                return {self.columns[0]: None}
            return {self.columns[0]: row | {"bytes": self._value(k, group, r)}}
        table = self.row_group(k, g)
        return {name: table.column(name)[r].as_py() for name in self.columns}

    def close(self) -> None:
        """Drop open files, memory maps and the caches."""
        for pf in self._files.values():
            pf.close()
        for mapped in self._maps.values():
            mapped.close()
        self._reset()


_FAST_GROUPS = 4096  # value-at-a-time row groups remembered per reader (a few KB each)

"""Where each item of a published dataset lives (file, row group, row), and a lazy row reader.

The index is a few small NumPy arrays built from the `label` column and the Parquet footers, cheap
to pickle into DataLoader workers. The reader opens Parquet files on first use in each process and
reads rows through pyarrow, keeping a few decoded row groups (publish closes a media row group at
about 4 MB). A hand-written reader that copied one value out of a row group instead of decoding it
saved nothing measurable next to decoding the crop (`benchmarks/loader.py`: -7 % to +12 % of the
loader's CPU per sample), so it was removed.
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


class RowReader:
    """Reads single rows (a few columns) of indexed Parquet shards; lazy and fork-safe.

    At most max_open shards stay open per process (a paper-scale split has thousands of shards,
    more than a process may hold descriptors for), and cache_size row groups stay decoded.
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
        self._cache: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()

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

    def media(self, i: int) -> bytes | None:
        """The `bytes` of row i's media struct (the reader's one column); None when null."""
        k, g, r = int(self.index.file[i]), int(self.index.row_group[i]), int(self.index.row[i])
        value = self.row_group(k, g).column(self.columns[0])[r]
        return value["bytes"].as_py() if value.is_valid else None

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

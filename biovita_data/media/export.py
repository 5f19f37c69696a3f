"""Bench media as files: every item of a build's bench id indexes written at its `file_path`.

The bench's index files name each medium by `file_path` (`audio/<source>/<record_id>.<ext>`),
while materialize stores the bytes inside Parquet shards (OUT/media/<modality>/shard-*.parquet;
a segmented recording as `<record_id>_sNNN.flac` rows). Exporting writes the stored bytes of each
indexed item (segment 0 of a segmented recording, as the evaluation embeds it) to DIR/file_path,
so the original release's `extract_features.py` reads real audio and photos. The bytes keep their
stored format (a transcoded or segmented recording is FLAC whatever the extension; decoders read
the header). A re-run rewrites only files whose content differs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.tables import write_bytes_atomic
from biovita_data.curate.bench.csv_layout import (
    SUBSETS,
    index_csv_path,
    index_parquet_path,
    media_keys,
    read_index_csv,
)
from biovita_data.media.store import MediaStore

MEDIA_MODALITIES = ("audio", "image")
_KEYS = ["source", "record_id"]


@dataclass
class ExportResult:
    """What an export wrote: counts, and the indexed items the media shards do not hold."""

    written: int  # files (re)written
    unchanged: int  # files already there with the same bytes
    bytes_written: int
    missing: pl.DataFrame  # subset, modality, id, file_path, source, record_id

    @property
    def files(self) -> int:
        """Files present under DIR for the bench."""
        return self.written + self.unchanged


def bench_media(out: Path) -> pl.DataFrame:
    """Every medium of OUT/bench/<subset>/ids/: subset, modality, id, file_path, source,
    record_id (Parquet indexes when there, else the official CSVs)."""
    frames = []
    for subset in SUBSETS:
        bench = layout.bench_dir(out, subset)
        for modality in MEDIA_MODALITIES:
            parquet, csv = index_parquet_path(bench, modality), index_csv_path(bench, modality)
            if parquet.is_file():
                index = pl.read_parquet(parquet)
            elif csv.is_file():
                index = read_index_csv(csv, modality)
            else:
                continue
            keys = media_keys(index).join(index.select("id", "file_path"), on="id")
            frames.append(
                keys.select(
                    pl.lit(subset).alias("subset"),
                    pl.lit(modality).alias("modality"),
                    "id",
                    "file_path",
                    *_KEYS,
                )
            )
    if not frames:
        raise FileNotFoundError(f"no bench id indexes under {out / 'bench'}: run the bench stage")
    return pl.concat(frames)


def _target(root: Path, file_path: str, item: str) -> Path:
    """DIR/file_path, refusing a path that leaves DIR."""
    dest = (root / file_path).resolve()
    if file_path.startswith("/") or not dest.is_relative_to(root):
        raise ValueError(f"{item}: file_path {file_path!r} leaves the export folder")
    return dest


def _same_bytes(path: Path, sha256: str) -> bool:
    if not path.is_file():
        return False
    return hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def export_bench_media(out: str | os.PathLike[str], to: str | os.PathLike[str]) -> ExportResult:
    """Write every medium of OUT's bench id indexes at DIR/<file_path> from the media shards."""
    out, root = Path(out), Path(to).resolve()
    store = MediaStore.of(out)  # OUT/media, or the --media-root materialize used
    items = bench_media(out)
    written = unchanged = size = 0
    missing = []
    for modality in MEDIA_MODALITIES:
        wanted = items.filter(pl.col("modality") == modality)
        if not wanted.height:
            continue
        stored_path = layout.media_index_path(out, modality)
        if not stored_path.is_file():
            raise FileNotFoundError(f"{stored_path}: missing (run materialize first)")
        stored = (
            pl.read_parquet(stored_path, columns=[*_KEYS, "segment", "shard", "sha256"])
            .filter(pl.col("segment") == 0)
            .unique(_KEYS, keep="first", maintain_order=True)
        )
        files = wanted.unique(["file_path"], keep="first", maintain_order=True)
        found = files.join(stored, on=_KEYS, how="left")
        missing.append(wanted.join(stored, on=_KEYS, how="anti"))
        found = found.filter(pl.col("shard").is_not_null())
        for (shard,), rows in found.partition_by("shard", as_dict=True).items():
            todo = []
            for r in rows.iter_rows(named=True):
                dest = _target(root, r["file_path"], f"{r['subset']} {modality} id {r['id']}")
                if _same_bytes(dest, r["sha256"]):
                    unchanged += 1
                else:
                    todo.append((r["source"], r["record_id"], dest))
            if not todo:
                continue
            want = pl.DataFrame(
                [(s, rid) for s, rid, _ in todo], schema=_KEYS, orient="row"
            ).unique()
            with store.open(store.shard(modality, int(shard))) as f:
                table = pq.read_table(f, columns=[*_KEYS, "segment", "bytes"])
            data = (
                pl.from_arrow(table)
                .filter(pl.col("segment") == 0)
                .select(*_KEYS, "bytes")
                .join(want, on=_KEYS, how="semi")
            )
            blobs = {(s, rid): b for s, rid, b in data.iter_rows()}
            for s, rid, dest in todo:
                blob = blobs.get((s, rid))
                if blob is None:
                    raise ValueError(
                        f"{modality} {s} {rid}: listed in {stored_path} but not in shard {shard}"
                    )
                write_bytes_atomic(blob, dest)
                written += 1
                size += len(blob)
    gone = pl.concat(missing) if missing else items.clear()
    return ExportResult(written, unchanged, size, gone.select(items.columns))

"""The dedup stage: materialized media -> duplicate groups (OUT/manifests/duplicates.parquet).

Reads the fingerprint materialize stored with every kept file of OUT/media/<modality> (made
from the decode that verified it; media/fingerprint.py), or, for a file stored without one,
fingerprints its decoded content here, and groups records by
- exact: the same exact hash (decoded, resampled PCM / decoded pixels), whatever the container;
- near: audio landmarks agreeing at one time offset (NEAR_MATCHES, NEAR_SCORE); photos whose PDQ
  hashes differ in at most PDQ_THRESHOLD of 256 bits;
- metadata: same species, recordist/observer, date and coordinates rounded to 0.01 degree in
  two sources (a candidate only: it does not bind the split).
Candidates come from an inverted index (audio: landmark hash -> records of one genus, hashes in
more than MAX_POSTINGS records dropped; photos: the pairs within one species), never all pairs.
The landmarks are spilled to disk by genus while fingerprinting, so memory holds one shard of
media and one bucket of landmarks. The buckets are searched side by side by worker processes
(engine `local`) or as Ray tasks on a cluster's nodes (engine `ray`: each bucket's file travels
through Ray's object store, so the nodes need no shared folder). A record without a usable
fingerprint gets a
`no_fingerprint` row in failures.parquet (stage dedup) and is matched by its exact hash only.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from biovita_data.core import environ, layout
from biovita_data.core.memory import available_memory
from biovita_data.core.progress import LogProgress
from biovita_data.core.schemas import DUPLICATES, FAILURE, MEDIA
from biovita_data.core.tables import read_table, replace_failures, write_table
from biovita_data.media import fingerprint as fp
from biovita_data.media import landmark_search
from biovita_data.media.settings import check_engine
from biovita_data.media.store import MediaStore

if TYPE_CHECKING:
    from biovita_data.curate.split import SplitResult

STAGE = "dedup"
# audio: a pair is near when NEAR_MATCHES landmarks agree at the best offset (+-1 frame) and
# NEAR_SCORE of the smaller recording's do, or 2 x NEAR_MATCHES do. Measured with FAN_OUT 3
# (benchmarks/dedup.py --copies 10 and the default world): copies agree on 23 or more in the
# default world (3 or more in the tiny one's hardest 1 %), other recordings of one species of
# 3-40 s on at most 4, 150 s ones (12,000 landmarks each) on at most 6, a share of 0.05 %.
NEAR_MATCHES = 10
NEAR_SCORE = 0.06
MAX_POSTINGS = 50  # a landmark hash in more recordings than this says nothing (dropped)
JOIN_AGREEMENTS = 1_000_000  # hash agreements a search thread holds at a time (~80 MB)
# photos: at most this many of PDQ's 256 bits differ (measured on 40 photos: copies resized,
# recompressed or cropped 5 % <= 28, other photos >= 90; benchmarks/dedup.py)
PDQ_THRESHOLD = 64


@dataclass
class DedupResult:
    records: dict[str, int] = field(default_factory=dict)  # modality -> fingerprinted records
    groups: dict[str, int] = field(default_factory=dict)  # kind -> groups
    members: int = 0
    no_fingerprint: int = 0
    pairs: dict[str, int] = field(default_factory=dict)  # "a|b" sources -> groups spanning them
    split: SplitResult | None = None  # the split run again once content groups were found


Segment = tuple[float, bytes | None, bytes | None]  # offset_s, stored bytes, packed fingerprint


def read_media(out: Path, modality: str) -> Iterator[tuple[str, str, list[Segment]]]:
    """(source, record_id, [(offset_s, bytes, fingerprint) per segment]) of every kept record,
    one shard at a time (materialize writes a record's segments into one shard): memory holds
    one shard. The fingerprints materialize stored are read instead of the bytes; the bytes
    only for a shard that has files without one (an older shard, `--no-fingerprints`) or with
    one of an older fingerprint version."""
    index_path = layout.media_index_path(out, modality)
    if not index_path.exists():
        return
    index = pl.read_parquet(index_path).filter(pl.col("kept"))
    store = MediaStore.of(out, None)
    keys = ["source", "record_id", "segment", "offset_s"]
    for shard in sorted(index["shard"].unique().to_list()):
        with store.open(store.shard(modality, shard)) as f:
            pf = pq.ParquetFile(f)
            stored = "fingerprint" in pf.schema_arrow.names
            t = pf.read(columns=[*keys, "fingerprint"]) if stored else None
            if t is None or not _all_current(t["fingerprint"]):
                # files to decode (none stored, or an older version): their bytes too
                t = pf.read(columns=[*keys, "bytes", *(["fingerprint"] if stored else [])])
        rows = pl.from_arrow(t).join(
            index.filter(pl.col("shard") == shard).select("source", "record_id", "segment"),
            on=["source", "record_id", "segment"],
        )
        records: dict[tuple[str, str], list[Segment]] = {}
        for r in rows.sort("source", "record_id", "segment").iter_rows(named=True):
            key = (r["source"], r["record_id"])
            segment = (r["offset_s"] or 0.0, r.get("bytes"), r.get("fingerprint"))
            records.setdefault(key, []).append(segment)
        yield from ((s, rid, segs) for (s, rid), segs in records.items())


def _all_current(stored: pa.ChunkedArray) -> bool:
    """Every file of a shard has a stored fingerprint of this version (read by their tags)."""
    tags = pc.binary_slice(stored, 0, 4)
    return pc.all(pc.is_in(tags, value_set=pa.array(fp.CURRENT, stored.type))).as_py() is True


def fingerprint_record(modality: str, segments: list[Segment]) -> fp.Fingerprint:
    """One record's fingerprint: the stored one, else of its decoded stored file; a segmented
    recording's joined from its segments' (fingerprint.join_segments)."""
    parts = [(off, fp.unpack(made) if fp.current(made) else _decode(modality, data))
             for off, data, made in segments]  # fmt: skip
    return parts[0][1] if modality == "image" else fp.join_segments(parts)


def _decode(modality: str, data: bytes | None) -> fp.Fingerprint:
    if data is None:
        raise ValueError("neither a stored fingerprint nor the file's bytes")
    if modality == "image":
        from PIL import Image

        return fp.image_fingerprint(Image.open(io.BytesIO(data)))
    return fp.audio_fingerprint(*fp.decode_audio(data))


_PAIRS = {"a": pl.Int64, "b": pl.Int64, "score": pl.Float64, "matched": pl.Int64}


def audio_pairs(prints: pl.DataFrame, threads: int = 1) -> pl.DataFrame:
    """Near audio pairs (a < b record numbers) with score and matched landmarks, searched within
    each `block` (the genus: a copy carries its original's name or a congener's) when prints
    has that column, else among all: memory and time grow with the largest block, not the
    corpus (benchmarks/dedup_scale.py projects the paper's scale); `threads` search one block."""
    rows = prints.filter(pl.col("hashes").is_not_null()) if prints["hashes"].null_count else prints
    if "block" not in rows.columns:
        found = [_block_pairs(rows, threads)] if rows.height >= 2 else []
        return pl.concat(found) if found else pl.DataFrame(schema=_PAIRS)
    members = rows.with_row_index("row").group_by("block", maintain_order=True).agg("row")
    found = [_block_pairs(rows[idx], threads)  # one block's copy at a time
             for idx in members["row"].to_list() if len(idx) >= 2]  # fmt: skip
    return pl.concat(found) if found else pl.DataFrame(schema=_PAIRS)


def _block_pairs(rows: pl.DataFrame, threads: int = 1) -> pl.DataFrame:
    """audio_pairs within one block: landmark_search over its landmarks, then the rule."""
    table = rows.select("hashes", "times").to_arrow()
    lengths = pc.list_value_length(table["hashes"]).to_numpy(zero_copy_only=False)
    records = np.repeat(np.arange(rows.height, dtype=np.int32), lengths)
    hashes = pc.list_flatten(table["hashes"]).to_numpy(zero_copy_only=False)
    times = pc.list_flatten(table["times"]).to_numpy(zero_copy_only=False)
    a, b, matched = landmark_search.block_pairs(
        records, hashes, times, max_postings=MAX_POSTINGS, min_matches=NEAR_MATCHES,
        chunk=JOIN_AGREEMENTS, threads=threads,
    )  # fmt: skip
    ids, n = rows["i"].to_numpy(), rows["n"].to_numpy()
    found = pl.DataFrame({"a": np.minimum(ids[a], ids[b]), "b": np.maximum(ids[a], ids[b]),
                          "matched": matched, "n": np.minimum(n[a], n[b])})  # fmt: skip
    found = found.with_columns(score=pl.col("matched") / pl.col("n"))
    keep = (pl.col("matched") >= 2 * NEAR_MATCHES) | (
        (pl.col("matched") >= NEAR_MATCHES) & (pl.col("score") >= NEAR_SCORE)
    )
    return found.filter(keep).select(
        pl.col("a").cast(pl.Int64), pl.col("b").cast(pl.Int64), "score",
        pl.col("matched").cast(pl.Int64),
    )  # fmt: skip


def image_pairs(prints: pl.DataFrame) -> pl.DataFrame:
    """Near photo pairs (a < b) of one species, score 1 - distance / 256, and the distance.

    Candidates are the photos of one species (copies carry one name; at the paper's scale
    ~160 photos a species, 2 x 10^8 comparisons, a few minutes of numpy): every pair of a
    species block is compared (whole vs whole, either centre vs the other whole)."""
    rows = prints.filter(pl.col("pdq").is_not_null())
    out: dict[str, list] = {"a": [], "b": [], "score": [], "matched": []}
    for block in rows.partition_by("species_id"):
        if block.height < 2:
            continue
        bits = np.unpackbits(
            np.frombuffer(b"".join(block["pdq"].to_list()), np.uint8).reshape(block.height, 64),
            axis=1,
        ).astype(np.int32)
        whole, centre = bits[:, :256], bits[:, 256:]

        def dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return x @ (1 - y).T + (1 - x) @ y.T

        d = np.minimum(dist(whole, whole), np.minimum(dist(centre, whole), dist(whole, centre)))
        ia, ib = np.nonzero(np.triu(d <= PDQ_THRESHOLD, k=1))
        ids = block["i"].to_numpy()
        for x, y in zip(ia.tolist(), ib.tolist(), strict=True):
            out["a"].append(int(ids[x])), out["b"].append(int(ids[y]))
            out["score"].append(1 - int(d[x, y]) / 256), out["matched"].append(int(d[x, y]))
    return pl.DataFrame(out, schema={"a": pl.Int64, "b": pl.Int64, "score": pl.Float64,
                                     "matched": pl.Int64})  # fmt: skip


def _components(n: int, edges: list[tuple[int, int]]) -> list[int]:
    """Union-find roots (the smallest member) of n nodes joined by edges."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return [root(x) for x in range(n)]


def content_groups(
    modality: str, prints: pl.DataFrame, near: pl.DataFrame | None = None
) -> list[dict]:
    """DUPLICATES rows of one modality's exact and near groups (`near`: the near pairs when
    already searched, e.g. from a landmark spill)."""
    exact = (  # in the order of first appearance: the same rows, in the same order, every run
        prints.group_by("exact", maintain_order=True)
        .agg(pl.col("i").sort())
        .filter(pl.col("i").list.len() > 1)
    )
    edges = [(ids[0], j, 1.0, "exact") for ids in exact["i"].to_list() for j in ids[1:]]
    copy_of = {j: ids[0] for ids in exact["i"].to_list() for j in ids[1:]}
    if near is None:
        near = audio_pairs(prints) if modality == "audio" else image_pairs(prints)
    for a, b, score, matched in near.iter_rows():
        what = f"{matched} landmarks at one offset" if modality == "audio" else f"PDQ {matched}"
        edges.append((a, b, score, what))
    roots = _components(prints.height, [(a, b) for a, b, *_ in edges])
    by_group: dict[int, list] = {}
    for a, b, score, what in edges:
        by_group.setdefault(roots[a], []).append((a, b, score, what))
    rows = []
    keys = prints.select("source", "record_id").rows()
    for root, group in by_group.items():
        members = sorted({m for a, b, *_ in group for m in (a, b)})
        gid = f"{modality}:{keys[root][0]}:{keys[root][1]}"
        for m in members:
            mine = [(s, w, b if a == m else a) for a, b, s, w in group if m in (a, b)]
            score, what, other = max(mine)
            # exact: joined to the group by its exact hash; near: by its landmarks / PDQ only
            kind = "exact" if any(w == "exact" for _, w, _ in mine) else "near"
            rows.append({
                "group_id": gid, "modality": modality, "source": keys[m][0],
                "record_id": keys[m][1], "kind": kind, "score": float(score),
                "evidence": f"{what} with {keys[other][0]} {keys[other][1]}",
                "copy_of": ":".join(keys[copy_of[m]]) if m in copy_of else None,
            })  # fmt: skip
    return rows


def metadata_groups(out: Path, modality: str, taken: set[tuple[str, str]]) -> list[dict]:
    """Candidates: same species + recordist/observer + date + rounded place in 2+ sources."""
    media = pl.from_arrow(read_table(layout.media_manifest_path(out, modality), MEDIA))
    key = ["species_id", "who", "date", "lat", "lon"]
    df = media.with_columns(
        who=pl.col("attribution")
        .str.to_lowercase()
        .str.replace_all(r"[^a-z ]", "")
        .str.strip_chars(),
        lat=pl.col("latitude").round(2),
        lon=pl.col("longitude").round(2),
    ).drop_nulls(key)
    df = (
        df.filter(
            ~pl.struct("source", "record_id").is_in(
                [{"source": s, "record_id": r} for s, r in taken]
            )
        )
        if taken
        else df
    )
    groups = (
        df.group_by(key).agg("source", "record_id").filter(pl.col("source").list.n_unique() > 1)
    )
    rows = []
    for g in groups.sort(key).iter_rows(named=True):
        pairs = sorted(zip(g["source"], g["record_id"], strict=True))
        gid = f"{modality}:meta:{pairs[0][0]}:{pairs[0][1]}"
        for s, r in pairs:
            evidence = f"same species, recordist, date {g['date']}, place"
            rows.append({"group_id": gid, "modality": modality, "source": s, "record_id": r,
                         "kind": "metadata", "score": None, "evidence": evidence})  # fmt: skip
    return rows


def dedup(
    out: Path,
    *,
    modalities: tuple[str, ...] = ("audio", "image"),
    workers: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    console: Console | None = None,
) -> DedupResult:
    """Fingerprint the materialized media; write duplicates.parquet and the no-fingerprint notes.
    `workers`: processes searching the landmark spill's buckets side by side (None: cores);
    `engine` "ray": the buckets are Ray tasks instead, on the cluster at `ray_address` (None: a
    local Ray of `workers` CPUs); progress on `console` (in a log: a plain line every 5 % or
    30 s)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    check_engine(engine, ray_address)
    search = Search(workers or os.cpu_count() or 1, engine, ray_address)
    if not any(layout.media_index_path(out, m).exists() for m in modalities):
        raise FileNotFoundError(f"{out / 'media'}: no materialized media (run materialize first)")
    result = DedupResult()
    rows: list[dict] = []
    notes: list[dict] = []
    for stale in out.glob(".dedup-*"):  # a spill a killed run left behind
        shutil.rmtree(stale, ignore_errors=True)
    console = console or Console(quiet=True)
    with LogProgress(console=console, transient=False) as progress:  # records, then buckets
        for m in modalities:
            rows += _dedup_modality(out, m, search, notes, result, progress)
    table = pa.Table.from_pylist(rows, schema=DUPLICATES)
    write_table(table, layout.duplicates_path(out))
    sources = sorted({n["source"] for n in notes} | set(_sources(out)))
    replace_failures(out, STAGE, sources, pa.Table.from_pylist(notes, schema=FAILURE))
    dups = pl.from_arrow(table)
    result.members = dups.height
    result.no_fingerprint = sum(n["reason"] == "no_fingerprint" for n in notes)
    if dups.height:
        per = dups.group_by("group_id", "kind").agg(pl.col("source").unique().sort())
        result.groups = dict(sorted(per.group_by("kind").len().iter_rows()))
        pairs = per.filter(pl.col("kind") != "metadata").with_columns(
            pl.col("source").list.join("|")
        )
        result.pairs = dict(sorted(pairs.group_by("source").len().iter_rows()))
    return result


@dataclass(frozen=True)
class Search:
    """Where the near audio search runs: `workers` local processes, or Ray tasks."""

    workers: int
    engine: str = "local"
    ray_address: str | None = None


def _dedup_modality(
    out: Path,
    m: str,
    search: Search,
    notes: list[dict],
    result: DedupResult,
    progress: LogProgress,
) -> list[dict]:
    """One modality's DUPLICATES rows; its notes appended to `notes`, its count to `result`."""
    result.records[m] = 0
    if not layout.media_index_path(out, m).exists():  # not materialized: nothing to show
        return []
    prints = []
    species = _species(out, m)
    blocks = {(s, r): b for s, r, b in species.select("source", "record_id", "block").rows()}
    spill = None
    if m == "audio":
        folder = Path(tempfile.mkdtemp(prefix=".dedup-", dir=out))
        spill = _LandmarkSpill(folder, spill_buckets(species.height))
    task = progress.add_task(f"dedup {m}: fingerprints", total=_kept_records(out, m))
    for k, (source, rid, segments) in enumerate(read_media(out, m)):
        try:
            f = fingerprint_record(m, segments)
        except Exception as exc:  # an unreadable stored file: noted, never merged
            f = fp.Fingerprint(m, bytes(32), none=f"undecodable: {type(exc).__name__}")
            f.exact = f"unreadable:{source}:{rid}".encode()
        if f.none:
            notes.append({"stage": STAGE, "source": source, "modality": m,
                          "record_id": rid, "name": None, "reason": "no_fingerprint",
                          "detail": f.none})  # fmt: skip
        n = 0 if f.hashes is None else len(f.hashes)
        prints.append({"i": k, "source": source, "record_id": rid, "exact": f.exact,
                       "n": n, "pdq": f.pdq})  # fmt: skip
        if n and spill is not None:
            spill.add(k, blocks.get((source, rid)), f.hashes, f.times)
        progress.advance(task)
    result.records[m] = len(prints)
    near = None
    if spill is not None:  # one bucket of landmarks at a time in each worker
        spill.flush()
        task = progress.add_task(f"dedup {m}: near search", total=len(spill.writers))
        if search.engine == "ray":
            near = spill.pairs_on_ray(search, lambda: progress.advance(task))
        else:
            processes, threads, note = spill.search_plan(search.workers)
            if note:
                progress.console.print(f"dedup {m}: {note}")
            near = spill.pairs(processes, lambda: progress.advance(task), threads)
    if not prints:
        return []
    df = pl.DataFrame(prints, schema_overrides={"pdq": pl.Binary}).join(
        species, on=["source", "record_id"], how="left", maintain_order="left"
    )
    found = content_groups(m, df, near)
    notes += [{"stage": STAGE, "source": r["source"], "modality": m,
               "record_id": r["record_id"], "name": None, "reason": "exact_copy",
               "detail": f"the same decoded content as {r['copy_of']}: bench and publish "
                         "use that one"} for r in found if r["copy_of"]]  # fmt: skip
    taken = {(r["source"], r["record_id"]) for r in found}
    return found + metadata_groups(out, m, taken)


def _kept_records(out: Path, modality: str) -> int:
    """Kept records in the modality's media index (what read_media yields)."""
    path = layout.media_index_path(out, modality)
    if not path.exists():
        return 0
    kept = pl.scan_parquet(path).filter(pl.col("kept")).select("source", "record_id").unique()
    return int(kept.select(pl.len()).collect().item())


SPILL_BUCKETS = 64  # landmark files per run, by block: the near search holds one file at a time
BUCKET_RECORDS = 20_000  # ... at least, so that a file holds about one large genus on average
SPILL_RECORDS = 500  # records fingerprinted between two writes to the spill
# below this many landmarks (~2 h of audio) the buckets are searched in this process: starting
# worker processes would cost more than the search
PARALLEL_LANDMARKS = 1_000_000
# What a searching process holds (landmark_search's figures, benchmarks/dedup_scale.py): its
# bucket file as read (8 bytes a landmark), the largest block's arrays at their peak (52),
# JOIN_AGREEMENTS agreements per thread (~80 bytes each), and Python with its libraries
SEARCH_FILE_BYTES = 8
SEARCH_BLOCK_BYTES = 52
SEARCH_AGREEMENT_BYTES = 80
SEARCH_BASE_BYTES = 400 << 20
MEMORY_SHARE = 0.8  # of the memory available when the search starts
_SPILL = pa.schema([("i", pa.int64()), ("block", pa.string()), ("n", pa.int64()),
                    ("hashes", pa.list_(pa.uint32())),  # 8 bytes a landmark
                    ("times", pa.list_(pa.int32()))])  # fmt: skip


class _LandmarkSpill:
    """Audio landmarks on disk (a temp folder, removed by `pairs`), bucketed by block (genus), so
    neither fingerprinting nor the near search holds the corpus's landmarks in memory."""

    def __init__(self, folder: Path, buckets: int = SPILL_BUCKETS) -> None:
        self.folder = folder
        self.buckets = buckets
        self.rows: list[dict] = []
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.landmarks = 0
        self.per_bucket: Counter[int] = Counter()  # landmarks of each bucket file
        self.per_block: Counter[str | None] = Counter()  # landmarks of each block

    def add(self, i: int, block: str | None, hashes: np.ndarray, times: np.ndarray) -> None:
        row = {"i": i, "block": block, "n": len(hashes)}
        self.landmarks += len(hashes)
        self.per_block[block] += len(hashes)
        self.per_bucket[self.bucket(block)] += len(hashes)
        self.rows.append(
            {**row, "hashes": hashes.astype(np.uint32), "times": times.astype(np.int32)}
        )
        if len(self.rows) >= SPILL_RECORDS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=_SPILL)
        buckets = [self.bucket(b) for b in table["block"].to_pylist()]
        for bucket in sorted(set(buckets)):
            part = table.filter(pa.array([x == bucket for x in buckets]))
            if bucket not in self.writers:
                path = self.folder / f"bucket-{bucket:03d}.parquet"
                self.writers[bucket] = pq.ParquetWriter(path, _SPILL)
            self.writers[bucket].write_table(part)
        self.rows = []

    def bucket(self, block: str | None) -> int:
        """The spill file a block's landmarks go to (a block never spans two)."""
        return zlib.crc32((block or "").encode()) % self.buckets

    def search_plan(self, workers: int, available: int | None = None) -> tuple[int, int, str]:
        """(processes, threads each, note): at most `workers` processes side by side, fewer when
        that many would not fit in MEMORY_SHARE of the `available` bytes (None: what the
        machine has now), each estimated at its largest bucket file and largest block; the
        note says why when the count was lowered (else "")."""
        cores = os.cpu_count() or 1
        wanted = max(1, min(workers, len(self.per_bucket) or 1))
        if wanted == 1 or self.landmarks < PARALLEL_LANDMARKS:
            return 1, cores, ""
        budget = MEMORY_SHARE * (available if available is not None else available_memory())
        fixed = self.search_bytes(threads=0)

        def need(n: int) -> float:
            return n * (fixed + max(1, cores // n) * JOIN_AGREEMENTS * SEARCH_AGREEMENT_BYTES)

        fit = next((n for n in range(wanted, 0, -1) if need(n) <= budget), 1)
        note = ""
        if fit < wanted:
            note = (
                f"near search: {fit} process(es) side by side, not {wanted}: each holds about "
                f"{need(wanted) / wanted / 2**30:.1f} GB (its largest bucket and block, its "
                f"threads' agreements), "
                f"{budget / 2**30:.1f} GB of memory to use"
            )
        return fit, max(1, cores // fit), note

    def search_bytes(self, threads: int, bucket: int | None = None) -> int:
        """What one searching process holds for `bucket` (None: the largest bucket and block)
        with `threads` threads' agreements."""
        if bucket is None:
            landmarks, block = max(self.per_bucket.values()), max(self.per_block.values())
        else:
            landmarks = self.per_bucket[bucket]
            block = max(n for b, n in self.per_block.items() if self.bucket(b) == bucket)
        return (
            SEARCH_BASE_BYTES
            + SEARCH_FILE_BYTES * landmarks
            + SEARCH_BLOCK_BYTES * block
            + threads * JOIN_AGREEMENTS * SEARCH_AGREEMENT_BYTES
        )

    def closed_paths(self) -> list[Path]:
        """The bucket files, flushed and closed."""
        self.flush()
        for writer in self.writers.values():
            writer.close()
        return [self.folder / f"bucket-{b:03d}.parquet" for b in sorted(self.writers)]

    def pairs_on_ray(self, search: Search, done: Callable[[], None] | None = None) -> pl.DataFrame:
        """audio_pairs over every bucket, each a Ray task on whichever node has the CPUs and the
        memory it asks for (search_bytes of its bucket, at most the largest node's memory); a
        bucket's file goes to its node through the object store, at most one round of the
        cluster's CPUs at a time; the pairs in bucket order, as `pairs` gives them; then the
        folder removed."""
        from biovita_data.media.engines import ray_connected, ray_module

        ray = ray_module()
        try:
            paths = self.closed_paths()
            with ray_connected(search.ray_address, search.workers):
                nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
                node_cpus = max(int(n.get("CPU", 1)) for n in nodes)
                node_memory = max(int(n.get("memory", 0)) for n in nodes)
                total = sum(int(n.get("CPU", 1)) for n in nodes)
                threads = max(1, min(node_cpus, total // max(1, len(paths))))
                task = ray.remote(_bucket_pairs_of)
                running: dict[ray.ObjectRef, int] = {}
                results: dict[int, pl.DataFrame] = {}

                def collect() -> None:
                    ready, _ = ray.wait(list(running), num_returns=1)
                    results[running.pop(ready[0])] = ray.get(ready[0])
                    if done is not None:
                        done()

                for k, bucket in enumerate(sorted(self.writers)):
                    if len(running) >= max(1, total // threads):
                        collect()
                    memory = min(self.search_bytes(threads, bucket), node_memory or 2**62)
                    ref = task.options(num_cpus=threads, memory=memory).remote(
                        ray.put(paths[k].read_bytes()), threads
                    )
                    running[ref] = k
                while running:
                    collect()
            ordered = [results[k] for k in sorted(results)]
            return pl.concat(ordered) if ordered else pl.DataFrame(schema=_PAIRS)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def pairs(
        self,
        workers: int = 1,
        done: Callable[[], None] | None = None,
        threads: int | None = None,
    ) -> pl.DataFrame:
        """audio_pairs over every bucket (blocks never span two), by `workers` processes side by
        side when the spill holds PARALLEL_LANDMARKS or more, each with its share of the cores
        as threads within a block (`--workers 1`: one block in memory at a time, every core
        on it); `done` is called after each bucket; then the folder removed."""
        try:
            paths = self.closed_paths()
            if threads is None:  # else the caller's search_plan
                workers, threads, _ = self.search_plan(workers)
            if workers > 1:
                each = _pairs_in_processes(paths, workers, threads)
            else:
                each = (_bucket_pairs(path, threads) for path in paths)
            found = []
            for bucket in each:
                found.append(bucket)
                if done is not None:
                    done()
            return pl.concat(found) if found else pl.DataFrame(schema=_PAIRS)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def spill_buckets(records: int) -> int:
    """Landmark files for a corpus of `records`: SPILL_BUCKETS, more when each would hold more
    than BUCKET_RECORDS (a searching worker holds one file)."""
    return max(SPILL_BUCKETS, -(-records // BUCKET_RECORDS))


def _bucket_pairs(path: Path, threads: int = 1) -> pl.DataFrame:
    return audio_pairs(pl.read_parquet(path), threads)


def _bucket_pairs_of(data: bytes, threads: int) -> pl.DataFrame:
    """_bucket_pairs of a bucket file's bytes (a Ray task's argument)."""
    return audio_pairs(pl.read_parquet(io.BytesIO(data)), threads)


def _pairs_in_processes(paths: list[Path], workers: int, threads: int) -> Iterator[pl.DataFrame]:
    """_bucket_pairs of each path, in order as they finish, in a pool of fresh processes, each
    with its share of the cores."""
    with worker_pool(workers, threads) as pool:
        yield from pool.map(partial(_bucket_pairs, threads=threads), paths)


@contextlib.contextmanager
def worker_pool(workers: int, threads: int) -> Iterator[ProcessPoolExecutor]:
    """`workers` fresh interpreters whose Polars runs `threads` threads. Spawned, not forked from
    materialize's forkserver: Polars sizes its pool once, and the server's is sized for every
    core (never fork a process running Polars' threads either)."""
    spawn = multiprocessing.get_context("spawn")
    polars = {"POLARS_MAX_THREADS": str(threads)}  # read by Polars when a worker imports it
    with (
        environ.scoped(polars),
        ProcessPoolExecutor(workers, mp_context=spawn) as pool,
    ):
        yield pool


def _species(out: Path, modality: str) -> pl.DataFrame:
    """source, record_id, species_id and `block` (the species' genus) of the manifest's records."""
    path = layout.media_manifest_path(out, modality)
    cols = ["source", "record_id", "species_id"]
    if not path.exists():
        return pl.DataFrame(schema={"source": pl.String, "record_id": pl.String,
                                    "species_id": pl.Int64, "block": pl.String})  # fmt: skip
    records = pl.read_parquet(path, columns=cols).unique(["source", "record_id"])
    species = layout.species_path(out)
    if not species.exists():
        return records.with_columns(block=pl.lit(None, pl.String))
    genus = pl.read_parquet(species, columns=["species_id", "genus"]).rename({"genus": "block"})
    return records.join(genus, on="species_id", how="left")


def _sources(out: Path) -> list[str]:
    return sorted({s for m in ("audio", "image") for s in _manifest_sources(out, m)})


def _manifest_sources(out: Path, modality: str) -> list[str]:
    path = layout.media_manifest_path(out, modality)
    return (
        pl.read_parquet(path, columns=["source"])["source"].unique().to_list()
        if path.exists()
        else []
    )


def group_words(result: DedupResult) -> tuple[str, str]:
    """(groups by kind, content groups per source pair) in words."""
    kinds = ", ".join(f"{k} {v}" for k, v in result.groups.items()) or "none"
    pairs = ", ".join(f"{k.replace('|', ' + ')}: {v}" for k, v in result.pairs.items()) or "-"
    return kinds, pairs


def summary_line(result: DedupResult) -> str:
    """One line: groups by kind, and content groups per source pair."""
    kinds, pairs = group_words(result)
    return (
        f"dedup: {sum(result.records.values())} records fingerprinted, duplicate groups: {kinds} "
        f"({result.members} members); per source pair: {pairs}; "
        f"no fingerprint: {result.no_fingerprint}"
    )

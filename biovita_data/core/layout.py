"""The build folder's layout (docs/design.md, "File contracts of OUT"): every path, named once."""

from __future__ import annotations

from pathlib import Path

# Formats libsndfile decodes: kept as they are by materialize; anything else becomes FLAC.
KEPT_AUDIO_FORMATS = frozenset({"mp3", "flac", "ogg", "wav"})


# Each source's folder under OUT/raw (`official`: the original release's metadata table;
# `treeoflife-200m`: images drawn from TreeOfLife-200M's catalog by `import-tol`).
SOURCE_DIRS = {
    "xeno-canto": "xeno_canto",
    "inaturalist": "inaturalist",
    "inat-open-data": "inat_open_data",
    "gbif": "gbif",
    "official": "official",
    "treeoflife-200m": "treeoflife_200m",
}


def raw_root(out: Path) -> Path:
    return out / "raw"


def raw_dir(out: Path, source: str) -> Path:
    """A source's crawl state, parts and records (`records.parquet`)."""
    return raw_root(out) / SOURCE_DIRS.get(source, source)


def raw_records_path(out: Path, source: str) -> Path:
    return raw_dir(out, source) / "records.parquet"


def fetch_summary_path(out: Path) -> Path:
    return raw_root(out) / "fetch_summary.json"


def backbone_dir(out: Path) -> Path:
    return raw_root(out) / "backbone"


def gbif_citations_path(out: Path) -> Path:
    """OUT/raw/gbif/citation.json: each imported GBIF download's DOI and citation (import-dwca),
    credited in the dataset card."""
    return raw_dir(out, "gbif") / "citation.json"


def traits_cache_dir(out: Path) -> Path:
    """OUT/raw/traits: the public trait tables as downloaded, with their sizes and sha256."""
    return raw_root(out) / "traits"


# The published dataset (OUT/hf, a Hub repo): its configs and each config's splits.
CONFIGS = ("audio", "image", "species", "bench")
MEDIA_SPLITS = ("train", "test", "unseen")
SPLITS: dict[str, tuple[str, ...]] = {
    "audio": MEDIA_SPLITS,
    "image": MEDIA_SPLITS,
    "species": ("train",),
    "bench": ("test", "unseen"),
}
BENCH_SPLIT_OF_SUBSET = {"seen": "test", "unseen": "unseen"}


def manifests_dir(out: Path) -> Path:
    return out / "manifests"


def species_path(out: Path) -> Path:
    return manifests_dir(out) / "species.parquet"


def media_manifest_path(out: Path, modality: str) -> Path:
    """OUT/manifests/audio.parquet or image.parquet."""
    if modality not in ("audio", "image"):
        raise ValueError(f"modality must be audio or image, not {modality!r}")
    return manifests_dir(out) / f"{modality}.parquet"


def unmatched_path(out: Path) -> Path:
    return manifests_dir(out) / "unmatched.parquet"


def assignment_path(out: Path) -> Path:
    """OUT/manifests/assignment.parquet: every item's split, kept across builds (`split`)."""
    return manifests_dir(out) / "assignment.parquet"


def split_report_path(out: Path) -> Path:
    """OUT/manifests/split.json: the last split's settings, where it started from, what moved."""
    return manifests_dir(out) / "split.json"


def duplicates_path(out: Path) -> Path:
    """OUT/manifests/duplicates.parquet: duplicate groups (`dedup`), one unit each for `split`."""
    return manifests_dir(out) / "duplicates.parquet"


def crawl_record_path(out: Path) -> Path:
    """OUT/raw/crawl.json: the last crawl's settings and, per source and query, where it stands
    (result count, highest id, latest modification): what `update` continues from."""
    return raw_root(out) / "crawl.json"


def takedown_path(out: Path) -> Path:
    """OUT/raw/takedown.txt: record ids removed for good (`update --exclude`), with reasons."""
    return raw_root(out) / "takedown.txt"


def update_state_path(out: Path) -> Path:
    """OUT/raw/update.json: the running or last `update` (status, counts, requests)."""
    return raw_root(out) / "update.json"


def removed_path(out: Path) -> Path:
    """OUT/raw/removed.parquet: records that left raw on an update, with the reason."""
    return raw_root(out) / "removed.parquet"


def croissant_path(out: Path) -> Path:
    """OUT/hf/croissant.json: the published folder's Croissant 1.0 metadata."""
    return hf_dir(out) / "croissant.json"


def failures_path(out: Path) -> Path:
    """OUT/manifests/failures.parquet: every dropped or failed record, with stage and reason."""
    return manifests_dir(out) / "failures.parquet"


def bench_dir(out: Path, subset: str) -> Path:
    """OUT/bench/seen or OUT/bench/unseen: one BENCH folder in the official layout."""
    if subset not in ("seen", "unseen"):
        raise ValueError(f"subset must be seen or unseen, not {subset!r}")
    return out / "bench" / subset


def media_dir(out: Path, modality: str) -> Path:
    """OUT/media/audio or OUT/media/image: the shards materialize writes."""
    if modality not in ("audio", "image"):
        raise ValueError(f"modality must be audio or image, not {modality!r}")
    return out / "media" / modality


def media_shard_path(out: Path, modality: str, shard: int) -> Path:
    return media_dir(out, modality) / f"shard-{shard:05d}.parquet"


def media_index_path(out: Path, modality: str) -> Path:
    """OUT/media/<modality>/index.parquet: every stored file (kept or a duplicate), no bytes."""
    return media_dir(out, modality) / "index.parquet"


def hf_dir(out: Path) -> Path:
    """OUT/hf: the Hugging Face dataset folder publish writes."""
    return out / "hf"


def media_file_path(modality: str, source: str, record_id: str, file_format: str | None) -> str:
    """The relative path an item has once materialized: audio/<source>/<id>.<ext>, image/...jpg.

    Audio keeps its format when libsndfile reads it and becomes FLAC otherwise; images are JPEG.
    The bench's index files and the published dataset use this same path.
    """
    if modality == "image":
        ext = "jpg"
    else:
        fmt = (file_format or "").lower()
        ext = fmt if fmt in KEPT_AUDIO_FORMATS else "flac"
    return f"{modality}/{source}/{record_id}.{ext}"

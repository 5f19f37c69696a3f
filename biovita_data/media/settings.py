"""What materialize is asked to do: the stage's settings and the picklable unit of work."""

from __future__ import annotations

import os
from dataclasses import dataclass

from biovita_data.core.budget import check_max_failed

ENGINES = ("local", "ray")
MODALITIES = ("audio", "image")
# Bump when the bytes materialize writes for the same input change: finished shards are redone.
FORMAT_VERSION = 1


def check_engine(engine: str, ray_address: str | None) -> None:
    """ValueError unless `engine` is one of ENGINES and a Ray address comes with engine ray."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if ray_address and engine != "ray":
        raise ValueError("ray_address needs engine='ray'")


@dataclass
class MaterializeSettings:
    """Settings of the materialize stage (the CLI's options, one field each)."""

    engine: str = "local"  # local: threads + processes; ray: Ray Data
    ray_address: str | None = None  # a Ray cluster ("auto", "ray://host:10001"); None: local Ray
    # where workers write the shards: a folder or an fsspec URL (s3://bucket/prefix); None: the
    # one OUT/media/store.json recorded, else OUT/media. Credentials come from the environment.
    media_root: str | None = None
    workers: int | None = None  # CPU worker processes (local) or concurrent Ray tasks; None: cores
    image_size: int = 512  # images: at most this many px on the short side (never upscaled)
    segment_seconds: float = 60.0  # audio longer than this is cut into FLAC segments
    shard_size: int = 500  # manifest records per shard
    modalities: tuple[str, ...] = MODALITIES
    download_threads: int = 16  # I/O threads; the HTTP client's per-host caps still apply
    jpeg_quality: int = 90
    # each stored file's content fingerprint (for dedup) from the decode that verifies it
    fingerprints: bool = True
    throttle: bool = True  # per-host rate limits (off only against the sample world)
    retries: int = 6
    backoff_s: float = 0.5
    # the run fails (BudgetExceeded, after writing everything) when a modality's share of failed
    # records (duplicates excluded) exceeds this; 1.0: never
    max_failed: float = 0.5

    def __post_init__(self) -> None:
        check_engine(self.engine, self.ray_address)
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {bad}")
        for name in ("image_size", "shard_size", "download_threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers must be at least 1")
        if not self.segment_seconds > 0:
            raise ValueError("segment_seconds must be positive")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be within 1..100")
        self.max_failed = check_max_failed(self.max_failed)

    @property
    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1

    def process(self) -> ProcessSettings:
        return ProcessSettings(
            image_size=int(self.image_size),
            segment_seconds=float(self.segment_seconds),
            jpeg_quality=int(self.jpeg_quality),
            fingerprints=bool(self.fingerprints),
        )


@dataclass(frozen=True)
class ProcessSettings:
    """Everything that decides the bytes of a stored file (part of each shard's fingerprint),
    and whether content fingerprints are made (not part of it: a shard without them is still
    done; dedup decodes its files instead)."""

    image_size: int = 512
    segment_seconds: float = 60.0
    jpeg_quality: int = 90
    fingerprints: bool = True


@dataclass(frozen=True)
class WorkItem:
    """One manifest record to download and store."""

    modality: str
    source: str
    record_id: str
    media_url: str | None
    file_format: str | None
    name: str | None  # the scientific name, for failure rows

"""The settings of the build stages (light to import: the CLI takes its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AlignSettings:
    backbone: str = "inat"  # inat | path to a CSV/TSV
    synonyms: list[Path] = field(default_factory=list)
    min_audio: int = 1
    min_images: int = 1
    max_images_per_species: int | None = None
    seed: int = 0
    inaturalist_url: str = "https://api.inaturalist.org/v1"
    throttle: bool = True


@dataclass
class SplitSettings:
    seed: int = 0
    test_fraction: float = 0.1  # share of a seen species' items -> test
    unseen_max_audio: int = 2  # species with at most this many recordings are held out
    previous: Path | None = None  # an earlier build folder whose assignment is kept
    redraw: bool = False  # forget the kept assignment


@dataclass(frozen=True)
class BenchSettings:
    candidates: int = 100
    seed: int = 0
    max_images: int = 95
    max_clips: int = 28
    max_texts: int = 1
    max_queries_per_taxon: int = 25
    max_queries_per_task: int = 1024

    def group_cap(self, modality: str) -> int:
        """The most items of `modality` in one candidate taxon's group."""
        return {"audio": self.max_clips, "image": self.max_images, "text": self.max_texts}[modality]

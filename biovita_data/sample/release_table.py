"""The sample world's recordings as the original BioVITA release's audio metadata table (CSV)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from biovita_data.crawl.sources.release_table import COLUMNS
from biovita_data.sample.responses import sound_url
from biovita_data.sample.world import World

OFFICIAL_COLUMNS = COLUMNS  # the release's column order, as the importer reads it
SOURCE_CODES = {"xeno-canto": "xc", "inaturalist": "inat"}


def official_rows(world: World, root: str) -> list[dict[str, str]]:
    """One row per audio record a correct crawl keeps, Xeno-canto first, each by id."""
    root = root.rstrip("/")
    kept = [e for e in world.expected() if e.modality == "audio" and e.fetch == "keep"]
    kept.sort(key=lambda e: (list(SOURCE_CODES).index(e.source), e.record_id))
    rows = []
    for e in kept:
        rec = world.recording_by_id[(e.source, e.record_id)]
        sp = world.species[e.species_index]
        if e.source == "xeno-canto":
            file_name, url = f"XC{rec.id}.{rec.fmt}", f"{root}/xeno-canto/{rec.id}/download"
        else:
            file_name, url = f"inat_{rec.id}.{rec.fmt}", sound_url(root, rec)
        rows.append(
            {
                "file_name": file_name,
                "scientific_name": e.raw_name,
                "accepted_name": sp.name,
                "class": sp.class_name,
                "order": sp.order,
                "family": sp.family,
                "genus": sp.genus,
                "com": sp.common_name,
                "source": SOURCE_CODES[e.source],
                "recording_id": str(rec.id),
                "download_url": url,
            }
        )
    return rows


def official_metadata_csv(world: World, root: str) -> bytes:
    """The release's audio metadata table for `world`, media served under `root` (UTF-8 CSV)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=OFFICIAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(official_rows(world, root))
    return buf.getvalue().encode("utf-8")


def write_official_metadata(world: World, root: str, path: Path) -> Path:
    """Write `official_metadata_csv(world, root)` to `path`; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(official_metadata_csv(world, root))
    return path

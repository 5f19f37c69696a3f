"""Every Parquet table's schema, declared once."""

from __future__ import annotations

import pyarrow as pa

RAW_RECORD = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),  # xeno-canto | inaturalist | ...
        pa.field("modality", pa.string(), nullable=False),  # audio | image
        pa.field("record_id", pa.string(), nullable=False),  # the media's id at its source
        pa.field("observation_id", pa.int64()),  # iNaturalist observation
        pa.field("raw_scientific_name", pa.string()),  # as the source writes it
        pa.field("raw_genus", pa.string()),
        pa.field("raw_epithet", pa.string()),
        pa.field("raw_subspecies", pa.string()),
        pa.field("raw_taxon_id", pa.int64()),  # the source's taxon id (iNaturalist)
        pa.field("raw_taxon_rank", pa.string()),
        pa.field("raw_ancestry", pa.string()),  # slash-joined ancestor ids, root first
        pa.field("source_group", pa.string()),  # Xeno-canto grp, iNaturalist iconic taxon
        pa.field("common_name", pa.string()),
        pa.field("license", pa.string()),  # normalised: cc-by-nc-sa-4.0, cc0-1.0, ...
        pa.field("license_raw", pa.string()),
        pa.field("attribution", pa.string()),  # recordist / observer
        pa.field("media_url", pa.string()),
        pa.field("thumbnail_url", pa.string()),
        pa.field("file_name", pa.string()),
        pa.field("file_format", pa.string()),  # mp3, wav, m4a, jpg, png, ...
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("quality", pa.string()),  # XC A-E / "no score"; iNat quality grade
        pa.field("sound_type", pa.string()),
        pa.field("sex", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("country", pa.string()),
        pa.field("latitude", pa.float64()),
        pa.field("longitude", pa.float64()),
        pa.field("date", pa.date32()),  # recorded / observed
        pa.field("time", pa.string()),
        pa.field("uploaded", pa.date32()),  # XC upload, iNat creation date
        pa.field("updated_at", pa.timestamp("s", tz="UTC")),
        pa.field("page_url", pa.string()),
        pa.field("query", pa.string()),  # the crawl query that found it (no key)
    ]
)

RAW_KEY = ("source", "modality", "record_id")

FAILURE = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # fetch | align | materialize | ...
        pa.field("source", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("record_id", pa.string()),
        pa.field("name", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # short machine-readable code
        pa.field("detail", pa.string()),  # human-readable explanation
    ]
)

# The release's lineage, one row per accepted name: a user-supplied backbone for align.
OFFICIAL_TAXONOMY = pa.schema(
    [
        pa.field("accepted_name", pa.string(), nullable=False),
        pa.field("class", pa.string()),
        pa.field("order", pa.string()),
        pa.field("family", pa.string()),
        pa.field("genus", pa.string()),
    ]
)
# The release's own name decision per record: raw name -> accepted name.
OFFICIAL_NAMES = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("raw_scientific_name", pa.string()),
        pa.field("accepted_name", pa.string()),
    ]
)

"""Every Parquet table's schema, declared once."""

from __future__ import annotations

import pyarrow as pa

# Where and how a record was made: the Xeno-canto and iNaturalist fields kept since issue 14
# (raw records, then the media manifests; published in the audio/image configs).
RECORD_DETAILS: list[pa.Field] = [
    pa.field("coordinates_obscured", pa.bool_()),  # iNat obscured/private; null: not said
    pa.field("geoprivacy", pa.string()),  # iNat observation: open | obscured | private
    pa.field("taxon_geoprivacy", pa.string()),  # iNat, set by the taxon (threatened species)
    pa.field("positional_accuracy", pa.float64()),  # metres, of the coordinates stored
    pa.field("locality", pa.string()),  # XC loc
    pa.field("altitude", pa.float64()),  # XC alt, metres
    pa.field("background_species", pa.list_(pa.string())),  # XC also: other species heard
    pa.field("recording_method", pa.string()),  # XC method: field recording, in the hand, ...
    pa.field("remarks", pa.string()),  # XC rmk
    pa.field("animal_seen", pa.bool_()),  # XC animal-seen (v2 bird-seen)
    pa.field("playback_used", pa.bool_()),  # XC playback-used
    pa.field("automatic_recording", pa.bool_()),  # XC auto
    pa.field("device", pa.string()),  # XC dvc
    pa.field("microphone", pa.string()),  # XC mic
    pa.field("sonogram_url", pa.string()),  # XC sono.large (https:, never protocol-relative)
]

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
        *RECORD_DETAILS,
        pa.field("query", pa.string()),  # the crawl query that found it (no key)
        # GBIF occurrences (crawl.sources.gbif, crawl.dwca): the occurrence behind a media item
        pa.field("gbif_id", pa.int64()),
        pa.field("occurrence_id", pa.string()),  # the publisher's occurrenceID
        pa.field("dataset_key", pa.string()),
        pa.field("taxon_key", pa.int64()),  # as identified (may be a synonym)
        pa.field("accepted_taxon_key", pa.int64()),  # the accepted taxon it resolves to
        pa.field("verbatim_name", pa.string()),  # scientificName as identified, with authors
        pa.field("raw_class", pa.string()),
        pa.field("raw_order", pa.string()),
        pa.field("raw_family", pa.string()),
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

# OUT/raw/removed.parquet: records that left raw on an update (one row each; a record that comes
# back is deleted from it). Written by `update`/takedown, read by `release diff`.
REMOVED = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # withdrawn | licence | takedown
        pa.field("detail", pa.string()),
        pa.field("removed_at", pa.string()),  # ISO-8601 UTC
    ]
)

# OUT/manifests/duplicates.parquet: one row per member of a duplicate group (`dedup`). `split`
# keeps every group of kind exact or near on one side; kind metadata is only a candidate.
DUPLICATES = pa.schema(
    [
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),  # audio | image
        pa.field("source", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # exact | near | metadata
        pa.field("score", pa.float64()),
        pa.field("evidence", pa.string()),
        # an exact copy: `source:record_id` of the member published in its place (the first of
        # its exact class); null for that member, near copies and metadata candidates
        pa.field("copy_of", pa.string()),
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

# ---- manifests (align -> traits -> split) ------------------------------------------------------

LINEAGE = ("kingdom", "phylum", "class", "order", "family", "genus")


def _trait_fields() -> list[pa.Field]:
    from biovita_data.core.vocab import TRAIT_COLUMNS

    values = [pa.field(c, pa.int8()) for c in TRAIT_COLUMNS]  # 1, 0, null = unknown
    # which table each label came from (avonet, eltontraits, amphibio, csv); null when unknown
    sources = [pa.field(c.replace("trait_", "provenance_", 1), pa.string()) for c in TRAIT_COLUMNS]
    return values + sources


# One row per accepted species in the corpus. Written by align; traits fills trait_* and
# provenance_*; split fills split_group.
SPECIES = pa.schema(
    [
        pa.field("species_id", pa.int64(), nullable=False),  # the backbone's taxon id: stable
        pa.field("scientific_name", pa.string(), nullable=False),  # accepted binomial
        pa.field("common_name", pa.string()),
        *[pa.field(rank, pa.string()) for rank in LINEAGE],
        pa.field("species", pa.string()),  # = scientific_name (the text at level "species")
        pa.field("backbone", pa.string()),  # inat | csv:<file name>
        pa.field("inat_taxon_id", pa.int64()),
        pa.field("source_names", pa.string()),  # "; "-joined raw names that aligned here
        pa.field("sources", pa.string()),  # "; "-joined sources with records of this species
        pa.field("n_audio", pa.int32()),  # records in the corpus, after caps
        pa.field("n_image", pa.int32()),
        pa.field("n_image_available", pa.int32()),  # before the per-species image cap
        *_trait_fields(),
        pa.field("split_group", pa.string()),  # seen | unseen
    ]
)

# One row per recording (audio.parquet) or photo (image.parquet) of a corpus species.
MEDIA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("species_id", pa.int64(), nullable=False),
        pa.field("scientific_name", pa.string(), nullable=False),  # accepted
        pa.field("raw_scientific_name", pa.string()),
        pa.field("match_kind", pa.string(), nullable=False),  # exact|synonym|subspecies|fuzzy|id
        pa.field("observation_id", pa.int64()),
        pa.field("license", pa.string()),
        pa.field("attribution", pa.string()),
        pa.field("media_url", pa.string()),
        pa.field("page_url", pa.string()),
        pa.field("file_format", pa.string()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("quality", pa.string()),
        pa.field("sound_type", pa.string()),
        pa.field("country", pa.string()),
        pa.field("latitude", pa.float64()),
        pa.field("longitude", pa.float64()),
        pa.field("date", pa.date32()),
        *RECORD_DETAILS,
        pa.field("split", pa.string()),  # train | test | unseen (filled by split)
    ]
)
MEDIA_KEY = ("source", "record_id")

# OUT/manifests/assignment.parquet: every item `split` ever placed (align rewrites the manifests
# with split null; this keeps the assignment across builds). `present`: in the corpus now.
ASSIGNMENT = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),  # audio | image
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("species_id", pa.int64(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),  # observation group / duplicate group
        pa.field("split", pa.string(), nullable=False),  # train | test | unseen
        pa.field("present", pa.bool_(), nullable=False),
    ]
)

# Source names that did not align to an accepted species of the backbone.
UNMATCHED = pa.schema(
    [
        pa.field("name", pa.string()),  # as the source writes it
        pa.field("normalized", pa.string()),
        pa.field("source", pa.string(), nullable=False),  # xeno-canto | ... | avonet | ...
        pa.field("modality", pa.string()),  # audio | image | traits
        pa.field("count", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # no_match | ambiguous | hybrid | ...
        pa.field("closest", pa.string()),  # the nearest accepted name, for a human to check
    ]
)

# ---- BioVITA-Bench --------------------------------------------------------------------------

# One row per query: the official CSV layout's columns, with lists kept as lists.
BENCH_TASK = pa.schema(
    [
        pa.field("task", pa.string(), nullable=False),  # A2I I2A A2T T2A I2T T2I
        pa.field("taxon_level", pa.string(), nullable=False),  # species | genus | family
        pa.field("query_payload_id", pa.int64(), nullable=False),  # id in the query's index
        pa.field("candidates_taxa", pa.list_(pa.string()), nullable=False),
        pa.field("candidates_target_ids", pa.list_(pa.list_(pa.int64())), nullable=False),
        pa.field("correct_taxon", pa.string(), nullable=False),
        pa.field("taxon_class", pa.string()),
    ]
)
# The bench's item indexes: the official `ids/*_index.csv` columns, plus the manifest keys.
BENCH_MEDIA_INDEX = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("file_path", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("species_id", pa.int64(), nullable=False),
    ]
)
BENCH_TEXT_INDEX = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("species", pa.string()),
        pa.field("genus", pa.string()),
        pa.field("family", pa.string()),
        pa.field("class", pa.string()),
        pa.field("common_name", pa.string()),
        pa.field("species_id", pa.int64(), nullable=False),
    ]
)

# ---- media (materialize) -------------------------------------------------------------------------

# OUT/media/<modality>/shard-<i>.parquet: one row per stored file. A recording longer than the
# segment limit is stored as several rows (segment 0..n_segments-1), each a FLAC file of its own.
MEDIA_FILE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("n_segments", pa.int32(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative: audio/<source>/<id>[_sNNN].<ext>
        pa.field("bytes", pa.large_binary(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),  # of `bytes`
        pa.field("file_format", pa.string(), nullable=False),  # stored: mp3 flac ogg wav | jpg
        pa.field("transcoded", pa.bool_(), nullable=False),  # False: the original bytes
        pa.field("source_sha256", pa.string()),  # of the downloaded original (duplicates)
        pa.field("offset_s", pa.float64()),  # segment start within the recording
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        # media/fingerprint.py's packed fingerprint of the decoded content (dedup reads it instead
        # of decoding again); null when materialize ran without fingerprints or one failed
        pa.field("fingerprint", pa.large_binary()),
    ]
)
# MEDIA_FILE's payload: kept in the shards only, never in an index
MEDIA_PAYLOAD = ("bytes", "fingerprint")

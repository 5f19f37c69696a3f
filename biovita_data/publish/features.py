"""The published configs' columns, their Arrow types and the `datasets` features that describe them.

Only `Value`, `ClassLabel`, `Audio` and `Image` features are used, written in the minimal JSON form
(`{"_type": "Audio"}`, ...) that `datasets` 3.x to 5.x all read back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from biovita_data.core.layout import BENCH_SPLIT_OF_SUBSET, CONFIGS, MEDIA_SPLITS, SPLITS
from biovita_data.core.schemas import BENCH_TASK, MEDIA, MEDIA_FILE, SPECIES

__all__ = ["BENCH_SPLIT_OF_SUBSET", "CONFIGS", "MEDIA_SPLITS", "SPLITS"]


# Arrow storage of the Audio and Image features: the file's bytes and its relative path.
MEDIA_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# Published columns keep the type core/schemas.py declares for them, except these: the class
# label, and lists the Hub's viewer and the official CSV show as one string.
LABEL: tuple[str, pa.DataType] = ("label", pa.int64())
_FLATTENED: dict[str, pa.DataType] = {
    "background_species": pa.string(),  # "; "-joined
    "candidates_taxa": pa.string(),  # JSON list, as in the official CSV
    "candidates_target_ids": pa.string(),  # JSON list of lists, as in the official CSV
}


def _cols(schema: pa.Schema, *names: str) -> list[tuple[str, pa.DataType]]:
    """(name, Arrow type) of these columns, as `schema` declares them (or flattened)."""
    return [(n, _FLATTENED.get(n, schema.field(n).type)) for n in names]


_TAXON = [
    LABEL,
    *_cols(MEDIA, "species_id", "scientific_name"),
    *_cols(SPECIES, "common_name", "class", "order", "family", "genus"),
    *_cols(MEDIA, "source", "record_id"),
]
_RIGHTS = _cols(MEDIA, "license", "attribution", "media_url", "page_url")
_AUDIO_FILE = _cols(MEDIA_FILE, "segment", "n_segments", "duration_s", "sample_rate", "channels")
_IMAGE_FILE = _cols(MEDIA_FILE, "width", "height")
_SHA256 = _cols(MEDIA_FILE, "sha256")
# Where: coordinates as the source publishes them, and whether they were obscured (iNaturalist
# geoprivacy / taxon_geoprivacy: moved at random within ~0.2 degrees, or withheld).
_WHERE = _cols(
    MEDIA,
    "country",
    "latitude",
    "longitude",
    "coordinates_obscured",
    "geoprivacy",
    "positional_accuracy",
)
# How a recording was made (Xeno-canto).
_RECORDING = _cols(
    MEDIA,
    "background_species",
    "recording_method",
    "locality",
    "altitude",
    "remarks",
    "animal_seen",
    "playback_used",
    "automatic_recording",
    "device",
    "microphone",
    "sonogram_url",
)
# Manifest columns beyond taxon and rights that a media config carries.
DETAIL_COLUMNS = tuple(c for c, _ in (*_WHERE, *_RECORDING))

# media = "embed": one row per stored file (a long recording is several rows, segment 0..n-1).
AUDIO_COLUMNS = [
    ("audio", MEDIA_STRUCT), *_TAXON, *_AUDIO_FILE, *_RIGHTS, *_SHA256, *_WHERE, *_RECORDING,
]  # fmt: skip
IMAGE_COLUMNS = [("image", MEDIA_STRUCT), *_TAXON, *_IMAGE_FILE, *_RIGHTS, *_SHA256, *_WHERE]
# media = "urls": one row per record of the manifest, no bytes and no per-file columns.
AUDIO_URL_COLUMNS = [
    *_TAXON, *_cols(MEDIA, "duration_s", "sample_rate"), *_RIGHTS, *_WHERE, *_RECORDING,
]  # fmt: skip
IMAGE_URL_COLUMNS = [*_TAXON, *_cols(MEDIA, "width", "height"), *_RIGHTS, *_WHERE]

SPECIES_COLUMNS = [LABEL, *((f.name, f.type) for f in SPECIES)]
BENCH_COLUMNS = _cols(BENCH_TASK, *BENCH_TASK.names)

_VALUE_DTYPES = {
    pa.int8(): "int8",
    pa.int16(): "int16",
    pa.int32(): "int32",
    pa.int64(): "int64",
    pa.float32(): "float32",
    pa.float64(): "float64",
    pa.string(): "string",
    pa.bool_(): "bool",
}


def columns(config: str, media: str = "embed") -> list[tuple[str, pa.DataType]]:
    """The (name, Arrow type) columns of a config, in order."""
    if config == "audio":
        return AUDIO_COLUMNS if media == "embed" else AUDIO_URL_COLUMNS
    if config == "image":
        return IMAGE_COLUMNS if media == "embed" else IMAGE_URL_COLUMNS
    if config == "species":
        return SPECIES_COLUMNS
    if config == "bench":
        return BENCH_COLUMNS
    raise ValueError(f"unknown config {config!r}")


def feature_of(name: str, dtype: pa.DataType, class_names: Sequence[str]) -> dict:
    """One column's `datasets` feature as JSON: Audio, Image, ClassLabel or Value."""
    if name == "audio" and dtype == MEDIA_STRUCT:
        return {"_type": "Audio"}
    if name == "image" and dtype == MEDIA_STRUCT:
        return {"_type": "Image"}
    if name == "label":
        return {"names": list(class_names), "_type": "ClassLabel"}
    if dtype not in _VALUE_DTYPES:
        raise TypeError(f"column {name}: no plain `datasets` Value for {dtype}")
    return {"dtype": _VALUE_DTYPES[dtype], "_type": "Value"}


def features_json(cols: list[tuple[str, pa.DataType]], class_names: Sequence[str]) -> dict:
    """The `features` dict `datasets` writes into a table's `huggingface` metadata."""
    return {name: feature_of(name, dtype, class_names) for name, dtype in cols}


def arrow_schema(cols: list[tuple[str, pa.DataType]], class_names: Sequence[str]) -> pa.Schema:
    """The Parquet schema of a config, with the `huggingface` metadata that makes it decode."""
    meta = {"info": {"features": features_json(cols, class_names)}}
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
    return pa.schema([pa.field(n, t) for n, t in cols], metadata={"huggingface": text})

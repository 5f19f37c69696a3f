"""The published configs' columns, their Arrow types and the `datasets` features that describe them.

Only `Value`, `ClassLabel`, `Audio` and `Image` features are used, written in the minimal JSON form
(`{"_type": "Audio"}`, ...) that `datasets` 3.x to 5.x all read back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa

from biovita_data.core.layout import BENCH_SPLIT_OF_SUBSET, CONFIGS, MEDIA_SPLITS, SPLITS
from biovita_data.core.schemas import SPECIES

__all__ = ["BENCH_SPLIT_OF_SUBSET", "CONFIGS", "MEDIA_SPLITS", "SPLITS"]


# Arrow storage of the Audio and Image features: the file's bytes and its relative path.
MEDIA_STRUCT = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

_TAXON: list[tuple[str, pa.DataType]] = [
    ("label", pa.int64()),
    ("species_id", pa.int64()),
    ("scientific_name", pa.string()),
    ("common_name", pa.string()),
    ("class", pa.string()),
    ("order", pa.string()),
    ("family", pa.string()),
    ("genus", pa.string()),
    ("source", pa.string()),
    ("record_id", pa.string()),
]
_RIGHTS: list[tuple[str, pa.DataType]] = [
    ("license", pa.string()),
    ("attribution", pa.string()),
    ("media_url", pa.string()),
    ("page_url", pa.string()),
]
_AUDIO_FILE: list[tuple[str, pa.DataType]] = [
    ("segment", pa.int32()),
    ("n_segments", pa.int32()),
    ("duration_s", pa.float64()),
    ("sample_rate", pa.int32()),
    ("channels", pa.int32()),
]
_IMAGE_FILE: list[tuple[str, pa.DataType]] = [("width", pa.int32()), ("height", pa.int32())]
# Where: coordinates as the source publishes them, and whether they were obscured (iNaturalist
# geoprivacy / taxon_geoprivacy: moved at random within ~0.2 degrees, or withheld).
_WHERE: list[tuple[str, pa.DataType]] = [
    ("country", pa.string()),
    ("latitude", pa.float64()),
    ("longitude", pa.float64()),
    ("coordinates_obscured", pa.bool_()),
    ("geoprivacy", pa.string()),
    ("positional_accuracy", pa.float64()),
]
# How a recording was made (Xeno-canto); background_species is "; "-joined.
_RECORDING: list[tuple[str, pa.DataType]] = [
    ("background_species", pa.string()),
    ("recording_method", pa.string()),
    ("locality", pa.string()),
    ("altitude", pa.float64()),
    ("remarks", pa.string()),
    ("animal_seen", pa.bool_()),
    ("playback_used", pa.bool_()),
    ("automatic_recording", pa.bool_()),
    ("device", pa.string()),
    ("microphone", pa.string()),
    ("sonogram_url", pa.string()),
]
# Manifest columns beyond taxon and rights that a media config carries.
DETAIL_COLUMNS = tuple(c for c, _ in (*_WHERE, *_RECORDING))

# media = "embed": one row per stored file (a long recording is several rows, segment 0..n-1).
AUDIO_COLUMNS = [
    ("audio", MEDIA_STRUCT), *_TAXON, *_AUDIO_FILE, *_RIGHTS, ("sha256", pa.string()),
    *_WHERE, *_RECORDING,
]  # fmt: skip
IMAGE_COLUMNS = [
    ("image", MEDIA_STRUCT), *_TAXON, *_IMAGE_FILE, *_RIGHTS, ("sha256", pa.string()), *_WHERE,
]  # fmt: skip
# media = "urls": one row per record of the manifest, no bytes and no per-file columns.
AUDIO_URL_COLUMNS = [
    *_TAXON, ("duration_s", pa.float64()), ("sample_rate", pa.int32()), *_RIGHTS,
    *_WHERE, *_RECORDING,
]  # fmt: skip
IMAGE_URL_COLUMNS = [*_TAXON, *_IMAGE_FILE, *_RIGHTS, *_WHERE]

SPECIES_COLUMNS = [("label", pa.int64()), *((f.name, f.type) for f in SPECIES)]
BENCH_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("task", pa.string()),
    ("taxon_level", pa.string()),
    ("query_payload_id", pa.int64()),
    ("candidates_taxa", pa.string()),  # JSON list, as in the official CSV
    ("candidates_target_ids", pa.string()),  # JSON list of lists, as in the official CSV
    ("correct_taxon", pa.string()),
    ("taxon_class", pa.string()),
]

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

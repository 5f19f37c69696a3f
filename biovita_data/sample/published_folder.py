"""A small synthetic published folder (the publish contract, real media bytes) for tests and demos.

Species k (label k) calls at a pure tone of `tone_hz(k)` after `onset_s` of silence, and its
photos are filled with `species_color(k)`; both survive lossy coding, so a test can tell from the
decoded media which species an item shows.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf
from PIL import Image

from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.publish.shards import parquet_options, shard_name

SF_FORMATS = {  # extension -> soundfile (format, subtype)
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "wav": ("WAV", "PCM_16"),
}
_WRITE_BLOCK = 1 << 15  # libsndfile's Vorbis encoder crashes on very large single writes
_MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_LINEAGE = ("kingdom", "phylum", "class", "order", "family", "genus")


def tone_hz(label: int) -> float:
    """The call frequency of species `label`."""
    return 500.0 + 150.0 * label


def species_color(label: int) -> tuple[int, int, int]:
    """The photo colour of species `label`."""
    return (30 + 45 * (label % 5), 30 + 45 * ((label // 5) % 5), 200 - 40 * ((label // 25) % 5))


def call_signal(
    label: int,
    seconds: float,
    rate: int,
    channels: int = 1,
    onset_s: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """float32 (frames, channels): silence for onset_s, then the species' tone at 0.5 (+ noise)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * tone_hz(label) * t)
    if noise:
        x += noise * np.random.default_rng(seed).standard_normal(n)
    x[: round(onset_s * rate)] = 0.0
    x = x.astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) * np.linspace(1.0, 0.6, channels)[None, :]


def encode_audio(x: np.ndarray, rate: int, fmt: str, mp3_compression: float | None = None) -> bytes:
    """Encode float samples (frames[, channels]) as mp3, flac, ogg or wav bytes with soundfile.

    mp3_compression in [0, 1] makes a constant-bitrate MP3 (0.6: about 128 kbit/s); None: VBR.
    """
    major, subtype = SF_FORMATS[fmt]
    x2 = x if x.ndim == 2 else x[:, None]
    buf = io.BytesIO()
    extra: dict[str, Any] = {}
    if fmt == "mp3" and mp3_compression is not None:
        extra = {"compression_level": mp3_compression, "bitrate_mode": "CONSTANT"}
    with sf.SoundFile(buf, "w", rate, x2.shape[1], subtype, format=major, **extra) as f:
        for i in range(0, x2.shape[0], _WRITE_BLOCK):
            f.write(x2[i : i + _WRITE_BLOCK])
    return buf.getvalue()


def encode_jpeg(label: int, size: tuple[int, int] = (48, 40), quality: int = 90) -> bytes:
    """A JPEG photo (width, height) of species `label`: its colour with a light texture."""
    w, h = size
    rgb = np.empty((h, w, 3), dtype=np.uint8)
    rgb[:] = species_color(label)
    rgb[::4, ::4] = np.clip(np.asarray(species_color(label)) + 20, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _features(table: pa.Table) -> dict[str, Any]:
    """The `huggingface` schema metadata of a table (Audio/Image structs, Values otherwise)."""
    features: dict[str, Any] = {}
    for field in table.schema:
        if field.name == "audio":
            features[field.name] = {"_type": "Audio"}
        elif field.name == "image":
            features[field.name] = {"_type": "Image"}
        else:
            dtype = "string" if pa.types.is_string(field.type) else str(field.type)
            features[field.name] = {"dtype": dtype, "_type": "Value"}
    return {"info": {"features": features}}


def _group_sizes(table: pa.Table, media: str | None, rows: int, max_bytes: int | None) -> list[int]:
    """Rows per row group: `rows`, or fewer once the media bytes reach max_bytes (as publish)."""
    if media is None or max_bytes is None:
        return [min(rows, table.num_rows - i) for i in range(0, table.num_rows, rows)]
    lengths = pc.binary_length(pc.struct_field(table.column(media), "bytes"))
    sizes: list[int] = []
    n = total = 0
    for length in lengths.fill_null(0).to_pylist():
        n, total = n + 1, total + length
        if n == rows or total >= max_bytes:
            sizes.append(n)
            n = total = 0
    return sizes + ([n] if n else [])


def write_config(
    folder: Path,
    config: str,
    split: str,
    table: pa.Table,
    *,
    rows_per_group: int = 16,
    shards: int = 1,
    group_bytes: int | None = None,
) -> list[Path]:
    """Write {config}/{split}-{i:05d}-of-{n:05d}.parquet shards with publish's options.

    HF feature metadata and publish's ParquetWriter options (publish.shards.parquet_options);
    a row group closes at rows_per_group rows or, given group_bytes (publish: 4 MiB), once its
    media bytes reach group_bytes.
    """
    meta = {b"huggingface": json.dumps(_features(table)).encode()}
    table = table.replace_schema_metadata(meta)
    media = next((c for c in ("audio", "image") if c in table.column_names), None)
    options = parquet_options(table.schema, media)
    out = folder / config
    out.mkdir(parents=True, exist_ok=True)
    per = math.ceil(table.num_rows / shards) if table.num_rows else 0
    paths = []
    for i in range(shards):
        path = out / shard_name(split, i, shards)
        part = table.slice(i * per, per)
        with pq.ParquetWriter(path, part.schema, **options) as writer:
            offset = 0
            for n in _group_sizes(part, media, rows_per_group, group_bytes):
                writer.write_table(part.slice(offset, n), row_group_size=n)
                offset += n
            if not part.num_rows:
                writer.write_table(part)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class AudioSpec:
    """One synthetic recording to render: species, split, length, rate, channels, format."""

    label: int
    split: str
    seconds: float
    rate: int
    channels: int
    fmt: str
    onset_s: float = 0.0
    noise: float = 0.0  # standard deviation of added white noise
    seed: int = 0  # of the noise
    mp3_compression: float | None = None  # see encode_audio
    record: str | None = None  # the recording a segment comes from (default: one of its own)
    segment: int = 0  # as materialize cuts long recordings: segment of n_segments
    n_segments: int = 1


def _render(spec: AudioSpec) -> bytes:
    """The encoded bytes of one spec (a top-level function, so a process pool can run it)."""
    x = call_signal(
        spec.label, spec.seconds, spec.rate, spec.channels, spec.onset_s, spec.noise, spec.seed
    )
    return encode_audio(x, spec.rate, spec.fmt, spec.mp3_compression)


def species_table(n_species: int, n_unseen: int = 0, seed: int = 0) -> pa.Table:
    """Species rows: label k <-> species_id 1000 + 7k, names, lineage and random 1/0/null traits."""
    rng = np.random.default_rng(seed)
    n = n_species
    genus = [f"Genus{k // 2:02d}" for k in range(n)]
    rows: dict[str, list[Any]] = {
        "label": list(range(n)),
        "species_id": [1000 + 7 * k for k in range(n)],
        "scientific_name": [f"{genus[k]} species{k:03d}" for k in range(n)],
        "common_name": [None if k % 7 == 6 else f"Common Bird {k}" for k in range(n)],
        "kingdom": ["Animalia"] * n,
        "phylum": ["Chordata"] * n,
        "class": ["Aves" if k % 3 else "Amphibia" for k in range(n)],
        "order": [f"Order{k // 6}" for k in range(n)],
        "family": [f"Family{k // 4}" for k in range(n)],
        "genus": genus,
    }
    rows["species"] = list(rows["scientific_name"])
    rows["split_group"] = ["unseen" if k >= n - n_unseen else "seen" for k in range(n)]
    table = pa.table(rows)
    for column in TRAIT_COLUMNS:
        values = rng.choice(np.array([1, 0, -1], dtype=np.int8), size=n)
        table = table.append_column(column, pa.array(values, mask=values < 0, type=pa.int8()))
    return table


def audio_table(species: pa.Table, specs: Sequence[AudioSpec], blobs: Sequence[bytes]) -> pa.Table:
    """The audio config rows of rendered recordings (contract columns, sha256 of the bytes)."""
    sp = species.to_pydict()
    rows: dict[str, list[Any]] = {k: [] for k in _AUDIO_COLUMNS}
    for j, (spec, data) in enumerate(zip(specs, blobs, strict=True)):
        k = spec.label
        record = spec.record or f"syn{j:06d}"
        name = record if spec.n_segments == 1 else f"{record}_s{spec.segment:03d}"
        rows["audio"].append({"bytes": data, "path": f"audio/synthetic/{name}.{spec.fmt}"})
        for name in ("label", "species_id", "scientific_name", "common_name", *_LINEAGE[2:]):
            rows[name].append(sp[name][k])
        rows["source"].append("synthetic")
        rows["record_id"].append(record)
        rows["segment"].append(spec.segment)
        rows["n_segments"].append(spec.n_segments)
        rows["duration_s"].append(spec.seconds)
        rows["sample_rate"].append(spec.rate)
        rows["channels"].append(spec.channels)
        rows["license"].append("cc-by-4.0")
        rows["attribution"].append("synthetic")
        rows["media_url"].append(f"https://example.org/{record}")
        rows["page_url"].append(f"https://example.org/page/{record}")
        rows["sha256"].append(hashlib.sha256(data).hexdigest())
    types = {"audio": _MEDIA, "label": pa.int64(), "species_id": pa.int64(), "segment": pa.int32()}
    types |= {"n_segments": pa.int32(), "duration_s": pa.float64(), "sample_rate": pa.int32()}
    types |= {"channels": pa.int32()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in rows.items()})


_AUDIO_COLUMNS = (
    "audio",
    "label",
    "species_id",
    "scientific_name",
    "common_name",
    "class",
    "order",
    "family",
    "genus",
    "source",
    "record_id",
    "segment",
    "n_segments",
    "duration_s",
    "sample_rate",
    "channels",
    "license",
    "attribution",
    "media_url",
    "page_url",
    "sha256",
)


def image_table(
    species: pa.Table, labels: Iterable[int], size: tuple[int, int] = (48, 40)
) -> pa.Table:
    """The image config rows: one JPEG per label given."""
    sp = species.to_pydict()
    rows: dict[str, list[Any]] = {}
    for j, k in enumerate(labels):
        data = encode_jpeg(k, size)
        row = {
            "image": {"bytes": data, "path": f"image/synthetic/img{j:06d}.jpg"},
            **{name: sp[name][k] for name in ("label", "species_id", "scientific_name")},
            **{name: sp[name][k] for name in ("common_name", "class", "order", "family", "genus")},
            "source": "synthetic",
            "record_id": f"img{j:06d}",
            "width": size[0],
            "height": size[1],
            "license": "cc0-1.0",
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        for key, value in row.items():
            rows.setdefault(key, []).append(value)
    types = {"image": _MEDIA, "label": pa.int64(), "species_id": pa.int64()}
    types |= {"width": pa.int32(), "height": pa.int32()}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in rows.items()})


def write_synthetic_folder(
    folder: str | Path,
    specs: Sequence[AudioSpec],
    *,
    n_species: int,
    n_unseen: int = 0,
    images_per_species: dict[str, int] | None = None,
    image_size: tuple[int, int] = (48, 40),
    rows_per_group: int = 16,
    shards: int = 1,
    group_bytes: int | None = None,
    processes: int = 1,
    seed: int = 0,
) -> Path:
    """Render the recordings and photos and write a published folder: audio/, image/, species/.

    rows_per_group, shards and group_bytes shape the audio shards (see write_config).
    """
    folder = Path(folder)
    species = species_table(n_species, n_unseen, seed)
    if processes > 1:
        with ProcessPoolExecutor(processes) as pool:
            blobs = list(pool.map(_render, specs, chunksize=8))
    else:
        blobs = [_render(s) for s in specs]
    per_split: dict[str, list[int]] = {}
    for j, spec in enumerate(specs):
        per_split.setdefault(spec.split, []).append(j)
    counts = np.zeros((n_species, 2), dtype=np.int32)
    for split, members in per_split.items():
        table = audio_table(species, [specs[j] for j in members], [blobs[j] for j in members])
        write_config(
            folder,
            "audio",
            split,
            table,
            rows_per_group=rows_per_group,
            shards=shards,
            group_bytes=group_bytes,
        )
        np.add.at(counts[:, 0], [specs[j].label for j in members], 1)
    images = images_per_species or {"train": 3, "test": 1}
    unseen = set(range(n_species - n_unseen, n_species))
    for split, per in images.items():
        labels = [
            k for k in range(n_species) for _ in range(per) if (k in unseen) == (split == "unseen")
        ]
        if labels:
            write_config(folder, "image", split, image_table(species, labels, image_size))
            np.add.at(counts[:, 1], labels, 1)
    species = species.append_column("n_audio", pa.array(counts[:, 0]))
    species = species.append_column("n_image", pa.array(counts[:, 1]))
    write_config(folder, "species", "train", species)
    return folder

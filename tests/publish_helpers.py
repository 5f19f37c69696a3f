"""A small hand-made build (every schema, media shards, bench, build.json) for the publish tests."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf
from PIL import Image

from biovita_data.core import layout
from biovita_data.core.schemas import MEDIA, MEDIA_FILE, SPECIES
from biovita_data.core.tables import write_table
from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.curate.bench import build_bench

REPO_ID = "biovita-test/tiny-corpus"
SNAPSHOT = "2026-05-01T12:00:00+00:00"
# (species_id, genus epithet, class, order, family, unseen): written in this (unsorted) order.
TAXA = [
    (30, "Parus major", "Aves", "Passeriformes", "Paridae", False),
    (10, "Turdus merula", "Aves", "Passeriformes", "Turdidae", False),
    (20, "Turdus philomelos", "Aves", "Passeriformes", "Turdidae", False),
    (50, "Rana temporaria", "Amphibia", "Anura", "Ranidae", True),
    (40, "Bufo bufo", "Amphibia", "Anura", "Bufonidae", False),
    (60, "Vulpes vulpes", "Mammalia", "Carnivora", "Canidae", True),
]
LICENSES = ("cc-by-4.0", "cc-by-nc-4.0", "cc0-1.0", "cc-by-nc-sa-4.0")
AUDIO_FORMATS = (("flac", "FLAC", "PCM_16"), ("wav", "WAV", "PCM_16"), ("ogg", "OGG", "VORBIS"))
SEGMENTED = ("xeno-canto", "a10-0")  # stored as two segments
DUPLICATE = {"audio": ("inaturalist", "a20-1"), "image": ("inaturalist", "i40-1")}


def _audio_bytes(seed: int, fmt: tuple[str, str, str], seconds: float) -> tuple[bytes, int]:
    sr = (16000, 22050)[seed % 2]
    t = np.arange(int(sr * seconds)) / sr
    wave = 0.3 * np.sin(2 * np.pi * (300 + 40 * seed) * t) * np.hanning(t.size)
    buf = io.BytesIO()
    sf.write(buf, wave.astype("float32"), sr, format=fmt[1], subtype=fmt[2])
    return buf.getvalue(), sr


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((16, 24, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _file_row(modality: str, source: str, rid: str, data: bytes, fmt: str, **extra) -> dict:
    segment, n = extra.pop("segment", 0), extra.pop("n_segments", 1)
    suffix = f"_s{segment:03d}" if n > 1 else ""
    return {
        "source": source,
        "record_id": rid,
        "modality": modality,
        "segment": segment,
        "n_segments": n,
        "path": f"{modality}/{source}/{rid}{suffix}.{fmt}",
        "bytes": data,
        "sha256": hashlib.sha256(data).hexdigest(),
        "file_format": fmt,
        "transcoded": False,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        **extra,
    }


def make_build(out: Path) -> Path:
    """species, audio/image manifests, media shards + index, bench, build.json: every schema
    exact, every media file decodable."""
    rng = np.random.default_rng(0)
    species_rows = []
    for sid, name, klass, order, family, unseen in TAXA:
        row = {c: None for c in SPECIES.names}
        row.update(
            species_id=sid,
            scientific_name=name,
            common_name=f"common {name.lower()}",
            kingdom="Animalia",
            phylum="Chordata",
            **{"class": klass},
            order=order,
            family=family,
            genus=name.split()[0],
            species=name,
            backbone="inat",
            split_group="unseen" if unseen else "seen",
            n_audio=3,
            n_image=3,
        )
        for col in TRAIT_COLUMNS:
            value = rng.integers(-1, 2)
            row[col] = None if value < 0 else int(value)
            row[col.replace("trait_", "provenance_", 1)] = None if value < 0 else "avonet"
        species_rows.append(row)
    write_table(pa.Table.from_pylist(species_rows, schema=SPECIES), layout.species_path(out))

    manifests: dict[str, list[dict]] = {"audio": [], "image": []}
    files: dict[str, list[dict]] = {"audio": [], "image": []}
    n = 0
    for sid, name, *_rest, unseen in TAXA:
        splits = ["unseen", "unseen"] if unseen else ["train", "train", "test"]
        for modality in ("audio", "image"):
            for j, split in enumerate(splits):
                source = (
                    ("xeno-canto", "inaturalist")[j % 2] if modality == "audio" else "inaturalist"
                )
                rid = f"{modality[0]}{sid}-{j}"
                manifests[modality].append(
                    {
                        "source": source,
                        "record_id": rid,
                        "modality": modality,
                        "species_id": sid,
                        "scientific_name": name,
                        "match_kind": "exact",
                        "license": LICENSES[n % 4],
                        "attribution": f"Recordist {n}",
                        "media_url": f"https://example.org/{rid}",
                        "page_url": f"https://example.org/p/{rid}",
                        "split": split,
                        # where and how: published as they are (background species "; "-joined)
                        "latitude": 40.0 + n,
                        "coordinates_obscured": sid % 20 == 0 if source == "inaturalist" else None,
                        "positional_accuracy": 28_954.0 if n % 2 == 0 else 10.0,
                        "background_species": ["Aa bb", "Cc dd"]
                        if source == "xeno-canto"
                        else None,
                        "recording_method": "field recording" if source == "xeno-canto" else None,
                    }
                )
                n += 1
                if modality == "image":
                    data = _jpeg(n)
                    files["image"].append(
                        _file_row("image", source, rid, data, "jpg", width=24, height=16)
                    )
                    continue
                fmt = AUDIO_FORMATS[n % 3]
                pieces = 2 if (source, rid) == SEGMENTED else 1
                for seg in range(pieces):
                    data, sr = _audio_bytes(n + seg, fmt if pieces == 1 else AUDIO_FORMATS[0], 1.0)
                    files["audio"].append(
                        _file_row(
                            "audio",
                            source,
                            rid,
                            data,
                            fmt[0] if pieces == 1 else "flac",
                            segment=seg,
                            n_segments=pieces,
                            offset_s=float(seg),
                            duration_s=1.0,
                            sample_rate=sr,
                            channels=1,
                        )
                    )
    for modality, (source, rid) in DUPLICATE.items():  # same content as the first file
        first = files[modality][0]
        dup = next(f for f in files[modality] if (f["source"], f["record_id"]) == (source, rid))
        dup.update(bytes=first["bytes"], sha256=first["sha256"])
    # a stored file whose record left the manifest
    data, sr = _audio_bytes(99, AUDIO_FORMATS[0], 1.0)
    files["audio"].append(_file_row("audio", "xeno-canto", "gone", data, "flac", sample_rate=sr))
    for modality in ("audio", "image"):
        write_table(
            pa.Table.from_pylist(manifests[modality], schema=MEDIA),
            layout.media_manifest_path(out, modality),
        )
        rows = files[modality]
        half = (len(rows) + 1) // 2 if modality == "audio" else len(rows)
        for shard, part in enumerate((rows[:half], rows[half:])):
            if part:
                table = pa.Table.from_pylist(part, schema=MEDIA_FILE)
                write_table(table, layout.media_shard_path(out, modality, shard))
        index = pa.Table.from_pylist(rows, schema=MEDIA_FILE).drop_columns(["bytes"])
        kept = [(r["source"], r["record_id"]) != DUPLICATE[modality] for r in rows]
        index = index.append_column("kept", pa.array(kept))
        write_table(index, layout.media_dir(out, modality) / "index.parquet")
    build_bench(out, candidates=4)
    build = {
        "tool": "biovita 0.0-test",
        "snapshot": SNAPSHOT,
        "sources": ["xeno-canto", "inaturalist"],
        "taxa": ["Aves", "Amphibia", "Mammalia"],
    }
    (out / "build.json").write_text(json.dumps(build))
    return out

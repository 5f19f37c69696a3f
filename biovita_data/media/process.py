"""The per-record CPU step shared by every engine: downloaded bytes -> MEDIA_FILE rows."""

from __future__ import annotations

import hashlib

from biovita_data.core import layout
from biovita_data.media.audio import store_audio
from biovita_data.media.image import store_image
from biovita_data.media.records import ItemFailure, ItemOutcome, StoredFile, failed
from biovita_data.media.settings import ProcessSettings, WorkItem


def process_item(item: WorkItem, data: bytes, settings: ProcessSettings) -> ItemOutcome:
    """Verify (decode), convert and hash one record's download; never raises for bad media."""
    try:
        if item.modality == "audio":
            files = store_audio(data, settings.segment_seconds, settings.fingerprints)
        else:
            files = [
                store_image(data, settings.image_size, settings.jpeg_quality, settings.fingerprints)
            ]
    except ItemFailure as exc:
        return failed(item, exc, len(data))
    except Exception as exc:  # a decoder's unexpected complaint is still a file it cannot read
        return failed(item, ItemFailure("undecodable", f"{type(exc).__name__}: {exc}"), len(data))
    source_sha = hashlib.sha256(data).hexdigest()
    rows = [_row(item, f, k, len(files), source_sha) for k, f in enumerate(files)]
    return ItemOutcome(item, rows=rows, downloaded=len(data))


def file_path(item: WorkItem, file_format: str, segment: int, n_segments: int) -> str:
    """audio/<source>/<id>.<ext>, or audio/<source>/<id>_sNNN.flac for one of several segments."""
    path = layout.media_file_path(item.modality, item.source, item.record_id, file_format)
    if n_segments == 1:
        return path
    stem, ext = path.rsplit(".", 1)
    return f"{stem}_s{segment:03d}.{ext}"


def _row(item: WorkItem, f: StoredFile, segment: int, n_segments: int, source_sha: str) -> dict:
    return {
        "source": item.source,
        "record_id": item.record_id,
        "modality": item.modality,
        "segment": segment,
        "n_segments": n_segments,
        "path": file_path(item, f.file_format, segment, n_segments),
        "bytes": f.data,
        "sha256": source_sha if not f.transcoded else hashlib.sha256(f.data).hexdigest(),
        "file_format": f.file_format,
        "transcoded": f.transcoded,
        "source_sha256": source_sha,
        "offset_s": f.offset_s,
        "duration_s": f.duration_s,
        "sample_rate": f.sample_rate,
        "channels": f.channels,
        "width": f.width,
        "height": f.height,
        "fingerprint": f.fingerprint,
    }

"""The outcome of one record: stored files (MEDIA_FILE rows) or a failure (FAILURE row)."""

from __future__ import annotations

from dataclasses import dataclass, field

from biovita_data.media.settings import WorkItem

STAGE = "materialize"


class ItemFailure(Exception):
    """A record that cannot be stored: `reason` is the failures table's machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class StoredFile:
    """One file to store for a record (a whole recording or photo, or one segment)."""

    data: bytes
    file_format: str  # mp3 flac ogg wav | jpg
    transcoded: bool  # False: `data` is the downloaded original
    offset_s: float | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    width: int | None = None
    height: int | None = None
    fingerprint: bytes | None = None  # media/fingerprint.py's packed fingerprint, when made


@dataclass
class ItemOutcome:
    """What became of one record: its MEDIA_FILE rows, or one FAILURE row."""

    item: WorkItem
    rows: list[dict] = field(default_factory=list)
    failure: dict | None = None
    downloaded: int = 0  # bytes received


def failure_row(item: WorkItem, reason: str, detail: str) -> dict:
    """A FAILURE row of this stage for `item`."""
    return {
        "stage": STAGE,
        "source": item.source,
        "modality": item.modality,
        "record_id": item.record_id,
        "name": item.name,
        "reason": reason,
        "detail": detail,
    }


def failed(item: WorkItem, exc: ItemFailure, downloaded: int = 0) -> ItemOutcome:
    row = failure_row(item, exc.reason, exc.detail)
    return ItemOutcome(item, failure=row, downloaded=downloaded)

"""Size caps on what the crawl reads from files it did not write: downloads and archive members.

A crafted or broken file (a 3 GiB "trait table", a zip whose one line is 1 GiB) must end in one
error naming the file, with memory bounded, never in a swap storm. Every cap has a default sized
for the real sources and an environment variable that overrides it (bytes, or a plain ratio):

| cap | default | environment variable |
| --- | --- | --- |
| a trait-release download (in memory until checked) | 256 MiB | `BIOVITA_MAX_DOWNLOAD_BYTES` |
| one archive member, uncompressed | 64 GiB | `BIOVITA_MAX_MEMBER_BYTES` |
| one member's compression ratio | 200 | `BIOVITA_MAX_COMPRESSION_RATIO` |
| one line (so one field) of a text member | 4 MiB | `BIOVITA_MAX_LINE_BYTES` |
| one XML document (meta.xml, metadata.xml) | 64 MiB | `BIOVITA_MAX_XML_BYTES` |
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

GiB, MiB = 2**30, 2**20


class LimitExceeded(ValueError):
    """A file over one of the caps (the message names the file, the cap and how to raise it)."""


@dataclass(frozen=True)
class Limits:
    """The caps; `Limits.from_env()` applies the environment's overrides."""

    download_bytes: int = 256 * MiB
    member_bytes: int = 64 * GiB
    compression_ratio: float = 200.0
    line_bytes: int = 4 * MiB
    xml_bytes: int = 64 * MiB

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults, each overridden by its BIOVITA_MAX_* variable when set."""
        values = {}
        for field, var in ENV.items():
            text = os.environ.get(var, "").strip()
            if not text:
                continue
            try:
                value = float(text) if field == "compression_ratio" else int(text)
            except ValueError:
                raise LimitExceeded(f"{var}={text!r} is not a number") from None
            if value <= 0:
                raise LimitExceeded(f"{var}={text!r} must be positive")
            values[field] = value
        return cls(**values)

    def check_member(self, info: zipfile.ZipInfo, archive: str, *, xml: bool = False) -> None:
        """Refuse a zip member whose declared size or compression ratio passes the caps (zipfile
        never returns more than the declared size, so the declaration bounds what is read)."""
        cap, var = (
            (self.xml_bytes, ENV["xml_bytes"]) if xml else (self.member_bytes, ENV["member_bytes"])
        )
        where = f"{archive}: {info.filename}"
        if info.file_size > cap:
            raise LimitExceeded(
                f"{where} is {info.file_size} bytes uncompressed, over the {cap}-byte cap "
                f"({var} raises it)"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > MiB and ratio > self.compression_ratio:
            raise LimitExceeded(
                f"{where} expands {ratio:.0f}-fold ({info.compress_size} -> {info.file_size} "
                f"bytes), over the {self.compression_ratio:g}-fold cap: a zip bomb or a broken "
                f"file ({ENV['compression_ratio']} raises it)"
            )


ENV = {
    "download_bytes": "BIOVITA_MAX_DOWNLOAD_BYTES",
    "member_bytes": "BIOVITA_MAX_MEMBER_BYTES",
    "compression_ratio": "BIOVITA_MAX_COMPRESSION_RATIO",
    "line_bytes": "BIOVITA_MAX_LINE_BYTES",
    "xml_bytes": "BIOVITA_MAX_XML_BYTES",
}

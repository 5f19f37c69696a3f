"""The public trait tables as sources: each release downloaded once into a cache, checked.

A release is fetched from its published location (figshare's file downloader; the DOI names the
record), or, when `BIOVITA_TRAITS_URL` is set, from `{BIOVITA_TRAITS_URL}/{file}` (a mirror, or
the sample world). The first download records the bytes' size and sha256 in
`CACHE/releases.json`; every later use verifies the cached file against that record, and a
download made again (the cache emptied) must match it too, so a release that changed upstream is
an error, never a silent swap. A zip download (AVONET's ELEData.zip, AmphiBIO_v1.zip) is kept as
downloaded (`download`) and the table extracted next to it; a plain file is copied.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from biovita_data.core.tables import write_bytes_atomic, write_json_atomic
from biovita_data.crawl.http import FetchError, HttpClient

ENV_URL = "BIOVITA_TRAITS_URL"


@dataclass(frozen=True)
class Release:
    """One public trait table: where it is published and what the reader calls it."""

    name: str  # the --table name
    kind: str  # the reader (build.traits.readers.KINDS)
    file: str  # the table's file name (inside the zip, or the download itself)
    url: str  # the published download
    doi: str
    license: str
    classes: tuple[str, ...]  # the classes it covers
    citation: str


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release(
            "avonet", "avonet", "AVONET1_BirdLife.csv",
            "https://ndownloader.figshare.com/files/38429873",  # ELEData.zip
            "10.6084/m9.figshare.16586228", "CC-BY-4.0", ("Aves",),
            "Tobias et al. 2022, AVONET, Ecology Letters 25:581-597",
        ),
        Release(
            "eltontraits-birds", "eltontraits", "BirdFuncDat.txt",
            "https://ndownloader.figshare.com/files/5631081",
            "10.6084/m9.figshare.c.3306933.v1", "CC0-1.0", ("Aves",),
            "Wilman et al. 2014, EltonTraits 1.0, Ecology 95:2027 (Ecological Archives E095-178)",
        ),
        Release(
            "eltontraits-mammals", "eltontraits", "MamFuncDat.txt",
            "https://ndownloader.figshare.com/files/5631084",
            "10.6084/m9.figshare.c.3306933.v1", "CC0-1.0", ("Mammalia",),
            "Wilman et al. 2014, EltonTraits 1.0, Ecology 95:2027 (Ecological Archives E095-178)",
        ),
        Release(
            "amphibio", "amphibio", "AmphiBIO_v1.csv",
            "https://ndownloader.figshare.com/files/8828578",  # AmphiBIO_v1.zip
            "10.6084/m9.figshare.4644424", "CC-BY-4.0", ("Amphibia",),
            "Oliveira et al. 2017, AmphiBIO, Scientific Data 4:170123",
        ),
    )
}  # fmt: skip
# Classes the public releases cover, and the classes of the paper's scope none of them covers.
COVERED_CLASSES = tuple(sorted({c for r in RELEASES.values() for c in r.classes}))
UNCOVERED_SCOPE = ("Insecta", "Reptilia")


class ReleaseMismatch(ValueError):
    """Downloaded or cached bytes that differ from the first download's record."""


def release_url(release: Release) -> str:
    """The published URL, or the mirror's `{BIOVITA_TRAITS_URL}/{file}`."""
    base = os.environ.get(ENV_URL, "").strip()
    return f"{base.rstrip('/')}/{release.file}" if base else release.url


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record_path(cache: Path) -> Path:
    return cache / "releases.json"


def _records(cache: Path) -> dict:
    path = _record_path(cache)
    return json.loads(path.read_text()) if path.exists() else {}


def _extract(download: Path, release: Release) -> Path:
    """DIR/<release.file>: the download itself, or its zip member of that name."""
    table = download.parent / release.file
    if zipfile.is_zipfile(download):
        with zipfile.ZipFile(download) as zf:
            members = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == release.file]
            if not members:
                raise ReleaseMismatch(
                    f"{release.name}: {download.name} holds no {release.file} "
                    f"(it has {', '.join(zf.namelist()[:8])})"
                )
            data = zf.read(sorted(members, key=len)[0])
    else:
        data = download.read_bytes()
    if not table.exists() or table.read_bytes() != data:
        write_bytes_atomic(data, table)
    return table


def fetch_release(name: str, cache: Path, http: HttpClient | None = None) -> Path:
    """The path of release `name`'s table in `cache`, downloaded on first use and verified."""
    if name not in RELEASES:
        raise ValueError(f"unknown trait table {name!r}; public releases: {', '.join(RELEASES)}")
    release = RELEASES[name]
    cache = Path(cache)
    directory = cache / name
    download = directory / "download"
    records = _records(cache)
    known = records.get(name)
    if download.exists() and known:
        size, sha = download.stat().st_size, _sha256(download)
        if (size, sha) != (known["bytes"], known["sha256"]):
            raise ReleaseMismatch(
                f"{release.name}: the cached {download} ({size} bytes, sha256 {sha[:12]}) is not "
                f"the release recorded on {known['downloaded']} ({known['bytes']} bytes, sha256 "
                f"{known['sha256'][:12]}); delete it to download it again"
            )
        return _extract(download, release)
    url = release_url(release)
    directory.mkdir(parents=True, exist_ok=True)
    http = http or HttpClient()
    try:
        http.download(url, download)
    except FetchError as exc:
        raise FetchError(f"{release.name}: download from {url} failed: {exc}") from None
    size, sha = download.stat().st_size, _sha256(download)
    if known and (size, sha) != (known["bytes"], known["sha256"]):
        bad = download.with_name(download.name + ".mismatch")
        download.replace(bad)
        raise ReleaseMismatch(
            f"{release.name}: {url} now serves {size} bytes (sha256 {sha[:12]}), not the "
            f"{known['bytes']} bytes (sha256 {known['sha256'][:12]}) first downloaded on "
            f"{known['downloaded']}; kept as {bad}. Remove its entry from "
            f"{_record_path(cache)} to accept the new release"
        )
    if not known:
        records[name] = {
            "url": url,
            "doi": release.doi,
            "file": release.file,
            "bytes": size,
            "sha256": sha,
            "downloaded": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(records, _record_path(cache))
    return _extract(download, release)

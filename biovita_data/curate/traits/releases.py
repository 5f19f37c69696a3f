"""The public trait tables as sources: each release downloaded once into a cache, checked.

A release is fetched from its published location (figshare's file downloader; the DOI names the
record), or, when `BIOVITA_TRAITS_URL` is set, from `{BIOVITA_TRAITS_URL}/{file}` (a mirror, or
the sample world). The first download records the bytes' size and sha256 in
`CACHE/releases.json`; every later use verifies the cached file against that record, and a
download made again (the cache emptied) must match it too, so a release that changed upstream is
an error, never a silent swap. A zip download (AVONET's ELEData.zip, AmphiBIO_v1.zip) is kept as
downloaded (`download`) and the table extracted next to it; a plain file is copied.

Nothing is recorded before the content is checked: the body is read with a size cap
(`crawl.limits`, BIOVITA_MAX_DOWNLOAD_BYTES), a zip's members pass the size and ratio caps, and
the table must read as its kind with its required columns and at least one row. A mirror that
answers an HTML error page with status 200 leaves nothing in the cache and is named in the
error; a cached file that no longer passes says to download it again with `traits --refresh`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from biovita_data.core.tables import write_bytes_atomic, write_json_atomic
from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.limits import Limits

ENV_URL = "BIOVITA_TRAITS_URL"


@dataclass(frozen=True)
class Release:
    """One public trait table: where it is published and what the reader calls it."""

    name: str  # the --table name
    kind: str  # the reader (curate.traits.readers.KINDS)
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


class ReleaseContentError(ValueError):
    """Bytes that are not the release's table (an error page, a truncated or foreign file)."""


def _table_bytes(data: bytes, release: Release, where: str, limits: Limits) -> bytes:
    """The table's bytes: `data` itself, or its zip member named release.file (caps checked)."""
    if data[:4] != b"PK\x03\x04":
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [i for i in zf.infolist() if i.filename.rsplit("/", 1)[-1] == release.file]
        if not members:
            raise ReleaseContentError(
                f"{where} holds no {release.file} (it has {', '.join(zf.namelist()[:8])})"
            )
        info = sorted(members, key=lambda i: len(i.filename))[0]
        limits.check_member(info, where)
        if info.file_size > limits.download_bytes:
            raise ReleaseContentError(
                f"{where}: {info.filename} is {info.file_size} bytes, over the "
                f"{limits.download_bytes}-byte cap (BIOVITA_MAX_DOWNLOAD_BYTES raises it)"
            )
        return zf.read(info)


def check_content(data: bytes, release: Release, where: str, limits: Limits) -> bytes:
    """The table's bytes once they read as `release.kind` with its required columns and rows;
    ReleaseContentError (naming `where` and what it holds) otherwise."""
    from biovita_data.curate.traits.readers import read_trait_rows

    head = data[:200].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        raise ReleaseContentError(
            f"{where} is an HTML/XML page ({len(data)} bytes starting "
            f"{data[:60].decode(errors='replace')!r}), not the {release.file} table"
        )
    try:
        table = _table_bytes(data, release, where, limits)
    except zipfile.BadZipFile as exc:
        raise ReleaseContentError(f"{where} is a broken zip: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="trait-check-") as tmp:
        probe = Path(tmp) / release.file
        probe.write_bytes(table)
        try:
            rows, _ = read_trait_rows(release.kind, probe)
        except ValueError as exc:
            why = str(exc).replace(str(probe), release.file)
            raise ReleaseContentError(f"{where} is not the {release.file} table: {why}") from None
    if rows.height == 0:
        raise ReleaseContentError(f"{where}: {release.file} has no named rows ({len(table)} bytes)")
    return table


def _extract(download: Path, release: Release, limits: Limits) -> Path:
    """DIR/<release.file>: the download itself, or its zip member of that name, checked."""
    table = download.parent / release.file
    try:
        data = check_content(download.read_bytes(), release, f"the cached {download}", limits)
    except ReleaseContentError as exc:
        raise ReleaseContentError(
            f"{release.name}: {exc}; download it again with `biovita-data traits ... --refresh`"
        ) from None
    if not table.exists() or table.read_bytes() != data:
        write_bytes_atomic(data, table)
    return table


def fetch_release(
    name: str,
    cache: Path,
    http: HttpClient | None = None,
    *,
    refresh: bool = False,
    limits: Limits | None = None,
) -> Path:
    """The path of release `name`'s table in `cache`, downloaded on first use and verified;
    `refresh`: the cached copy and its record are dropped and the release downloaded again."""
    if name not in RELEASES:
        raise ValueError(f"unknown trait table {name!r}; public releases: {', '.join(RELEASES)}")
    release = RELEASES[name]
    limits = limits or Limits.from_env()
    cache = Path(cache)
    directory = cache / name
    download = directory / "download"
    records = _records(cache)
    if refresh:
        download.unlink(missing_ok=True)
        if records.pop(name, None) is not None:
            write_json_atomic(records, _record_path(cache))
    known = records.get(name)
    if download.exists() and known:
        size, sha = download.stat().st_size, _sha256(download)
        if (size, sha) != (known["bytes"], known["sha256"]):
            raise ReleaseMismatch(
                f"{release.name}: the cached {download} ({size} bytes, sha256 {sha[:12]}) is not "
                f"the release recorded on {known['downloaded']} ({known['bytes']} bytes, sha256 "
                f"{known['sha256'][:12]}); delete it to download it again, or run traits with "
                "--refresh to accept what the mirror serves now"
            )
        return _extract(download, release, limits)
    url = release_url(release)
    base = http or HttpClient()
    # the body in memory, capped: checked before anything reaches the cache
    capped = HttpClient(
        retries=base.retries, backoff_s=base.backoff_s, throttle=base.throttle,
        max_bytes=limits.download_bytes,
    )  # fmt: skip
    try:
        data = capped.get(url)
    except FetchError as exc:
        hint = " (BIOVITA_MAX_DOWNLOAD_BYTES raises the cap)" if "size cap" in str(exc) else ""
        raise FetchError(f"{release.name}: download from {url} failed: {exc}{hint}") from None
    try:
        check_content(data, release, f"{url} (HTTP 200)", limits)
    except ReleaseContentError as exc:
        raise ReleaseContentError(f"{release.name}: {exc}; nothing was cached") from None
    size, sha = len(data), hashlib.sha256(data).hexdigest()
    directory.mkdir(parents=True, exist_ok=True)
    if known and (size, sha) != (known["bytes"], known["sha256"]):
        bad = download.with_name(download.name + ".mismatch")
        write_bytes_atomic(data, bad)
        raise ReleaseMismatch(
            f"{release.name}: {url} now serves {size} bytes (sha256 {sha[:12]}), not the "
            f"{known['bytes']} bytes (sha256 {known['sha256'][:12]}) first downloaded on "
            f"{known['downloaded']}; kept as {bad}. Run traits with --refresh to accept the "
            "new release"
        )
    write_bytes_atomic(data, download)
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
    return _extract(download, release, limits)

"""What every source shares: the page contract and checks on untrusted field values."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from biovita_data.crawl.http import HttpClient
from biovita_data.crawl.licenses import (
    DEFAULT_ALLOWED,
    UnknownLicense,
    is_allowed,
    normalize_license,
)
from biovita_data.crawl.taxa import Target


@dataclass
class Page:
    """One unit of crawl progress: rows kept, rows dropped, and where to continue."""

    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    cursor: Any = None
    done: bool = False
    total: int | None = None  # the query's result count, as the service states it
    max_id: int | None = None  # the highest record id listed (ids grow with upload time)
    watermark: str | None = None  # the latest modification time listed (ISO-8601)


@dataclass
class SourceResult:
    """What a crawl or an import of one source kept and dropped."""

    source: str
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    seconds: float = 0.0
    splits: list[str] = field(default_factory=list)  # how queries too large were split


class SplitQuery(Exception):
    """The query matches too much for one result set: crawl these narrower queries instead."""

    def __init__(
        self, queries: list[str], *, failures: list[dict] | None = None, note: str | None = None
    ) -> None:
        super().__init__(note or f"split into {len(queries)} queries")
        self.queries = queries
        self.failures = failures or []  # what no narrower query can reach
        self.note = note or str(self)


class Source(Protocol):
    name: str

    def plan(self) -> list[str]: ...

    def fetch_page(self, query: str, cursor: Any) -> Page: ...


class TargetSource:
    """What the crawling sources share: the HTTP client, the service root, the target taxa, an
    optional `updated since` date and the licence allow-list; one query per iNaturalist taxon."""

    name: str

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        targets: list[Target],
        *,
        since: str | None = None,
        allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.targets = targets
        self.since = since
        self.allowed = allowed

    def plan(self) -> list[str]:
        return list(dict.fromkeys(f"taxon_id={t.inat_id}" for t in self.targets))


class BadRecord(ValueError):
    """A record the crawl cannot use; becomes a failures row with this reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


_SAFE_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def check_media_url(url: Any) -> str:
    """An absolute http(s) URL without `..` segments or odd characters, else BadRecord."""
    if not isinstance(url, str) or not url:
        raise BadRecord("missing_media", "no media URL")
    if url.startswith("//"):
        url = "https:" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadRecord("bad_media_url", f"not an http(s) URL: {url[:120]!r}")
    if ".." in parts.path.split("/") or not _SAFE_PATH.match(parts.path):
        raise BadRecord("bad_media_url", f"unsafe path in media URL: {url[:120]!r}")
    return url


# One vocabulary of file formats: the API's photo URLs say `jpeg`, Open Data says `jpg`.
FORMAT_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "tif": "tiff", "oga": "ogg", "mp4a": "m4a"}


def normalize_format(ext: Any) -> str | None:
    """A file extension in the project's vocabulary (lower case, `jpg` for every JPEG)."""
    if not isinstance(ext, str) or not ext.strip():
        return None
    e = ext.strip().lower().lstrip(".")
    return FORMAT_ALIASES.get(e, e)


def with_scheme(url: Any) -> str | None:
    """A protocol-relative URL (`//xeno-canto.org/1`) with https:; other strings as they are."""
    if not isinstance(url, str) or not url.strip():
        return None
    url = url.strip()
    return "https:" + url if url.startswith("//") else url


def to_text(value: Any) -> str | None:
    """A stripped non-empty string, else None."""
    return value.strip() or None if isinstance(value, str) else None


def to_yes_no(value: Any) -> bool | None:
    """`yes` -> True, `no` -> False, anything else (`unknown`, empty) -> None."""
    v = value.strip().lower() if isinstance(value, str) else None
    return True if v == "yes" else False if v == "no" else None


def check_license(raw: Any, allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> str:
    if raw is not None and not isinstance(raw, str):
        raise BadRecord("license_unknown", f"licence is not a string: {raw!r}")
    try:
        code = normalize_license(raw)
    except UnknownLicense:
        raise BadRecord("license_unknown", f"unknown licence {raw!r}") from None
    if not is_allowed(code, allowed):
        raise BadRecord("license_not_allowed", f"licence {code} is not in the allow-list")
    return code


def to_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise BadRecord("malformed", f"{what} is not an integer: {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRecord("malformed", f"{what} is not an integer: {value!r}") from None


def to_float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def to_date(value: Any) -> dt.date | None:
    """ISO dates; partial ones such as `2015-06-00` or `0000-00-00` are unknown (None)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def to_datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def failure(source: str, modality: str, record_id: Any, name: Any, exc: BadRecord) -> dict:
    return {
        "stage": "fetch",
        "source": source,
        "modality": modality,
        "record_id": None if record_id is None else str(record_id),
        "name": name if isinstance(name, str) else None,
        "reason": exc.reason,
        "detail": str(exc),
    }

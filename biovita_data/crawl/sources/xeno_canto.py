"""Xeno-canto API v3: tag queries, every page of every query, string-typed fields -> raw rows."""

from __future__ import annotations

import os
from typing import Any

from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import (
    BadRecord,
    Page,
    SplitQuery,
    TargetSource,
    check_license,
    check_media_url,
    failure,
    normalize_format,
    to_date,
    to_float,
    to_int,
    to_text,
    to_yes_no,
    with_scheme,
)
from biovita_data.crawl.taxa import Target

NAME = "xeno-canto"
PER_PAGE = 500
# A query too large for one result set is split by quality rating (an exact partition).
QUALITY_SPLIT = ("q:A", "q:B", "q:C", "q:D", "q:E", "q:0")


class MissingKey(RuntimeError):
    pass


def api_key() -> str:
    key = os.environ.get("XENO_CANTO_API_KEY", "").strip()
    if not key:
        raise MissingKey(
            "XENO_CANTO_API_KEY is not set: Xeno-canto API v3 needs a key "
            "(https://xeno-canto.org/account); export it before fetching from xeno-canto."
        )
    return key


def parse_length(text: Any) -> float | None:
    """`"4:13"` or `"1:02:03"` -> seconds."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return float(seconds)


def background_species(also: Any) -> list[str] | None:
    """XC `also` (other species heard) as a list of names; empty entries (`[""]`) dropped."""
    if isinstance(also, str):
        also = also.split(",")
    if not isinstance(also, list):
        return None
    return [a.strip() for a in also if isinstance(a, str) and a.strip()]


def sonogram_url(sono: Any) -> str | None:
    """The largest sonogram XC offers (`sono.large`, else `med`, `small`), with a scheme."""
    if not isinstance(sono, dict):
        return None
    return with_scheme(next((sono[k] for k in ("large", "med", "small") if sono.get(k)), None))


def parse_recording(rec: Any, query: str, allowed: tuple[str, ...]) -> dict:
    """One XC recording object -> a raw row; BadRecord when it cannot be used."""
    if not isinstance(rec, dict):
        raise BadRecord("malformed", f"recording is not an object: {str(rec)[:80]!r}")
    rid = to_int(rec.get("id"), "id")
    gen, sp, ssp = (rec.get(k) if isinstance(rec.get(k), str) else "" for k in ("gen", "sp", "ssp"))
    if not gen.strip() or not sp.strip():
        raise BadRecord("malformed", f"XC{rid}: no scientific name (gen/sp)")
    lic = check_license(rec.get("lic"), allowed)
    if not rec.get("file"):
        raise BadRecord("restricted", f"XC{rid}: no download (restricted species)")
    url = check_media_url(rec.get("file"))
    file_name = rec.get("file-name") if isinstance(rec.get("file-name"), str) else ""
    ext = normalize_format(file_name.rsplit(".", 1)[-1]) if "." in file_name else None
    smp = rec.get("smp")
    # API v2 wrote `lng` and `bird-seen` where v3 writes `lon` and `animal-seen`
    lon = rec.get("lon") if "lon" in rec else rec.get("lng")
    seen = rec.get("animal-seen") if "animal-seen" in rec else rec.get("bird-seen")
    return {
        "source": NAME,
        "modality": "audio",
        "record_id": str(rid),
        "raw_scientific_name": " ".join(p for p in (gen, sp, ssp) if p.strip()),
        "raw_genus": gen,
        "raw_epithet": sp,
        "raw_subspecies": ssp or None,
        "source_group": rec.get("grp") if isinstance(rec.get("grp"), str) else None,
        "common_name": rec.get("en") or None,
        "license": lic,
        "license_raw": rec.get("lic"),
        "attribution": rec.get("rec") or None,
        "media_url": url,
        "file_name": file_name or None,
        "file_format": ext,
        "duration_s": parse_length(rec.get("length")),
        "sample_rate": int(smp) if isinstance(smp, str) and smp.isdigit() else None,
        "quality": rec.get("q") or None,
        "sound_type": rec.get("type") or None,
        "sex": rec.get("sex") or None,
        "stage": rec.get("stage") or None,
        "country": rec.get("cnt") or None,
        "latitude": to_float(rec.get("lat")),
        "longitude": to_float(lon),
        "date": to_date(rec.get("date")),
        "time": rec.get("time") if rec.get("time") not in ("", "?") else None,
        "uploaded": to_date(rec.get("uploaded")),
        "page_url": with_scheme(rec.get("url")),
        "locality": to_text(rec.get("loc")),
        "altitude": to_float(rec.get("alt")),
        "background_species": background_species(rec.get("also")),
        "recording_method": to_text(rec.get("method")),
        "remarks": to_text(rec.get("rmk")),
        "animal_seen": to_yes_no(seen),
        "playback_used": to_yes_no(rec.get("playback-used")),
        "automatic_recording": to_yes_no(rec.get("auto")),
        "device": to_text(rec.get("dvc")),
        "microphone": to_text(rec.get("mic")),
        "sonogram_url": sonogram_url(rec.get("sono")),
        "query": query,
    }


class XenoCantoSource(TargetSource):
    """Crawls `/recordings` for each target's tag queries; cursor = the next page number."""

    name = NAME

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        targets: list[Target],
        *,
        since: str | None = None,
        allowed: tuple[str, ...] = DEFAULT_ALLOWED,
        key: str | None = None,
    ) -> None:
        super().__init__(http, base_url, targets, since=since, allowed=allowed)
        self.key = key or api_key()
        http.secrets = (*http.secrets, self.key)

    def plan(self) -> list[str]:
        queries = []
        for t in self.targets:
            for q in t.xc_queries:
                q = f"{q} since:{self.since}" if self.since else q
                if q not in queries:
                    queries.append(q)
        return queries

    def _filters(self, query: str) -> list[Target] | None:
        """The targets behind `query` that filter client-side; None when one keeps everything."""
        mine = [
            t
            for t in self.targets
            if any(query == q or query.startswith(f"{q} ") for q in t.xc_queries)
        ]
        return None if any(not t.xc_genera for t in mine) else mine

    def fetch_page(self, query: str, cursor: Any) -> Page:
        page_no = int(cursor or 1)
        params = {"query": query, "key": self.key, "page": page_no, "per_page": PER_PAGE}
        try:
            data = self.http.get_json(f"{self.base_url}/recordings", params, policy=NAME)
        except FetchError as exc:
            if exc.status == 400 and "narrow" in str(exc) and "q:" not in query:
                raise SplitQuery([f"{query} {q}" for q in QUALITY_SPLIT]) from None
            raise
        if not isinstance(data, dict) or not isinstance(data.get("recordings"), list):
            raise FetchError(f"malformed Xeno-canto page {page_no} for {query!r}: no recordings")
        page = Page(cursor=page_no + 1)
        total = data.get("numRecordings")
        page.total = int(total) if isinstance(total, (int, str)) and str(total).isdigit() else None
        ids = [to_int(r.get("id"), "id") for r in data["recordings"] if isinstance(r, dict)
               and str(r.get("id", "")).isdigit()]  # fmt: skip
        page.max_id = max(ids, default=None)
        filters = self._filters(query)  # lower ranks: keep only the target's species
        for rec in data["recordings"]:
            if filters is not None and isinstance(rec, dict):
                gen, sp = str(rec.get("gen") or ""), str(rec.get("sp") or "")
                if not any(t.xc_keeps(gen, sp) for t in filters):
                    continue
            try:
                page.rows.append(parse_recording(rec, query, self.allowed))
            except BadRecord as exc:
                rid = rec.get("id") if isinstance(rec, dict) else None
                name = (
                    f"{rec.get('gen', '')} {rec.get('sp', '')}" if isinstance(rec, dict) else None
                )
                page.failures.append(failure(NAME, "audio", rid, name, exc))
        num_pages = data.get("numPages")
        if not isinstance(num_pages, int):
            raise FetchError(f"malformed Xeno-canto page for {query!r}: numPages={num_pages!r}")
        page.done = page_no >= num_pages
        return page

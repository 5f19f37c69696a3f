"""iNaturalist API v1: research-grade observations by taxon, paged by `id_above` -> media rows."""

from __future__ import annotations

import re
from typing import Any

from biovita_data.crawl.http import FetchError
from biovita_data.crawl.sources.base import (
    BadRecord,
    Page,
    TargetSource,
    check_license,
    check_media_url,
    failure,
    normalize_format,
    to_date,
    to_datetime,
    to_float,
    to_int,
    to_text,
)

NAME = "inaturalist"
PER_PAGE = 200
_SIZE_WORD = re.compile(r"/(square|thumb|small|medium|large|original)\.")
SOUND_TYPES = {
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "audio/mpeg": "mp3",
    "audio/x-wav": "wav",
    "audio/wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
}


def size_url(url: str, size: str) -> str:
    """The same photo at another size word (`square` -> `original`)."""
    return _SIZE_WORD.sub(f"/{size}.", url, count=1)


def _ext(url: str) -> str | None:
    path = url.split("?", 1)[0]
    return normalize_format(path.rsplit(".", 1)[-1]) if "." in path.rsplit("/", 1)[-1] else None


HIDDEN = ("obscured", "private")


def _location(obs: dict) -> tuple[float | None, float | None]:
    """`location` as iNaturalist writes it: "lat,lon", or (in some answers) [lat, lon]."""
    loc = obs.get("location")
    if isinstance(loc, str) and "," in loc:
        lat, lon = loc.split(",", 1)
    elif isinstance(loc, list) and len(loc) == 2:
        lat, lon = loc
    else:
        return None, None
    return to_float(lat), to_float(lon)


def where(obs: dict) -> dict:
    """Coordinates as published, how exact they are, and whether they are obscured.

    An observation's own `geoprivacy` or its taxon's (`taxon_geoprivacy`, threatened species)
    can be `obscured` (public coordinates moved at random within a ~0.2 degree cell) or `private`
    (no public coordinates); `public_positional_accuracy` is the uncertainty of the public ones.
    """
    geo, taxon_geo = (to_text(obs.get(k)) for k in ("geoprivacy", "taxon_geoprivacy"))
    lat, lon = _location(obs)
    accuracy = obs.get("public_positional_accuracy")
    if accuracy is None:
        accuracy = obs.get("positional_accuracy")
    hidden = obs.get("obscured") is True or geo in HIDDEN or taxon_geo in HIDDEN
    return {
        "latitude": lat,
        "longitude": lon,
        "geoprivacy": geo,
        "taxon_geoprivacy": taxon_geo,
        "positional_accuracy": to_float(accuracy),
        "coordinates_obscured": hidden,
    }


def parse_observation(obs: Any, query: str, allowed: tuple[str, ...]) -> tuple[list, list]:
    """One observation -> (rows, failures) for its photos and sounds."""
    if not isinstance(obs, dict):
        raise BadRecord("malformed", f"observation is not an object: {str(obs)[:80]!r}")
    oid = to_int(obs.get("id"), "observation id")
    taxon = obs.get("taxon")
    if not isinstance(taxon, dict) or not isinstance(taxon.get("name"), str):
        raise BadRecord("malformed", f"observation {oid}: no taxon name")
    user = obs.get("user") if isinstance(obs.get("user"), dict) else {}
    common = {
        "observation_id": oid,
        "raw_scientific_name": taxon["name"],
        "raw_taxon_id": to_int(taxon.get("id"), "taxon id"),
        "raw_taxon_rank": taxon.get("rank"),
        "raw_ancestry": taxon.get("ancestry"),
        "source_group": taxon.get("iconic_taxon_name"),
        "common_name": taxon.get("preferred_common_name"),
        "quality": obs.get("quality_grade"),
        **where(obs),
        "date": to_date(obs.get("observed_on")),
        "uploaded": to_date(obs.get("created_at")),
        "updated_at": to_datetime(obs.get("updated_at")),
        "page_url": obs.get("uri") if isinstance(obs.get("uri"), str) else None,
        "query": query,
    }
    login = user.get("login")
    rows, fails = [], []
    for kind, items in (("image", obs.get("photos")), ("audio", obs.get("sounds"))):
        if items is None:
            continue
        if not isinstance(items, list):
            bad = BadRecord("malformed", f"observation {oid}: {kind} field is not a list")
            fails.append(failure(NAME, kind, oid, taxon["name"], bad))
            continue
        for item in items:
            mid = item.get("id") if isinstance(item, dict) else None
            try:
                rows.append({**common, **_media(kind, item, login, allowed)})
            except BadRecord as exc:
                fails.append(failure(NAME, kind, mid, taxon["name"], exc))
    return rows, fails


def _media(kind: str, item: Any, login: Any, allowed: tuple[str, ...]) -> dict:
    if not isinstance(item, dict):
        raise BadRecord("malformed", f"{kind} entry is not an object")
    mid = to_int(item.get("id"), f"{kind} id")
    lic = check_license(item.get("license_code"), allowed)
    attribution = item.get("attribution") or (f"(c) {login}" if login else None)
    if kind == "image":
        url = check_media_url(item.get("url"))
        dims = item.get("original_dimensions") or {}
        return {
            "source": NAME,
            "modality": "image",
            "record_id": str(mid),
            "license": lic,
            "license_raw": item.get("license_code"),
            "attribution": attribution,
            "media_url": size_url(url, "original"),
            "thumbnail_url": size_url(url, "square"),
            "file_format": _ext(url),
            "width": dims.get("width") if isinstance(dims.get("width"), int) else None,
            "height": dims.get("height") if isinstance(dims.get("height"), int) else None,
        }
    url = check_media_url(item.get("file_url"))
    return {
        "source": NAME,
        "modality": "audio",
        "record_id": str(mid),
        "license": lic,
        "license_raw": item.get("license_code"),
        "attribution": attribution,
        "media_url": url,
        "file_format": SOUND_TYPES.get(str(item.get("file_content_type")), _ext(url)),
    }


class INaturalistSource(TargetSource):
    """Observations of each target taxon, `order_by=id&order=asc&id_above=cursor`."""

    name = NAME

    def fetch_page(self, query: str, cursor: Any) -> Page:
        id_above = int(cursor or 0)
        params = {
            "taxon_id": query.split("=", 1)[1],
            "quality_grade": "research",
            "order_by": "id",
            "order": "asc",
            "id_above": id_above,
            "per_page": PER_PAGE,
        }
        if self.since:
            params["updated_since"] = self.since
        data = self.http.get_json(f"{self.base_url}/observations", params, policy=NAME)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise FetchError(f"malformed iNaturalist page after id {id_above}: no results list")
        page = Page(cursor=id_above)
        total = data.get("total_results")
        page.total = total if isinstance(total, int) else None
        for obs in results:
            if isinstance(obs, dict) and isinstance(obs.get("id"), int):
                page.cursor = max(page.cursor, obs["id"])
                when = to_datetime(obs.get("updated_at"))
                if when is not None:
                    stamp = when.isoformat()
                    page.watermark = max(page.watermark or stamp, stamp)
            try:
                rows, fails = parse_observation(obs, query, self.allowed)
            except BadRecord as exc:
                oid = obs.get("id") if isinstance(obs, dict) else None
                page.failures.append(failure(NAME, "observation", oid, None, exc))
                continue
            page.rows += rows
            page.failures += fails
        page.done = len(results) < PER_PAGE
        return page

"""GBIF occurrence API v1: occurrences with media of the target taxa -> one raw row per media item.

The same parser reads a Darwin Core Archive download (crawl.dwca), whose columns carry the same
term names as the API's JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import (
    BadRecord,
    Page,
    SplitQuery,
    check_license,
    check_media_url,
    failure,
    to_date,
    to_datetime,
    to_float,
    to_int,
)
from biovita_data.crawl.taxa import gbif_species_match

NAME = "gbif"
PER_PAGE = 300
MAX_OFFSET = 100_000  # GBIF refuses offset + limit beyond this
ANIMAL_SOUND_ARCHIVE = "b7ec1bf8-819b-11e2-bad2-00145eb45e9a"
XENO_CANTO_DATASET = "b1047888-ae52-4179-9dd5-5448ea342a24"
INATURALIST_DATASET = "50c9509d-22c7-4a22-a47d-8c48425ef4a7"
RANKS = ("KINGDOM", "PHYLUM", "CLASS", "ORDER", "FAMILY", "GENUS", "SPECIES")
# Where the backbone's other ranks sit among RANKS (a split goes to the next major rank below).
_BETWEEN = {"SUBPHYLUM": "PHYLUM", "SUPERCLASS": "PHYLUM", "SUBCLASS": "CLASS",
            "INFRACLASS": "CLASS", "SUPERORDER": "CLASS", "SUBORDER": "ORDER",
            "INFRAORDER": "ORDER", "SUPERFAMILY": "ORDER", "SUBFAMILY": "FAMILY",
            "TRIBE": "FAMILY", "SUBTRIBE": "FAMILY", "SUBGENUS": "GENUS"}  # fmt: skip
MEDIA_TYPES = {"sound": ("Sound",), "image": ("StillImage",), "both": ("Sound", "StillImage")}
MODALITY = {"Sound": "audio", "StillImage": "image"}
MIME_EXT = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/x-wav": "wav",
    "audio/wav": "wav",
    "audio/vnd.wave": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/ogg": "ogg",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/aac": "m4a",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/tiff": "tif",
    "image/webp": "webp",
}
EXT_MODALITY = {
    **{e: "audio" for e in ("mp3", "wav", "flac", "ogg", "m4a")},
    **{e: "image" for e in ("jpg", "png", "gif", "tif", "webp")},
}
_EXT_ALIAS = {"jpeg": "jpg", "tiff": "tif", "wave": "wav", "oga": "ogg"}


def media_format(mime: Any, url: str) -> str | None:
    """The file format from the MIME type, else from the URL's extension; None when neither says."""
    if isinstance(mime, str) and mime.strip().lower() in MIME_EXT:
        return MIME_EXT[mime.strip().lower()]
    last = url.split("?", 1)[0].rsplit("/", 1)[-1]
    if "." not in last:
        return None
    ext = last.rsplit(".", 1)[-1].lower()
    ext = _EXT_ALIAS.get(ext, ext)
    return ext if ext in EXT_MODALITY else None


def media_record_id(gbif_id: int, url: str) -> str:
    """`<gbifID>-<8 hex of the URL's path and query>`: the same from the API and a download in
    any order, and when a publisher moves its media to another host or to https."""
    parts = urlsplit(url)
    where = f"{parts.path}?{parts.query}" if parts.query else parts.path
    return f"{gbif_id}-{hashlib.sha1(where.encode()).hexdigest()[:8]}"


def canonical_name(occ: dict) -> str | None:
    """The accepted name without authors: `species`, else the leading words of
    acceptedScientificName (a capitalised genus, then lower-case epithets)."""
    species = occ.get("species")
    if isinstance(species, str) and species.strip():
        return " ".join(species.split())
    full = occ.get("acceptedScientificName") or occ.get("scientificName")
    if not isinstance(full, str) or not full.strip():
        return None
    words = full.split()
    kept = [words[0]]
    for w in words[1:]:
        if not w.isalpha() or not w.islower():
            break
        kept.append(w)
    return " ".join(kept)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


# Interpretation issues that say the published coordinates are coarser than the observation.
GENERALISED_ISSUES = ("COORDINATE_ROUNDED",)


def where(occ: dict) -> dict:
    """Coordinates, their uncertainty (`coordinateUncertaintyInMeters` -> positional_accuracy,
    as iNaturalist's) and whether they are generalised: the publisher says so
    (`dataGeneralizations`) or GBIF's interpretation flags it (an issue such as
    COORDINATE_ROUNDED; the API lists `issues`, a download's `issue` column joins them by `;`)."""
    lat, lon = to_float(occ.get("decimalLatitude")), to_float(occ.get("decimalLongitude"))
    issues = occ.get("issues") if occ.get("issues") is not None else occ.get("issue")
    if isinstance(issues, str):
        issues = issues.split(";")
    flagged = {str(i).strip().upper() for i in issues or ()} & set(GENERALISED_ISSUES)
    generalised = bool(_text(occ.get("dataGeneralizations")) or flagged)
    return {
        "latitude": lat,
        "longitude": lon,
        "positional_accuracy": to_float(occ.get("coordinateUncertaintyInMeters")),
        "coordinates_obscured": generalised if lat is not None or generalised else None,
    }


def parse_occurrence(
    occ: Any,
    query: str,
    allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    media: str = "both",
) -> tuple[list[dict], list[dict]]:
    """One occurrence (API JSON or a DwC-A row with its multimedia) -> (rows, failures)."""
    if not isinstance(occ, dict):
        raise BadRecord("malformed", f"occurrence is not an object: {str(occ)[:80]!r}")
    gid = to_int(occ.get("gbifID") or occ.get("key"), "gbifID")
    name = canonical_name(occ)
    if name is None:
        raise BadRecord("malformed", f"occurrence {gid}: no scientific name")
    taxon_key = occ.get("taxonKey")
    accepted = occ.get("acceptedTaxonKey") or occ.get("speciesKey") or taxon_key
    words = name.split()
    common = {
        "raw_scientific_name": name,
        "raw_genus": _text(occ.get("genus")) or words[0],
        "raw_epithet": words[1] if len(words) > 1 else None,
        "raw_subspecies": words[2] if len(words) > 2 else None,
        "raw_taxon_rank": (_text(occ.get("taxonRank")) or "").lower() or None,
        "source_group": _text(occ.get("class")),
        "common_name": _text(occ.get("vernacularName")),
        "quality": _text(occ.get("basisOfRecord")),
        "sex": _text(occ.get("sex")),
        "stage": _text(occ.get("lifeStage")),
        "country": _text(occ.get("countryCode")),
        **where(occ),
        "date": to_date(occ.get("eventDate")),
        "time": _text(occ.get("eventTime")),
        "updated_at": to_datetime(occ.get("lastInterpreted")),
        "page_url": f"https://www.gbif.org/occurrence/{gid}",
        "query": query,
        "gbif_id": gid,
        "occurrence_id": _text(occ.get("occurrenceID")),
        "dataset_key": _text(occ.get("datasetKey")),
        "taxon_key": to_int(taxon_key, "taxonKey") if taxon_key not in (None, "") else None,
        "accepted_taxon_key": to_int(accepted, "acceptedTaxonKey")
        if accepted not in (None, "")
        else None,
        "verbatim_name": _text(occ.get("scientificName")),
        "raw_class": _text(occ.get("class")),
        "raw_order": _text(occ.get("order")),
        "raw_family": _text(occ.get("family")),
    }
    items = occ.get("media")
    if items is None:
        return [], []
    if not isinstance(items, list):
        bad = BadRecord("malformed", f"occurrence {gid}: media is not a list")
        return [], [failure(NAME, "media", gid, name, bad)]
    wanted = {MODALITY[t] for t in MEDIA_TYPES[media]}
    rows, fails = [], []
    for i, item in enumerate(items):
        url = item.get("identifier") if isinstance(item, dict) else None
        rid = media_record_id(gid, url) if isinstance(url, str) and url else f"{gid}-{i}"
        try:
            row = _media(item, gid, occ, allowed)
        except BadRecord as exc:
            kind = item.get("type") if isinstance(item, dict) else None
            fails.append(failure(NAME, MODALITY.get(str(kind), "media"), rid, name, exc))
            continue
        if row["modality"] in wanted:
            rows.append({**common, **row})
    return rows, fails


def _media(item: Any, gid: int, occ: dict, allowed: tuple[str, ...]) -> dict:
    if not isinstance(item, dict):
        raise BadRecord("malformed", f"occurrence {gid}: a media entry is not an object")
    url = check_media_url(item.get("identifier"))
    fmt = media_format(item.get("format"), url)
    kind = item.get("type")
    modality = MODALITY.get(kind) if kind else EXT_MODALITY.get(fmt or "")
    if modality is None:
        raise BadRecord("unsupported_media", f"occurrence {gid}: media type {kind!r} ({url})")
    raw_license = _text(item.get("license"))
    if raw_license is None:
        raise BadRecord("license_unknown", f"occurrence {gid}: media item without a licence")
    creator = _text(item.get("creator"))
    holder = _text(item.get("rightsHolder"))
    attribution = creator or holder or _text(occ.get("recordedBy"))
    if creator and holder and holder != creator:
        attribution = f"{creator} (rights holder: {holder})"
    return {
        "source": NAME,
        "modality": modality,
        "record_id": media_record_id(gid, url),
        "license": check_license(raw_license, allowed),
        "license_raw": raw_license,
        "attribution": attribution,
        "media_url": url,
        "file_format": fmt,
        "uploaded": to_date(item.get("created")),
    }


def parse_query(query: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """`taxonKey=212&datasetKey=..&_rank=CLASS` -> (request params, private hints `_...`)."""
    params: dict[str, list[str]] = {}
    hints: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k.startswith("_"):
            hints[k[1:]] = v
        else:
            params.setdefault(k, []).append(v)
    return params, hints


def make_query(params: dict[str, list[str]], hints: dict[str, str]) -> str:
    pairs = [(k, v) for k in params for v in params[k]]
    return urlencode(pairs + [(f"_{k}", v) for k, v in hints.items()])


def _facet_key(rank: str) -> str:
    """`ORDER` -> `orderKey` (the search parameter and facet name)."""
    return f"{rank.lower()}Key"


class GbifSource:
    """Crawls `/occurrence/search` for each target taxon and dataset; cursor = the next offset.

    A query whose count passes the offset cap is split into child taxa (a facet on the next
    rank), then into year ranges; what no split can reach becomes a failures row.
    """

    name = NAME

    def __init__(
        self,
        http: HttpClient,
        base_url: str,
        taxa: list[str],
        *,
        datasets: list[str] | None = None,
        media: str = "sound",
        since: str | None = None,
        allowed: tuple[str, ...] = DEFAULT_ALLOWED,
        max_offset: int = MAX_OFFSET,
    ) -> None:
        if media not in MEDIA_TYPES:
            raise ValueError(f"--media must be sound, image or both, not {media!r}")
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.taxa = taxa
        default = [ANIMAL_SOUND_ARCHIVE] if media == "sound" else []
        self.datasets = list(dict.fromkeys(datasets)) if datasets else default
        self.media = media
        self.since = since
        self.allowed = allowed
        self.max_offset = max_offset

    def match(self, name: str) -> tuple[int, str]:
        """A `--taxa` name -> (accepted GBIF backbone key, rank) through `/species/match`."""
        data = self.http.get_json(
            f"{self.base_url}/species/match", {"name": name, "strict": "true"}, policy=NAME
        )
        return gbif_species_match(data, name)  # v1 or v2 answers

    def plan(self) -> list[str]:
        queries = []
        for name in self.taxa:
            key, rank = self.match(" ".join(name.split()))
            params: dict[str, list[str]] = {"taxonKey": [str(key)]}
            if self.datasets:
                params["datasetKey"] = list(self.datasets)
            params["mediaType"] = list(MEDIA_TYPES[self.media])
            if self.since:
                params["lastInterpreted"] = [f"{self.since},*"]
            q = make_query(params, {"rank": rank})
            if q not in queries:
                queries.append(q)
        return queries

    def _search(self, params: dict[str, list[str]], **extra: Any) -> dict:
        data = self.http.get_json(
            f"{self.base_url}/occurrence/search", {**params, **extra}, policy=NAME
        )
        if not isinstance(data, dict) or not isinstance(data.get("count"), int):
            raise FetchError(f"malformed GBIF search answer for {params}: no count")
        return data

    def _facet(self, params: dict[str, list[str]], facet: str) -> dict[str, int]:
        data = self._search(params, limit=0, facet=facet, facetLimit=10_000)
        counts: dict[str, int] = {}
        for f in data.get("facets") or []:
            if str(f.get("field", "")).replace("_", "").lower() == facet.lower():
                for c in f.get("counts") or []:
                    counts[str(c["name"])] = int(c["count"])
        return counts

    def _split(self, query: str, count: int) -> SplitQuery | None:
        """Narrower queries covering `query`, or None when neither taxa nor years can split."""
        params, hints = parse_query(query)
        rank = hints.get("rank", "")
        major = _BETWEEN.get(rank, rank)
        fails: list[dict] = []
        counts: dict[str, int] = {}
        if major in RANKS[:-1] and "year" not in params:
            child = RANKS[RANKS.index(major) + 1]
            counts = self._facet(params, _facet_key(child))
            queries = [
                make_query({**params, "taxonKey": [key]}, {**hints, "rank": child})
                for key in sorted(counts, key=int)
            ]
            what = f"{len(queries)} child taxa ({child.lower()})"
        if not counts:  # a species, or no child taxa: years instead
            if "year" in params:
                return None
            counts = self._facet(params, "year")
            if not counts:
                return None  # page what the cap allows; the rest becomes a failures row
            ranges: list[list[int]] = []
            total = 0
            for year in sorted(counts, key=int):
                n = counts[year]
                if ranges and total + n <= self.max_offset:
                    ranges[-1][1] = int(year)
                    total += n
                else:
                    ranges.append([int(year), int(year)])
                    total = n
            queries = [make_query({**params, "year": [f"{a},{b}"]}, hints) for a, b in ranges]
            what = f"{len(queries)} year ranges"
        rest = count - sum(counts.values())
        if rest > 0:
            reason = "no year" if what.endswith("year ranges") else f"identified only to {rank}"
            fails.append(
                {
                    "stage": "fetch",
                    "source": NAME,
                    "modality": "occurrence",
                    "record_id": query,
                    "name": None,
                    "reason": "over_offset_cap",
                    "detail": f"{rest} occurrences ({reason}) cannot be paged past the "
                    f"{self.max_offset} offset cap; use a GBIF download and import-dwca",
                }
            )
        note = f"{count} occurrences > {self.max_offset}: split into {what}"
        return SplitQuery(queries, failures=fails, note=note)

    def fetch_page(self, query: str, cursor: Any) -> Page:
        offset = int(cursor or 0)
        params, _ = parse_query(query)
        limit = min(PER_PAGE, self.max_offset - offset)
        data = self._search(params, limit=limit, offset=offset)
        count = data["count"]
        if offset == 0 and count > self.max_offset:
            split = self._split(query, count)
            if split is not None:
                raise split
        results = data.get("results")
        if not isinstance(results, list):
            raise FetchError(f"malformed GBIF page at offset {offset} for {query!r}: no results")
        page = Page(cursor=offset + len(results), total=count)
        for occ in results:
            try:
                rows, fails = parse_occurrence(occ, query, self.allowed, self.media)
            except BadRecord as exc:
                gid = occ.get("gbifID") or occ.get("key") if isinstance(occ, dict) else None
                page.failures.append(failure(NAME, "occurrence", gid, None, exc))
                continue
            page.rows += rows
            page.failures += fails
        end = data.get("endOfRecords")
        # endOfRecords decides; `count` only when the service omits it (a stale count can be
        # smaller than what the pages hold: crawled to the end, the mismatch noted once)
        page.done = bool(end) or not results or (end is None and page.cursor >= count)
        if not page.done and offset < max(count, 1) <= page.cursor:
            page.failures.append(
                {
                    "stage": "fetch",
                    "source": NAME,
                    "modality": "occurrence",
                    "record_id": query,
                    "name": None,
                    "reason": "count_mismatch",
                    "detail": f"GBIF stated count {count}, but the pages hold more (offset "
                    f"{offset} + {len(results)} records, endOfRecords false): crawled on to "
                    "endOfRecords",
                }
            )
        if not page.done and page.cursor >= self.max_offset:
            page.done = True
            page.failures.append(
                {
                    "stage": "fetch",
                    "source": NAME,
                    "modality": "occurrence",
                    "record_id": query,
                    "name": None,
                    "reason": "over_offset_cap",
                    "detail": f"{count - page.cursor} occurrences past the {self.max_offset} "
                    "offset cap and no narrower split; use a GBIF download and import-dwca",
                }
            )
        return page

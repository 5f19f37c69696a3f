"""GBIF crawl of the real-shape search page (reference/gbif_v1_*) served on loopback."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest

from biovita_data.core import layout
from biovita_data.crawl.fetch import FetchSettings, fetch
from biovita_data.crawl.licenses import normalize_license
from biovita_data.crawl.sources.gbif import canonical_name, media_format, media_record_id

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
REF = next(
    (
        p
        for p in (
            REFERENCE,
            Path("/work/shared/reference"),
        )
        if (p / "gbif_v1_occurrence_search_pygbif.json").exists()
    ),
    None,
)
pytestmark = pytest.mark.skipif(REF is None, reason="reference samples not present")


def _page() -> dict:
    return json.loads((REF / "gbif_v1_occurrence_search_pygbif.json").read_text())


def _match() -> dict:
    return json.loads((REF / "gbif_v1_species_match_pygbif.json").read_text())


class _Reference:
    """Serves one fixed search page at offset 0 and its end after, and the species match."""

    def __init__(self, page: dict) -> None:
        self.page = page
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                qs = parse_qs(url.query)
                outer.requests.append({"path": url.path, **qs})
                if url.path.endswith("/species/match"):
                    body = _match()
                elif url.path.endswith("/occurrence/search"):
                    offset = int(qs.get("offset", ["0"])[0])
                    body = outer.page if offset == 0 else {
                        **{k: v for k, v in outer.page.items() if k != "results"},
                        "offset": offset, "results": [], "endOfRecords": True,
                    }  # fmt: skip
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture
def serve() -> Iterator:
    servers: list[_Reference] = []

    def start(page: dict) -> _Reference:
        servers.append(_Reference(page))
        return servers[-1]

    yield start
    for s in servers:
        s.httpd.shutdown()
        s.httpd.server_close()


def _crawl(url: str, out: Path, media: str = "both") -> tuple[pl.DataFrame, pl.DataFrame]:
    settings = FetchSettings(
        taxa=["Helianthus annuus"],
        sources=["gbif"],
        gbif_url=url,
        gbif_datasets=["50c9509d-22c7-4a22-a47d-8c48425ef4a7"],
        media=media,
        throttle=False,
        retries=0,
    )
    fetch(settings, out)
    rows = pl.read_parquet(layout.raw_records_path(out, "gbif"))
    fails = pl.read_parquet(out / "manifests" / "failures.parquet")
    return rows, fails


def test_reference_page_every_media_item_is_a_record_or_a_failure(serve, tmp_path: Path) -> None:
    page = _page()
    srv = serve(page)
    rows, fails = _crawl(srv.url, tmp_path)
    items = [(int(o["gbifID"]), m["identifier"]) for o in page["results"] for m in o["media"]]
    assert len(items) == 10
    expected = {media_record_id(g, u) for g, u in items}
    assert set(rows["record_id"]) | set(fails["record_id"]) >= expected
    assert set(rows["record_id"]) == expected  # all are CC BY-NC photos with URLs
    assert fails.filter(pl.col("source") == "gbif").height == 0
    first = rows.filter(pl.col("gbif_id") == 4510402016).row(0, named=True)
    assert first["raw_scientific_name"] == "Batrachoseps luciae"
    assert first["occurrence_id"] == "https://www.inaturalist.org/observations/196061527"
    assert first["dataset_key"] == "50c9509d-22c7-4a22-a47d-8c48425ef4a7"
    assert first["taxon_key"] == first["accepted_taxon_key"] == 2431762
    assert first["license"] == "cc-by-nc-4.0" and first["attribution"] == "Max Roberts"
    assert first["modality"] == "image" and first["file_format"] == "jpg"
    assert first["raw_class"] == "Amphibia" and first["date"].isoformat() == "2024-01-06"
    assert round(first["latitude"], 4) == 36.5942
    # the query went to the matched backbone key, 300 a page, the dataset and both media types
    search = [r for r in srv.requests if r["path"].endswith("/occurrence/search")]
    assert search[0]["taxonKey"] == ["9206251"] and search[0]["limit"] == ["300"]
    assert search[0]["mediaType"] == ["Sound", "StillImage"]


def test_free_text_licences_missing_format_synonyms_and_bad_items(serve, tmp_path: Path) -> None:
    page = copy.deepcopy(_page())
    occ, other = page["results"]
    occ["taxonKey"], occ["scientificName"] = 9999999, "Batrachoseps lucia Old, 1900"
    media = occ["media"]
    media[0]["license"] = "All rights reserved"
    media[1]["license"] = "CC BY 4.0"
    media[2].pop("format")
    media[2]["identifier"] = "https://example.org/sounds/a17.MP3"
    media[2]["type"] = "Sound"
    media[3]["type"] = "MovingImage"
    media[4]["license"] = "Creative Commons Attribution-NoDerivatives 4.0"
    media[5].pop("license")
    other["media"][0]["identifier"] = "ftp://example.org/x.jpg"
    srv = serve(page)
    rows, fails = _crawl(srv.url, tmp_path)
    gid = int(occ["gbifID"])
    rid = [media_record_id(gid, m["identifier"]) for m in media]
    reasons = dict(zip(fails["record_id"], fails["reason"], strict=True))
    assert reasons[rid[0]] == "license_not_allowed"
    assert reasons[rid[3]] == "unsupported_media"
    assert reasons[rid[4]] == "license_not_allowed"  # no derivatives
    assert reasons[rid[5]] == "license_unknown"
    bad = media_record_id(int(other["gbifID"]), "ftp://example.org/x.jpg")
    assert reasons[bad] == "bad_media_url"
    kept = rows.filter(pl.col("gbif_id") == gid)
    assert set(kept["record_id"]) == {rid[1], rid[2]}
    sound = kept.filter(pl.col("modality") == "audio").row(0, named=True)
    assert sound["file_format"] == "mp3" and sound["record_id"] == rid[2]
    assert sound["taxon_key"] == 9999999 and sound["accepted_taxon_key"] == 2431762
    assert sound["raw_scientific_name"] == "Batrachoseps luciae"  # the accepted name
    assert sound["verbatim_name"] == "Batrachoseps lucia Old, 1900"
    assert kept.filter(pl.col("record_id") == rid[1])["license"].item() == "cc-by-4.0"
    n_items = sum(len(o["media"]) for o in page["results"])
    assert rows.height + fails.filter(pl.col("source") == "gbif").height == n_items


def test_media_sound_keeps_only_sounds(serve, tmp_path: Path) -> None:
    page = copy.deepcopy(_page())
    page["results"][0]["media"][0].update(type="Sound", format="audio/mpeg")
    rows, _ = _crawl(serve(page).url, tmp_path, media="sound")
    assert rows["modality"].to_list() == ["audio"]


def test_helpers() -> None:
    assert media_format(None, "http://x/y/Parus_major_short.mp3") == "mp3"
    assert media_format("audio/x-wav", "http://x/y") == "wav"
    assert media_format(None, "http://x/y") is None
    assert canonical_name({"acceptedScientificName": "Parus major major Linnaeus, 1758"}) == (
        "Parus major major"
    )
    assert canonical_name({"acceptedScientificName": "Strix aluco (Linnaeus, 1758)"}) == (
        "Strix aluco"
    )
    assert normalize_license("http://creativecommons.org/licenses/by-nc/4.0/legalcode") == (
        "cc-by-nc-4.0"
    )
    assert normalize_license("CC_BY_NC_4_0") == "cc-by-nc-4.0"


class _StubHttp:
    """Answers facet requests with two children holding all but 5 of 250 occurrences."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def get_json(self, url: str, params: dict, *, policy: str | None = None) -> dict:
        self.calls.append({**params, "policy": policy})
        facet = params["facet"]
        counts = [{"name": "7", "count": 120}, {"name": "8", "count": 125}]
        return {"count": 250, "results": [], "facets": [{"field": facet.upper(), "counts": counts}]}


def test_a_split_goes_to_the_next_major_rank_and_reports_the_rest() -> None:
    from biovita_data.crawl.sources.gbif import GbifSource, make_query, parse_query

    http = _StubHttp()
    src = GbifSource(http, "http://127.0.0.1:1/v1", [], media="sound", max_offset=200)
    split = src._split(make_query({"taxonKey": ["5"]}, {"rank": "SUBFAMILY"}), 250)
    assert http.calls[0]["facet"] == "genusKey" and http.calls[0]["policy"] == "gbif"
    assert [parse_query(q) for q in split.queries] == [
        ({"taxonKey": ["7"]}, {"rank": "GENUS"}),
        ({"taxonKey": ["8"]}, {"rank": "GENUS"}),
    ]
    (rest,) = split.failures
    assert rest["reason"] == "over_offset_cap" and rest["detail"].startswith("5 occurrences")
    assert "2 child taxa (genus)" in split.note


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("CC BY 4.0", "cc-by-4.0"),
        ("CC BY-NC-SA 4.0 International", "cc-by-nc-sa-4.0"),
        ("Creative Commons Attribution-NonCommercial 4.0 International", "cc-by-nc-4.0"),
        ("Attribution-NonCommercial-ShareAlike 4.0 International", "cc-by-nc-sa-4.0"),
        ("Creative Commons Attribution Non-Commercial No Derivatives 3.0", "cc-by-nc-nd-3.0"),
        ("CC BY-NC 3.0 DE", "cc-by-nc-3.0"),
        ("http://creativecommons.org/licenses/by-nc-sa/3.0/de/", "cc-by-nc-sa-3.0"),
        ("https://creativecommons.org/publicdomain/zero/1.0/legalcode", "cc0-1.0"),
        ("CC0_1_0", "cc0-1.0"),
        ("All rights reserved", "all-rights-reserved"),
        ("© 2019 Jane Doe, all rights reserved", "all-rights-reserved"),
    ],
)
def test_free_text_licences(raw: str, code: str) -> None:
    assert normalize_license(raw) == code


def test_unknown_free_text_licence_is_refused() -> None:
    from biovita_data.crawl.licenses import UnknownLicense

    for raw in ("Creative Commons", "Use with permission", "Creative Commons NonCommercial 4.0"):
        with pytest.raises(UnknownLicense):
            normalize_license(raw)


def test_no_child_taxa_falls_back_to_years() -> None:
    from biovita_data.crawl.sources.gbif import GbifSource, make_query, parse_query

    class Http(_StubHttp):
        def get_json(self, url: str, params: dict, *, policy: str | None = None) -> dict:
            self.calls.append(params)
            if params["facet"] != "year":
                return {"count": 250, "results": [], "facets": []}
            counts = [{"name": str(y), "count": 50} for y in (2001, 2002, 2003, 2004, 2005)]
            return {"count": 250, "results": [], "facets": [{"field": "YEAR", "counts": counts}]}

    src = GbifSource(Http(), "http://127.0.0.1:1/v1", [], max_offset=120)
    split = src._split(make_query({"taxonKey": ["5"]}, {"rank": "GENUS"}), 250)
    years = [parse_query(q)[0]["year"] for q in split.queries]
    assert years == [["2001,2002"], ["2003,2004"], ["2005,2005"]] and not split.failures
    capped = make_query({"taxonKey": ["5"], "year": ["2001,2002"]}, {"rank": "GENUS"})
    assert src._split(capped, 250) is None

"""Issue 25: real GBIF download shapes and crafted or broken inputs (one clear error, or a
failures row, never a silent wrong import or a memory blow-up)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.core import layout
from biovita_data.crawl.dwca import import_dwca, read_archive
from biovita_data.crawl.http import FetchError
from biovita_data.crawl.limits import LimitExceeded, Limits
from biovita_data.crawl.sources.gbif import parse_occurrence
from biovita_data.crawl.taxa import gbif_species_match
from biovita_data.sample import gbif as G

REFERENCE = Path("/work/shared/reference")
ROOT = "http://127.0.0.1:9"


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rezip(dest: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return dest


@pytest.fixture
def download(tmp_path: Path, tiny_world) -> Path:
    path = tmp_path / "download.zip"
    G.export_dwca(tiny_world, ROOT, path)
    return path


def _raw(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = pl.read_parquet(layout.raw_records_path(out, "gbif"))
    return rows, pl.read_parquet(layout.failures_path(out))


# ------------------------------------------------------------------ 1. core vs verbatim.txt
def test_dwca_reads_the_interpreted_core_not_verbatim(download: Path, tmp_path: Path) -> None:
    members = _members(download)
    meta = members["meta.xml"].decode()
    # GBIF's layout: verbatim.txt an <extension> with the core's rowType, before multimedia
    assert "verbatim.txt" in meta and "verbatim.txt" in members
    assert meta.index("<core") < meta.index("verbatim.txt") < meta.index("multimedia.txt")
    res = import_dwca(download, tmp_path / "out")
    rows, _ = _raw(tmp_path / "out")
    assert res.kept == rows.height > 0
    assert rows["taxon_key"].null_count() == 0 and rows["dataset_key"].null_count() == 0
    assert rows["date"].null_count() == 0
    # synonyms resolve to the accepted name as in occurrence.txt
    syn = rows.filter(pl.col("taxon_key") != pl.col("accepted_taxon_key"))
    assert syn.height > 0
    assert (syn["raw_scientific_name"] != syn["verbatim_name"].str.replace(r" Auct.*", "")).all()


# ------------------------------------------------------------------ 2. DOI and citation
def test_dwca_doi_and_citation_are_kept(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    import_dwca(download, out)
    kept = json.loads(layout.gbif_citations_path(out).read_text())["downloads"]
    assert len(kept) == 1 and kept[0]["doi"] == G.DOWNLOAD_DOI
    assert kept[0]["citation"].startswith("GBIF.org (") and G.DOWNLOAD_DOI in kept[0]["citation"]
    import_dwca(download, out)  # again: one entry, not two
    assert len(json.loads(layout.gbif_citations_path(out).read_text())["downloads"]) == 1


# ------------------------------------------------------------------ 4. caps
def test_dwca_huge_line_is_one_clear_error(download: Path, tmp_path: Path, monkeypatch) -> None:
    members = _members(download)
    occ = members["occurrence.txt"].split(b"\n")
    occ[3] = occ[3] + b"x" * (256 * 1024)  # one 256 KiB line under a 64 KiB cap
    bad = _rezip(tmp_path / "bad.zip", {**members, "occurrence.txt": b"\n".join(occ)})
    monkeypatch.setenv("BIOVITA_MAX_LINE_BYTES", str(64 * 1024))
    r = CliRunner().invoke(app, ["import-dwca", str(bad), "--out", str(tmp_path / "o")])
    text = " ".join(r.output.split())
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "bad.zip: occurrence.txt line 4 is longer than the 65536-byte line cap" in text
    assert "BIOVITA_MAX_LINE_BYTES" in text
    assert not layout.raw_records_path(tmp_path / "o", "gbif").exists()


def test_zip_bomb_member_is_refused_before_reading(download: Path, tmp_path: Path) -> None:
    members = _members(download)
    occ = members["occurrence.txt"]
    bomb = occ + b"\t" * (8 * 2**20)  # 8 MiB of tabs deflate ~1000-fold
    bad = _rezip(tmp_path / "bomb.zip", {**members, "occurrence.txt": bomb})
    with pytest.raises(LimitExceeded, match=r"bomb.zip: occurrence.txt expands \d+-fold"):
        list(read_archive(bad))
    with pytest.raises(LimitExceeded, match="over the 1000-byte cap"):
        list(read_archive(download, limits=Limits(member_bytes=1000)))
    monkeypatch_env = {"BIOVITA_MAX_COMPRESSION_RATIO": "abc"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(*next(iter(monkeypatch_env.items())))
        with pytest.raises(LimitExceeded, match="is not a number"):
            Limits.from_env()


# ------------------------------------------------------------------ 5. encodings
def test_dwca_declared_encoding_and_undecodable_rows(download: Path, tmp_path: Path) -> None:
    members = _members(download)
    lines = members["occurrence.txt"].decode().split("\n")
    header = lines[0].split("\t")
    col = header.index("vernacularName")
    cells = lines[2].split("\t")
    cells[col] = "Jos\u00e9 Pe\u00f1a"
    lines[2] = "\t".join(cells)
    gid = cells[0]
    text = "\n".join(lines)
    # Latin-1 declared: decoded as declared
    # the core (occurrence.txt) is the first block of meta.xml
    latin = members["meta.xml"].decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"', 1)
    assert "ISO-8859-1" in latin
    latin_members = {"meta.xml": latin.encode(), "occurrence.txt": text.encode("latin-1")}
    a = _rezip(tmp_path / "latin.zip", {**members, **latin_members})
    rows, _ = _raw_after(a, tmp_path / "a")
    assert set(rows.filter(pl.col("gbif_id") == int(gid))["common_name"]) == {"Jos\u00e9 Pe\u00f1a"}
    # UTF-8 declared but one Latin-1 line: that row is a failure, the rest imported
    mixed = [line.encode("latin-1" if n == 2 else "utf-8") for n, line in enumerate(lines)]
    b = _rezip(tmp_path / "mixed.zip", {**members, "occurrence.txt": b"\n".join(mixed)})
    rows_b, fails_b = _raw_after(b, tmp_path / "b")
    full, _ = _raw_after(download, tmp_path / "c")
    assert int(gid) not in rows_b["gbif_id"].to_list()
    lost = full.filter(pl.col("gbif_id") != int(gid))
    assert rows_b.height == lost.height
    bad = fails_b.filter(pl.col("reason") == "undecodable")
    assert bad.height == 1
    assert bad["detail"][0].startswith("mixed.zip: occurrence.txt line 3 is not UTF-8 (byte 0xe9")


def _raw_after(path: Path, out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    import_dwca(path, out)
    return _raw(out)


# ------------------------------------------------------------------ 8. uncertainty, generalised
def test_gbif_uncertainty_and_generalised_coordinates() -> None:
    page = json.loads((REFERENCE / "gbif_v1_occurrence_search_pygbif.json").read_text())
    occ = {**page["results"][0], "issues": []}
    assert "COORDINATE_ROUNDED" in page["results"][0]["issues"]  # a real record has it
    occ["coordinateUncertaintyInMeters"] = 31.0
    rows, _ = parse_occurrence(occ, "q", media="both")
    assert rows and {r["positional_accuracy"] for r in rows} == {31.0}
    assert {r["coordinates_obscured"] for r in rows} == {False}
    rows, _ = parse_occurrence({**occ, "issues": ["COORDINATE_ROUNDED"]}, "q", media="both")
    assert {r["coordinates_obscured"] for r in rows} == {True}
    rows, _ = parse_occurrence(
        {**occ, "dataGeneralizations": "Coordinates rounded to 0.1 degree"}, "q", media="both"
    )
    assert {r["coordinates_obscured"] for r in rows} == {True}


def test_dwca_uncertainty_and_generalised(download: Path, tmp_path: Path) -> None:
    members = _members(download)
    lines = members["occurrence.txt"].decode().split("\n")
    header = lines[0].split("\t")
    unc, gen, iss = (header.index(c) for c in
                     ("coordinateUncertaintyInMeters", "dataGeneralizations", "issue"))  # fmt: skip
    cells = lines[1].split("\t")
    cells[unc], cells[gen] = "250", ""
    cells[iss] = "COORDINATE_ROUNDED;GEODETIC_DATUM_ASSUMED_WGS84"
    lines[1] = "\t".join(cells)
    path = _rezip(tmp_path / "u.zip", {**members, "occurrence.txt": "\n".join(lines).encode()})
    rows, _ = _raw_after(path, tmp_path / "o")
    mine = rows.filter(pl.col("gbif_id") == int(cells[0]))
    assert mine.height > 0 and set(mine["positional_accuracy"]) == {250.0}
    assert set(mine["coordinates_obscured"]) == {True}
    others = rows.filter(pl.col("gbif_id") != int(cells[0]))
    assert others["positional_accuracy"].null_count() == others.height


# ------------------------------------------------------------------ 9. species match v1 + v2
def test_species_match_v1_and_v2() -> None:
    v1 = json.loads((REFERENCE / "gbif_v1_species_match_pygbif.json").read_text())
    assert gbif_species_match(v1, "Helianthus annuus") == (9206251, "SPECIES")
    v2 = {
        "synonym": False,
        "usage": {"key": "9206251", "name": "Helianthus annuus L.", "rank": "SPECIES",
                  "canonicalName": "Helianthus annuus"},
        "classification": [{"key": "6", "name": "Plantae", "rank": "KINGDOM"}],
        "diagnostics": {"matchType": "EXACT", "confidence": 99},
    }  # fmt: skip
    assert gbif_species_match(v2, "Helianthus annuus") == (9206251, "SPECIES")
    synonym = {
        "synonym": True,
        "usage": {"key": 2492462, "name": "Parus minor", "rank": "SPECIES"},
        "acceptedUsage": {"key": 8070752, "name": "Parus minor", "rank": "SPECIES"},
        "diagnostics": {"matchType": "EXACT"},
    }
    assert gbif_species_match(synonym, "Parus major minor") == (8070752, "SPECIES")
    for none in ({"diagnostics": {"matchType": "NONE"}}, {"matchType": "NONE"}):
        with pytest.raises(FetchError, match="not found in the GBIF backbone"):
            gbif_species_match(none, "Nonexistus")
    with pytest.raises(FetchError, match="no usable key"):
        gbif_species_match({"usage": {"key": "x"}, "diagnostics": {"matchType": "EXACT"}}, "X")


def test_zip_member_limits_unit() -> None:
    info = zipfile.ZipInfo("m.txt")
    info.file_size, info.compress_size = 10 * 2**20, 10 * 2**20 // 500
    with pytest.raises(LimitExceeded, match="500-fold"):
        Limits().check_member(info, "a.zip")
    Limits(compression_ratio=1000).check_member(info, "a.zip")
    assert io  # (io kept for crafted archives)


def test_card_credits_the_imported_downloads() -> None:
    from biovita_data.publish.card import CardInputs, _citation_section

    empty = pl.DataFrame()
    inp = CardInputs("ns/name", "embed", empty, {}, {}, {})
    assert "GBIF downloads" not in _citation_section(inp, "X")
    inp.gbif_downloads = [
        {"file": "d.zip", "doi": "10.15468/dl.abc123",
         "citation": "GBIF.org (05 February 2025) GBIF Occurrence Download "
                     "https://doi.org/10.15468/dl.abc123"}
    ]  # fmt: skip
    text = _citation_section(inp, "X")
    assert "GBIF downloads this corpus imported" in text
    assert "GBIF.org (05 February 2025) GBIF Occurrence Download" in text
    assert "(DOI [10.15468/dl.abc123](https://doi.org/10.15468/dl.abc123))" in text


# ------------------------------------------------------------------ 3, 4. trait mirrors
class _Mirror:
    """A loopback mirror answering whatever `files` holds (status 200), counting requests."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        mirror = self
        self.files: dict[str, bytes] = {}
        self.hits = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.hits += 1
                body = mirror.files.get(self.path.rsplit("/", 1)[-1])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html" if body is None else "text/plain")
                self.end_headers()
                self.wfile.write(body if body is not None else b"<html>not found</html>")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/traits"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def mirror(monkeypatch):
    from biovita_data.curate.traits.releases import ENV_URL

    m = _Mirror()
    monkeypatch.setenv(ENV_URL, m.url)
    yield m
    m.server.shutdown()


ERROR_PAGE = b"<!DOCTYPE html><html><body>503 Service Unavailable (cached by the CDN)</body></html>"


def test_trait_error_page_is_never_pinned(mirror, tmp_path: Path, tiny_world) -> None:
    from biovita_data.curate.traits.releases import ReleaseContentError, fetch_release
    from biovita_data.sample.trait_tables import table_bytes

    cache = tmp_path / "cache"
    mirror.files["AVONET1_BirdLife.csv"] = ERROR_PAGE
    with pytest.raises(ReleaseContentError) as err:
        fetch_release("avonet", cache)
    text = str(err.value)
    assert f"{mirror.url}/AVONET1_BirdLife.csv (HTTP 200) is an HTML/XML page" in text
    assert "nothing was cached" in text
    assert not (cache / "releases.json").exists() and not (cache / "avonet" / "download").exists()
    # a file of the wrong kind: its missing columns named
    mirror.files["AVONET1_BirdLife.csv"] = b"a,b\n1,2\n"
    with pytest.raises(ReleaseContentError, match="lacks required columns: Species1"):
        fetch_release("avonet", cache)
    # the mirror recovers: the real table is downloaded and recorded
    good = table_bytes(tiny_world.taxonomy, "avonet")
    mirror.files["AVONET1_BirdLife.csv"] = good
    assert fetch_release("avonet", cache).read_bytes() == good
    assert json.loads((cache / "releases.json").read_text())["avonet"]["bytes"] == len(good)


def test_cached_bad_release_says_refresh(mirror, tmp_path: Path, tiny_world) -> None:
    import hashlib

    from biovita_data.curate.traits.releases import ReleaseContentError, fetch_release
    from biovita_data.sample.trait_tables import table_bytes

    cache = tmp_path / "cache"
    (cache / "avonet").mkdir(parents=True)
    (cache / "avonet" / "download").write_bytes(ERROR_PAGE)  # pinned by an older version
    sha = hashlib.sha256(ERROR_PAGE).hexdigest()
    record = {"avonet": {"bytes": len(ERROR_PAGE), "sha256": sha, "downloaded": "then"}}
    (cache / "releases.json").write_text(json.dumps(record))
    with pytest.raises(ReleaseContentError, match=r"download it again with .*--refresh"):
        fetch_release("avonet", cache)
    good = table_bytes(tiny_world.taxonomy, "avonet")
    mirror.files["AVONET1_BirdLife.csv"] = good
    assert fetch_release("avonet", cache, refresh=True).read_bytes() == good
    kept = json.loads((cache / "releases.json").read_text())["avonet"]
    assert kept["sha256"] == hashlib.sha256(good).hexdigest()


def test_trait_download_over_the_cap(mirror, tmp_path: Path, monkeypatch) -> None:
    from biovita_data.curate.traits.releases import fetch_release

    mirror.files["AmphiBIO_v1.csv"] = b"id,Order\n" + b"1,Anura\n" * 20_000  # 160 KB
    monkeypatch.setenv("BIOVITA_MAX_DOWNLOAD_BYTES", "65536")
    with pytest.raises(FetchError, match=r"size cap.*BIOVITA_MAX_DOWNLOAD_BYTES"):
        fetch_release("amphibio", tmp_path / "cache")
    assert not (tmp_path / "cache" / "amphibio" / "download").exists()


def test_traits_checks_its_manifests_before_downloading(mirror, tmp_path: Path) -> None:
    out = tmp_path / "out"
    layout.species_path(out).parent.mkdir(parents=True)
    layout.species_path(out).write_bytes(b"")  # species but no align report
    r = CliRunner().invoke(app, ["traits", "--out", str(out), "--table", "avonet", "--refresh"])
    assert r.exit_code != 0 and "align_report.json does not exist" in " ".join(r.output.split())
    assert mirror.hits == 0


# ------------------------------------------------------------------ 7, 10. TreeOfLife catalogs
def _tol(tmp_path: Path, cat: pl.DataFrame, prov: pl.DataFrame) -> tuple[pl.DataFrame, ...]:
    cat.write_parquet(tmp_path / "c.parquet")
    prov.write_parquet(tmp_path / "p.parquet")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["import-tol", str(tmp_path / "c.parquet"),
                                 str(tmp_path / "p.parquet"), "--out", str(out), "--taxa",
                                 "Turdus"])  # fmt: skip
    assert r.exit_code == 0, r.output
    recs = pl.read_parquet(layout.raw_records_path(out, "treeoflife-200m"))
    return recs, pl.read_parquet(layout.failures_path(out)), r.output


def test_tol_repeated_uuid_and_conflicting_licences(tmp_path: Path) -> None:
    cat = pl.DataFrame(
        {
            "uuid": ["a", "a", "b", "c"],
            "source_url": [f"https://img.example.org/{u}.jpg" for u in "aabc"],
            "scientific_name": ["Turdus merula"] * 4,
            "genus": ["Turdus"] * 4,
        }
    )
    prov = pl.DataFrame(
        {
            "uuid": ["a", "a", "b", "b", "c"],
            "license_name": ["cc-by", "cc-by", "cc0", "cc-by-nc-nd", "cc-by"],
            "copyright_owner": ["Ann", "Ann", "Bo", "Bo", "Cy"],
        }
    )
    recs, fails, _ = _tol(tmp_path, cat, prov)
    assert sorted(recs["record_id"]) == ["a", "c"]  # `a` once, not twice
    conflict = fails.filter(pl.col("reason") == "license_conflict")
    assert conflict["record_id"].to_list() == ["b"]
    detail = "uuid b: provenance rows disagree on the licence: cc-by-nc-nd | cc0"
    assert conflict["detail"].to_list() == [detail]


def test_tol_10m_and_eda_column_names(tmp_path: Path) -> None:
    cat = pl.DataFrame(
        {
            "treeoflife_id": ["t1", "t2"],
            "eol_full_size_copy_url": ["https://content.eol.org/1.jpg", None],
            "medium_source_url": [None, "https://example.org/2.jpg"],
            "genus": ["Turdus", "Turdus"],
            "species": ["merula", "merula"],
        }
    )
    prov = pl.DataFrame(
        {"treeoflife_id": ["t1", "t2"], "license_name": ["cc-by", "cc0"], "owner": ["A", "B"]}
    )
    recs, _, _ = _tol(tmp_path, cat, prov)
    # the first URL column the file has is the image's (here EOL's full-size copy)
    assert dict(zip(recs["record_id"], recs["media_url"], strict=True)) == {
        "t1": "https://content.eol.org/1.jpg"
    }


# ------------------------------------------------------------------ 12. FFmpeg before the demo
def test_demo_checks_ffmpeg_libraries_first(tmp_path: Path, monkeypatch) -> None:
    import ctypes.util

    from biovita_data.app import demo
    from biovita_data.publish import localhub

    real = ctypes.util.find_library
    monkeypatch.setattr(ctypes.util, "find_library", lambda n: None if n == "avcodec" else real(n))
    monkeypatch.setattr(localhub, "available", lambda: True)
    r = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "d"), "--size", "tiny",
                                 "--train", "none"])  # fmt: skip
    text = " ".join(r.output.split())
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "FFmpeg's shared libraries are missing (libavcodec)" in text
    assert "sudo apt-get install ffmpeg" in text
    assert not (tmp_path / "d" / "raw").exists()  # nothing was built
    assert "avcodec" in demo.FFMPEG_LIBRARIES


# ------------------------------------------------------------------ 11. smaller ones
def test_fetch_summary_keeps_a_history(tmp_path: Path) -> None:
    from rich.console import Console

    from biovita_data.crawl.fetch import FetchSettings, fetch

    quiet = Console(quiet=True)
    for _ in range(2):
        fetch(FetchSettings(taxa=["Aves"], sources=[]), tmp_path, console=quiet)
    summary = json.loads(layout.fetch_summary_path(tmp_path).read_text())
    assert len(summary["history"]) == 2
    assert summary["history"][-1]["finished"] == summary["finished"]
    assert "http" in summary and "sources" in summary  # the last run stays at the top level


def test_open_data_html_page_names_table_and_url(mirror, tmp_path: Path) -> None:
    from biovita_data.crawl.http import HttpClient
    from biovita_data.crawl.sources.inat_open_data import OpenDataSource

    mirror.files["taxa.csv.gz"] = ERROR_PAGE
    base = mirror.url.rsplit("/", 1)[0]
    src = OpenDataSource(HttpClient(retries=0), base, [], tmp_path / "cache")
    with pytest.raises(FetchError) as err:
        src._table("taxa")
    text = str(err.value)
    assert f"Open Data table taxa: {base}/taxa.csv.gz did not answer a gzipped table" in text
    assert "<!DOCTYPE html>" in text
    assert not list((tmp_path / "cache").iterdir())  # nothing half-kept


def test_gbif_count_smaller_than_the_pages(tmp_path: Path) -> None:
    from biovita_data.crawl.sources.gbif import GbifSource

    page = json.loads((REFERENCE / "gbif_v1_occurrence_search_pygbif.json").read_text())
    first, second = page["results"]

    class Stale:
        """GBIF answering a stale `count` of 1 while the pages hold 2 records."""

        def get_json(self, url: str, params: dict, policy: str | None = None) -> dict:
            offset = int(params.get("offset", 0))
            results = [first, second][offset : offset + 1]
            return {"count": 1, "endOfRecords": offset >= 1, "results": results}

    src = GbifSource(Stale(), "http://127.0.0.1:9", ["X"], media="both")
    p1 = src.fetch_page("taxonKey=1", None)
    assert not p1.done and p1.cursor == 1
    p2 = src.fetch_page("taxonKey=1", p1.cursor)
    assert p2.done and p2.rows  # the second record was crawled
    notes = [f for f in p1.failures + p2.failures if f["reason"] == "count_mismatch"]
    assert len(notes) == 1 and "stated count 1" in notes[0]["detail"]

"""GBIF through the sample world: crawl, offset-cap splits, resume, --since, DwC-A import, media."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import polars as pl
import pytest
import requests
from rich.console import Console
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.core import layout
from biovita_data.crawl.dwca import ArchiveError, import_dwca, read_archive
from biovita_data.crawl.fetch import FetchSettings, fetch
from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.crawl.sources.gbif import media_record_id
from biovita_data.sample import gbif as G
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

QUIET = Console(quiet=True)
ALL = [G.ANIMAL_SOUND_ARCHIVE, G.XENO_CANTO, G.INATURALIST]


@pytest.fixture(scope="module")
def server(tiny_world: World) -> Iterator[SampleServer]:
    srv = SampleServer(tiny_world, port=0, gbif_max_offset=12).start()
    try:
        yield srv
    finally:
        srv.stop()


def _settings(server: SampleServer, **kw) -> FetchSettings:
    base = {
        "taxa": ["Aves"],
        "sources": ["gbif"],
        "gbif_url": server.urls["GBIF_API_URL"],
        "gbif_datasets": ALL,
        "media": "both",
        "throttle": False,
        "retries": 1,
        "backoff_s": 0.01,
        "gbif_max_offset": server.gbif_max_offset,
    }
    return FetchSettings(**{**base, **kw})


def _read(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = pl.read_parquet(layout.raw_records_path(out, "gbif"))
    fails = pl.read_parquet(out / "manifests" / "failures.parquet").filter(
        pl.col("source") == "gbif"
    )
    return rows, fails


def _media_items(world: World, root: str, cls: str) -> dict[str, dict]:
    return {
        media_record_id(o["key"], m["identifier"]): {**m, "occ": o}
        for o in G.occurrences(world, root)
        if o.get("class") == cls
        for m in o["media"]
    }


@pytest.fixture(scope="module")
def crawled(server: SampleServer, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("gbif")
    results = fetch(_settings(server), out, console=QUIET)
    return out, results


def test_every_media_item_is_a_record_or_a_failure(crawled, server, tiny_world) -> None:
    rows, fails = _read(crawled[0])
    items = _media_items(tiny_world, server.root, "Aves")
    assert set(rows["record_id"]) | set(fails["record_id"]) == set(items)
    assert not set(rows["record_id"]) & set(fails["record_id"])
    reasons = dict(zip(fails["record_id"], fails["reason"], strict=True))
    for rid, item in items.items():
        lic = item["license"].lower()
        if "all rights reserved" in lic or "nd" in lic.replace("legalcode", ""):
            assert reasons[rid] == "license_not_allowed", (rid, item["license"])
        else:
            assert rid in set(rows["record_id"]), (rid, item["license"])
    # all three datasets and both media types
    assert set(rows["dataset_key"]) == set(ALL)
    assert set(rows["modality"]) == {"audio", "image"}
    # GBIF media without `format` still get one, from the URL
    xc = rows.filter(pl.col("dataset_key") == G.XENO_CANTO)
    assert xc["file_format"].null_count() == 0 or xc["media_url"].str.ends_with("download").all()


def test_synonyms_resolve_to_the_accepted_name(crawled, tiny_world) -> None:
    rows, _ = _read(crawled[0])
    syn = rows.filter(pl.col("taxon_key") != pl.col("accepted_taxon_key"))
    assert syn.height > 0
    by_id = {sp.taxon_id: sp.name for sp in tiny_world.species}
    for r in syn.iter_rows(named=True):
        assert r["taxon_key"] == G.SYNONYM_KEY_BASE + r["accepted_taxon_key"]
        assert r["raw_scientific_name"] == by_id[r["accepted_taxon_key"]]
        assert r["verbatim_name"].split()[0] != r["raw_genus"]


def test_large_queries_are_split_and_nothing_is_lost(crawled, server) -> None:
    out, results = crawled
    (res,) = results
    assert res.splits and any("child taxa (order)" in s for s in res.splits)
    # the class's count passed the cap, so the crawl went down the tree and kept everything
    r = requests.get(
        f"{server.urls['GBIF_API_URL']}/occurrence/search",
        params={"taxonKey": 3, "limit": 0, "mediaType": ["Sound", "StillImage"]},
        timeout=10,
    ).json()
    assert r["count"] > server.gbif_max_offset
    rows, fails = _read(out)
    assert fails.filter(pl.col("reason") == "over_offset_cap").height == 0
    occ_ids = {o["key"] for o in G.occurrences(server.world, server.root) if o["class"] == "Aves"}
    kept_or_failed = set(rows["gbif_id"]) | {
        int(x.split("-")[0]) for x in fails["record_id"] if x and x[0].isdigit()
    }
    assert kept_or_failed == occ_ids
    # a query the cap refuses
    refused = requests.get(
        f"{server.urls['GBIF_API_URL']}/occurrence/search",
        params={"offset": 10, "limit": 5},
        timeout=10,
    )
    assert refused.status_code == 400 and "offset" in refused.json()["message"].lower()


def test_year_split_and_unreachable_remainder_are_reported(server, tmp_path: Path) -> None:
    # one species' occurrences under a cap of 2: split by years, capped years become failures
    sp = max(
        server.world.species,
        key=lambda s: sum(o["speciesKey"] == s.taxon_id for o in G.occurrences(server.world,
                                                                                server.root)),
    )  # fmt: skip
    n = sum(o["speciesKey"] == sp.taxon_id for o in G.occurrences(server.world, server.root))
    tight = SampleServer(server.world, port=0, gbif_max_offset=2).start()
    try:
        res = fetch(_settings(tight, taxa=[sp.name], gbif_max_offset=2), tmp_path, console=QUIET)
    finally:
        tight.stop()
    assert n > 2 and any("year ranges" in s for s in res[0].splits)
    rows, fails = _read(tmp_path)
    capped = fails.filter(pl.col("reason") == "over_offset_cap")
    lost = sum(int(d.split()[0]) for d in capped["detail"])
    assert rows["gbif_id"].n_unique() + lost + _only_failed(rows, fails) == n


def _only_failed(rows: pl.DataFrame, fails: pl.DataFrame) -> int:
    ids = {int(x.split("-")[0]) for x in fails["record_id"] if x and x[0].isdigit()}
    return len(ids - set(rows["gbif_id"]))


class _Killed(RuntimeError):
    pass


class _Dying(HttpClient):
    """Fails for good after `n` requests (a killed crawl)."""

    def __init__(self, n: int) -> None:
        super().__init__(throttle=False, retries=0)
        self.left = n

    def get(self, url: str, params: dict | None = None, *, policy: str | None = None) -> bytes:
        self.left -= 1
        if self.left < 0:
            raise FetchError("connection lost")
        return super().get(url, params, policy=policy)


def test_a_killed_crawl_resumes_to_the_same_records(crawled, server, tmp_path: Path) -> None:
    with pytest.raises(FetchError):
        fetch(_settings(server), tmp_path, console=QUIET, http=_Dying(9))
    assert (layout.raw_dir(tmp_path, "gbif") / "state.json").exists()
    fetch(_settings(server), tmp_path, console=QUIET)
    a, b = _read(crawled[0])[0], _read(tmp_path)[0]
    assert a.drop("query").sort("record_id").equals(b.drop("query").sort("record_id"))


def test_since_asks_only_for_newer_records(server, tmp_path: Path) -> None:
    fetch(_settings(server, since="2025-01-01"), tmp_path, console=QUIET)
    rows, _ = _read(tmp_path)
    assert rows.height > 0
    assert rows["updated_at"].dt.date().min().isoformat() >= "2025-01-01"


def test_species_match_and_default_dataset(server, tmp_path: Path) -> None:
    fetch(_settings(server, gbif_datasets=[], media="sound"), tmp_path, console=QUIET)
    rows, _ = _read(tmp_path)
    assert set(rows["dataset_key"]) == {G.ANIMAL_SOUND_ARCHIVE}
    assert set(rows["modality"]) == {"audio"}
    with pytest.raises(FetchError, match="not found in the GBIF backbone"):
        fetch(_settings(server, taxa=["Nonexistus"]), tmp_path / "x", console=QUIET)


# ---------------------------------------------------------------------- Darwin Core Archive
def test_export_dwca_is_a_real_format_download(server, tmp_path: Path) -> None:
    path = tmp_path / "download.zip"
    counts = G.export_dwca(server.world, server.root, path)
    with zipfile.ZipFile(path) as zf:
        assert {"meta.xml", "occurrence.txt", "multimedia.txt"} <= set(zf.namelist())
        meta = ElementTree.fromstring(zf.read("meta.xml"))
        ns = "{http://rs.tdwg.org/dwc/text/}"
        core = meta.find(f"{ns}core")
        assert core.get("rowType") == "http://rs.tdwg.org/dwc/terms/Occurrence"
        terms = [f.get("term") for f in core.iter(f"{ns}field")]
        assert len(terms) == 223 and terms[0] == "http://rs.gbif.org/terms/1.0/gbifID"
        assert "http://rs.tdwg.org/dwc/terms/decimalLatitude" in terms
        header = zf.read("multimedia.txt").decode().split("\n", 1)[0].split("\t")
        assert header[:4] == ["gbifID", "type", "format", "identifier"]
        lines = zf.read("occurrence.txt").decode().rstrip("\n").split("\n")
        assert len(lines) - 1 == counts["occurrences"]
        assert all(line.count("\t") == 222 for line in lines)


def test_dwca_gives_the_same_records_as_the_api(crawled, server, tmp_path: Path) -> None:
    path = tmp_path / "download.zip"
    G.export_dwca(server.world, server.root, path)
    res = import_dwca(path, tmp_path / "out")
    api, api_fails = _read(crawled[0])
    dwca, dwca_fails = _read(tmp_path / "out")
    assert res.kept == dwca.height
    same = dwca.filter(pl.col("gbif_id").is_in(api["gbif_id"].to_list()))
    cols = [c for c in api.columns if c != "query"]
    assert same.select(cols).sort("record_id").equals(api.select(cols).sort("record_id"))
    aves_fails = dwca_fails.filter(pl.col("record_id").is_in(api_fails["record_id"].to_list()))
    assert aves_fails.height == api_fails.filter(pl.col("modality") != "occurrence").height


def test_dwca_reads_columns_by_meta_xml_and_streams(tmp_path: Path, tiny_world) -> None:
    # a download whose columns come in another order: meta.xml decides
    src = tmp_path / "a.zip"
    G.export_dwca(tiny_world, "http://127.0.0.1:9", src)
    with zipfile.ZipFile(src) as zf:
        meta = zf.read("meta.xml").decode()
        occ = zf.read("occurrence.txt").decode().split("\n")
        media = zf.read("multimedia.txt").decode()
    n = len(G.OCCURRENCE_COLUMNS)
    order = list(reversed(range(n)))
    core, ext = meta.split("<extension", 1)
    for i in range(n):  # the core's field with index i now sits at column n-1-i
        core = core.replace(f'field index="{i}" ', f'field index="@{n - 1 - i}" ')
    meta = core.replace('index="@', 'index="') + "<extension" + ext
    swapped = ["\t".join(line.split("\t")[j] for j in order) if line else "" for line in occ]
    dst = tmp_path / "b.zip"
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("meta.xml", meta)
        zf.writestr("occurrence.txt", "\n".join(swapped))
        zf.writestr("multimedia.txt", media)
    a = [{**r, "query": None} for rows, _ in read_archive(src) for r in rows]
    b = [{**r, "query": None} for rows, _ in read_archive(dst) for r in rows]
    assert len(a) > 0 and sorted(a, key=str) == sorted(b, key=str)


def test_dwca_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        import_dwca(bad, tmp_path / "out")
    nometa = tmp_path / "nometa.zip"
    with zipfile.ZipFile(nometa, "w") as zf:
        zf.writestr("occurrence.txt", "gbifID\n1\n")
    with pytest.raises(ArchiveError, match=r"no meta\.xml"):
        import_dwca(nometa, tmp_path / "out")


def test_cli_export_and_import_dwca(server, tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "d.zip"
    r = runner.invoke(app, ["sample", "export-dwca", str(path), "--root", server.root,
                            "--size", "tiny"])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["import-dwca", str(path), "--out", str(tmp_path / "o"),
                            "--media", "sound"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows, _ = _read(tmp_path / "o")
    assert set(rows["modality"]) == {"audio"} and rows.height > 0
    r = runner.invoke(app, ["import-dwca", str(tmp_path / "missing.zip"), "--out", str(tmp_path)])
    assert r.exit_code != 0 and "missing.zip: no such file" in " ".join(r.output.split())


def test_retired_archive_host_and_live_media(server) -> None:
    recs = G.archive_recordings(server.world)
    dead = next(r for r in recs if r.dead_host)
    live = next(r for r in recs if not r.dead_host)
    items = {
        m["identifier"]
        for o in G.occurrences(server.world, server.root)
        if o["datasetKey"] == G.ANIMAL_SOUND_ARCHIVE
        for m in o["media"]
    }
    dead_url = next(u for u in items if "tierstimmenarchiv" in u and f"_{dead.n}_short" in u)
    assert requests.get(dead_url, timeout=10).status_code == 410
    body = requests.get(f"{server.root}/gbif-media/asa/{live.n}.{live.fmt}", timeout=10)
    assert body.status_code == 200 and len(body.content) > 1000


def test_429s_and_faults_are_retried_to_the_same_records(crawled, tiny_world, tmp_path) -> None:
    from biovita_data.crawl.http import DEFAULT_POLICIES
    from biovita_data.crawl.sources import MEDIA_POLICIES
    from biovita_data.sample.faults import FaultPlan

    assert DEFAULT_POLICIES["gbif"].max_concurrency == 1 and MEDIA_POLICIES["gbif"] in (
        DEFAULT_POLICIES
    )
    plan = FaultPlan(rate=0.3, max_consecutive=3, seed=3, retry_after=0, slow_s=0.05)
    http = HttpClient(retries=6, backoff_s=0.01, throttle=False)
    with SampleServer(tiny_world, port=0, gbif_max_offset=12, faults=plan) as srv:
        fetch(_settings(srv), tmp_path, console=QUIET, http=http)
    assert plan.counts["429"] > 0 and http.stats["retries"] > 0
    a, b = _read(crawled[0])[0], _read(tmp_path)[0]
    # the media URLs name the server's port; everything else is the same
    cols = [c for c in a.columns if c not in ("query", "media_url")]
    assert a.select(cols).sort("record_id").equals(b.select(cols).sort("record_id"))


def test_cli_fetch_gbif_prints_the_splits(server, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GBIF_API_URL", server.urls["GBIF_API_URL"])
    monkeypatch.setenv("GBIF_MAX_OFFSET", str(server.gbif_max_offset))
    args = ["fetch", "--taxa", "Aves", "--out", str(tmp_path), "--source", "gbif",
            "--no-throttle", "--media", "both"]  # fmt: skip
    for key in ALL:
        args += ["--gbif-dataset", key]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "gbif: split taxonKey=3" in text and "split into" in text and "child taxa" in text
    rows, _ = _read(tmp_path)
    assert rows.height > 0
    bad = CliRunner().invoke(app, [*args[:-2], "--media", "video"])
    assert bad.exit_code != 0 and "--media must be sound, image or both" in bad.output


def test_dwca_partitions_give_the_same_records(tmp_path: Path, tiny_world) -> None:
    path = tmp_path / "d.zip"
    G.export_dwca(tiny_world, "http://127.0.0.1:9", path)
    one = [r for rows, _ in read_archive(path) for r in rows]
    many = [r for rows, _ in read_archive(path, part_bytes=4096) for r in rows]
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("occurrence.txt").file_size > 10 * 4096  # so: many partitions
    assert len(one) > 0 and sorted(one, key=str) == sorted(many, key=str)


def test_sample_serve_prints_the_gbif_variables() -> None:
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "biovita_data.app.cli", "sample", "serve", "--size", "tiny",
           "--gbif-max-offset", "10", "--format", "json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["GBIF_MAX_OFFSET"] == "10"
        url = info["GBIF_API_URL"]
        assert (
            requests.get(f"{url}/species/match", params={"name": "Aves"}, timeout=10).json()[
                "usageKey"
            ]
            == 3
        )
        r = requests.get(f"{url}/occurrence/search", params={"offset": 8, "limit": 5}, timeout=10)
        assert r.status_code == 400
        page = requests.get(f"{url}/occurrence/search", params={"limit": 1}, timeout=10).json()
        key = page["results"][0]["key"]
        assert requests.get(f"{url}/occurrence/{key}", timeout=10).json()["gbifID"] == str(key)
        assert requests.get(f"{url}/occurrence/1", timeout=10).status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)

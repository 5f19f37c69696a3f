"""The public trait tables as sources: download once into a cache, sha256 recorded and checked."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from biovita_data.app.stages import parse_tables
from biovita_data.crawl.http import FetchError
from biovita_data.curate.traits.releases import (
    ENV_URL,
    RELEASES,
    ReleaseMismatch,
    fetch_release,
    release_url,
)
from biovita_data.sample.trait_tables import TABLES, table_bytes

SAMPLE_NAME = {
    "avonet": "avonet",
    "eltontraits-birds": "eltontraits_birds",
    "eltontraits-mammals": "eltontraits_mammals",
    "amphibio": "amphibio",
}


def test_releases_name_their_published_files() -> None:
    assert set(RELEASES) == set(SAMPLE_NAME)
    for name, release in RELEASES.items():
        assert release.url.startswith("https://ndownloader.figshare.com/files/")
        assert release.doi.startswith("10.6084/m9.figshare.")
        assert release.file == TABLES[SAMPLE_NAME[name]]  # the sample server serves these names


def test_download_once_record_and_verify(tmp_path: Path, sample_server, tiny_world, monkeypatch):
    monkeypatch.setenv(ENV_URL, sample_server.urls[ENV_URL])
    cache = tmp_path / "cache"
    for name in RELEASES:
        assert release_url(RELEASES[name]) == f"{sample_server.root}/traits/{RELEASES[name].file}"
        path = fetch_release(name, cache)
        assert path.read_bytes() == table_bytes(tiny_world.taxonomy, SAMPLE_NAME[name])
    record = json.loads((cache / "releases.json").read_text())
    avonet = record["avonet"]
    assert avonet["bytes"] == len(table_bytes(tiny_world.taxonomy, "avonet"))
    assert len(avonet["sha256"]) == 64 and avonet["doi"] == RELEASES["avonet"].doi
    # once: a second use downloads nothing
    hits = sample_server.hits.get("traits_file", 0)
    assert hits == 4
    fetch_release("avonet", cache)
    assert sample_server.hits.get("traits_file", 0) == hits
    # a cached file that changed is refused
    download = cache / "avonet" / "download"
    download.write_bytes(download.read_bytes() + b"x")
    with pytest.raises(ReleaseMismatch, match="delete it to download it again"):
        fetch_release("avonet", cache)
    # downloaded again (cache emptied): the bytes must still be the recorded ones
    download.unlink()
    assert fetch_release("avonet", cache).exists()
    record["avonet"]["sha256"] = "0" * 64
    (cache / "releases.json").write_text(json.dumps(record))
    download.unlink()
    with pytest.raises(ReleaseMismatch, match=r"not the .* first downloaded"):
        fetch_release("avonet", cache)
    assert not download.exists() and download.with_name(download.name + ".mismatch").exists()


def test_a_zip_release_is_extracted(tmp_path: Path, tiny_world) -> None:
    """AVONET is published inside ELEData.zip: the table is read from its TraitData folder."""
    table = table_bytes(tiny_world.taxonomy, "avonet")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ELEData/TraitData/AVONET_Raw_Data.csv", b"other")
        zf.writestr("ELEData/TraitData/AVONET1_BirdLife.csv", table)
    cache = tmp_path / "cache"
    (cache / "avonet").mkdir(parents=True)
    download = cache / "avonet" / "download"
    download.write_bytes(buf.getvalue())

    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    record = {"avonet": {"bytes": len(buf.getvalue()), "sha256": sha, "downloaded": "then"}}
    (cache / "releases.json").write_text(json.dumps(record))
    path = fetch_release("avonet", cache)  # cached and recorded: no network
    assert path.name == "AVONET1_BirdLife.csv" and path.read_bytes() == table


def test_table_specs_mix_releases_and_local_files(tmp_path, sample_server, monkeypatch) -> None:
    monkeypatch.setenv(ENV_URL, sample_server.urls[ENV_URL])
    local = tmp_path / "mine.csv"
    local.write_text("scientific_name,trait_diet_fruit\nFoo bar,1\n")
    tables = parse_tables(
        [f"csv={local}", "amphibio", f"eltontraits-birds={local}", "AVONET"], tmp_path / "c"
    )
    assert [k for k, _ in tables] == ["csv", "amphibio", "eltontraits", "avonet"]
    assert tables[0][1] == local and tables[1][1].name == "AmphiBIO_v1.csv"
    with pytest.raises(ValueError, match="not a public release"):
        parse_tables(["pantheria"], tmp_path / "c")
    with pytest.raises(ValueError, match="KIND=FILE"):
        parse_tables([f"traitbank={local}"], tmp_path / "c")
    monkeypatch.setenv(ENV_URL, sample_server.root + "/nothing-here")
    with pytest.raises(FetchError, match="eltontraits-mammals: download from"):
        parse_tables(["eltontraits-mammals"], tmp_path / "c")

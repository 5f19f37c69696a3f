"""The crawl stage against the sample world: ground truth, resume, faults, incremental, secrets."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from biovita_data.app.cli import app
from biovita_data.crawl.fetch import FetchSettings, fetch
from biovita_data.crawl.http import FetchError, HttpClient
from biovita_data.sample.faults import FaultPlan
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import SNAPSHOT, World

KEY = "test-xc-key-7f3a9"


@pytest.fixture
def world(tiny_world: World) -> World:
    """The session's tiny world (conftest), so its media caches are shared."""
    return tiny_world


@pytest.fixture
def big_world(default_world: World) -> World:
    return default_world


def settings(server: SampleServer, taxa: list[str], **kw) -> FetchSettings:
    kw.setdefault("sources", ["xeno-canto", "inaturalist"])
    return FetchSettings(
        taxa=taxa,
        xeno_canto_url=server.urls["XENO_CANTO_API_URL"],
        inaturalist_url=server.urls["INATURALIST_API_URL"],
        open_data_url=server.urls["INATURALIST_OPEN_DATA_URL"],
        throttle=False,
        backoff_s=0.01,
        **kw,
    )


@pytest.fixture(autouse=True)
def xc_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENO_CANTO_API_KEY", KEY)


def records(out: Path, source: str) -> pl.DataFrame:
    return pl.read_parquet(out / "raw" / source.replace("-", "_") / "records.parquet")


def canon(df: pl.DataFrame) -> pl.DataFrame:
    """Rows with URLs reduced to their paths (each test server listens on its own port)."""
    urls = [
        c for c in ("media_url", "thumbnail_url", "page_url", "sonogram_url") if c in df.columns
    ]
    return df.with_columns(pl.col(urls).str.replace(r"^https?://127\.0\.0\.1:\d+", ""))


def failures(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "manifests" / "failures.parquet")


def keys(df: pl.DataFrame) -> set[tuple[str, str, str]]:
    return set(df.select("source", "modality", "record_id").iter_rows())


def expected_sets(world: World, species: set[int]) -> tuple[set, dict]:
    kept, dropped = set(), {}
    for e in world.expected():
        if e.species_index not in species:
            continue
        k = (e.source, e.modality, str(e.record_id))
        if e.fetch == "keep":
            kept.add(k)
        else:
            dropped[k] = e.fetch
    return kept, dropped


def crawled(out: Path) -> tuple[set, dict]:
    got = keys(records(out, "xeno-canto")) | keys(records(out, "inaturalist"))
    f = failures(out).filter(pl.col("stage") == "fetch")
    drops = {
        (s, m, r): reason
        for s, m, r, reason in f.select("source", "modality", "record_id", "reason").iter_rows()
    }
    return got, drops


@pytest.mark.parametrize("level", ["class", "family", "genus", "species"])
def test_fetch_matches_ground_truth(world: World, tmp_path: Path, level: str) -> None:
    # a species whose Xeno-canto name is a spelling/case/ssp variant still belongs to it
    variant = next(
        s for s in world.species if s.name_variant in ("spelling", "case_space", "subspecies")
    )
    birds = [s for s in world.species if s.class_name == variant.class_name]
    name, species = {
        "class": (variant.class_name, {s.index for s in birds}),
        "family": (variant.family, {s.index for s in birds if s.family == variant.family}),
        "genus": (variant.genus, {s.index for s in birds if s.genus == variant.genus}),
        "species": (variant.name, {variant.index}),
    }[level]
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, [name]), tmp_path)
    kept, dropped = expected_sets(world, species)
    # below class, Xeno-canto is asked by genus, and by the genera of the species' older names
    # (iNaturalist `all_names`): recordings filed under an older name are found at every level
    got, drops = crawled(tmp_path)
    assert got == kept
    assert {k: v for k, v in drops.items() if k in dropped} == dropped
    assert set(drops) == set(dropped)
    df = records(tmp_path, "xeno-canto")
    assert df["license"].str.contains("-nd").sum() == 0
    assert (
        df["duration_s"].min() > 0 and df["sample_rate"].is_in([22050, 32000, 44100, 48000]).all()
    )


@pytest.mark.parametrize("level", ["family", "genus", "species"])
def test_lower_rank_crawl_finds_recordings_filed_under_an_older_name(
    world: World, tmp_path: Path, level: str
) -> None:
    """Xeno-canto files a species under an older genus: a family-, genus- or species-level crawl
    asks for the synonyms too and finds what a class-level crawl finds for that taxon."""
    old = next(s for s in world.species if s.name_variant == "old_genus")
    name = {"family": old.family, "genus": old.genus, "species": old.name}[level]
    within = {
        s.index
        for s in world.species
        if {"family": s.family, "genus": s.genus, "species": s.name}[level] == name
    }
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, [old.class_name], sources=["xeno-canto"]), tmp_path / "class")
        fetch(settings(server, [name], sources=["xeno-canto"]), tmp_path / "low")
    by_class = records(tmp_path / "class", "xeno-canto")
    low = records(tmp_path / "low", "xeno-canto")
    ids = {r.id for r in world.xc_recordings(SNAPSHOT) if r.species_index in within}
    wanted = by_class.filter(pl.col("record_id").cast(pl.Int64).is_in(list(ids)))
    assert wanted.filter(pl.col("raw_genus").str.strip_chars() == old.xc_gen.strip()).height > 0
    assert set(low["record_id"]) == set(wanted["record_id"])
    queries = set(low["query"])
    assert f"gen:{old.xc_gen.strip()}" in queries  # the older genus, asked once
    assert len(low) == low.select("record_id").n_unique()


def test_amphibia_and_open_data_same_photos(world: World, tmp_path: Path) -> None:
    with SampleServer(world, xc_key=KEY) as server:
        fetch(
            settings(server, ["Amphibia"], sources=["xeno-canto", "inaturalist", "inat-open-data"]),
            tmp_path,
        )
    amphibians = {s.index for s in world.species if s.class_name == "Amphibia"}
    kept, _ = expected_sets(world, amphibians)
    got, _ = crawled(tmp_path)
    assert got == kept
    api = records(tmp_path, "inaturalist").filter(pl.col("modality") == "image")
    od = records(tmp_path, "inat-open-data")
    assert set(api["record_id"]) == set(od["record_id"]) and len(od) > 0
    joined = api.join(od, on="record_id", suffix="_od")
    assert (joined["raw_taxon_id"] == joined["raw_taxon_id_od"]).all()
    assert (joined["license"] == joined["license_od"]).all()


def test_inaturalist_rows_are_typed(world: World, tmp_path: Path) -> None:
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, ["Aves"], sources=["inaturalist"]), tmp_path)
    df = records(tmp_path, "inaturalist")
    img = df.filter(pl.col("modality") == "image")
    assert img["media_url"].str.contains("/original.").all()
    assert img["thumbnail_url"].str.contains("/square.").all()
    assert (img["width"] > 0).all() and img["observation_id"].is_not_null().all()
    snd = df.filter(pl.col("modality") == "audio")
    assert len(snd) > 0 and set(snd["file_format"]) <= {"m4a", "mp3", "wav"}
    assert df["raw_ancestry"].str.starts_with("48460/1/2/").all()
    assert df.schema["date"] == pl.Date and df.schema["updated_at"].time_zone == "UTC"
    # the sample's API photo URLs say .jpeg for some photos: one format vocabulary
    assert img["media_url"].str.contains(r"\.jpeg\?").any()
    assert set(img["file_format"]) <= {"jpg", "png"}
    # obscured observations are marked, with the public coordinates' accuracy
    hidden = df.filter(pl.col("coordinates_obscured"))
    assert 0 < len(hidden) < len(df) and df["coordinates_obscured"].is_not_null().all()
    assert (hidden["positional_accuracy"] == 28_954).all()
    assert set(hidden["geoprivacy"].drop_nulls()) | set(hidden["taxon_geoprivacy"]) >= {"obscured"}


def test_xeno_canto_rows_keep_the_recording_details(world: World, tmp_path: Path) -> None:
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, ["Aves"], sources=["xeno-canto"]), tmp_path)
    df = records(tmp_path, "xeno-canto")
    assert df["page_url"].str.starts_with("https://").all()  # protocol-relative on the wire
    assert df["sonogram_url"].str.starts_with("https://").all()
    assert df["background_species"].list.len().max() > 0
    assert df["background_species"].list.len().min() == 0
    assert set(df["recording_method"]) == {"field recording", "in the hand"}
    for col in ("animal_seen", "playback_used", "automatic_recording"):
        assert set(df[col]) == {True, False}, col
    assert df["device"].drop_nulls().len() > 0 and df["remarks"].str.contains("\r\n").any()
    assert df["locality"].is_not_null().all() and df["altitude"].is_not_null().all()


def test_heavy_faults_same_result_bounded_retries(world: World, tmp_path: Path) -> None:
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, ["Aves", "Insecta"]), tmp_path / "clean")
    plan = FaultPlan(rate=0.3, max_consecutive=3, seed=5, retry_after=0, slow_s=0.05)
    http = HttpClient(retries=6, backoff_s=0.01, throttle=False)
    with SampleServer(world, xc_key=KEY, faults=plan) as server:
        fetch(settings(server, ["Aves", "Insecta"]), tmp_path / "faulty", http=http)
    for src in ("xeno-canto", "inaturalist"):
        assert canon(records(tmp_path / "clean", src)).equals(
            canon(records(tmp_path / "faulty", src))
        )
    assert failures(tmp_path / "clean").equals(failures(tmp_path / "faulty"))
    faults = sum(v for k, v in plan.counts.items() if k != "requests")
    assert faults > 0 and http.stats["retries"] == faults
    assert http.stats["retries"] <= 3 * http.stats["requests"]
    summary = json.loads((tmp_path / "faulty" / "raw" / "fetch_summary.json").read_text())
    assert summary["http"]["retries"] == faults


def test_outage_fails_clearly_and_resumes(world: World, tmp_path: Path) -> None:
    down = FaultPlan(rate=1.0, max_consecutive=10**6, kinds=("503",), retry_after=0)
    with (
        SampleServer(world, xc_key=KEY, faults=down) as server,
        pytest.raises(FetchError, match="giving up after 2 retries: HTTP 503"),
    ):
        fetch(settings(server, ["Aves"], retries=2), tmp_path)
    assert not (tmp_path / "raw" / "xeno_canto" / "records.parquet").exists()
    assert (tmp_path / "raw" / "xeno_canto" / "state.json").exists()
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, ["Aves"]), tmp_path)
        fetch(settings(server, ["Aves"]), tmp_path / "fresh")
    assert canon(records(tmp_path, "xeno-canto")).equals(
        canon(records(tmp_path / "fresh", "xeno-canto"))
    )


def test_incremental_since_merges_without_loss(world: World, tmp_path: Path) -> None:
    cut = dt.date(2019, 6, 1)
    with SampleServer(world, xc_key=KEY, as_of=cut) as server:
        fetch(settings(server, ["Aves"]), tmp_path / "inc")
        first = len(records(tmp_path / "inc", "xeno-canto"))
    with SampleServer(world, xc_key=KEY) as server:
        fetch(settings(server, ["Aves"], since=cut.isoformat()), tmp_path / "inc")
        fetch(settings(server, ["Aves"]), tmp_path / "full")
        requests_full = server.faults.counts["requests"]
    for src in ("xeno-canto", "inaturalist"):
        inc, full = records(tmp_path / "inc", src), records(tmp_path / "full", src)
        assert keys(inc) == keys(full)
        assert canon(inc.drop("query")).equals(canon(full.drop("query")))
    assert 0 < first < len(records(tmp_path / "full", "xeno-canto"))
    f_inc, f_full = failures(tmp_path / "inc"), failures(tmp_path / "full")
    assert set(f_inc["record_id"]) == set(f_full["record_id"])
    assert requests_full > 0


def test_missing_key_is_an_error_before_any_request(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XENO_CANTO_API_KEY")
    with SampleServer(world, xc_key=KEY) as server:
        for k, v in server.urls.items():
            monkeypatch.setenv(k, v)
        result = CliRunner().invoke(app, ["fetch", "--taxa", "Aves", "--out", str(tmp_path)])
        assert server.faults.counts["requests"] == 0
    assert result.exit_code == 2
    assert "XENO_CANTO_API_KEY is not set" in result.output


def test_key_never_written_or_printed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = FaultPlan(rate=0.5, max_consecutive=2, seed=3, retry_after=0, slow_s=0.01)
    with SampleServer(world, xc_key=KEY, faults=plan) as server:
        for k, v in server.urls.items():
            monkeypatch.setenv(k, v)
        ok = CliRunner().invoke(
            app, ["fetch", "--taxa", "Aves", "--out", str(tmp_path), "--no-throttle"]
        )
    with SampleServer(world, xc_key=KEY, faults=FaultPlan(1.0, 10**6, kinds=("500",))) as server:
        for k, v in server.urls.items():
            monkeypatch.setenv(k, v)
        bad = CliRunner().invoke(
            app, ["fetch", "--taxa", "Aves", "--out", str(tmp_path / "b"), "--no-throttle"]
        )
    assert ok.exit_code == 0, ok.output
    assert bad.exit_code == 2 and "giving up" in bad.output
    for output in (ok.output, bad.output):
        assert KEY not in output
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 3
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p


def test_kill_and_resume_equals_uninterrupted(big_world: World, tmp_path: Path) -> None:
    """SIGKILL a real `biovita-data fetch` mid-crawl; the rerun resumes and ends identically."""
    with SampleServer(big_world, xc_key=KEY) as server:
        env = {**os.environ, **server.urls, "XENO_CANTO_API_KEY": KEY}
        cmd = [
            sys.executable,
            "-m",
            "biovita_data.app.cli",
            "fetch",
            "--taxa",
            "Aves",
            "--taxa",
            "Mammalia",
            "--out",
            str(tmp_path / "killed"),
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = tmp_path / "killed" / "raw" / "xeno_canto" / "state.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if state.exists() and any(
                p["seq"] > 0 for p in json.loads(state.read_text())["progress"].values()
            ):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = json.loads(state.read_text())
        done_pages = sum(p["seq"] for p in before["progress"].values())
        assert done_pages >= 1
        n0 = server.faults.counts["requests"]
        rerun = subprocess.run([*cmd, "--no-throttle"], env=env, capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr
        resumed_requests = server.faults.counts["requests"] - n0
        subprocess.run(
            [*cmd[:-1], str(tmp_path / "clean"), "--no-throttle"],
            env=env,
            check=True,
            capture_output=True,
        )
        clean_requests = server.faults.counts["requests"] - n0 - resumed_requests
    assert resumed_requests < clean_requests  # it did not start over
    for src in ("xeno-canto", "inaturalist"):
        assert records(tmp_path / "killed", src).equals(records(tmp_path / "clean", src))
    assert failures(tmp_path / "killed").equals(failures(tmp_path / "clean"))
    assert not state.exists()


def test_finalize_keeps_a_duplicate_once_and_fails_over_cap(tmp_path: Path) -> None:
    from biovita_data.core.schemas import FAILURE, RAW_RECORD
    from biovita_data.core.tables import to_table
    from biovita_data.crawl.fetch import FetchSettings, finalize

    def row(rid: str, name: str, query: str) -> dict:
        return {"source": "xeno-canto", "modality": "audio", "record_id": rid,
                "raw_scientific_name": name, "query": query}  # fmt: skip

    rows = [row("1", "Aa bb", "grp:birds"), row("1", "Aa bb", "gen:Aa"), row("2", "Aa bb", "q"),
            row("3", "Aa bb", "q"), row("4", "Cc dd", "q")]  # fmt: skip
    settings = FetchSettings(taxa=["Aves"], max_per_species=2)
    res = finalize(
        tmp_path, "xeno-canto", to_table(rows, RAW_RECORD), to_table([], FAILURE), settings
    )
    # record 1, listed by two queries, is kept once (so not a failure); record 3 is over the cap
    assert res.kept == 3 and res.dropped == {"over_cap": 1}
    fails = pl.read_parquet(tmp_path / "manifests" / "failures.parquet")
    assert fails.select("stage", "record_id", "name", "reason", "detail").rows() == [
        ("fetch", "3", "Aa bb", "over_cap", "beyond --max-per-species 2"),
    ]

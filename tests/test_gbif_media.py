"""GBIF rows through align and materialize: the retired archive host's downloads are failures."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console

from biovita_data.app.stages import run_build
from biovita_data.core import environ, layout
from biovita_data.crawl.fetch import fetch, settings_from_env
from biovita_data.crawl.http import HttpClient
from biovita_data.media import MaterializeSettings, materialize
from biovita_data.sample.server import SampleServer
from biovita_data.sample.world import World

QUIET = Console(quiet=True)


def test_gbif_audio_aligns_and_dead_host_downloads_fail(tiny_world: World, tmp_path: Path) -> None:
    out = tmp_path
    with SampleServer(tiny_world, port=0) as srv, environ.scoped(srv.urls):
        settings = settings_from_env(taxa=["Aves"], sources=["inaturalist", "gbif"], throttle=False)
        fetch(settings, out, console=QUIET)
        run_build(out, {"align": {"throttle": False, "min_audio": 1}}, QUIET,
                  stages=("align", "split"))  # fmt: skip
        materialize(
            out,
            MaterializeSettings(workers=1, shard_size=50, throttle=False, modalities=("audio",)),
            console=QUIET,
            http=HttpClient(throttle=False, retries=1, backoff_s=0.01),
        )
    raw = pl.read_parquet(layout.raw_records_path(out, "gbif"))
    aligned = pl.read_parquet(layout.media_manifest_path(out, "audio")).filter(
        pl.col("source") == "gbif"
    )
    fails = pl.read_parquet(out / "manifests" / "failures.parquet")
    dead = set(raw.filter(pl.col("media_url").str.contains("/tierstimmenarchiv/"))["record_id"])
    m_fail = fails.filter((pl.col("stage") == "materialize") & (pl.col("source") == "gbif"))
    # every GBIF recording that reached materialize is stored unless its host is retired
    ids = set(aligned["record_id"])
    assert ids & dead and ids - dead
    for r in aligned.iter_rows(named=True):
        failed = r["record_id"] in set(m_fail["record_id"])
        assert failed == (r["record_id"] in dead), r["record_id"]
    assert set(m_fail["reason"]) == {"http_error"}
    # synonyms aligned to their accepted species
    syn = raw.filter(pl.col("taxon_key") != pl.col("accepted_taxon_key"))
    species = pl.read_parquet(out / "manifests" / "species.parquet")
    assert set(syn["raw_scientific_name"]) <= set(species["scientific_name"]) | set(
        fails.filter(pl.col("stage") == "align")["name"]
    )

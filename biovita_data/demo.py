"""`biovita-data demo`: the whole pipeline that exists, on the sample world, in one command."""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console
from rich.table import Table

from biovita_data import __version__
from biovita_data.fetch import fetch, settings_from_env
from biovita_data.pipeline import sample_environment, sample_trait_tables
from biovita_data.stages import BUILD_STAGES, RELEASE_STAGES, run_build
from biovita_data.tables import write_json_atomic

TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]
BUILD_OUTPUTS = {
    "align": "manifests/{species,audio,image,unmatched}.parquet",
    "traits": "species.parquet trait_* + manifests/traits_coverage.json",
    "split": "split on audio/image, split_group on species",
    "bench": "bench/{seen,unseen}/ (Parquet + official CSV)",
    "stats": "stats.json",
    "materialize": "media/{audio,image}/shard-*.parquet + index.parquet",
    "publish": "hf/ (dataset card, configs audio/image/species/bench)",
}
DEMO_REPO_ID = "biovita/sample"


def run_demo(workdir: Path, *, size: str = "default", seed: int = 0, console: Console) -> dict:
    """Serve the sample world, crawl it, then build manifests, traits, splits, bench and stats."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    stages: dict[str, dict] = {}
    with ExitStack() as stack:
        env = sample_environment(stack, size, seed, "none")
        root = env["XENO_CANTO_API_URL"].rsplit("/xeno", 1)[0]
        console.print(f"[bold]sample world[/bold] ({size}, seed {seed}) served at {root}")
        settings = settings_from_env(
            taxa=TAXA, sources=["xeno-canto", "inaturalist", "inat-open-data"], throttle=False
        )
        t = time.monotonic()
        results = fetch(settings, workdir, console=console)
        stages["fetch"] = {
            "seconds": round(time.monotonic() - t, 2),
            "records": {r.source: r.kept for r in results},
            "dropped": {r.source: r.dropped for r in results},
        }
        tables = sample_trait_tables(size, seed, workdir)
        sections = {
            "align": {"backbone": "inat", "throttle": False, "max_images_per_species": 200},
            "traits": {"tables": tables},
            "split": {"seed": seed},
            "bench": {"seed": seed},
            "materialize": {"throttle": False},
            "publish": {"repo_id": DEMO_REPO_ID, "folder_only": True},
        }
        stages.update(run_build(workdir, sections, console, stages=BUILD_STAGES + RELEASE_STAGES))
    build = {
        "tool": f"biovita {__version__}",
        "python": platform.python_version(),
        "world": {"size": size, "seed": seed},
        "sources": settings.sources,
        "taxa": TAXA,
        "snapshot": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "stages": stages,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json_atomic(build, workdir / "build.json")
    table = Table(title=f"biovita-data demo -> {workdir}")
    table.add_column("stage")
    table.add_column("wrote")
    table.add_column("result")
    for src, n in stages["fetch"]["records"].items():
        dropped = sum(stages["fetch"]["dropped"][src].values())
        table.add_row(
            "fetch",
            f"raw/{src.replace('-', '_')}/records.parquet",
            f"{n} records kept, {dropped} dropped",
        )
    table.add_row("fetch", "manifests/failures.parquet", "every dropped record with its reason")
    for stage, wrote in BUILD_OUTPUTS.items():
        if stage in stages:
            table.add_row(stage, wrote, stages[stage]["result"])
    table.add_row("build", "build.json", f"{build['seconds']} s in all")
    console.print(table)
    console.print(json.dumps({"workdir": str(workdir), "seconds": build["seconds"]}))
    return build

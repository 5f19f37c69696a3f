"""Pipeline files (TOML): which taxa, sources and filters; `run` executes the stages that exist."""

from __future__ import annotations

import os
import time
import tomllib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from biovita_data.app.settings import check_pipeline, section
from biovita_data.core import environ
from biovita_data.core.budget import BudgetExceeded, budget_line
from biovita_data.crawl.fetch import FetchSettings, settings_from_env
from biovita_data.crawl.licenses import DEFAULT_ALLOWED, parse_allowed

STAGES = ("fetch", "tol", "align", "traits", "split", "bench", "stats", "materialize", "publish")


@dataclass
class Pipeline:
    name: str
    out: Path
    fetch: dict[str, Any]
    sample: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fetch_settings(self, **overrides: Any) -> FetchSettings:
        f = section("fetch", self.fetch)
        urls = f.urls
        sources = list(f.sources)
        if "all" in sources:  # every source this build knows (gbif too, where it exists)
            from biovita_data.crawl.fetch import SOURCES

            sources = list(SOURCES)
        settings = settings_from_env(
            taxa=f.taxa,
            sources=sources,
            since=f.since,
            licenses=parse_allowed(f.licenses if f.licenses is not None else DEFAULT_ALLOWED),
            max_per_species=f.max_per_species,
            max_records=f.max_records,
            throttle=f.throttle,
        )
        # GBIF: [fetch] gbif_datasets = ["KEY", ...], media = "sound|image|both"
        if f.gbif_datasets is not None:
            settings.gbif_datasets = f.gbif_datasets
        if f.media is not None:
            settings.media = f.media
        # the pipeline file may pin URLs; the environment still wins
        for key, env in (
            ("xeno_canto", "XENO_CANTO_API_URL"),
            ("inaturalist", "INATURALIST_API_URL"),
            ("open_data", "INATURALIST_OPEN_DATA_URL"),
            ("gbif", "GBIF_API_URL"),
        ):
            if key in urls and not os.environ.get(env):
                setattr(
                    settings, f"{key}_url" if key != "open_data" else "open_data_url", urls[key]
                )
        for k, v in overrides.items():
            setattr(settings, k, v)
        return settings


def load_pipeline(path: Path) -> Pipeline:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    if "fetch" not in data or "taxa" not in data["fetch"]:
        raise ValueError(f"{path}: a pipeline needs [fetch] with taxa = [...]")
    check_pipeline(data, str(path))
    meta = section("pipeline", data.get("pipeline", {}))
    return Pipeline(
        name=meta.name or path.stem,
        out=Path(meta.out or f"build/{path.stem}"),
        fetch=data["fetch"],
        sample=data.get("sample"),
        extra={k: v for k, v in data.items() if k not in ("pipeline", "fetch", "sample")},
    )


def sample_environment(
    stack: ExitStack, size: str, seed: int, faults: str, epoch: int = 0, duplicates: bool = False
) -> dict[str, str]:
    """Start the sample world's server for the duration of `stack` (with `duplicates`, its
    planted copies and near-miss negatives); returns its env vars."""
    from biovita_data.sample.server import SampleServer
    from biovita_data.sample.world import World

    server = stack.enter_context(SampleServer(World(size, seed, epoch, duplicates), faults=faults))
    env = server.environment
    stack.enter_context(environ.scoped(env))
    return env


def sample_trait_tables(size: str, seed: int, out: Path) -> list[str]:
    """Export the sample world's trait tables to OUT/traits; `--table` specs in precedence order."""
    from biovita_data.sample.taxonomy import generate_taxonomy
    from biovita_data.sample.trait_tables import export_trait_tables

    paths = export_trait_tables(generate_taxonomy(size, seed), out / "traits")
    kinds = {"eltontraits_birds": "eltontraits", "eltontraits_mammals": "eltontraits"}
    order = ("csv", "amphibio", "eltontraits_birds", "eltontraits_mammals", "avonet")
    return [f"{kinds.get(name, name)}={paths[name]}" for name in order]


def sample_release_tables(size: str, seed: int, out: Path) -> list[str]:
    """The same tables as the public releases are fetched: its plain CSV (insects, no public
    table) written to OUT/traits, then the four releases by name, which the traits stage
    downloads from BIOVITA_TRAITS_URL (the sample server, which must be set) like the real ones."""
    import os

    from biovita_data.curate.traits.releases import ENV_URL
    from biovita_data.sample.taxonomy import generate_taxonomy
    from biovita_data.sample.trait_tables import TABLES, table_bytes

    if not os.environ.get(ENV_URL):
        raise ValueError(f"{ENV_URL} is not set: serve the sample world first")
    path = out / "traits" / TABLES["csv"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(table_bytes(generate_taxonomy(size, seed), "csv"))
    return [f"csv={path}", "amphibio", "eltontraits-birds", "eltontraits-mammals", "avonet"]


def sample_tol_view(size: str, seed: int, root: str, out: Path) -> dict[str, str]:
    """Write the sample world's TreeOfLife-200M view to OUT/tol (URLs under `root`); the [tol]
    catalog and provenance settings."""
    from biovita_data.sample.treeoflife import write_tol_view
    from biovita_data.sample.world import World

    catalog, provenance = write_tol_view(World(size, seed), root, out / "tol")
    return {"catalog": str(catalog), "provenance": str(provenance)}


def run_pipeline(
    p: Pipeline, out: Path, console: Console, *, fetch: bool = True, update: bool = False
) -> dict:
    """fetch, tol (when the file has [tol]), align, traits, split, bench, stats, then materialize
    and publish when the file has those sections; each stage takes its [section]'s settings."""
    from biovita_data.app.stages import BUILD_STAGES, RELEASE_STAGES, run_build, run_tol
    from biovita_data.crawl.fetch import fetch as run_fetch

    with ExitStack() as stack:
        sections = {k: dict(v) for k, v in p.extra.items() if isinstance(v, dict)}
        sections.setdefault("align", {}).setdefault("throttle", p.fetch.get("throttle", True))
        if p.sample is not None:
            world = section("sample", p.sample)
            size, seed = world.size, world.seed
            env = sample_environment(stack, size, seed, world.faults, world.epoch, world.duplicates)
            traits = sections.setdefault("traits", {})
            if traits.get("tables") == "sample":
                traits["tables"] = sample_release_tables(size, seed, out)
            tol = sections.get("tol", {})
            if tol.get("catalog") == "sample":
                root = env["XENO_CANTO_API_URL"].rsplit("/xeno", 1)[0]
                tol.update(sample_tol_view(size, seed, root, out))
        seconds = {}
        budget = section("fetch", p.fetch).max_failed  # [fetch]'s, for a fetch or an update
        if update:  # only what changed since OUT's last crawl (crawl.update)
            from biovita_data.crawl.update import update as run_update

            t = time.monotonic()
            run_update(out, console=console, settings=p.fetch_settings(), max_failed=budget)
            seconds["update"] = {"seconds": round(time.monotonic() - t, 2)}
        elif fetch:
            t = time.monotonic()
            fetched = run_fetch(p.fetch_settings(), out, console=console)
            for r in fetched:  # as `fetch --max-failed`: the raw records stay, a rerun resumes
                if line := budget_line(f"fetch {r.source}", r.kept, r.dropped, budget):
                    raise BudgetExceeded(line)
            seconds["fetch"] = {"seconds": round(time.monotonic() - t, 2)}
        if "tol" in sections:
            t = time.monotonic()
            run_tol(out, sections["tol"], console)
            seconds["tol"] = {"seconds": round(time.monotonic() - t, 2)}
        release = tuple(st for st in RELEASE_STAGES if st in sections)
        if "materialize" in sections:
            sections["materialize"].setdefault("throttle", p.fetch.get("throttle", True))
        seconds.update(run_build(out, sections, console, stages=BUILD_STAGES + release))
    return seconds

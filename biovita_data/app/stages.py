"""The manifest stages by name, with their settings from a pipeline file's sections or the CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from biovita_data.build.align import AlignSettings, align, name_resolver, saved_settings
from biovita_data.core import layout
from biovita_data.crawl.http import HttpClient

BUILD_STAGES = ("align", "traits", "split", "bench", "stats")
RELEASE_STAGES = ("materialize", "publish")
TRAIT_KINDS = ("avonet", "eltontraits", "amphibio", "csv")


def parse_tables(specs: list[str]) -> list[tuple[str, Path]]:
    """`kind=FILE` strings -> (kind, path), checked; the order is the precedence."""
    tables = []
    for spec in specs:
        kind, sep, file = spec.partition("=")
        kind = kind.strip().lower()
        if not sep or kind not in TRAIT_KINDS:
            raise ValueError(f"--table {spec!r}: expected KIND=FILE with KIND in {TRAIT_KINDS}")
        path = Path(file)
        if not path.exists():
            raise FileNotFoundError(f"--table {spec!r}: {path} does not exist")
        tables.append((kind, path))
    return tables


def align_settings(cfg: dict[str, Any], *, throttle: bool = True) -> AlignSettings:
    return AlignSettings(
        backbone=str(cfg.get("backbone", "inat")),
        synonyms=[Path(p) for p in cfg.get("synonyms", [])],
        min_audio=int(cfg.get("min_audio", 1)),
        min_images=int(cfg.get("min_images", 1)),
        max_images_per_species=cfg.get("max_images_per_species"),
        seed=int(cfg.get("seed", 0)),
        inaturalist_url=os.environ.get("INATURALIST_API_URL", "https://api.inaturalist.org/v1"),
        throttle=bool(cfg.get("throttle", throttle)),
    )


def run_align(out: Path, cfg: dict, console: Console, http: HttpClient | None = None):
    return align(out, align_settings(cfg), http=http, console=console)


def run_traits_stage(out: Path, cfg: dict, console: Console, http: HttpClient | None = None):
    from biovita_data.build.traits import print_coverage, run_traits

    tables = parse_tables(list(cfg.get("tables", [])))
    if not tables:
        raise ValueError("traits needs at least one --table KIND=FILE")
    resolve = name_resolver(out, saved_settings(out), http)
    result = run_traits(out, tables, resolve)
    print_coverage(result, console)
    return result


def run_split(out: Path, cfg: dict, console: Console):
    from biovita_data.build.split import split

    return split(
        out,
        seed=int(cfg.get("seed", 0)),
        test_fraction=float(cfg.get("test_fraction", 0.1)),
        unseen_max_audio=int(cfg.get("unseen_max_audio", 2)),
        console=console,
    )


def run_bench(out: Path, cfg: dict, console: Console):
    from biovita_data.build.bench import build_bench, print_summary

    keys = ("candidates", "seed", "max_images", "max_clips", "max_texts",
            "max_queries_per_taxon", "max_queries_per_task")  # fmt: skip
    result = build_bench(out, **{k: int(cfg[k]) for k in keys if k in cfg})
    print_summary(result, console)
    return result


def run_stats(out: Path, cfg: dict, console: Console):
    from biovita_data.build.stats import stats

    return stats(out, console)


def run_materialize(out: Path, cfg: dict, console: Console):
    from biovita_data.media import MaterializeSettings, materialize

    fields = MaterializeSettings.__dataclass_fields__
    unknown = set(cfg) - set(fields)
    if unknown:
        raise ValueError(f"[materialize]: unknown settings {sorted(unknown)}")
    result = materialize(out, MaterializeSettings(**cfg), console=console)
    redraw_bench(out, console)
    return result


def redraw_bench(out: Path, console: Console):
    """Draw an existing bench again with its recorded settings, now from the stored media only
    (a record materialize could not keep can be neither query nor candidate); None if no bench."""
    from biovita_data.build.bench.csv_layout import bench_json_path

    path = bench_json_path(layout.bench_dir(out, "seen"))
    if not path.exists():
        return None
    console.print("bench: drawn again, from the recordings and photos materialize kept")
    return run_bench(out, json.loads(path.read_text())["settings"], console)


def run_publish(out: Path, cfg: dict, console: Console):
    from biovita_data.publish import publish

    if "repo_id" not in cfg:
        raise ValueError('[publish] needs repo_id = "NAMESPACE/NAME"')
    return publish(
        out,
        cfg["repo_id"],
        media=cfg.get("media", "embed"),
        folder_only=bool(cfg.get("folder_only", False)),
        git_remote=cfg.get("git_remote"),
        private=bool(cfg.get("private", False)),
        max_shard_bytes=int(cfg.get("max_shard_mb", 500)) * 2**20,
        console=console,
    )


RUNNERS: dict[str, Callable] = {
    "align": run_align,
    "traits": run_traits_stage,
    "split": run_split,
    "bench": run_bench,
    "stats": run_stats,
    "materialize": run_materialize,
    "publish": run_publish,
}


def describe(stage: str, result: Any) -> str:
    """One line on what a stage produced, for summary tables."""
    if stage == "align":
        return (
            f"{result.species} species, {result.audio} recordings, {result.image} photos; "
            f"{result.unmatched_names} names unmatched"
        )
    if stage == "traits":
        cov = result.coverage
        return f"{cov['species_with_any_label']} of {cov['species']} species with known traits"
    if stage == "split":
        return (
            f"test: {result.audio.get('test', 0)} clips, {result.image.get('test', 0)} photos; "
            f"{result.species.get('unseen', 0)} unseen species"
        )
    if stage == "bench":
        queries = sum(t.queries for t in result.tasks)
        return f"{len(result.tasks)} tasks (2 subsets x 3 levels x 6), {queries} queries"
    if stage == "materialize":
        parts = []
        for m in result.modalities:
            failed = sum(m.failed.values())
            parts.append(f"{m.modality}: {m.kept} kept, {failed} failed")
        return "; ".join(parts)
    if stage == "publish":
        rows = {c: sum(v.values()) for c, v in result.rows.items()}
        where = result.target or str(result.folder)
        return ", ".join(f"{c} {n} rows" for c, n in rows.items()) + f" -> {where}"
    if stage == "stats":
        return f"{result['species']} species, {result['audio']} + {result['image']} records"
    return ""


def run_build(
    out: Path, sections: dict[str, dict], console: Console, stages=BUILD_STAGES
) -> dict[str, dict]:
    """Run the manifest stages in order; traits is skipped when no table is configured."""
    done = {}
    for stage in stages:
        cfg = sections.get(stage, {})
        if stage == "traits" and not cfg.get("tables"):
            console.print("[yellow]traits: no trait tables configured; skipped[/yellow]")
            continue
        t = time.monotonic()
        result = RUNNERS[stage](out, cfg, console)
        done[stage] = {"seconds": round(time.monotonic() - t, 2), "result": describe(stage, result)}
        if stage == "materialize" and "bench" in done:  # materialize drew the bench again
            done["bench"]["result"] = describe_bench_on_disk(out)
    return done


def describe_bench_on_disk(out: Path) -> str:
    """describe("bench") of the bench as it lies in OUT/bench (what publish ships)."""
    import polars as pl

    from biovita_data.build.bench.csv_layout import tasks_parquet_path

    tasks = queries = 0
    for subset in layout.BENCH_SPLIT_OF_SUBSET:
        df = pl.read_parquet(tasks_parquet_path(layout.bench_dir(out, subset)))
        tasks += df.select("task", "taxon_level").n_unique()
        queries += df.height
    return f"{tasks} tasks (2 subsets x 3 levels x 6), {queries} queries, from the stored media"

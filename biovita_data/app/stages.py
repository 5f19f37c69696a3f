"""The manifest stages by name, with their settings from a pipeline file's sections or the CLI."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from biovita_data.app.settings import section
from biovita_data.core import layout
from biovita_data.core.budget import BudgetExceeded, budget_line
from biovita_data.crawl.http import HttpClient
from biovita_data.curate.align import AlignSettings, align, name_resolver, saved_settings

BUILD_STAGES = ("align", "traits", "split", "bench", "stats")
RELEASE_STAGES = ("materialize", "dedup", "publish")
TRAIT_KINDS = ("avonet", "eltontraits", "amphibio", "csv")


def parse_tables(
    specs: list[str],
    cache: Path | None = None,
    http: HttpClient | None = None,
    refresh: bool = False,
) -> list[tuple[str, Path]]:
    """`--table` specs -> (reader kind, path), in precedence order. A spec is a public release's
    name (`avonet`, `eltontraits-birds`, ...: downloaded once into `cache`, verified) or
    `KIND=FILE` (a local file; KIND a reader kind or a release name)."""
    from biovita_data.curate.traits.releases import RELEASES, fetch_release

    tables = []
    for spec in specs:
        name, sep, file = spec.partition("=")
        name = name.strip().lower()
        if not sep:
            if name not in RELEASES:
                raise ValueError(
                    f"--table {spec!r}: not a public release ({', '.join(RELEASES)}); "
                    f"give a local table as KIND=FILE with KIND in {TRAIT_KINDS}"
                )
            if cache is None:
                raise ValueError(f"--table {spec!r}: no download cache given")
            path = fetch_release(name, cache, http, refresh=refresh)  # refresh: download again
            tables.append((RELEASES[name].kind, path))
            continue
        kind = RELEASES[name].kind if name in RELEASES else name
        if kind not in TRAIT_KINDS:
            raise ValueError(
                f"--table {spec!r}: expected KIND=FILE with KIND in {TRAIT_KINDS} "
                f"or a release name ({', '.join(RELEASES)})"
            )
        path = Path(file)
        if not path.exists():
            raise FileNotFoundError(f"--table {spec!r}: {path} does not exist")
        tables.append((kind, path))
    return tables


ENV_INAT = "INATURALIST_API_URL"


def align_settings(cfg: dict[str, Any] | AlignSettings) -> AlignSettings:
    """[align] as AlignSettings; the iNaturalist URL from the environment unless given."""
    settings = section("align", cfg)
    if isinstance(cfg, dict) and "inaturalist_url" not in cfg and os.environ.get(ENV_INAT):
        settings.inaturalist_url = os.environ[ENV_INAT]
    return settings


def run_align(out: Path, cfg: dict, console: Console, http: HttpClient | None = None):
    return align(out, align_settings(cfg), http=http, console=console)


def run_traits_stage(out: Path, cfg: dict, console: Console, http: HttpClient | None = None):
    from biovita_data.curate.traits import print_coverage, run_traits

    s = section("traits", cfg)
    if not layout.species_path(out).is_file():  # before any download
        raise FileNotFoundError(f"{layout.species_path(out)}: missing (run align first)")
    cache = s.cache or layout.traits_cache_dir(out)
    settings = saved_settings(out)  # align's report too, before any download
    client = http or HttpClient(throttle=s.throttle)
    if s.tables == "sample":
        raise ValueError('[traits] tables = "sample" needs a [sample] section (the sample world)')
    tables = parse_tables(list(s.tables), cache, client, refresh=s.refresh)
    if not tables:
        raise ValueError("traits needs at least one --table (a release name or KIND=FILE)")
    resolve = name_resolver(out, settings, http)
    result = run_traits(out, tables, resolve)
    print_coverage(result, console)
    return result


def run_tol(out: Path, cfg: dict, console: Console):
    """`import-tol` with a pipeline's [tol] settings: TreeOfLife-200M images per species."""
    from biovita_data.crawl.licenses import DEFAULT_ALLOWED, parse_allowed
    from biovita_data.crawl.sources.treeoflife import import_tol

    s = section("tol", cfg)
    if s.provenance is None or s.catalog == "sample":
        raise ValueError('[tol] needs catalog and provenance (or catalog = "sample" with [sample])')
    result = import_tol(
        Path(s.catalog),
        Path(s.provenance),
        out,
        per_species=s.per_species,
        seed=s.seed,
        taxa=s.taxa,
        allowed=parse_allowed(s.licenses if s.licenses is not None else DEFAULT_ALLOWED),
        exclusive=s.exclusive,
    )
    console.print(f"tol: {describe('tol', result)}")
    if line := budget_line("import-tol", result.kept, result.dropped, s.max_failed):
        raise BudgetExceeded(line)
    return result


def run_split(out: Path, cfg: dict, console: Console):
    from biovita_data.curate.split import split

    return split(out, **asdict(section("split", cfg)), console=console)


def run_bench(out: Path, cfg: dict, console: Console):
    from biovita_data.curate.bench import build_bench, print_summary

    result = build_bench(out, **asdict(section("bench", cfg)))
    print_summary(result, console)
    return result


def run_stats(out: Path, cfg: dict, console: Console):
    from biovita_data.curate.stats import stats

    # the per-class coverage table once: not again when traits printed it in this run
    return stats(out, console, class_coverage=section("stats", cfg).class_coverage)


def run_materialize(out: Path, cfg: dict, console: Console):
    from biovita_data.media import materialize

    # over its --max-failed budget, materialize raises BudgetExceeded: the bench stays as it was
    result = materialize(out, section("materialize", cfg), console=console)
    empty = [m.modality for m in result.modalities if m.records and not m.kept]
    if empty:  # accepted with --max-failed 1.0, but nothing to draw a bench from
        console.print(
            f"[yellow]bench: not drawn again: materialize kept no {' or '.join(empty)}; "
            "rerun materialize once the media hosts answer (the bench is drawn then)[/yellow]"
        )
        return result
    redraw_bench(out, console)
    return result


def run_dedup(out: Path, cfg: dict, console: Console):
    """`dedup` after materialize; content groups found: split again (a group is one unit) and
    the bench drawn again, so no copy straddles train and test and no query has one in train."""
    from biovita_data.media.dedup import dedup, summary_line

    s = section("dedup", cfg)
    result = dedup(
        out, workers=s.workers, engine=s.engine, ray_address=s.ray_address, console=console
    )
    console.print(summary_line(result))
    if any(k != "metadata" for k in result.groups):
        split_json = layout.manifests_dir(out) / "split.json"
        saved = json.loads(split_json.read_text()) if split_json.exists() else {}
        split_cfg = saved.get("settings", {})
        result.split = run_split(
            out, {k: v for k, v in split_cfg.items() if k in SPLIT_KEYS}, console
        )
        redraw_bench(out, console)
    return result


SPLIT_KEYS = ("seed", "test_fraction", "unseen_max_audio")


def redraw_bench(out: Path, console: Console):
    """Draw an existing bench again with its recorded settings, now from the stored media only
    (a record materialize could not keep can be neither query nor candidate); None if no bench."""
    from biovita_data.curate.bench.csv_layout import bench_json_path

    path = bench_json_path(layout.bench_dir(out, "seen"))
    if not path.exists():
        return None
    console.print("bench: drawn again, from the recordings and photos materialize kept")
    return run_bench(out, json.loads(path.read_text())["settings"], console)


def run_publish(out: Path, cfg: dict, console: Console):
    from biovita_data.publish import publish

    s = section("publish", cfg)
    return publish(
        out,
        s.repo_id,
        media=s.media,
        folder_only=s.folder_only,
        git_remote=None if s.folder_only else s.git_remote,
        private=s.private,
        max_shard_bytes=s.max_shard_mb * 2**20,
        pretty_name=s.pretty_name,
        large_upload=s.large_upload,
        tag=s.tag,
        previous_release=s.previous_release,
        allow_empty=s.allow_empty,
        console=console,
    )


RUNNERS: dict[str, Callable] = {
    "align": run_align,
    "traits": run_traits_stage,
    "split": run_split,
    "bench": run_bench,
    "stats": run_stats,
    "materialize": run_materialize,
    "dedup": run_dedup,
    "publish": run_publish,
}


def describe(stage: str, result: Any) -> str:
    """One line on what a stage produced, for summary tables."""
    if stage == "align":
        return (
            f"{result.species} species, {result.audio} recordings, {result.image} photos; "
            f"{result.unmatched_names} names unmatched"
        )
    if stage == "tol":
        return f"{result.kept} TreeOfLife-200M images drawn{dropped_words(result.dropped)}"
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
    if stage == "dedup":
        from biovita_data.media.dedup import group_words

        kinds, pairs = group_words(result)
        line = f"duplicate groups: {kinds}; per source pair: {pairs}"
        if result.split is not None:
            moved = sum(result.split.moved.values())
            line += f"; split again: {moved} item{'s' * (moved != 1)} moved to join a group"
        return line
    if stage == "publish":
        rows = {c: sum(v.values()) for c, v in result.rows.items()}
        where = result.target or str(result.folder)
        return ", ".join(f"{c} {n} rows" for c, n in rows.items()) + f" -> {where}"
    if stage == "stats":
        return f"{result['species']} species, {result['audio']} + {result['image']} records"
    return ""


# failure reasons as the summaries word them
_REASON_WORDS = {"license_not_allowed": "licence", "license_unknown": "licence unknown"}


def dropped_words(dropped: dict[str, int]) -> str:
    """`, 396 dropped: licence` per reason: the licence filter drops by design, nothing failed."""
    return "".join(
        f", {n} dropped: {_REASON_WORDS.get(reason, reason)}"
        for reason, n in sorted(dropped.items())
        if n
    )


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
        if stage == "stats" and "traits" in done:
            cfg = {**cfg, "class_coverage": False}
        t = time.monotonic()
        result = RUNNERS[stage](out, cfg, console)
        done[stage] = {"seconds": round(time.monotonic() - t, 2), "result": describe(stage, result)}
        if stage == "dedup" and result.split is not None and "split" in done:
            # dedup split again (a group of copies is one unit): the split row shows that one
            done["split"]["result"] = describe("split", result.split) + " (after dedup)"
        # materialize drew the bench again, and so did dedup when it split again
        if stage in ("materialize", "dedup") and "bench" in done:
            done["bench"]["result"] = describe_bench_on_disk(out)
    return done


def describe_bench_on_disk(out: Path) -> str:
    """describe("bench") of the bench as it lies in OUT/bench (what publish ships)."""
    import polars as pl

    from biovita_data.curate.bench.csv_layout import tasks_parquet_path

    tasks = queries = 0
    for subset in layout.BENCH_SPLIT_OF_SUBSET:
        df = pl.read_parquet(tasks_parquet_path(layout.bench_dir(out, subset)))
        tasks += df.select("task", "taxon_level").n_unique()
        queries += df.height
    return f"{tasks} tasks (2 subsets x 3 levels x 6), {queries} queries, from the stored media"

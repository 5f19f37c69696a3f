"""`biovita-data`: a thin CLI over the Python API (every command is a function you can import)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from biovita_data.app.clikit import (
    cli_app,
    cli_console,
    debug_option,
    error_line,
    fail,
    version_option,
)
from biovita_data.app.settings import PublishSection, TolSection
from biovita_data.core.budget import DEFAULT_MAX_FAILED
from biovita_data.curate.settings import AlignSettings, BenchSettings, SplitSettings
from biovita_data.media.settings import MaterializeSettings

app = cli_app("Build the BioVITA corpus: crawl sources, build manifests, materialize, publish.")
sample_app = cli_app("The embedded sample world: serve it, export its tables.")
app.add_typer(sample_app, name="sample")
bench_app = typer.Typer(
    help="Build BioVITA-Bench (`bench --out OUT`); `bench export-media` writes its media as files."
)
app.add_typer(bench_app, name="bench")
release_app = cli_app("Releases: what changed between two builds (`release diff OLD NEW`).")
app.add_typer(release_app, name="release")
console = cli_console(stderr=True)
# option defaults: each stage's settings class holds them once (biovita_data.app.settings)
ALIGN, SPLIT, BENCH, MATERIALIZE = AlignSettings, SplitSettings, BenchSettings, MaterializeSettings
PUBLISH, TOL = PublishSection, TolSection


@app.callback()
def main(
    version: Annotated[bool, version_option("biovita-data")] = False,
    debug: Annotated[bool, debug_option()] = False,
) -> None:
    """BioVITA data pipeline: sources -> manifests -> media -> dataset -> loader."""


MaxFailedOption = Annotated[
    float,
    typer.Option(
        "--max-failed",
        help="Exit 3 when more than this share of the items failed (0..1; 1.0: never). "
        "Duplicates and licence/cap exclusions do not count; what was done is kept.",
    ),
]


def _check_budget(what: str, kept: int, dropped: dict[str, int], max_failed: float) -> None:
    """Exit 3 with one line when the failed share of kept + dropped exceeds `max_failed`."""
    from biovita_data.core.budget import EXIT_OVER_BUDGET, budget_line

    line = budget_line(what, kept, dropped, max_failed)
    if line:
        error_line(line)
        raise typer.Exit(EXIT_OVER_BUDGET)


def _licenses(text: str) -> tuple[str, ...]:
    from biovita_data.crawl.licenses import parse_allowed

    try:
        return parse_allowed(text)
    except ValueError as exc:
        fail(exc)


NoThrottleOption = Annotated[
    bool, typer.Option("--no-throttle", help="Disable per-host rate limits (loopback only!).")
]


@app.command()
def fetch(
    taxa: Annotated[
        list[str],
        typer.Option("--taxa", help="Class, order, family, genus or species; repeatable."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Build directory.")],
    source: Annotated[
        list[str] | None,
        typer.Option(
            "--source",
            help="xeno-canto, inaturalist, inat-open-data, gbif or all; repeatable "
            "(default: both APIs).",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only records new or updated since YYYY-MM-DD.")
    ] = None,
    licenses: Annotated[
        str, typer.Option(help="Comma-separated allowed licence families.")
    ] = "cc0,cc-by,cc-by-sa,cc-by-nc,cc-by-nc-sa",
    max_per_species: Annotated[
        int | None, typer.Option(help="Cap records per species and source.")
    ] = None,
    max_records: Annotated[
        int | None, typer.Option(help="Stop each source after N records.")
    ] = None,
    no_throttle: NoThrottleOption = False,
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard an unfinished crawl with other settings.")
    ] = False,
    gbif_dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--gbif-dataset",
            help="GBIF dataset key; repeatable (default for sound: the Animal Sound Archive).",
        ),
    ] = None,
    media: Annotated[
        str, typer.Option(help="What GBIF is asked for: sound, image or both.")
    ] = "sound",
    max_failed: MaxFailedOption = DEFAULT_MAX_FAILED,
) -> None:
    """Crawl Xeno-canto v3, iNaturalist v1 (and its Open Data bucket) and GBIF v1 into OUT/raw/."""
    from biovita_data.crawl.fetch import SOURCES, settings_from_env
    from biovita_data.crawl.fetch import fetch as run_fetch
    from biovita_data.crawl.http import FetchError
    from biovita_data.crawl.sources.xeno_canto import MissingKey
    from biovita_data.crawl.taxa import TaxonNotFound

    # default: the two APIs; Open Data (the same photos, for scale) is opt-in or part of "all"
    source = source or ["xeno-canto", "inaturalist"]
    sources = list(SOURCES) if "all" in source else list(dict.fromkeys(source))
    unknown = set(sources) - set(SOURCES)
    if unknown:
        fail(f"unknown source(s) {sorted(unknown)}; choose from {', '.join(SOURCES)} or all")
    _check_date("--since", since)
    settings = settings_from_env(
        taxa=taxa,
        sources=sources,
        since=since,
        licenses=_licenses(licenses),
        max_per_species=max_per_species,
        max_records=max_records,
        throttle=not no_throttle,
        gbif_datasets=list(gbif_dataset or []),
        media=media,
    )
    if media not in ("sound", "image", "both"):
        fail(f"--media must be sound, image or both, not {media!r}")
    _budget_option(max_failed)
    try:
        results = run_fetch(settings, out, console=console, restart=restart)
    except (TaxonNotFound, MissingKey) as exc:
        fail(exc)  # nothing was crawled: no resume advice
    except FetchError as exc:
        kept = (out / "raw").is_dir()
        advice = f" (crawl state kept under {out}/raw: run the same command to resume)"
        fail(f"{exc}{advice if kept else ''}")
    for r in results:
        _check_budget(f"fetch {r.source}", r.kept, r.dropped, max_failed)


def _budget_option(value: float) -> None:
    from biovita_data.core.budget import check_max_failed

    try:
        check_max_failed(value)
    except ValueError as exc:
        fail(exc)


def _check_date(option: str, value: str | None) -> None:
    """A YYYY-MM-DD date, checked here rather than by the server."""
    import datetime as dt

    if value is not None:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            fail(f"{option} {value!r} is not a date: give YYYY-MM-DD, e.g. 2024-01-31")


@app.command("import-official")
def import_official_cmd(
    metadata: Annotated[Path, typer.Argument(help="The original release's audio metadata CSV.")],
    out: Annotated[Path, typer.Option("--out", help="Build directory.")],
    max_failed: MaxFailedOption = DEFAULT_MAX_FAILED,
) -> None:
    """Import the original BioVITA release's metadata table as raw records (source `official`)."""
    from biovita_data.crawl.sources.release_table import import_official

    _budget_option(max_failed)
    try:
        res = import_official(metadata, out)
    except (OSError, ValueError) as exc:
        fail(exc)
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(res.dropped.items())) or "none"
    console.print(f"imported {res.kept} recordings into {out}/raw/official; dropped {dropped}")
    _check_budget("import-official", res.kept, res.dropped, max_failed)


@app.command("import-tol")
def import_tol_cmd(
    catalog: Annotated[Path, typer.Argument(help="TreeOfLife-200M catalog.parquet.")],
    provenance: Annotated[Path, typer.Argument(help="TreeOfLife-200M provenance.parquet.")],
    out: Annotated[Path, typer.Option("--out", help="Build directory.")],
    per_species: Annotated[
        int, typer.Option(help="Images drawn per species, at most.")
    ] = TOL.per_species,
    seed: Annotated[int, typer.Option(help="Seed of the random draw.")] = TOL.seed,
    taxa: Annotated[
        list[str] | None,
        typer.Option("--taxa", help="Draw for these taxa (any rank) instead of the corpus."),
    ] = None,
    licenses: Annotated[
        str, typer.Option(help="Comma-separated allowed licence families.")
    ] = "cc0,cc-by,cc-by-sa,cc-by-nc,cc-by-nc-sa",
    exclusive: Annotated[
        bool,
        typer.Option(help="The only image source: other sources' photos move to failures."),
    ] = False,
    max_failed: MaxFailedOption = DEFAULT_MAX_FAILED,
) -> None:
    """Draw up to N TreeOfLife-200M images per species (seeded) into OUT/raw/treeoflife_200m."""
    from biovita_data.crawl.sources.treeoflife import import_tol

    allowed = _licenses(licenses)
    _budget_option(max_failed)
    try:
        res = import_tol(
            catalog, provenance, out, per_species=per_species, seed=seed, taxa=taxa or (),
            allowed=allowed, exclusive=exclusive,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        fail(exc)
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(res.dropped.items())) or "none"
    console.print(
        f"imported {res.kept} images into {out}/raw/treeoflife_200m; dropped {dropped} "
        "(manifests/failures.parquet)"
    )
    _check_budget("import-tol", res.kept, res.dropped, max_failed)


@app.command("import-dwca")
def import_dwca_cmd(
    download: Annotated[Path, typer.Argument(help="A GBIF Darwin Core Archive download (.zip).")],
    out: Annotated[Path, typer.Option("--out", help="Build directory.")],
    media: Annotated[str, typer.Option(help="sound, image or both.")] = "both",
    licenses: Annotated[
        str, typer.Option(help="Comma-separated allowed licence families.")
    ] = "cc0,cc-by,cc-by-sa,cc-by-nc,cc-by-nc-sa",
    max_failed: MaxFailedOption = DEFAULT_MAX_FAILED,
) -> None:
    """Import a GBIF download (occurrence.txt + multimedia.txt) as raw records (source `gbif`)."""
    from biovita_data.crawl.dwca import import_dwca

    if media not in ("sound", "image", "both"):
        fail(f"--media must be sound, image or both, not {media!r}")
    allowed = _licenses(licenses)
    _budget_option(max_failed)
    try:
        res = import_dwca(download, out, allowed=allowed, media=media)
    except (OSError, ValueError) as exc:
        fail(exc)
    dropped = ", ".join(f"{k}: {v}" for k, v in sorted(res.dropped.items())) or "none"
    console.print(f"imported {res.kept} media records into {out}/raw/gbif; dropped {dropped}")
    _check_budget("import-dwca", res.kept, res.dropped, max_failed)


OutOption = Annotated[Path, typer.Option("--out", help="Build directory.")]


def _stage(fn, *args) -> object:
    """Run a stage; turn the errors a user can fix into a one-line message."""
    from biovita_data.core.budget import EXIT_OVER_BUDGET, BudgetExceeded

    try:
        return fn(*args)
    except (OSError, ValueError) as exc:
        fail(exc)
    except BudgetExceeded as exc:
        error_line(exc)
        raise typer.Exit(EXIT_OVER_BUDGET) from None
    except Exception as exc:
        from biovita_data.crawl.http import FetchError

        if isinstance(exc, FetchError):
            fail(f"{exc}\nWhat was downloaded so far is cached under OUT/raw: run it again.")
        raise


@app.command("align")
def align_cmd(
    out: OutOption,
    backbone: Annotated[
        str, typer.Option(help="inat (iNaturalist taxa) or a backbone CSV/TSV (GBIF columns).")
    ] = ALIGN.backbone,
    synonyms: Annotated[
        list[Path] | None,
        typer.Option("--synonyms", help="CSV with name, accepted_name; repeatable."),
    ] = None,
    min_audio: Annotated[int, typer.Option(help="Recordings a species needs.")] = ALIGN.min_audio,
    min_images: Annotated[int, typer.Option(help="Photos a species needs.")] = ALIGN.min_images,
    max_images: Annotated[
        int | None,
        typer.Option(
            "--max-images",
            help="Cap photos per species (seeded, a hash per photo; a rebuild of the same seed "
            "keeps the photos it kept).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the photo cap.")] = ALIGN.seed,
    no_throttle: NoThrottleOption = False,
) -> None:
    """Align raw names to one backbone -> OUT/manifests/{species,audio,image,unmatched}.parquet."""
    from biovita_data.app.stages import run_align

    cfg = {
        "backbone": backbone,
        "synonyms": synonyms or [],
        "min_audio": min_audio,
        "min_images": min_images,
        "max_images_per_species": max_images,
        "seed": seed,
        "throttle": not no_throttle,
    }
    _stage(run_align, out, cfg, console)


@app.command("traits")
def traits_cmd(
    out: OutOption,
    table: Annotated[
        list[str],
        typer.Option(
            "--table",
            help="A public release (avonet, eltontraits-birds, eltontraits-mammals, amphibio: "
            "downloaded once, sha256-checked; BIOVITA_TRAITS_URL overrides where from) or "
            "KIND=FILE, KIND in avonet, eltontraits, amphibio, csv; repeatable; "
            "earlier tables win where two give a label.",
        ),
    ],
    cache: Annotated[
        Path | None,
        typer.Option(help="Download cache of the public releases (default OUT/raw/traits)."),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(help="Download the named releases again (cached copy and sha256 dropped)."),
    ] = False,
) -> None:
    """Attach the 34 trait labels (with provenance) to species.parquet; print coverage."""
    from biovita_data.app.stages import run_traits_stage

    cfg = {"tables": table, "cache": cache, "refresh": refresh}
    _stage(run_traits_stage, out, cfg, console)


@app.command("split")
def split_cmd(
    out: OutOption,
    seed: Annotated[int, typer.Option(help="Seed of the split draw.")] = SPLIT.seed,
    test_fraction: Annotated[
        float, typer.Option(help="Share of a seen species -> test.")
    ] = SPLIT.test_fraction,
    unseen_max_audio: Annotated[
        int, typer.Option(help="Species with at most N recordings are held out as unseen.")
    ] = SPLIT.unseen_max_audio,
    previous: Annotated[
        Path | None,
        typer.Option(help="Keep the assignment of this earlier build folder (default: OUT's)."),
    ] = None,
    redraw: Annotated[
        bool, typer.Option("--redraw", help="Forget the kept assignment; draw every item afresh.")
    ] = False,
) -> None:
    """Add `split` (train/test/unseen) to audio and image rows and `split_group` to species;
    items already placed (OUT/manifests/assignment.parquet) keep their side unless --redraw."""
    from biovita_data.app.stages import run_split

    cfg = {"seed": seed, "test_fraction": test_fraction, "unseen_max_audio": unseen_max_audio,
           "previous": previous, "redraw": redraw}  # fmt: skip
    _stage(run_split, out, cfg, console)


@bench_app.callback(invoke_without_command=True)
def bench_cmd(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", help="Build directory.")] = None,
    candidates: Annotated[int, typer.Option(help="Candidate taxa per query.")] = BENCH.candidates,
    seed: Annotated[int, typer.Option(help="Seed of the query and candidate draw.")] = BENCH.seed,
    max_queries_per_taxon: Annotated[
        int, typer.Option(help="Query cap per taxon and task.")
    ] = BENCH.max_queries_per_taxon,
    max_queries_per_task: Annotated[
        int, typer.Option(help="Query cap per task (seeded).")
    ] = BENCH.max_queries_per_task,
) -> None:
    """Build BioVITA-Bench (seen, unseen; 6 directions x 3 levels) under OUT/bench/."""
    from biovita_data.app.stages import run_bench

    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise typer.BadParameter("Missing option '--out'.", param_hint="--out")

    cfg = {
        "candidates": candidates,
        "seed": seed,
        "max_queries_per_taxon": max_queries_per_taxon,
        "max_queries_per_task": max_queries_per_task,
    }
    _stage(run_bench, out, cfg, console)


@bench_app.command("export-media")
def bench_export_media(
    out: Annotated[Path, typer.Argument(help="Build directory with bench/ and media/.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to write the media files into.")],
) -> None:
    """Write every medium of the bench's id indexes at its file_path under --to.

    The bytes come from the media shards, so the original release's extract_features.py reads
    real audio and photos (segment 0 of a segmented recording).
    """
    from biovita_data.media.export import ExportResult, export_bench_media

    result = _stage(export_bench_media, out, to)
    assert isinstance(result, ExportResult)
    console.print(
        f"bench media: {result.files} files under {to} ({result.written} written, "
        f"{result.unchanged} unchanged, {result.bytes_written} bytes)"
    )
    if result.missing.height:
        for r in result.missing.head(10).iter_rows(named=True):
            console.print(f"  not in the media shards: {r['subset']} {r['modality']} id {r['id']} "
                          f"{r['source']} {r['record_id']} ({r['file_path']})")  # fmt: skip
        fail(f"{result.missing.height} indexed media are not in the media shards (listed above)")


@app.command("stats")
def stats_cmd(out: OutOption) -> None:
    """Print the corpus statistics and write OUT/stats.json."""
    from biovita_data.app.stages import run_stats

    _stage(run_stats, out, {}, cli_console())


@app.command("dedup")
def dedup_cmd(
    out: OutOption,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes for the near-copy search (default: cores; fewer when that many "
            "would not fit in the memory available)."
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local (processes on this machine) or ray (the near search's buckets as Ray "
            "tasks on any node)."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="A Ray cluster address (default: a local Ray).")
    ] = None,
) -> None:
    """Find copies of one recording or photo by content: OUT/manifests/duplicates.parquet;
    copies found: split again (a group is one unit) and the bench drawn again."""
    from biovita_data.app.stages import run_dedup

    cfg = {"workers": workers, "engine": engine, "ray_address": ray_address}
    _stage(run_dedup, out, cfg, cli_console())


@app.command("materialize")
def materialize_cmd(
    out: OutOption,
    engine: Annotated[
        str, typer.Option(help="local (this machine) or ray (Ray Data).")
    ] = MATERIALIZE.engine,
    ray_address: Annotated[
        str | None, typer.Option(help="A Ray cluster address (default: a local Ray).")
    ] = None,
    media_root: Annotated[
        str | None,
        typer.Option(
            help="Where workers write the shards: a (shared) folder or an fsspec URL such as "
            "s3://bucket/prefix (credentials and endpoint from AWS_* / the standard environment). "
            "Remembered in OUT/media/store.json. Default: OUT/media."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: cores).")] = None,
    image_size: Annotated[
        int, typer.Option(help="Short side of stored photos, at most.")
    ] = MATERIALIZE.image_size,
    segment_seconds: Annotated[
        float, typer.Option(help="Longer recordings are cut into segments of this length.")
    ] = MATERIALIZE.segment_seconds,
    shard_size: Annotated[
        int, typer.Option(help="Records per media shard.")
    ] = MATERIALIZE.shard_size,
    modality: Annotated[
        list[str] | None, typer.Option("--modality", help="audio and/or image (default both).")
    ] = None,
    download_threads: Annotated[
        int, typer.Option(help="Download threads per worker.")
    ] = MATERIALIZE.download_threads,
    jpeg_quality: Annotated[
        int, typer.Option(help="JPEG quality of stored photos.")
    ] = MATERIALIZE.jpeg_quality,
    fingerprints: Annotated[
        bool,
        typer.Option(
            help="Store each file's content fingerprint, made from the decode that verifies it "
            "(dedup then decodes nothing again). Toggling it never redoes a finished shard."
        ),
    ] = MATERIALIZE.fingerprints,
    no_throttle: NoThrottleOption = False,
    max_failed: MaxFailedOption = DEFAULT_MAX_FAILED,
) -> None:
    """Download, verify, hash and store every selected recording and photo in OUT/media/."""
    from biovita_data.app.stages import run_materialize

    cfg = {
        "engine": engine,
        "ray_address": ray_address,
        "media_root": media_root,
        "workers": workers,
        "image_size": image_size,
        "segment_seconds": segment_seconds,
        "shard_size": shard_size,
        "modalities": tuple(modality or ("audio", "image")),
        "download_threads": download_threads,
        "jpeg_quality": jpeg_quality,
        "fingerprints": fingerprints,
        "throttle": not no_throttle,
        "max_failed": max_failed,
    }
    _stage(run_materialize, out, cfg, console)


@app.command("publish")
def publish_cmd(
    out: OutOption,
    repo_id: Annotated[str, typer.Option("--repo-id", help="NAMESPACE/NAME on the Hub.")],
    media: Annotated[
        str, typer.Option(help="embed (bytes in the Parquet) or urls (metadata + media URLs).")
    ] = PUBLISH.media,
    folder_only: Annotated[
        bool, typer.Option("--folder-only", help="Write OUT/hf only; upload nothing.")
    ] = False,
    git_remote: Annotated[
        str | None, typer.Option(help="Commit and push to this git remote instead of the Hub.")
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the Hub repo as a private one.")
    ] = False,
    max_shard_mb: Annotated[
        int, typer.Option(help="Target Parquet shard size in MB (row groups of a few MB).")
    ] = PUBLISH.max_shard_mb,
    pretty_name: Annotated[str | None, typer.Option(help="The card's title.")] = None,
    large_upload: Annotated[
        bool | None,
        typer.Option(
            "--large-upload/--single-upload",
            help="HfApi.upload_large_folder (resumable, many commits) or upload_folder; default: "
            "large from 2 GB. Re-run the same command to resume an interrupted upload.",
        ),
    ] = None,
    tag: Annotated[
        str | None,
        typer.Option(
            help="Publish a release: tag the pushed commit (e.g. v2026.12), write the "
            "card's changelog against the previous release, keep it in OUT/releases."
        ),
    ] = None,
    previous_release: Annotated[
        Path | None,
        typer.Option(
            help="The release the changelog is diffed against (an older build folder or "
            "OUT/releases/TAG; default: the last tag published from OUT)."
        ),
    ] = None,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty", help="Publish even when a config (audio, image, ...) has 0 rows."
        ),
    ] = False,
) -> None:
    """Write the Hugging Face dataset folder OUT/hf (card, plots, Parquet) and upload it."""
    from biovita_data.publish import PublishError, publish

    if not (out / "manifests").is_dir():
        fail(f"{out}: no build here (no manifests/): run the build stages first")
    try:
        publish(
            out,
            repo_id,
            media=media,
            folder_only=folder_only,
            git_remote=None if folder_only else git_remote,
            private=private,
            max_shard_bytes=max_shard_mb * 2**20,
            pretty_name=pretty_name,
            large_upload=large_upload,
            tag=tag,
            previous_release=previous_release,
            console=console,
            allow_empty=allow_empty,
        )
    except (PublishError, OSError, ValueError) as exc:
        fail(exc)


@app.command()
def update(
    out: Annotated[Path, typer.Argument(help="A build directory crawled by fetch (or run).")],
    exclude: Annotated[
        Path | None,
        typer.Option(help="Takedown list: one record id a line (source:id), `# reason`."),
    ] = None,
    no_crawl: Annotated[
        bool, typer.Option("--no-crawl", help="Only apply the takedown list; ask no service.")
    ] = False,
    relist: Annotated[
        bool,
        typer.Option("--relist", help="List every query again in full (finds any licence change)."),
    ] = False,
    no_throttle: NoThrottleOption = False,
    max_failed: MaxFailedOption = DEFAULT_MAX_FAILED,
) -> None:
    """Fetch only what changed since OUT's last crawl and merge it into OUT/raw: new, changed and
    withdrawn records; removed ones go to OUT/raw/removed.parquet. Then rerun the stages."""
    from biovita_data.core.budget import EXIT_OVER_BUDGET, BudgetExceeded
    from biovita_data.crawl.fetch import settings_from_env
    from biovita_data.crawl.http import FetchError
    from biovita_data.crawl.sources.xeno_canto import MissingKey
    from biovita_data.crawl.update import UpdateError, crawl_record
    from biovita_data.crawl.update import update as run_update

    _budget_option(max_failed)
    try:
        stored = crawl_record(out)["settings"]
        settings = settings_from_env(
            **{k: v for k, v in stored.items() if k != "max_records"}, throttle=not no_throttle
        )
        run_update(
            out,
            exclude=exclude,
            console=console,
            settings=settings,
            crawl=not no_crawl,
            relist=relist,
            max_failed=max_failed,
        )
    except (UpdateError, MissingKey) as exc:
        fail(exc)
    except BudgetExceeded as exc:  # what was merged stays in OUT/raw
        error_line(exc)
        raise typer.Exit(EXIT_OVER_BUDGET) from None
    except FetchError as exc:
        fail(f"{exc} (OUT/raw is as before this source; run the same command to resume)")


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline TOML file.")],
    out: Annotated[Path | None, typer.Option(help="Override the pipeline's build dir.")] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Update OUT's crawl (`update`) instead of fetching.")
    ] = False,
) -> None:
    """Run a pipeline file's stages in order; a \\[sample] section serves the sample world."""
    from biovita_data.app.pipeline import load_pipeline, run_pipeline

    try:
        p = load_pipeline(pipeline)
    except (OSError, ValueError) as exc:
        fail(exc)
    _stage(lambda: run_pipeline(p, out or p.out, console, update=update))


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where to build.")] = Path("biovita-demo"),
    size: Annotated[str, typer.Option(help="Sample world size: tiny | default.")] = "default",
    seed: Annotated[int, typer.Option(help="Sample world seed.")] = 0,
    train: Annotated[
        str,
        typer.Option(
            help="Model trained and evaluated at the end: demo (the README's figures, ~7 min "
            "of training), acceptance (longer stages, ~9.5 min) or none."
        ),
    ] = "demo",
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="After a demo in WORKDIR: its world one epoch later, `update`, rebuild, and "
            "the `release diff` against the build before.",
        ),
    ] = False,
    duplicates: Annotated[
        bool,
        typer.Option(
            "--duplicates",
            help="Plant known audio copies in the sample world (re-encoded, trimmed, gain, "
            "resampled; exact ones in the other lossless container) and near-miss negatives, "
            "for `dedup` to find.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline that exists, end to end, on the sample world (served in-process)."""
    from biovita_data.app.demo import run_demo, run_update_demo

    try:
        if update:
            run_update_demo(workdir, console=console, results=cli_console())
            return
        run_demo(workdir, size=size, seed=seed, train=train, duplicates=duplicates,
                 console=console, results=cli_console())  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        fail(exc)


@release_app.command("diff")
def release_diff_cmd(
    old: Annotated[Path, typer.Argument(help="The earlier build folder (or OUT/releases/TAG).")],
    new: Annotated[Path, typer.Argument(help="The later build folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
) -> None:
    """Records added / removed (by reason) / changed, items that moved split, trait values
    changed: per species and in total."""
    from biovita_data.curate.release import ReleaseError, diff, print_diff

    try:
        result = diff(old, new)
    except (ReleaseError, OSError) as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        print_diff(result, cli_console())


@app.command("hub")
def hub_cmd(
    root: Annotated[Path, typer.Option(help="Hub root: ROOT/mirrors/datasets/NS/NAME (bare git).")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
    init: Annotated[
        str | None, typer.Option(help="Create the bare repo of this NS/NAME and print its URL.")
    ] = None,
) -> None:
    """Serve published git repos as a local Hugging Face Hub (olah, offline) for HF_ENDPOINT."""
    from biovita_data.publish import localhub

    if init is not None:
        typer.echo(f"--git-remote {localhub.init_repo(root, init)}")
        return

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM: leave through `serve`'s cleanup, stopping olah

    signal.signal(signal.SIGTERM, _stop)
    try:
        with localhub.serve(root, port=port or None) as endpoint:
            typer.echo(f"HF_ENDPOINT={endpoint}  (Ctrl-C stops)")
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except localhub.HubError as exc:
        fail(exc)


@sample_app.command("serve")
def sample_serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 0,
    size: Annotated[str, typer.Option(help="tiny | default")] = "default",
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
    faults: Annotated[str, typer.Option(help="none | light | heavy")] = "none",
    gbif_max_offset: Annotated[
        int, typer.Option(help="GBIF's offset + limit cap (lower it to see queries split).")
    ] = 100_000,
    epoch: Annotated[
        int, typer.Option(min=0, help="The world N epochs (30 days each) later: 0 is today's.")
    ] = 0,
    duplicates: Annotated[
        bool,
        typer.Option(help="Plant copies (re-encoded, trimmed, resampled) and near misses."),
    ] = False,
    output_format: Annotated[
        str,
        typer.Option("--format", help="env: `export VAR=...` lines to paste; json: one JSON line."),
    ] = "env",
) -> None:
    """Serve the sample world like Xeno-canto v3, iNaturalist v1, Open Data and GBIF v1; print
    the variables to export."""
    import shlex

    from biovita_data.sample.server import SampleServer
    from biovita_data.sample.world import World

    if output_format not in ("env", "json"):
        fail(f"--format {output_format!r}: use env or json")
    try:
        server = SampleServer(
            World(size, seed, epoch, duplicates=duplicates),
            host=host,
            port=port,
            faults=faults,
            gbif_max_offset=gbif_max_offset,
        )
    except ValueError as exc:
        fail(exc)
    info = server.environment
    if gbif_max_offset != 100_000:
        info["GBIF_MAX_OFFSET"] = str(gbif_max_offset)
    if output_format == "json":
        typer.echo(json.dumps(info), color=False)
    else:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in info.items()]
        typer.echo("\n".join([*lines, "# serving; Ctrl-C stops"]), color=False)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@sample_app.command("export-official")
def sample_export_official(
    path: Annotated[Path, typer.Argument(help="CSV file to write.")],
    root: Annotated[str, typer.Option(help="Base URL of a running `sample serve`.")],
    size: Annotated[str, typer.Option(help="tiny | default")] = "default",
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
) -> None:
    """Write the sample world's recordings as the original release's metadata table."""
    from biovita_data.sample.release_table import write_official_metadata
    from biovita_data.sample.world import World

    write_official_metadata(World(size, seed), root.rstrip("/"), path)
    typer.echo(str(path))


@sample_app.command("export-tol")
def sample_export_tol(
    directory: Annotated[Path, typer.Argument(help="Folder for catalog.parquet + provenance.")],
    root: Annotated[str, typer.Option(help="Base URL of a running `sample serve`.")],
    size: Annotated[str, typer.Option(help="tiny | default")] = "default",
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
) -> None:
    """Write the sample world's TreeOfLife-200M view (catalog + provenance, the real columns)."""
    from biovita_data.sample.treeoflife import write_tol_view
    from biovita_data.sample.world import World

    for path in write_tol_view(World(size, seed), root.rstrip("/"), directory):
        typer.echo(str(path))


@sample_app.command("export-dwca")
def sample_export_dwca(
    path: Annotated[Path, typer.Argument(help="Zip file to write.")],
    root: Annotated[str, typer.Option(help="Base URL of a running `sample serve`.")],
    size: Annotated[str, typer.Option(help="tiny | default")] = "default",
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
) -> None:
    """Write the sample world's GBIF occurrences as a Darwin Core Archive download."""
    from biovita_data.sample.gbif import export_dwca
    from biovita_data.sample.world import World

    counts = export_dwca(World(size, seed), root.rstrip("/"), path)
    typer.echo(f"{path}\t{counts['occurrences']} occurrences\t{counts['media']} media")


@sample_app.command("export-traits")
def sample_export_traits(
    directory: Annotated[Path, typer.Argument(help="Folder to write the trait tables into.")],
    size: Annotated[str, typer.Option(help="tiny | default")] = "default",
    seed: Annotated[int, typer.Option(help="World seed.")] = 0,
) -> None:
    """Write the sample world's trait tables (AVONET, EltonTraits, AmphiBIO, CSV formats)."""
    from biovita_data.sample.taxonomy import generate_taxonomy
    from biovita_data.sample.trait_tables import export_trait_tables

    paths = export_trait_tables(generate_taxonomy(size, seed), directory)
    for name, path in paths.items():
        typer.echo(f"{name}\t{path}")


if __name__ == "__main__":
    app()

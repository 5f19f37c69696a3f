"""`publish`: OUT -> OUT/hf (a plain-Parquet Hugging Face dataset folder) -> Hub or git remote."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from biovita_data.core import layout
from biovita_data.core.progress import LogProgress
from biovita_data.curate.bench.csv_layout import bench_json_path, tasks_parquet_path
from biovita_data.curate.duplicates import withheld_copies
from biovita_data.publish.card import CardInputs, write_card
from biovita_data.publish.configs import (
    ConfigResult,
    MediaResult,
    load_species,
    write_bench,
    write_media_embed,
    write_media_urls,
    write_species,
)
from biovita_data.publish.croissant import croissant_inputs, write_croissant
from biovita_data.publish.features import BENCH_SPLIT_OF_SUBSET, CONFIGS
from biovita_data.publish.upload import (
    PublishError,
    check_repo_id,
    check_tag,
    hub_token,
    push_to_git,
    redact,
    upload_to_hub,
    write_gitattributes,
)

MEDIA_MODES = ("embed", "urls")
DEFAULT_MAX_SHARD_BYTES = 500 * 2**20


@dataclass(frozen=True)
class PublishResult:
    """What publish wrote and where it went."""

    folder: Path
    repo_id: str
    media: str
    rows: dict[str, dict[str, int]]  # config -> split -> rows
    files: dict[str, dict[str, list[str]]]  # config -> split -> shard paths in the folder
    license: str  # the card's licence
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # modality -> reason -> n
    target: str | None = None  # the commit URL, or the git remote (credentials redacted)
    commit: str | None = None  # the git commit pushed
    tag: str | None = None  # the release tag created on the repo (--tag)
    previous_release: str | None = None  # the release its changelog is diffed against


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def build_folder(
    out: Path,
    folder: Path,
    repo_id: str,
    *,
    media: str = "embed",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    pretty_name: str | None = None,
    changelog: str | None = None,
    progress: LogProgress | None = None,
) -> tuple[dict[str, ConfigResult], str]:
    """Write every config, the card (with `changelog`), its figures and croissant.json into
    `folder` (which must be empty)."""
    species = load_species(out)
    names = species["scientific_name"].to_list()
    results: dict[str, ConfigResult] = {}
    writer = write_media_embed if media == "embed" else write_media_urls
    for modality in ("audio", "image"):
        if media == "embed":
            results[modality] = writer(
                out, folder, modality, species, names, max_shard_bytes, progress
            )
        else:
            results[modality] = writer(out, folder, modality, species, names, max_shard_bytes)
    results["species"] = write_species(folder, species, names, max_shard_bytes)
    results["bench"] = write_bench(out, folder, max_shard_bytes)
    bench_tasks = {
        split: pl.read_parquet(
            tasks_parquet_path(layout.bench_dir(out, subset)), columns=["task", "taxon_level"]
        )
        for subset, split in BENCH_SPLIT_OF_SUBSET.items()
    }
    bench_settings = {
        split: _read_json(bench_json_path(layout.bench_dir(out, subset))) or {}
        for subset, split in BENCH_SPLIT_OF_SUBSET.items()
    }
    build = _read_json(out / "build.json") or {}
    stats = _read_json(out / "stats.json")
    for name in ("build.json", "stats.json"):
        if (out / name).exists():
            shutil.copyfile(out / name, folder / name)
    records = {m: r.records for m, r in results.items() if isinstance(r, MediaResult)}
    inputs = CardInputs(
        repo_id, media, species, records, results, bench_tasks, bench_settings, build, stats,
        changelog,
    )  # fmt: skip
    inputs.copies = withheld_copies(out)
    cited = _read_json(layout.gbif_citations_path(out)) or {}
    inputs.gbif_downloads = list(cited.get("downloads", []))  # DOIs of imported downloads
    license_code = write_card(folder, inputs, pretty_name or repo_id.split("/", 1)[1])
    write_croissant(folder, out, croissant_inputs(repo_id, license_code, pretty_name, build))
    write_gitattributes(folder)
    return results, license_code


# The stage to rerun when a config came out empty.
_RERUN = {
    "audio": "materialize (OUT/manifests/failures.parquet says why no recording was kept)",
    "image": "materialize (OUT/manifests/failures.parquet says why no photo was kept)",
    "species": "align",
    "bench": "split, then bench",
}


def refuse_empty(results: dict, media: str) -> None:
    """PublishError naming the first config with no rows and the step to rerun."""
    for config in CONFIGS:
        if config in results and not sum(results[config].rows.values()):
            step = _RERUN.get(config, "the build stages")
            if media == "urls" and config in ("audio", "image"):
                step = "align (the manifest has no records)"
            raise PublishError(
                f"publish: config {config!r} has 0 rows: rerun {step}; "
                "--allow-empty publishes it anyway"
            )


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace `target` with `tmp` (old content moved aside first, then removed); an upload's
    resume state (`.cache/huggingface`) moves over, so an interrupted upload resumes."""
    old = target.with_name(f".{target.name}.old")
    cache = target / ".cache" / "huggingface"
    if cache.is_dir():
        (tmp / ".cache").mkdir(exist_ok=True)
        cache.rename(tmp / ".cache" / "huggingface")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    if old.exists():
        shutil.rmtree(old)


def publish(
    out: Path,
    repo_id: str,
    *,
    media: str = "embed",
    folder_only: bool = False,
    git_remote: str | None = None,
    private: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    pretty_name: str | None = None,
    large_upload: bool | None = None,
    tag: str | None = None,
    previous_release: Path | None = None,
    console: Console | None = None,
    allow_empty: bool = False,
) -> PublishResult:
    """Write OUT/hf (configs audio, image, species, bench + card), then upload it unless
    `folder_only`: to `git_remote` when given, else to the Hub (HF_TOKEN, HF_ENDPOINT). With
    `tag`, a release: the card's changelog is the diff against the previous release
    (`previous_release`, else the last tag kept in OUT/releases), build.json names both, the
    pushed commit is tagged, and OUT/releases/<tag>/ keeps this release's manifests."""
    from biovita_data.curate.release import prepare_release, snapshot_release

    console = console or Console(stderr=True, quiet=True)
    check_repo_id(repo_id)
    if tag is not None:
        check_tag(tag)
    if media not in MEDIA_MODES:
        raise ValueError(f"media must be one of {MEDIA_MODES}, not {media!r}")
    if not folder_only and git_remote is None:
        hub_token()  # fail before hours of work, not after
    out = Path(out)
    hf = layout.hf_dir(out)
    tmp = hf.with_name(f".{hf.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    release = prepare_release(out, tag, previous_release) if tag is not None else None
    try:
        # the media rows: a bar on a terminal, a plain line every 5 % or 30 s in a log
        with LogProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeRemainingColumn(), console=console, transient=True, unit="rows",
        ) as progress:  # fmt: skip
            results, license_code = build_folder(
                out,
                tmp,
                repo_id,
                media=media,
                max_shard_bytes=max_shard_bytes,
                pretty_name=pretty_name,
                changelog=release.changelog if release else None,
                progress=progress,
            )
        if not allow_empty:  # a config with 0 rows: refused, OUT/hf left as it was
            refuse_empty(results, media)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp, hf)
    rows = {c: results[c].rows for c in CONFIGS}
    for config in CONFIGS:
        console.print(f"{config}: " + ", ".join(f"{s} {n:,}" for s, n in rows[config].items()))
    console.print(f"wrote {hf} (licence {license_code})")
    target = commit = None
    message = f"Publish {repo_id} (biovita-data publish, media={media})"
    if not folder_only:
        if git_remote is not None:
            snapshot = (_read_json(out / "build.json") or {}).get("snapshot")
            commit = push_to_git(hf, git_remote, message=message, date=snapshot, tag=tag)
            target = redact(git_remote)
            console.print(f"pushed {commit[:12]} to {target}")
        else:
            target = upload_to_hub(
                hf, repo_id, private=private, message=message, large=large_upload, tag=tag
            )
            console.print(f"uploaded to {target}")
        if tag is not None:
            console.print(f"tagged {tag}: load_dataset({repo_id!r}, revision={tag!r})")
    if tag is not None:
        kept = snapshot_release(out, tag)
        console.print(f"release {tag} kept in {kept} (the next release's changelog base)")
    return PublishResult(
        folder=hf,
        repo_id=repo_id,
        media=media,
        rows=rows,
        files={c: results[c].files for c in CONFIGS},
        license=license_code,
        skipped={m: r.skipped for m, r in results.items() if isinstance(r, MediaResult)},
        target=target,
        commit=commit,
        tag=tag,
        previous_release=release.previous if release else None,
    )

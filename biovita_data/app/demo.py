"""`biovita-data demo`: the whole pipeline that exists, on the sample world, in one command."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from biovita_data import __version__
from biovita_data.app.pipeline import sample_environment, sample_release_tables, sample_tol_view
from biovita_data.app.stages import (
    BUILD_STAGES,
    RELEASE_STAGES,
    dropped_words,
    run_build,
    run_tol,
)
from biovita_data.core import layout
from biovita_data.core.tables import write_json_atomic
from biovita_data.crawl.fetch import SOURCES, FetchSettings, fetch, settings_from_env
from biovita_data.crawl.sources.treeoflife import excluded_images
from biovita_data.publish import CONFIGS, SPLITS, localhub

TAXA = ["Aves", "Amphibia", "Mammalia", "Insecta"]
BUILD_OUTPUTS = {
    "align": "manifests/{species,audio,image,unmatched}.parquet",
    "traits": "species.parquet trait_* + manifests/traits_coverage.json; tables downloaded "
    "from BIOVITA_TRAITS_URL into raw/traits (sha256 in releases.json)",
    "split": "split on audio/image, split_group on species",
    "bench": "bench/{seen,unseen}/ (Parquet + official CSV)",
    "stats": "stats.json",
    "materialize": "media/{audio,image}/shard-*.parquet + index.parquet",
    "dedup": "manifests/duplicates.parquet (copies by content; split again when found)",
    "publish": "hf/ (dataset card, configs audio/image/species/bench)",
}
DEMO_REPO_ID = "biovita/sample"
TRAIN_PRESETS = ("demo", "acceptance", "none")


# FFmpeg's shared libraries torchcodec loads (the `datasets` Audio decoder of `load_dataset`).
FFMPEG_LIBRARIES = ("avutil", "avcodec", "avformat", "avfilter", "avdevice", "swresample",
                    "swscale")  # fmt: skip


def check_ffmpeg_libraries() -> None:
    """Fail before the build when FFmpeg's shared libraries are missing, saying what to install."""
    import ctypes.util

    missing = [f"lib{n}" for n in FFMPEG_LIBRARIES if ctypes.util.find_library(n) is None]
    if missing:
        raise RuntimeError(
            f"FFmpeg's shared libraries are missing ({', '.join(missing)}): torchcodec needs them "
            "to decode audio when the dataset is loaded back. Install FFmpeg 4-7 with its "
            "libraries (Debian/Ubuntu: sudo apt-get install ffmpeg; Fedora: sudo dnf install "
            "ffmpeg-free; macOS: brew install ffmpeg; conda: conda install -c conda-forge "
            "'ffmpeg<8'), then run the demo again"
        )


def run_demo(
    workdir: Path,
    *,
    size: str = "default",
    seed: int = 0,
    train: str = "demo",
    duplicates: bool = False,
    console: Console,
    results: Console | None = None,
) -> dict:
    """Serve the sample world, crawl every source (the audio of Xeno-canto, iNaturalist and GBIF
    where this build has it), draw the images from its TreeOfLife-200M view as the paper did,
    build manifests, traits (the public tables downloaded from the sample server), splits, bench
    and stats, materialize and publish into a local hub, load it back by repo id, then train a
    tiny model (`train`: a `biovita-model train-tiny` preset, or "none") and evaluate it. With
    `duplicates` the world holds planted audio copies for `dedup` to find. Progress goes to
    `console`; the closing table and next steps to `results` (default: it)."""
    if train not in TRAIN_PRESETS:
        raise ValueError(f"--train must be one of {TRAIN_PRESETS}, not {train!r}")
    t0 = time.monotonic()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    hub = workdir / "hub"
    use_hub = localhub.available()
    if use_hub:  # loading back decodes audio through torchcodec: FFmpeg checked before the build
        check_ffmpeg_libraries()
    if not use_hub:
        console.print("[yellow]olah is not installed: the dataset is published as a folder only "
                      "and not loaded back by repo id (./biovita setup demo, or pip install -e "
                      "'.\\[demo]')[/yellow]")  # fmt: skip
    stages: dict[str, dict] = {}
    with ExitStack() as stack:
        env = sample_environment(stack, size, seed, "none", duplicates=duplicates)
        root = env["XENO_CANTO_API_URL"].rsplit("/xeno", 1)[0]
        planted = ", planted copies" if duplicates else ""
        console.print(f"[bold]sample world[/bold] ({size}, seed {seed}{planted}) served at {root}")
        # `--source all`: every source this build knows, GBIF included where it exists
        settings = settings_from_env(taxa=TAXA, sources=list(SOURCES), throttle=False)
        t = time.monotonic()
        fetched = fetch(settings, workdir, console=console)
        stages["fetch"] = {
            "seconds": round(time.monotonic() - t, 2),
            "records": {r.source: r.kept for r in fetched},
            "dropped": {r.source: r.dropped for r in fetched},
        }
        t = time.monotonic()
        tol = run_tol(workdir, tol_settings(workdir, size, seed, root), console)
        stages["tol"] = {
            "seconds": round(time.monotonic() - t, 2),
            "records": tol.kept,
            "dropped": tol.dropped,
        }
        publish = {"repo_id": DEMO_REPO_ID, "folder_only": True}
        if use_hub:
            publish = {"repo_id": DEMO_REPO_ID, "git_remote": localhub.init_repo(hub, DEMO_REPO_ID)}
        sections = world_sections(workdir, size, seed, publish)
        # the record so far, for the dataset card publish writes; completed at the end
        record = build_record(size, seed, settings, stages, t0, duplicates)
        write_json_atomic(record, workdir / "build.json")
        stages.update(run_build(workdir, sections, console, stages=BUILD_STAGES + RELEASE_STAGES))
    if use_hub:
        stages["load"] = load_back(workdir, hub, console)
    if train != "none":
        stages["train"] = train_model(workdir, train, seed, console)
    build = build_record(size, seed, settings, stages, t0, duplicates)
    write_json_atomic(build, workdir / "build.json")
    table = Table(title=f"biovita-data demo -> {workdir}")
    table.add_column("stage")
    table.add_column("wrote")
    table.add_column("result")
    moved = excluded_images(workdir)
    for src in stages["fetch"]["records"]:
        dropped = sum(stages["fetch"]["dropped"][src].values())
        path = layout.raw_records_path(workdir, src)
        kept = pl.read_parquet(path, columns=["modality"])["modality"].value_counts(sort=True)
        now = ", ".join(f"{n} {m}" for m, n in kept.iter_rows()) or "nothing"
        if moved.get(src):
            now += f" ({moved[src]} photos moved to failures: not the image source)"
        table.add_row("fetch", str(path.relative_to(workdir)), f"kept {now}; {dropped} dropped")
    tol_dropped = dropped_words(stages["tol"]["dropped"])
    table.add_row(
        "import-tol",
        "raw/treeoflife_200m/records.parquet",
        f"{stages['tol']['records']} images drawn (up to 200 per species){tol_dropped}; "
        "the only image source",
    )
    table.add_row("fetch", "manifests/failures.parquet", "every dropped record with its reason")
    for stage, wrote in BUILD_OUTPUTS.items():
        if stage in stages:
            table.add_row(stage, wrote, stages[stage]["result"])
    if "load" in stages:
        table.add_row("load", "hub/mirrors (git, served by olah)", stages["load"]["result"])
    if "train" in stages:
        table.add_row("train", "runs/{towers,stage1,stage2}", stages["train"]["result"])
    table.add_row("build", "build.json", f"{build['seconds']} s in all")
    results = results or console
    results.print(table)
    print_next_steps(workdir, hub, use_hub, results)
    return build


def run_update_demo(workdir: Path, *, console: Console, results: Console | None = None) -> dict:
    """`demo --update`: the world of the demo in `workdir` one epoch (30 days) later: fetch only
    what changed (`update`), rebuild align .. publish (folder), print `release diff` against the
    build before. The build before keeps its manifests and bench rows in WORKDIR/previous/."""
    import shutil

    from biovita_data.crawl.update import update
    from biovita_data.curate.release import diff, keep_for_diff, print_diff

    workdir = workdir.resolve()
    record = workdir / "build.json"
    if not record.is_file() or not layout.crawl_record_path(workdir).is_file():
        raise ValueError(f"{workdir} holds no demo build: run `biovita-data demo` first")
    build = json.loads(record.read_text())
    world = build.get("world") or {}
    size, seed = world.get("size", "default"), int(world.get("seed", 0))
    epoch = int(world.get("epoch", 0)) + 1
    duplicates = bool(world.get("duplicates", False))
    previous = workdir / "previous"
    shutil.rmtree(previous, ignore_errors=True)
    keep_for_diff(workdir, previous)
    t0 = time.monotonic()
    stages: dict[str, dict] = {}
    with ExitStack() as stack:
        env = sample_environment(stack, size, seed, "none", epoch, duplicates)
        root = env["XENO_CANTO_API_URL"].rsplit("/xeno", 1)[0]
        planted = ", planted copies" if duplicates else ""
        console.print(f"[bold]sample world[/bold] ({size}, seed {seed}{planted}) at epoch {epoch}")
        t = time.monotonic()
        summary = update(workdir, console=console)
        stages["update"] = {
            "seconds": round(time.monotonic() - t, 2),
            "requests": summary["requests"],
        }
        # the TreeOfLife-200M view again (a fixed release): still the only image source
        run_tol(workdir, tol_settings(workdir, size, seed, root), console)
        publish = {"repo_id": DEMO_REPO_ID, "folder_only": True}
        sections = world_sections(workdir, size, seed, publish)
        stages.update(run_build(workdir, sections, console, stages=BUILD_STAGES + RELEASE_STAGES))
    build["world"] = {**world, "epoch": epoch}
    build["stages"] = {**build.get("stages", {}), **stages}
    write_json_atomic(build, record)
    result = diff(previous, workdir)
    results = results or console
    print_diff(result, results)
    results.print(
        f"update to epoch {epoch}: {summary['requests']} requests, rebuilt in "
        f"{time.monotonic() - t0:.0f} s; the build before: {previous}"
    )
    return result


def tol_settings(out: Path, size: str, seed: int, root: str) -> dict:
    """[tol] of the sample world: its TreeOfLife-200M view, 200 images per species of the demo's
    taxa, the only image source (the crawled photos become failures), as in the paper."""
    view = sample_tol_view(size, seed, root, out)
    return {**view, "taxa": TAXA, "per_species": 200, "seed": seed, "exclusive": True}


def build_record(
    size: str, seed: int, settings: FetchSettings, stages: dict, t0: float, duplicates: bool
) -> dict:
    """build.json: what was built from which sample world, by which tool, stage by stage."""
    return {
        "tool": f"biovita {__version__}",
        "python": platform.python_version(),
        "world": {"size": size, "seed": seed, "duplicates": duplicates},
        "sources": [*settings.sources, "treeoflife-200m"],
        "taxa": TAXA,
        "snapshot": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "stages": stages,
        "seconds": round(time.monotonic() - t0, 2),
    }


def world_sections(out: Path, size: str, seed: int, publish: dict) -> dict[str, dict]:
    """The build settings (align .. publish) of the sample world after its crawl into `out`."""
    return {
        "align": {"backbone": "inat", "throttle": False, "max_images_per_species": 200},
        "traits": {"tables": sample_release_tables(size, seed, out)},
        "split": {"seed": seed},
        "bench": {"seed": seed},
        "materialize": {"throttle": False},  # also draws the bench again from stored media
        "publish": publish,
    }


def published_rows(hf: Path) -> dict[str, dict[str, int]]:
    """Rows per config and split, read from the published folder's Parquet footers."""
    import pyarrow.parquet as pq

    rows: dict[str, dict[str, int]] = {config: {} for config in CONFIGS}
    for config, splits in SPLITS.items():
        for split in splits:
            shards = sorted((hf / config).glob(f"{split}-*.parquet"))
            if shards:
                rows[config][split] = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    return rows


def load_back(workdir: Path, hub: Path, console: Console) -> dict:
    """Serve the pushed repo on loopback and `load_dataset` every config by repo id."""
    t = time.monotonic()
    console.rule(f"load_dataset({DEMO_REPO_ID!r}) through a local hub")
    with localhub.serve(hub, wait_repo=DEMO_REPO_ID) as endpoint:
        got = localhub.load_counts(
            DEMO_REPO_ID, endpoint, hub / "hf_home", CONFIGS, dict(os.environ)
        )
    want = published_rows(workdir / "hf")
    loaded = {c: {s: e["rows"] for s, e in splits.items()} for c, splits in got.items()}
    if loaded != want:
        raise RuntimeError(f"loaded by repo id {loaded}, but the folder holds {want}")
    table = Table(title=f"load_dataset({DEMO_REPO_ID!r}, config) via {endpoint}")
    for name in ("config", "split", "rows", "first item decoded"):
        table.add_column(name)
    for config, splits in got.items():
        for split, entry in splits.items():
            first = entry.get("first")
            shown = "-" if first is None else ("x".join(map(str, first)) if config == "image"
                                               else f"{first} samples")  # fmt: skip
            table.add_row(config, split, f"{entry['rows']:,}", shown)
    console.print(table)
    total = sum(sum(s.values()) for s in loaded.values())
    return {
        "seconds": round(time.monotonic() - t, 2),
        "rows": loaded,
        "result": f"{total:,} rows in {len(loaded)} configs loaded by repo id, equal to hf/",
    }


def train_model(workdir: Path, preset: str, seed: int, console: Console) -> dict:
    """`biovita-model train-tiny` in its own process (biovita_data never imports the model)."""
    missing = [m for m in ("torch", "open_clip", "transformers") if not importlib.util.find_spec(m)]
    if missing:
        console.print(f"[yellow]skipping training: {', '.join(missing)} not installed "
                      "(./biovita setup demo, or pip install -e '.\\[demo]')[/yellow]")  # fmt: skip
        return {"result": f"skipped ({', '.join(missing)} not installed)"}
    t = time.monotonic()
    console.rule(f"biovita-model train-tiny --preset {preset}")
    cmd = [sys.executable, "-m", "biovita_model.cli", "train-tiny", "--dataset",
           str(workdir / "hf"), "--runs", str(workdir / "runs"), "--bench",
           str(workdir / "bench"), "--preset", preset, "--seed", str(seed)]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"biovita-model train-tiny failed (exit {proc.returncode})")
    report = json.loads((workdir / "runs" / "stage2" / "eval.json").read_text())
    seen = {d: report["results"].get(f"seen/species/{d}", {}).get("top1") for d in ("A2I", "A2T")}
    shown = ", ".join(f"{d} {100 * v:.0f} %" for d, v in seen.items() if v is not None)
    return {
        "seconds": round(time.monotonic() - t, 2),
        "preset": preset,
        "result": f"stage 1 + 2 trained ({preset} preset); stage 2 seen species Top-1 {shown}",
    }


def print_next_steps(workdir: Path, hub: Path, use_hub: bool, console: Console) -> None:
    """What a user types next: load the dataset (by path and by repo id), evaluate a run."""
    lines = [
        "# load the published dataset by path",
        "from datasets import load_dataset",
        f'audio = load_dataset("{workdir / "hf"}", "audio", split="train")',
    ]
    if use_hub:
        lines += [
            "",
            "# or by repo id: serve the local hub in one shell ...",
            f"#   biovita-data hub --root {hub} --port 8090",
            "# ... and in another: HF_ENDPOINT=http://127.0.0.1:8090 python",
            f'audio = load_dataset("{DEMO_REPO_ID}", "audio", split="train")',
        ]
    if (workdir / "runs" / "stage2" / "model.pt").is_file():
        lines += [
            "",
            "# evaluate the trained tiny model again, or embed the dataset",
            f"#   biovita-model eval --run {workdir / 'runs' / 'stage2'}"
            f" --bench {workdir / 'bench'}",
            f"#   biovita-model embed --run {workdir / 'runs' / 'stage2'}"
            f" --dataset {workdir / 'hf'} --modality audio --out {workdir / 'audio_emb.parquet'}",
        ]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)

"""Training-loader throughput: biovita_data.loader vs the plain `datasets` Audio decode path.

A synthetic published folder (the publish contract: audio/train-*.parquet with {bytes, path}
structs written with publish's options: media bytes stored plainly, one recording per audio row
group; image/, species/) holds recordings at 44.1 kHz, 20 %
stereo, tones plus noise so the codecs work as on real sound. --durations picks their lengths:

- reference (default): lengths drawn (seeded) from 501 real Xeno-canto recordings
  (benchmarks/data/xc_durations.json: mean 49 s, median 28 s, p90 106 s, max 617 s), cut as
  `biovita-data materialize` cuts them (default --segment-seconds 60: a longer recording becomes
  ceil(s / 60) equal FLAC segments, each a row); shorter recordings are half MP3 (CBR, about
  160 kbit/s), half FLAC. 1000 recordings by default (about 1400 rows of 35 s on average);
- fixed:S: S x U(0.6, 1.4) seconds, half MP3, half FLAC, no segment (fixed:25, 2000 recordings:
  the workload of earlier versions of this benchmark).

Both loaders read the same Parquet shards through a torch DataLoader with the same workers, in the
same (shuffled) order, and yield a random 10 s crop at 48 kHz mono:

- loader: BioVITADataset (reads only the row's bytes from the shard, soundfile decodes only the
  crop's frames, soxr resamples the crop);
- datasets: load_dataset("parquet", data_files=...) + cast_column("audio", Audio(sampling_rate=
  48000)); each item decodes the whole file through torchcodec (FFmpeg), resampled to 48 kHz, then
  crops.

    python3 benchmarks/loader.py [--durations reference|fixed:25|reference,fixed:25]
        [--recordings N] [--workers 2] [--items 600] [--repeat 3] [--layouts publish,100]
        [--workdir DIR] [--keep]

Several --durations (comma separated) are timed one after the other: the first is the headline, and
`by_durations` sums up each. Every measurement runs --repeat times, interleaved (loader, floor,
datasets, loader, ...), and each number is the median of the runs: on a shared machine one run can
be off by 30 %; `runs` lists each run's speedups. The folder is written once per --workdir and
workload and reused. samples/s is measured in steady state (from the first batch to the last;
worker start-up and the first batch excluded), and the setup times (index build, the `datasets`
Arrow cache) are reported apart. CPU ms per sample (this process and its workers, read from /proc)
is reported too, over the same steady state (`*cpu_ms_per_sample`) and over the whole run, worker
start-up included (`*run_cpu_ms_per_sample`): on a shared machine wall time depends on the
neighbours, CPU time much less, and the speedup is given both ways (`speedup`: wall, `speedup_cpu`:
steady CPU). The loader is timed on every --layouts entry: "publish" = the audio row groups publish
writes (one recording each), "N" = N rows per audio row group closed at 4 MiB (publish's audio
layout before issue 27: 100 rows or 4 MiB), "...wK" = with the sampler's
row_group_window=K (and K cached row groups per worker). The first layout is the headline. The
`datasets` path copies the Parquet into its own Arrow cache, so the layout does not matter to it.
stdout: a short summary, then one JSON line (with --json: only the JSON line); progress goes to
stderr.

Both paths decode at about the same speed per second of audio (libsndfile/mpg123 + soxr here,
FFmpeg there), so the gain comes from decoding 10 s instead of the whole clip: its ceiling,
`decode_ceiling` in the JSON line, is the clips' total seconds over the seconds a crop decodes
(min(clip, 10 s), + 0.5 s of MP3 pre-roll). `decoders` is what decoding and
resampling the crops alone costs with each decoder the loader ships (decode_clip on bytes read
beforehand, in this process, the same items, the decoders taking turns item by item): soundfile +
soxr, FFmpeg (torchcodec: seek, decode, swresample), and auto (the per-format choice the loader
makes), overall and per format. The cheapest is the bound (`decode_floor_cpu_ms_per_sample`,
`best_decoder`): no loader built on these decoders can spend less, so `speedup_cpu_bound`
(datasets CPU ms over it) is the most any such loader can reach on this workload, and
`fraction_of_bound` = bound / loader CPU ms (1.0: the loader costs nothing beyond decoding).
`ratio_cpu` = `speedup_cpu`. torchcodec (FFmpeg's libraries) is imported once in this process
before any loader runs (`ffmpeg_import_cpu_s`), so that the forked workers share it: imported in
each worker, its ~2 s of CPU would land in the timed batches. Worker start-up
(`worker_startup_s`: forking the workers) and the first batch (`first_batch_s`,
`first_batch_cpu_s`: CPU seconds of the tree until it) are reported per layout;
`loader_samples_per_s_per_core` = 1000 / steady CPU ms, and the GPU-side view
(`cpu_s_per_gpu_batch`, `cores_per_1000_gpu_samples_per_s`, with --gpu-samples-per-s
`cores_per_gpu`) follows from it.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
import torch
from harness import tree_cpu_seconds
from torch.utils.data import DataLoader, Dataset

from biovita_data.loader import BioVITADataset, collate, species_sampler
from biovita_data.loader.audio import BACKENDS, decode_clip, ffmpeg_decoder
from biovita_data.loader.dataset import item_rng
from biovita_data.loader.index import RowReader, build_index, split_files
from biovita_data.publish.shards import AUDIO_ROW_GROUP, MEDIA_GROUP_BYTES
from biovita_data.sample.published_folder import AudioSpec, write_config, write_synthetic_folder

CROP = 480_000
SEED = 0
SEGMENT_SECONDS = 60.0  # materialize's default --segment-seconds
DURATIONS_FILE = Path(__file__).with_name("data") / "xc_durations.json"


def log(msg: str) -> None:
    """Progress to stderr."""
    print(msg, file=sys.stderr, flush=True)


def load_reference_seconds() -> np.ndarray:
    """The 501 real Xeno-canto recording lengths (benchmarks/data/xc_durations.json)."""
    return np.asarray(json.loads(DURATIONS_FILE.read_text())["seconds"], dtype=np.float64)


def materialize_cuts(seconds: float, segment_seconds: float = SEGMENT_SECONDS) -> list[float]:
    """Segment lengths as materialize stores a recording (biovita_data.media.audio._bounds):
    longer than segment_seconds -> ceil(seconds / segment_seconds) equal FLAC segments."""
    n = max(1, math.ceil(seconds / segment_seconds - 1e-9))
    return [seconds / n] * n


def recording_specs(durations: str, recordings: int, species: int) -> list[AudioSpec]:
    """The rows to publish: `fixed:S` recordings of S x U(0.6, 1.4) seconds, half MP3 and half
    FLAC (the workload of earlier versions); `reference` recordings of lengths drawn from the
    real ones (+- 0.5 s: the API gives whole seconds), cut as materialize cuts them (segments are
    FLAC, shorter recordings keep the MP3/FLAC mix). 44.1 kHz, 20 % stereo, tones plus noise."""
    rng = np.random.default_rng(SEED)
    common = {"split": "train", "rate": 44100, "noise": 0.03, "mp3_compression": 0.6}
    if durations.startswith("fixed:"):
        mean = float(durations.removeprefix("fixed:"))
        return [
            AudioSpec(
                label=j % species,
                seconds=float(rng.uniform(0.6, 1.4) * mean),
                channels=2 if j % 5 == 4 else 1,
                fmt="mp3" if j % 2 == 0 else "flac",
                seed=j,
                **common,
            )
            for j in range(recordings)
        ]
    if durations != "reference":
        raise SystemExit(f"--durations: reference or fixed:SECONDS, not {durations!r}")
    real = load_reference_seconds()
    drawn = rng.choice(real, size=recordings) + rng.uniform(-0.5, 0.5, size=recordings)
    specs = []
    for j, total in enumerate(np.maximum(drawn, 0.5).tolist()):
        cuts = materialize_cuts(total)
        for s, seconds in enumerate(cuts):
            fmt = "flac" if len(cuts) > 1 else ("mp3" if j % 2 == 0 else "flac")
            specs.append(
                AudioSpec(
                    label=j % species,
                    seconds=seconds,
                    channels=2 if j % 5 == 4 else 1,
                    fmt=fmt,
                    seed=j * 1000 + s,
                    record=f"syn{j:06d}",
                    segment=s,
                    n_segments=len(cuts),
                    **common,
                )
            )
    return specs


def make_folder(
    root: Path, durations: str, args: argparse.Namespace
) -> tuple[Path, list[AudioSpec], int]:
    """Write (or reuse) the synthetic folder with the first row-group layout: its rows' specs and
    the number of recordings they come from."""
    recordings = args.recordings or (1000 if durations == "reference" else 2000)
    specs = recording_specs(durations, recordings, args.species)
    params = {"recordings": recordings, "species": args.species, "images": args.images}
    params |= {"durations": durations, "version": 3, "rows_per_group": AUDIO_ROW_GROUP}
    stamp = root / "params.json"
    folder = root / "hf"
    seconds = [spec.seconds for spec in specs]
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return folder, specs, recordings
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    write_synthetic_folder(
        folder,
        specs,
        n_species=args.species,
        images_per_species={"train": args.images},
        image_size=(320, 240),
        rows_per_group=AUDIO_ROW_GROUP,
        group_bytes=MEDIA_GROUP_BYTES,
        shards=max(1, round(sum(seconds) / 12_500)),  # about 500 MB each, as publish writes
        processes=os.cpu_count() or 1,
    )
    log(f"wrote {folder} ({len(specs)} rows) in {time.perf_counter() - t0:.0f} s")
    stamp.write_text(json.dumps(params))
    return folder, specs, recordings


def relayout(folder: Path, rows_per_group: int) -> Path:
    """A copy of the folder whose audio shards have rows_per_group rows per row group, closed at
    4 MiB as photos' (the audio layout before issue 27)."""
    out = folder.parent / f"hf-rg{rows_per_group}"
    if out.exists():
        return out
    tmp = folder.parent / f".hf-rg{rows_per_group}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder / "image", tmp / "image")
    shutil.copytree(folder / "species", tmp / "species")
    files = sorted((folder / "audio").glob("train-*.parquet"))
    for k, path in enumerate(files):
        table = pq.read_table(path)
        written = write_config(
            tmp,
            "audio",
            f"train-{k:05d}",
            table,
            rows_per_group=rows_per_group,
            group_bytes=MEDIA_GROUP_BYTES,
        )[0]
        written.rename(written.with_name(path.name))
    tmp.rename(out)
    return out


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its reaped children (the workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_loader(dataset: Any, order: list[Any], workers: int, batch_size: int) -> dict[str, float]:
    """Steady-state samples/s and CPU ms per sample (from the first batch to the last, this process
    and its workers: worker start-up and the first batch excluded), CPU ms per sample over the
    whole run (start-up included), and seconds to the first batch."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order,
        num_workers=workers,
        collate_fn=collate,
        prefetch_factor=4 if workers else None,
    )
    batches = math.ceil(len(order) / batch_size)
    cpu0, t0, tree_start = _cpu_seconds(), time.perf_counter(), tree_cpu_seconds()
    it = iter(loader)  # forks the workers
    started = time.perf_counter()
    first = end = tree0 = tree1 = 0.0
    n = total = 0
    for b, batch in enumerate(it, 1):
        assert batch["audio"].shape[1:] == (CROP,)
        total += batch["audio"].shape[0]
        if b == 1:
            first, tree0 = time.perf_counter(), tree_cpu_seconds()
        else:
            n += batch["audio"].shape[0]
        if b == batches:  # the workers are done but still alive: their CPU is in /proc
            end, tree1 = time.perf_counter(), tree_cpu_seconds()
    del it, loader  # workers are joined when the iterator ends: their CPU is in RUSAGE_CHILDREN
    cpu = _cpu_seconds() - cpu0
    return {
        "samples_per_s": round(n / max(end - first, 1e-9), 2),
        "cpu_ms_per_sample": round(1000 * (tree1 - tree0) / max(n, 1), 2),
        "run_cpu_ms_per_sample": round(1000 * cpu / total, 2),
        "worker_startup_s": round(started - t0, 3),
        "first_batch_s": round(first - t0, 2),
        "first_batch_cpu_s": round(tree0 - tree_start, 2),
    }


class DatasetsCrop(Dataset):
    """The plain `datasets` path: decode the whole file at 48 kHz (torchcodec), mono, crop 10 s."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        row = self.ds[index]
        audio = row["audio"]
        if isinstance(audio, dict):  # datasets < 4: {"array", "sampling_rate"}
            x = torch.as_tensor(np.asarray(audio["array"], dtype=np.float32))
            x = x if x.ndim == 1 else x.mean(0)
        else:  # datasets >= 4: a torchcodec AudioDecoder
            x = audio.get_all_samples().data.mean(0)
        rng = np.random.default_rng([SEED, epoch, index])
        start = int(rng.integers(0, max(1, x.shape[0] - CROP + 1)))
        out = torch.zeros(CROP)
        piece = x[start : start + CROP]
        out[: piece.shape[0]] = piece
        return {"audio": out, "label": row["label"]}


def run_datasets(
    folder: Path, cache: Path, order: list[Any], args: argparse.Namespace
) -> dict[str, Any]:
    """Time the datasets path; on failure, the exact error instead of numbers."""
    try:
        import datasets
        from datasets import Audio, load_dataset

        datasets.disable_progress_bars()
        t0 = time.perf_counter()
        files = [str(p) for p in sorted((folder / "audio").glob("train-*.parquet"))]
        ds = load_dataset("parquet", data_files={"train": files}, split="train", cache_dir=cache)
        ds = ds.select_columns(["audio", "label"]).cast_column("audio", Audio(sampling_rate=48000))
        prepare = time.perf_counter() - t0
        DatasetsCrop(ds)[order[0]]  # fail here, not in a worker
        numbers = timed_loader(DatasetsCrop(ds), order, args.workers, args.batch_size)
        return {
            "datasets_version": datasets.__version__,
            "datasets_samples_per_s": numbers["samples_per_s"],
            "datasets_cpu_ms_per_sample": numbers["cpu_ms_per_sample"],
            "datasets_run_cpu_ms_per_sample": numbers["run_cpu_ms_per_sample"],
            "datasets_prepare_s": round(prepare, 2),
            "datasets_first_batch_s": numbers["first_batch_s"],
        }
    except Exception as exc:
        return {"datasets_error": f"{type(exc).__name__}: {exc}"}


def parse_layout(text: str) -> tuple[int | None, int | None]:
    """ "publish" -> (None, None): publish's audio layout; "100" -> (100, None); "100w4" ->
    (100, 4): rows per row group (closed at 4 MiB), row_group_window."""
    rows, _, window = text.partition("w")
    return (None if rows == "publish" else int(rows)), int(window) if window else None


def time_layout(
    base: Path, layout: str, args: argparse.Namespace
) -> tuple[dict[str, float], list[Any]]:
    """The loader's numbers on one layout, and the plain (unwindowed) order it used."""
    rows, window = parse_layout(layout)
    folder = base if rows is None else relayout(base, rows)
    cache = {"cache_row_groups": max(2, window or 0)}
    t0 = time.perf_counter()
    audio_only = BioVITADataset(folder, "train", seed=SEED, with_image=False, **cache)
    opened = time.perf_counter() - t0
    n = args.items + args.batch_size
    plain = species_sampler(audio_only)
    plain.set_epoch(1)
    sampler = species_sampler(audio_only, row_group_window=window) if window else plain
    sampler.set_epoch(1)
    order = list(sampler)[:n]
    log(f"loader, layout {layout}: audio + text")
    audio = timed_loader(audio_only, order, args.workers, args.batch_size)
    triplets = BioVITADataset(folder, "train", seed=SEED, **cache)
    log(f"loader, layout {layout}: audio + image + text")
    full = timed_loader(triplets, order, args.workers, args.batch_size)
    numbers = {
        "samples_per_s": audio["samples_per_s"],
        "cpu_ms_per_sample": audio["cpu_ms_per_sample"],
        "run_cpu_ms_per_sample": audio["run_cpu_ms_per_sample"],
        "triplet_samples_per_s": full["samples_per_s"],
        "triplet_cpu_ms_per_sample": full["cpu_ms_per_sample"],
        "open_s": round(opened, 3),
        "worker_startup_s": audio["worker_startup_s"],
        "first_batch_s": audio["first_batch_s"],
        "first_batch_cpu_s": audio["first_batch_cpu_s"],
    }
    return numbers, list(plain)[:n]


def decode_bounds(folder: Path, order: list[Any]) -> dict[str, dict[str, float]]:
    """CPU ms per item of decode_clip alone (the bytes read beforehand, untimed) with each
    decoder, the crop position each item gets in BioVITADataset: {backend: {"all": ms, format:
    ms}}. The backends take turns item by item, so a busy neighbour slows them alike."""
    reader = RowReader(build_index(split_files(folder, "audio", "train")), ["audio"])
    ffmpeg_decoder()  # import torchcodec (FFmpeg's libraries) before the clock starts
    spent: dict[str, dict[str, list[float]]] = {b: {} for b in BACKENDS}  # by backend, format
    for k, (index, epoch) in enumerate(order):
        data = reader.media(int(index))
        fmt = sf.info(io.BytesIO(data)).format
        u_crop = float(item_rng(SEED, int(epoch), int(index)).random(3)[0])
        for j in range(len(BACKENDS)):
            backend = BACKENDS[(k + j) % len(BACKENDS)]
            t0 = time.process_time()
            decode_clip(data, u=u_crop, backend=backend)
            spent[backend].setdefault(fmt, []).append(time.process_time() - t0)
    reader.close()
    out: dict[str, dict[str, float]] = {}
    for backend, by_format in spent.items():
        every = [t for ts in by_format.values() for t in ts]
        out[backend] = {"all": round(1000 * sum(every) / len(every), 2)}
        out[backend] |= {f: round(1000 * sum(ts) / len(ts), 2) for f, ts in by_format.items()}
    return out


def measure(base: Path, root: Path, layouts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One run: the loader on every layout, the decode floor, the datasets path, the speedups."""
    result: dict[str, Any] = {}
    per_layout: dict[str, dict[str, float]] = {}
    order: list[Any] = []
    for layout in layouts:
        per_layout[layout], order = time_layout(base, layout, args)
    result["headline_layout"] = layouts[0]
    result["loader_samples_per_s"] = per_layout[layouts[0]]["samples_per_s"]
    result["loader_cpu_ms_per_sample"] = per_layout[layouts[0]]["cpu_ms_per_sample"]
    result["loader_by_layout"] = per_layout
    log("decode_clip alone, each decoder (the bounds)")
    bounds = decode_bounds(base, order)
    result["decoders"] = bounds
    best = min(BACKENDS, key=lambda b: bounds[b]["all"])
    result["best_decoder"] = best
    result["decode_floor_cpu_ms_per_sample"] = bounds[best]["all"]
    result["fraction_of_bound"] = round(bounds[best]["all"] / result["loader_cpu_ms_per_sample"], 3)
    log("datasets: load_dataset + cast_column(Audio(sampling_rate=48000))")
    result |= run_datasets(base, root / "hf-cache", order, args)
    if "datasets_samples_per_s" in result:
        wall, cpu = result["datasets_samples_per_s"], result["datasets_cpu_ms_per_sample"]
        result["speedup"] = round(result["loader_samples_per_s"] / wall, 2)
        result["speedup_cpu"] = round(cpu / result["loader_cpu_ms_per_sample"], 2)
        result["ratio_cpu"] = result["speedup_cpu"]
        result["speedup_cpu_bound"] = round(cpu / result["decode_floor_cpu_ms_per_sample"], 2)
        result["speedup_by_layout"] = {
            k: {
                "wall": round(v["samples_per_s"] / wall, 2),
                "cpu": round(cpu / v["cpu_ms_per_sample"], 2),
            }
            for k, v in per_layout.items()
        }
    return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs merged key by key: numbers -> their median, nested dicts likewise, the rest from
    the first run."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs if key in run]
        if isinstance(first, dict):
            out[key] = median_of(values)
        elif isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = round(float(np.median(values)), 2)
        else:
            out[key] = first
    return out


def run_workload(root: Path, durations: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every number of one --durations workload (its folder under root)."""
    root.mkdir(parents=True, exist_ok=True)
    layouts = args.layouts.split(",")
    base, specs, recordings = make_folder(root, durations, args)
    size = sum(p.stat().st_size for p in (base / "audio").glob("*.parquet"))
    clips = np.asarray([spec.seconds for spec in specs])
    # what a 10 s crop decodes (MP3: 0.5 s of pre-roll too), for the speedup's ceiling
    decoded = [min(spec.seconds, 10.5 if spec.fmt == "mp3" else 10.0) for spec in specs]
    result: dict[str, Any] = {
        "durations": durations,
        "recordings": recordings,
        "rows": len(specs),
        "audio_bytes": size,
        "mean_clip_seconds": round(float(clips.mean()), 2),
        "median_clip_seconds": round(float(np.median(clips)), 2),
        "decode_ceiling": round(float(clips.sum() / sum(decoded)), 2),
    }
    runs = []
    for r in range(args.repeat):
        log(f"{durations}: run {r + 1} of {args.repeat}")
        runs.append(measure(base, root, layouts, args))
    result |= median_of(runs)
    if args.repeat > 1:
        keys = ("speedup", "speedup_cpu", "speedup_cpu_bound", "fraction_of_bound")
        result["runs"] = [{k: run[k] for k in keys if k in run} for run in runs]
    return result


def gpu_view(out: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Samples/s per core (steady-state CPU, workers included) and what that means for a GPU:
    the CPU seconds one --gpu-batch batch costs, the cores per 1,000 samples/s of GPU throughput
    and, given --gpu-samples-per-s, the cores that keep one GPU fed."""
    ms = out.get("loader_cpu_ms_per_sample")
    if not ms:
        return {}
    view: dict[str, Any] = {
        "loader_samples_per_s_per_core": round(1000 / ms, 1),
        "gpu_batch": args.gpu_batch,
        "cpu_s_per_gpu_batch": round(ms * args.gpu_batch / 1000, 3),
        "cores_per_1000_gpu_samples_per_s": round(ms, 1),
    }
    if out.get("datasets_cpu_ms_per_sample"):
        view["datasets_samples_per_s_per_core"] = round(1000 / out["datasets_cpu_ms_per_sample"], 1)
    if args.gpu_samples_per_s:
        view["gpu_samples_per_s"] = args.gpu_samples_per_s
        view["cores_per_gpu"] = math.ceil(args.gpu_samples_per_s * ms / 1000)
    return view


def summary(out: dict[str, Any]) -> str:
    """A few lines for people; the JSON line follows."""
    lines = [
        f"loader {out.get('loader_cpu_ms_per_sample')} CPU ms/sample"
        f" ({out.get('loader_samples_per_s_per_core')} samples/s per core),"
        f" datasets {out.get('datasets_cpu_ms_per_sample')}: ratio_cpu {out.get('ratio_cpu')}",
        f"bound ({out.get('best_decoder')}) {out.get('decode_floor_cpu_ms_per_sample')} CPU ms:"
        f" fraction_of_bound {out.get('fraction_of_bound')}",
        f"decoders: {json.dumps(out.get('decoders'))}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--durations",
        default="reference",
        help="reference (real Xeno-canto lengths, cut as materialize cuts them) or fixed:SECONDS;"
        " several, comma separated: the first is the headline, the others go to by_durations",
    )
    parser.add_argument(
        "--recordings",
        type=int,
        default=None,
        help="recordings before segmentation (default 1000 for reference, 2000 for fixed:S)",
    )
    parser.add_argument("--species", type=int, default=200)
    parser.add_argument("--images", type=int, default=5, help="photos per species")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--items", type=int, default=600, help="samples timed per loader")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of every measurement, interleaved; each number is the median (a shared machine"
        " is noisy), `runs` lists each run's speedups",
    )
    parser.add_argument(
        "--layouts",
        default="publish,100",
        help="audio row groups: publish (as publish writes them) or rows per group (closed at"
        " 4 MiB, the earlier layout), optionally wN = row_group_window N",
    )
    parser.add_argument(
        "--gpu-batch",
        type=int,
        default=64,
        help="the training batch (TrainConfig's default, 64) for the GPU-side view",
    )
    parser.add_argument(
        "--gpu-samples-per-s",
        type=float,
        default=None,
        help="training samples/s one GPU consumes (measure it on the GPU: a train step at"
        " --gpu-batch); with it, `cores_per_gpu` = the cores this loader needs to keep it fed",
    )
    parser.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    parser.add_argument("--workdir", type=Path, default=None, help="kept and reused when given")
    parser.add_argument("--keep", action="store_true", help="keep a temporary workdir")
    args = parser.parse_args()
    workloads = args.durations.split(",")

    root = args.workdir or Path(tempfile.mkdtemp(prefix="biovita-loader-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        common: dict[str, Any] = {
            "benchmark": "loader",
            "workers": args.workers,
            "batch_size": args.batch_size,
            "samples_timed": args.items,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        }
        # the workers fork from this process: FFmpeg's libraries (torchcodec), loaded here once,
        # are theirs without a 2 s import each (in a worker it would land in the timed batches)
        t0 = time.process_time()
        common["ffmpeg_crop"] = ffmpeg_decoder() is not None
        common["ffmpeg_import_cpu_s"] = round(time.process_time() - t0, 2)
        results = [run_workload(root / w.replace(":", "-"), w, args) for w in workloads]
        out = common | results[0]
        if len(results) > 1:
            keys = ("mean_clip_seconds", "rows", "loader_samples_per_s", "datasets_samples_per_s")
            keys += ("loader_cpu_ms_per_sample", "datasets_cpu_ms_per_sample", "speedup")
            keys += ("speedup_cpu", "decode_floor_cpu_ms_per_sample", "speedup_cpu_bound")
            keys += ("datasets_error",)
            out["by_durations"] = {
                r["durations"]: {k: r[k] for k in keys if k in r} for r in results
            }
        out |= gpu_view(out, args)
        if not args.json:
            print(summary(out))
        print(json.dumps(out))
        return 0
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

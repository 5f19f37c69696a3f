"""Audio materialize throughput: ~25 s MP3 recordings downloaded, verified, hashed and written.

N recording URLs (default 800) are served from a stdlib ThreadingHTTPServer on 127.0.0.1 in a
child process: 32 distinct sample-world recordings of 25 s rendered as MP3 with the sample
world's mix of channels (80 % mono) and sample rates (22.05-48 kHz), each URL's bytes made
unique by an ID3v1 tag carrying its number (so no two downloads hash alike). The real
`biovita_data.media.materialize` (engine local, --workers processes) downloads every one,
verifies it by decoding every frame with libsndfile (float32, native rate, no resampling), checks
it is not silent, hashes it (sha256) and writes the original bytes into Parquet shards.

Timed: the materialize call (pool start-up included). Also reported: the CPU seconds of this
process and its descendants (the server excluded) per clip, sampled from /proc, which a busy
machine inflates less than wall time, and `cores_used` (CPU seconds over wall seconds: about
--workers when every worker works). The decode floor is the CPU that decoding every frame of the
same recordings costs (soundfile, float32, from an in-memory file as materialize opens it, in
this process): no verifying materialize can spend less. It is measured just before and just
after each round's run and their mean taken, because this VM's speed drifts by 10-20 % from one
minute to the next; `floor_ratio` = the median over rounds of a round's CPU ms per clip over its
floor (target <= 1.1); `floor_ratio_workers` is the same of the worker processes alone (the
forkserver included) and `driver_cpu_ms_per_clip` what this process spent on the run beside them
(planning, progress, collecting reports, the index), so that what is left over the floor can be
placed. The I/O floor: receiving and writing the same bodies as plainly as
possible (`io_floor`), which no downloading materialize avoids either. --shard-size (default:
materialize's 500) sets the records per shard: with --shard-size >= --clips the run has one
shard, fewer than the workers, and `cores_used` shows whether every worker still works. stdout:
a summary line, then one JSON line (with --json only the JSON line); stderr: progress. Exit
status 1 unless every clip was kept. Target: >= 40 clips/s per core. The figures above are of
materialize without content fingerprints (`--no-fingerprints`: the verifying path alone); each
round also runs it with them (the default, for dedup), reported as
`fingerprints_cpu_ms_per_clip` and `fingerprint_share` (their extra CPU over the run without).

    python3 benchmarks/audio_materialize.py [--clips 800] [--workers 2] [--repeat 3]
        [--shard-size 500] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from harness import TreeCpu, serve
from rich.console import Console

from biovita_data.core.pcm import open_sound
from biovita_data.core.schemas import MEDIA
from biovita_data.crawl.http import HostPolicy, HttpClient
from biovita_data.media import MaterializeSettings, materialize

DISTINCT = 32
SECONDS = 25.0
TARGET_PER_CORE = 40.0


def recordings() -> list[bytes]:
    """DISTINCT seeded ~25 s MP3s with the sample world's channel and sample-rate mix."""
    from biovita_data.sample import audio
    from biovita_data.sample.taxonomy import generate_taxonomy

    species = generate_taxonomy("tiny", 0).species
    rng = np.random.default_rng(7)
    out = []
    for i in range(DISTINCT):
        rate = int(rng.choice([22050, 32000, 44100, 48000], p=[0.15, 0.1, 0.5, 0.25]))
        channels = int(rng.choice([1, 2], p=[0.8, 0.2]))
        call = species[i % len(species)].call
        out.append(
            audio.render_audio(call, fmt="mp3", sample_rate=rate, channels=channels,
                               duration_s=SECONDS + float(rng.uniform(-2, 2)), seed=100 + i)
        )  # fmt: skip
    return out


def unique(mp3: bytes, i: int) -> bytes:
    """The same recording with an ID3v1 tag naming `i` at its end: different bytes, same audio."""
    title = f"benchmark clip {i}".encode().ljust(30, b"\0")
    return mp3 + b"TAG" + title + bytes(30 + 30 + 4 + 30) + b"\xff"


def bodies(n: int) -> list[bytes]:
    """The n served bodies: the DISTINCT recordings in turn, each made unique."""
    base = recordings()
    return [unique(base[i % DISTINCT], i) for i in range(n)]


def decode_floor(recordings: list[bytes], reps: int = 2) -> float:
    """CPU ms to decode every frame of one recording (soundfile, float32, opened as materialize
    opens it: core/pcm.open_sound, the cheaper way), over `recordings`."""
    spent = 0.0
    for _ in range(reps):
        for data in recordings:
            t0 = time.process_time()
            with open_sound(data) as f:
                for _block in f.blocks(blocksize=1 << 16, dtype="float32"):
                    pass
            spent += time.process_time() - t0
    return 1000 * spent / (reps * len(recordings))


def _io_job(conn, urls: list[str], shard_size: int) -> None:
    """A fresh process's job (as materialize's workers are fresh): GET every URL over one
    keep-alive connection (http.client, no checks) and append the bodies to shard files, as
    plainly as it can be done; send back the CPU seconds the loop took."""
    import http.client
    import resource
    from urllib.parse import urlsplit

    def cpu() -> float:
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    where = urlsplit(urls[0])
    with tempfile.TemporaryDirectory(prefix="bench-io-") as tmp:
        t0 = cpu()
        http_conn = http.client.HTTPConnection(where.hostname, where.port)
        for a in range(0, len(urls), shard_size):
            with open(Path(tmp) / f"shard-{a}.bin", "wb") as f:
                for url in urls[a : a + shard_size]:
                    http_conn.request("GET", urlsplit(url).path)
                    f.write(http_conn.getresponse().read())
        spent = cpu() - t0
    conn.send(spent)


def io_floor(urls: list[str], shard_size: int) -> float:
    """CPU ms per clip of the I/O no downloading materialize avoids: each body received into
    fresh memory and written into the page cache (`_io_job`, in a fresh process). On a VM whose
    fresh pages are dear (this one: ~10 us a 4 KiB page) it is a large part of the overhead."""
    parent, child = mp.Pipe()
    job = mp.get_context("spawn").Process(target=_io_job, args=(child, urls, shard_size))
    job.start()
    spent = parent.recv()
    job.join()
    return 1000 * spent / len(urls)


def run(
    urls: list[str], workers: int, exclude: set[int], shard_size: int, fingerprints: bool
) -> dict:
    rows = [
        {"source": "xeno-canto", "record_id": str(i), "modality": "audio", "species_id": 1,
         "scientific_name": "Benchmark clip", "match_kind": "exact", "media_url": url,
         "file_format": "mp3"}
        for i, url in enumerate(urls)
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        out = Path(tmp)
        path = out / "manifests" / "audio.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=MEDIA), path)
        settings = MaterializeSettings(
            modalities=("audio",),
            workers=workers,
            throttle=False,
            download_threads=16,
            shard_size=shard_size,
            fingerprints=fingerprints,
        )
        http = HttpClient(
            {"127.0.0.1": HostPolicy(None, 16)}, throttle=False, retries=0, allow_loopback=True
        )
        cpu = TreeCpu(exclude)
        t0 = time.perf_counter()
        result = materialize(out, settings, console=Console(stderr=True), http=http)
        seconds = time.perf_counter() - t0
        cpu_s = cpu.stop()
        workers_s = cpu.descendants_s
        m = result.by_modality("audio")
        index = pq.read_table(out / "media" / "audio" / "index.parquet")
        kept_original = sum(not t for t in index["transcoded"].to_pylist())
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "workers_s": workers_s,
        "kept": m.kept,
        "failed": m.failed,
        "kept_original": kept_original,
        "stored_mb": m.bytes / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=800)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=500, help="records per shard")
    ap.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = ap.parse_args()
    distinct = recordings()
    floors, io_floors = [], []

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(
        target=serve, args=(child, bodies, args.clips, "audio/mpeg"), daemon=True
    )
    server.start()
    root, mean_bytes = parent.recv()
    urls = [f"{root}/recordings/{i}.mp3" for i in range(args.clips)]
    load = os.getloadavg()[0]
    try:
        runs, printed = [], []
        for r in range(args.repeat):
            print(f"round {r + 1}: floors, then materialize", file=sys.stderr)
            before = decode_floor(distinct)
            io_floors.append(io_floor(urls, args.shard_size))
            runs.append(run(urls, args.workers, {server.pid}, args.shard_size, False))
            floors.append((before + decode_floor(distinct)) / 2)
            printed.append(run(urls, args.workers, {server.pid}, args.shard_size, True))
    finally:
        parent.send("stop")
        server.join(5)
    best = min(runs, key=lambda x: x["seconds"])
    cores = min(args.workers, os.cpu_count() or 1)
    per_core = args.clips / best["seconds"] / cores
    cpu_ms = float(np.median([1000 * x["cpu_s"] / args.clips for x in runs]))
    ratios = [1000 * x["cpu_s"] / args.clips / f for x, f in zip(runs, floors, strict=True)]
    worker_ratios = [
        1000 * x["workers_s"] / args.clips / f for x, f in zip(runs, floors, strict=True)
    ]
    floor = float(np.median(floors))
    io = float(np.median(io_floors))
    out = {
        "benchmark": "audio_materialize",
        "clips": args.clips,
        "clip_seconds": SECONDS,
        "mean_kb": round(mean_bytes / 1024, 1),
        "workers": args.workers,
        "cores": cores,
        "shard_size": args.shard_size,
        "shards": -(-args.clips // args.shard_size),
        "clips_per_s": round(args.clips / best["seconds"], 1),
        "clips_per_s_per_core": round(per_core, 1),
        "cpu_ms_per_clip": round(cpu_ms, 2),
        "decode_floor_cpu_ms_per_clip": round(floor, 2),
        "decode_floors": [round(f, 2) for f in floors],
        "floor_ratio": round(float(np.median(ratios)), 3),
        "floor_ratios": [round(x, 3) for x in ratios],
        "floor_ratio_workers": round(float(np.median(worker_ratios)), 3),
        "driver_cpu_ms_per_clip": round(
            float(np.median([1000 * (x["cpu_s"] - x["workers_s"]) / args.clips for x in runs])), 2
        ),
        "io_floor_cpu_ms_per_clip": round(io, 2),
        "floor_ratio_with_io": round(
            float(np.median([r * f / (f + io) for r, f in zip(ratios, floors, strict=True)])), 3
        ),
        "cores_used": round(best["cpu_s"] / best["seconds"], 2),
        "fingerprints_cpu_ms_per_clip": round(
            1000 * min(x["cpu_s"] for x in printed) / args.clips, 2
        ),
        "fingerprint_share": round(
            min(x["cpu_s"] for x in printed) / min(x["cpu_s"] for x in runs) - 1, 3
        ),
        "seconds": [round(x["seconds"], 2) for x in runs],
        "kept": best["kept"],
        "kept_original": best["kept_original"],
        "failed": best["failed"],
        "stored_mb": round(best["stored_mb"], 1),
        "load_average_at_start": round(load, 2),
        "target_per_core": TARGET_PER_CORE,
        "meets_target": per_core >= TARGET_PER_CORE,
    }
    if not args.json:
        print(
            f"{out['cpu_ms_per_clip']} CPU ms/clip vs decode floor"
            f" {out['decode_floor_cpu_ms_per_clip']}: floor_ratio {out['floor_ratio']}"
            f" ({out['floor_ratio_with_io']} over decode + I/O floor);"
            f" {out['shards']} shard(s), cores used {out['cores_used']} of {args.workers}"
        )
    print(json.dumps(out))
    if best["kept"] != args.clips:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Paper-scale projection of dedup's audio candidate search: one genus block at a time vs one index.

Fingerprints `--pool` recordings of the default sample world (real landmark statistics), then
runs `biovita_data.media.dedup.audio_pairs` on blocks of growing size, each in a fresh process
(its peak RSS, VmHWM reset just before the search, less the RSS then). CPU is fitted as a power
law of the block's landmark count, memory as a straight line in it (see below); both projected
to the paper's corpus:
- `--recordings` (1.3 M) recordings of `--seconds` mean length (landmarks per second measured);
- the search runs per genus: `--max-block` recordings in the largest genus (default 20,000: about
  the size of the largest bird genera on Xeno-canto); the total time is bounded by cutting the
  corpus into blocks of that size (exact for a cost linear in the block, an upper bound when
  it grows faster), on `--cores` processes, one block each (`dedup --workers`), so memory is
  cores x one block; beside it, the wall time when only as many processes run as fit in
  `--memory-gb` (the issue's one machine: 8 GB);
- beside it, one global index over the whole corpus (what an unblocked search would need), and
  the landmark spill dedup writes to disk while fingerprinting (hash + time, 8 bytes each).
Memory is fitted as a straight line in the block's landmarks (the search holds the block's
landmarks, 12 bytes each exploded, and one chunk of the hash join at a time).
The photo search (PDQ within a species, numpy blocks) is not projected here.
Prints a table to stderr and, with --json, one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from biovita_data.media import fingerprint as fp
from biovita_data.media.dedup import JOIN_AGREEMENTS, MAX_POSTINGS
from biovita_data.sample.world import World

_CHILD = r"""
import gc, json, sys, time
import polars as pl
from biovita_data.media import dedup
from biovita_data.media.dedup import audio_pairs
dedup.JOIN_AGREEMENTS = 100_000  # so the runs' memory is the block's arrays (the chunk: added)
prints = pl.read_parquet(sys.argv[1]).with_columns(  # as dedup's spill holds them
    pl.col("hashes").cast(pl.List(pl.UInt32)), pl.col("times").cast(pl.List(pl.Int32))
)
def kib(field):  # VmRSS / VmHWM of this process, KiB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))
gc.collect()
with open("/proc/self/clear_refs", "w") as f:  # the peak (VmHWM) back to the current RSS:
    f.write("5")  # reading and casting the prints must not count as the search's memory
base = kib("VmRSS:")
t = time.process_time()
pairs = audio_pairs(prints)
cpu = time.process_time() - t
peak = kib("VmHWM:")
# agreements the search counts: landmark pairs sharing a hash found in <= MAX_POSTINGS records
import numpy as np
from biovita_data.media.dedup import MAX_POSTINGS
h = prints["hashes"].explode().to_numpy().astype(np.uint64)
r = np.repeat(prints["i"].to_numpy(), prints["hashes"].list.len().to_numpy()).astype(np.uint64)
pair_keys = np.unique(h * np.uint64(2**32) + r)
hh, records = np.unique(pair_keys // np.uint64(2**32), return_counts=True)
_, landmarks = np.unique(h, return_counts=True)
kept = landmarks[records <= MAX_POSTINGS].astype(np.int64)
agreements = int((kept * (kept - 1) // 2).sum())
print(json.dumps({"cpu_s": cpu, "extra_mb": max(peak - base, 0) / 1024, "pairs": pairs.height,
                  "agreements": agreements}))
"""


def pool_prints(n: int, cache: Path | None = None) -> tuple[pl.DataFrame, float]:
    """Fingerprints of n recordings of the default world, and their landmarks per second
    (`cache`: a Parquet file of them, read when it holds n, else written)."""
    world = World("default")
    if cache is not None and cache.exists():
        prints = pl.read_parquet(cache)
        if prints.height >= n:
            prints = prints.head(n)
            ids = {k: r for k, r in enumerate(r for r in world.recordings if r.flaw is None)}
            seconds = sum(ids[i].duration_s for i in prints["i"].to_list())
            return prints, float(prints["n"].sum()) / seconds
    recs = [r for r in world.recordings if r.flaw is None][:n]
    rows, seconds = [], 0.0
    for k, r in enumerate(recs):
        f = fp.audio_fingerprint(*fp.decode_audio(world.audio_bytes(r.source, r.id)))
        if f.hashes is None:
            continue
        seconds += r.duration_s
        rows.append({"i": k, "hashes": f.hashes.astype(np.int64).tolist(),
                     "times": f.times.astype(np.int64).tolist(), "n": len(f.hashes)})  # fmt: skip
    prints = pl.DataFrame(
        rows, schema_overrides={"hashes": pl.List(pl.Int64), "times": pl.List(pl.Int64)}
    )
    if cache is not None:
        prints.write_parquet(cache)
    return prints, float(prints["n"].sum()) / seconds


def measure(prints: pl.DataFrame, sizes: list[int], tmp: Path) -> list[dict]:
    """audio_pairs on the first n prints, each n in a fresh process reading only those."""
    out = []
    for n in sizes:
        path = tmp / f"prints-{n}.parquet"
        prints.head(n).write_parquet(path)
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True
        )
        out.append({"records": n, **json.loads(run.stdout.strip().splitlines()[-1])})
    return out


def power_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(c, a) of y = c * x ** a, least squares in log space."""
    a, logc = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(logc)), float(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=600, help="recordings fingerprinted")
    ap.add_argument("--recordings", type=int, default=1_300_000)
    ap.add_argument("--seconds", type=float, default=40.0, help="mean recording length (s)")
    ap.add_argument("--max-block", type=int, default=20_000)
    ap.add_argument("--cores", type=int, default=16)
    ap.add_argument("--memory-gb", type=float, default=8.0, help="one machine's memory")
    ap.add_argument("--threads", type=int, default=1, help="search threads in one block")
    ap.add_argument("--cache", type=Path, help="a Parquet file keeping the pool's fingerprints")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    prints, per_second = pool_prints(args.pool, args.cache)
    landmarks = prints["n"].cum_sum().to_list()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = sorted({max(2, prints.height // d) for d in (8, 4, 2, 1)})
        runs = measure(prints, sizes, Path(tmp))
    for r in runs:
        r["landmarks"] = int(landmarks[r["records"] - 1])
    x = np.array([r["landmarks"] for r in runs], float)
    c_t, a_t = power_fit(x, np.array([max(r["cpu_s"], 1e-3) for r in runs]))
    # memory: the block's arrays are linear in the landmarks (a straight line through the runs,
    # least squares; the runs hold chunks of 100,000 agreements), plus a chunk of
    # JOIN_AGREEMENTS agreements (~80 bytes each) for each thread (`--threads`)
    slope, intercept = np.polyfit(x, np.array([r["extra_mb"] for r in runs]), 1)
    mb_per_landmark = max(float(slope), runs[-1]["extra_mb"] / runs[-1]["landmarks"] / 4)
    per_record = per_second * args.seconds
    block_x = args.max_block * per_record
    blocks = -(-args.recordings // args.max_block)
    # CPU: the larger of the power law of the runs and the cost per agreement of the largest run
    # times the agreements projected (a power law in the landmarks, at most MAX_POSTINGS - 1 per
    # landmark): the work grows with the agreements, which small blocks understate
    c_a, a_a = power_fit(x, np.array([max(r["agreements"], 1) for r in runs], float))
    block_agreements = min(c_a * block_x**a_a, block_x * (MAX_POSTINGS - 1) / 2)
    per_agreement = runs[-1]["cpu_s"] / max(runs[-1]["agreements"], 1)
    block_s = max(c_t * block_x**a_t, per_agreement * block_agreements)
    chunk_mb = args.threads * min(JOIN_AGREEMENTS, block_agreements) * 80 / 2**20
    block_gb = (mb_per_landmark * block_x + max(float(intercept), 0.0) + chunk_mb) / 1024
    global_x = args.recordings * per_record
    fit = min(args.cores, blocks, int(args.memory_gb // block_gb)) if block_gb else args.cores
    busy = min(args.cores, fit * args.threads)  # cores the processes that fit keep working
    result = {
        "bench": "dedup_scale",
        "pool_records": prints.height,
        "landmarks_per_second": round(per_second, 2),
        "fit_cpu_exponent": round(a_t, 3),
        "fit_agreements_exponent": round(a_a, 3),
        "block_agreements": round(block_agreements),
        "cpu_us_per_agreement": round(1e6 * per_agreement, 3),
        "bytes_per_landmark": round(mb_per_landmark * 2**20, 1),
        "measured": runs,
        "paper_recordings": args.recordings,
        "landmarks_per_recording": round(per_record),
        "max_block": args.max_block,
        "block_cpu_s": round(block_s, 1),
        "block_memory_gb": round(block_gb, 2),
        "blocked_wall_h_on_cores": round(blocks * block_s / min(args.cores, blocks) / 3600, 2),
        "blocked_memory_gb_on_cores": round(block_gb * min(args.cores, blocks), 1),
        "workers_within_memory": fit,
        # null: one block alone needs more than --memory-gb
        # each with --threads threads on its block (CPU shared out as if threads scaled fully)
        "blocked_wall_h_within_memory": round(blocks * block_s / busy / 3600, 2) if fit else None,
        "memory_gb": args.memory_gb,
        "global_index_memory_gb": round(mb_per_landmark * global_x / 1024, 1),
        "spill_disk_gb": round(global_x * 8 / 2**30, 1),
        "cores": args.cores,
        "seconds": round(time.monotonic() - t0, 1),
    }
    for k, v in result.items():
        if k != "measured":
            print(f"{k:28s} {v}", file=sys.stderr)
    for r in runs:
        print(f"  block of {r['records']:5d} records, {r['landmarks']:8d} landmarks: "
              f"{r['cpu_s']:.2f} CPU-s, +{r['extra_mb']:.0f} MB", file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

"""BioVITA-Bench scoring time at paper scale: the full 6 x 3 bench over 14,133 species.

Synthetic but shaped like `biovita-data bench` output at the paper's scale: 14,133 species in
~5,000 genera and ~1,000 families; test pools of 125,000 clips and 226,000 photos; candidate
groups fixed per taxon and target modality (caps 28 clips / 95 photos / 1 text); 1,024 queries
per task (the bench's default cap) with 100 candidate taxa each (all taxa at a level with fewer).
Embeddings are random unit vectors of width --dim (default 768, BioCLIP 2's; 1024 for
BioCLIP 2.5 Huge). Only `evaluate_bench` is timed (not the bench
generation). Prints one JSON line.

    python benchmarks/eval_speed.py [--method auto|grouped|dense] [--device cpu|cuda]
        [--threads N] [--dim D]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from biovita_data.curate.bench.csv_layout import LEVELS, TASK_DTYPES, TASKS, OfficialBench
from biovita_data.loader import cap_per_label
from biovita_model.eval import scoring as ev

SPECIES, GENERA, FAMILIES = 14_133, 5_000, 1_000
POOL = {"audio": 125_000, "image": 226_000, "text": SPECIES}
CAP = {"audio": 28, "image": 95, "text": 1}
QUERIES, CANDIDATES, DIM = 1024, 100, 768  # DIM: --dim's default
CLASSES = np.array(["Aves", "Mammalia", "Amphibia", "Insecta"])


def _groups(taxon_of_item: np.ndarray, n_taxa: int, cap: int, rng: np.random.Generator):
    """(start, length, items): each taxon's group, at most cap random items of the taxon."""
    items = cap_per_label(taxon_of_item, cap, rng)
    taxa = taxon_of_item[items]
    length = np.bincount(taxa, minlength=n_taxa)
    return np.cumsum(length) - length, length, items


def _distractors(avail: np.ndarray, correct: np.ndarray, k: int, rng: np.random.Generator):
    """k distinct taxa per query from avail, none equal to the correct one (vectorised)."""
    keys = rng.random((correct.size, avail.size))
    keys[avail[None, :] == correct[:, None]] = 2.0  # never among the k smallest
    return avail[np.argpartition(keys, k, axis=1)[:, :k]]


def synthetic_bench(seed: int = 0) -> OfficialBench:
    """The bench's tasks and indexes in memory (see the module docstring)."""
    rng = np.random.default_rng(seed)
    genus_of = rng.integers(0, GENERA, SPECIES)
    family_of_genus = rng.integers(0, FAMILIES, GENERA)
    taxon = {"species": np.arange(SPECIES), "genus": genus_of, "family": family_of_genus[genus_of]}
    species_of = {m: rng.integers(0, SPECIES, POOL[m]) for m in ("audio", "image")}
    species_of["text"] = np.arange(SPECIES)
    frames = []
    for level in LEVELS:
        n_taxa = int(taxon[level].max()) + 1
        names = np.array([f"{level}{i}" for i in range(n_taxa)], dtype=object)
        groups = {m: _groups(taxon[level][species_of[m]], n_taxa, CAP[m], rng) for m in POOL}
        for task in TASKS:
            start, length, items = groups[task.target]
            avail = np.flatnonzero(length > 0)
            k = min(CANDIDATES, avail.size) - 1
            correct = rng.choice(avail, QUERIES)
            cands = np.concatenate([correct[:, None], _distractors(avail, correct, k, rng)], 1)
            cands = np.take_along_axis(cands, rng.random(cands.shape).argsort(1), 1)
            flat = cands.ravel()
            lens = length[flat]
            offsets = np.zeros(flat.size + 1, np.int64)
            np.cumsum(lens, out=offsets[1:])
            take = np.repeat(start[flat] - offsets[:-1], lens) + np.arange(offsets[-1])
            inner = pa.ListArray.from_arrays(pa.array(offsets), pa.array(items[take]))
            outer = pa.array(np.arange(0, flat.size + 1, cands.shape[1], dtype=np.int32))
            frames.append(
                pl.DataFrame(
                    {
                        "task": [task.code] * QUERIES,
                        "taxon_level": [level] * QUERIES,
                        "query_payload_id": rng.integers(0, POOL[task.query], QUERIES),
                        "candidates_taxa": pl.Series(
                            pa.ListArray.from_arrays(outer, pa.array(names[flat].tolist()))
                        ),
                        "candidates_target_ids": pl.Series(pa.ListArray.from_arrays(outer, inner)),
                        "correct_taxon": names[correct].tolist(),
                        "taxon_class": CLASSES[rng.integers(0, 4, QUERIES)].tolist(),
                    }
                ).cast(TASK_DTYPES)  # type: ignore[arg-type]
            )
    media = {m: pl.DataFrame({"id": np.arange(POOL[m]), "file_path": [""] * POOL[m]}) for m in POOL}
    text = pl.DataFrame(
        {"id": np.arange(SPECIES)}
        | {c: [f"{c}{i}" for i in range(SPECIES)] for c in ("species", "genus", "family")}
        | {"class": ["Aves"] * SPECIES, "common_name": [f"common{i}" for i in range(SPECIES)]}
    )
    return OfficialBench(pl.concat(frames), media["audio"], media["image"], text)


def main() -> None:
    """Generate the bench, time its evaluation, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="auto", choices=["auto", "grouped", "dense"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--dim", type=int, default=DIM, help="embedding width")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bench = synthetic_bench(args.seed)
    t_build = time.perf_counter() - t0
    g = torch.Generator().manual_seed(args.seed)

    def unit(n: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=-1)

    emb = ev.BenchEmbeddings(
        audio=unit(POOL["audio"]),
        image=unit(POOL["image"]),
        text={c: unit(SPECIES) for c in ev.TEXT_COLUMNS},
    )
    wall, cpu = time.perf_counter(), time.process_time()
    report = ev.evaluate_bench(
        bench, emb, subset="seen", method=args.method, device=args.device, threads=args.threads
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    queries = sum(e["n_queries"] for e in report["results"].values())
    common = sum(e["n_queries"] for e in report[ev.COMMON]["results"].values())
    print(
        json.dumps(
            {
                "benchmark": "eval_speed",
                "species": SPECIES,
                "tasks": len(report["results"]),
                "common_name_tasks": len(report[ev.COMMON]["results"]),
                "queries": queries + common,
                "candidates": CANDIDATES,
                "pools": POOL,
                "dim": args.dim,
                "method": args.method,
                "device": args.device,
                "threads": args.threads or torch.get_num_threads(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count(),
                "build_s": round(t_build, 2),
                "eval_s": round(wall, 2),
                "eval_cpu_s": round(cpu, 2),
                "target_s": 60,
                "ok": wall < 60,
                "mean_top1": round(report["summary"]["seen/species"]["top1"], 4),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()

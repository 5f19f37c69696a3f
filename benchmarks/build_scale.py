"""Manifest build at the paper's scale: align + traits + split + bench + stats, timed per stage.

Generates synthetic raw records like BioVITA Train (14,133 species in 4 classes, 1,300,000
recordings, 2,300,000 photos; long-tailed counts) with the sample world's naming noise: about 12 %
of Xeno-canto species carry another name (an old genus listed as a synonym in the backbone, a
subspecies, case and spacing, a spelling variant) — plus a GBIF-style backbone (Taxon.tsv) and a
34-column trait CSV. Then every stage runs in its own child process (so each stage's peak RSS is
its own), through the same functions as the CLI (`biovita_data.app.stages`).

    python3 benchmarks/build_scale.py [--scale 1.0] [--workdir DIR] [--keep] [--quiet]

stdout: one JSON line: per stage seconds (measured inside the child) and peak RSS in MB, the
totals, and the row counts. Targets (2 cores): total under 120 s and every stage under 6 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from biovita_data.core.schemas import RAW_RECORD
from biovita_data.core.vocab import TRAIT_COLUMNS

SPECIES, RECORDINGS, PHOTOS = 14_133, 1_300_000, 2_300_000
CLASSES = {"Aves": 0.65, "Amphibia": 0.12, "Mammalia": 0.08, "Insecta": 0.15}
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
STAGES = ("align", "traits", "split", "bench", "stats")


def words(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    """n distinct random lower-case words of lo..hi letters."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = n - len(out)
        lens = rng.integers(lo, hi + 1, size=k)
        chars = LETTERS[rng.integers(0, 26, size=(k, hi))]
        for row, n_chars in zip(chars, lens, strict=True):
            w = "".join(row[:n_chars])
            if w not in seen:
                seen.add(w)
                out.append(w)
    return np.array(out)


def taxonomy(rng: np.random.Generator, n_species: int) -> pl.DataFrame:
    """Species with lineage: about 2.8 species per genus, 7 genera per family, 9 per order."""
    n_genera = max(4, n_species * 10 // 28)
    n_families = max(4, n_genera // 7)
    n_orders = max(4, n_families // 9)
    orders = pl.DataFrame(
        {
            "order": [w.capitalize() + "iformes" for w in words(rng, n_orders, 5, 8)],
            "class": rng.choice(list(CLASSES), size=n_orders, p=list(CLASSES.values())),
        }
    )
    families = pl.DataFrame(
        {
            "family": [w.capitalize() + "idae" for w in words(rng, n_families, 5, 8)],
            "_o": np.sort(rng.integers(0, n_orders, size=n_families)),
        }
    )
    genera = pl.DataFrame(
        {
            "genus": [w.capitalize() for w in words(rng, n_genera * 2, 6, 10)][:n_genera],
            "old_genus": [w.capitalize() for w in words(rng, n_genera * 2, 6, 10)][n_genera:],
            "_f": np.sort(rng.integers(0, n_families, size=n_genera)),
        }
    )
    epithets = words(rng, n_species, 6, 11)
    sp = pl.DataFrame(
        {
            "taxon_id": np.arange(1_000_000, 1_000_000 + n_species),
            "epithet": epithets,
            "_g": np.sort(rng.integers(0, n_genera, size=n_species)),
            "variant": rng.choice(
                ["none", "old_genus", "subspecies", "case_space", "spelling"],
                size=n_species,
                p=[0.88, 0.03, 0.03, 0.03, 0.03],
            ),
            "common_name": [f"{w.capitalize()} bird" for w in epithets],
        }
    )
    sp = (
        sp.join(genera.with_row_index("_g").with_columns(pl.col("_g").cast(pl.Int64)), on="_g")
        .join(families.with_row_index("_f").with_columns(pl.col("_f").cast(pl.Int64)), on="_f")
        .join(orders.with_row_index("_o").with_columns(pl.col("_o").cast(pl.Int64)), on="_o")
        .with_columns(name=pl.format("{} {}", "genus", "epithet"))
    )
    # a spelling variant must not be another species' name: the ending changes -> "ae"
    return sp.with_columns(
        xc_name=pl.when(pl.col("variant") == "old_genus")
        .then(pl.format("{} {}", "old_genus", "epithet"))
        .when(pl.col("variant") == "subspecies")
        .then(pl.format("{} {} {}", "genus", "epithet", pl.col("epithet").str.reverse()))
        .when(pl.col("variant") == "case_space")
        .then(pl.format("{}  {}", pl.col("genus").str.to_lowercase(), "epithet"))
        .when(pl.col("variant") == "spelling")
        .then(
            pl.format(
                "{} {}ae",
                "genus",
                pl.col("epithet").str.slice(0, pl.col("epithet").str.len_chars() - 1),
            )
        )
        .otherwise("name")
    ).sort("taxon_id")


def long_tail(rng: np.random.Generator, n_species: int, total: int, cap: int | None) -> np.ndarray:
    """Records per species: log-normal, at least 1, scaled to about `total`."""
    w = rng.lognormal(0.0, 1.3, size=n_species)
    counts = np.maximum(1, np.round(w / w.sum() * total)).astype(np.int64)
    if cap:
        counts = np.minimum(counts, cap)
        for _ in range(20):  # spread what the cap removed over the species below it
            missing = total - counts.sum()
            room = counts < cap
            if missing <= 0 or not room.any():
                break
            counts[room] += np.maximum(1, missing // room.sum())
            counts = np.minimum(counts, cap)
    return counts


def records(
    sp: pl.DataFrame,
    counts: np.ndarray,
    source: str,
    modality: str,
    start: int,
    rng: np.random.Generator,
) -> pl.DataFrame:
    idx = np.repeat(np.arange(sp.height), counts)
    base = sp[idx]
    n = base.height
    xc = source == "xeno-canto"
    licenses = ["cc-by-nc-sa-4.0", "cc-by-4.0", "cc0-1.0", "cc-by-nc-4.0", "cc-by-sa-4.0"]
    df = pl.DataFrame(
        {
            "source": source,
            "modality": modality,
            "record_id": (np.arange(start, start + n)).astype(str),
            "observation_id": None if xc else rng.integers(1, n // 2 + 2, size=n) + start,
            "raw_scientific_name": base["xc_name" if xc else "name"],
            "raw_taxon_id": None if xc else base["taxon_id"],
            "raw_taxon_rank": None if xc else "species",
            "common_name": base["common_name"],
            "license": rng.choice(licenses, size=n),
            "attribution": "someone",
            "media_url": "https://example.org/media/"
            + pl.Series(np.arange(start, start + n).astype(str)),
            "file_format": "mp3" if modality == "audio" else "jpg",
            "duration_s": rng.gamma(2.0, 12.5, size=n) if modality == "audio" else None,
            "sample_rate": 44100 if modality == "audio" else None,
            "quality": "A" if xc else "research",
            "country": "Somewhere",
        },
        strict=False,
    )
    cols = {f.name: pl.lit(None) for f in RAW_RECORD if f.name not in df.columns}
    return df.with_columns(**cols).select([f.name for f in RAW_RECORD])


def generate(work: Path, scale: float, seed: int = 0) -> dict:
    """Write OUT/raw/{xeno_canto,inaturalist}/records.parquet, Taxon.tsv and traits.csv."""
    from biovita_data.core.tables import write_table

    rng = np.random.default_rng(seed)
    n_species = int(SPECIES * scale)
    sp = taxonomy(rng, n_species)
    n_rec, n_img = int(RECORDINGS * scale), int(PHOTOS * scale)
    xc_counts = long_tail(rng, n_species, int(n_rec * 0.8), None)
    in_counts = long_tail(rng, n_species, n_rec - int(xc_counts.sum()), None)
    img_counts = long_tail(rng, n_species, n_img, 200)
    xc = records(sp, xc_counts, "xeno-canto", "audio", 10_000_000, rng)
    inat = pl.concat(
        [
            records(sp, in_counts, "inaturalist", "audio", 50_000_000, rng),
            records(sp, img_counts, "inaturalist", "image", 100_000_000, rng),
        ]
    )
    out = work / "out"
    write_table(xc.to_arrow().cast(RAW_RECORD), out / "raw" / "xeno_canto" / "records.parquet")
    write_table(inat.to_arrow().cast(RAW_RECORD), out / "raw" / "inaturalist" / "records.parquet")
    accepted = sp.select(
        taxonID=pl.col("taxon_id").cast(pl.String),
        canonicalName="name",
        taxonRank=pl.lit("species"),
        taxonomicStatus=pl.lit("accepted"),
        acceptedNameUsageID=pl.lit(""),
        kingdom=pl.lit("Animalia"),
        phylum=pl.when(pl.col("class") == "Insecta")
        .then(pl.lit("Arthropoda"))
        .otherwise(pl.lit("Chordata")),
        **{"class": "class", "order": "order", "family": "family", "genus": "genus"},
        vernacularName="common_name",
    )
    synonyms = (
        sp.filter(pl.col("variant") == "old_genus")
        .with_columns(
            taxonID=(pl.col("taxon_id") + 5_000_000).cast(pl.String),
            canonicalName="xc_name",
            taxonomicStatus=pl.lit("synonym"),
            acceptedNameUsageID=pl.col("taxon_id").cast(pl.String),
        )
        .join(
            accepted.drop("canonicalName", "taxonomicStatus", "acceptedNameUsageID"),
            left_on=pl.col("taxon_id").cast(pl.String),
            right_on="taxonID",
        )
        .select(accepted.columns)
    )
    pl.concat([accepted, synonyms]).write_csv(work / "Taxon.tsv", separator="\t")
    traits = sp.select(scientific_name="name").with_columns(
        **{
            c: pl.Series(rng.choice([0, 1, -1], size=n_species, p=[0.6, 0.3, 0.1])).replace(
                -1, None
            )
            for c in TRAIT_COLUMNS
        }
    )
    traits.write_csv(work / "traits.csv")
    return {
        "species": n_species,
        "recordings": xc.height + int(in_counts.sum()),
        "photos": int(img_counts.sum()),
    }


CHILD = """
import json, resource, sys, time
from pathlib import Path
from rich.console import Console
from biovita_data.app.stages import RUNNERS
stage, out, cfg = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
t = time.perf_counter()
RUNNERS[stage](out, cfg, Console(quiet=True))
print(json.dumps({"seconds": round(time.perf_counter() - t, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def run_stages(work: Path, quiet: bool) -> dict:
    out = work / "out"
    cfg = {
        "align": {"backbone": str(work / "Taxon.tsv"), "max_images_per_species": 200},
        "traits": {"tables": [f"csv={work / 'traits.csv'}"]},
        "split": {},
        "bench": {},
        "stats": {},
    }
    result = {}
    for stage in STAGES:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, stage, str(out), json.dumps(cfg[stage])],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"stage {stage} failed")
        result[stage] = json.loads(proc.stdout.strip().splitlines()[-1])
        if not quiet:
            print(f"{stage}: {result[stage]}", file=sys.stderr)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = the paper's size")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated build")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="biovita-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        sizes = generate(work, args.scale)
        gen_s = round(time.perf_counter() - t, 1)
        if not args.quiet:
            print(f"generated {sizes} in {gen_s} s under {work}", file=sys.stderr)
        stages = run_stages(work, args.quiet)
        out = work / "out" / "manifests"
        counts = {
            m: pl.scan_parquet(out / f"{m}.parquet").select(pl.len()).collect().item()
            for m in ("species", "audio", "image")
        }
        total = round(sum(s["seconds"] for s in stages.values()), 2)
        peak = max(s["peak_rss_mb"] for s in stages.values())
        print(
            json.dumps(
                {
                    "benchmark": "build_scale",
                    "scale": args.scale,
                    "generated": sizes,
                    "manifest_rows": counts,
                    "stages": stages,
                    "total_seconds": total,
                    "peak_rss_mb": peak,
                    "target_seconds": 120,
                    "target_peak_mb": 6144,
                    "pass": total < 120 and peak < 6144,
                    "cpus": os.cpu_count(),
                    "generate_seconds": gen_s,
                    "bench_mb": round(
                        sum(
                            f.stat().st_size
                            for f in (work / "out" / "bench").rglob("*")
                            if f.is_file()
                        )
                        / 2**20,
                        1,
                    ),
                }
            )
        )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""`import-tol` at the paper's scale: 200 TreeOfLife-200M images per species for 14,133 species.

Writes a synthetic TreeOfLife-200M catalog + provenance of 20 M rows each (the release's columns;
long-tailed rows per species over the 14,133 corpus species and 3x as many others; 10 % of the
licences not allowed, some owners `not provided`), in row groups so generation never holds it
all, plus raw audio records naming the corpus species. Then `import_tol` runs in a child
process (its peak RSS is its own) and draws up to 200 images per corpus species.

    python3 benchmarks/import_tol.py [--scale 1.0] [--workdir DIR] [--keep] [--quiet]

`--scale` multiplies the rows and the species (0.1: 2 M rows, 1,413 species), so two scales show
how time and memory grow. stdout: one JSON line (seconds, peak RSS, rows, drawn, rows/s).
Target (2 cores): under 60 s and 4 GB at scale 1.
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
import pyarrow.parquet as pq

ROWS, SPECIES, PER_SPECIES = 20_000_000, 14_133, 200
OTHERS = 3  # non-corpus species per corpus species
CHUNK = 2_000_000
CLASSES = ("Aves", "Amphibia", "Mammalia", "Insecta")
LICENCES = {  # (license_name, license_link) -> weight
    ("cc-by-nc", "https://creativecommons.org/licenses/by-nc/4.0/"): 0.45,
    ("cc-by", "https://creativecommons.org/licenses/by/4.0/"): 0.25,
    ("cc0", "https://creativecommons.org/publicdomain/zero/1.0/"): 0.10,
    ("cc-by-sa", "https://creativecommons.org/licenses/by-sa/4.0/"): 0.05,
    ("cc-by-nc-sa", "https://creativecommons.org/licenses/by-nc-sa/4.0/"): 0.05,
    ("cc-by-nd", "https://creativecommons.org/licenses/by-nd/4.0/"): 0.04,
    ("All rights reserved", None): 0.06,
}
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def names(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct binomials of random letters."""
    out: set[str] = set()
    while len(out) < n:
        g = "".join(rng.choice(LETTERS, 7)).capitalize()
        e = "".join(rng.choice(LETTERS, 8))
        out.add(f"{g} {e}")
    return sorted(out)


def generate(workdir: Path, scale: float, seed: int = 0) -> dict:
    """Catalog, provenance (row groups of CHUNK rows) and OUT/raw audio records."""
    rng = np.random.default_rng(seed)
    rows, n_corpus = int(ROWS * scale), max(10, int(SPECIES * scale))
    all_names = names(rng, n_corpus * (1 + OTHERS))
    corpus = list(rng.choice(all_names, n_corpus, replace=False))
    # long tail: Zipf-like weights over all species, shuffled
    weights = 1.0 / np.arange(1, len(all_names) + 1) ** 0.8
    weights = rng.permutation(weights / weights.sum())
    species = pl.DataFrame({"scientific_name": all_names}).with_columns(
        genus=pl.col("scientific_name").str.split(" ").list.first(),
        species=pl.col("scientific_name").str.split(" ").list.last(),
        **{"class": pl.Series(rng.choice(CLASSES, len(all_names)))},
    )
    lic = list(LICENCES)
    lic_p = np.array(list(LICENCES.values()))
    cat_w = pq.ParquetWriter(workdir / "catalog.parquet", _catalog_schema(), compression="zstd")
    prov_w = pq.ParquetWriter(workdir / "provenance.parquet", _prov_schema(), compression="zstd")
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        idx = rng.choice(len(all_names), n, p=weights)
        raw = np.frombuffer(rng.bytes(16 * n), dtype="S16")
        uuid = pl.Series("uuid", raw, dtype=pl.Binary).bin.encode("hex")
        ids = pl.Series("n", np.arange(done, done + n, dtype=np.int64))
        sp = species[idx]
        chunk = pl.DataFrame({"uuid": uuid, "n": ids}).with_columns(
            source_url=pl.format(
                "https://inaturalist-open-data.s3.amazonaws.com/photos/{}/original.jpg", "n"
            ),
            kingdom=pl.lit("Animalia"),
            phylum=pl.lit("Chordata"),
            **{"class": sp["class"], "order": pl.lit("Incertae"), "family": pl.lit("Incertidae")},
            genus=sp["genus"],
            species=sp["species"],
            scientific_name=sp["scientific_name"],
            common=pl.lit(None, pl.String),
            data_source=pl.lit("gbif"),
            publisher=pl.lit("iNaturalist.org"),
            basisOfRecord=pl.lit("HUMAN_OBSERVATION"),
            img_type=pl.lit("Citizen Science"),
            source_id=pl.col("n").cast(pl.String),
            shard_filename=pl.format("shard-{}.tar", pl.col("n") // 10_000),
        )
        cat_w.write_table(chunk.drop("n").to_arrow().cast(_catalog_schema()))
        pick = rng.choice(len(lic), n, p=lic_p)
        owners = rng.integers(0, 5000, n)
        prov = chunk.select("uuid", "source_id", "data_source", "source_url").with_columns(
            license_name=pl.Series([lic[i][0] for i in range(len(lic))])[pick],
            copyright_owner=pl.when(pl.Series(owners) % 10 == 0)
            .then(pl.lit("not provided"))
            .otherwise(pl.format("observer {}", pl.Series(owners))),
            license_link=pl.Series([lic[i][1] for i in range(len(lic))], dtype=pl.String)[pick],
            title=pl.lit(None, pl.String),
        )
        prov_w.write_table(prov.to_arrow().cast(_prov_schema()))
        done += n
    cat_w.close()
    prov_w.close()
    out = workdir / "out"
    raw_dir = out / "raw" / "xeno_canto"
    raw_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"source": "xeno-canto", "modality": "audio",
         "record_id": [str(i) for i in range(len(corpus))], "raw_scientific_name": corpus}
    ).write_parquet(raw_dir / "records.parquet")  # fmt: skip
    return {"rows": rows, "species": n_corpus, "species_in_catalog": len(all_names)}


def _catalog_schema():
    import pyarrow as pa

    cols = ("uuid", "source_url", "kingdom", "phylum", "class", "order", "family", "genus",
            "species", "scientific_name", "common", "data_source", "publisher", "basisOfRecord",
            "img_type", "source_id", "shard_filename")  # fmt: skip
    return pa.schema([(c, pa.string()) for c in cols])


def _prov_schema():
    import pyarrow as pa

    cols = ("uuid", "source_id", "data_source", "source_url", "license_name", "copyright_owner",
            "license_link", "title")  # fmt: skip
    return pa.schema([(c, pa.string()) for c in cols])


# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into a child across exec
CHILD = """
import json, sys, time
from pathlib import Path
from biovita_data.crawl.sources.treeoflife import import_tol
w = Path(sys.argv[1])
t = time.perf_counter()
r = import_tol(w / "catalog.parquet", w / "provenance.parquet", w / "out",
               per_species=int(sys.argv[2]))
s = time.perf_counter() - t
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
rss = int(hwm.split()[1]) / 1024
print(json.dumps({"seconds": round(s, 2), "peak_rss_mb": round(rss), "drawn": r.kept,
                  "failed": sum(r.dropped.values())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-tol-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        info = generate(workdir, args.scale)
        gen = time.perf_counter() - t
        if not args.quiet:
            print(f"generated {info['rows']:,} rows in {gen:.1f} s", file=sys.stderr)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(workdir), str(PER_SPECIES)],
            stdout=subprocess.PIPE, text=True, check=True, env=env,
        )  # fmt: skip
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        result = {
            "benchmark": "import_tol",
            "scale": args.scale,
            **info,
            "per_species": PER_SPECIES,
            **child,
            "rows_per_s": round(info["rows"] / child["seconds"]),
            "catalog_mb": round((workdir / "catalog.parquet").stat().st_size / 2**20),
            "cores": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "targets": {"seconds": 60, "peak_rss_mb": 4096, "at_scale": 1.0},
        }
        print(json.dumps(result))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

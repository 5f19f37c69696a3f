"""How far a run's towers carry over to unseen species: does an unseen item land near its genus?

    python scripts/genus_transfer.py RUN [RUN ...] --bench OUT/bench [--dataset OUT/hf]

For each run, every item of the unseen bench (audio, photos, species texts) is embedded and
placed at the nearest seen species, by cosine to the centroid of that species' items in the
seen bench (one modality against another: nine pairs). Printed per run, one JSON line: the
share (%) of unseen items whose nearest seen species is of their own genus ("photo -> photo"
tells how well the image tower groups a new species with its genus). The README's "unseen
photos nearest their genus" figures come from this script. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODALITIES = ("audio", "image", "text")


Items = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]


def _items(run: Path, bench: Path, dataset: Path | None) -> tuple[Items, dict[int, str]]:
    """Per subset and modality (embeddings, species ids) of the bench's items; each species'
    genus."""
    from biovita_data.core.layout import BENCH_SPLIT_OF_SUBSET
    from biovita_model.eval.media import PublishedMedia
    from biovita_model.eval.run import embed_bench
    from biovita_model.eval.subsets import default_dataset, find_benches, load_subset
    from biovita_model.model import load_model

    model = load_model(run, map_location="cpu").eval()
    media = PublishedMedia(dataset if dataset is not None else default_dataset(bench))
    subsets = find_benches(bench, "all")
    if set(subsets) != {"seen", "unseen"}:
        raise ValueError(f"{bench}: needs the seen and the unseen subset, found {sorted(subsets)}")
    items: Items = {}
    genus: dict[int, str] = {}
    for name, where in subsets.items():
        if not isinstance(where, Path):
            raise ValueError(f"{bench}: give the bench folder OUT/bench (with ids/*.parquet)")
        subset = load_subset(where)
        emb, _ = embed_bench(model, subset, media, splits=[BENCH_SPLIT_OF_SUBSET[name]])
        ids = where / "ids"
        text = pl.read_parquet(ids / "text_index.parquet").sort("id")
        genus.update(zip(text["species_id"].to_list(), text["genus"].to_list(), strict=True))
        items[name] = {"text": (emb.text["species"].numpy(), text["species_id"].to_numpy())}
        for m in ("audio", "image"):
            index = pl.read_parquet(ids / f"{m}_index.parquet").sort("id")
            items[name][m] = (np.asarray(getattr(emb, m)), index["species_id"].to_numpy())
    return items, genus


def genus_transfer(items: Items, genus: dict[int, str]) -> dict[str, float]:
    """Share (%) of unseen items whose nearest seen-species centroid is of their genus."""
    result = {}
    for q in MODALITIES:
        x, species = items["unseen"][q]
        for t in MODALITIES:
            seen, seen_species = items["seen"][t]
            keys = np.unique(seen_species)
            centroids = np.stack([seen[seen_species == k].mean(0) for k in keys])
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
            nearest = keys[(x @ centroids.T).argmax(1)]
            hits = [genus[a] == genus[b] for a, b in zip(species, nearest, strict=True)]
            result[f"{q} -> {t}"] = round(100 * float(np.mean(hits)), 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=None)
    args = parser.parse_args()
    from biovita_data.app.clikit import error_line

    for run in args.runs:
        try:
            shares = genus_transfer(*_items(run, args.bench, args.dataset))
        except (FileNotFoundError, ValueError) as exc:
            error_line(f"{run}: {exc}")
            return 2
        print(json.dumps({"run": str(run), "unseen_nearest_seen_species_of_own_genus": shares}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

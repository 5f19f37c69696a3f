"""The species config of a published dataset, as small per-label arrays: names, prompts, traits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.loader.prompts import TEMPLATES, species_prompts, taxonomic_name

_NAME_COLUMNS = ("class", "order", "family", "genus", "species")


@dataclass(frozen=True)
class SpeciesTable:
    """Per-species data indexed by label (the position of the species in species_id order)."""

    species_id: np.ndarray  # int64 (n,), -1 where a label has no row
    scientific_name: tuple[str, ...]
    common_name: tuple[str | None, ...]
    taxonomic: tuple[str, ...]  # "class order family genus species"
    prompts: tuple[tuple[str, ...], ...]  # the filled templates of each species
    traits: np.ndarray  # float32 (n, 34), NaN where unknown
    trait_mask: np.ndarray  # bool (n, 34), True where known
    lineage: dict[str, tuple[str | None, ...]]  # class, order, family, genus, species

    def __len__(self) -> int:
        return int(self.species_id.shape[0])


def read_species(
    files: Sequence[Path], templates: Sequence[str] = TEMPLATES, labels: np.ndarray | None = None
) -> SpeciesTable:
    """Read the species config (Parquet) into a SpeciesTable; labels index the arrays directly."""
    wanted = ["label", "species_id", "scientific_name", "common_name", *_NAME_COLUMNS]
    present = set(pq.read_schema(files[0]).names)
    columns = [c for c in (*wanted, *TRAIT_COLUMNS) if c in present]
    table = pa.concat_tables(pq.ParquetFile(path).read(columns=columns) for path in files)
    rows = table.select([c for c in columns if c not in TRAIT_COLUMNS]).to_pydict()
    n_rows = len(rows["species_id"])
    if "label" in rows:
        label = np.asarray(rows["label"], dtype=np.int64)
    else:  # the contract's definition: position in species_id order
        label = np.argsort(np.argsort(np.asarray(rows["species_id"]), kind="stable"))
    n = int(label.max()) + 1 if n_rows else 0
    if labels is not None and labels.size:
        n = max(n, int(labels.max()) + 1)

    def per_label(values: list, fill: object) -> list:
        """Rows' values placed at their labels; `fill` where a label has no row."""
        out = [fill] * n
        for pos, value in zip(label.tolist(), values, strict=True):
            out[pos] = value
        return out

    species_id = np.full(n, -1, dtype=np.int64)
    species_id[label] = np.asarray(rows["species_id"], dtype=np.int64)
    scientific = per_label(rows["scientific_name"], "")
    common = per_label(rows.get("common_name", [None] * n_rows), None)
    lineage = {
        rank: tuple(per_label(rows.get(rank, [None] * n_rows), None)) for rank in _NAME_COLUMNS
    }
    lineage["species"] = tuple(
        s or sci for s, sci in zip(lineage["species"], scientific, strict=True)
    )
    taxonomic = tuple(
        taxonomic_name({rank: lineage[rank][i] for rank in _NAME_COLUMNS}) or scientific[i]
        for i in range(n)
    )
    prompts = tuple(
        species_prompts(
            common=common[i], scientific=scientific[i], taxonomic=taxonomic[i], templates=templates
        )
        for i in range(n)
    )
    traits = np.full((n, len(TRAIT_COLUMNS)), np.nan, dtype=np.float32)
    for j, column in enumerate(TRAIT_COLUMNS):
        if column in table.column_names:
            values = table.column(column).cast(pa.float32()).fill_null(np.nan)
            traits[label, j] = values.to_numpy()
    return SpeciesTable(
        species_id=species_id,
        scientific_name=tuple(scientific),
        common_name=tuple(common),
        taxonomic=taxonomic,
        prompts=prompts,
        traits=traits,
        trait_mask=~np.isnan(traits),
        lineage=lineage,
    )

"""The split stage: unseen species held out whole, a share of each seen species -> test, and an
assignment that stays put from one build to the next.

Items are split by **unit**: an iNaturalist observation (its photos show one animal), a duplicate
group of kind exact or near (OUT/manifests/duplicates.parquet, `dedup`), else the record itself;
a unit never straddles train and test. Every placement is kept in
OUT/manifests/assignment.parquet (align rewrites the manifests with `split` null): a later run
keeps every item that survives where it was, a species chosen as unseen stays unseen (its new
items too), and the new units of a seen species fill its test quota, picked by a keyed hash of
(seed, modality, species, unit) -- never by row order or by what else is in the corpus. An item
whose species changed (re-identified, a taxon split or lump) moves only as far as that requires.
`redraw=True` forgets the old assignment and draws everything afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.draws import keyed_hash
from biovita_data.core.schemas import ASSIGNMENT, DUPLICATES, MEDIA, SPECIES
from biovita_data.core.tables import read_table, write_json_atomic, write_table
from biovita_data.curate.settings import SplitSettings

MODALITIES = ("audio", "image")
BINDING_KINDS = ("exact", "near")  # duplicate kinds that bind a split; `metadata` does not
PLACED = ("train", "test")


@dataclass
class SplitResult:
    species: dict[str, int]  # split_group -> species
    audio: dict[str, int]  # split -> recordings
    image: dict[str, int]
    previous: str = "none"  # the assignment started from: a path, "none" or "redraw"
    kept: int = 0  # surviving items on the side they were
    new: int = 0  # items placed for the first time
    moved: dict[str, int] = field(default_factory=dict)  # reason -> surviving items moved


def unit_key(media: pl.DataFrame) -> pl.Expr:
    """An item's own unit: `<source>:obs:<observation_id>`, else `<source>:<record_id>`."""
    return (
        pl.when(pl.col("observation_id").is_not_null())
        .then(pl.format("{}:obs:{}", "source", "observation_id"))
        .otherwise(pl.format("{}:{}", "source", "record_id"))
    )


def _merge_duplicates(media: pl.DataFrame, dups: pl.DataFrame) -> pl.DataFrame:
    """Replace `unit` by its connected component over the binding duplicate groups (the
    smallest unit key of the component: independent of row order)."""
    members = (
        dups.join(media.select("source", "record_id", "unit"), on=["source", "record_id"])
        .group_by("group_id")
        .agg(pl.col("unit").unique().sort())
        .filter(pl.col("unit").list.len() > 1)
        .sort("group_id")
    )
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for units in members["unit"].to_list():  # union-find: a graph walk, not a table operation
        roots = sorted({find(u) for u in units})
        for r in roots[1:]:
            parent[r] = roots[0]
    if not parent:
        return media
    mapping = pl.DataFrame(
        {"unit": list(parent), "_root": [find(u) for u in parent]},
        schema={"unit": pl.String, "_root": pl.String},
    )
    return (
        media.join(mapping, on="unit", how="left", maintain_order="left")
        .with_columns(unit=pl.coalesce("_root", "unit"))
        .drop("_root")
    )


def load_previous(out: Path, previous: Path | None = None) -> tuple[pl.DataFrame | None, str]:
    """The assignment to keep: PREVIOUS's (else OUT's) assignment.parquet, or the `split` column
    of manifests split before that file existed; (None, "none") when there is none."""
    folder = Path(previous) if previous is not None else out
    path = layout.assignment_path(folder)
    if path.exists():
        return pl.from_arrow(read_table(path, ASSIGNMENT)), str(path)  # type: ignore[return-value]
    frames = []
    for m in MODALITIES:
        mpath = layout.media_manifest_path(folder, m)
        if mpath.exists():
            cols = ["source", "modality", "record_id", "species_id", "observation_id", "split"]
            df = pl.read_parquet(mpath, columns=cols).filter(pl.col("split").is_not_null())
            frames.append(df.with_columns(unit=unit_key(df), present=pl.lit(True)))
    found = pl.concat(frames) if frames else None
    if found is not None and found.height:
        where = f"{layout.manifests_dir(folder)} (split column)"
        return found.select([f.name for f in ASSIGNMENT]), where
    if previous is not None:
        raise FileNotFoundError(f"--previous {previous}: neither {path} nor split manifests there")
    return None, "none"


def _species_groups(
    species: pl.DataFrame,
    items: pl.DataFrame,
    prev: pl.DataFrame | None,
    unseen_max_audio: int,
) -> pl.DataFrame:
    """species_id -> split_group. Without a previous assignment: unseen when the species has at
    most `unseen_max_audio` recordings. With one: the group that moves the fewest surviving items
    (their previous sides: train/test -> seen, unseen -> unseen); a tie keeps the species'
    previous group, and a species the previous assignment never saw gets the threshold rule."""
    threshold = (
        pl.when(pl.col("n_audio").fill_null(0) <= unseen_max_audio)
        .then(pl.lit("unseen"))
        .otherwise(pl.lit("seen"))
    )
    groups = species.select("species_id", _rule=threshold)
    if prev is None:
        return groups.select("species_id", split_group="_rule")
    votes = (
        items.filter(pl.col("prev_split").is_not_null())
        .group_by("species_id")
        .agg(
            _seen=pl.col("prev_split").is_in(PLACED).sum(),
            _unseen=(pl.col("prev_split") == "unseen").sum(),
        )
    )
    before = prev.group_by("species_id").agg(
        _before=pl.when((pl.col("split") == "unseen").all())
        .then(pl.lit("unseen"))
        .otherwise(pl.lit("seen"))
    )
    group = (
        pl.when(pl.col("_seen").fill_null(0) > pl.col("_unseen").fill_null(0))
        .then(pl.lit("seen"))
        .when(pl.col("_seen").fill_null(0) < pl.col("_unseen").fill_null(0))
        .then(pl.lit("unseen"))
        .otherwise(pl.coalesce("_before", "_rule"))
    )
    return (
        groups.join(votes, on="species_id", how="left")
        .join(before, on="species_id", how="left")
        .select("species_id", split_group=group)
    )


def _assign(
    items: pl.DataFrame,
    groups: pl.DataFrame,
    seed: int,
    fraction: float,
    modality: str,
    *,
    keep: bool = True,
) -> pl.DataFrame:
    """Add `split` to one modality's items (with `unit`, `prev_split`): unseen for unseen
    species; a unit with surviving train/test members keeps their side (the majority; a tie ->
    test); each seen species' new units join test, in keyed-hash order, until its test units
    reach round(units x fraction) (at least one when it has two or more), else train."""
    # decided on four narrow columns, then `split` added to the items (a wide join, filter or
    # sort of every item costs ~1 GB of photos at the paper's scale)
    df = items.select("_i", "species_id", "unit", "prev_split").join(
        groups, on="species_id", how="left", maintain_order="left"
    )
    seen = df.filter(pl.col("split_group") == "seen")
    # a unit's species for the quota: the one most of its seen members belong to (tie: smallest)
    owner = (
        seen.group_by("unit", "species_id")
        .len()
        .sort(["unit", "len", "species_id"], descending=[False, True, False])
        .group_by("unit", maintain_order=True)
        .first()
        .select("unit", _owner="species_id")
    )
    placed = pl.col("prev_split").is_in(PLACED) & pl.lit(keep)
    kept = (
        seen.filter(placed)
        .group_by("unit")
        .agg(
            _kept=pl.when((pl.col("prev_split") == "test").sum() * 2 >= pl.len())
            .then(pl.lit("test"))
            .otherwise(pl.lit("train"))
        )
    )
    units = owner.join(kept, on="unit", how="left").sort("unit")
    n = pl.len().over("_owner")
    quota = pl.when(n >= 2).then((n * fraction + 0.5).floor().clip(lower_bound=1)).otherwise(0)
    units = units.with_columns(
        _need=(quota - (pl.col("_kept") == "test").sum().over("_owner")).clip(lower_bound=0),
        _h=keyed_hash(seed, modality, units["_owner"], units["unit"]),
    )
    fresh = units.filter(pl.col("_kept").is_null()).with_columns(
        _rank=pl.col("_h").rank("ordinal").over("_owner")
    )
    fresh = fresh.select(
        "unit",
        _new=pl.when(pl.col("_rank") <= pl.col("_need"))
        .then(pl.lit("test"))
        .otherwise(pl.lit("train")),
    )
    units = units.join(fresh, on="unit", how="left").select(
        "unit", _side=pl.coalesce("_kept", "_new")
    )
    df = df.join(units, on="unit", how="left", maintain_order="left")
    split = (
        pl.when(pl.col("split_group") == "unseen").then(pl.lit("unseen")).otherwise(pl.col("_side"))
    )
    items = items.with_columns(split=df.select(split=split)["split"])
    return items if items["_i"].is_sorted() else items.sort("_i")


def _moved_reason(redraw: bool) -> pl.Expr:
    """Why a surviving item changed side: its species changed (a re-identification, a taxon
    split or lump, a species' group decided by the majority), a duplicate group joined two sides,
    or a redraw."""
    if redraw:
        return pl.lit("redraw")
    return (
        pl.when(pl.col("prev_species") != pl.col("species_id"))
        .then(pl.lit("species_changed"))
        .when((pl.col("prev_split") == "unseen") | (pl.col("split") == "unseen"))
        .then(pl.lit("species_group_changed"))
        .otherwise(pl.lit("unit_merged"))
    )


def split(
    out: Path,
    *,
    seed: int = SplitSettings.seed,
    test_fraction: float = SplitSettings.test_fraction,
    unseen_max_audio: int = SplitSettings.unseen_max_audio,
    previous: Path | None = None,
    redraw: bool = False,
    console: Console | None = None,
) -> SplitResult:
    """Write `split` on the audio/image manifests, `split_group` on species, the assignment and
    OUT/manifests/split.json; keeps a previous assignment (OUT's or PREVIOUS's) unless redraw."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"--test-fraction must be between 0 and 1, not {test_fraction}")
    if redraw and previous is not None:
        raise ValueError("--redraw and --previous exclude each other: a redraw keeps nothing")
    path = layout.species_path(out)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `biovita-data align` first")
    species = pl.from_arrow(read_table(path, SPECIES))
    prev, where = load_previous(out, previous)  # with redraw: only to count what moved
    if redraw:
        where = "redraw"
    dups = pl.from_arrow(read_table(layout.duplicates_path(out), DUPLICATES)).filter(
        pl.col("kind").is_in(BINDING_KINDS)
    )
    items = {}
    for m in MODALITIES:
        media = pl.from_arrow(read_table(layout.media_manifest_path(out, m), MEDIA))
        media = media.with_row_index("_i").with_columns(unit=unit_key(media))
        media = _merge_duplicates(media, dups.filter(pl.col("modality") == m))
        if prev is not None:
            before = prev.filter(pl.col("modality") == m).select(
                "source", "record_id", prev_species="species_id", prev_split="split"
            )
            key = ["source", "record_id"]
            media = media.join(before, on=key, how="left", maintain_order="left")
        else:
            media = media.with_columns(
                prev_species=pl.lit(None, pl.Int64), prev_split=pl.lit(None, pl.String)
            )
        items[m] = media
    both = pl.concat([d.select("species_id", "prev_split") for d in items.values()])
    groups = _species_groups(species, both, None if redraw else prev, unseen_max_audio)
    species = species.drop("split_group").join(groups, on="species_id", how="left")
    result = SplitResult(species={}, audio={}, image={}, previous=where)
    assignment = []
    moved: dict[str, int] = {}
    for m, media in items.items():
        media = _assign(media, groups, seed, test_fraction, m, keep=not redraw)
        write_table(
            media.select([f.name for f in MEDIA]).to_arrow().cast(MEDIA),
            layout.media_manifest_path(out, m),
        )
        counts = dict(sorted(media.group_by("split").len().iter_rows()))
        setattr(result, m, counts)
        surviving = media.filter(pl.col("prev_split").is_not_null())
        changed = surviving.filter(pl.col("prev_split") != pl.col("split"))
        for reason, n in changed.group_by(_moved_reason(redraw).alias("r")).len().iter_rows():
            moved[reason] = moved.get(reason, 0) + n
        result.kept += surviving.height - changed.height
        result.new += media.height - surviving.height
        assignment.append(
            media.select([f.name for f in ASSIGNMENT if f.name != "present"]).with_columns(
                present=pl.lit(True)
            )
        )
    result.moved = dict(sorted(moved.items()))
    table = pl.concat(assignment)
    if prev is not None and not redraw:  # items gone keep their side, should they come back
        gone = prev.join(table, on=["source", "modality", "record_id"], how="anti")
        table = pl.concat([table, gone.with_columns(present=pl.lit(False))])
    table = table.sort("modality", "source", "record_id")
    write_table(table.to_arrow().cast(ASSIGNMENT), layout.assignment_path(out))
    write_table(species.select(SPECIES.names).to_arrow().cast(SPECIES), path)
    result.species = dict(sorted(species.group_by("split_group").len().iter_rows()))
    write_json_atomic(
        {
            "settings": {
                "seed": seed,
                "test_fraction": test_fraction,
                "unseen_max_audio": unseen_max_audio,
            },
            "previous": where,
            "redraw": redraw,
            "kept": result.kept,
            "new": result.new,
            "moved": result.moved,
            "splits": {"audio": result.audio, "image": result.image},
            "species": result.species,
        },
        layout.split_report_path(out),
    )
    _print(result, redraw, console or Console())
    return result


def _print(result: SplitResult, redraw: bool, console: Console) -> None:
    table = Table(title="split")
    for col in ("", "train", "test", "unseen"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("recordings", *(str(result.audio.get(s, 0)) for s in ("train", "test", "unseen")))
    table.add_row("photos", *(str(result.image.get(s, 0)) for s in ("train", "test", "unseen")))
    seen = str(result.species.get("seen", 0))
    table.add_row("species", seen, seen, str(result.species.get("unseen", 0)))
    console.print(table)
    moved = sum(result.moved.values())
    if redraw:
        console.print(
            f"split: --redraw: every item drawn afresh, the previous assignment dropped "
            f"({moved} items changed side)"
        )
    elif result.previous == "none":
        console.print(f"split: first assignment ({result.new} items)")
    else:
        why = ", ".join(f"{k} {v}" for k, v in result.moved.items()) or "none"
        console.print(
            f"split: kept {result.kept} items where they were, placed {result.new} new ones; "
            f"moved: {why} (from {result.previous})"
        )

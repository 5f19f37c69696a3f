"""Releases: what changed between two builds (`release diff`), the changelog a card carries, and
the snapshot of each tagged release kept in OUT/releases/<tag>/ (so the next one can be diffed).

A diff compares the manifests of OLD and NEW by item key (source, modality, record_id):
- added: in NEW only; removed: in OLD only, with the reason from NEW's OUT/raw/removed.parquet
  (withdrawn, licence, takedown), else NEW's failures (align: dropped_by_align; fetch: licence or
  dropped_by_fetch), else still in NEW's raw records (dropped_by_align), else absent_from_sources;
- changed (in both): licence, identification (species_id), coordinates, media_url (by path and
  query: the same file under another host or port, a mirror's or a moved server's, is unchanged);
  per species a re-identified item counts as removed (re_identified) from its old species, added
  to its new one;
- moved_split: items in both whose split differs: species_changed (its species, or the species'
  seen/unseen group, changed) or other (which a stable split never produces);
- traits_changed: trait values of species in both that differ (null-aware);
- bench (when both sides have one): per subset, the queries (by the item or name asked, not the
  pool id) asked again, with the same candidate taxa in the same order, added and gone. A
  tagged release keeps its bench's rows (BENCH_ROWS: level, task, query, candidates) for this.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, MEDIA, REMOVED, SPECIES
from biovita_data.core.tables import read_table, write_json_atomic
from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.curate.bench import (
    SUBSETS,
    TASK_BY_CODE,
    index_parquet_path,
    tasks_parquet_path,
)

KEY = ["source", "modality", "record_id"]
ITEM_COLUMNS = [*KEY, "species_id", "license", "latitude", "longitude", "media_url", "split"]
CHANGES = ("licence", "identification", "coordinates", "media_url")
REMOVAL_REASONS = ("withdrawn", "licence", "takedown", "dropped_by_align", "dropped_by_fetch",
                   "absent_from_sources")  # fmt: skip
# a bench's rows by identity, kept in a release snapshot (the tasks themselves hold every
# candidate's group and are far larger)
BENCH_ROWS = "bench_rows.parquet"
# what a tagged release keeps of OUT (small tables, no media): enough to diff against it later
SNAPSHOT_FILES = (
    "manifests/species.parquet",
    "manifests/audio.parquet",
    "manifests/image.parquet",
    "manifests/assignment.parquet",
    "manifests/failures.parquet",
    "manifests/align_report.json",
    "manifests/split.json",
    "raw/removed.parquet",
    "build.json",
)


class ReleaseError(ValueError):
    """Two folders that cannot be compared, or a release that cannot be made; one line."""


def releases_dir(out: Path) -> Path:
    """OUT/releases: one snapshot folder per tag published from OUT, and index.json."""
    return Path(out) / "releases"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def check_folder(folder: Path, label: str) -> None:
    """A build folder whose manifests this biovita can read, or a ReleaseError naming it."""
    for name, schema in (("species", SPECIES), ("audio", MEDIA), ("image", MEDIA)):
        path = Path(folder) / "manifests" / f"{name}.parquet"
        if not path.is_file():
            raise ReleaseError(
                f"{label} {folder}: not a build folder (no {path.name} in manifests/)"
            )
        got = pq.read_schema(path).names
        missing, unknown = set(schema.names) - set(got), set(got) - set(schema.names)
        if missing or unknown:
            raise ReleaseError(
                f"{label} {path}: another schema version than this biovita's (missing "
                f"{sorted(missing) or 'nothing'}, unknown {sorted(unknown) or 'nothing'}): "
                "diff two builds of one schema version"
            )


def identity(folder: Path) -> dict[str, Any]:
    """What makes two builds the same pipeline: its name, the sample world, the backbone."""
    build = _read_json(Path(folder) / "build.json")
    report = _read_json(layout.manifests_dir(folder) / "align_report.json")
    world = build.get("world")
    return {
        "pipeline": build.get("pipeline"),
        "world": {k: world.get(k) for k in ("size", "seed")} if isinstance(world, dict) else None,
        "backbone": report.get("backbone"),
    }


def check_same_pipeline(old: Path, new: Path) -> None:
    a, b = identity(old), identity(new)
    for key in a:
        if a[key] is not None and b[key] is not None and a[key] != b[key]:
            raise ReleaseError(
                f"{old} and {new} are builds of different pipelines ({key} {a[key]} vs "
                f"{b[key]}): a diff compares two builds of one pipeline"
            )


def release_name(folder: Path) -> str | None:
    """The release tag a folder was published as (build.json `release.tag`), if any."""
    release = _read_json(Path(folder) / "build.json").get("release")
    return release.get("tag") if isinstance(release, dict) else None


def _items(folder: Path) -> pl.DataFrame:
    frames = [
        pl.from_arrow(read_table(layout.media_manifest_path(folder, m), MEDIA)).select(ITEM_COLUMNS)
        for m in ("audio", "image")
    ]
    return pl.concat(frames)  # type: ignore[arg-type]


def _removal_reasons(new: Path, removed: pl.DataFrame) -> pl.DataFrame:
    """`removed` (KEY, species_id) with `reason` and `detail`, from what NEW knows of them."""
    listed = pl.from_arrow(read_table(layout.removed_path(new), REMOVED)).select(
        *KEY, _r1="reason", _d1="detail"
    )
    failures = pl.from_arrow(read_table(layout.failures_path(new), FAILURE))
    failed = (
        failures.filter(
            pl.col("record_id").is_not_null() & pl.col("stage").is_in(["align", "fetch"])
        )
        .with_columns(
            _r2=pl.when(pl.col("stage") == "align")
            .then(pl.lit("dropped_by_align"))
            .when(pl.col("reason").str.starts_with("license"))
            .then(pl.lit("licence"))
            .otherwise(pl.lit("dropped_by_fetch")),
            _d2=pl.format("{}: {}", "stage", "reason"),
        )
        .sort("stage")  # align before fetch: the later stage that dropped it
        .unique(KEY, keep="first", maintain_order=True)
        .select(*KEY, "_r2", "_d2")
    )
    raw = [
        pl.read_parquet(p, columns=KEY)
        for p in sorted(layout.raw_root(new).glob("*/records.parquet"))
    ]
    in_raw = pl.concat(raw).unique() if raw else pl.DataFrame(schema={k: pl.String for k in KEY})
    in_raw = in_raw.with_columns(_raw=pl.lit(True))
    return (
        removed.join(listed, on=KEY, how="left")
        .join(failed, on=KEY, how="left")
        .join(in_raw, on=KEY, how="left")
        .with_columns(
            reason=pl.coalesce(
                "_r1",
                "_r2",
                pl.when(pl.col("_raw")).then(pl.lit("dropped_by_align")),
                pl.lit("absent_from_sources"),
            ),
            detail=pl.coalesce("_d1", "_d2"),
        )
        .drop("_r1", "_d1", "_r2", "_d2", "_raw")
    )


def _counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(df.group_by(column).len().iter_rows())}


def _url_path(column: str) -> pl.Expr:
    """A URL without its scheme and host[:port]: what names the file on any mirror."""
    return pl.col(column).str.replace(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*", "")


def diff(old: Path, new: Path) -> dict[str, Any]:
    """What changed from build OLD to build NEW (see the module docstring); JSON-ready."""
    old, new = Path(old), Path(new)
    check_folder(old, "OLD")
    check_folder(new, "NEW")
    check_same_pipeline(old, new)
    a, b = _items(old), _items(new)
    sa = pl.from_arrow(read_table(layout.species_path(old), SPECIES))
    sb = pl.from_arrow(read_table(layout.species_path(new), SPECIES))
    added = b.join(a, on=KEY, how="anti")
    removed = _removal_reasons(new, a.join(b, on=KEY, how="anti"))
    both = a.join(b, on=KEY, suffix="_new")
    groups = sa.select("species_id", g_old="split_group").join(
        sb.select("species_id", g_new="split_group"), on="species_id", how="full", coalesce=True
    )
    ne = pl.Expr.ne_missing
    both = both.with_columns(
        licence=ne(pl.col("license"), pl.col("license_new")),
        identification=pl.col("species_id") != pl.col("species_id_new"),
        coordinates=ne(pl.col("latitude"), pl.col("latitude_new"))
        | ne(pl.col("longitude"), pl.col("longitude_new")),
        media_url=ne(_url_path("media_url"), _url_path("media_url_new")),
        moved=pl.col("split").is_not_null()
        & pl.col("split_new").is_not_null()
        & (pl.col("split") != pl.col("split_new")),
    )
    both = (
        both.join(groups.select("species_id", "g_old"), on="species_id", how="left")
        .join(
            groups.select(species_id_new="species_id", g_new="g_new"),
            on="species_id_new",
            how="left",
        )
        .with_columns(species_move=pl.col("identification") | ne(pl.col("g_old"), pl.col("g_new")))
    )
    moved = both.filter("moved")
    other = moved.filter(~pl.col("species_move"))

    # trait values of species in both
    traits = sa.select("species_id", *TRAIT_COLUMNS).join(
        sb.select("species_id", *TRAIT_COLUMNS), on="species_id", suffix="_new"
    )
    trait_changes = traits.select(
        "species_id",
        changed=pl.concat_list(
            pl.when(ne(pl.col(c), pl.col(f"{c}_new"))).then(pl.lit(c)) for c in TRAIT_COLUMNS
        ).list.drop_nulls(),
    ).filter(pl.col("changed").list.len() > 0)

    per = _per_species(sa, sb, added, removed, both, trait_changes)
    result: dict[str, Any] = {
        "old": _summary(old, a, sa),
        "new": _summary(new, b, sb),
        "added": {"total": added.height, **_counts(added, "modality")},
        "removed": {
            "total": removed.height,
            **_counts(removed, "modality"),
            "by_reason": _counts(removed, "reason"),
        },
        "changed": {
            "total": both.filter(pl.any_horizontal(*CHANGES)).height,
            **{c: int(both[c].sum()) for c in CHANGES},
        },
        "moved_split": {
            "total": moved.height,
            "species_changed": moved.height - other.height,
            "other": other.height,
            "other_items": other.select(KEY).head(20).to_dicts(),
        },
        "traits_changed": {
            "species": trait_changes.height,
            "values": int(trait_changes["changed"].list.len().sum()),
        },
        "species": {
            "added": sorted(sb.join(sa, on="species_id", how="anti")["scientific_name"]),
            "removed": sorted(sa.join(sb, on="species_id", how="anti")["scientific_name"]),
            "group_changed": sorted(
                sb.join(groups, on="species_id").filter(
                    ne(pl.col("g_old"), pl.col("g_new")) & pl.col("g_old").is_not_null()
                )["scientific_name"]
            ),
        },
        "per_species": per,
        "bench": bench_diff(old, new),
    }
    return result


def bench_rows(folder: Path, subset: str) -> pl.DataFrame | None:
    """A bench subset's rows as (taxon_level, task, query, candidates): the query by identity
    (`source:record_id`, or the name a text query asks); None when the folder has no bench."""
    bench = layout.bench_dir(folder, subset)
    kept = bench / BENCH_ROWS
    if kept.is_file():
        return pl.read_parquet(kept)
    tasks = tasks_parquet_path(bench)
    if not tasks.is_file():
        return None
    rows = pl.read_parquet(
        tasks, columns=["task", "taxon_level", "query_payload_id", "candidates_taxa"]
    ).with_columns(
        modality=pl.col("task").replace_strict({c: t.query for c, t in TASK_BY_CODE.items()})
    )
    names = []
    for modality in ("audio", "image", "text"):
        index = pl.read_parquet(index_parquet_path(bench, modality))
        who = (
            pl.col("species")
            if modality == "text"
            else pl.concat_str("source", pl.lit(":"), "record_id")
        )
        names.append(index.select(pl.lit(modality).alias("modality"), "id", query=who))
    return rows.join(
        pl.concat(names),
        left_on=["modality", "query_payload_id"],
        right_on=["modality", "id"],
        how="left",
        maintain_order="left",
    ).select("taxon_level", "task", "query", candidates="candidates_taxa")


def bench_diff(old: Path, new: Path) -> dict[str, dict[str, int]] | None:
    """Per subset: queries asked again (kept), with the same candidates in the same order
    (same_candidates), added and gone; None unless both folders have a bench."""
    out: dict[str, dict[str, int]] = {}
    on = ["taxon_level", "task", "query"]
    for subset in SUBSETS:
        a, b = bench_rows(old, subset), bench_rows(new, subset)
        if a is None or b is None:
            return None
        both = a.join(b, on=on, suffix="_new")
        out[subset] = {
            "kept": both.height,
            "same_candidates": int((both["candidates"] == both["candidates_new"]).sum()),
            "added": b.join(a, on=on, how="anti").height,
            "gone": a.join(b, on=on, how="anti").height,
        }
    return out


def _summary(folder: Path, items: pl.DataFrame, species: pl.DataFrame) -> dict[str, Any]:
    return {
        "path": str(folder),
        "release": release_name(folder),
        "items": _counts(items, "modality"),
        "species": species.height,
    }


def _per_species(
    sa: pl.DataFrame,
    sb: pl.DataFrame,
    added: pl.DataFrame,
    removed: pl.DataFrame,
    both: pl.DataFrame,
    trait_changes: pl.DataFrame,
) -> list[dict[str, Any]]:
    """One entry per species with any change, by scientific name."""
    reid = both.filter("identification")
    add = pl.concat(
        [
            added.select("species_id", reason=pl.lit("new")),
            reid.select(species_id="species_id_new", reason=pl.lit("re_identified")),
        ]
    )
    rem = pl.concat(
        [
            removed.select("species_id", "reason"),
            reid.select("species_id", reason=pl.lit("re_identified")),
        ]
    )
    changed = (
        both.filter(pl.any_horizontal(*CHANGES))
        .group_by(pl.col("species_id_new").alias("species_id"))
        .agg(*(pl.col(c).sum() for c in CHANGES))
    )
    moved = both.filter("moved").group_by(pl.col("species_id_new").alias("species_id")).len()
    names = pl.concat(
        [sb.select("species_id", "scientific_name"), sa.select("species_id", "scientific_name")]
    ).unique("species_id", keep="first", maintain_order=True)
    entries: dict[int, dict[str, Any]] = {}

    def entry(sid: int) -> dict[str, Any]:
        return entries.setdefault(
            sid, {"species_id": sid, "added": {}, "removed": {}, "changed": {}, "moved_split": 0,
                  "traits_changed": []},
        )  # fmt: skip

    for sid, reason, n in add.group_by("species_id", "reason").len().iter_rows():
        entry(sid)["added"][reason] = n
    for sid, reason, n in rem.group_by("species_id", "reason").len().iter_rows():
        entry(sid)["removed"][reason] = n
    for row in changed.iter_rows(named=True):
        entry(row["species_id"])["changed"] = {c: int(row[c]) for c in CHANGES if row[c]}
    for sid, n in moved.iter_rows():
        entry(sid)["moved_split"] = n
    for sid, cols in trait_changes.iter_rows():
        entry(sid)["traits_changed"] = cols
    name = dict(names.iter_rows())
    out = []
    for sid, e in entries.items():
        e["scientific_name"] = name.get(sid)
        for k in ("added", "removed"):
            e[k] = dict(sorted(e[k].items()))
        out.append(e)
    return sorted(out, key=lambda e: (e["scientific_name"] or "", e["species_id"]))


# ---- for humans ------------------------------------------------------------------------------


def _label(side: dict[str, Any]) -> str:
    return side["release"] or side["path"]


def totals_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, how many) lines of a diff's totals."""
    removed = ", ".join(f"{k} {v}" for k, v in d["removed"]["by_reason"].items()) or "-"
    changed = ", ".join(f"{c} {d['changed'][c]}" for c in CHANGES if d["changed"][c]) or "-"
    ms = d["moved_split"]
    sp = d["species"]
    return [
        ("records added", f"{d['added']['total']} (audio {d['added'].get('audio', 0)}, "
                          f"image {d['added'].get('image', 0)})"),
        ("records removed", f"{d['removed']['total']} ({removed})"),
        ("records changed", f"{d['changed']['total']} ({changed})"),
        ("moved split", f"{ms['total']} ({ms['species_changed']} by species changes, "
                        f"{ms['other']} other)"),
        ("trait values changed", f"{d['traits_changed']['values']} in "
                                 f"{d['traits_changed']['species']} species"),
        ("species", f"+{len(sp['added'])} -{len(sp['removed'])}, "
                    f"{len(sp['group_changed'])} changed seen/unseen"),
    ] + [
        (f"bench {subset} queries", f"{b['kept']} asked again ({b['same_candidates']} with the "
                                    f"same candidates), {b['added']} new, {b['gone']} gone")
        for subset, b in (d.get("bench") or {}).items()
    ]  # fmt: skip


def _species_cells(e: dict[str, Any]) -> list[str]:
    def fmt(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

    traits = ", ".join(c.removeprefix("trait_") for c in e["traits_changed"]) or "-"
    return [e["scientific_name"] or str(e["species_id"]), fmt(e["added"]), fmt(e["removed"]),
            fmt(e["changed"]), str(e["moved_split"]), traits]  # fmt: skip


SPECIES_HEADER = ["species", "added", "removed", "changed", "moved split", "traits changed"]


def print_diff(d: dict[str, Any], console: Console, max_species: int = 50) -> None:
    """The totals and the per-species changes as rich tables."""

    def named(side: dict[str, Any]) -> str:
        return f"{side['release']} ({side['path']})" if side["release"] else side["path"]

    table = Table(title=f"release diff {named(d['old'])} -> {named(d['new'])}")
    table.add_column("")
    table.add_column("count")
    for row in totals_rows(d):
        table.add_row(*row)
    console.print(table)
    per = Table(
        title="per species"
        + (f" (first {max_species})" if len(d["per_species"]) > max_species else "")
    )
    for col in SPECIES_HEADER:
        per.add_column(col)
    for e in d["per_species"][:max_species]:
        per.add_row(*_species_cells(e))
    if d["per_species"]:
        console.print(per)
    if d["moved_split"]["other"]:
        console.print(
            f"[red]{d['moved_split']['other']} items moved split without a species change[/red]"
        )


def changelog_markdown(d: dict[str, Any], max_species: int = 30) -> str:
    """The card's changelog section, written from a diff against the previous release."""
    lines = [
        "## Changelog",
        f"Changes since the previous release `{_label(d['old'])}` (`biovita-data release diff`):",
        "",
        *(f"- {what}: {n}" for what, n in totals_rows(d)),
    ]
    if d["per_species"]:
        shown = d["per_species"][:max_species]
        lines += ["", "| " + " | ".join(SPECIES_HEADER) + " |",
                  "|" + " --- |" * len(SPECIES_HEADER)]  # fmt: skip
        lines += ["| " + " | ".join(_species_cells(e)) + " |" for e in shown]
        if len(d["per_species"]) > len(shown):
            lines.append(f"\n... and {len(d['per_species']) - len(shown)} more species.")
    return "\n".join(lines)


# ---- tagged releases kept in OUT -------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseInfo:
    """A tag about to be published from OUT, and the release it follows."""

    tag: str
    previous: str | None  # the previous release's tag (or folder), None for the first
    previous_folder: Path | None  # what the changelog is diffed against
    changelog: str | None


def previous_release(out: Path, tag: str, previous: Path | None = None) -> tuple[str, Path] | None:
    """The release a new tag follows: `previous` (an OLD_OUT or a snapshot) when given, else the
    last tag snapshotted in OUT/releases other than `tag`."""
    if previous is not None:
        check_folder(previous, "--previous-release")
        return release_name(previous) or str(previous), Path(previous)
    tags = [t for t in _read_json(releases_dir(out) / "index.json").get("tags", []) if t != tag]
    if not tags:
        return None
    return tags[-1], releases_dir(out) / tags[-1]


def prepare_release(out: Path, tag: str, previous: Path | None = None) -> ReleaseInfo:
    """Diff OUT against the previous release and name both in OUT/build.json's `release`."""
    prev = previous_release(out, tag, previous)
    changelog = changelog_markdown(diff(prev[1], out)) if prev else None
    build_path = Path(out) / "build.json"
    build = _read_json(build_path)
    build["release"] = {"tag": tag, "previous": prev[0] if prev else None}
    write_json_atomic(build, build_path)
    return ReleaseInfo(tag, prev[0] if prev else None, prev[1] if prev else None, changelog)


def keep_for_diff(out: Path, target: Path) -> None:
    """Copy into `target` what a later `release diff` against OUT reads: SNAPSHOT_FILES (no
    media) and the bench's rows (BENCH_ROWS)."""
    for name in SNAPSHOT_FILES:
        src = out / name
        if src.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target / name)
    for subset in SUBSETS:
        rows = bench_rows(out, subset)
        if rows is not None:
            path = layout.bench_dir(target, subset) / BENCH_ROWS
            path.parent.mkdir(parents=True, exist_ok=True)
            rows.write_parquet(path, compression="zstd")


def snapshot_release(out: Path, tag: str) -> Path:
    """Keep OUT's manifests (no media) as OUT/releases/<tag>/ and list the tag in index.json."""
    root = releases_dir(out)
    target = root / tag
    tmp = root / f".{tag}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    keep_for_diff(Path(out), tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    index = _read_json(root / "index.json")
    tags = [t for t in index.get("tags", []) if t != tag] + [tag]
    write_json_atomic({"tags": tags}, root / "index.json")
    return target

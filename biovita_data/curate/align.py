"""The align stage: raw records -> accepted species -> OUT/manifests/{species,audio,image,...}.

Every raw name is resolved against one backbone (`backbone.py`); records whose name does not
resolve, species without both modalities, photos over the per-species cap and the same photo
crawled by two routes each become a `failures` row with stage `align` — nothing vanishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from biovita_data.core import layout
from biovita_data.core.draws import keyed_hash, previous_draw
from biovita_data.core.schemas import FAILURE, MEDIA, RAW_RECORD, SPECIES, UNMATCHED
from biovita_data.core.tables import read_table, replace_failures, write_json_atomic, write_table
from biovita_data.crawl.http import HttpClient
from biovita_data.curate.backbone import Backbone, InatBackbone, add_user_synonyms, csv_backbone
from biovita_data.curate.settings import AlignSettings

INAT_SOURCES = ("inaturalist", "inat-open-data")
MEDIA_COLUMNS = [f.name for f in MEDIA if f.name not in ("species_id", "scientific_name",
                                                           "match_kind", "split")]  # fmt: skip
RESOLUTION = {
    "name": pl.String,
    "normalized": pl.String,
    "species_id": pl.Int64,
    "match_kind": pl.String,
    "reason": pl.String,
    "closest": pl.String,
}
RAW_COLUMNS = [
    *MEDIA_COLUMNS,
    "raw_taxon_id",
    "raw_taxon_rank",
    "raw_ancestry",
    "common_name",
]


@dataclass
class AlignResult:
    species: int
    audio: int
    image: int
    match_kinds: dict[str, int]
    unmatched_names: int
    unmatched_records: int
    dropped: dict[str, int]
    audio_only: list[str]
    image_only: list[str]
    requests: int = 0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def load_raw(out: Path) -> pl.DataFrame:
    """Every source's raw records that exist under OUT/raw, in the columns align uses."""
    frames = []
    for source in layout.SOURCE_DIRS:
        path = layout.raw_records_path(out, source)
        if path.exists():
            # read with the declared schema: a file written before a column was added has nulls
            table = read_table(path, RAW_RECORD, columns=RAW_COLUMNS)  # not the other 22
            frames.append(pl.from_arrow(table).lazy())
    if not frames:
        raise FileNotFoundError(
            f"no raw records under {layout.raw_root(out)}: "
            f"run `biovita-data fetch --out {out}` first"
        )
    return pl.concat(frames, how="vertical_relaxed").collect()


def _failures(df: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    return df.select(
        stage=pl.lit("align"),
        source="source",
        modality="modality",
        record_id="record_id",
        name="raw_scientific_name",
        reason=pl.lit(reason),
        detail=detail,
    )


def _dedupe_routes(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One row per medium: iNaturalist's API and Open Data name the same photo by the same id.

    The API row is kept; the Open Data copy becomes a failure row.
    """
    api = raw.filter(pl.col("source") == "inaturalist").select("modality", "record_id")
    is_copy = (pl.col("source") == "inat-open-data") & pl.struct("modality", "record_id").is_in(
        api.select(pl.struct("modality", "record_id")).to_series().implode()
    )
    dup = raw.filter(is_copy)
    fails = _failures(
        dup, "duplicate_across_sources", pl.lit("the same medium is kept from inaturalist")
    )
    return raw.filter(~is_copy), fails


def build_backbone(raw: pl.DataFrame, out: Path, settings: AlignSettings, http: HttpClient | None):
    """The backbone named by the settings, with the user's synonym tables added."""
    if settings.backbone == "inat":
        http = http or HttpClient(throttle=settings.throttle)
        bb: Backbone = InatBackbone(http, settings.inaturalist_url, layout.backbone_dir(out))
        taxa = (
            raw.filter(pl.col("source").is_in(INAT_SOURCES) & pl.col("raw_taxon_id").is_not_null())
            .select(
                "raw_taxon_id",
                "raw_scientific_name",
                "raw_taxon_rank",
                "raw_ancestry",
                "common_name",
            )
            .unique("raw_taxon_id", keep="first")
            .sort("raw_taxon_id")
        )
        bb.add_from_records(taxa)
        bb.complete(sid for sid, _ in bb.species_for_taxon().values())
        bb.apply_searches()
    else:
        path = Path(settings.backbone)
        if not path.exists():
            raise FileNotFoundError(f"backbone file {path} does not exist (or use --backbone inat)")
        bb = csv_backbone(path)
    for syn in settings.synonyms:
        add_user_synonyms(bb, syn)
    return bb


def resolve_records(raw: pl.DataFrame, bb: Backbone) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Attach species_id and match_kind to every record; also return the name resolutions."""
    by_id = pl.DataFrame(
        schema={"raw_taxon_id": pl.Int64, "_id_sid": pl.Int64, "_id_kind": pl.String}
    )
    if isinstance(bb, InatBackbone):
        pairs = [(t, s, k) for t, (s, k) in bb.species_for_taxon().items() if s in bb.species]
        if pairs:
            by_id = pl.DataFrame(pairs, schema=by_id.schema, orient="row")
    # names are resolved once per distinct name, never per record
    res = bb.resolve(raw["raw_scientific_name"].drop_nulls().unique().to_list())
    names = pl.DataFrame([r.__dict__ for r in res], schema=RESOLUTION)
    iid = pl.col("source").is_in(INAT_SOURCES) & pl.col("_id_sid").is_not_null()
    df = (
        raw.join(by_id, on="raw_taxon_id", how="left")
        .join(
            names.rename({"name": "raw_scientific_name", "species_id": "_n_sid"}),
            on="raw_scientific_name",
            how="left",
        )
        .with_columns(
            species_id=pl.when(iid).then("_id_sid").otherwise("_n_sid"),
            match_kind=pl.when(iid).then("_id_kind").otherwise("match_kind"),
            reason=pl.when(iid).then(None).otherwise(pl.col("reason").fill_null("empty")),
        )
        .drop("_id_sid", "_id_kind", "_n_sid")
    )
    return df, names


def _cap_queue(df: pl.DataFrame, seed: int, kept: pl.DataFrame | None) -> pl.DataFrame:
    """`df` with `_first` (the photo was kept by the previous align of this seed) and `_h` (a
    keyed hash of seed, source and record_id): a species' photos queue for the cap by
    (not _first, _h), so a photo added, withdrawn or renamed moves no other photo's place, and a
    rebuild keeps the photos it kept before while it can."""
    df = df.with_columns(_h=keyed_hash(seed, "image", df["source"], df["record_id"]))
    if kept is None:
        return df.with_columns(_first=pl.lit(False))
    flags = kept.unique().with_columns(_first=pl.lit(True))
    joined = df.join(flags, on=["source", "record_id"], how="left", maintain_order="left")
    return joined.with_columns(pl.col("_first").fill_null(False))


def align(
    out: Path,
    settings: AlignSettings,
    *,
    http: HttpClient | None = None,
    console: Console | None = None,
) -> AlignResult:
    """Run the align stage over OUT/raw; write OUT/manifests; return counts."""
    console = console or Console()
    raw = load_raw(out)
    raw, dup_fail = _dedupe_routes(raw)
    sources = sorted(set(raw["source"].unique().to_list()))
    bb = build_backbone(raw, out, settings, http)
    df, _ = resolve_records(raw, bb)
    del raw  # every record is in df now: half the stage's peak memory at the paper's scale

    # a filter or join copies every record (~1 GB at the paper's scale): only when it drops some
    unresolved = df.filter(pl.col("species_id").is_null())
    if unresolved.height:
        df = df.filter(pl.col("species_id").is_not_null())
    df = df.drop("normalized", "reason", "closest")
    unmatched_fail = _failures(
        unresolved,
        "unmatched_name",
        pl.format(
            "{} does not align to {}: {}",
            pl.col("raw_scientific_name").fill_null("(no name)"),
            pl.lit(bb.label),
            pl.col("reason"),
        ),
    )
    unmatched = (
        unresolved.group_by(
            "raw_scientific_name", "normalized", "source", "modality", "reason", "closest"
        )
        .agg(count=pl.len())
        .rename({"raw_scientific_name": "name"})
        .sort("source", "modality", "name", nulls_last=True)
    )

    counts = df.group_by("species_id").agg(
        n_audio=(pl.col("modality") == "audio").sum().cast(pl.Int32),
        n_image_available=(pl.col("modality") == "image").sum().cast(pl.Int32),
    )
    ok = counts.filter(
        (pl.col("n_audio") >= settings.min_audio)
        & (pl.col("n_image_available") >= settings.min_images)
    )
    short = df.join(ok.select("species_id"), on="species_id", how="anti").join(
        counts, on="species_id"
    )
    short_fail = _failures(
        short,
        "species_below_minimum",
        pl.format(
            "species {} has {} recordings and {} photos; the corpus needs {} and {}",
            "species_id", "n_audio", "n_image_available",
            pl.lit(settings.min_audio), pl.lit(settings.min_images),
        ),
    )  # fmt: skip
    if short.height:
        df = df.join(ok.select("species_id"), on="species_id", how="semi", maintain_order="left")

    cap_fail = pl.DataFrame(schema=dup_fail.schema)
    if settings.max_images_per_species is not None:
        cap = settings.max_images_per_species
        photos = (
            df.lazy()
            .filter(pl.col("modality") == "image")
            .select("species_id", "source", "modality", "record_id")
            .filter(pl.len().over("species_id") > cap)  # only these have photos to leave out
            .collect()
        )
        kept = previous_draw(  # the photos the previous align of this seed kept
            layout.manifests_dir(out) / "align_report.json", ("settings", "seed"), settings.seed,
            layout.media_manifest_path(out, "image"), ["source", "record_id"],
        )  # fmt: skip
        queue = _cap_queue(photos, settings.seed, kept)
        over = (
            queue.sort(["_first", "_h"], descending=[True, False])
            .filter(pl.int_range(pl.len()).over("species_id") >= cap)
            .select("source", "modality", "record_id")
        )
        key = ["source", "modality", "record_id"]
        cap_fail = _failures(
            df.join(over, on=key, how="semi", maintain_order="left"),
            "over_image_cap",
            pl.lit(f"a seeded {cap} photos per species are kept (the previous build's first)"),
        )
        if over.height:
            df = df.join(over, on=key, how="anti", maintain_order="left")

    lineage = bb.species_frame(df["species_id"].unique().to_list())
    df = df.join(lineage.select("species_id", "scientific_name"), on="species_id")
    media = {
        m: df.filter(pl.col("modality") == m)
        .sort("source", "record_id")
        .with_columns(split=pl.lit(None, pl.String))
        .select([f.name for f in MEDIA])
        for m in ("audio", "image")
    }
    per_species = df.group_by("species_id").agg(
        n_audio=(pl.col("modality") == "audio").sum().cast(pl.Int32),
        n_image=(pl.col("modality") == "image").sum().cast(pl.Int32),
        source_names=pl.col("raw_scientific_name").drop_nulls().unique().sort().str.join("; "),
        sources=pl.col("source").unique().sort().str.join("; "),
        inat_taxon_id=pl.col("raw_taxon_id")
        .filter(pl.col("source").is_in(INAT_SOURCES) & (pl.col("match_kind") == "exact"))
        .mode()
        .min(),
    )
    species = (
        lineage.join(per_species, on="species_id")
        .join(ok.select("species_id", "n_image_available"), on="species_id")
        .with_columns(backbone=pl.lit(bb.label))
        .sort("species_id")
    )
    for f in SPECIES:
        if f.name not in species.columns:
            species = species.with_columns(pl.lit(None).alias(f.name))
    species_tbl = species.select([f.name for f in SPECIES]).to_arrow().cast(SPECIES)

    write_table(species_tbl, layout.species_path(out))
    for m, frame in media.items():
        write_table(frame.to_arrow().cast(MEDIA), layout.media_manifest_path(out, m))
    old = pl.from_arrow(read_table(layout.unmatched_path(out), UNMATCHED))
    merged = pl.concat(
        [old.filter(pl.col("modality") == "traits"), unmatched.select(old.columns)],
        how="vertical_relaxed",
    )
    write_table(merged.to_arrow().cast(UNMATCHED), layout.unmatched_path(out))
    fails = pl.concat([dup_fail, unmatched_fail, short_fail, cap_fail], how="vertical_relaxed")
    replace_failures(out, "align", sources, fails.to_arrow().cast(FAILURE))

    one_source = counts.filter((pl.col("n_audio") == 0) | (pl.col("n_image_available") == 0))
    one = bb.species_frame(one_source["species_id"].to_list()).join(counts, on="species_id")
    result = AlignResult(
        species=species.height,
        audio=media["audio"].height,
        image=media["image"].height,
        match_kinds=dict(sorted(df.group_by("match_kind").len().iter_rows())),
        unmatched_names=unmatched.select("name").n_unique(),
        unmatched_records=unresolved.height,
        dropped={
            "duplicate_across_sources": dup_fail.height,
            "unmatched_name": unmatched_fail.height,
            "species_below_minimum": short_fail.height,
            "over_image_cap": cap_fail.height,
        },
        audio_only=one.filter(pl.col("n_image_available") == 0)["scientific_name"].sort().to_list(),
        image_only=one.filter(pl.col("n_audio") == 0)["scientific_name"].sort().to_list(),
        requests=getattr(bb, "requests", 0),
    )
    write_json_atomic(
        {**result.as_dict(), "backbone": bb.label, "settings": _settings_json(settings)},
        layout.manifests_dir(out) / "align_report.json",
    )
    print_summary(result, console)
    return result


def _settings_json(settings: AlignSettings) -> dict:
    d = dict(settings.__dict__)
    d["synonyms"] = [str(p) for p in settings.synonyms]
    return json.loads(json.dumps(d, default=str))


def print_summary(result: AlignResult, console: Console) -> None:
    table = Table(title="align")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("species in the corpus", str(result.species))
    table.add_row("recordings", str(result.audio))
    table.add_row("photos", str(result.image))
    for kind, n in result.match_kinds.items():
        table.add_row(f"  records matched: {kind}", str(n))
    table.add_row(
        "unmatched names (records)", f"{result.unmatched_names} ({result.unmatched_records})"
    )
    table.add_row("species with recordings only", str(len(result.audio_only)))
    table.add_row("species with photos only", str(len(result.image_only)))
    for reason, n in result.dropped.items():
        if n:
            table.add_row(f"dropped: {reason}", str(n))
    console.print(table)


def saved_settings(out: Path) -> AlignSettings:
    """The settings of the last align run in OUT (traits resolves names with the same backbone)."""
    path = layout.manifests_dir(out) / "align_report.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `biovita-data align` first")
    d = json.loads(path.read_text())["settings"]
    d["synonyms"] = [Path(p) for p in d.get("synonyms", [])]
    return AlignSettings(**d)


def name_resolver(out: Path, settings: AlignSettings, http: HttpClient | None = None):
    """resolve(names, source) -> frame(name, species_id, match_kind, reason, closest), as align."""
    bb = build_backbone(load_raw(out), out, settings, http)

    def resolve(names: list[str], source: str) -> pl.DataFrame:
        rows = [r.__dict__ for r in bb.resolve(names)]
        return pl.DataFrame(rows, schema=RESOLUTION).drop("normalized")

    return resolve

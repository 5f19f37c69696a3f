"""Import TreeOfLife-200M's metadata (catalog + provenance Parquet) as the corpus's image source.

For each species of the corpus (the names the audio sources crawled, or `--taxa`), up to N
images are drawn at random, seeded: every catalog row of the species gets a key from its uuid
and the seed, and the draw walks the species' rows in key order, taking usable rows until it has
N. A re-import into the same OUT with the same seed walks the images it drew before first, so a
catalog that grew or shrank changes only the species it touched. A drawn row whose licence is
unknown or not allowed, whose provenance is missing or whose URL is unusable is a `failures`
row; the walk goes on past it. Column names differ between releases, so each field is read from
the first of its known names the file has. The catalog is scanned
lazily (predicate pushdown, streaming): the first pass keeps only the candidate rows' uuid,
species number and key; the second reads the drawn rows in full (a uuid filter inside the scans
of catalog and provenance). Usually one pass over each suffices; a species short of N after
its failures gets another window (at most MAX_ROUNDS).

The key is `core.draws.uuid_keys`: the uuid's bits mixed with the seed, the same on every machine
and library version (Polars' own hash changes between versions).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.draws import previous_draw, uuid_keys
from biovita_data.core.names import parse_name
from biovita_data.core.schemas import FAILURE, RAW_RECORD
from biovita_data.core.tables import replace_failures, write_json_atomic, write_table
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import BadRecord, SourceResult, check_license

NAME = "treeoflife-200m"
MODALITY = "image"
RANKS = ("kingdom", "phylum", "class", "order", "family", "genus")
# field -> the column names releases use for it (first present wins; case-insensitive)
CATALOG_FIELDS: dict[str, tuple[str, ...]] = {
    # TreeOfLife-10M / ToL-EDA spellings too: treeoflife_id, eol_full_size_copy_url, ...
    "uuid": ("uuid", "treeoflife_id", "tol_id"),
    "source_url": (
        "source_url",
        "identifier",
        "url",
        "image_url",
        "eol_full_size_copy_url",
        "medium_source_url",
        "eol_content_url",
    ),
    "scientific_name": ("scientific_name", "scientificName", "taxon_name"),
    "genus": ("genus",),
    "species": ("species", "specificEpithet", "epithet"),
    **{rank: (rank,) for rank in RANKS[:-1]},
    "common": ("common", "common_name", "vernacularName"),
    "data_source": ("data_source", "source"),
    "source_id": ("source_id", "gbifID", "gbif_id"),
    "publisher": ("publisher",),
}
PROVENANCE_FIELDS: dict[str, tuple[str, ...]] = {
    "uuid": ("uuid", "treeoflife_id", "tol_id"),
    "license_name": ("license_name", "license", "licence"),
    "license_link": ("license_link", "license_url", "licence_link"),
    "copyright_owner": ("copyright_owner", "owner", "rightsHolder", "rights_holder", "creator"),
    "source_url": ("source_url", "identifier", "eol_full_size_copy_url", "medium_source_url"),
}
# the catalog fields a raw record takes (the lineage is the backbone's business, not ToL's)
DETAIL_FIELDS = ("uuid", "source_url", "scientific_name", "genus", "species", "common",
                 "data_source", "source_id")  # fmt: skip
# owners that mean "unknown"
NO_OWNER = ("not provided", "", "unknown", "none", "null")
MAX_ROUNDS = 6


def tol_dir(out: Path) -> Path:
    """Where the import writes: OUT/raw/treeoflife_200m/."""
    return layout.raw_dir(out, NAME)


def resolve_columns(path: Path, fields: dict[str, tuple[str, ...]], required: Sequence[str]):
    """field -> the file's column for it, read from the Parquet schema (not the data)."""
    try:
        names = pq.read_schema(path).names
    except (OSError, pl.exceptions.PolarsError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file: {exc}") from None
    lower = {n.lower(): n for n in names}
    found = {}
    for fld, candidates in fields.items():
        hit = next((lower[c.lower()] for c in candidates if c.lower() in lower), None)
        if hit is not None:
            found[fld] = hit
    missing = [f for f in required if f not in found]
    if missing:
        want = "; ".join(f"{f}: one of {', '.join(fields[f])}" for f in missing)
        raise ValueError(f"{path}: no column for {want} (the file has {', '.join(names)})")
    return found


def _name_expr(cols: dict[str, str]) -> pl.Expr:
    """The row's binomial: scientific_name, else genus + species (the epithet, or a binomial)."""
    parts: list[pl.Expr] = []
    if "scientific_name" in cols:
        parts.append(pl.col(cols["scientific_name"]).str.strip_chars().replace("", None))
    if "genus" in cols and "species" in cols:
        sp = pl.col(cols["species"]).str.strip_chars()
        gen = pl.col(cols["genus"]).str.strip_chars()
        parts.append(
            pl.when(sp.str.contains(" "))
            .then(sp)
            .otherwise(pl.concat_str([gen, sp], separator=" "))
        )
    if not parts:
        raise ValueError("the catalog has neither scientific_name nor genus + species columns")
    return pl.coalesce(parts)


def corpus_names(out: Path) -> list[str]:
    """The corpus's species as binomials: audio records under OUT/raw and species.parquet."""
    names: set[str] = set()
    for source in layout.SOURCE_DIRS:
        path = layout.raw_records_path(out, source)
        if source != NAME and path.exists():
            raw = (
                pl.scan_parquet(path)
                .filter(pl.col("modality") == "audio")
                .select("raw_scientific_name")
                .unique()
                .collect()
            )
            names.update(n for n in raw.to_series().drop_nulls().to_list())
    species = layout.species_path(out)
    if species.exists():
        sp = pl.read_parquet(species, columns=["scientific_name", "source_names"])
        names.update(sp["scientific_name"].drop_nulls().to_list())
        for joined in sp["source_names"].drop_nulls().to_list():
            names.update(joined.split("; "))
    return sorted({b for n in names if (b := parse_name(n).binomial)})


def _targets(cat: pl.LazyFrame, cols: dict[str, str], names: list[str], taxa: list[str]):
    """The catalog rows of the wanted species, with `_name` (their binomial)."""
    name = _name_expr(cols).alias("_name")
    if taxa:
        wanted = [t.strip() for t in taxa if t.strip()]
        ranks = [pl.col(cols[r]).is_in(wanted) for r in RANKS if r in cols]
        return cat.with_columns(name).filter(pl.any_horizontal([*ranks, name.is_in(wanted)]))
    return cat.with_columns(name).filter(pl.col("_name").is_in(names))


def _uuid(catalog: Path, column: str) -> pl.Expr:
    """The uuid column as text (a no-op, so pushed into the scan, when it is text already)."""
    dtype = pl.scan_parquet(catalog).collect_schema()[column]
    return pl.col(column) if dtype == pl.String else pl.col(column).cast(pl.String)


def _candidates(
    catalog: Path, cols: dict[str, str], names, taxa, seed: int, before: pl.Series | None = None
):
    """Every candidate row as (species index, rank in its species' random order, uuid), and
    the species (`_sp`, `_name`). Rows without a uuid cannot be told apart and are skipped. The
    uuids in `before` (the previous draw of this seed) come first in their species' order."""
    uuid = _uuid(catalog, cols["uuid"])
    rows = (
        _targets(pl.scan_parquet(catalog), cols, names, taxa)
        .filter(pl.col("_name").is_not_null() & uuid.is_not_null())
        .select("_name", uuid.alias("_uuid"))
        .collect(engine="streaming")
    )
    again = pl.col("_uuid").is_in(before.implode()) if before is not None else pl.lit(False)
    rows = rows.with_columns(_key=uuid_keys(rows["_uuid"], seed), _new=~again)
    # species as small integers, the name strings dropped
    species = rows.select(pl.col("_name").unique().sort()).with_row_index("_sp")
    rows = rows.join(species, on="_name").drop("_name")
    # a uuid listed twice is one image: kept once (its first species in name order)
    rows = rows.sort("_sp", "_new", "_key", "_uuid").unique(
        "_uuid", keep="first", maintain_order=True
    )
    rows = rows.with_columns(_rank=pl.int_range(pl.len(), dtype=pl.UInt32).over("_sp"))
    return rows.select("_sp", "_rank", "_uuid"), species


def _details(
    catalog: Path, provenance: Path, cols, pcols, rows: pl.DataFrame, species: pl.DataFrame
) -> pl.DataFrame:
    """The full catalog row and its provenance for each chosen uuid (the filters run inside the
    scans, so only the chosen rows are decoded in full; the rest is done on those rows). A uuid
    listed under several corpus names gets the row of the first in name order: the species it
    was drawn for (`_candidates`)."""
    wanted = rows["_uuid"].implode()
    fields = [f for f in DETAIL_FIELDS if f in cols]
    cat = (
        pl.scan_parquet(catalog)
        .filter(_uuid(catalog, cols["uuid"]).is_in(wanted))
        .select(sorted({cols[f] for f in fields}))
        .collect(engine="streaming")
    )
    cat = cat.select(
        _name_expr(cols).alias("_name"),
        *[pl.col(cols[f]).cast(pl.String).alias(f) for f in fields],
        *[pl.lit(None, pl.String).alias(f) for f in DETAIL_FIELDS if f not in cols],
    )
    twice = cat["uuid"].is_duplicated()
    if twice.any():  # rare: only these rows are sorted, the others are not copied
        listed = cat.filter(twice & pl.col("_name").is_in(species["_name"].implode()))
        first = listed.sort("_name", maintain_order=True).unique("uuid", keep="first")
        cat = pl.concat([cat.filter(~twice), first])
    prov = (
        pl.scan_parquet(provenance)
        .filter(_uuid(provenance, pcols["uuid"]).is_in(wanted))
        .select(sorted(set(pcols.values())))
        .collect(engine="streaming")
    )
    prov = prov.select(
        *[pl.col(pcols[f]).cast(pl.String).alias(f"p_{f}") for f in PROVENANCE_FIELDS
          if f in pcols],
        *[pl.lit(None, pl.String).alias(f"p_{f}") for f in PROVENANCE_FIELDS if f not in pcols],
        pl.lit(True).alias("p_found"),
    )  # fmt: skip
    # one provenance row per uuid; rows that disagree on the licence are a conflict (a failure)
    lic = pl.coalesce(pl.col("p_license_link"), pl.col("p_license_name")).fill_null("(none)")
    prov = (
        prov.with_columns(_lic=lic)
        .group_by("p_uuid", maintain_order=True)
        .agg(
            pl.all().exclude("_lic").first(),
            pl.col("_lic").unique(maintain_order=True).sort().str.join(" | ").alias("p_licences"),
            (pl.col("_lic").n_unique() > 1).alias("p_conflict"),
        )
    )
    return rows.join(cat, left_on="_uuid", right_on="uuid", how="left", coalesce=False).join(
        prov, left_on="_uuid", right_on="p_uuid", how="left"
    )


_SAFE_URL = r"^https?://[^/?#\s]+(/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?([?#].*)?$"


def _licences(raw: pl.Series, allowed: tuple[str, ...]) -> pl.DataFrame:
    """Each distinct licence text -> its code, or the failure reason and detail."""
    rows = []
    for text in raw.unique().to_list():
        try:
            rows.append((text, check_license(text, allowed), None, None))
        except BadRecord as exc:
            rows.append((text, None, exc.reason, str(exc)))
    schema = {"_lic_raw": pl.String, "license": pl.String, "_lr": pl.String, "_ld": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _names(names: pl.Series) -> pl.DataFrame:
    """Each distinct binomial -> genus and epithet as the name parser reads them."""
    parsed = [(n, (p := parse_name(n)).genus, p.epithet) for n in names.unique().to_list()]
    schema = {"_name": pl.String, "raw_genus": pl.String, "raw_epithet": pl.String}
    return pl.DataFrame(parsed, schema=schema, orient="row")


def _evaluate(details: pl.DataFrame, allowed: tuple[str, ...], query: str) -> pl.DataFrame:
    """Each drawn row checked (vectorised): `_ok`, its RAW_RECORD fields, or `reason`/`detail`."""
    lic_raw = pl.coalesce(pl.col("p_license_link"), pl.col("p_license_name"))
    url = pl.coalesce(pl.col("source_url"), pl.col("p_source_url")).str.strip_chars()
    url = pl.when(url.str.starts_with("//")).then(pl.lit("https:") + url).otherwise(url)
    df = details.with_columns(_lic_raw=lic_raw, _url=url)
    df = df.join(_licences(df["_lic_raw"], allowed), on="_lic_raw", how="left", nulls_equal=True)
    df = df.join(_names(df["_name"]), on="_name", how="left", nulls_equal=True)
    u = pl.col("_url")
    bad_url = ~u.str.contains(_SAFE_URL) | u.str.contains(r"/\.\.(/|$|[?#])")
    reason = (
        pl.when(pl.col("uuid").is_null()).then(pl.lit("malformed"))
        .when(pl.col("p_found").is_null()).then(pl.lit("no_provenance"))
        .when(pl.col("p_conflict")).then(pl.lit("license_conflict"))
        .when(pl.col("_lr").is_not_null()).then(pl.col("_lr"))
        .when(u.is_null() | (u == "")).then(pl.lit("missing_media"))
        .when(bad_url).then(pl.lit("bad_media_url"))
    )  # fmt: skip
    detail = (
        pl.when(pl.col("uuid").is_null()).then(pl.lit("catalog row without uuid"))
        .when(pl.col("p_found").is_null())
        .then(pl.format("uuid {} has no provenance row", pl.col("uuid")))
        .when(pl.col("p_conflict"))
        .then(pl.format("uuid {}: provenance rows disagree on the licence: {}", pl.col("uuid"),
                        pl.col("p_licences")))
        .when(pl.col("_lr").is_not_null()).then(pl.col("_ld"))
        .when(u.is_null() | (u == "")).then(pl.lit("no media URL"))
        .otherwise(pl.format("unsafe or not an http(s) URL: {}", u.str.slice(0, 120)))
    )  # fmt: skip
    owner = pl.col("p_copyright_owner").str.strip_chars()
    gbif = (pl.col("data_source").str.to_lowercase() == "gbif") & pl.col("source_id").str.contains(
        r"^\d+$"
    )
    tail = u.str.split("?").list.first().str.split("#").list.first().str.split("/").list.last()
    return df.select(
        "_sp",
        "_rank",
        reason.alias("reason"),
        detail.alias("detail"),
        pl.lit(NAME).alias("source"),
        pl.lit(MODALITY).alias("modality"),
        pl.col("uuid").alias("record_id"),
        pl.col("_name").alias("raw_scientific_name"),
        "raw_genus",
        "raw_epithet",
        pl.col("data_source").alias("source_group"),
        pl.col("common").alias("common_name"),
        "license",
        pl.col("_lic_raw").alias("license_raw"),
        pl.when(owner.str.to_lowercase().is_in(list(NO_OWNER)))
        .then(None)
        .otherwise(owner)
        .alias("attribution"),
        u.alias("media_url"),
        pl.when(tail.str.contains(r"[^.]\.[A-Za-z0-9]+$"))
        .then(tail.str.extract(r"\.([A-Za-z0-9]+)$").str.to_lowercase())
        .alias("file_format"),
        pl.when(gbif)
        .then(pl.format("https://www.gbif.org/occurrence/{}", pl.col("source_id")))
        .alias("page_url"),
        pl.lit(query).alias("query"),
    ).with_columns(_ok=pl.col("reason").is_null())


def _draw(evaluated: pl.DataFrame, per_species: int) -> pl.DataFrame:
    """Per species, the walk in rank order up to the N-th usable row (everything if fewer)."""
    evaluated = evaluated.sort("_sp", "_rank")
    ok = pl.col("_ok").cast(pl.UInt32)
    return evaluated.filter((ok.cum_sum().over("_sp") - ok) < per_species)


def import_tol(
    catalog: Path,
    provenance: Path,
    out: Path,
    *,
    per_species: int = 200,
    seed: int = 0,
    taxa: Sequence[str] = (),
    allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    exclusive: bool = False,
) -> SourceResult:
    """Draw up to `per_species` images per species into OUT/raw/treeoflife_200m/ + failures;
    `exclusive`: TreeOfLife-200M becomes the only image source (`exclude_other_images`)."""
    start = time.monotonic()
    catalog, provenance, out = Path(catalog), Path(provenance), Path(out)
    if per_species < 1:
        raise ValueError(f"--per-species must be at least 1, not {per_species}")
    cols = resolve_columns(catalog, CATALOG_FIELDS, ("uuid",))
    if "scientific_name" not in cols and not ("genus" in cols and "species" in cols):
        raise ValueError(f"{catalog}: no scientific_name column and no genus + species columns")
    pcols = resolve_columns(provenance, PROVENANCE_FIELDS, ("uuid", "license_name"))
    if "source_url" not in cols and "source_url" not in pcols:
        raise ValueError(f"{catalog}: no image URL column (source_url) in catalog or provenance")
    names = [] if taxa else corpus_names(out)
    if not taxa and not names:
        raise ValueError(
            f"no corpus species under {layout.raw_root(out)}: crawl the audio sources first "
            "(`biovita-data fetch`) or name the taxa with --taxa"
        )
    query = f"taxa={','.join(taxa)}" if taxa else "corpus"
    drawn = previous_draw(  # the uuids the previous import of this seed drew
        tol_dir(out) / "import.json", ("seed",), seed, tol_dir(out) / "records.parquet",
        ["record_id"],
    )  # fmt: skip
    before = None if drawn is None else drawn["record_id"]
    candidates, species = _candidates(catalog, cols, names, list(taxa), seed, before)
    available = candidates.group_by("_sp").agg(pl.len().alias("_n"))
    evaluated: list[pl.DataFrame] = []
    # a margin past N for rows that fail, so that one pass over the files usually does
    frontier = candidates.filter(pl.col("_rank") < per_species + per_species // 5 + 5)
    for _ in range(MAX_ROUNDS):
        if frontier.is_empty():
            break
        evaluated.append(
            _evaluate(_details(catalog, provenance, cols, pcols, frontier, species), allowed, query)
        )  # the details frame is not kept: it holds every column of the drawn rows
        done = pl.concat([e.select("_sp", "_rank", "_ok") for e in evaluated])
        got = done.group_by("_sp").agg(
            pl.col("_ok").sum().alias("_good"), pl.col("_rank").max().alias("_last")
        )
        short = got.join(available, on="_sp").filter(
            (pl.col("_good") < per_species) & (pl.col("_last") + 1 < pl.col("_n"))
        )
        # the next window: the shortfall, plus a margin for rows that will fail in turn
        need = short.with_columns(
            _upto=pl.col("_last") + 1 + ((per_species - pl.col("_good")) * 5 // 4 + 2)
        )
        frontier = candidates.join(need.select("_sp", "_last", "_upto"), on="_sp").filter(
            (pl.col("_rank") > pl.col("_last")) & (pl.col("_rank") < pl.col("_upto"))
        ).select("_sp", "_rank", "_uuid")  # fmt: skip
    raw_cols = [f.name for f in RAW_RECORD]
    if evaluated:
        # memory: one copy of the drawn rows at a time
        drawn = _draw(pl.concat(evaluated, rechunk=False), per_species)
        evaluated.clear()
        present = [c for c in raw_cols if c in drawn.columns]
        with_images = drawn.filter(pl.col("_ok"))["_sp"].n_unique()
        records = drawn.filter(pl.col("_ok")).select(present)
        table = _cast(records.sort("raw_scientific_name", "record_id").to_arrow())
        del records
        fails = drawn.filter(~pl.col("_ok")).select(
            pl.lit("fetch").alias("stage"), "source", "modality", "record_id",
            pl.col("raw_scientific_name").alias("name"), "reason", "detail",
        ).sort("record_id", "reason", nulls_last=True)  # fmt: skip
        del drawn
    else:
        table, fails, with_images = (
            RAW_RECORD.empty_table(),
            pl.from_arrow(FAILURE.empty_table()),
            0,
        )
    write_table(table, tol_dir(out) / "records.parquet")
    replace_failures(out, "fetch", [NAME], fails.to_arrow().cast(FAILURE))
    summary = {
        "species_wanted": len(taxa) if taxa else len(names),
        "species_in_catalog": species.height,
        "species_with_images": with_images,
        "candidates": candidates.height,
        "per_species": per_species,
        "seed": seed,
    }
    if exclusive:
        summary["excluded_images"] = exclude_other_images(out)
    write_json_atomic(summary, tol_dir(out) / "import.json")
    dropped = Counter(fails["reason"].to_list())
    return SourceResult(
        NAME,
        kept=table.num_rows,
        dropped=dict(sorted(dropped.items())),
        seconds=time.monotonic() - start,
    )


def _cast(table):
    """A table with some RAW_RECORD columns -> the full RAW_RECORD schema (the rest null)."""
    import pyarrow as pa

    cols = []
    for f in RAW_RECORD:
        if f.name in table.column_names:
            cols.append(table.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=RAW_RECORD)


EXCLUDED = "image_source_excluded"


def excluded_images(out: Path) -> dict[str, int]:
    """Per source: the image records `exclude_other_images` moved to failures."""
    path = layout.failures_path(out)
    if not path.exists():
        return {}
    fails = pl.read_parquet(path, columns=["stage", "source", "reason"])
    moved = fails.filter((pl.col("stage") == "fetch") & (pl.col("reason") == EXCLUDED))
    return dict(moved.group_by("source").len().iter_rows())


def exclude_other_images(out: Path) -> dict[str, int]:
    """Make TreeOfLife-200M the only image source, as in the paper: the other sources' image
    records leave their records.parquet and become `failures` rows (stage fetch, reason
    image_source_excluded). Idempotent; a later crawl brings them back until this runs again."""
    moved: dict[str, int] = {}
    for source in layout.SOURCE_DIRS:
        path = layout.raw_records_path(out, source)
        if source == NAME or not path.exists():
            continue
        raw = pl.read_parquet(path)
        images = raw.filter(pl.col("modality") == MODALITY)
        if images.is_empty():
            continue
        write_table(raw.filter(pl.col("modality") != MODALITY).to_arrow().cast(RAW_RECORD), path)
        fails_path = layout.failures_path(out)
        old = pl.read_parquet(fails_path) if fails_path.exists() else None
        mine = (
            old.filter((pl.col("stage") == "fetch") & (pl.col("source") == source))
            if old is not None
            else pl.from_arrow(FAILURE.empty_table())
        )
        new = images.select(
            pl.lit("fetch").alias("stage"), "source", "modality", "record_id",
            pl.col("raw_scientific_name").alias("name"), pl.lit(EXCLUDED).alias("reason"),
            pl.lit(f"images come from {NAME} (import-tol --exclusive)").alias("detail"),
        )  # fmt: skip
        merged = pl.concat([mine, new], how="vertical_relaxed").unique(
            ["modality", "record_id", "reason"], keep="first", maintain_order=True
        )
        replace_failures(out, "fetch", [source], merged.to_arrow().cast(FAILURE))
        moved[source] = images.height
    return moved

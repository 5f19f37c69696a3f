"""A GBIF Darwin Core Archive download -> the same raw rows as the occurrence API, streamed.

`meta.xml` names each file's columns (by term); occurrence.txt and multimedia.txt are read line by
line into Parquet holding only the columns the parser needs, partitioned by gbifID, and joined and
parsed one partition at a time, so a multi-GB download never sits in memory.
"""

from __future__ import annotations

import csv
import io
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core.schemas import FAILURE, RAW_RECORD
from biovita_data.core.tables import to_table
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.sources.base import BadRecord, SourceResult, failure
from biovita_data.crawl.sources.gbif import NAME, parse_occurrence

DWC_TEXT = "{http://rs.tdwg.org/dwc/text/}"
OCCURRENCE = "http://rs.tdwg.org/dwc/terms/Occurrence"
MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
# The occurrence terms the parser reads (crawl.sources.gbif.parse_occurrence).
OCCURRENCE_TERMS = (
    "gbifID", "occurrenceID", "datasetKey", "taxonKey", "acceptedTaxonKey", "speciesKey",
    "scientificName", "acceptedScientificName", "species", "genus", "class", "order", "family",
    "taxonRank", "vernacularName", "basisOfRecord", "sex", "lifeStage", "countryCode",
    "decimalLatitude", "decimalLongitude", "eventDate", "eventTime", "lastInterpreted",
    "recordedBy",
)  # fmt: skip
MEDIA_TERMS = ("type", "format", "identifier", "created", "creator", "license", "rightsHolder")
BATCH = 50_000
PART_BYTES = 512 * 2**20  # text per partition of the join
csv.field_size_limit(sys.maxsize)


class ArchiveError(ValueError):
    """A file that is not a usable Darwin Core Archive download."""


@dataclass(frozen=True)
class TextFile:
    """One data file of the archive as meta.xml describes it."""

    location: str
    row_type: str
    columns: dict[int, str]  # column index -> term name (the URI's last segment)
    defaults: dict[str, str]  # terms with a constant value and no column
    delimiter: str
    quote: str
    header_lines: int
    encoding: str
    id_index: int | None = None  # the <id>/<coreid> column


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape") if text else text


def read_meta(zf: zipfile.ZipFile) -> dict[str, TextFile]:
    """meta.xml -> {rowType: TextFile} for the core and every extension."""
    try:
        root = ElementTree.fromstring(zf.read("meta.xml"))
    except KeyError:
        raise ArchiveError("no meta.xml in the archive: not a Darwin Core Archive") from None
    except ElementTree.ParseError as exc:
        raise ArchiveError(f"meta.xml is not valid XML: {exc}") from None
    files: dict[str, TextFile] = {}
    for block in [*root.iter(f"{DWC_TEXT}core"), *root.iter(f"{DWC_TEXT}extension")]:
        location = block.findtext(f"{DWC_TEXT}files/{DWC_TEXT}location")
        if not location:
            raise ArchiveError(f"meta.xml: a {block.tag} block without a file location")
        columns, defaults = {}, {}
        for f in block.iter(f"{DWC_TEXT}field"):
            term = (f.get("term") or "").rstrip("/").rsplit("/", 1)[-1]
            if f.get("index") is not None:
                columns[int(f.get("index"))] = term
            elif f.get("default") is not None:
                defaults[term] = f.get("default")
        files[block.get("rowType", "")] = TextFile(
            location=location.strip(),
            row_type=block.get("rowType", ""),
            columns=columns,
            defaults=defaults,
            delimiter=_unescape(block.get("fieldsTerminatedBy", "\\t")) or "\t",
            quote=_unescape(block.get("fieldsEnclosedBy", "")),
            header_lines=int(block.get("ignoreHeaderLines", "0") or 0),
            encoding=block.get("encoding", "UTF-8"),
            id_index=next(
                (
                    int(e.get("index"))
                    for e in block
                    if e.tag in (f"{DWC_TEXT}id", f"{DWC_TEXT}coreid")
                    and e.get("index") is not None
                ),
                None,
            ),
        )
    return files


def iter_rows(zf: zipfile.ZipFile, tf: TextFile, terms: tuple[str, ...]) -> Iterator[list]:
    """The wanted terms of each line, streamed; '' -> None."""
    wanted = [(i, t) for i, t in sorted(tf.columns.items()) if t in terms]
    with zf.open(tf.location) as raw:
        text = io.TextIOWrapper(raw, encoding=tf.encoding, newline="")
        reader = csv.reader(
            text,
            delimiter=tf.delimiter,
            quotechar=tf.quote or None,
            quoting=csv.QUOTE_MINIMAL if tf.quote else csv.QUOTE_NONE,
        )
        for n, line in enumerate(reader):
            if n < tf.header_lines or not line:
                continue
            yield [line[i] or None if i < len(line) else None for i, _ in wanted]


def _part_of(gbif_id: str | None, parts: int) -> int:
    if parts == 1 or not gbif_id:
        return 0
    return (int(gbif_id) if gbif_id.isdigit() else zlib.crc32(gbif_id.encode())) % parts


def _to_parquet(
    zf: zipfile.ZipFile, tf: TextFile, terms: tuple[str, ...], dest: Path, parts: int
) -> list[Path]:
    """The wanted columns of one file as `parts` Parquet files, partitioned by gbifID."""
    names = [t for _, t in sorted(tf.columns.items()) if t in terms]
    if "gbifID" not in names:
        raise ArchiveError(f"{tf.location}: meta.xml names no gbifID column")
    key = names.index("gbifID")
    extra = [t for t in terms if t not in names and t in tf.defaults]
    schema = pa.schema([pa.field(n, pa.string()) for n in [*names, *extra]])
    paths = [dest.with_name(f"{dest.name}.{k}.parquet") for k in range(parts)]
    writers = [pq.ParquetWriter(p, schema) for p in paths]
    try:
        batches: list[list[list]] = [[] for _ in range(parts)]
        for row in iter_rows(zf, tf, terms):
            k = _part_of(row[key], parts)
            batches[k].append(row + [tf.defaults[t] for t in extra])
            if len(batches[k]) >= BATCH:
                writers[k].write_table(_tbl(batches[k], schema))
                batches[k] = []
        for k, batch in enumerate(batches):
            writers[k].write_table(_tbl(batch, schema))
    finally:
        for w in writers:
            w.close()
    return paths


def _tbl(batch: list[list], schema: pa.Schema) -> pa.Table:
    cols = list(zip(*batch, strict=True)) if batch else [() for _ in schema]
    return pa.table({f.name: pa.array(c, pa.string()) for f, c in zip(schema, cols, strict=True)})


def read_archive(
    path: Path,
    *,
    allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    media: str = "both",
    part_bytes: int = PART_BYTES,
) -> Iterator[tuple[list[dict], list[dict]]]:
    """(rows, failures) per batch of occurrences, exactly as the API crawl would parse them.

    Both files are streamed into Parquet partitions by gbifID (one per `part_bytes` of text),
    and each partition's occurrences are joined with their media on their own: memory holds one
    partition, never the download.
    """
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path}: not a readable zip ({exc})") from None
    query = f"dwca:{path.name}"
    with zf, tempfile.TemporaryDirectory(prefix="dwca-") as tmp:
        files = read_meta(zf)
        if OCCURRENCE not in files:
            raise ArchiveError(f"{path}: meta.xml has no Occurrence core")
        if MULTIMEDIA not in files:
            raise ArchiveError(f"{path}: no Multimedia extension (download with media)")
        occ_file, med_file = files[OCCURRENCE], files[MULTIMEDIA]
        if "gbifID" not in med_file.columns.values():
            # the extension's coreid column links it to the core's gbifID
            columns = {**med_file.columns, med_file.id_index or 0: "gbifID"}
            med_file = TextFile(**{**med_file.__dict__, "columns": columns})
        try:
            size = max(zf.getinfo(f.location).file_size for f in (occ_file, med_file))
        except KeyError as exc:
            raise ArchiveError(f"{path}: meta.xml names a file the zip lacks: {exc}") from None
        parts = max(1, -(-size // part_bytes))
        occ_parts = _to_parquet(zf, occ_file, OCCURRENCE_TERMS, Path(tmp) / "occ", parts)
        med_parts = _to_parquet(zf, med_file, ("gbifID", *MEDIA_TERMS), Path(tmp) / "med", parts)
        for occ_pq, med_pq in zip(occ_parts, med_parts, strict=True):
            yield from _join_part(occ_pq, med_pq, query, allowed, media)


def _join_part(
    occ_pq: Path, med_pq: Path, query: str, allowed: tuple[str, ...], media: str
) -> Iterator[tuple[list[dict], list[dict]]]:
    occ = pl.read_parquet(occ_pq)
    med = pl.read_parquet(med_pq).with_row_index("_order")
    med = med.with_columns(
        *[pl.lit(None, pl.String).alias(t) for t in MEDIA_TERMS if t not in med.columns]
    )
    grouped = med.group_by("gbifID").agg(pl.struct(*MEDIA_TERMS).sort_by("_order").alias("media"))
    joined = occ.join(grouped, on="gbifID", how="inner")
    orphans = med.join(occ.select("gbifID"), on="gbifID", how="anti")
    if len(orphans):
        yield [], [
            failure(
                NAME, "media", r["gbifID"], None,
                BadRecord("no_occurrence", f"multimedia of {r['gbifID']}: no occurrence row"),
            )
            for r in orphans.iter_rows(named=True)
        ]  # fmt: skip
    del occ, med, grouped
    for batch in joined.iter_slices(BATCH):
        rows, fails = [], []
        for occurrence in batch.to_dicts():
            try:
                r, f = parse_occurrence(occurrence, query, allowed, media)
            except BadRecord as exc:
                fails.append(failure(NAME, "occurrence", occurrence.get("gbifID"), None, exc))
                continue
            rows += r
            fails += f
        yield rows, fails


def import_dwca(
    path: Path,
    out: Path,
    *,
    allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    media: str = "both",
) -> SourceResult:
    """Read a GBIF download into OUT/raw/gbif/records.parquet (merged like an incremental crawl)."""
    from biovita_data.crawl.fetch import FetchSettings, finalize

    t0 = time.monotonic()
    rows, fails, batches = [RAW_RECORD.empty_table()], [FAILURE.empty_table()], 0
    for r, f in read_archive(path, allowed=allowed, media=media):
        rows.append(to_table(r, RAW_RECORD))
        fails.append(to_table(f, FAILURE))
        batches += 1
    settings = FetchSettings(taxa=[], sources=[NAME], licenses=allowed)
    res = finalize(out, NAME, pa.concat_tables(rows), pa.concat_tables(fails), settings)
    res.pages, res.seconds = batches, time.monotonic() - t0
    return res

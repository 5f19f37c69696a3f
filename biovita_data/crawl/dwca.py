"""A GBIF Darwin Core Archive download -> the same raw rows as the occurrence API, streamed.

`meta.xml` names each file's columns (by term); occurrence.txt and multimedia.txt are read line by
line into Parquet holding only the columns the parser needs, joined by gbifID on Polars' streaming
engine, and parsed batch by batch, so a multi-GB download never sits in memory.
"""

from __future__ import annotations

import csv
import io
import sys
import tempfile
import time
import zipfile
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


def _to_parquet(zf: zipfile.ZipFile, tf: TextFile, terms: tuple[str, ...], dest: Path) -> None:
    names = [t for _, t in sorted(tf.columns.items()) if t in terms]
    if "gbifID" not in names and tf.row_type == OCCURRENCE:
        raise ArchiveError(f"{tf.location}: meta.xml names no gbifID column")
    extra = [t for t in terms if t not in names and t in tf.defaults]
    schema = pa.schema([pa.field(n, pa.string()) for n in [*names, *extra]])
    with pq.ParquetWriter(dest, schema) as writer:
        batch: list[list] = []
        for row in iter_rows(zf, tf, terms):
            batch.append(row + [tf.defaults[t] for t in extra])
            if len(batch) >= BATCH:
                writer.write_table(
                    pa.Table.from_pylist([], schema) if not batch else _tbl(batch, schema)
                )
                batch = []
        if batch:
            writer.write_table(_tbl(batch, schema))


def _tbl(batch: list[list], schema: pa.Schema) -> pa.Table:
    cols = list(zip(*batch, strict=True))
    return pa.table({f.name: pa.array(c, pa.string()) for f, c in zip(schema, cols, strict=True)})


def read_archive(
    path: Path,
    *,
    allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    media: str = "both",
) -> Iterator[tuple[list[dict], list[dict]]]:
    """(rows, failures) per batch of occurrences, exactly as the API crawl would parse them."""
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
        occ_pq, media_pq, joined = (Path(tmp) / n for n in ("occ.pq", "media.pq", "joined.pq"))
        _to_parquet(zf, files[OCCURRENCE], OCCURRENCE_TERMS, occ_pq)
        mfile = files[MULTIMEDIA]
        if "gbifID" not in mfile.columns.values():
            # the extension's coreid column links it to the core's gbifID
            mfile = TextFile(**{**mfile.__dict__, "columns": {**mfile.columns, 0: "gbifID"}})
        _to_parquet(zf, mfile, ("gbifID", *MEDIA_TERMS), media_pq)
        occ = pl.scan_parquet(occ_pq)
        med = pl.scan_parquet(media_pq).with_row_index("_order")
        missing = [t for t in MEDIA_TERMS if t not in med.collect_schema().names()]
        med = med.with_columns(*[pl.lit(None, pl.String).alias(t) for t in missing])
        grouped = med.group_by("gbifID").agg(
            pl.struct(*MEDIA_TERMS).sort_by("_order").alias("media")
        )
        occ.join(grouped, on="gbifID", how="inner").sink_parquet(joined)
        orphans = med.join(occ.select("gbifID"), on="gbifID", how="anti").collect()
        if len(orphans):
            bad = [
                failure(
                    NAME, "media", r["gbifID"], None,
                    BadRecord("no_occurrence", f"multimedia of {r['gbifID']}: no occurrence row"),
                )
                for r in orphans.iter_rows(named=True)
            ]  # fmt: skip
            yield [], bad
        for batch in pq.ParquetFile(joined).iter_batches(batch_size=BATCH):
            rows, fails = [], []
            for occurrence in batch.to_pylist():
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

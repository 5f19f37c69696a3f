"""A GBIF Darwin Core Archive download -> the same raw rows as the occurrence API, streamed.

`meta.xml` names each file's columns (by term). The occurrences come from its `<core>` (GBIF's
interpreted occurrence.txt); a download also declares `verbatim.txt`, the publisher's own values,
as an `<extension>` with the same rowType, and it is never read in place of the interpreted core.
occurrence.txt and multimedia.txt are read line by line (each line bounded, decoded in the
encoding meta.xml declares; an undecodable line is a failures row naming file and line) into
Parquet holding only the columns the parser needs, partitioned by gbifID, and joined and parsed
one partition at a time, so a multi-GB download never sits in memory. Members over the size or
compression caps of `crawl.limits` are refused before a byte is read. The download's DOI and
citation (metadata.xml) are kept in OUT/raw/gbif/citation.json for the dataset card.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import json
import re
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, RAW_RECORD
from biovita_data.core.tables import to_table, write_json_atomic
from biovita_data.crawl.licenses import DEFAULT_ALLOWED
from biovita_data.crawl.limits import LimitExceeded, Limits
from biovita_data.crawl.sources.base import BadRecord, SourceResult, failure
from biovita_data.crawl.sources.gbif import NAME, parse_occurrence

DWC_TEXT = "{http://rs.tdwg.org/dwc/text/}"
OCCURRENCE = "http://rs.tdwg.org/dwc/terms/Occurrence"
MULTIMEDIA = "http://rs.gbif.org/terms/1.0/Multimedia"
# Terms only GBIF's interpretation writes: a file that has them is the interpreted occurrence.txt.
INTERPRETED_TERMS = ("taxonKey", "acceptedTaxonKey", "speciesKey", "lastInterpreted")
# The occurrence terms the parser reads (crawl.sources.gbif.parse_occurrence).
OCCURRENCE_TERMS = (
    "gbifID", "occurrenceID", "datasetKey", "taxonKey", "acceptedTaxonKey", "speciesKey",
    "scientificName", "acceptedScientificName", "species", "genus", "class", "order", "family",
    "taxonRank", "vernacularName", "basisOfRecord", "sex", "lifeStage", "countryCode",
    "decimalLatitude", "decimalLongitude", "coordinateUncertaintyInMeters",
    "dataGeneralizations", "issue", "eventDate", "eventTime", "lastInterpreted", "recordedBy",
)  # fmt: skip
MEDIA_TERMS = ("type", "format", "identifier", "created", "creator", "license", "rightsHolder")
BATCH = 50_000
PART_BYTES = 512 * 2**20  # text per partition of the join
# Lines are bounded by the reader itself (Limits.line_bytes), so csv's own field cap is lifted.
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
    core: bool = False  # the <core> block (else an <extension>)


@dataclass(frozen=True)
class Meta:
    """meta.xml: the core file, the extension files, and the metadata document's name."""

    core: TextFile
    extensions: tuple[TextFile, ...]
    metadata: str | None = None

    @property
    def files(self) -> tuple[TextFile, ...]:
        return (self.core, *self.extensions)


def _unescape(text: str) -> str:
    return text.encode().decode("unicode_escape") if text else text


def _read_xml(zf: zipfile.ZipFile, name: str, archive: str, limits: Limits) -> bytes:
    """A member read whole, after the XML size cap is checked against its declared size."""
    limits.check_member(zf.getinfo(name), archive, xml=True)
    return zf.read(name)


def _text_file(block: ElementTree.Element) -> TextFile:
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
    return TextFile(
        location=location.strip(),
        row_type=block.get("rowType", ""),
        columns=columns,
        defaults=defaults,
        delimiter=_unescape(block.get("fieldsTerminatedBy", "\\t")) or "\t",
        quote=_unescape(block.get("fieldsEnclosedBy", "")),
        header_lines=int(block.get("ignoreHeaderLines", "0") or 0),
        encoding=(block.get("encoding") or "UTF-8").strip(),
        id_index=next(
            (
                int(e.get("index"))
                for e in block
                if e.tag in (f"{DWC_TEXT}id", f"{DWC_TEXT}coreid") and e.get("index") is not None
            ),
            None,
        ),
        core=block.tag == f"{DWC_TEXT}core",
    )


def read_meta(zf: zipfile.ZipFile, archive: str = "", limits: Limits | None = None) -> Meta:
    """meta.xml -> its core (from `<core>`) and extensions (from `<extension>`), in order."""
    limits = limits or Limits.from_env()
    try:
        root = ElementTree.fromstring(_read_xml(zf, "meta.xml", archive, limits))
    except KeyError:
        raise ArchiveError("no meta.xml in the archive: not a Darwin Core Archive") from None
    except ElementTree.ParseError as exc:
        raise ArchiveError(f"meta.xml is not valid XML: {exc}") from None
    cores = [_text_file(b) for b in root.iter(f"{DWC_TEXT}core")]
    if len(cores) != 1:
        raise ArchiveError(f"meta.xml declares {len(cores)} <core> blocks, not one")
    extensions = tuple(_text_file(b) for b in root.iter(f"{DWC_TEXT}extension"))
    return Meta(cores[0], extensions, (root.get("metadata") or "").strip() or None)


def occurrence_file(meta: Meta) -> TextFile:
    """The interpreted occurrences: the core when it is the Occurrence file, else an extension of
    that rowType; a file with GBIF's interpreted terms beats one without (verbatim.txt), the
    core beats an extension."""
    candidates = [f for f in meta.files if f.row_type == OCCURRENCE]
    if not candidates:
        raise ArchiveError("meta.xml has no Occurrence core")

    def rank(f: TextFile) -> tuple[bool, bool, bool]:
        interpreted = any(t in f.columns.values() for t in INTERPRETED_TERMS)
        verbatim = f.location.rsplit("/", 1)[-1].lower() == "verbatim.txt"
        return (not interpreted, verbatim, not f.core)

    return min(candidates, key=rank)


def _decoder(encoding: str, location: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ArchiveError(
            f"{location}: meta.xml declares the encoding {encoding!r}, which is not known"
        ) from None


@dataclass
class _Reading:
    """What one pass over a text file found besides its rows."""

    failures: list[dict] = field(default_factory=list)


def _undecodable(archive: str, tf: TextFile, n: int, exc: UnicodeDecodeError) -> dict:
    byte = exc.object[exc.start : exc.start + 1].hex()
    return {
        "stage": "fetch",
        "source": NAME,
        "modality": "media" if tf.row_type == MULTIMEDIA else "occurrence",
        "record_id": f"dwca:{archive}:{tf.location}:{n}",
        "name": None,
        "reason": "undecodable",
        "detail": f"{archive}: {tf.location} line {n} is not {tf.encoding} (byte 0x{byte} at "
        f"position {exc.start}): row skipped",
    }


def _lines(raw, tf: TextFile, archive: str, limits: Limits, seen: _Reading, budget: list[int]):
    """(line number, text) of each line, each read with a bounded readline and decoded on its
    own; `budget[0]` counts the bytes of the record being assembled (a quoted field may span
    lines) and is reset by the caller after each record."""
    encoding = _decoder(tf.encoding, tf.location)
    if "\n".encode(encoding) != b"\n":  # UTF-16/32: decode as a stream, still bounded
        text = io.TextIOWrapper(raw, encoding=encoding, newline="")
        read = lambda: text.readline(limits.line_bytes + 1)  # noqa: E731
        decode = None
    else:
        read = lambda: raw.readline(limits.line_bytes + 1)  # noqa: E731
        decode = encoding
    n = 0
    while True:
        try:
            line = read()
        except UnicodeDecodeError as exc:
            raise ArchiveError(f"{archive}: {tf.location} after line {n}: {exc}") from None
        if not line:
            return
        n += 1
        budget[0] += len(line)
        if len(line) > limits.line_bytes or budget[0] > limits.line_bytes:
            raise LimitExceeded(
                f"{archive}: {tf.location} line {n} is longer than the {limits.line_bytes}-byte "
                "line cap: a broken or crafted file (BIOVITA_MAX_LINE_BYTES raises the cap)"
            )
        if decode is not None:
            try:
                line = line.decode(decode)
            except UnicodeDecodeError as exc:
                seen.failures.append(_undecodable(archive, tf, n, exc))
                budget[0] = 0
                continue
        if n == 1:
            line = line.lstrip("\ufeff")
        yield n, line


def iter_rows(
    zf: zipfile.ZipFile,
    tf: TextFile,
    terms: tuple[str, ...],
    *,
    archive: str = "",
    limits: Limits | None = None,
    seen: _Reading | None = None,
) -> Iterator[list]:
    """The wanted terms of each line, streamed; '' -> None. Undecodable lines go to `seen`."""
    limits = limits or Limits.from_env()
    seen = seen if seen is not None else _Reading()
    wanted = [(i, t) for i, t in sorted(tf.columns.items()) if t in terms]
    budget = [0]
    numbers: list[int] = []

    def texts():
        for n, line in _lines(raw, tf, archive, limits, seen, budget):
            numbers.append(n)
            yield line

    with zf.open(tf.location) as raw:
        reader = csv.reader(
            texts(),
            delimiter=tf.delimiter,
            quotechar=tf.quote or None,
            quoting=csv.QUOTE_MINIMAL if tf.quote else csv.QUOTE_NONE,
        )
        for line in reader:
            budget[0] = 0
            first = numbers[0] if numbers else 0
            numbers.clear()
            if first <= tf.header_lines or not line:
                continue
            yield [line[i] or None if i < len(line) else None for i, _ in wanted]


def _part_of(gbif_id: str | None, parts: int) -> int:
    if parts == 1 or not gbif_id:
        return 0
    return (int(gbif_id) if gbif_id.isdigit() else zlib.crc32(gbif_id.encode())) % parts


def _to_parquet(
    zf: zipfile.ZipFile,
    tf: TextFile,
    terms: tuple[str, ...],
    dest: Path,
    parts: int,
    *,
    archive: str = "",
    limits: Limits | None = None,
    seen: _Reading | None = None,
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
        rows = iter_rows(zf, tf, terms, archive=archive, limits=limits, seen=seen)
        for row in rows:
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
    limits: Limits | None = None,
) -> Iterator[tuple[list[dict], list[dict]]]:
    """(rows, failures) per batch of occurrences, exactly as the API crawl would parse them.

    Both files are streamed into Parquet partitions by gbifID (one per `part_bytes` of text),
    and each partition's occurrences are joined with their media on their own: memory holds one
    partition, never the download.
    """
    limits = limits or Limits.from_env()
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path}: not a readable zip ({exc})") from None
    query = f"dwca:{path.name}"
    with zf, tempfile.TemporaryDirectory(prefix="dwca-") as tmp:
        meta = read_meta(zf, path.name, limits)
        try:
            occ_file = occurrence_file(meta)
        except ArchiveError as exc:
            raise ArchiveError(f"{path}: {exc}") from None
        med_file = next((f for f in meta.extensions if f.row_type == MULTIMEDIA), None)
        if med_file is None:
            raise ArchiveError(f"{path}: no Multimedia extension (download with media)")
        if "gbifID" not in med_file.columns.values():
            # the extension's coreid column links it to the core's gbifID
            columns = {**med_file.columns, med_file.id_index or 0: "gbifID"}
            med_file = TextFile(**{**med_file.__dict__, "columns": columns})
        try:
            infos = [zf.getinfo(f.location) for f in (occ_file, med_file)]
        except KeyError as exc:
            raise ArchiveError(f"{path}: meta.xml names a file the zip lacks: {exc}") from None
        for info in infos:
            limits.check_member(info, path.name)
        parts = max(1, -(-max(i.file_size for i in infos) // part_bytes))
        seen = _Reading()
        where = {"archive": path.name, "limits": limits, "seen": seen}
        occ_parts = _to_parquet(zf, occ_file, OCCURRENCE_TERMS, Path(tmp) / "occ", parts, **where)
        med_terms = ("gbifID", *MEDIA_TERMS)
        med_parts = _to_parquet(zf, med_file, med_terms, Path(tmp) / "med", parts, **where)
        if seen.failures:
            yield [], seen.failures
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
    # in the occurrence file's order: an inner join may follow the (unordered) grouped side
    joined = occ.join(grouped, on="gbifID", how="inner", maintain_order="left")
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


def read_citation(path: Path, limits: Limits | None = None) -> dict:
    """The download's DOI and citation from its metadata document (metadata.xml, GBIF's EML):
    `packageId` (or a DOI among `alternateIdentifier`), the `citation` element when present,
    else GBIF's form `GBIF.org (DATE) GBIF Occurrence Download https://doi.org/DOI`."""
    limits = limits or Limits.from_env()
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        meta = read_meta(zf, path.name, limits)
        name = meta.metadata or "metadata.xml"
        if name not in zf.namelist():
            return {"file": path.name, "doi": None, "citation": None}
        try:
            root = ElementTree.fromstring(_read_xml(zf, name, path.name, limits))
        except ElementTree.ParseError as exc:
            raise ArchiveError(f"{path.name}: {name} is not valid XML: {exc}") from None

    def texts(tag: str) -> list[str]:
        return [" ".join(e.text.split()) for e in root.iter() if _local(e.tag) == tag and e.text
                and e.text.strip()]  # fmt: skip

    doi = None
    for candidate in [root.get("packageId") or "", *texts("alternateIdentifier")]:
        found = re.search(r"\b(10\.\d{4,9}/\S+)", candidate)
        if found:
            doi = found.group(1).rstrip(".")
            break
    title = next(iter(texts("title")), None)
    published = next(iter(texts("pubDate")), None)
    citation = next(iter(texts("citation")), None)
    if citation is None and doi:
        when = f"{published}" if published else "no date"
        citation = f"GBIF.org ({when}) GBIF Occurrence Download https://doi.org/{doi}"
    return {
        "file": path.name,
        "doi": doi,
        "citation": citation,
        "title": title,
        "published": published,
    }


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def keep_citation(out: Path, cite: dict) -> Path:
    """Add one download's citation to OUT/raw/gbif/citation.json (one entry per DOI, else per
    file name; a download imported again replaces its entry)."""
    target = layout.gbif_citations_path(out)
    old = json.loads(target.read_text()).get("downloads", []) if target.exists() else []
    key = cite.get("doi") or cite["file"]
    kept = [d for d in old if (d.get("doi") or d.get("file")) != key]
    entry = {**cite, "imported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    downloads = sorted([*kept, entry], key=lambda d: (d.get("doi") or "", d["file"]))
    write_json_atomic({"downloads": downloads}, target)
    return target


def import_dwca(
    path: Path,
    out: Path,
    *,
    allowed: tuple[str, ...] = DEFAULT_ALLOWED,
    media: str = "both",
    limits: Limits | None = None,
) -> SourceResult:
    """Read a GBIF download into OUT/raw/gbif/records.parquet (merged like an incremental crawl)."""
    from biovita_data.crawl.fetch import FetchSettings, finalize

    t0 = time.monotonic()
    limits = limits or Limits.from_env()
    rows, fails, batches = [RAW_RECORD.empty_table()], [FAILURE.empty_table()], 0
    for r, f in read_archive(path, allowed=allowed, media=media, limits=limits):
        rows.append(to_table(r, RAW_RECORD))
        fails.append(to_table(f, FAILURE))
        batches += 1
    cite = read_citation(path, limits)  # the archive read: its meta.xml is sound
    settings = FetchSettings(taxa=[], sources=[NAME], licenses=allowed)
    res = finalize(out, NAME, pa.concat_tables(rows), pa.concat_tables(fails), settings)
    keep_citation(out, cite)
    res.pages, res.seconds = batches, time.monotonic() - t0
    return res

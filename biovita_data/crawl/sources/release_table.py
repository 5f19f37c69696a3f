"""Import the original BioVITA release's audio metadata table (CSV) as raw records."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import polars as pl

from biovita_data.core import layout
from biovita_data.core.schemas import FAILURE, OFFICIAL_NAMES, OFFICIAL_TAXONOMY, RAW_RECORD
from biovita_data.core.tables import replace_failures, to_table, write_table
from biovita_data.crawl.sources.base import BadRecord, SourceResult, check_media_url, failure

NAME = "official"
MODALITY = "audio"
# The release's `source` codes: Xeno-canto, iNaturalist, Animal Sound Archive.
SOURCE_CODES = {"xc": "Xeno-canto", "inat": "iNaturalist", "asa": "Animal Sound Archive"}
COLUMNS = (
    "file_name",
    "scientific_name",
    "accepted_name",
    "class",
    "order",
    "family",
    "genus",
    "com",
    "source",
    "recording_id",
    "download_url",
)
LINEAGE = ("class", "order", "family", "genus")
# Failure reasons that leave the record kept (the others drop it).
NOTICES = frozenset({"lineage_conflict"})

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def official_dir(out: Path) -> Path:
    """Where the import writes: OUT/raw/official/."""
    return layout.raw_dir(out, NAME)


def _clean(value: str | None) -> str | None:
    """Strip a CSV cell; empty means missing (None)."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def read_official_csv(csv_path: Path) -> tuple[pl.DataFrame, list[int]]:
    """The table as strings (header stripped), and each row's first line number in the file."""
    try:
        df = pl.read_csv(csv_path, infer_schema=False, encoding="utf8")
    except pl.exceptions.PolarsError as exc:
        raise ValueError(f"{csv_path}: not a readable CSV table: {exc}") from None
    df = df.rename({c: c.strip() for c in df.columns})
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{csv_path}: missing required column(s) {', '.join(map(repr, missing))}; "
            f"the BioVITA audio metadata table has {', '.join(COLUMNS)}"
        )
    df = df.select(COLUMNS)
    # Row i starts on line i + 2 (after the header), plus the newlines inside earlier rows'
    # quoted cells.
    newlines = pl.sum_horizontal(pl.col(c).str.count_matches("\n").fill_null(0) for c in COLUMNS)
    first = pl.int_range(pl.len()) + 2 + newlines.cum_sum() - newlines
    starts = df.select(first.alias("line"))["line"].to_list()
    return df, [int(n) for n in starts]


def _file_format(file_name: str | None, url: str) -> str | None:
    """Extension of the file name, else of the URL path (lower case)."""
    for candidate in (file_name or "", url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]):
        if "." in candidate.strip("."):
            return candidate.rsplit(".", 1)[-1].lower() or None
    return None


def parse_row(row: dict[str, str | None]) -> dict:
    """One cleaned table row -> a RAW_RECORD row; BadRecord when it cannot be used."""
    rid, code = row["recording_id"], row["source"]
    if rid is None:
        raise BadRecord("malformed", "no recording_id")
    if not _SAFE_ID.match(rid):
        raise BadRecord("malformed", f"recording_id has unexpected characters: {rid[:80]!r}")
    if code is None:
        raise BadRecord("malformed", "no source code")
    if code not in SOURCE_CODES:
        raise BadRecord(
            "unknown_source", f"unknown source code {code!r} (expected {', '.join(SOURCE_CODES)})"
        )
    if row["scientific_name"] is None:
        raise BadRecord("malformed", "no scientific_name")
    file_name = row["file_name"]
    if file_name is not None and (
        "/" in file_name or "\\" in file_name or file_name in (".", "..")
    ):
        raise BadRecord("malformed", f"file_name is not a plain file name: {file_name[:80]!r}")
    url = check_media_url(row["download_url"])
    return {
        "source": NAME,
        "modality": MODALITY,
        "record_id": f"{code}:{rid}",
        "raw_scientific_name": row["scientific_name"],
        "source_group": code,
        "common_name": row["com"],
        "media_url": url,
        "file_name": file_name,
        "file_format": _file_format(file_name, url),
    }


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    """Deterministic order: by source code, then id with numeric ids in numeric order."""
    rid = pl.col("record_id")
    return df.sort([rid.str.split(":").list.first(), rid.str.len_chars(), rid])


def import_official(csv_path: Path, out: Path) -> SourceResult:
    """Import the release table into OUT/raw/official/ (records, taxonomy, names) + failures."""
    start = time.monotonic()
    csv_path, out = Path(csv_path), Path(out)
    df, lines = read_official_csv(csv_path)
    records: list[dict] = []
    names: list[dict] = []
    fails: list[tuple[int, dict]] = []  # (line, failures row)
    first_line: dict[str, int] = {}  # record id -> line that listed it
    lineage: dict[str, tuple[tuple[str | None, ...], int]] = {}  # accepted name -> (lineage, line)
    for line, raw in zip(lines, df.iter_rows(named=True), strict=True):
        row = {k: _clean(v) for k, v in raw.items()}
        if all(v is None for v in row.values()):
            continue  # a blank line, not a record
        if row["source"] is not None:
            row["source"] = row["source"].lower()  # `XC` is `xc`
        code, rid = row["source"], row["recording_id"]
        record_id = f"{code}:{rid}" if code and rid else None
        name = row["scientific_name"]
        try:
            rec = parse_row(row)
            if rec["record_id"] in first_line:
                raise BadRecord(
                    "duplicate",
                    f"{rec['record_id']} is listed on line {first_line[rec['record_id']]}",
                )
        except BadRecord as exc:
            bad = BadRecord(exc.reason, f"line {line}: {exc}")
            fails.append((line, failure(NAME, MODALITY, record_id, name, bad)))
            continue
        first_line[rec["record_id"]] = line
        records.append(rec)
        accepted = row["accepted_name"]
        names.append(
            {"record_id": rec["record_id"], "raw_scientific_name": name, "accepted_name": accepted}
        )
        if accepted is None:
            continue
        tree = tuple(row[c] for c in LINEAGE)
        if accepted not in lineage:
            lineage[accepted] = (tree, line)
        elif lineage[accepted][0] != tree:
            kept, at = lineage[accepted]
            detail = (
                f"line {line}: lineage {'/'.join(t or '-' for t in tree)} of {accepted!r} differs "
                f"from line {at}'s {'/'.join(t or '-' for t in kept)}, which is kept; "
                "the record is kept"
            )
            notice = BadRecord("lineage_conflict", detail)
            fails.append((line, failure(NAME, MODALITY, rec["record_id"], name, notice)))
    directory = official_dir(out)
    recs = _sorted(pl.from_arrow(to_table(records, RAW_RECORD)))
    write_table(recs.to_arrow().cast(RAW_RECORD), directory / "records.parquet")
    name_df = _sorted(pl.from_arrow(to_table(names, OFFICIAL_NAMES)))
    write_table(name_df.to_arrow().cast(OFFICIAL_NAMES), directory / "names.parquet")
    taxa = [
        dict(zip(("accepted_name", *LINEAGE), (a, *t), strict=True))
        for a, (t, _) in lineage.items()
    ]
    taxa.sort(key=lambda r: r["accepted_name"])
    write_table(to_table(taxa, OFFICIAL_TAXONOMY), directory / "taxonomy.parquet")
    fails.sort(key=lambda f: f[0])
    replace_failures(out, "fetch", [NAME], to_table([f for _, f in fails], FAILURE))
    dropped = Counter(f["reason"] for _, f in fails if f["reason"] not in NOTICES)
    return SourceResult(
        NAME,
        kept=len(records),
        dropped=dict(sorted(dropped.items())),
        seconds=time.monotonic() - start,
    )

"""Readers of the public trait tables: one row per named row, the 34 labels as Int8 (1/0/null).

Formats and the field -> label mapping are those of docs/design.md ("Trait vocabulary") and
manifests/README.md ("Trait tables -> the 34 labels"). A missing value never sets a label:
unknown stays null.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS

KINDS: tuple[str, ...] = ("avonet", "eltontraits", "amphibio", "csv")

# Values every table may write for "not recorded" (after stripping whitespace).
MISSING: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "NULL", "null")

Exprs = dict[str, pl.Expr]


def _col(category: str, label: str) -> str:
    """The trait column of a category's label."""
    return f"trait_{category}_{label}"


def _text(column: str) -> pl.Expr:
    """A cell as stripped text, null when missing."""
    return pl.col(column).str.strip_chars().replace(list(MISSING), None)


def _number(column: str) -> pl.Expr:
    """A cell as a number, null when missing or not a number."""
    return _text(column).cast(pl.Float64, strict=False)


def _flag(column: str) -> pl.Expr:
    """A 1/0 cell as 1/0; anything else null."""
    value = _number(column)
    return pl.when(value == 1).then(1).when(value == 0).then(0)


def _one(column: str) -> pl.Expr:
    """A cell that can only say yes: 1 -> 1, anything else null."""
    return pl.when(_number(column) == 1).then(1)


def _named(column: str, values: Sequence[str]) -> pl.Expr:
    """1 where the cell is one of `values` (case-insensitive), else null."""
    lowered = [v.lower() for v in values]
    return pl.when(_text(column).str.to_lowercase().is_in(lowered)).then(1)


def _one_of(column: str, choices: Mapping[str, tuple[str, ...]], label: str) -> pl.Expr:
    """Where the cell is a known choice: 1 if that choice names `label`, else 0; null otherwise."""
    code = _text(column)
    named = [c for c, labels in choices.items() if label in labels]
    return pl.when(code.is_in(list(choices))).then(code.is_in(named).cast(pl.Int8))


def _percent_any(columns: Sequence[str]) -> pl.Expr:
    """1 if some column is above 0, 0 if all are present and 0, else null."""
    values = [_number(c) for c in columns]
    positive = pl.any_horizontal([(v > 0).fill_null(False) for v in values])
    complete = pl.all_horizontal([v.is_not_null() for v in values])
    return pl.when(positive).then(1).when(complete).then(0)


def _percent_half(columns: Sequence[str]) -> pl.Expr:
    """1 if the columns sum to at least 50, 0 if all are present and sum lower, else null."""
    values = [_number(c) for c in columns]
    total = pl.sum_horizontal(values)
    complete = pl.all_horizontal([v.is_not_null() for v in values])
    return pl.when(total >= 50).then(1).when(complete).then(0)


# --- AVONET -----------------------------------------------------------------------------------

AVONET_HABITAT: dict[str, tuple[str, ...]] = {
    "forest": ("Forest", "Woodland"),
    "shrubland": ("Shrubland",),
    "grassland": ("Grassland",),
    "wetland": ("Wetland", "Riverine"),
    "marine_coastal": ("Marine", "Coastal"),
    "desert_rocky": ("Desert", "Rock"),
    "human_modified": ("Human Modified",),
}  # "Caves" sets nothing
AVONET_NICHE: dict[str, tuple[str, ...]] = {
    "invertebrates": ("Invertivore",),
    "vertebrates": ("Vertivore",),
    "fish": ("Aquatic predator",),
    "carrion": ("Scavenger",),
    "fruit": ("Frugivore",),
    "nectar": ("Nectarivore",),
    "seeds_plants": ("Granivore", "Herbivore terrestrial", "Herbivore aquatic"),
}  # "Omnivore" sets nothing
AVONET_LIFESTYLE: dict[str, tuple[str, ...]] = {
    "Aerial": ("aerial",),
    "Terrestrial": ("terrestrial",),
    "Insessorial": ("arboreal",),
    "Aquatic": ("aquatic",),
}  # "Generalist" sets nothing
# |latitude| bands of the climate labels: [low, high)
CLIMATE_BANDS: dict[str, tuple[float, float]] = {
    "tropical": (0.0, 23.4),
    "subtropical": (23.4, 35.0),
    "temperate": (35.0, 60.0),
    "boreal_polar": (60.0, float("inf")),
}
AVONET_REQUIRED = (
    "Species1",
    "Habitat",
    "Migration",
    "Trophic.Niche",
    "Primary.Lifestyle",
    "Min.Latitude",
    "Max.Latitude",
)


def _avonet_labels(_columns: Sequence[str]) -> Exprs:
    """AVONET: habitat, migration, trophic niche, primary lifestyle, latitude range -> climate."""
    exprs: Exprs = {}
    for label, values in AVONET_HABITAT.items():
        exprs[_col("habitat", label)] = _named("Habitat", values)
    for label, values in AVONET_NICHE.items():
        exprs[_col("diet", label)] = _named("Trophic.Niche", values)
    for label in TRAIT_CATEGORIES["lifestyle"]:
        exprs[_col("lifestyle", label)] = _one_of("Primary.Lifestyle", AVONET_LIFESTYLE, label)
    migration = _number("Migration")
    exprs[_col("migration", "migratory")] = (
        pl.when(migration == 3).then(1).when(migration.is_in([1.0, 2.0])).then(0)
    )
    exprs[_col("migration", "partial_migrant")] = (
        pl.when(migration == 2).then(1).when(migration.is_in([1.0, 3.0])).then(0)
    )
    a, b = _number("Min.Latitude"), _number("Max.Latitude")
    low, high = pl.min_horizontal(a, b), pl.max_horizontal(a, b)
    straddles = (low <= 0) & (high >= 0)
    near = pl.when(straddles).then(0.0).otherwise(pl.min_horizontal(low.abs(), high.abs()))
    far = pl.max_horizontal(low.abs(), high.abs())
    known = a.is_not_null() & b.is_not_null()
    for zone, (lo, hi) in CLIMATE_BANDS.items():
        reaches = ((near < hi) & (far >= lo)).cast(pl.Int8)
        exprs[_col("climate", zone)] = pl.when(known).then(reaches)
    return exprs


# --- EltonTraits 1.0 ----------------------------------------------------------------------------

ELTON_DIET: dict[str, tuple[str, ...]] = {
    "invertebrates": ("Diet-Inv",),
    "vertebrates": ("Diet-Vend", "Diet-Vect", "Diet-Vunk"),
    "fish": ("Diet-Vfish",),
    "carrion": ("Diet-Scav",),
    "fruit": ("Diet-Fruit",),
    "nectar": ("Diet-Nect",),
    "seeds_plants": ("Diet-Seed", "Diet-PlantO"),
}
ELTON_FORSTRAT: dict[str, tuple[str, ...]] = {
    "aerial": ("ForStrat-aerial",),
    "terrestrial": ("ForStrat-ground",),
    "arboreal": ("ForStrat-understory", "ForStrat-midhigh", "ForStrat-canopy"),
    "aquatic": ("ForStrat-watbelowsurf", "ForStrat-wataroundsurf"),
}
# MamFuncDat ForStrat-Value: the lifestyle labels each code names (the others are 0).
ELTON_FORSTRAT_VALUE: dict[str, tuple[str, ...]] = {
    "M": ("aquatic",),
    "Ar": ("arboreal",),
    "A": ("aerial",),
    "S": ("terrestrial", "arboreal"),
    "G": ("terrestrial",),
}
ELTON_ACTIVITY: dict[str, str] = {
    "diurnal": "Activity-Diurnal",
    "nocturnal": "Activity-Nocturnal",
    "crepuscular": "Activity-Crepuscular",
}
_DIET_COLUMNS = tuple(c for columns in ELTON_DIET.values() for c in columns)
BIRDFUNCDAT_REQUIRED = (
    "Scientific",
    *_DIET_COLUMNS,
    *(c for columns in ELTON_FORSTRAT.values() for c in columns),
    "PelagicSpecialist",
    "Nocturnal",
)
MAMFUNCDAT_REQUIRED = ("Scientific", *_DIET_COLUMNS, "ForStrat-Value", *ELTON_ACTIVITY.values())


def _elton_diet() -> Exprs:
    """Diet percentages -> the seven diet labels (1 where the share is above 0)."""
    return {_col("diet", label): _percent_any(cols) for label, cols in ELTON_DIET.items()}


def _birdfuncdat_labels(_columns: Sequence[str]) -> Exprs:
    """BirdFuncDat: diet, foraging strata -> lifestyle, pelagic -> marine_coastal, nocturnal."""
    exprs = _elton_diet()
    for label, columns in ELTON_FORSTRAT.items():
        exprs[_col("lifestyle", label)] = _percent_half(columns)
    exprs[_col("habitat", "marine_coastal")] = _one("PelagicSpecialist")
    exprs[_col("activity", "nocturnal")] = _flag("Nocturnal")
    return exprs


def _mamfuncdat_labels(_columns: Sequence[str]) -> Exprs:
    """MamFuncDat: diet, foraging stratum code -> lifestyle, activity flags."""
    exprs = _elton_diet()
    for label in TRAIT_CATEGORIES["lifestyle"]:
        exprs[_col("lifestyle", label)] = _one_of("ForStrat-Value", ELTON_FORSTRAT_VALUE, label)
    for label, column in ELTON_ACTIVITY.items():
        exprs[_col("activity", label)] = _flag(column)
    return exprs


# --- AmphiBIO and the plain CSV ---------------------------------------------------------------

# AmphiBIO columns that can only say 1 (NA where a state was not recorded, never 0).
AMPHIBIO_ONES: dict[str, tuple[str, ...]] = {
    "trait_lifestyle_terrestrial": ("Ter",),
    "trait_lifestyle_aquatic": ("Aqu",),
    "trait_lifestyle_arboreal": ("Arb",),
    "trait_diet_invertebrates": ("Arthro",),
    "trait_diet_vertebrates": ("Vert",),
    "trait_diet_fruit": ("Fruits",),
    "trait_diet_seeds_plants": ("Seeds", "Leaves"),
    "trait_activity_diurnal": ("Diu",),
    "trait_activity_nocturnal": ("Noc",),
    "trait_activity_crepuscular": ("Crepu",),
}
AMPHIBIO_REQUIRED = ("Species", *(c for columns in AMPHIBIO_ONES.values() for c in columns))


def _amphibio_labels(_columns: Sequence[str]) -> Exprs:
    """AmphiBIO: each 1 sets its label; NA (or 0) says nothing."""
    exprs: Exprs = {}
    for label, columns in AMPHIBIO_ONES.items():
        said = pl.any_horizontal([(_number(c) == 1).fill_null(False) for c in columns])
        exprs[label] = pl.when(said).then(1)
    return exprs


def _csv_labels(columns: Sequence[str]) -> Exprs:
    """Plain CSV: every trait_* column present, 1/0 as is, anything else null."""
    return {c: _flag(c) for c in TRAIT_COLUMNS if c in columns}


# --- Reading ----------------------------------------------------------------------------------

_NAME_COLUMN = {
    "avonet": "Species1",
    "eltontraits": "Scientific",
    "amphibio": "Species",
    "csv": "scientific_name",
}
_Labels = Callable[[Sequence[str]], Exprs]


def decode_text(raw: bytes) -> str:
    """Bytes -> text with LF line ends: UTF-8 (BOM or not), UTF-16 with BOM, else cp1252."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = raw.decode("utf-16")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
    return re.sub(r"\r*\n|\r", "\n", text)


def _separator(text: str) -> str:
    """The field separator: the most frequent of comma, tab and semicolon in the header line."""
    header = text.split("\n", 1)[0]
    return max((",", "\t", ";"), key=header.count)


@dataclass(frozen=True)
class BadRow:
    """A row of a trait table that could not be read: skipped and reported, never fatal."""

    line: int  # 1-based line number in the file (the header is line 1)
    reason: str  # malformed_row
    detail: str


def _fields(line: str, sep: str) -> list[str]:
    """One line's fields. TSV is read without quote processing (a `"` in free text is just a
    character, as in EltonTraits' `"Ref_2, Ref_3"`); CSV quotes are honoured within the line."""
    if sep == "\t":
        return line.split("\t")
    return next(csv.reader([line], delimiter=sep, strict=True), [])


def _unique(names: list[str]) -> list[str]:
    """Header names made unique (a repeated name gets `_2`, `_3`, ...)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def read_cells(path: Path) -> tuple[pl.DataFrame, list[BadRow]]:
    """Every cell of a delimited text file as a string (header names stripped), and the rows
    that could not be read: an unclosed quote (CSV) or more non-empty fields than the header.
    Each line is read on its own, so one bad row never swallows the rows after it."""
    text = decode_text(Path(path).read_bytes())
    if not text.strip():
        return pl.DataFrame(), []
    sep = _separator(text)
    lines = text.split("\n")
    try:
        header = _fields(lines[0], sep)
    except csv.Error as exc:
        raise ValueError(f"{path}: the header line cannot be read: {exc}") from None
    names = _unique([n.strip().strip("\ufeff") for n in header])
    rows: list[list[str]] = []
    bad: list[BadRow] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip(sep + " "):
            continue  # blank and separator-only rows (the end of MamFuncDat.txt)
        try:
            cells = _fields(line, sep)
        except csv.Error as exc:
            bad.append(BadRow(number, "malformed_row", f"line {number}: {exc}"))
            continue
        if len(cells) > len(names) and any(c.strip() for c in cells[len(names) :]):
            detail = f"line {number}: {len(cells)} fields, the header has {len(names)}"
            bad.append(BadRow(number, "malformed_row", detail))
            continue
        rows.append((cells + [""] * len(names))[: len(names)])
    frame = pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String), orient="row")
    return frame.with_columns(pl.all().replace("", None)), bad


def _layout(kind: str, path: Path, columns: Sequence[str]) -> tuple[Sequence[str], _Labels, str]:
    """The required columns, label expressions and description of a table of `kind`."""
    if kind == "avonet":
        return AVONET_REQUIRED, _avonet_labels, "AVONET"
    if kind == "eltontraits":
        if "ForStrat-Value" in columns or "MSW3_ID" in columns:
            return MAMFUNCDAT_REQUIRED, _mamfuncdat_labels, "EltonTraits MamFuncDat"
        return BIRDFUNCDAT_REQUIRED, _birdfuncdat_labels, "EltonTraits BirdFuncDat"
    if kind == "amphibio":
        return AMPHIBIO_REQUIRED, _amphibio_labels, "AmphiBIO"
    unknown = sorted(c for c in columns if c.startswith("trait_") and c not in TRAIT_COLUMNS)
    if unknown:
        raise ValueError(f"{path}: csv trait table has unknown trait columns: {', '.join(unknown)}")
    if not any(c in TRAIT_COLUMNS for c in columns):
        raise ValueError(f"{path}: csv trait table has none of the 34 trait_* columns")
    return ("scientific_name",), _csv_labels, "csv"


def read_trait_rows(kind: str, path: Path) -> tuple[pl.DataFrame, list[BadRow]]:
    """One row per named row of a trait table (`table`, `name`, the 34 labels as Int8), and the
    rows that could not be read."""
    if kind not in KINDS:
        raise ValueError(f"unknown trait table kind {kind!r}; choose one of {', '.join(KINDS)}")
    path = Path(path)
    cells, bad = read_cells(path)
    required, labels, what = _layout(kind, path, cells.columns)
    missing = [c for c in required if c not in cells.columns]
    if missing:
        raise ValueError(f"{path}: {what} table lacks required columns: {', '.join(missing)}")
    exprs = labels(cells.columns)
    rows = cells.select(
        pl.lit(kind, pl.String).alias("table"),
        _text(_NAME_COLUMN[kind]).alias("name"),
        *[exprs.get(c, pl.lit(None)).cast(pl.Int8).alias(c) for c in TRAIT_COLUMNS],
    ).filter(pl.col("name").is_not_null())
    return rows, bad


def read_trait_table(kind: str, path: Path) -> pl.DataFrame:
    """One row per named row of a trait table: `table`, `name`, then the 34 labels as Int8."""
    return read_trait_rows(kind, path)[0]

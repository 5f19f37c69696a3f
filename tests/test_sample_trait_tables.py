"""The sample world's trait tables: real byte formats, exact headers, and recoverable labels."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS
from biovita_data.sample.taxonomy import Species, Taxonomy, generate_taxonomy
from biovita_data.sample.trait_tables import (
    TABLE_LABELS,
    TABLES,
    expected_labels,
    export_trait_tables,
    table_bytes,
)

# Header lines of the real files (/work/shared/reference/*_head.*), copied verbatim.
REAL_HEADERS: dict[str, tuple[str, str]] = {
    "avonet": (
        ",",
        "Sequence,Species1,Family1,Order1,Avibase.ID1,Total.individuals,Female,Male,Unknown,"
        "Complete.measures,Beak.Length_Culmen,Beak.Length_Nares,Beak.Width,Beak.Depth,"
        "Tarsus.Length,Wing.Length,Kipps.Distance,Secondary1,Hand-Wing.Index,Tail.Length,Mass,"
        "Mass.Source,Mass.Refs.Other,Inference,Traits.inferred,Reference.species,Habitat,"
        "Habitat.Density,Migration,Trophic.Level,Trophic.Niche,Primary.Lifestyle,Min.Latitude,"
        "Max.Latitude,Centroid.Latitude,Centroid.Longitude,Range.Size",
    ),
    "eltontraits_birds": (
        "\t",
        "SpecID\tPassNonPass\tIOCOrder\tBLFamilyLatin\tBLFamilyEnglish\tBLFamSequID\tTaxo\t"
        "Scientific\tEnglish\tDiet-Inv\tDiet-Vend\tDiet-Vect\tDiet-Vfish\tDiet-Vunk\tDiet-Scav\t"
        "Diet-Fruit\tDiet-Nect\tDiet-Seed\tDiet-PlantO\tDiet-5Cat\tDiet-Source\tDiet-Certainty\t"
        "Diet-EnteredBy\tForStrat-watbelowsurf\tForStrat-wataroundsurf\tForStrat-ground\t"
        "ForStrat-understory\tForStrat-midhigh\tForStrat-canopy\tForStrat-aerial\t"
        "PelagicSpecialist\tForStrat-Source\tForStrat-SpecLevel\tForStrat-EnteredBy\tNocturnal\t"
        "BodyMass-Value\tBodyMass-Source\tBodyMass-SpecLevel\tBodyMass-Comment\tRecord-Comment",
    ),
    "eltontraits_mammals": (
        "\t",
        "MSW3_ID\tScientific\tMSWFamilyLatin\tDiet-Inv\tDiet-Vend\tDiet-Vect\tDiet-Vfish\t"
        "Diet-Vunk\tDiet-Scav\tDiet-Fruit\tDiet-Nect\tDiet-Seed\tDiet-PlantO\tDiet-Source\t"
        "Diet-Certainty\tForStrat-Value\tForStrat-Certainty\tForStrat-Comment\t"
        "Activity-Nocturnal\tActivity-Crepuscular\tActivity-Diurnal\tActivity-Source\t"
        "Activity-Certainty\tBodyMass-Value\tBodyMass-Source\tBodyMass-SpecLevel",
    ),
    "amphibio": (
        ",",
        "id,Order,Family,Genus,Species,Fos,Ter,Aqu,Arb,Leaves,Flowers,Seeds,Fruits,Arthro,Vert,"
        "Diu,Noc,Crepu,Wet_warm,Wet_cold,Dry_warm,Dry_cold,Body_mass_g,Age_at_maturity_min_y,"
        "Age_at_maturity_max_y,Body_size_mm,Size_at_maturity_min_mm,Size_at_maturity_max_mm,"
        "Longevity_max_y,Litter_size_min_n,Litter_size_max_n,Reproductive_output_y,"
        "Offspring_size_min_mm,Offspring_size_max_mm,Dir,Lar,Viv,OBS",
    ),
}
N_COLUMNS = {"avonet": 37, "eltontraits_birds": 40, "eltontraits_mammals": 26, "amphibio": 38}
CLASS = {
    "avonet": "Aves",
    "eltontraits_birds": "Aves",
    "eltontraits_mammals": "Mammalia",
    "amphibio": "Amphibia",
    "csv": "Insecta",
}
NAME_COLUMN = {
    "avonet": "Species1",
    "eltontraits_birds": "Scientific",
    "eltontraits_mammals": "Scientific",
    "amphibio": "Species",
    "csv": "scientific_name",
}
LINE_END = {
    "avonet": b"\r\n",
    "eltontraits_birds": b"\r\r\n",
    "eltontraits_mammals": b"\n",
    "amphibio": b"\r\n",
    "csv": b"\n",
}


@pytest.fixture(scope="module")
def worlds() -> dict[str, Taxonomy]:
    """Both sample world sizes, built once."""
    return {size: generate_taxonomy(size) for size in ("tiny", "default")}


# --- A small reference importer, written from the mapping in the module docstring --------------


def t(category: str, label: str) -> str:
    """The trait column of a category's label."""
    return f"trait_{category}_{label}"


def read_rows(name: str, data: bytes) -> list[dict[str, str | None]]:
    """Parse a table's bytes with polars, all columns as strings, missing values as null."""
    if name == "eltontraits_birds":
        data = data.decode("cp1252").replace("\r\r\n", "\n").encode()
    sep = "\t" if name.startswith("eltontraits") else ","
    null = "NA" if name in ("avonet", "amphibio") else None
    quote = None if sep == "\t" else '"'  # TSV has no quoting: `wing 4"` is a lone quote
    frame = pl.read_csv(
        io.BytesIO(data), separator=sep, null_values=null, infer_schema=False, quote_char=quote
    )
    return frame.to_dicts()


AVONET_HABITAT = {
    "Forest": "forest", "Woodland": "forest", "Shrubland": "shrubland", "Grassland": "grassland",
    "Wetland": "wetland", "Riverine": "wetland", "Marine": "marine_coastal",
    "Coastal": "marine_coastal", "Desert": "desert_rocky", "Rock": "desert_rocky",
    "Human Modified": "human_modified", "Caves": None,
}  # fmt: skip
AVONET_NICHE = {
    "Invertivore": "invertebrates", "Vertivore": "vertebrates", "Aquatic predator": "fish",
    "Scavenger": "carrion", "Frugivore": "fruit", "Nectarivore": "nectar",
    "Granivore": "seeds_plants", "Herbivore terrestrial": "seeds_plants",
    "Herbivore aquatic": "seeds_plants", "Omnivore": None,
}  # fmt: skip
AVONET_LIFESTYLE = {
    "Aerial": "aerial", "Terrestrial": "terrestrial", "Insessorial": "arboreal",
    "Aquatic": "aquatic", "Generalist": None,
}  # fmt: skip


def climate_zone(abs_lat: float) -> str:
    """The climate zone of an absolute latitude."""
    if abs_lat < 23.4:
        return "tropical"
    if abs_lat < 35.0:
        return "subtropical"
    return "temperate" if abs_lat < 60.0 else "boreal_polar"


def avonet_labels(row: dict[str, str | None]) -> dict[str, int]:
    """Labels from an AVONET row."""
    out: dict[str, int] = {}
    if row["Habitat"] is not None and AVONET_HABITAT[row["Habitat"]]:
        out[t("habitat", AVONET_HABITAT[row["Habitat"]])] = 1
    if row["Migration"] is not None:
        out[t("migration", "migratory")] = int(row["Migration"] == "3")
        out[t("migration", "partial_migrant")] = int(row["Migration"] == "2")
    if row["Trophic.Niche"] is not None and AVONET_NICHE[row["Trophic.Niche"]]:
        out[t("diet", AVONET_NICHE[row["Trophic.Niche"]])] = 1
    primary = AVONET_LIFESTYLE.get(row["Primary.Lifestyle"] or "Generalist")
    if primary:
        for label in TRAIT_CATEGORIES["lifestyle"]:
            out[t("lifestyle", label)] = int(label == primary)
    if row["Min.Latitude"] is not None:
        low, high = float(row["Min.Latitude"]), float(row["Max.Latitude"])
        zones = {climate_zone(abs(x)) for x in np.linspace(low, high, 4001)}
        for label in TRAIT_CATEGORIES["climate"]:
            out[t("climate", label)] = int(label in zones)
    return out


def number(row: dict[str, str | None], column: str) -> int:
    """An integer cell that must be present."""
    value = row[column]
    assert value is not None, column
    return int(value)


def elton_diet(row: dict[str, str | None]) -> dict[str, int]:
    """Diet labels from EltonTraits Diet-* percentages."""
    if row["Diet-Inv"] is None:
        return {}
    items = ("Inv", "Vend", "Vect", "Vfish", "Vunk", "Scav", "Fruit", "Nect", "Seed", "PlantO")
    pct = {item: number(row, f"Diet-{item}") for item in items}
    assert sum(pct.values()) == 100
    shares = {
        "invertebrates": pct["Inv"],
        "vertebrates": pct["Vend"] + pct["Vect"] + pct["Vunk"],
        "fish": pct["Vfish"],
        "carrion": pct["Scav"],
        "fruit": pct["Fruit"],
        "nectar": pct["Nect"],
        "seeds_plants": pct["Seed"] + pct["PlantO"],
    }
    return {t("diet", label): int(share > 0) for label, share in shares.items()}


def birdfuncdat_labels(row: dict[str, str | None]) -> dict[str, int]:
    """Labels from a BirdFuncDat row."""
    out = elton_diet(row)
    if row["ForStrat-ground"] is not None:
        strata = ("watbelowsurf", "wataroundsurf", "ground", "understory", "midhigh", "canopy")
        pct = {s: number(row, f"ForStrat-{s}") for s in (*strata, "aerial")}
        assert sum(pct.values()) == 100
        groups = {
            "aerial": pct["aerial"],
            "terrestrial": pct["ground"],
            "arboreal": pct["understory"] + pct["midhigh"] + pct["canopy"],
            "aquatic": pct["watbelowsurf"] + pct["wataroundsurf"],
        }
        out.update({t("lifestyle", label): int(share >= 50) for label, share in groups.items()})
    if row["PelagicSpecialist"] == "1":
        out[t("habitat", "marine_coastal")] = 1
    if row["Nocturnal"] is not None:
        out[t("activity", "nocturnal")] = int(row["Nocturnal"])
    return out


def mamfuncdat_labels(row: dict[str, str | None]) -> dict[str, int]:
    """Labels from a MamFuncDat row."""
    out = elton_diet(row)
    strata = {
        "M": {"aquatic"},
        "Ar": {"arboreal"},
        "A": {"aerial"},
        "S": {"terrestrial", "arboreal"},
        "G": {"terrestrial"},
    }
    if row["ForStrat-Value"] is not None:
        named = strata[row["ForStrat-Value"]]
        out.update({t("lifestyle", x): int(x in named) for x in TRAIT_CATEGORIES["lifestyle"]})
    for label in TRAIT_CATEGORIES["activity"]:
        value = row[f"Activity-{label.capitalize()}"]
        if value is not None:
            out[t("activity", label)] = int(value)
    return out


def amphibio_labels(row: dict[str, str | None]) -> dict[str, int]:
    """Labels from an AmphiBIO row: NA means not recorded, so labels are 1 or absent."""
    columns = {
        "Ter": t("lifestyle", "terrestrial"),
        "Aqu": t("lifestyle", "aquatic"),
        "Arb": t("lifestyle", "arboreal"),
        "Arthro": t("diet", "invertebrates"),
        "Vert": t("diet", "vertebrates"),
        "Fruits": t("diet", "fruit"),
        "Seeds": t("diet", "seeds_plants"),
        "Leaves": t("diet", "seeds_plants"),
        "Diu": t("activity", "diurnal"),
        "Noc": t("activity", "nocturnal"),
        "Crepu": t("activity", "crepuscular"),
    }
    return {label: 1 for column, label in columns.items() if row[column] == "1"}


def csv_labels(row: dict[str, str | None]) -> dict[str, int]:
    """Labels from the plain CSV."""
    return {c: int(row[c]) for c in TRAIT_COLUMNS if row[c] is not None}


READERS = {
    "avonet": avonet_labels,
    "eltontraits_birds": birdfuncdat_labels,
    "eltontraits_mammals": mamfuncdat_labels,
    "amphibio": amphibio_labels,
    "csv": csv_labels,
}


def birdlife(species: Species) -> str:
    """The BirdLife spelling of a species' name (the audio source's for renamed species)."""
    if species.name_variant in ("old_genus", "spelling"):
        return f"{species.xc_gen.capitalize()} {species.xc_sp.strip().lower()}"
    return species.name


def recover(taxonomy: Taxonomy, name: str) -> tuple[dict[str, dict[str, int | None]], int]:
    """Accepted name -> recovered labels for world rows, and the number of non-world rows."""
    written = {
        (birdlife(s) if CLASS[name] == "Aves" else s.name): s.name
        for s in taxonomy.species
        if s.class_name == CLASS[name]
    }
    rows = [r for r in read_rows(name, table_bytes(taxonomy, name)) if r[NAME_COLUMN[name]]]
    names = Counter(r[NAME_COLUMN[name]] for r in rows)
    assert max(names.values()) == 1, "a species appears twice in one table"
    out: dict[str, dict[str, int | None]] = {}
    for row in rows:
        labels = READERS[name](row)
        assert set(labels) <= set(TABLE_LABELS[name])
        if row[NAME_COLUMN[name]] in written:
            out[written[row[NAME_COLUMN[name]]]] = {c: labels.get(c) for c in TABLE_LABELS[name]}
    return out, len(rows) - len(out)


# --- Tests -------------------------------------------------------------------------------------


def test_table_names_and_labels() -> None:
    assert TABLES == {
        "avonet": "AVONET1_BirdLife.csv",
        "eltontraits_birds": "BirdFuncDat.txt",
        "eltontraits_mammals": "MamFuncDat.txt",
        "amphibio": "AmphiBIO_v1.csv",
        "csv": "traits_other.csv",
    }
    assert set(TABLE_LABELS) == set(TABLES)
    assert TABLE_LABELS["csv"] == TRAIT_COLUMNS
    for labels in TABLE_LABELS.values():
        assert labels and list(labels) == [c for c in TRAIT_COLUMNS if c in labels]


@pytest.mark.parametrize("name", sorted(REAL_HEADERS))
def test_headers_equal_the_real_heads(worlds: dict[str, Taxonomy], name: str) -> None:
    sep, real = REAL_HEADERS[name]
    encoding = {"avonet": "utf-8-sig", "eltontraits_birds": "cp1252"}.get(name, "utf-8")
    data = table_bytes(worlds["tiny"], name)
    header = data.split(LINE_END[name], 1)[0].decode(encoding)
    assert header.split(sep) == real.split(sep)
    assert len(real.split(sep)) == N_COLUMNS[name]
    assert list(read_rows(name, data)[0]) == real.split(sep)


def test_csv_header(worlds: dict[str, Taxonomy]) -> None:
    header = table_bytes(worlds["tiny"], "csv").split(b"\n", 1)[0].decode()
    assert header.split(",") == ["scientific_name", *TRAIT_COLUMNS]


def test_avonet_bytes(worlds: dict[str, Taxonomy]) -> None:
    data = table_bytes(worlds["default"], "avonet")
    assert data.startswith(b"\xef\xbb\xbfSequence,Species1,")
    assert data.count(b"\n") == data.count(b"\r\n") > 40
    assert b"\r\r" not in data
    assert b",NA," in data
    data.decode("utf-8")


def test_birdfuncdat_bytes(worlds: dict[str, Taxonomy]) -> None:
    data = table_bytes(worlds["tiny"], "eltontraits_birds")
    assert data.count(b"\n") == data.count(b"\r\r\n") > 10
    assert max(data) >= 0x80
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    text = data.decode("cp1252")
    assert "\u2019" in text  # the apostrophe written as byte 0x92
    lines = [line.split("\t") for line in text.split("\r\r\n")[:-1]]
    assert {len(cells) for cells in lines} == {40}
    junk = [cells for cells in lines if not cells[7]]
    assert len(junk) >= 2 and lines[-len(junk) :] == junk  # junk rows end the file
    assert all(sum(bool(c) for c in cells) <= 3 for cells in junk)


def test_mamfuncdat_bytes(worlds: dict[str, Taxonomy]) -> None:
    data = table_bytes(worlds["tiny"], "eltontraits_mammals")
    assert b"\r" not in data
    assert b'\t"Ref_2, Ref_3"\t' in data
    lines = data.split(b"\n")[:-1]
    assert lines[-1] == lines[-2] == b"\t" * 25  # empty tab-only rows at the end
    rows = read_rows("eltontraits_mammals", data)
    assert '"Ref_2, Ref_3"' in {r["BodyMass-Source"] for r in rows}  # TSV: quotes are literal


def test_amphibio_bytes(worlds: dict[str, Taxonomy]) -> None:
    data = table_bytes(worlds["default"], "amphibio")
    assert data.count(b"\n") == data.count(b"\r\n") > 30
    assert b",NA," in data
    data.decode("ascii")
    rows = read_rows("amphibio", data)
    flags = ("Fos", "Ter", "Aqu", "Arb", "Leaves", "Flowers", "Seeds", "Fruits", "Arthro", "Vert",
             "Diu", "Noc", "Crepu")  # fmt: skip
    assert {r[c] for r in rows for c in flags} == {"1", None}  # absence is NA, never 0
    assert all(r["id"].startswith("Anf") for r in rows)


def test_plain_csv_bytes(worlds: dict[str, Taxonomy]) -> None:
    data = table_bytes(worlds["default"], "csv")
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data
    rows = read_rows("csv", data)
    assert {r[c] for r in rows for c in TRAIT_COLUMNS} == {"0", "1", None}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_deterministic(worlds: dict[str, Taxonomy], name: str) -> None:
    first = table_bytes(worlds["default"], name)
    assert table_bytes(worlds["default"], name) == first
    assert table_bytes(generate_taxonomy("default"), name) == first
    assert table_bytes(generate_taxonomy("default", seed=1), name) != first


def test_export(worlds: dict[str, Taxonomy], tmp_path: Path) -> None:
    paths = export_trait_tables(worlds["tiny"], tmp_path / "traits")
    assert set(paths) == set(TABLES)
    for name, path in paths.items():
        assert path.name == TABLES[name]
        assert path.read_bytes() == table_bytes(worlds["tiny"], name)
    assert sorted(p.name for p in (tmp_path / "traits").iterdir()) == sorted(TABLES.values())


def test_unknown_table(worlds: dict[str, Taxonomy]) -> None:
    with pytest.raises(ValueError, match="unknown trait table"):
        table_bytes(worlds["tiny"], "pantheria")


@pytest.mark.parametrize("size", ["tiny", "default"])
@pytest.mark.parametrize("name", sorted(TABLES))
def test_round_trip(worlds: dict[str, Taxonomy], size: str, name: str) -> None:
    taxonomy = worlds[size]
    expected = expected_labels(taxonomy, name)
    recovered, extra_rows = recover(taxonomy, name)
    assert recovered == expected
    # expected is the ground truth restricted to what the table says: never a contradiction,
    # and an unknown label is never recovered as a value
    truth = {s.name: s.traits for s in taxonomy.species}
    for species, labels in expected.items():
        assert tuple(labels) == TABLE_LABELS[name]
        for label, value in labels.items():
            assert value is None or value == truth[species][label], (species, label)
    # coverage: the whole class, minus ~5 % of birds in AVONET, plus rows for other species
    members = [s.name for s in taxonomy.species if s.class_name == CLASS[name]]
    missing = max(1, round(0.05 * len(members))) if name == "avonet" else 0
    assert set(expected) <= set(members)
    assert len(expected) == len(members) - missing
    assert extra_rows == (0 if name == "csv" else 1 if name == "amphibio" else 2)


# Categories a table expresses in full: when the truth knows all of their labels, so must the table.
FULL_CATEGORIES = {
    "avonet": ("climate", "migration"),
    "eltontraits_birds": ("diet", "lifestyle"),
    "eltontraits_mammals": ("diet", "lifestyle", "activity"),
    "amphibio": (),
    "csv": tuple(TRAIT_CATEGORIES),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_known_facts_are_written(worlds: dict[str, Taxonomy], name: str) -> None:
    taxonomy = worlds["default"]
    truth = {s.name: s.traits for s in taxonomy.species}
    for species, labels in expected_labels(taxonomy, name).items():
        for category in FULL_CATEGORIES[name]:
            columns = [t(category, label) for label in TRAIT_CATEGORIES[category]]
            if all(truth[species][c] is not None for c in columns):
                assert {c: labels[c] for c in columns} == {c: truth[species][c] for c in columns}
        if name == "amphibio":  # every recorded state is written
            assert all(labels[c] == 1 for c in labels if truth[species][c] == 1)
        if name == "avonet":  # the first habitat and a sole lifestyle are always written
            habitats = [c for c in TRAIT_COLUMNS if "habitat" in c and truth[species][c] == 1]
            assert not habitats or labels[habitats[0]] == 1
            lifestyle = [t("lifestyle", x) for x in TRAIT_CATEGORIES["lifestyle"]]
            values = [truth[species][c] for c in lifestyle]
            if None not in values and values.count(1) == 1:
                assert all(labels[c] == truth[species][c] for c in lifestyle)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_tables_are_informative(worlds: dict[str, Taxonomy], name: str) -> None:
    taxonomy = worlds["default"]
    truth = {s.name: s.traits for s in taxonomy.species}
    pairs = [
        (truth[species][label], value)
        for species, labels in expected_labels(taxonomy, name).items()
        for label, value in labels.items()
    ]
    known = [(true, value) for true, value in pairs if true is not None]
    recovered = sum(value is not None for _, value in known) / len(known)
    assert recovered == 1.0 if name == "csv" else recovered > 0.3
    assert any(true is None for true, _ in pairs)  # unknowns occur and came out null
    assert {value for _, value in known} >= ({1} if name == "amphibio" else {0, 1})


def test_species_go_to_their_class_tables(worlds: dict[str, Taxonomy]) -> None:
    taxonomy = worlds["default"]
    where: dict[str, set[str]] = {s.name: set() for s in taxonomy.species}
    for name in TABLES:
        for species in expected_labels(taxonomy, name):
            where[species].add(name)
    homes = {
        "Aves": {"avonet", "eltontraits_birds"},
        "Mammalia": {"eltontraits_mammals"},
        "Amphibia": {"amphibio"},
        "Insecta": {"csv"},
    }
    for species in taxonomy.species:
        assert where[species.name] <= homes[species.class_name]
        if species.class_name != "Aves":
            assert where[species.name] == homes[species.class_name]
        else:
            assert "eltontraits_birds" in where[species.name]


def test_birds_use_birdlife_spelling(worlds: dict[str, Taxonomy]) -> None:
    taxonomy = worlds["default"]
    renamed = [s for s in taxonomy.species if s.name_variant in ("old_genus", "spelling")]
    assert any(s.class_name == "Aves" for s in renamed)
    for name in ("avonet", "eltontraits_birds"):
        names = {r[NAME_COLUMN[name]] for r in read_rows(name, table_bytes(taxonomy, name))}
        present = expected_labels(taxonomy, name)
        for s in renamed:
            if s.class_name == "Aves" and s.name in present:
                assert birdlife(s) in names and s.name not in names

"""Trait importers and the traits stage, checked against the sample world's trait tables."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from biovita_data.core import layout
from biovita_data.core.schemas import SPECIES, UNMATCHED
from biovita_data.core.tables import read_table, write_table
from biovita_data.core.vocab import TRAIT_COLUMNS
from biovita_data.curate.traits import (
    KINDS,
    PROVENANCE_COLUMNS,
    attach_traits,
    coverage_path,
    print_coverage,
    read_trait_table,
    run_traits,
)
from biovita_data.curate.traits.readers import read_trait_rows
from biovita_data.sample.taxonomy import Taxonomy
from biovita_data.sample.trait_tables import (
    EXTRA_SPECIES,
    TABLE_CLASS,
    TABLES,
    birdlife_name,
    expected_labels,
    export_trait_tables,
)
from biovita_data.sample.world import World

# sample table name -> importer kind, in the precedence order used below
KIND: dict[str, str] = {
    "avonet": "avonet",
    "eltontraits_birds": "eltontraits",
    "eltontraits_mammals": "eltontraits",
    "amphibio": "amphibio",
    "csv": "csv",
}
Labels = dict[str, int | None]
Resolve = Callable[[list[str], str], pl.DataFrame]


def full(labels: Labels) -> Labels:
    """A table's expected labels over all 34 columns (labels it does not mention: null)."""
    return {c: labels.get(c) for c in TRAIT_COLUMNS}


def species_frame(taxonomy: Taxonomy, drop: tuple[str, ...] = ()) -> pl.DataFrame:
    """A SPECIES-shaped frame for the world's species (all other columns null)."""
    kept = [s for s in taxonomy.species if s.name not in drop]
    ids = pl.DataFrame(
        {"species_id": [s.taxon_id for s in kept], "scientific_name": [s.name for s in kept]}
    )
    schema = pl.from_arrow(SPECIES.empty_table()).schema  # type: ignore[union-attr]
    return ids.select(
        (pl.col(c) if c in ids.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in schema.items()
    )


def resolver(taxonomy: Taxonomy, calls: list[tuple[int, str]] | None = None) -> Resolve:
    """Map accepted and BirdLife names to taxon ids; anything else is no_match."""
    lookup = pl.DataFrame(
        {
            "name": [n for s in taxonomy.species for n in (s.name, birdlife_name(s))],
            "species_id": [s.taxon_id for s in taxonomy.species for _ in range(2)],
            "closest": [s.name for s in taxonomy.species for _ in range(2)],
        }
    ).unique(subset="name", keep="first", maintain_order=True)

    def resolve(names: list[str], source: str) -> pl.DataFrame:
        if calls is not None:
            calls.append((len(names), source))
        assert len(set(names)) == len(names)
        return (
            pl.DataFrame({"name": names}, schema={"name": pl.String})
            .join(lookup, on="name", how="left", maintain_order="left")
            .with_columns(
                match_kind=pl.when(pl.col("species_id").is_not_null()).then(pl.lit("exact")),
                reason=pl.when(pl.col("species_id").is_null()).then(pl.lit("no_match")),
                closest=pl.lit(None, pl.String),
            )
        )

    return resolve


def world(request: pytest.FixtureRequest, size: str) -> World:
    """The session world of that size."""
    return request.getfixturevalue(f"{size}_world")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[World], dict[str, Path]]:
    """Export a world's five trait tables once per world."""
    cache: dict[str, dict[str, Path]] = {}

    def get(w: World) -> dict[str, Path]:
        key = str(len(w.taxonomy.species))
        if key not in cache:
            cache[key] = export_trait_tables(w.taxonomy, tmp_path_factory.mktemp(f"traits{key}"))
        return cache[key]

    return get


def table_list(paths: dict[str, Path]) -> list[tuple[str, Path]]:
    """All five tables as (kind, path), in TABLES order."""
    return [(KIND[name], paths[name]) for name in TABLES]


def by_accepted(taxonomy: Taxonomy, frame: pl.DataFrame) -> dict[str, Labels]:
    """A reader's rows keyed by accepted name (rows naming species outside the world dropped)."""
    accepted = {n: s.name for s in taxonomy.species for n in (s.name, birdlife_name(s))}
    out: dict[str, Labels] = {}
    for row in frame.iter_rows(named=True):
        if row["name"] in accepted:
            assert accepted[row["name"]] not in out, "one row per species in the sample tables"
            out[accepted[row["name"]]] = {c: row[c] for c in TRAIT_COLUMNS}
    return out


# --- Readers --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "default"])
@pytest.mark.parametrize("name", list(TABLES))
def test_reader_recovers_expected_labels(
    request: pytest.FixtureRequest, exported, size: str, name: str
) -> None:
    w = world(request, size)
    frame = read_trait_table(KIND[name], exported(w)[name])
    assert frame.columns == ["table", "name", *TRAIT_COLUMNS]
    assert frame.schema["name"] == pl.String
    assert all(frame.schema[c] == pl.Int8 for c in TRAIT_COLUMNS)
    assert frame.get_column("table").unique().to_list() == [KIND[name]]
    expected = expected_labels(w.taxonomy, name)
    got = by_accepted(w.taxonomy, frame)
    assert set(got) == set(expected)
    for accepted, labels in expected.items():
        assert got[accepted] == full(labels), accepted
    # junk and tab-only rows are skipped; the extra species are read
    extras = [e[0] for e in EXTRA_SPECIES.get(TABLE_CLASS[name], ())] if name != "csv" else []
    assert frame.height == len(expected) + len(extras)
    assert set(frame.get_column("name")) - set(by_name(w)) == set(extras)


def by_name(w: World) -> set[str]:
    """Every spelling of the world's species names the tables use."""
    return {n for s in w.taxonomy.species for n in (s.name, birdlife_name(s))}


def test_reader_knows_never_means_zero(tmp_path: Path) -> None:
    """Missing, malformed and AmphiBIO-style 0 cells stay null; 1/0 in the csv are kept."""
    csv = tmp_path / "t.csv"
    csv.write_text(
        "scientific_name,trait_diet_fruit,trait_diet_nectar,trait_activity_diurnal\n"
        "A a,1,0,\n"
        "B b,NA,yes,2\n"
        " C c , 1.0 ,0.0,NA\n"
        ",1,1,1\n"
    )
    frame = read_trait_table("csv", csv)
    assert frame.get_column("name").to_list() == ["A a", "B b", "C c"]
    named = ["trait_diet_fruit", "trait_diet_nectar", "trait_activity_diurnal"]
    assert frame.select(named).rows() == [(1, 0, None), (None, None, None), (1, 0, None)]
    others = frame.select(c for c in TRAIT_COLUMNS if c not in named)
    assert others.null_count().row(0) == (3,) * 31

    amphibio = tmp_path / "a.csv"
    head = "Species,Ter,Aqu,Arb,Leaves,Seeds,Fruits,Arthro,Vert,Diu,Noc,Crepu\n"
    amphibio.write_text(
        head + "X x,1,0,NA,0,NA,NA,1,0,NA,1,0\nY y,NA,NA,NA,NA,1,NA,NA,NA,NA,NA,NA\n"
    )
    a = read_trait_table("amphibio", amphibio).to_dicts()
    assert a[0]["trait_lifestyle_terrestrial"] == 1
    assert a[0]["trait_lifestyle_aquatic"] is None  # AmphiBIO says only 1 or nothing
    assert a[0]["trait_diet_seeds_plants"] is None
    assert a[0]["trait_diet_vertebrates"] is None
    assert a[0]["trait_activity_crepuscular"] is None
    assert a[1]["trait_diet_seeds_plants"] == 1


def test_avonet_fields(tmp_path: Path) -> None:
    """Habitat, niche, lifestyle, migration and latitude bands, including the edge cases."""
    head = "Species1,Habitat,Migration,Trophic.Niche,Primary.Lifestyle,Min.Latitude,Max.Latitude\n"
    rows = [
        "Aa aa,Woodland,2,Omnivore,Insessorial,-10.5,30.0",  # straddles the equator
        "Bb bb,Caves,NA,Granivore,Generalist,-50.0,-36.0",  # southern temperate only
        "Cc cc,Human Modified,3,NA,NA,59.9,60.0",  # temperate and boreal
        "Dd dd,NA,1,Aquatic predator,Aquatic,NA,12.0",
    ]
    path = tmp_path / "avonet.csv"
    path.write_bytes(("\ufeff" + head + "\r\n".join(rows) + "\r\n").encode())
    r = read_trait_table("avonet", path).to_dicts()
    assert [r[0][f"trait_climate_{z}"] for z in ("tropical", "subtropical", "temperate")] == [
        1,
        1,
        0,
    ]
    assert r[0]["trait_habitat_forest"] == 1 and r[0]["trait_habitat_wetland"] is None
    assert (r[0]["trait_migration_migratory"], r[0]["trait_migration_partial_migrant"]) == (0, 1)
    assert r[0]["trait_lifestyle_arboreal"] == 1 and r[0]["trait_lifestyle_aerial"] == 0
    assert all(r[0][f"trait_diet_{x}"] is None for x in ("fruit", "seeds_plants"))
    assert r[1]["trait_diet_seeds_plants"] == 1
    assert r[1]["trait_lifestyle_arboreal"] is None
    assert not any(r[1][c] for c in TRAIT_COLUMNS if c.startswith("trait_habitat"))
    assert [r[1][f"trait_climate_{z}"] for z in ("tropical", "temperate", "boreal_polar")] == [
        0,
        1,
        0,
    ]
    assert r[1]["trait_migration_migratory"] is None
    assert r[2]["trait_habitat_human_modified"] == 1
    assert (r[2]["trait_migration_migratory"], r[2]["trait_migration_partial_migrant"]) == (1, 0)
    assert [r[2][f"trait_climate_{z}"] for z in ("temperate", "boreal_polar")] == [1, 1]
    assert r[3]["trait_diet_fish"] == 1 and r[3]["trait_lifestyle_aquatic"] == 1
    assert r[3]["trait_climate_tropical"] is None  # one end of the range unknown


# --- Byte quirks and headers ---------------------------------------------------------------


def test_byte_quirks_of_the_sample_files(default_world: World, exported) -> None:
    """The exported files really carry the quirks the readers must handle."""
    paths = exported(default_world)
    avonet = paths["avonet"].read_bytes()
    birds = paths["eltontraits_birds"].read_bytes()
    mammals = paths["eltontraits_mammals"].read_bytes()
    assert avonet.startswith(b"\xef\xbb\xbf") and b"\r\n" in avonet and b",NA," in avonet
    assert b"\r\r\n" in birds and b"\x92" in birds  # cp1252 apostrophe
    assert b'\twing 4" (museum skin)\r' in birds  # a lone quote in TSV free text
    with pytest.raises(UnicodeDecodeError):
        birds.decode("utf-8")
    assert b"\n\t\t\t" in mammals and b'"Ref_2, Ref_3"' in mammals


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t.encode("utf-8-sig"), id="bom"),
        pytest.param(lambda t: t.replace("\n", "\r\n").encode("utf-8"), id="crlf"),
        pytest.param(lambda t: t.replace("\n", "\r\r\n").encode("cp1252"), id="cp1252-crcrlf"),
        pytest.param(lambda t: t.replace("\n", "\r").encode("utf-8"), id="cr"),
        pytest.param(lambda t: t.replace(",", "\t").encode("utf-16"), id="utf16-tab"),
        pytest.param(lambda t: (t + ",,,\n\n" + "," * 34 + "\n").encode(), id="junk-rows"),
    ],
)
def test_byte_variants_read_the_same(tmp_path: Path, mangle: Callable[[str], bytes]) -> None:
    """The same table under other encodings, line ends, separators and trailing junk."""
    header = ",".join(["scientific_name", *TRAIT_COLUMNS])
    cells = ["1", "0", "", "NA"]
    text = header + "\n"
    for i, name in enumerate(["Ab cd", "Ef gh", "Bébé ü"]):
        values = [cells[(i + j) % 4] for j in range(34)]
        text += ",".join([name, *values]) + "\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(text, encoding="utf-8")
    odd = tmp_path / "odd.csv"
    odd.write_bytes(mangle(text))
    expected = read_trait_table("csv", plain)
    assert expected.height == 3
    assert read_trait_table("csv", odd).equals(expected)


def test_quoted_fields_and_tab_only_rows(tmp_path: Path) -> None:
    """Quoted fields (literal quotes: TSV has no quoting) and rows of tabs only, in MamFuncDat."""
    header = (
        "MSW3_ID\tScientific\tDiet-Inv\tDiet-Vend\tDiet-Vect\tDiet-Vfish\tDiet-Vunk\tDiet-Scav\t"
        "Diet-Fruit\tDiet-Nect\tDiet-Seed\tDiet-PlantO\tDiet-Source\tForStrat-Value\t"
        "Activity-Nocturnal\tActivity-Crepuscular\tActivity-Diurnal\n"
    )
    rows = (
        '1\tMus musculus\t20\t0\t0\t0\t0\t0\t0\t0\t80\t0\t"Ref_2, Ref_3"\tS\t1\t0\t0\n'
        "2\tSorex sp\t\t\t\t\t\t\t\t\t\t\t\tX\t\t1\t\n" + "\t" * 16 + "\n" + "\t" * 16 + "\n"
    )
    path = tmp_path / "MamFuncDat.txt"
    path.write_text(header + rows)
    frame = read_trait_table("eltontraits", path)
    assert frame.get_column("name").to_list() == ["Mus musculus", "Sorex sp"]
    mus, sorex = frame.to_dicts()
    assert (mus["trait_diet_invertebrates"], mus["trait_diet_seeds_plants"]) == (1, 1)
    assert mus["trait_diet_fruit"] == 0
    assert (mus["trait_lifestyle_terrestrial"], mus["trait_lifestyle_arboreal"]) == (1, 1)
    assert mus["trait_lifestyle_aquatic"] == 0 and mus["trait_activity_nocturnal"] == 1
    assert all(sorex[c] is None for c in TRAIT_COLUMNS if c != "trait_activity_crepuscular")
    assert sorex["trait_activity_crepuscular"] == 1


BIRD_HEADER = (
    "SpecID\tScientific\tDiet-Inv\tDiet-Vend\tDiet-Vect\tDiet-Vfish\tDiet-Vunk\tDiet-Scav\t"
    "Diet-Fruit\tDiet-Nect\tDiet-Seed\tDiet-PlantO\tForStrat-watbelowsurf\t"
    "ForStrat-wataroundsurf\tForStrat-ground\tForStrat-understory\tForStrat-midhigh\t"
    "ForStrat-canopy\tForStrat-aerial\tPelagicSpecialist\tNocturnal\tRecord-Comment"
)


def _bird(number: int, name: str, comment: str, extra: str = "") -> str:
    cells = [str(number), name, "100", *["0"] * 9, "0", "0", "100", *["0"] * 4, "0", "1", comment]
    return "\t".join(cells) + extra


def test_a_lone_quote_in_free_text_and_a_bad_row_are_not_fatal(tmp_path: Path) -> None:
    """BirdFuncDat-like TSV: a lone `"` in a comment (6" tail); a row with spare fields."""
    rows = [
        _bird(1, "Aa bb", 'tail 6" long, "measured'),
        _bird(2, "Cc dd", "fine"),
        _bird(3, "Ee ff", "shifted", extra="\tspare\tcells"),
        _bird(4, "Gg hh", '"quoted comment"'),
    ]
    path = tmp_path / "BirdFuncDat.txt"
    path.write_text("\r\r\n".join([BIRD_HEADER, *rows]) + "\r\r\n", encoding="cp1252")
    frame, bad = read_trait_rows("eltontraits", path)
    assert frame["name"].to_list() == ["Aa bb", "Cc dd", "Gg hh"]
    assert set(frame["trait_diet_invertebrates"]) == {1}
    assert set(frame["trait_activity_nocturnal"]) == {1}
    assert [(b.line, b.reason) for b in bad] == [(4, "malformed_row")]
    assert "24 fields, the header has 22" in bad[0].detail


def test_an_unclosed_quote_in_a_csv_row_is_reported(tmp_path: Path, tiny_world: World) -> None:
    """AmphiBIO-like CSV: an unclosed quote spoils its own row only, and becomes a failure."""
    header = ",".join(["scientific_name", "trait_activity_nocturnal", "note"])
    lines = [header, "Ab cd,1,ok", 'Ef gh,0,"unclosed, text', "Ij kl,1,fine", 'Mn op,1,"x"y']
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(lines) + "\n")
    frame, bad = read_trait_rows("csv", path)
    assert frame["name"].to_list() == ["Ab cd", "Ij kl"]
    assert [b.line for b in bad] == [3, 5]
    taxonomy = tiny_world.taxonomy
    out = tmp_path / "OUT"
    write_table(species_frame(taxonomy).to_arrow().cast(SPECIES), layout.species_path(out))
    result = run_traits(out, [("csv", path)], resolver(taxonomy))
    assert result.coverage["tables"][0]["bad_rows"] == 2
    fails = pl.read_parquet(out / "manifests" / "failures.parquet")
    assert fails.select("stage", "source", "record_id", "reason").rows() == [
        ("traits", "csv", "plain.csv:3", "malformed_row"),
        ("traits", "csv", "plain.csv:5", "malformed_row"),
    ]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_header_names_file_and_columns(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"broken_{kind}.txt"
    path.write_text("Species1,Scientific,Species,Habitat\nA a,A a,A a,Forest\n")
    with pytest.raises(ValueError, match=re.escape(f"broken_{kind}.txt")) as err:
        read_trait_table(kind, path)
    if kind == "avonet":
        assert "Migration" in str(err.value) and "Habitat," not in str(err.value)
    if kind == "eltontraits":
        assert "Diet-Inv" in str(err.value)
    if kind == "amphibio":
        assert "Ter" in str(err.value)
    if kind == "csv":
        assert "trait_" in str(err.value)


def test_bad_kind_and_empty_and_typo_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("scientific_name,trait_diet_fruit\nA a,1\n")
    with pytest.raises(ValueError, match="avonet, eltontraits, amphibio, csv"):
        read_trait_table("pantheria", path)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape("empty.csv")):
        read_trait_table("avonet", empty)
    typo = tmp_path / "typo.csv"
    typo.write_text("scientific_name,trait_diet_fruits\nA a,1\n")
    with pytest.raises(ValueError, match="trait_diet_fruits"):
        read_trait_table("csv", typo)


# --- Attaching tables to species -----------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "default"])
def test_attach_combines_all_tables(request: pytest.FixtureRequest, exported, size: str) -> None:
    w = world(request, size)
    paths = exported(w)
    tables = table_list(paths)
    calls: list[tuple[int, str]] = []
    result = attach_traits(species_frame(w.taxonomy), tables, resolver(w.taxonomy, calls))
    assert [source for _, source in calls] == [kind for kind, _ in tables]

    # the tables never disagree, so the combination is their union
    truth: dict[str, dict[str, tuple[int, str]]] = {}
    for name in TABLES:
        for accepted, labels in expected_labels(w.taxonomy, name).items():
            known = truth.setdefault(accepted, {})
            for column, value in labels.items():
                if value is None:
                    continue
                if column in known:
                    assert known[column][0] == value, (accepted, column, name)
                else:
                    known[column] = (value, KIND[name])
    species = result.species
    assert species.columns == SPECIES.names
    assert species.to_arrow().cast(SPECIES).num_rows == len(w.taxonomy.species)
    assert species.get_column("species_id").to_list() == [s.taxon_id for s in w.taxonomy.species]
    for row in species.iter_rows(named=True):
        known = truth.get(row["scientific_name"], {})
        values = {c: row[c] for c in TRAIT_COLUMNS}
        sources = {c: row[p] for c, p in zip(TRAIT_COLUMNS, PROVENANCE_COLUMNS, strict=True)}
        assert values == {c: known[c][0] if c in known else None for c in TRAIT_COLUMNS}
        assert sources == {c: known[c][1] if c in known else None for c in TRAIT_COLUMNS}

    # rows naming species outside the world are unmatched, one row each
    unmatched = result.unmatched
    assert unmatched.columns == UNMATCHED.names
    extras = {
        (e[0], KIND[name])
        for name in TABLES
        if name != "csv"
        for e in EXTRA_SPECIES[TABLE_CLASS[name]]
    }
    assert set(zip(unmatched["name"], unmatched["source"], strict=True)) == extras
    assert unmatched.get_column("count").to_list() == [1] * len(extras)
    assert set(unmatched["modality"]) == {"traits"} and set(unmatched["reason"]) == {"no_match"}

    coverage = result.coverage
    json.dumps(coverage)
    assert [t["table"] for t in coverage["tables"]] == [k for k, _ in tables]
    for t, name in zip(coverage["tables"], TABLES, strict=True):
        n_extra = 0 if name == "csv" else len(EXTRA_SPECIES[TABLE_CLASS[name]])
        assert t["file"] == TABLES[name]
        assert t["unmatched"] == n_extra and t["not_in_corpus"] == 0
        assert t["matched"] == t["species"] == len(expected_labels(w.taxonomy, name))
        assert t["rows"] == t["matched"] + n_extra
    for column in TRAIT_COLUMNS:
        values = [k[column][0] for k in truth.values() if column in k]
        assert coverage["labels"][column] == {"known": len(values), "ones": sum(values)}
    n_any = sum(1 for s in w.taxonomy.species if truth.get(s.name))
    assert coverage["species_with_any_label"] == n_any
    assert coverage["fraction_with_any_label"] == pytest.approx(n_any / len(w.taxonomy.species))


def test_precedence_follows_table_order(tiny_world: World, exported, tmp_path: Path) -> None:
    """A csv that contradicts AVONET wins only when it comes first; gaps are filled either way."""
    taxonomy = tiny_world.taxonomy
    avonet = exported(tiny_world)["avonet"]
    expected = expected_labels(taxonomy, "avonet")
    bird = next(
        n for n, labels in expected.items() if labels["trait_migration_migratory"] is not None
    )
    known = expected[bird]["trait_migration_migratory"]
    csv = tmp_path / "conflict.csv"
    csv.write_text(
        f"scientific_name,trait_migration_migratory,trait_social_groups\n{bird},{1 - known},1\n"
    )
    resolve = resolver(taxonomy)

    def row(tables: list[tuple[str, Path]]) -> dict:
        species = attach_traits(species_frame(taxonomy), tables, resolve).species
        return species.filter(pl.col("scientific_name") == bird).to_dicts()[0]

    first = row([("csv", csv), ("avonet", avonet)])
    assert first["trait_migration_migratory"] == 1 - known
    assert first["provenance_migration_migratory"] == "csv"
    last = row([("avonet", avonet), ("csv", csv)])
    assert last["trait_migration_migratory"] == known
    assert last["provenance_migration_migratory"] == "avonet"
    for r in (first, last):
        assert (r["trait_social_groups"], r["provenance_social_groups"]) == (1, "csv")
        assert r["trait_social_solitary"] is None and r["provenance_social_solitary"] is None


def test_rows_of_one_species_combine_within_a_table(tiny_world: World, tmp_path: Path) -> None:
    """Several rows -> one species: 1 if any says 1, else 0 if any says 0, else null."""
    taxonomy = tiny_world.taxonomy
    species = taxonomy.species[0]
    csv = tmp_path / "dupes.csv"
    csv.write_text(
        "scientific_name,trait_diet_fruit,trait_diet_nectar,trait_diet_fish,trait_diet_carrion\n"
        f"{species.name},0,0,,\n"
        f"{species.name.upper()},1,,,\n"
        f"{species.name},,,,0\n"
        "Nobody here,1,1,1,1\n"
        "Nobody here,1,1,1,1\n"
    )
    base = resolver(taxonomy)

    def resolve(names: list[str], source: str) -> pl.DataFrame:
        answer = base(names, source)
        hit = pl.col("name") == species.name.upper()
        return answer.with_columns(
            species_id=pl.when(hit).then(pl.lit(species.taxon_id)).otherwise("species_id"),
            reason=pl.when(hit).then(None).otherwise("reason"),
        )

    result = attach_traits(species_frame(taxonomy), [("csv", csv)], resolve)
    row = result.species.filter(pl.col("species_id") == species.taxon_id).to_dicts()[0]
    assert row["trait_diet_fruit"] == 1 and row["trait_diet_nectar"] == 0
    assert row["trait_diet_fish"] is None and row["trait_diet_carrion"] == 0
    assert result.unmatched.select("name", "count").rows() == [("Nobody here", 2)]
    assert result.coverage["tables"][0] | {"file": None} == {
        "table": "csv",
        "file": None,
        "rows": 5,
        "bad_rows": 0,
        "matched": 3,
        "unmatched": 2,
        "not_in_corpus": 0,
        "species": 1,
    }


def test_species_outside_the_corpus(tiny_world: World, exported) -> None:
    """A resolved name whose species the corpus lacks is counted, not labelled, not unmatched."""
    taxonomy = tiny_world.taxonomy
    paths = exported(tiny_world)
    mammal = next(s for s in taxonomy.species if s.class_name == "Mammalia")
    species = species_frame(taxonomy, drop=(mammal.name,))
    result = attach_traits(
        species, [("eltontraits", paths["eltontraits_mammals"])], resolver(taxonomy)
    )
    assert result.species.height == len(taxonomy.species) - 1
    assert mammal.taxon_id not in result.species["species_id"].to_list()
    stats = result.coverage["tables"][0]
    assert stats["not_in_corpus"] == 1 and stats["unmatched"] == 2
    assert mammal.name not in result.unmatched["name"].to_list()


def test_existing_labels_are_replaced_and_other_columns_kept(tiny_world: World) -> None:
    taxonomy = tiny_world.taxonomy
    species = species_frame(taxonomy).with_columns(
        trait_diet_fruit=pl.lit(1, pl.Int8),
        provenance_diet_fruit=pl.lit("stale"),
        common_name=pl.lit("kept"),
        extra=pl.lit(7),
    )
    result = attach_traits(species, [], resolver(taxonomy))
    assert result.species.columns == [*SPECIES.names, "extra"]
    assert result.species["trait_diet_fruit"].null_count() == len(taxonomy.species)
    assert result.species["provenance_diet_fruit"].null_count() == len(taxonomy.species)
    assert set(result.species["common_name"]) == {"kept"} and set(result.species["extra"]) == {7}
    assert result.unmatched.height == 0 and result.coverage["species_with_any_label"] == 0


# --- The stage -----------------------------------------------------------------------------


def test_run_traits_writes_and_is_idempotent(tiny_world: World, exported, tmp_path: Path) -> None:
    taxonomy = tiny_world.taxonomy
    out = tmp_path / "OUT"
    tables = table_list(exported(tiny_world))
    resolve = resolver(taxonomy)
    with pytest.raises(ValueError, match="biovita-data align"):
        run_traits(out, tables, resolve)

    write_table(species_frame(taxonomy).to_arrow().cast(SPECIES), layout.species_path(out))
    previous = pl.DataFrame(
        {
            "name": ["Foo bar", "Old traits name", "Baz qux"],
            "normalized": ["foo bar", None, None],
            "source": ["xeno-canto", "avonet", "inaturalist"],
            "modality": ["audio", "traits", None],
            "count": [3, 1, 2],
            "reason": ["no_match", "no_match", "ambiguous"],
            "closest": [None, None, "Baz quux"],
        }
    )
    write_table(previous.to_arrow().cast(UNMATCHED), layout.unmatched_path(out))

    result = run_traits(out, tables, resolve)
    files = [layout.species_path(out), coverage_path(out), layout.unmatched_path(out)]
    first = [f.read_bytes() for f in files]
    run_traits(out, tables, resolve)
    assert [f.read_bytes() for f in files] == first

    species = pl.from_arrow(read_table(layout.species_path(out), SPECIES))
    assert species.equals(result.species)
    assert json.loads(coverage_path(out).read_text()) == result.coverage
    unmatched = pl.from_arrow(read_table(layout.unmatched_path(out), UNMATCHED))
    assert "Old traits name" not in unmatched["name"].to_list()
    others = unmatched.filter(pl.col("modality").ne_missing("traits"))
    kept = previous.filter(pl.col("modality").ne_missing("traits"))
    assert others.sort("name").equals(kept.sort("name"))
    traits = unmatched.filter(pl.col("modality") == "traits")
    assert traits.equals(result.unmatched)


def test_print_coverage(tiny_world: World, exported) -> None:
    taxonomy = tiny_world.taxonomy
    result = attach_traits(
        species_frame(taxonomy), table_list(exported(tiny_world)), resolver(taxonomy)
    )
    console = Console(file=io.StringIO(), width=120)
    print_coverage(result, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    for word in ("AVONET1_BirdLife.csv", "MamFuncDat.txt", "eltontraits", "diet", "migration"):
        assert word in text
    assert f"of {len(taxonomy.species)} species" in text

"""The sample world's ground-truth traits, published in the public trait tables' real file formats.

A real build downloads AVONET, EltonTraits 1.0 and AmphiBIO and maps them onto the 34 labels
(`biovita_data.core.vocab`); the sample world writes the same files, byte quirks included, so the
importer can be tested offline. `expected_labels` says what a correct importer must recover.

Files (headers are the real tables' columns, in their order):

| table               | file                 | rows                   | bytes                      |
| ------------------- | -------------------- | ---------------------- | -------------------------- |
| avonet              | AVONET1_BirdLife.csv | Aves minus ~5 %, +2    | UTF-8 + BOM, `,`, CRLF, NA |
| eltontraits_birds   | BirdFuncDat.txt      | Aves, +2               | cp1252, TAB, CR CR LF, ""  |
| eltontraits_mammals | MamFuncDat.txt       | Mammalia, +2           | UTF-8, TAB, LF, "", quotes |
| amphibio            | AmphiBIO_v1.csv      | Amphibia, +1           | ASCII, `,`, CRLF, NA       |
| csv                 | traits_other.csv     | Insecta                | UTF-8, `,`, LF, ""         |

- "+n": n extra rows naming real species outside the world; an importer reports them unmatched.
- Missing values are `NA` (AVONET, AmphiBIO) or an empty field (EltonTraits, csv); a missing
  value never sets a label. BirdFuncDat ends with mostly-empty junk rows and MamFuncDat with
  tab-only rows: an importer skips rows whose name field is empty. MamFuncDat quotes some fields
  (`"Ref_2, Ref_3"`); some BirdFuncDat `Record-Comment`s hold a lone `"` (`wing 4"`), which
  a reader that honours quotes in TSV would let swallow the following rows. BirdFuncDat's
  extra rows have non-ASCII English names (cp1252
  0x92 apostrophe, 0xFC).
- Names: AVONET `Species1` and BirdFuncDat `Scientific` use the BirdLife spelling, which for
  species whose name_variant is "old_genus" or "spelling" is the audio source's spelling
  (`birdlife_name`); the other tables write the accepted binomial.
- A field is written only when everything it decodes to (below) agrees with the ground truth,
  otherwise it is missing; so an unknown label is never written as 0.

Field -> label mapping. "x=1" sets label x; "others 0" / "others null" is what the field says
about the rest of its category; labels a table does not mention stay null.

| field (table)          | value -> labels                                                      |
| ---------------------- | -------------------------------------------------------------------- |
| Habitat (AVONET,       | Forest, Woodland -> forest=1; Shrubland -> shrubland=1; Grassland -> |
| primary habitat)       | grassland=1; Wetland, Riverine -> wetland=1; Marine, Coastal ->      |
|                        | marine_coastal=1; Desert, Rock -> desert_rocky=1; Human Modified ->  |
|                        | human_modified=1; Caves -> nothing. Others null.                     |
| Migration (AVONET)     | 1 (sedentary) -> migratory=0, partial_migrant=0; 2 (partial) ->      |
|                        | migratory=0, partial_migrant=1; 3 -> migratory=1, partial_migrant=0. |
| Trophic.Niche (AVONET, | Invertivore -> invertebrates=1; Vertivore -> vertebrates=1; Aquatic  |
| >= 60 % of the diet)   | predator -> fish=1; Scavenger -> carrion=1; Frugivore -> fruit=1;    |
|                        | Nectarivore -> nectar=1; Granivore, Herbivore terrestrial, Herbivore |
|                        | aquatic -> seeds_plants=1; Omnivore -> nothing. Others null.         |
| Primary.Lifestyle      | Aerial -> aerial=1; Terrestrial -> terrestrial=1; Insessorial ->     |
| (AVONET)               | arboreal=1; Aquatic -> aquatic=1; others 0. Generalist -> nothing.   |
| Min.Latitude,          | all four climate labels: a zone is 1 if some latitude of [Min, Max]  |
| Max.Latitude (AVONET)  | has its |lat| in the zone's band, else 0. Bands: tropical < 23.4,     |
|                        | subtropical [23.4, 35), temperate [35, 60), boreal_polar >= 60.      |
| Diet-* (EltonTraits    | all seven diet labels: 1 if the label's columns sum to > 0, else 0.  |
| birds and mammals;     | Inv -> invertebrates; Vend + Vect + Vunk -> vertebrates; Vfish ->    |
| percent, sum 100)      | fish; Scav -> carrion; Fruit -> fruit; Nect -> nectar; Seed + PlantO |
|                        | -> seeds_plants.                                                     |
| ForStrat-* (Elton      | all four lifestyle labels: 1 if the label's strata sum to >= 50,     |
| birds; percent, sum    | else 0. aerial -> aerial; ground -> terrestrial; understory +        |
| 100)                   | midhigh + canopy -> arboreal; watbelowsurf + wataroundsurf ->        |
|                        | aquatic.                                                             |
| PelagicSpecialist      | 1 -> marine_coastal=1; 0 -> nothing.                                 |
| (Elton birds)          |                                                                      |
| Nocturnal (Elton b.)   | 1 / 0 -> nocturnal=1 / 0.                                            |
| ForStrat-Value (Elton  | all four lifestyle labels, the named ones 1, the rest 0: M ->        |
| mammals)               | aquatic; Ar -> arboreal; A -> aerial; G -> terrestrial;              |
|                        | S (scansorial) -> terrestrial and arboreal.                          |
| Activity-Nocturnal,    | 1 / 0 -> nocturnal / crepuscular / diurnal = 1 / 0.                  |
| -Crepuscular, -Diurnal |                                                                      |
| Ter, Aqu, Arb          | 1 -> terrestrial / aquatic / arboreal lifestyle = 1.                 |
| (AmphiBIO)             |                                                                      |
| Arthro, Vert, Fruits,  | 1 -> invertebrates / vertebrates / fruit = 1; Seeds or Leaves 1 ->   |
| Seeds, Leaves (AmphiB.)| seeds_plants=1.                                                      |
| Diu, Noc, Crepu (Am.)  | 1 -> diurnal / nocturnal / crepuscular = 1.                          |
| trait_* (csv)          | 1 / 0 -> the label; empty -> null.                                   |

AmphiBIO writes NA, never 0, where a state was not recorded, so its labels are 1 or null, never
0. Not mapped to any label: AmphiBIO Fos, Flowers and the breeding-season columns (Wet_warm, ...);
AVONET Habitat.Density, Trophic.Level and the morphometrics; EltonTraits Diet-5Cat and body mass.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS
from biovita_data.sample.taxonomy import Species, Taxonomy

Labels = dict[str, int | None]
Cells = tuple[str, ...]
Truth = Mapping[str, int | None]

TABLES: dict[str, str] = {
    "avonet": "AVONET1_BirdLife.csv",
    "eltontraits_birds": "BirdFuncDat.txt",
    "eltontraits_mammals": "MamFuncDat.txt",
    "amphibio": "AmphiBIO_v1.csv",
    "csv": "traits_other.csv",
}

TABLE_CLASS: dict[str, str] = {
    "avonet": "Aves",
    "eltontraits_birds": "Aves",
    "eltontraits_mammals": "Mammalia",
    "amphibio": "Amphibia",
    "csv": "Insecta",
}

AVONET_COLUMNS: tuple[str, ...] = (
    "Sequence", "Species1", "Family1", "Order1", "Avibase.ID1", "Total.individuals", "Female",
    "Male", "Unknown", "Complete.measures", "Beak.Length_Culmen", "Beak.Length_Nares",
    "Beak.Width", "Beak.Depth", "Tarsus.Length", "Wing.Length", "Kipps.Distance", "Secondary1",
    "Hand-Wing.Index", "Tail.Length", "Mass", "Mass.Source", "Mass.Refs.Other", "Inference",
    "Traits.inferred", "Reference.species", "Habitat", "Habitat.Density", "Migration",
    "Trophic.Level", "Trophic.Niche", "Primary.Lifestyle", "Min.Latitude", "Max.Latitude",
    "Centroid.Latitude", "Centroid.Longitude", "Range.Size",
)  # fmt: skip

BIRDFUNCDAT_COLUMNS: tuple[str, ...] = (
    "SpecID", "PassNonPass", "IOCOrder", "BLFamilyLatin", "BLFamilyEnglish", "BLFamSequID",
    "Taxo", "Scientific", "English", "Diet-Inv", "Diet-Vend", "Diet-Vect", "Diet-Vfish",
    "Diet-Vunk", "Diet-Scav", "Diet-Fruit", "Diet-Nect", "Diet-Seed", "Diet-PlantO", "Diet-5Cat",
    "Diet-Source", "Diet-Certainty", "Diet-EnteredBy", "ForStrat-watbelowsurf",
    "ForStrat-wataroundsurf", "ForStrat-ground", "ForStrat-understory", "ForStrat-midhigh",
    "ForStrat-canopy", "ForStrat-aerial", "PelagicSpecialist", "ForStrat-Source",
    "ForStrat-SpecLevel", "ForStrat-EnteredBy", "Nocturnal", "BodyMass-Value", "BodyMass-Source",
    "BodyMass-SpecLevel", "BodyMass-Comment", "Record-Comment",
)  # fmt: skip

MAMFUNCDAT_COLUMNS: tuple[str, ...] = (
    "MSW3_ID", "Scientific", "MSWFamilyLatin", "Diet-Inv", "Diet-Vend", "Diet-Vect", "Diet-Vfish",
    "Diet-Vunk", "Diet-Scav", "Diet-Fruit", "Diet-Nect", "Diet-Seed", "Diet-PlantO",
    "Diet-Source", "Diet-Certainty", "ForStrat-Value", "ForStrat-Certainty", "ForStrat-Comment",
    "Activity-Nocturnal", "Activity-Crepuscular", "Activity-Diurnal", "Activity-Source",
    "Activity-Certainty", "BodyMass-Value", "BodyMass-Source", "BodyMass-SpecLevel",
)  # fmt: skip

AMPHIBIO_COLUMNS: tuple[str, ...] = (
    "id", "Order", "Family", "Genus", "Species", "Fos", "Ter", "Aqu", "Arb", "Leaves", "Flowers",
    "Seeds", "Fruits", "Arthro", "Vert", "Diu", "Noc", "Crepu", "Wet_warm", "Wet_cold",
    "Dry_warm", "Dry_cold", "Body_mass_g", "Age_at_maturity_min_y", "Age_at_maturity_max_y",
    "Body_size_mm", "Size_at_maturity_min_mm", "Size_at_maturity_max_mm", "Longevity_max_y",
    "Litter_size_min_n", "Litter_size_max_n", "Reproductive_output_y", "Offspring_size_min_mm",
    "Offspring_size_max_mm", "Dir", "Lar", "Viv", "OBS",
)  # fmt: skip

CSV_COLUMNS: tuple[str, ...] = ("scientific_name", *TRAIT_COLUMNS)

AVONET_MISSING_SHARE = 0.05  # share of the world's birds left out of AVONET (at least one)

# Real species outside the world (extra rows): name, English name, order, family, labels set to 1.
EXTRA_SPECIES: dict[str, tuple[tuple[str, str, str, str, tuple[str, ...]], ...]] = {
    "Aves": (
        ("Gyps rueppelli", "R\u00fcppell\u2019s Vulture", "Accipitriformes", "Accipitridae",
         ("diet_carrion", "activity_diurnal", "locomotion_flying", "locomotion_walking",
          "lifestyle_aerial", "habitat_grassland", "climate_tropical", "social_groups")),
        ("Cursorius temminckii", "Temminck\u2019s Courser", "Charadriiformes", "Glareolidae",
         ("diet_invertebrates", "activity_diurnal", "locomotion_flying", "locomotion_walking",
          "lifestyle_terrestrial", "habitat_grassland", "habitat_desert_rocky",
          "climate_tropical", "social_pairs", "migration_partial_migrant")),
    ),
    "Mammalia": (
        ("Vulpes vulpes", "Red Fox", "Carnivora", "Canidae",
         ("diet_vertebrates", "diet_fruit", "activity_nocturnal", "activity_crepuscular",
          "locomotion_walking", "lifestyle_terrestrial", "habitat_forest",
          "habitat_human_modified", "climate_temperate", "social_solitary")),
        ("Myotis myotis", "Greater Mouse-eared Bat", "Chiroptera", "Vespertilionidae",
         ("diet_invertebrates", "activity_nocturnal", "locomotion_flying", "lifestyle_aerial",
          "habitat_forest", "climate_temperate", "social_groups", "migration_partial_migrant")),
    ),
    "Amphibia": (
        ("Bufo bufo", "Common Toad", "Anura", "Bufonidae",
         ("diet_invertebrates", "activity_nocturnal", "locomotion_walking",
          "locomotion_swimming", "lifestyle_terrestrial", "habitat_forest", "habitat_wetland",
          "climate_temperate", "social_solitary")),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class _Entry:
    """One row's subject: a world species (under the table's spelling) or an extra species."""

    accepted: str | None  # None for species outside the world
    written: str
    common_name: str
    order: str
    family: str
    genus: str
    traits: Truth
    number: int = 0


@dataclass(frozen=True)
class _Field:
    """Columns that together express some labels: how to write them and how to read them back."""

    columns: tuple[str, ...]
    labels: tuple[str, ...]
    encode: Callable[[_Entry, np.random.Generator], Cells | None]
    decode: Callable[[Cells], dict[str, int]]


@dataclass(frozen=True)
class _Table:
    """A table's layout: columns, label fields, filler for other columns, and byte format."""

    columns: tuple[str, ...]
    fields: tuple[_Field, ...]
    fill: Callable[[_Entry, np.random.Generator, dict[str, str]], dict[str, str]]
    missing: str
    sep: str
    eol: str
    encoding: str
    trailer: tuple[Cells, ...] = ()


def _col(category: str, label: str) -> str:
    """The trait column of a category's label."""
    return f"trait_{category}_{label}"


def _ones(traits: Truth, category: str) -> list[str]:
    """The labels of a category whose ground truth is 1, in vocabulary order."""
    return [label for label in TRAIT_CATEGORIES[category] if traits[_col(category, label)] == 1]


def _stable(*parts: str) -> int:
    """A process-independent 32-bit hash of the parts."""
    return zlib.crc32("|".join(parts).encode())


def _num(value: float, digits: int = 1) -> str:
    """A number as the tables print it."""
    return f"{value:.{digits}f}"


def _tens(total: int, n: int, rng: np.random.Generator) -> list[int]:
    """Split `total` (a multiple of 10) into n positive multiples of 10 at random."""
    parts = [10] * n
    for _ in range(total // 10 - n):
        parts[int(rng.integers(n))] += 10
    return parts


def birdlife_name(species: Species) -> str:
    """The species' name as the BirdLife checklist (AVONET, EltonTraits birds) spells it."""
    if species.name_variant in ("old_genus", "spelling"):
        return f"{species.xc_gen.capitalize()} {species.xc_sp.strip().lower()}"
    return species.name


def _flag(column: str, label: str, ones_only: bool = False) -> _Field:
    """A one-column 1/0 field for one label (with ones_only, 0 is written as missing)."""

    def encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
        value = entry.traits[label]
        return None if value is None or (ones_only and value == 0) else (str(value),)

    return _Field((column,), (label,), encode, lambda cells: {label: int(cells[0])})


# --- AVONET -----------------------------------------------------------------------------------

AVONET_HABITAT: dict[str, str | None] = {
    "Forest": "forest", "Woodland": "forest", "Shrubland": "shrubland",
    "Grassland": "grassland", "Wetland": "wetland", "Riverine": "wetland",
    "Marine": "marine_coastal", "Coastal": "marine_coastal", "Desert": "desert_rocky",
    "Rock": "desert_rocky", "Human Modified": "human_modified", "Caves": None,
}  # fmt: skip
AVONET_NICHE: dict[str, str | None] = {
    "Invertivore": "invertebrates", "Vertivore": "vertebrates", "Aquatic predator": "fish",
    "Scavenger": "carrion", "Frugivore": "fruit", "Nectarivore": "nectar",
    "Granivore": "seeds_plants", "Herbivore terrestrial": "seeds_plants",
    "Herbivore aquatic": "seeds_plants", "Omnivore": None,
}  # fmt: skip
AVONET_LIFESTYLE: dict[str, str | None] = {
    "Aerial": "aerial", "Terrestrial": "terrestrial", "Insessorial": "arboreal",
    "Aquatic": "aquatic", "Generalist": None,
}  # fmt: skip
CLIMATE_BANDS: dict[str, tuple[float, float]] = {
    "tropical": (0.0, 23.4),
    "subtropical": (23.4, 35.0),
    "temperate": (35.0, 60.0),
    "boreal_polar": (60.0, math.inf),
}
_TROPHIC_LEVEL = {
    "Invertivore": "Carnivore", "Vertivore": "Carnivore", "Aquatic predator": "Carnivore",
    "Scavenger": "Scavenger", "Omnivore": "Omnivore",
}  # fmt: skip
_HABITAT_DENSITY = {"Forest": "1", "Woodland": "2", "Shrubland": "2", "Human Modified": "2"}


def _habitat_encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
    """The category of the first habitat label that is 1 (variant spellings picked by name)."""
    ones = _ones(entry.traits, "habitat")
    if not ones:
        return None
    names = [name for name, label in AVONET_HABITAT.items() if label == ones[0]]
    return (names[_stable("habitat", entry.written) % len(names)],)


def _habitat_decode(cells: Cells) -> dict[str, int]:
    """Habitat category -> that habitat label is 1."""
    label = AVONET_HABITAT[cells[0]]
    return {_col("habitat", label): 1} if label else {}


def _migration_encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
    """Migration 3 / 2 / 1 from migratory / partial migrant / neither."""
    migratory = entry.traits[_col("migration", "migratory")]
    partial = entry.traits[_col("migration", "partial_migrant")]
    if migratory == 1:
        return ("3",)
    if partial == 1:
        return ("2",)
    return ("1",) if migratory == partial == 0 else None


def _migration_decode(cells: Cells) -> dict[str, int]:
    """Migration code -> both migration labels."""
    code = int(cells[0])
    return {
        _col("migration", "migratory"): int(code == 3),
        _col("migration", "partial_migrant"): int(code == 2),
    }


def _niche_encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
    """Trophic level and niche: the one diet item eaten, or Omnivore for several."""
    eaten = _ones(entry.traits, "diet")
    if not eaten:
        return None
    if len(eaten) > 1:
        niche = "Omnivore"
    elif eaten[0] == "seeds_plants" and entry.traits[_col("habitat", "wetland")] == 1:
        niche = "Herbivore aquatic"
    else:
        names = [n for n, label in AVONET_NICHE.items() if label == eaten[0] and "aquatic" not in n]
        niche = names[_stable("niche", entry.written) % len(names)]
    return (_TROPHIC_LEVEL.get(niche, "Herbivore"), niche)


def _niche_decode(cells: Cells) -> dict[str, int]:
    """Trophic niche -> that diet label is 1."""
    label = AVONET_NICHE[cells[1]]
    return {_col("diet", label): 1} if label else {}


def _lifestyle_encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
    """Primary lifestyle from the one lifestyle label that is 1, Generalist for several."""
    ones = _ones(entry.traits, "lifestyle")
    if not ones:
        return None
    if len(ones) > 1:
        return ("Generalist",)
    return next((name,) for name, label in AVONET_LIFESTYLE.items() if label == ones[0])


def _lifestyle_decode(cells: Cells) -> dict[str, int]:
    """Primary lifestyle -> its label 1, the other lifestyle labels 0."""
    primary = AVONET_LIFESTYLE[cells[0]]
    if primary is None:
        return {}
    return {
        _col("lifestyle", label): int(label == primary) for label in TRAIT_CATEGORIES["lifestyle"]
    }


def _latitude_encode(entry: _Entry, rng: np.random.Generator) -> Cells | None:
    """A latitude range inside the band of the species' one climate zone."""
    zones = _ones(entry.traits, "climate")
    if len(zones) != 1:
        return None
    lo, hi = CLIMATE_BANDS[zones[0]]
    a, b = sorted(float(x) for x in rng.uniform(lo + 0.5, min(hi, 80.0) - 0.5, size=2))
    if zones[0] == "tropical" and rng.random() < 0.5:
        low, high = -a, b  # straddles the equator
    elif rng.random() < 0.3:
        low, high = -b, -a  # southern hemisphere
    else:
        low, high = a, b
    return (_num(low, 2), _num(high, 2), _num((low + high) / 2, 2))


def _latitude_decode(cells: Cells) -> dict[str, int]:
    """Latitude range -> each climate zone 1 if the range reaches its band, else 0."""
    low, high = float(cells[0]), float(cells[1])
    if low <= 0.0 <= high:
        near, far = 0.0, max(-low, high)
    else:
        near, far = sorted((abs(low), abs(high)))
    return {
        _col("climate", z): int(near < hi and far >= lo) for z, (lo, hi) in CLIMATE_BANDS.items()
    }


def _labels(category: str) -> tuple[str, ...]:
    """All trait columns of a category."""
    return tuple(_col(category, label) for label in TRAIT_CATEGORIES[category])


_CLIMATE = ("Min.Latitude", "Max.Latitude", "Centroid.Latitude")
_AVONET_FIELDS = (
    _Field(("Habitat",), _labels("habitat"), _habitat_encode, _habitat_decode),
    _Field(("Migration",), _labels("migration"), _migration_encode, _migration_decode),
    _Field(("Trophic.Level", "Trophic.Niche"), _labels("diet"), _niche_encode, _niche_decode),
    _Field(("Primary.Lifestyle",), _labels("lifestyle"), _lifestyle_encode, _lifestyle_decode),
    _Field(_CLIMATE, _labels("climate"), _latitude_encode, _latitude_decode),
)


def _avonet_fill(entry: _Entry, rng: np.random.Generator, cells: dict[str, str]) -> dict[str, str]:
    """Identity, sample sizes, morphometrics and range columns of an AVONET row."""
    mass = float(np.exp(rng.uniform(np.log(8.0), np.log(3000.0))))
    wing = 28.0 * mass ** (1 / 3) * float(rng.uniform(0.85, 1.15))
    kipps = wing * float(rng.uniform(0.1, 0.4))
    culmen = 7.0 * mass**0.3 * float(rng.uniform(0.7, 1.4))
    female, male, unknown = (int(x) for x in rng.integers(0, 6, size=3))
    unknown = unknown or int(female + male == 0)
    total = female + male + unknown
    has_range = cells["Centroid.Latitude"] != "NA"
    has_habitat = cells["Habitat"] != "NA"
    return {
        "Sequence": str(entry.number),
        "Species1": entry.written,
        "Family1": entry.family,
        "Order1": entry.order,
        "Avibase.ID1": f"AVIBASE-{_stable('avibase', entry.written):08X}",
        "Total.individuals": str(total),
        "Female": str(female),
        "Male": str(male),
        "Unknown": str(unknown),
        "Complete.measures": str(int(rng.integers(1, total + 1))),
        "Beak.Length_Culmen": _num(culmen),
        "Beak.Length_Nares": _num(culmen * float(rng.uniform(0.55, 0.7))),
        "Beak.Width": _num(culmen * float(rng.uniform(0.3, 0.5))),
        "Beak.Depth": _num(culmen * float(rng.uniform(0.35, 0.6))),
        "Tarsus.Length": _num(9.0 * mass**0.3 * float(rng.uniform(0.8, 1.2))),
        "Wing.Length": _num(wing),
        "Kipps.Distance": _num(kipps),
        "Secondary1": _num(wing - kipps),
        "Hand-Wing.Index": _num(100.0 * kipps / wing),
        "Tail.Length": _num(wing * float(rng.uniform(0.5, 1.0))),
        "Mass": _num(mass),
        "Mass.Source": "Dunning",
        "Mass.Refs.Other": "NA",
        "Inference": "NO",
        "Traits.inferred": "NA",
        "Reference.species": "NA",
        "Habitat.Density": "NA" if not has_habitat else _HABITAT_DENSITY.get(cells["Habitat"], "3"),
        "Centroid.Longitude": _num(float(rng.uniform(-180, 180)), 2) if has_range else "NA",
        "Range.Size": _num(float(np.exp(rng.uniform(8, 16))), 2) if has_range else "NA",
    }


# --- EltonTraits ------------------------------------------------------------------------------

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
ELTON_FORSTRAT_VALUE: dict[str, tuple[str, ...]] = {
    "M": ("aquatic",),
    "Ar": ("arboreal",),
    "A": ("aerial",),
    "S": ("terrestrial", "arboreal"),
    "G": ("terrestrial",),
}
_DIET_COLUMNS = MAMFUNCDAT_COLUMNS[3:13]
_FORSTRAT_COLUMNS = BIRDFUNCDAT_COLUMNS[23:30]
# Where the part of the foraging that is not the main lifestyle goes, by locomotion.
_SPARE_STRATUM = {
    "flying": "ForStrat-aerial",
    "walking": "ForStrat-ground",
    "swimming": "ForStrat-wataroundsurf",
    "climbing": "ForStrat-understory",
}
_DIET_5CAT = {
    "PlantSeed": ("Diet-Seed", "Diet-PlantO"),
    "FruiNect": ("Diet-Fruit", "Diet-Nect"),
    "Invertebrate": ("Diet-Inv",),
    "VertFishScav": ("Diet-Vend", "Diet-Vect", "Diet-Vfish", "Diet-Vunk", "Diet-Scav"),
}


def _diet_encode(entry: _Entry, rng: np.random.Generator) -> Cells | None:
    """Diet percentages (multiples of 10, sum 100) shared among the diet items eaten."""
    eaten = _ones(entry.traits, "diet")
    if not eaten:
        return None
    percent = dict.fromkeys(_DIET_COLUMNS, 0)
    for label, share in zip(eaten, _tens(100, len(eaten), rng), strict=True):
        columns = ELTON_DIET[label]
        percent[columns[int(rng.integers(len(columns)))]] += share
    return tuple(str(percent[c]) for c in _DIET_COLUMNS)


def _diet_decode(cells: Cells) -> dict[str, int]:
    """Diet percentages -> every diet label, 1 where its share is above 0."""
    percent = dict(zip(_DIET_COLUMNS, map(int, cells), strict=True))
    return {
        _col("diet", label): int(sum(percent[c] for c in columns) > 0)
        for label, columns in ELTON_DIET.items()
    }


def _forstrat_encode(entry: _Entry, rng: np.random.Generator) -> Cells | None:
    """Foraging strata: 60-100 % in the main lifestyle's strata, the rest where it moves."""
    main = _ones(entry.traits, "lifestyle")
    if not 1 <= len(main) <= 2:
        return None
    shares = [50, 50] if len(main) == 2 else [int(rng.integers(6, 11)) * 10]
    percent = dict.fromkeys(_FORSTRAT_COLUMNS, 0)
    for label, share in zip(main, shares, strict=True):
        columns = ELTON_FORSTRAT[label]
        percent[columns[int(rng.integers(len(columns)))]] += share
    own = {c for label in main for c in ELTON_FORSTRAT[label]}
    spare = [
        column
        for loco, column in _SPARE_STRATUM.items()
        if entry.traits[_col("locomotion", loco)] == 1 and column not in own
    ] or sorted(own)
    percent[spare[int(rng.integers(len(spare)))]] += 100 - sum(shares)
    return tuple(str(percent[c]) for c in _FORSTRAT_COLUMNS)


def _forstrat_decode(cells: Cells) -> dict[str, int]:
    """Foraging strata -> every lifestyle label, 1 where its strata hold at least 50 %."""
    percent = dict(zip(_FORSTRAT_COLUMNS, map(int, cells), strict=True))
    return {
        _col("lifestyle", label): int(sum(percent[c] for c in columns) >= 50)
        for label, columns in ELTON_FORSTRAT.items()
    }


def _pelagic_encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
    """PelagicSpecialist 1 for marine/coastal species, 0 for others."""
    value = entry.traits[_col("habitat", "marine_coastal")]
    return None if value is None else (str(value),)


def _pelagic_decode(cells: Cells) -> dict[str, int]:
    """PelagicSpecialist 1 -> marine_coastal is 1; 0 says nothing."""
    return {_col("habitat", "marine_coastal"): 1} if cells[0] == "1" else {}


def _forstrat_value_encode(entry: _Entry, _rng: np.random.Generator) -> Cells | None:
    """The mammal foraging stratum code of the lifestyle labels that are 1."""
    main = tuple(_ones(entry.traits, "lifestyle"))
    return next(((code,) for code, labels in ELTON_FORSTRAT_VALUE.items() if labels == main), None)


def _forstrat_value_decode(cells: Cells) -> dict[str, int]:
    """Mammal foraging stratum -> every lifestyle label."""
    named = ELTON_FORSTRAT_VALUE[cells[0]]
    return {
        _col("lifestyle", label): int(label in named) for label in TRAIT_CATEGORIES["lifestyle"]
    }


_DIET_FIELD = _Field(_DIET_COLUMNS, _labels("diet"), _diet_encode, _diet_decode)
_BIRDFUNCDAT_FIELDS = (
    _DIET_FIELD,
    _Field(_FORSTRAT_COLUMNS, _labels("lifestyle"), _forstrat_encode, _forstrat_decode),
    _Field(
        ("PelagicSpecialist",),
        (_col("habitat", "marine_coastal"),),
        _pelagic_encode,
        _pelagic_decode,
    ),
    _flag("Nocturnal", _col("activity", "nocturnal")),
)
_MAMFUNCDAT_FIELDS = (
    _DIET_FIELD,
    _Field(
        ("ForStrat-Value",), _labels("lifestyle"), _forstrat_value_encode, _forstrat_value_decode
    ),
    _flag("Activity-Nocturnal", _col("activity", "nocturnal")),
    _flag("Activity-Crepuscular", _col("activity", "crepuscular")),
    _flag("Activity-Diurnal", _col("activity", "diurnal")),
)


def _diet_5cat(cells: dict[str, str]) -> str:
    """EltonTraits' five diet classes: the one holding at least half the diet, else Omnivore."""
    if not cells["Diet-Inv"]:
        return ""
    totals = {name: sum(int(cells[c]) for c in columns) for name, columns in _DIET_5CAT.items()}
    return next((name for name, total in totals.items() if total >= 50), "Omnivore")


def _when(present: bool, value: str) -> str:
    """The value where the described data is present, else an empty field."""
    return value if present else ""


def _body_mass(rng: np.random.Generator, low: float, high: float) -> str:
    """A log-uniform body mass in grams, printed without trailing zeros."""
    mass = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return _num(mass, 2).rstrip("0").rstrip(".")


def _birdfuncdat_fill(
    entry: _Entry, rng: np.random.Generator, cells: dict[str, str]
) -> dict[str, str]:
    """Identity, sources and body mass columns of a BirdFuncDat row."""
    has_diet = bool(cells["Diet-Inv"])
    has_strata = bool(cells["ForStrat-ground"])
    return {
        "SpecID": str(entry.number),
        "PassNonPass": "Passeriformes" if entry.order == "Passeriformes" else "Nonpasseriformes",
        "IOCOrder": entry.order,
        "BLFamilyLatin": entry.family,
        "BLFamilyEnglish": entry.family.removesuffix("idae") + "ids",
        "BLFamSequID": str(_stable("family", entry.family) % 200 + 1),
        "Taxo": "BL3",
        "Scientific": entry.written,
        "English": entry.common_name,
        "Diet-5Cat": _diet_5cat(cells),
        "Diet-Source": _when(has_diet, "Ref_1"),
        "Diet-Certainty": _when(has_diet, str(rng.choice(["A", "B", "C"]))),
        "Diet-EnteredBy": _when(has_diet, "Jennifer"),
        "ForStrat-Source": _when(has_strata, "Ref_1"),
        "ForStrat-SpecLevel": _when(has_strata, "1"),
        "ForStrat-EnteredBy": _when(has_strata, "Jessica"),
        "BodyMass-Value": _body_mass(rng, 6.0, 5000.0),
        "BodyMass-Source": "Dunning08",
        "BodyMass-SpecLevel": "1",
        "BodyMass-Comment": "",
        # free text with a lone double quote (inches): TSV has no quoting, the row must still read
        "Record-Comment": 'wing 4" (museum skin)' if entry.number % 5 == 3 else "",
    }


def _mamfuncdat_fill(
    entry: _Entry, rng: np.random.Generator, cells: dict[str, str]
) -> dict[str, str]:
    """Identity, sources and body mass columns of a MamFuncDat row (some sources quoted)."""
    has_diet = bool(cells["Diet-Inv"])
    has_activity = any(cells[c] for c in MAMFUNCDAT_COLUMNS[18:21])
    mass_source = '"Ref_2, Ref_3"' if entry.number % 4 == 2 else f"Ref_{rng.integers(100, 140)}"
    return {
        "MSW3_ID": str(entry.number),
        "Scientific": entry.written,
        "MSWFamilyLatin": entry.family,
        "Diet-Source": _when(has_diet, f"Ref_{rng.integers(1, 70)}"),
        "Diet-Certainty": _when(has_diet, str(rng.choice(["ABC", "D1", "D2"]))),
        "ForStrat-Certainty": _when(bool(cells["ForStrat-Value"]), "A"),
        "ForStrat-Comment": "",
        "Activity-Source": _when(has_activity, "Ref_1"),
        "Activity-Certainty": _when(has_activity, "ABC"),
        "BodyMass-Value": _body_mass(rng, 3.0, 80000.0),
        "BodyMass-Source": mass_source,
        "BodyMass-SpecLevel": str(int(rng.random() < 0.8)),
    }


# Mostly-empty junk rows that end the real BirdFuncDat.txt; tab-only rows that end MamFuncDat.txt.
_BIRDFUNCDAT_JUNK: tuple[Cells, ...] = (
    ("",) * 40,
    ("",) * 30 + ("0", "", "", "", "0") + ("",) * 5,
    ("",) * 40,
)
_MAMFUNCDAT_BLANK: tuple[Cells, ...] = (("",) * 26,) * 3


# --- AmphiBIO and the plain CSV ---------------------------------------------------------------


def _plants_encode(entry: _Entry, rng: np.random.Generator) -> Cells | None:
    """Seeds or Leaves 1 (the other NA) for plant eaters."""
    if entry.traits[_col("diet", "seeds_plants")] != 1:
        return None
    return ("1", "NA") if rng.random() < 0.5 else ("NA", "1")


def _plants_decode(cells: Cells) -> dict[str, int]:
    """Seeds or Leaves 1 -> seeds_plants is 1."""
    return {_col("diet", "seeds_plants"): 1} if "1" in cells else {}


_AMPHIBIO_FIELDS = (
    _flag("Ter", _col("lifestyle", "terrestrial"), ones_only=True),
    _flag("Aqu", _col("lifestyle", "aquatic"), ones_only=True),
    _flag("Arb", _col("lifestyle", "arboreal"), ones_only=True),
    _Field(("Seeds", "Leaves"), (_col("diet", "seeds_plants"),), _plants_encode, _plants_decode),
    _flag("Fruits", _col("diet", "fruit"), ones_only=True),
    _flag("Arthro", _col("diet", "invertebrates"), ones_only=True),
    _flag("Vert", _col("diet", "vertebrates"), ones_only=True),
    _flag("Diu", _col("activity", "diurnal"), ones_only=True),
    _flag("Noc", _col("activity", "nocturnal"), ones_only=True),
    _flag("Crepu", _col("activity", "crepuscular"), ones_only=True),
)


def _amphibio_fill(
    entry: _Entry, rng: np.random.Generator, _cells: dict[str, str]
) -> dict[str, str]:
    """Identity, unmapped habitat/diet/breeding columns and life history of an AmphiBIO row."""

    def maybe(value: str, p_na: float = 0.4) -> str:
        return "NA" if rng.random() < p_na else value

    size = float(rng.uniform(18.0, 160.0))
    age = int(rng.integers(1, 5))
    litter = int(rng.integers(5, 400))
    egg = float(rng.uniform(1.0, 4.0))
    mode = int(rng.choice(3, p=[0.15, 0.8, 0.05]))
    season = int(rng.integers(4))
    return {
        "id": f"Anf{entry.number:04d}",
        "Order": entry.order,
        "Family": entry.family,
        "Genus": entry.genus,
        "Species": entry.written,
        "Fos": maybe("1", 0.85),
        "Flowers": "NA",
        **{
            c: maybe("1", 0.5) if i == season else "NA"
            for i, c in enumerate(AMPHIBIO_COLUMNS[18:22])
        },
        "Body_mass_g": maybe(_num(size**3 / 20000.0, 2)),
        "Age_at_maturity_min_y": maybe(str(age)),
        "Age_at_maturity_max_y": maybe(str(age + int(rng.integers(0, 3)))),
        "Body_size_mm": maybe(_num(size), 0.1),
        "Size_at_maturity_min_mm": maybe(_num(size * 0.7)),
        "Size_at_maturity_max_mm": maybe(_num(size * 0.9)),
        "Longevity_max_y": maybe(str(age + int(rng.integers(2, 12))), 0.6),
        "Litter_size_min_n": maybe(str(litter)),
        "Litter_size_max_n": maybe(str(litter * int(rng.integers(1, 4)))),
        "Reproductive_output_y": maybe(str(int(rng.integers(1, 5))), 0.2),
        "Offspring_size_min_mm": maybe(_num(egg)),
        "Offspring_size_max_mm": maybe(_num(egg * 1.4)),
        **{c: str(int(i == mode)) for i, c in enumerate(("Dir", "Lar", "Viv"))},
        "OBS": "NA",
    }


_CSV_FIELDS = tuple(_flag(column, column) for column in TRAIT_COLUMNS)

_SPECS: dict[str, _Table] = {
    "avonet": _Table(AVONET_COLUMNS, _AVONET_FIELDS, _avonet_fill, "NA", ",", "\r\n", "utf-8-sig"),
    "eltontraits_birds": _Table(
        BIRDFUNCDAT_COLUMNS,
        _BIRDFUNCDAT_FIELDS,
        _birdfuncdat_fill,
        "",
        "\t",
        "\r\r\n",
        "cp1252",
        _BIRDFUNCDAT_JUNK,
    ),
    "eltontraits_mammals": _Table(
        MAMFUNCDAT_COLUMNS,
        _MAMFUNCDAT_FIELDS,
        _mamfuncdat_fill,
        "",
        "\t",
        "\n",
        "utf-8",
        _MAMFUNCDAT_BLANK,
    ),
    "amphibio": _Table(
        AMPHIBIO_COLUMNS, _AMPHIBIO_FIELDS, _amphibio_fill, "NA", ",", "\r\n", "ascii"
    ),
    "csv": _Table(
        CSV_COLUMNS,
        _CSV_FIELDS,
        lambda entry, _rng, _cells: {"scientific_name": entry.written},
        "",
        ",",
        "\n",
        "utf-8",
    ),
}

TABLE_LABELS: dict[str, tuple[str, ...]] = {
    name: tuple(c for c in TRAIT_COLUMNS if any(c in f.labels for f in spec.fields))
    for name, spec in _SPECS.items()
}


# --- Building the tables ----------------------------------------------------------------------


def _entries(taxonomy: Taxonomy, name: str) -> list[_Entry]:
    """The rows of a table, in the table's order: world species of its class, then extras."""
    cls = TABLE_CLASS[name]
    members = [s for s in taxonomy.species if s.class_name == cls]
    left_out: set[str] = set()
    if name == "avonet":
        n_out = max(1, round(AVONET_MISSING_SHARE * len(members))) if members else 0
        left_out = {s.name for s in sorted(members, key=lambda s: _stable("out", s.name))[:n_out]}
    birdlife = name in ("avonet", "eltontraits_birds")
    entries = [
        _Entry(
            s.name,
            birdlife_name(s) if birdlife else s.name,
            s.common_name,
            s.order,
            s.family,
            s.genus,
            s.traits,
        )
        for s in members
        if s.name not in left_out
    ]
    if name != "csv":
        for written, common, order, family, ones in EXTRA_SPECIES[cls]:
            traits = {c: int(c.removeprefix("trait_") in ones) for c in TRAIT_COLUMNS}
            genus = written.split(" ")[0]
            entries.append(_Entry(None, written, common, order, family, genus, traits))
    entries = [replace(e, number=i + 1) for i, e in enumerate(entries)]
    if name == "avonet":  # alphabetical, Sequence keeps the taxonomic order
        entries.sort(key=lambda e: e.written)
    elif name == "amphibio":  # by order, family and species, numbered in that order
        entries.sort(key=lambda e: (e.order, e.family, e.written))
        entries = [replace(e, number=i + 1) for i, e in enumerate(entries)]
    return entries


def _build(taxonomy: Taxonomy, name: str) -> tuple[bytes, dict[str, Labels]]:
    """A table's bytes and the labels an importer must recover from them."""
    if name not in _SPECS:
        raise ValueError(f"unknown trait table {name!r}; choose one of {sorted(_SPECS)}")
    spec = _SPECS[name]
    lines: list[Cells] = [spec.columns]
    expected: dict[str, Labels] = {}
    for entry in _entries(taxonomy, name):
        rng = np.random.default_rng(_stable(name, entry.written))
        cells: dict[str, str] = {}
        labels: Labels = dict.fromkeys(TABLE_LABELS[name])
        for field in spec.fields:
            value = field.encode(entry, rng)
            decoded = field.decode(value) if value is not None else {}
            if value is None or any(entry.traits[k] != v for k, v in decoded.items()):
                value, decoded = (spec.missing,) * len(field.columns), {}
            cells.update(zip(field.columns, value, strict=True))
            labels.update(decoded)
        cells.update(spec.fill(entry, rng, cells))
        lines.append(tuple(cells[c] for c in spec.columns))
        if entry.accepted is not None:
            expected[entry.accepted] = labels
    text = "".join(spec.sep.join(line) + spec.eol for line in (*lines, *spec.trailer))
    return text.encode(spec.encoding), expected


def table_bytes(taxonomy: Taxonomy, name: str) -> bytes:
    """The exact bytes of one trait table of the world (deterministic)."""
    return _build(taxonomy, name)[0]


def expected_labels(taxonomy: Taxonomy, name: str) -> dict[str, Labels]:
    """Accepted name -> the labels a correct importer recovers from the table (null: unknown)."""
    return _build(taxonomy, name)[1]


def export_trait_tables(taxonomy: Taxonomy, out_dir: Path) -> dict[str, Path]:
    """Write all trait tables into out_dir; return table name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, file_name in TABLES.items():
        path = out_dir / file_name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(table_bytes(taxonomy, name))
        tmp.replace(path)
        paths[name] = path
    return paths

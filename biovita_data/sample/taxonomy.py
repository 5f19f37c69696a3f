"""Seeded generation of the sample world's taxonomy: the tree, names, and each species' features."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from biovita_data.core.vocab import TRAIT_CATEGORIES, TRAIT_COLUMNS

# Ranks above family keep their real iNaturalist ids, so the crawler's class table works unchanged.
LIFE = (48460, "Life", "stateofmatter")
HIGHER_TAXA: dict[str, tuple[tuple[int, str, str], ...]] = {
    "Aves": (LIFE, (1, "Animalia", "kingdom"), (2, "Chordata", "phylum"),
             (355675, "Vertebrata", "subphylum"), (3, "Aves", "class")),
    "Amphibia": (LIFE, (1, "Animalia", "kingdom"), (2, "Chordata", "phylum"),
                 (355675, "Vertebrata", "subphylum"), (20978, "Amphibia", "class")),
    "Mammalia": (LIFE, (1, "Animalia", "kingdom"), (2, "Chordata", "phylum"),
                 (355675, "Vertebrata", "subphylum"), (40151, "Mammalia", "class")),
    "Insecta": (LIFE, (1, "Animalia", "kingdom"), (47120, "Arthropoda", "phylum"),
                (372739, "Hexapoda", "subphylum"), (47158, "Insecta", "class")),
}  # fmt: skip

RANK_LEVEL = {
    "stateofmatter": 100, "kingdom": 70, "phylum": 60, "subphylum": 57, "class": 50,
    "order": 40, "family": 30, "genus": 20, "species": 10, "subspecies": 5,
}  # fmt: skip

# Per class: Xeno-canto group of each order (None: the order is not on Xeno-canto), order suffix.
CLASS_PLAN: dict[str, dict] = {
    "Aves": {"order_suffix": "iformes", "xc_groups": ["birds", "birds", "birds"]},
    "Amphibia": {"order_suffix": "ura", "xc_groups": ["frogs", "frogs"]},
    "Mammalia": {"order_suffix": "ptera", "xc_groups": ["bats", "land mammals"]},
    "Insecta": {"order_suffix": "optera", "xc_groups": ["grasshoppers", None]},
}

# (families per order) for each class, per world size; genera per family; species per genus.
SIZES: dict[str, dict] = {
    # ~210 species: ~130 seen and, with world.RARE's rare third, ~60 unseen ones (<= 2 recordings)
    "default": {
        "families": {"Aves": [2, 2, 2], "Amphibia": [2, 1], "Mammalia": [2, 1], "Insecta": [2, 1]},
        "genera_per_family": 4,
        "species_per_genus": (3, 4),
    },
    "tiny": {
        "families": {"Aves": [1, 1], "Amphibia": [1], "Mammalia": [1], "Insecta": [1]},
        "genera_per_family": 2,
        "species_per_genus": (2, 3),
    },
}

CALL_KINDS = ("whistle", "trill", "buzz", "pulse_train", "croak", "sweep", "chirp")
SHAPES = ("ellipse", "triangle", "diamond", "rectangle", "hexagon", "teardrop", "star")
PATTERNS = ("stripes", "spots", "bands", "checks", "rings")

COMMON_ADJ = (
    "Rufous", "Olive", "Slaty", "Spotted", "Barred", "Crested", "Lesser", "Greater", "Pale",
    "Dusky", "Golden", "Ashy", "Streaked", "Scarlet", "Tawny", "Masked", "Collared", "Sooty",
    "Bronze", "Chestnut", "Ivory", "Plain", "Marbled", "Painted", "Velvet", "Cinnamon",
)  # fmt: skip
COMMON_NOUN = {
    "Aves": ("Warbler", "Tanager", "Owl", "Wren", "Kite", "Finch", "Thrush", "Swift", "Heron"),
    "Amphibia": ("Treefrog", "Toad", "Newt", "Frog", "Salamander"),
    "Mammalia": ("Bat", "Shrew", "Mouse", "Fox", "Squirrel"),
    "Insecta": ("Katydid", "Cricket", "Grasshopper", "Cicada", "Beetle"),
}

ONSETS = ("b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "th", "ch", "ph", "tr")
VOWELS = ("a", "e", "i", "o", "u", "ae", "y")
EPITHET_ENDINGS = ("us", "a", "is", "ensis", "ii", "um", "oides", "atus")


@dataclass(frozen=True)
class Taxon:
    """A taxon of the world's backbone (the image source's, i.e. iNaturalist's, taxonomy)."""

    id: int
    name: str
    rank: str
    parent_id: int | None
    ancestor_ids: tuple[int, ...]  # root first, excluding self
    common_name: str | None = None
    active: bool = True  # False: lumped into another taxon in a later epoch (sample.evolve)


@dataclass(frozen=True)
class CallParams:
    """How a species sounds: family -> kind, genus -> band, species -> fine pattern."""

    kind: str
    f_low: float
    f_high: float
    mod_rate: float
    syllable_s: float
    syllables: int
    gap_s: float


@dataclass(frozen=True)
class LookParams:
    """How a species looks: family -> shape, genus -> colours, species -> pattern and shade."""

    shape: str
    base_rgb: tuple[int, int, int]
    pattern: str
    accent_rgb: tuple[int, int, int]
    pattern_angle: float
    pattern_count: int


@dataclass(frozen=True)
class Species:
    index: int
    taxon_id: int
    name: str
    common_name: str
    class_name: str
    order: str
    family: str
    genus: str
    genus_taxon_id: int
    family_taxon_id: int
    order_taxon_id: int
    xc_group: str | None
    # How the audio source (Xeno-canto) spells it: name_variant in
    # none | old_genus | subspecies | case_space | spelling.
    name_variant: str
    xc_gen: str
    xc_sp: str
    xc_ssp: str
    call: CallParams
    look: LookParams
    traits: dict[str, int | None] = field(hash=False, compare=False)

    @property
    def epithet(self) -> str:
        return self.name.split(" ", 1)[1]

    @property
    def audio_name(self) -> str:
        """The raw scientific name as the audio source writes it."""
        return " ".join(p for p in (self.xc_gen, self.xc_sp, self.xc_ssp) if p)


class _Namer:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def stem(self, syllables: int) -> str:
        while True:
            s = "".join(
                str(self.rng.choice(ONSETS)) + str(self.rng.choice(VOWELS))
                for _ in range(syllables)
            )
            s = s + str(self.rng.choice(("r", "n", "l", "s", "")))
            if s not in self.used:
                self.used.add(s)
                return s

    def genus(self) -> str:
        return (self.stem(2) + str(self.rng.choice(("ia", "us", "ops", "ix", "a")))).capitalize()

    def epithet(self) -> str:
        return self.stem(int(self.rng.integers(1, 3))) + str(self.rng.choice(EPITHET_ENDINGS))


def _variant_spelling(epithet: str) -> str:
    """A plausible spelling variant (as between checklists): a changed ending or doubled letter."""
    for a, b in (("ii", "i"), ("ensis", "iensis"), ("us", "a"), ("a", "us"), ("is", "e")):
        if epithet.endswith(a):
            return epithet[: -len(a)] + b
    return epithet + "a"


def _traits(cls: str, call_kind: str, nocturnal: bool, rng: np.random.Generator) -> dict:
    """Ground-truth trait labels, correlated with class and features; a few unknown (None)."""
    t: dict[str, int | None] = {c: 0 for c in TRAIT_COLUMNS}

    def on(category: str, label: str) -> None:
        t[f"trait_{category}_{label}"] = 1

    diet = TRAIT_CATEGORIES["diet"]
    picks = {
        "Aves": ["invertebrates", "fruit", "seeds_plants", "nectar", "vertebrates", "fish"],
        "Amphibia": ["invertebrates", "vertebrates"],
        "Mammalia": ["invertebrates", "fruit", "seeds_plants", "vertebrates", "carrion", "nectar"],
        "Insecta": ["seeds_plants", "invertebrates", "nectar", "carrion"],
    }[cls]
    for label in rng.choice(picks, size=int(rng.integers(1, 3)), replace=False):
        assert label in diet
        on("diet", str(label))
    if nocturnal:
        on("activity", "nocturnal")
        if rng.random() < 0.4:
            on("activity", "crepuscular")
    else:
        on("activity", "diurnal")
    loco = {
        "Aves": ["flying", "walking"],
        "Amphibia": ["swimming", "walking"] + (["climbing"] if call_kind == "trill" else []),
        "Mammalia": ["flying"] if call_kind in ("chirp", "sweep") else ["walking", "climbing"],
        "Insecta": ["walking", "flying"],
    }[cls]
    for label in loco:
        on("locomotion", label)
    life = {
        "Aves": ["aerial", "arboreal", "terrestrial"],
        "Amphibia": ["aquatic", "terrestrial", "arboreal"],
        "Mammalia": ["aerial", "terrestrial", "arboreal"],
        "Insecta": ["terrestrial", "arboreal"],
    }[cls]
    on("lifestyle", str(rng.choice(life)))
    habitats = TRAIT_CATEGORIES["habitat"]
    for label in rng.choice(habitats, size=int(rng.integers(1, 3)), replace=False):
        on("habitat", str(label))
    if cls == "Amphibia":
        on("habitat", "wetland")
    on("climate", str(rng.choice(TRAIT_CATEGORIES["climate"], p=[0.35, 0.25, 0.3, 0.1])))
    on("social", str(rng.choice(TRAIT_CATEGORIES["social"])))
    if cls in ("Aves", "Mammalia", "Insecta"):
        r = rng.random()
        if r < 0.3:
            on("migration", "migratory")
        elif r < 0.45:
            on("migration", "partial_migrant")
    # Unknown stays unknown: a few labels per species are not known to any table.
    for col in rng.choice(TRAIT_COLUMNS, size=int(rng.integers(0, 3)), replace=False):
        t[str(col)] = None
    return t


# Frequency ranges (Hz) per class for the genus bands.
CLASS_BANDS = {
    "Aves": (1500.0, 8000.0),
    "Amphibia": (300.0, 3500.0),
    "Mammalia": (2000.0, 10000.0),
    "Insecta": (3000.0, 10500.0),
}


@dataclass
class Taxonomy:
    taxa: dict[int, Taxon]
    species: list[Species]
    synonyms: dict[str, int]  # old names (genus or binomial) -> accepted taxon id

    def by_name(self, name: str) -> Taxon | None:
        for t in self.taxa.values():
            if t.name == name:
                return t
        return None

    def descendants(self, taxon_id: int) -> list[Taxon]:
        return [t for t in self.taxa.values() if taxon_id in t.ancestor_ids or t.id == taxon_id]


def generate_taxonomy(size: str = "default", seed: int = 0) -> Taxonomy:
    """Build the world's tree deterministically from (size, seed)."""
    if size not in SIZES:
        raise ValueError(f"unknown world size {size!r}; choose one of {sorted(SIZES)}")
    plan = SIZES[size]
    rng = np.random.default_rng([seed, 17])
    namer = _Namer(rng)
    taxa: dict[int, Taxon] = {}
    ids = iter(rng.permutation(np.arange(100_000, 900_000))[:5000].tolist())
    species: list[Species] = []
    synonyms: dict[str, int] = {}
    common_used: set[str] = set()
    family_counter = 0
    genus_counter = 0
    kinds = list(rng.permutation(CALL_KINDS))
    shapes = list(rng.permutation(SHAPES))

    def add(tid: int, name: str, rank: str, parent: Taxon | None, common: str | None = None):
        anc = (*parent.ancestor_ids, parent.id) if parent else ()
        t = Taxon(tid, name, rank, parent.id if parent else None, anc, common)
        taxa[tid] = t
        return t

    for cls, fams_per_order in plan["families"].items():
        parent = None
        for tid, name, rank in HIGHER_TAXA[cls]:
            parent = taxa.get(tid) or add(tid, name, rank, parent)
        cls_taxon = parent
        cplan = CLASS_PLAN[cls]
        band_lo, band_hi = CLASS_BANDS[cls]
        for oi, n_fam in enumerate(fams_per_order):
            order = add(next(ids), namer.stem(2).capitalize() + cplan["order_suffix"], "order",
                        cls_taxon)  # fmt: skip
            xc_group = cplan["xc_groups"][oi]
            for _ in range(n_fam):
                family = add(next(ids), namer.stem(2).capitalize() + "idae", "family", order)
                kind = kinds[family_counter % len(kinds)]
                shape = shapes[family_counter % len(shapes)]
                family_counter += 1
                n_gen = plan["genera_per_family"]
                for gi in range(n_gen):
                    genus = add(next(ids), namer.genus(), "genus", family)
                    # genus -> frequency band and base colour, spread evenly then jittered
                    lo = band_lo + (band_hi - band_lo) * (gi / n_gen) * 0.85
                    lo *= float(rng.uniform(0.95, 1.05))
                    hi = lo * float(rng.uniform(1.25, 1.6))
                    hue = (genus_counter * 0.618034) % 1.0
                    base = _hsv_rgb(
                        hue, float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.55, 0.9))
                    )
                    genus_counter += 1
                    old_genus = namer.genus()  # an older genus name, kept as a synonym
                    lo_n, hi_n = plan["species_per_genus"]
                    n_sp = int(rng.integers(lo_n, hi_n + 1))
                    for si in range(n_sp):
                        epithet = namer.epithet()
                        name = f"{genus.name} {epithet}"
                        noun = str(rng.choice(COMMON_NOUN[cls]))
                        while True:
                            common = f"{rng.choice(COMMON_ADJ)} {noun}"
                            if common not in common_used:
                                common_used.add(common)
                                break
                            noun = str(rng.choice(COMMON_NOUN[cls]))
                        nocturnal = bool(rng.random() < (0.45 if cls != "Aves" else 0.2))
                        sp_taxon = add(next(ids), name, "species", genus, common)
                        # species -> fine pattern; nocturnal species call lower in the band
                        shift = 0.85 if nocturnal else 1.0
                        call = CallParams(
                            kind=kind,
                            f_low=round(lo * shift, 1),
                            f_high=round(hi * shift, 1),
                            mod_rate=round(float(3 + 5 * si + rng.uniform(0, 2)), 2),
                            syllable_s=round(float(rng.uniform(0.08, 0.5)), 3),
                            syllables=int(rng.integers(1, 7)),
                            gap_s=round(float(rng.uniform(0.05, 0.4)), 3),
                        )
                        look = LookParams(
                            shape=shape,
                            base_rgb=base,
                            pattern=PATTERNS[(si + gi) % len(PATTERNS)],
                            # markings in a dark shade or a pale tint of the genus' hue, as
                            # congeneric species share a palette (a random hue per species
                            # would make colour a species label no unseen species shares)
                            accent_rgb=_hsv_rgb(
                                (hue + 0.06 * (2 * float(rng.random()) - 1)) % 1.0,
                                (0.8, 0.25)[si % 2],
                                (0.3, 0.95)[si % 2],
                            ),
                            pattern_angle=round(float(rng.uniform(0, 180)), 1),
                            pattern_count=int(rng.integers(2, 9)),
                        )
                        variant = "none"
                        if xc_group is not None:
                            variant = str(
                                rng.choice(
                                    ["none", "old_genus", "subspecies", "case_space", "spelling"],
                                    p=[0.88, 0.03, 0.03, 0.03, 0.03],
                                )
                            )
                        xc_gen, xc_sp, xc_ssp = genus.name, epithet, ""
                        if variant == "old_genus":
                            xc_gen = old_genus
                            synonyms[f"{old_genus} {epithet}"] = sp_taxon.id
                        elif variant == "subspecies":
                            xc_ssp = namer.epithet()
                        elif variant == "case_space":
                            xc_gen, xc_sp = genus.name.lower(), f" {epithet.capitalize()}"
                        elif variant == "spelling":
                            xc_sp = _variant_spelling(epithet)
                        species.append(
                            Species(
                                index=len(species),
                                taxon_id=sp_taxon.id,
                                name=name,
                                common_name=common,
                                class_name=cls,
                                order=order.name,
                                family=family.name,
                                genus=genus.name,
                                genus_taxon_id=genus.id,
                                family_taxon_id=family.id,
                                order_taxon_id=order.id,
                                xc_group=xc_group,
                                name_variant=variant,
                                xc_gen=xc_gen,
                                xc_sp=xc_sp,
                                xc_ssp=xc_ssp,
                                call=call,
                                look=look,
                                traits=_traits(cls, kind, nocturnal, rng),
                            )
                        )
    # Guarantee at least one of each naming variant in every world (tests rely on them).
    return Taxonomy(
        taxa=taxa, species=_ensure_variants(species, synonyms, namer), synonyms=synonyms
    )


def _ensure_variants(species: list[Species], synonyms: dict[str, int], namer: _Namer):
    from dataclasses import replace

    present = {s.name_variant for s in species}
    eligible = [i for i, s in enumerate(species) if s.xc_group and s.name_variant == "none"]
    for variant in ("old_genus", "subspecies", "case_space", "spelling"):
        if variant in present or not eligible:
            continue
        i = eligible.pop(len(eligible) // 2)
        s = species[i]
        gen, sp, ssp = s.genus, s.epithet, ""
        if variant == "old_genus":
            gen = namer.genus()
            synonyms[f"{gen} {sp}"] = s.taxon_id
        elif variant == "subspecies":
            ssp = namer.epithet()
        elif variant == "case_space":
            gen, sp = s.genus.lower(), f" {sp.capitalize()}"
        else:
            sp = _variant_spelling(sp)
        species[i] = replace(s, name_variant=variant, xc_gen=gen, xc_sp=sp, xc_ssp=ssp)
    return species


def _hsv_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(r * 255), int(g * 255), int(b * 255))

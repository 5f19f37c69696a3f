"""The 34 ecological trait labels of BioVITA in their fixed order (docs/design.md, traits)."""

TRAIT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "diet": (
        "invertebrates",
        "vertebrates",
        "fish",
        "carrion",
        "fruit",
        "nectar",
        "seeds_plants",
    ),
    "activity": ("diurnal", "nocturnal", "crepuscular"),
    "locomotion": ("flying", "walking", "swimming", "climbing"),
    "lifestyle": ("aerial", "terrestrial", "aquatic", "arboreal"),
    "habitat": (
        "forest",
        "shrubland",
        "grassland",
        "wetland",
        "marine_coastal",
        "desert_rocky",
        "human_modified",
    ),
    "climate": ("tropical", "subtropical", "temperate", "boreal_polar"),
    "social": ("solitary", "pairs", "groups"),
    "migration": ("migratory", "partial_migrant"),
}

TRAIT_COLUMNS: tuple[str, ...] = tuple(
    f"trait_{category}_{label}" for category, labels in TRAIT_CATEGORIES.items() for label in labels
)

assert len(TRAIT_COLUMNS) == 34

RANKS: tuple[str, ...] = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

"""The five text prompt templates of BioVITA (docs/design.md, "Loader") and their rendering."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

TEMPLATES: tuple[str, ...] = (
    "{common}",
    "{scientific}",
    "{taxonomic}",
    "{scientific} with common name {common}",
    "{taxonomic} with common name {common}",
)
TAXONOMIC_RANKS: tuple[str, ...] = ("class", "order", "family", "genus", "species")


def taxonomic_name(lineage: Mapping[str, str | None]) -> str:
    """ "class order family genus species", skipping unknown ranks (species = the binomial)."""
    parts = [lineage.get(rank) for rank in TAXONOMIC_RANKS]
    return " ".join(p.strip() for p in parts if p and p.strip())


def usable_templates(templates: Sequence[str], has_common: bool) -> tuple[str, ...]:
    """The templates a species can fill: those naming {common} need a common name."""
    if has_common:
        return tuple(templates)
    usable = tuple(t for t in templates if "{common}" not in t)
    return usable or ("{scientific}",)


def render(template: str, *, common: str | None, scientific: str, taxonomic: str) -> str:
    """Fill one template."""
    return template.format(common=common or "", scientific=scientific, taxonomic=taxonomic)


def species_prompts(
    *, common: str | None, scientific: str, taxonomic: str, templates: Sequence[str] = TEMPLATES
) -> tuple[str, ...]:
    """Every prompt of one species, in template order (templates needing a missing name dropped)."""
    has_common = bool(common and common.strip())
    return tuple(
        render(t, common=common, scientific=scientific, taxonomic=taxonomic)
        for t in usable_templates(templates, has_common)
    )

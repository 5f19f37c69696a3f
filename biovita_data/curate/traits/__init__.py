"""Trait importers (AVONET, EltonTraits, AmphiBIO, plain CSV) and the `traits` stage."""

from biovita_data.curate.traits.combine import (
    PROVENANCE_COLUMNS,
    Resolver,
    TraitResult,
    attach_traits,
)
from biovita_data.curate.traits.readers import KINDS, decode_text, read_trait_table
from biovita_data.curate.traits.stage import coverage_path, print_coverage, run_traits

__all__ = [
    "KINDS",
    "PROVENANCE_COLUMNS",
    "Resolver",
    "TraitResult",
    "attach_traits",
    "coverage_path",
    "decode_text",
    "print_coverage",
    "read_trait_table",
    "run_traits",
]

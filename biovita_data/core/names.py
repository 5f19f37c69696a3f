"""Scientific names: raw spellings -> (genus, epithet, infraspecific); fuzzy epithets."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

# Words that mean "not identified to one species".
_OPEN_NOMENCLATURE = {"sp", "sp.", "spp", "spp.", "indet", "indet.", "gen.", "sp.nov.", "nov."}
_QUALIFIERS = {"cf", "cf.", "aff", "aff.", "nr", "nr.", "?"}
_INFRA_MARKERS = {"ssp", "ssp.", "subsp", "subsp.", "var", "var.", "f.", "forma", "morph"}
_HYBRID = re.compile(r"(^|\s)[x×](\s|$)|×", re.IGNORECASE)
_EPITHET = re.compile(r"^[a-z][a-z-]*[a-z]$")


@dataclass(frozen=True)
class ParsedName:
    """A raw name split into parts; `problem` says why it cannot name one species (None: it can)."""

    raw: str
    genus: str | None = None
    epithet: str | None = None
    infra: str | None = None
    problem: str | None = None  # empty | hybrid | not_species | uncertain | unparsable

    @property
    def binomial(self) -> str | None:
        return f"{self.genus} {self.epithet}" if self.genus and self.epithet else None

    @property
    def normalized(self) -> str | None:
        """Genus capitalised, epithets lower case, single spaces, no authority."""
        if not self.binomial:
            return self.genus
        return f"{self.binomial} {self.infra}" if self.infra else self.binomial


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def parse_name(raw: str | None) -> ParsedName:
    """Parse a scientific name as sources write it: case, spacing, subgenus, authority, ssp."""
    text = " ".join((raw or "").replace("_", " ").replace('"', " ").split())
    if not text:
        return ParsedName(raw or "", problem="empty")
    if _HYBRID.search(text):
        return ParsedName(text, problem="hybrid")
    words = text.split(" ")
    if any(w.lower() in _QUALIFIERS for w in words):
        return ParsedName(text, problem="uncertain")  # cf. / aff.: not a firm identification
    # a subgenus in parentheses right after the genus: "Turdus (Merula) merula"
    if len(words) > 2 and words[1].startswith("(") and words[1].endswith(")"):
        words.pop(1)
    genus = _ascii(words[0]).strip(".,").capitalize()
    if not genus.isalpha():
        return ParsedName(text, problem="unparsable")
    if len(words) < 2 or words[1].lower() in _OPEN_NOMENCLATURE | _INFRA_MARKERS:
        return ParsedName(text, genus=genus, problem="not_species")
    epithet = _ascii(words[1]).lower().strip(".,")
    if not _EPITHET.match(epithet):
        return ParsedName(text, genus=genus, problem="unparsable")
    infra = None
    rest = words[2:]
    if rest and rest[0].lower() in _INFRA_MARKERS:
        rest = rest[1:]
    # an infraspecific epithet is lower case in the source; a capital or a year starts an authority
    if rest and rest[0][:1].islower() and _EPITHET.match(_ascii(rest[0]).lower()):
        infra = _ascii(rest[0]).lower()
    return ParsedName(text, genus=genus, epithet=epithet, infra=infra)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def is_spelling_variant(a: str, b: str) -> bool:
    """Whether two epithets differ only as checklists' spellings do: one letter, or the ending."""
    d = Levenshtein.distance(a, b, score_cutoff=3)
    if d == 0 or d > 2:
        return False
    prefix = _common_prefix(a, b)
    if prefix < 3:
        return False
    ending_only = prefix >= min(len(a), len(b)) - 3  # -us/-a, -is/-e, -ii/-i, -um/-a
    return ending_only or (d == 1 and min(len(a), len(b)) >= 6)


def closest_epithet(epithet: str, candidates: set[str] | list[str]) -> tuple[str | None, str]:
    """The one candidate this epithet is a spelling variant of, conservatively.

    Returns (epithet, "exact") when it is a candidate itself (never moved to another one),
    (candidate, "fuzzy") when exactly one candidate is a spelling variant of it,
    (None, "ambiguous") when several are, and (None, "no_match") when none is.
    """
    if epithet in candidates:
        return epithet, "exact"
    close = sorted(c for c in candidates if is_spelling_variant(epithet, c))
    if not close:
        return None, "no_match"
    if len(close) > 1:
        return None, "ambiguous"
    return close[0], "fuzzy"

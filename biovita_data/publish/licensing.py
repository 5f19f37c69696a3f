"""The card's licence: the most restrictive licence that covers every row, or `other`."""

from __future__ import annotations

from collections.abc import Iterable

from biovita_data.crawl.licenses import license_family

# family -> the families whose items a collection under it may hold (each keeps its own terms).
_COVERS: dict[str, set[str]] = {
    "cc0": {"cc0", "pdm"},
    "pdm": {"cc0", "pdm"},
    "cc-by": {"cc0", "pdm", "cc-by"},
    "cc-by-sa": {"cc0", "pdm", "cc-by", "cc-by-sa"},
    "cc-by-nc": {"cc0", "pdm", "cc-by", "cc-by-nc"},
    "cc-by-nc-sa": {"cc0", "pdm", "cc-by", "cc-by-nc", "cc-by-nc-sa"},
}
# Licence identifiers the Hub accepts in a card's `license` field.
HUB_LICENSES = frozenset(
    {"cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
     "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
     "cc-by-nc-sa-4.0"}
)  # fmt: skip


def _family(code: str) -> str:
    return "pdm" if code.startswith("pdm") else license_family(code)


def card_license(codes: Iterable[str | None]) -> str:
    """The single present licence that covers all others (e.g. cc0 + cc-by + cc-by-nc ->
    cc-by-nc-4.0), else `other` (share-alike meets non-commercial, unknown licences, ...)."""
    present = set(codes)
    if not present or None in present:
        return "other"
    known = {c for c in present if c is not None}
    families = {_family(c) for c in known}
    for code in sorted(known):
        fam = _family(code)
        same_family = {c for c in known if _family(c) == fam}
        if fam in _COVERS and families <= _COVERS[fam] and same_family == {code}:
            return code if code in HUB_LICENSES else "other"
    return "other"


def license_url(code: str | None) -> str | None:
    """The Creative Commons deed of a code, for the card's table."""
    if not code:
        return None
    if code.startswith("cc0"):
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    if code.startswith("pdm"):
        return "https://creativecommons.org/publicdomain/mark/1.0/"
    fam = license_family(code)
    version = code[len(fam) + 1 :]
    if fam.startswith("cc-") and version:
        return f"https://creativecommons.org/licenses/{fam[3:]}/{version}/"
    return None

"""Licence strings of every source -> SPDX-like codes, and the allow-list check."""

from __future__ import annotations

import re

DEFAULT_ALLOWED = ("cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa")
ALL_RIGHTS_RESERVED = "all-rights-reserved"
_FAMILIES = {"by", "by-sa", "by-nc", "by-nc-sa", "by-nd", "by-nc-nd"}
_URL = re.compile(
    r"^(?:https?:)?//(?:www\.)?creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/([\d.]+)"
    r"(?:/[a-z]{2}(?:-[a-z]{2})?)?(?:/(?:legalcode(?:\.[a-z-]+)?|deed\.[a-z-]+)?)?/?$"
)
# Licence names as publishers write them in free text (GBIF media): word -> family part.
_NAME_PARTS = (("attribution", "by"), ("noncommercial", "nc"), ("sharealike", "sa"))
_NO_DERIVS = re.compile(r"no-?deriv")


class UnknownLicense(ValueError):
    """A licence string that is not a Creative Commons licence we know."""


def normalize_license(raw: str | None) -> str:
    """`//creativecommons.org/licenses/by-nc-sa/4.0/`, `cc-by-nc`, `CC-BY-NC`, None -> a code.

    Codes: `cc0-1.0`, `cc-<family>-<version>` (iNaturalist codes carry no version: 4.0 is
    assumed, as iNaturalist applies 4.0), `all-rights-reserved` for a null iNaturalist code.
    """
    if raw is None:
        return ALL_RIGHTS_RESERVED
    text = raw.strip().lower()
    if text in ("", "null", "none", "all rights reserved", "c"):
        return ALL_RIGHTS_RESERVED
    if "all rights reserved" in text and "creative" not in text and "cc" not in text:
        return ALL_RIGHTS_RESERVED  # "© 2019 Jane Doe, all rights reserved"
    m = _URL.match(text)
    if m:
        kind, family, version = m.groups()
        if kind == "publicdomain":
            if family == "zero":
                return f"cc0-{version}"
            if family == "mark":
                return "pdm-1.0"
            raise UnknownLicense(raw)
        if family not in _FAMILIES:
            raise UnknownLicense(raw)
        return f"cc-{family}-{version}"
    if text.startswith(("creative commons", "attribution")):
        return _from_name(raw, text)
    if text in ("public domain mark", "public domain mark 1.0"):
        return "pdm-1.0"
    text = re.sub(r"[\s_]+", "-", text.removesuffix(" international").strip())
    text = re.sub(r"(-[\d.]+)-[a-z]{2}$", r"\1", text)  # a ported licence: CC BY-NC 3.0 DE
    text = re.sub(r"-(\d)-(\d)$", r"-\1.\2", text)  # GBIF's enum spelling CC_BY_NC_4_0
    if text in ("cc0", "cc-0", "cc0-1.0"):
        return "cc0-1.0"
    m = re.fullmatch(r"cc-(by(?:-nc)?(?:-sa|-nd)?)(?:-([\d.]+))?", text)
    if m and m.group(1) in _FAMILIES:
        return f"cc-{m.group(1)}-{m.group(2) or '4.0'}"
    raise UnknownLicense(raw)


def _from_name(raw: str, text: str) -> str:
    """`Creative Commons Attribution-NonCommercial 4.0 International` -> `cc-by-nc-4.0`."""
    version = re.search(r"\b(\d\.\d)\b", text)
    squashed = text.replace(" ", "").replace("-", "")
    if not squashed.startswith("creativecommons"):
        squashed = "creativecommons" + squashed  # "Attribution-NonCommercial 4.0 International"
    if "zero" in squashed or "cc0" in squashed:
        return f"cc0-{version.group(1) if version else '1.0'}"
    parts = [code for word, code in _NAME_PARTS if word in squashed]
    if _NO_DERIVS.search(text.replace(" ", "")):
        parts.append("nd")
    family = "-".join(parts)
    if not parts or parts[0] != "by" or family not in _FAMILIES:
        raise UnknownLicense(raw)
    return f"cc-{family}-{version.group(1) if version else '4.0'}"


def license_family(code: str) -> str:
    """`cc-by-nc-sa-3.0` -> `cc-by-nc-sa`; `cc0-1.0` -> `cc0`."""
    if code.startswith("cc0"):
        return "cc0"
    return re.sub(r"-[\d.]+$", "", code)


def is_allowed(code: str, allowed: tuple[str, ...] = DEFAULT_ALLOWED) -> bool:
    return license_family(code) in allowed or code in allowed


# What `--licenses` accepts: a family, or a versioned code (cc-by-4.0, cc0-1.0, pdm-1.0).
KNOWN_FAMILIES = (*DEFAULT_ALLOWED, "cc-by-nd", "cc-by-nc-nd", "pdm", ALL_RIGHTS_RESERVED)
_VERSIONED = re.compile(r"(cc-by(?:-nc)?(?:-sa|-nd)?)-(1\.0|2\.0|2\.5|3\.0|4\.0)|cc0-1\.0|pdm-1\.0")


def parse_allowed(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`--licenses` (comma-separated, or a list) -> codes; ValueError naming the valid codes."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    codes = tuple(dict.fromkeys(str(p).strip().lower() for p in parts if str(p).strip()))
    bad = [c for c in codes if c not in KNOWN_FAMILIES and not _VERSIONED.fullmatch(c)]
    if bad or not codes:
        what = f"unknown licence code(s) {', '.join(bad)}" if bad else "no licence code given"
        raise ValueError(
            f"--licenses: {what}; valid codes: {', '.join(KNOWN_FAMILIES)} "
            "(or a versioned one such as cc-by-4.0, cc-by-nc-3.0, cc0-1.0)"
        )
    return codes

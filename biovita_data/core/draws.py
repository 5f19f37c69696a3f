"""Seeded draws that no other record changes: a keyed hash per row instead of positions in a
random permutation, so adding or withdrawing one record leaves every other record's place."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl


def keyed_hash(
    seed: int, modality: str, first: pl.Series, second: pl.Series | None = None
) -> pl.Series:
    """A 64-bit hash (BLAKE2b) of (seed, modality, first, second) per row, stable across runs,
    machines and library versions (Polars' own hash is not); no `second`: an empty one."""
    seconds = second.to_list() if second is not None else [""] * len(first)
    values = [
        int.from_bytes(
            hashlib.blake2b(f"{seed}\x1f{modality}\x1f{a}\x1f{b}".encode(), digest_size=8).digest()
        )
        for a, b in zip(first.to_list(), seconds, strict=True)
    ]
    return pl.Series("_h", values, dtype=pl.UInt64)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def salt(seed: int, *parts: str) -> np.uint64:
    """A 64-bit salt of the seed and names (BLAKE2b), to derive one draw's keys from another's."""
    text = "\x1f".join([str(seed), *parts]).encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest()))


def salted(keys: np.ndarray, salt_: np.uint64) -> np.ndarray:
    """Keys for another draw: each uint64 key mixed with a salt (splitmix64), as independent of
    the original order as of each other."""
    return _mix(keys ^ salt_)


def uuid_keys(uuids: pl.Series, seed: int) -> pl.Series:
    """A seeded 64-bit key per uuid, the same on every machine and library version: a canonical
    UUID's 128 bits (any case, with or without dashes) mixed with the seed in vectorised
    splitmix64 steps; any other text through keyed_hash (BLAKE2b)."""
    hexed = uuids.str.replace_all("-", "", literal=True).str.to_lowercase()
    canonical = hexed.str.contains(r"^[0-9a-f]{32}$").fill_null(False).to_numpy()
    q = [  # the 32 hex digits as four 32-bit numbers
        hexed.str.slice(8 * k, 8).str.to_integer(base=16, strict=False).fill_null(0).to_numpy()
        .astype(np.uint64)
        for k in range(4)
    ]  # fmt: skip
    hi, lo = (q[0] << np.uint64(32)) | q[1], (q[2] << np.uint64(32)) | q[3]
    seeded = _mix(np.array([seed & (2**64 - 1)], dtype=np.uint64))[0]
    keys = _mix(_mix(hi ^ seeded) ^ lo)
    other = ~canonical
    if other.any():
        rest = uuids.filter(pl.Series(other))
        keys[other] = keyed_hash(seed, "uuid", rest).to_numpy()
    return pl.Series("_key", keys, dtype=pl.UInt64)


def previous_draw(
    report: Path, seed_at: tuple[str, ...], seed: int, data: Path, columns: list[str]
) -> pl.DataFrame | None:
    """`columns` of `data` as the previous run left them, when its JSON `report` holds `seed`
    under the keys `seed_at` (a draw of the same seed that a rebuild walks first); None when
    either file is missing, the report is unreadable or its seed is another."""
    if not (report.exists() and data.exists()):
        return None
    try:
        value = json.loads(report.read_text())
        for key in seed_at:
            value = value[key]
    except (ValueError, KeyError, TypeError):
        return None
    return pl.read_parquet(data, columns=columns) if value == seed else None

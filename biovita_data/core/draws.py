"""Seeded draws that no other record changes: a keyed hash per row instead of positions in a
random permutation, so adding or withdrawing one record leaves every other record's place."""

from __future__ import annotations

import hashlib

import polars as pl


def keyed_hash(seed: int, modality: str, first: pl.Series, second: pl.Series) -> pl.Series:
    """A 64-bit hash (BLAKE2b) of (seed, modality, first, second) per row, stable across runs,
    machines and library versions (Polars' own hash is not)."""
    values = [
        int.from_bytes(
            hashlib.blake2b(f"{seed}\x1f{modality}\x1f{a}\x1f{b}".encode(), digest_size=8).digest()
        )
        for a, b in zip(first.to_list(), second.to_list(), strict=True)
    ]
    return pl.Series("_h", values, dtype=pl.UInt64)

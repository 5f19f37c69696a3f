"""Deterministic fault injection for the sample server: 429, 5xx, resets, slow, truncated."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("429", "500", "503", "reset", "slow", "truncated")


@dataclass
class FaultPlan:
    """Which requests fail and how; the same seed and request sequence give the same faults.

    `rate` is the chance that a given attempt at a URL fails; at most `max_consecutive` attempts
    in a row fail for one URL, so a client that retries that often always gets through.
    """

    rate: float = 0.0
    max_consecutive: int = 0
    seed: int = 0
    retry_after: int = 1
    slow_s: float = 0.4
    kinds: tuple[str, ...] = KINDS
    counts: Counter = field(default_factory=Counter)
    _attempts: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def named(cls, level: str, seed: int = 0) -> FaultPlan:
        levels = {
            "none": cls(0.0, 0, seed),
            "light": cls(0.05, 1, seed),
            "heavy": cls(0.3, 3, seed),
        }
        if level not in levels:
            raise ValueError(f"unknown fault level {level!r}; choose none, light or heavy")
        return levels[level]

    def decide(self, key: str) -> str | None:
        """The fault for this attempt at `key` (path + query), or None to answer normally."""
        with self._lock:
            self.counts["requests"] += 1
            if self.rate <= 0:
                return None
            n = self._attempts[key]
            h = hashlib.sha256(f"{self.seed}|{key}|{n}".encode()).digest()
            roll = int.from_bytes(h[:4], "big") / 2**32
            if n >= self.max_consecutive or roll >= self.rate:
                self._attempts[key] = 0
                return None
            self._attempts[key] = n + 1
            kind = self.kinds[h[4] % len(self.kinds)]
            self.counts[kind] += 1
            return kind

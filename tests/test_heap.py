"""A worker's malloc keeps the memory it frees: the next record's buffers need no fresh pages."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

_BURSTS = """
import resource, sys
from biovita_data.core.heap import keep_freed_memory
tuned = sys.argv[1] == "tuned" and keep_freed_memory()
def burst():  # a row group's worth of buffers, every page touched, then all freed
    held = [bytearray(3 << 20) for _ in range(8)]
    del held
burst()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    burst()
print(tuned, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _faults_per_burst(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _BURSTS, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_fresh_pages() -> None:
    """glibc's defaults hand the 24 MB of each burst back at its free (past the trim threshold),
    so each burst faults its ~6,000 pages in again; tuned, the next burst reuses them."""
    tuned, faults = _faults_per_burst("tuned")
    assert tuned == "True" and faults < 100
    default, faults = _faults_per_burst("default")
    assert default == "False" and faults > 3000

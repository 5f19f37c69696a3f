"""A worker process's malloc set to keep the memory it frees, for the next record to reuse.

A materialize worker allocates and frees the same large buffers record after record: downloaded
bodies (~0.3 MB), decode blocks (0.5-1 MB), a shard's row groups (~17 MB). glibc's defaults give
much of that back to the system at each free (buffers over its mmap threshold are unmapped; free
memory past its trim threshold at a heap's top is returned), so the next record's buffer is
fresh memory again, which the kernel must fault in and zero page by page: on this project's VM
0.75 CPU-ms a 25 s recording, 5 % of a worker's CPU (benchmarks/README.md). Raising both
thresholds keeps that memory in the process: its resident size then stays near its peak, which
a worker reaches with its first shard anyway.
"""

from __future__ import annotations

import ctypes
import functools
import platform

# mallopt(3) parameters
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations below it come from the heap
TRIM_THRESHOLD = 256 << 20  # free memory kept at a heap's top before any is returned
TOP_PAD = 64 << 20  # a heap grows by this much more than asked (address space: untouched)


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once); False elsewhere (musl,
    macOS, Windows: their allocators are left as they are)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's own libc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    wanted = {_M_MMAP_THRESHOLD: MMAP_THRESHOLD, _M_TRIM_THRESHOLD: TRIM_THRESHOLD}
    wanted[_M_TOP_PAD] = TOP_PAD
    return all([mallopt(param, value) == 1 for param, value in wanted.items()])

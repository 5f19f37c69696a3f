"""The memory a run may still use: the machine's available memory, within its cgroup's limit."""

from __future__ import annotations

import os
from pathlib import Path

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")  # cgroup v2 (containers, Slurm, Kubernetes)
_SELF_CGROUP = Path("/proc/self/cgroup")


def available_memory() -> int:
    """Bytes: Linux's MemAvailable (free plus reclaimable cache), lowered to what the cgroup's
    memory.max leaves above memory.current; elsewhere the physical memory."""
    avail = _meminfo_available()
    if avail is None:
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 8 << 30  # unknown: the one-machine figure
    limit = _cgroup_left()
    return min(avail, limit) if limit is not None else avail


def _meminfo_available() -> int | None:
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_left() -> int | None:
    """memory.max - memory.current of this process's cgroup (v2), None without a limit."""
    try:
        rel = _SELF_CGROUP.read_text().strip().splitlines()[0].split(":", 2)[2]
        group = _CGROUP / rel.lstrip("/")
        top = (group / "memory.max").read_text().strip()
        if top == "max":
            return None
        return max(0, int(top) - int((group / "memory.current").read_text()))
    except (OSError, ValueError, IndexError):
        return None

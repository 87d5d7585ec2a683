"""How much memory the host has free: what a size is checked against before anything is allocated."""

from __future__ import annotations

import os


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return None


def host_free() -> int | None:
    """Bytes the host can still give this process, or None where that cannot be known.

    Linux's MemAvailable (free memory plus what the page cache would give back), lowered to a
    cgroup v2 limit's remainder where one applies (containers, CI runners).
    """
    free = None
    meminfo = _read("/proc/meminfo")
    for line in (meminfo or "").splitlines():
        if line.startswith("MemAvailable:"):
            free = int(line.split()[1]) * 1024
    if free is None and hasattr(os, "sysconf") and "SC_AVPHYS_PAGES" in os.sysconf_names:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if free is not None and limit and used and limit.strip().isdigit() and used.strip().isdigit():
        free = min(free, max(int(limit) - int(used), 0))
    return free

"""Free memory on the host, read where the kernel reports it (no torch)."""
from __future__ import annotations

from pathlib import Path


def available_ram() -> int | None:
    """Bytes the kernel says can be allocated without swapping (None where /proc/meminfo is missing)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None

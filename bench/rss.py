"""This process's resident memory: now, and at its peak (Linux ``/proc``)."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path


def current_rss_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``, Linux)."""
    pages = int(Path("/proc/self/statm").read_text(encoding="utf-8").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``VmHWM``) to its current RSS; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak RSS since the last :func:`reset_peak_rss` (``VmHWM``), else since the process started.

    Not ``ru_maxrss`` where ``VmHWM`` is readable: Linux carries a parent's RSS at the fork into a
    child's ``ru_maxrss`` across the exec, so a worker started by a bench that had just built its
    checkpoints in memory read the builder's 1.57 GiB as its own peak (P1)."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
    except OSError:
        match = None
    if match:
        return int(match.group(1)) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

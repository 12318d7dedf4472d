"""Whether a process still exists (stale run directories, stale cache writes)."""

from __future__ import annotations

import os


def alive(pid) -> bool:
    """True if process `pid` exists on this host; a pid owned by another user counts as alive."""
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True
    except (OSError, TypeError, ValueError):  # no such process, or no usable pid recorded
        return False
    return True

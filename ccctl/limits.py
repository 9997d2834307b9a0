"""Process limits that thousands of sites need (a socket per endpoint, peer or connection)."""

from __future__ import annotations

import contextlib
import resource


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard limit (a socket per endpoint or peer); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

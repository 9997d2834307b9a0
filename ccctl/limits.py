"""Process limits that thousands of sites need (a socket per endpoint, peer or connection), and
whether a process exists."""

from __future__ import annotations

import contextlib
import os
import resource


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard limit (a socket per endpoint or peer); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]

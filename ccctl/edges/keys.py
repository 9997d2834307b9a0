"""An edge's admin key, read from its file at the moment it is needed.

The registry keeps only the path. The file must be a regular file that neither its group
nor others can read or write (as ssh does for private keys): a key others can read is a
key others have. The key is the file's first line, stripped (the streaming plugin's
``admin_key``); a second line, if any, is Janus's ``admin_secret`` (its admin API), else the
key is both. Neither is ever logged or printed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ccctl.errors import UsageError

MAX_KEY_BYTES = 4096


def check_key_file(path: str | Path) -> Path:
    """The absolute path of a usable key file, or UsageError saying what is wrong with it."""
    p = Path(path).expanduser().absolute()
    try:
        st = p.stat()
    except OSError as exc:
        raise UsageError(f"admin key file {p}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"admin key file {p}: not a regular file")
    if st.st_mode & 0o077:
        raise UsageError(f"admin key file {p}: readable or writable by others (mode {stat.S_IMODE(st.st_mode):04o});"
                         f" chmod 600 it")
    if st.st_uid != os.geteuid():
        raise UsageError(f"admin key file {p}: not owned by this user")
    return p


def read_key(path: str | Path, line: int = 0) -> str:
    """The admin key in ``path`` (checked as :func:`check_key_file` does), or UsageError.
    ``line=1``: Janus's ``admin_secret`` (the admin API's), the second line, or the key itself
    when there is none."""
    p = check_key_file(path)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"admin key file {p}: {exc.strerror}") from None
    if len(data) > MAX_KEY_BYTES:
        raise UsageError(f"admin key file {p}: longer than {MAX_KEY_BYTES} bytes; not a key")
    lines = data.decode("utf-8", errors="replace").strip().splitlines()
    key = lines[0].strip() if lines else ""
    if line and len(lines) > line and lines[line].strip():
        return lines[line].strip()
    if not key:
        raise UsageError(f"admin key file {p}: empty")
    return key

"""The operator's SSH login key: made once under $CCCTL_HOME, never printed or stored elsewhere."""

from __future__ import annotations

import os
from pathlib import Path


def ensure_client_key(path: Path) -> str:
    """Create an ed25519 key at ``path`` (0600) if there is none; return its public line."""
    import asyncssh

    if path.exists():
        key = asyncssh.read_private_key(str(path))
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="ccctl")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key())
        Path(f"{path}.pub").write_bytes(key.export_public_key())
    return key.export_public_key().decode().strip()

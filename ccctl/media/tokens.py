"""Tokens for the control API and for each site's media endpoints, derived, never stored.

One random secret lives in ``$CCCTL_HOME/secret`` (mode 0600). The control token and every
site token are HMACs of it, so the registry holds no token at all: a site token is
``SITE.GEN.MAC`` and revoking it bumps the site's generation in the registry, which makes
every earlier token of that site fail. Deleting the secret file rotates everything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

from ccctl.errors import CcctlError
from ccctl.registry.db import Database

SECRET_FILE = "secret"


def load_secret(home: Path) -> bytes:
    """The installation's secret, created (0600) on first use; a weak or exposed one is refused.

    It is written to a temporary file and linked into place, so another process never reads
    a half-written secret.
    """
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{SECRET_FILE}.{os.getpid()}.{threading.get_ident()}"  # two threads may race too
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        raise CcctlError(f"{path} is readable by others; chmod 600 it (or delete it to rotate every token)")
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) < 32:
        raise CcctlError(f"{path} does not hold a 32-byte hex secret; delete it to make a new one (rotates every token)")
    return secret


def _mac(secret: bytes, message: str, length: int = 32) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()[:length]


def control_token(secret: bytes) -> str:
    """The bearer token of the control API (the CLI and the dashboard derive it too)."""
    return "ctl." + _mac(secret, "control", 48)


def check_control(secret: bytes, presented: str | None) -> bool:
    """True when ``presented`` is the control token."""
    return bool(presented) and hmac.compare_digest(control_token(secret).encode(), (presented or "").encode())


def generation(db: Database, site_id: str) -> int:
    """The site's current token generation (1 until first revoked)."""
    rows = db.query("SELECT generation FROM site_tokens WHERE site_id = ?", (site_id,))
    return int(rows[0][0]) if rows else 1


def site_token(secret: bytes, site_id: str, gen: int) -> str:
    """The token that joins as ``site_id`` (and only as it) at generation ``gen``."""
    return f"{site_id}.{gen}.{_mac(secret, f'site:{site_id}:{gen}')}"


def check_site(secret: bytes, db: Database, site_id: str, presented: str | None) -> bool:
    """True when ``presented`` is the current token of ``site_id``."""
    if not presented:
        return False
    return hmac.compare_digest(site_token(secret, site_id, generation(db, site_id)).encode(), presented.encode())


def revoke(db: Database, site_id: str) -> int:
    """Invalidate every token of ``site_id`` issued so far; return the new generation."""
    with db.transaction():
        new = generation(db, site_id) + 1
        db.execute("INSERT INTO site_tokens (site_id, generation) VALUES (?, ?) "
                   "ON CONFLICT (site_id) DO UPDATE SET generation = excluded.generation", (site_id, new))
    return new

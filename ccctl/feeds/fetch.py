"""Bytes of a feed's source: one file, a folder of dated files, or an http(s) URL.

A file is read between two ``fstat``s; if its size, modification time or inode changed
meanwhile it was being written, and the pull fails rather than keep half a file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ccctl.feeds.dates import day_in_name
from ccctl.feeds.spec import Document, FeedSpec

SUFFIXES = (".csv", ".xlsx", ".json")
MAX_BYTES = 256 * 1024 * 1024


@dataclass
class Fetched:
    """What a fetch brought: documents, or ``not_modified`` (HTTP 304), and cache validators."""

    documents: list[Document] = field(default_factory=list)
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None


def is_url(source: str) -> bool:
    """Whether a feed source is an http(s) URL."""
    return source.startswith(("http://", "https://"))


def safe_url(url: str) -> str:
    """A URL fit for messages and events: no user, password or query (they may carry keys)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


def read_stable(path: Path, during: Callable[[Path], None] | None = None) -> bytes:
    """A file's bytes, or ValueError if it changed while being read.

    ``during`` runs between the first ``fstat`` and the read; tests use it to change the
    file at exactly that point (a real write to a real file, not a mock).
    """
    with path.open("rb") as fh:
        before = os.fstat(fh.fileno())
        if before.st_size > MAX_BYTES:
            raise ValueError(f"{path.name} is larger than {MAX_BYTES // 2**20} MiB")
        if during is not None:
            during(path)
        body = fh.read()
        after = os.fstat(fh.fileno())
    try:
        now = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{path.name} was removed while being read") from None
    changed = (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) \
        or len(body) != before.st_size or now.st_ino != before.st_ino
    if changed:
        raise ValueError(f"{path.name} changed while being read (still being written?); try again")
    return body


def fetch_path(source: str, during: Callable[[Path], None] | None = None) -> Fetched:
    """Documents of a file, or of every data file of a folder in name order."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
        if not files:
            raise ValueError(f"no {', '.join(SUFFIXES)} files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise ValueError(f"no such file or folder: {path}")
    return Fetched([Document(p.name, read_stable(p, during), day_in_name(p.name)) for p in files])


async def fetch(spec: FeedSpec, etag: str | None = None, last_modified: str | None = None,
                during: Callable[[Path], None] | None = None) -> Fetched:
    """Fetch a feed's source; ValueError saying why it could not."""
    if is_url(spec.source):
        from ccctl.feeds.http import fetch_url

        return await fetch_url(spec, etag, last_modified)
    return fetch_path(spec.source, during)

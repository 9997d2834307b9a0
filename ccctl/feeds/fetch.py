"""Bytes of a feed's source: one file, a folder of dated files, or an http(s) URL.

A file is read between two ``fstat``s; if its size, modification time or inode changed
meanwhile it was being written, and the pull fails rather than keep half a file. A folder's
files are remembered by name, size and modification time (the feed's cursor): a pull reads
only those new or changed since the last good pull, and none means "not modified".
"""

from __future__ import annotations

import json
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
    cursor: str | None = None  # a folder's files as read: JSON {name: [size, mtime_ns]}


def is_url(source: str) -> bool:
    """Whether a feed source is an http(s) URL."""
    return source.startswith(("http://", "https://"))


def safe_url(url: str) -> str:
    """A URL fit for messages and events: no user, password or query (they may carry keys)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "…" if parts.query else "", ""))


def read_stable(path: Path, during: Callable[[Path], None] | None = None) -> bytes:
    """See ``read_signed``: the bytes alone."""
    return read_signed(path, during)[0]


def read_signed(path: Path, during: Callable[[Path], None] | None = None) -> tuple[bytes, list[int]]:
    """A file's bytes and its [size, mtime_ns], or ValueError if it changed while being read.

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
    return body, [before.st_size, before.st_mtime_ns]


def fetch_path(source: str, during: Callable[[Path], None] | None = None, cursor: str | None = None) -> Fetched:
    """Documents of a file, or of a folder's data files (in name order) new or changed since
    ``cursor``."""
    path = Path(source).expanduser()
    if path.is_file():
        return Fetched([Document(path.name, read_stable(path, during), day_in_name(path.name))])
    if not path.is_dir():
        raise ValueError(f"no such file or folder: {path}")
    files = sorted(p for p in path.iterdir()
                   if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"no {', '.join(SUFFIXES)} files in {path}")
    seen: dict[str, list[int]] = json.loads(cursor) if cursor else {}
    signatures = dict(seen)
    documents = []
    for p in files:
        stat = p.stat()
        if seen.get(p.name) == [stat.st_size, stat.st_mtime_ns]:
            continue
        body, signatures[p.name] = read_signed(p, during)
        documents.append(Document(p.name, body, day_in_name(p.name)))
    return Fetched(documents, not_modified=not documents, cursor=json.dumps(signatures, sort_keys=True))


async def fetch(spec: FeedSpec, etag: str | None = None, last_modified: str | None = None,
                during: Callable[[Path], None] | None = None, cursor: str | None = None) -> Fetched:
    """Fetch a feed's source; ValueError saying why it could not."""
    if is_url(spec.source):
        from ccctl.feeds.http import fetch_url

        return await fetch_url(spec, etag, last_modified)
    return fetch_path(spec.source, during, cursor)

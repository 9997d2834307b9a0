"""A feed's URL fetched with aiohttp: headers from a file, a timeout, conditional GET.

Anything but data is refused with the reason: an HTTP error status, an HTML page (a login
or error page served with 200), a body cut short, no answer within the timeout.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from ccctl.feeds.dates import day_in_name
from ccctl.feeds.fetch import MAX_BYTES, Fetched, safe_url
from ccctl.feeds.spec import Document, FeedSpec


def read_headers(path: str) -> dict[str, str]:
    """HTTP headers from a file of ``Name: value`` lines (a lone line is a bearer token).

    The values are secrets: they are sent, never printed, logged or stored.
    """
    try:
        text = Path(path).expanduser().read_text("utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read header file {path}: {exc.strerror}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) == 1 and ":" not in lines[0]:
        return {"Authorization": f"Bearer {lines[0]}"}
    headers = {}
    for n, line in enumerate(lines, start=1):
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header file {path}: line {n} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


async def _body(resp: aiohttp.ClientResponse, url: str) -> bytes:
    """The response body, refused past MAX_BYTES whether or not the length was announced."""
    if (resp.content_length or 0) > MAX_BYTES:
        raise ValueError(f"{url} sent {resp.content_length} bytes, more than {MAX_BYTES // 2**20} MiB")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_BYTES:
            raise ValueError(f"{url} sent more than {MAX_BYTES // 2**20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_url(spec: FeedSpec, etag: str | None, last_modified: str | None) -> Fetched:
    """GET the feed's URL; ``Fetched.not_modified`` on 304; ValueError on anything else bad.

    Redirects are not followed: the token would go to wherever the redirect points.
    """
    headers = read_headers(spec.header_file) if spec.header_file else {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s)
    url = safe_url(spec.source)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.get(spec.source, headers=headers, allow_redirects=False) as resp:
            if resp.status == 304:
                return Fetched(not_modified=True, etag=etag, last_modified=last_modified)
            if resp.status in (301, 302, 303, 307, 308):
                moved = safe_url(resp.headers.get("Location", "?"))
                raise ValueError(f"HTTP {resp.status} from {url} to {moved}: redirects are not followed "
                                 "(they would carry the token); give the final URL")
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status} {resp.reason or ''} from {url}".replace("  ", " "))
            body = await _body(resp, url)
            ctype = resp.content_type or ""
            new_etag = resp.headers.get("ETag")
            new_lm = resp.headers.get("Last-Modified")
    except TimeoutError:
        raise ValueError(f"no answer from {url} within {spec.timeout_s:g} s") from None
    except aiohttp.ClientPayloadError as exc:
        raise ValueError(f"the response from {url} was cut short ({exc})") from None
    except aiohttp.ClientError as exc:
        # Only the OS's reason: some of aiohttp's messages repeat the URL with its query.
        reason = getattr(getattr(exc, "os_error", None), "strerror", None) or type(exc).__name__
        raise ValueError(f"cannot fetch {url}: {reason}") from None
    head = body[:512].lstrip().lower()
    if ctype == "text/html" or head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        raise ValueError(f"{url} sent an HTML page, not data (HTTP 200, {ctype or 'no content type'})")
    name = urlsplit(spec.source).path.rsplit("/", 1)[-1] or url
    return Fetched([Document(name, body, day_in_name(name), ctype)], etag=new_etag, last_modified=new_lm)

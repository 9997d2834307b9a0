"""Requests in, errors out: how the server reads bodies and turns failures into HTTP answers.

Every route reads its body through :func:`read_text`, :func:`read_json_object` or
:func:`read_sdp`, which refuse what they cannot read with a :class:`BadInput` (400, or 413 /
415) instead of letting a decoder's exception escape. :func:`error_middleware` is the one
place where errors become answers: a :class:`~ccctl.errors.CcctlError` (``MediaError`` and
``BadInput`` are ones) is answered with its ``status`` and its message on one line; any
other exception is a 500 with one line, logged once (method and path, never headers, query
strings or bodies, which may hold tokens).

SDP is checked by a cheap line scan (:func:`check_sdp`) before any parser sees it: bounded
size, line count and line length, at most one audio and one video m-line (all we answer),
and a bounded number of candidates. An offer with a thousand bundled m-lines is refused in
microseconds instead of costing seconds of event loop and megabytes of answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from ccctl.errors import CcctlError, error_names
from ccctl.media.net import candidate_ok

log = logging.getLogger(__name__)

#: Largest SDP offer or trickle fragment read (a browser's offer is 3-10 KB).
MAX_SDP_BYTES = 32 * 1024
#: Most lines in one SDP (a browser's audio + video offer has 100-300).
MAX_SDP_LINES = 1000
#: Longest SDP line (fingerprints, fmtp and candidates stay under 300).
MAX_SDP_LINE = 1024
#: Most ICE candidates in one SDP (host, reflexive and relayed on a few interfaces).
MAX_CANDIDATES = 64
#: Largest JSON body of a control route.
MAX_JSON_BYTES = 64 * 1024
#: The media kinds we answer, each at most once.
MEDIA_KINDS = ("audio", "video")
#: Longest message in an error answer.
MAX_MESSAGE = 300

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadInput(CcctlError):
    """A request's body or parameters cannot be used (HTTP 400 unless ``status`` says otherwise)."""

    exit_code = 2
    status = 400


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    flat = "".join(c if c.isprintable() else " " for c in str(text).strip().split("\n", 1)[0])
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


# -- bodies ---------------------------------------------------------------------------------

async def read_body(request: web.Request, limit: int) -> bytes:
    """The body's bytes; 413 over ``limit`` (checked on Content-Length before reading)."""
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(f"body over {limit} bytes", status=413)
    body = await request.read()  # the app's client_max_size bounds a body without Content-Length
    if len(body) > limit:
        raise BadInput(f"body over {limit} bytes", status=413)
    return body


async def read_text(request: web.Request, limit: int) -> str:
    """The body as text: UTF-8 only (415 for another charset, 400 for bytes that are not UTF-8)."""
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise BadInput("only UTF-8 bodies are accepted", status=415)
    body = await read_body(request, limit)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"body is not UTF-8 (byte {exc.start})") from None


async def read_json_object(request: web.Request, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object ({} when there is none); 400 for anything else."""
    if not request.body_exists:
        return {}
    text = await read_text(request, limit)
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except RecursionError:
        raise BadInput("body is nested too deeply") from None
    except ValueError as exc:
        raise BadInput(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput("body must be a JSON object")
    return body


def check_sdp(text: str, *, offer: bool = True) -> None:
    """Refuse an SDP (offer, or trickle fragment with ``offer`` False) before any parser reads it.

    A scan of its lines: at most :data:`MAX_SDP_LINES` lines of :data:`MAX_SDP_LINE`
    characters, :data:`MAX_CANDIDATES` candidates, and (an offer) at most one audio and one
    video m-line and no other kind.
    """
    if len(text) > MAX_SDP_BYTES:
        raise BadInput(f"SDP over {MAX_SDP_BYTES} characters", status=413)
    lines = text.split("\n")
    if len(lines) > MAX_SDP_LINES:
        raise BadInput(f"SDP over {MAX_SDP_LINES} lines")
    kinds: list[str] = []
    candidates = 0
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_SDP_LINE:
            raise BadInput(f"SDP line {number} is over {MAX_SDP_LINE} characters")
        if line.startswith("m="):
            kinds.append(line[2:].split(" ", 1)[0])
        elif line.startswith("a=candidate:"):
            candidates += 1
            if offer and not candidate_ok(line[len("a=candidate:"):].strip()):
                raise BadInput(f"SDP line {number} is not a valid candidate")
    if candidates > MAX_CANDIDATES:
        raise BadInput(f"SDP with over {MAX_CANDIDATES} candidates")
    if not offer:
        return
    if not kinds:
        raise BadInput("the offer has no m-line")
    unknown = [k for k in kinds if k not in MEDIA_KINDS]
    if unknown or len(set(kinds)) != len(kinds):
        raise BadInput(f"an offer may have one audio and one video m-line only (this one has {len(kinds)}: "
                       f"{one_line(' '.join(kinds[:4]), 60)}{' ...' if len(kinds) > 4 else ''})")


async def read_sdp(request: web.Request, *, offer: bool = True) -> str:
    """An SDP body (``application/sdp``, or a trickle fragment), checked by :func:`check_sdp`."""
    text = await read_text(request, MAX_SDP_BYTES)
    check_sdp(text, offer=offer)
    return text


# -- errors ----------------------------------------------------------------------------------

def _where(request: web.Request) -> str:
    """Method and path for a log line: no query string (join links carry tokens), escaped."""
    return f"{request.method} {one_line(request.rel_url.raw_path, 200)}"


def error_middleware(extra_headers: Callable[[web.Request], dict[str, str]]) -> Any:
    """The middleware mapping errors to answers (see the module doc); ``extra_headers`` adds
    headers to every error answer of a request (CORS on the media routes)."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except CcctlError as exc:
            status = int(getattr(exc, "status", 500))
            headers = extra_headers(request)
            headers["Ccctl-Error"] = error_names(exc)  # the CLI exits with the same code as here
            if status == 503:
                headers["Retry-After"] = str(int(getattr(exc, "retry_after", 5)))
            if status >= 500 and not getattr(exc, "expected", False):  # an admission refusal is no fault
                log.warning("%s: %s: %s", _where(request), status, one_line(exc))
            return web.Response(status=status, text=one_line(exc) + "\n", headers=headers)
        except ConnectionError:
            raise  # the client went away: aiohttp deals with that
        except Exception as exc:
            log.error("%s: unexpected %s: %s", _where(request), type(exc).__name__, one_line(exc), exc_info=exc)
            return web.Response(status=500, text=f"internal error ({type(exc).__name__}); see the server log\n",
                                headers=extra_headers(request))

    return errors


class QuietProtocolErrors(logging.Filter):
    """On aiohttp's server logger: a request aiohttp itself cannot parse (a malformed header,
    a line too long) is logged as one line naming the error class, without the offending
    bytes (a bad ``Authorization`` line would otherwise land whole in serve.log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "unreadable HTTP request from %s: %s (%s)", (
                remote, type(exc).__name__, exc.code)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_protocol_errors() -> None:
    """Install :class:`QuietProtocolErrors` on aiohttp's server logger (once per process)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, QuietProtocolErrors) for f in logger.filters):
        logger.addFilter(QuietProtocolErrors())


class SafeAccessLogger(AbstractAccessLogger):
    """An access log line without query string or headers: ``remote METHOD /path status bytes ms``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %s %s %.1fms", request.remote, request.method,
                         one_line(request.rel_url.raw_path, 200), response.status, response.body_length, time * 1000)

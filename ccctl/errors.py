"""Every user-facing failure is a CcctlError; the CLI turns it into one line and an exit code,
and the server (``ccctl.media.webinput``) into one line and an HTTP status."""

from __future__ import annotations


class CcctlError(Exception):
    """A failure the operator can act on. ``exit_code`` is what the CLI exits with, ``status``
    what the server answers a request that ends in it with (``status=`` overrides it for one
    error, as in ``MediaError("shutting down", status=503)``)."""

    exit_code = 1
    status = 500

    def __init__(self, *args: object, status: int | None = None) -> None:
        super().__init__(*args)
        if status is not None:
            self.status = status


class UsageError(CcctlError):
    """Bad arguments or options (exit 2, like click's own usage errors)."""

    exit_code = 2
    status = 400


class ConfigError(CcctlError):
    """The configuration file or an environment variable is invalid."""

    exit_code = 2


class NotFound(CcctlError):
    """A site, unit or run named by the operator does not exist."""

    exit_code = 4
    status = 404


class RegistryError(CcctlError):
    """The registry could not be opened, migrated or written."""

    exit_code = 5
    status = 503


class ImportRejected(CcctlError):
    """An import file had bad rows; nothing was imported.

    ``problems`` holds ``(line, reason)`` pairs, line numbers as the operator sees them in
    the file (the header is line 1).
    """

    exit_code = 6
    status = 422

    def __init__(self, message: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.problems = problems


class UnitsMissing(CcctlError):
    """An operation needs administrative units that have not been loaded yet."""

    exit_code = 7
    status = 409


class Busy(CcctlError):
    """Another ccctl process holds the lock this operation needs."""

    exit_code = 8
    status = 503


class FeedError(ImportRejected):
    """A feed could not be pulled or its data was malformed; its last good data are kept.

    Like an import, a pull is all or nothing, so the bad rows travel in ``problems``.
    """

    exit_code = 10


class MediaError(CcctlError):
    """The media core could not do what was asked: a bad offer, no common codec, a session that
    needs renegotiating, a recording that cannot be written, a fan-out worker gone (exit 11;
    HTTP 400 unless ``status`` says otherwise, 503 for a core that is starting or stopping)."""

    exit_code = 11
    status = 400


class CertificateRefused(CcctlError):
    """The server's TLS certificate is not the one this installation trusts: another pinned
    fingerprint, an unknown authority or another name (exit 12). Nothing was sent to it."""

    exit_code = 12


class SeamBroken(CcctlError):
    """An installed aiortc, aioice or pylibsrtp is not shaped as ccctl's media paths need (a
    private name they reach into changed: see ``ccctl.media.seam``); the message names the
    library and its version (exit 13). Found at ``serve`` start, before any site joins."""

    exit_code = 13
    status = 503


def error_names(exc: CcctlError) -> str:
    """What a server sends in ``Ccctl-Error``: the error's class and its CcctlError ancestors,
    most specific first (``FloorRefused MediaError CcctlError``)."""
    return " ".join(k.__name__ for k in type(exc).__mro__ if issubclass(k, CcctlError))


def error_class(names: str) -> type[CcctlError]:
    """The class of an error a server named in ``Ccctl-Error`` (:func:`error_names`): the most
    specific one of this module that takes a message alone (``FloorRefused`` -> MediaError), so
    that the CLI exits with the same code as if the failure had happened in its own process;
    CcctlError when none is."""
    known: dict[str, type[CcctlError]] = {}
    pending: list[type[CcctlError]] = [CcctlError]
    while pending:
        kind = pending.pop()
        if kind.__module__ == __name__ and kind.__init__ is CcctlError.__init__:  # ImportRejected's problems stay there
            known.setdefault(kind.__name__, kind)
        pending.extend(kind.__subclasses__())
    for name in names.split():
        if name in known:
            return known[name]
    return CcctlError

"""Every user-facing failure is a CcctlError; the CLI turns it into one line and an exit code."""

from __future__ import annotations


class CcctlError(Exception):
    """A failure the operator can act on. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(CcctlError):
    """Bad arguments or options (exit 2, like click's own usage errors)."""

    exit_code = 2


class ConfigError(CcctlError):
    """The configuration file or an environment variable is invalid."""

    exit_code = 2


class NotFound(CcctlError):
    """A site, unit or run named by the operator does not exist."""

    exit_code = 4


class RegistryError(CcctlError):
    """The registry could not be opened, migrated or written."""

    exit_code = 5


class ImportRejected(CcctlError):
    """An import file had bad rows; nothing was imported.

    ``problems`` holds ``(line, reason)`` pairs, line numbers as the operator sees them in
    the file (the header is line 1).
    """

    exit_code = 6

    def __init__(self, message: str, problems: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.problems = problems


class UnitsMissing(CcctlError):
    """An operation needs administrative units that have not been loaded yet."""

    exit_code = 7


class Busy(CcctlError):
    """Another ccctl process holds the lock this operation needs."""

    exit_code = 8


class FeedError(ImportRejected):
    """A feed could not be pulled or its data was malformed; its last good data are kept.

    Like an import, a pull is all or nothing, so the bad rows travel in ``problems``.
    """

    exit_code = 10

"""What a feed is: its definition as the operator gave it, and the rows its parsers produce."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ccctl.errors import UsageError

FORMATS = ("auto", "csv", "xlsx", "json", "ncsc")
LEVELS = ("province", "district", "commune")
SCHEMES = ("2021", "2025")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class FeedSpec:
    """One feed: where its data come from, how to read them, and what to watch in them.

    ``header_file`` names a file holding HTTP header lines (a token): the registry keeps the
    path, never the secret. ``keep_days`` is the history's retention behind the newest day.
    """

    name: str
    source: str
    every_s: float = 300.0
    format: str = "auto"
    level: str = "province"
    scheme: str = "2021"
    unit_column: str | None = None
    alerts: tuple[str, ...] = ()
    header_file: str | None = None
    timeout_s: float = 10.0
    keep_days: int = 400

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"bad feed name {self.name!r}: use lowercase letters, digits, - and _")
        if self.format not in FORMATS:
            raise UsageError(f"unknown feed format {self.format!r}: use {', '.join(FORMATS)}")
        if self.level not in LEVELS:
            raise UsageError(f"unknown level {self.level!r}: use {', '.join(LEVELS)}")
        if self.scheme not in SCHEMES:
            raise UsageError(f"unknown scheme {self.scheme!r}: use 2021 or 2025")
        if self.scheme == "2025" and self.level == "district":
            raise UsageError("the 2025 scheme has no districts: use --level province or commune")
        if self.every_s <= 0 or self.timeout_s <= 0 or self.keep_days <= 0:
            raise UsageError("--every, --timeout and --keep-days must be positive")

    def options_json(self) -> str:
        """The options stored as one JSON column."""
        return json.dumps({"header_file": self.header_file, "timeout_s": self.timeout_s,
                           "keep_days": self.keep_days}, sort_keys=True)

    def record(self) -> dict[str, Any]:
        """Plain data for listings."""
        data = asdict(self)
        data["alerts"] = list(self.alerts)
        return data


@dataclass
class RawRow:
    """One row as read: its line in the source, the unit as written, the names of the units
    above it when the source gives them, its day if known, and indicator -> cell text."""

    line: int
    unit: str
    parents: dict[str, str] = field(default_factory=dict)
    day: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # the file or URL the row came from, when a pull reads several


@dataclass(frozen=True)
class Document:
    """The bytes of one file or response, with the day its name gives (dated files)."""

    name: str
    body: bytes
    day: str | None = None
    content_type: str = ""

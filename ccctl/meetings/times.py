"""Local wall-clock times and check offsets as operators write them, to and from UTC epochs."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ccctl.errors import UsageError

_OFFSET = re.compile(r"^(-)?(\d{1,5})([smh])$")
_UNIT = {"s": 1, "m": 60, "h": 3600}
_FORMATS = ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d")


def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (IANA, e.g. Asia/Ho_Chi_Minh); UsageError if unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"unknown time zone {name!r} (an IANA name such as Asia/Ho_Chi_Minh)") from None


def parse_local(text: str, tz: str) -> float:
    """``2026-12-05 08:00`` read in zone ``tz`` -> UTC epoch seconds; UsageError if malformed."""
    cleaned = text.strip()
    for fmt in _FORMATS:
        try:
            naive = datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=zone(tz)).timestamp()
    raise UsageError(f"bad time {text!r} (write it as YYYY-MM-DD HH:MM, local to {tz})")


def local_text(ts: float | None, tz: str) -> str | None:
    """UTC epoch seconds -> ``YYYY-MM-DD HH:MM:SS`` in zone ``tz`` (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, zone(tz)).strftime("%Y-%m-%d %H:%M:%S")


def parse_offsets(text: str) -> list[int]:
    """``-60m,-15m`` -> ``[-3600, -900]`` (seconds before the start, sorted, unique)."""
    offsets: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = _OFFSET.match(part)
        if not match:
            raise UsageError(f"bad check offset {part!r} (like -60m, -15m, -90s or -2h)")
        value = int(match.group(2)) * _UNIT[match.group(3)]
        if value and not match.group(1):
            raise UsageError(f"check offset {part!r} is after the start; pre-checks come before it (-{part})")
        offsets.add(-value)
    if not offsets:
        raise UsageError("no check offset given (like -60m,-15m)")
    return sorted(offsets)


def offset_text(offset_s: int) -> str:
    """-900 -> ``-15m``; -90 -> ``-90s``; -7200 -> ``-2h``."""
    sign = "-" if offset_s < 0 else ""
    value = abs(offset_s)
    for unit in ("h", "m"):
        if value and value % _UNIT[unit] == 0:
            return f"{sign}{value // _UNIT[unit]}{unit}"
    return f"{sign}{value}s"

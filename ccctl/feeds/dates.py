"""Days as the sources write them (``d/m/yyyy``, ISO, Excel dates), checked to be real days."""

from __future__ import annotations

import datetime as dt
import re

VN = dt.timezone(dt.timedelta(hours=7))
_DMY = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_YMD = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_IN_NAME = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
EARLIEST = dt.date(2000, 1, 1)


def today_vn() -> dt.date:
    """Today's date in Vietnam (UTC+7), the day the sources report for."""
    return dt.datetime.now(VN).date()


def parse_day(value: object, today: dt.date | None = None) -> str:
    """The ISO day of a cell or key; ValueError naming what is wrong with it.

    A day must exist (no 31/2), not be before 2000 and not after tomorrow in Vietnam.
    """
    if isinstance(value, dt.datetime):
        day = value.date()
    elif isinstance(value, dt.date):
        day = value
    else:
        text = str(value).strip()
        text = text.split(" ")[0].split("T")[0] if len(text) > 10 else text
        m = _DMY.match(text)
        try:
            if m:
                day = dt.date(int(m[3]), int(m[2]), int(m[1]))
            elif (m := _YMD.match(text)):
                day = dt.date(int(m[1]), int(m[2]), int(m[3]))
            else:
                raise ValueError(f"bad date {str(value)!r} (use d/m/yyyy or yyyy-mm-dd)")
        except ValueError as exc:
            if str(exc).startswith("bad date"):
                raise
            raise ValueError(f"bad date {str(value)!r}: {exc}") from None
    limit = (today or today_vn()) + dt.timedelta(days=1)
    if day > limit:
        raise ValueError(f"date {day.isoformat()} is in the future")
    if day < EARLIEST:
        raise ValueError(f"date {day.isoformat()} is before 2000")
    return day.isoformat()


def day_in_name(name: str) -> str | None:
    """The ISO day a dated file's name carries (``cases-2021-10-15.csv``, ``20211015.json``)."""
    m = _IN_NAME.search(name)
    if not m:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        return None

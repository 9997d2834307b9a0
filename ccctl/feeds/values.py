"""Indicator names and cell values: counts are finite and not negative, risk levels are 1-4.

Risk levels follow Resolution 128/NQ-CP and Decision 4800/QĐ-BYT (October 2021): 1 low or
"new normal" (green), 2 medium (yellow), 3 high (orange), 4 very high (red). They are a
categorical indicator: stored as their number, shown with their name, never summed.
"""

from __future__ import annotations

import math
import re

from ccctl.textfold import fold

RISK = "risk_level"
RISK_NAMES = {1: "low (green)", 2: "medium (yellow)", 3: "high (orange)", 4: "very high (red)"}
_RISK_WORDS = {
    "1": 1, "cap 1": 1, "low": 1, "green": 1, "xanh": 1, "thap": 1, "nguy co thap": 1,
    "new normal": 1, "binh thuong moi": 1,
    "2": 2, "cap 2": 2, "medium": 2, "yellow": 2, "vang": 2, "trung binh": 2, "nguy co trung binh": 2,
    "3": 3, "cap 3": 3, "high": 3, "orange": 3, "cam": 3, "cao": 3, "nguy co cao": 3,
    "4": 4, "cap 4": 4, "very high": 4, "red": 4, "do": 4, "rat cao": 4, "nguy co rat cao": 4,
}
# Headers as Vietnamese sheets write them, folded, to the indicator names ccctl uses.
_ALIASES = {
    "ca moi": "new_cases", "so ca moi": "new_cases", "ca nhiem moi": "new_cases",
    "tong so ca": "total_cases", "tong ca": "total_cases", "ca nhiem": "total_cases",
    "tu vong": "deaths", "so ca tu vong": "deaths", "tu vong moi": "new_deaths",
    "khoi": "recovered", "khoi benh": "recovered", "dang dieu tri": "active",
    "dan so": "population", "cap do": RISK, "cap do dich": RISK, "muc do": RISK,
    "muc nguy co": RISK, "cap do nguy co": RISK, "risk": RISK, "risk level": RISK, "level": RISK,
}
_WORD = re.compile(r"[^a-z0-9]+")


def indicator_name(header: str) -> str:
    """A stable snake_case indicator name for a column header or long-table cell."""
    folded = fold(header)
    return _ALIASES.get(folded) or _WORD.sub("_", folded).strip("_")


def parse_value(indicator: str, cell: object) -> float | None:
    """The number a cell holds (None when empty); ValueError saying what is wrong with it."""
    if cell is None:
        return None
    if isinstance(cell, bool):
        raise ValueError(f"{indicator}: {cell!r} is not a number")
    if indicator == RISK:
        return float(risk_level(cell))
    if isinstance(cell, (int, float)):
        number = float(cell)
    elif isinstance(cell, str) and cell.isascii() and cell.isdigit():  # the common case, parsed directly
        return float(cell)
    else:
        text = str(cell).strip().replace("\u00a0", "").replace(" ", "")
        if not text or text in ("-", "—"):
            return None
        # 1.234.567 and 1,234,567 as thousands separators; a single comma as decimal point.
        if re.fullmatch(r"-?\d{1,3}([.,]\d{3})+", text):
            text = re.sub(r"[.,]", "", text)
        else:
            text = text.replace(",", ".")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{indicator}: {str(cell)!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{indicator}: {cell!r} is not a finite number")
    if number < 0:
        raise ValueError(f"{indicator}: negative count {cell!r}")
    return number


def risk_level(cell: object) -> int:
    """A risk level 1-4 from its number or its name (Vietnamese or English, or its colour)."""
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        if float(cell) in (1.0, 2.0, 3.0, 4.0):
            return int(cell)
        raise ValueError(f"{RISK}: {cell!r} is not a level 1-4")
    level = _RISK_WORDS.get(fold(str(cell)).removeprefix("level ").strip())
    if level is None:
        raise ValueError(f"{RISK}: {str(cell)!r} is not a level 1-4 (or low/medium/high/very high)")
    return level


def show_value(indicator: str, value: float | None) -> object:
    """How a stored value reads: integers without ``.0``, risk levels with their name."""
    if value is None:
        return None
    if indicator == RISK:
        return f"{int(value)} {RISK_NAMES.get(int(value), '')}".strip()
    return int(value) if float(value).is_integer() else round(value, 2)

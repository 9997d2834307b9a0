"""Diacritic- and case-folding of Vietnamese text, so `dong thap` finds `Đồng Tháp`.

Folding keeps only lowercase ASCII letters, digits and single spaces: combining marks are
dropped after NFD decomposition, and `đ`/`Đ` (a letter of its own, not a mark) becomes `d`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_SPACES = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Return ``text`` lowercased, without diacritics, punctuation collapsed to spaces."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _SPACES.sub(" ", stripped.lower()).strip()


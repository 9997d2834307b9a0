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


# Admin-type prefixes as written before names, longest first; matched with their diacritics
# (so "Quản Bạ" keeps its first word) and, for text typed without any, in plain ASCII.
_UNIT_PREFIXES = ("thành phố", "thị trấn", "thị xã", "tỉnh", "quận", "huyện", "phường", "xã", "tp.", "tp")
_UNIT_PREFIXES_ASCII = ("thanh pho", "thi tran", "thi xa", "tinh", "quan", "huyen", "phuong", "xa", "tp")
_LEADING_ZEROS = re.compile(r"\b0+(?=\d)")


@lru_cache(maxsize=65536)
def fold_name(text: str) -> str:
    """``fold`` for unit names as real sheets spell them: composed or decomposed Unicode,
    Icelandic ``Ð`` typed for ``Đ``, either tone-mark placement (Hoà/Hòa), any dash or
    spacing, and numbers with leading zeros (``Phường 01`` is ``Phường 1``)."""
    text = text.replace("Ð", "Đ").replace("ð", "đ")
    return _LEADING_ZEROS.sub("", fold(text))


def strip_unit_prefix(text: str) -> str | None:
    """The folded name without its leading admin type (Tỉnh, Thành phố, TP., Quận, Huyện,
    Thị xã, Thị trấn, Phường, Xã), or None when it starts with none of them."""
    lowered = unicodedata.normalize("NFC", text).strip().lower()
    for prefix in _UNIT_PREFIXES_ASCII if lowered.isascii() else _UNIT_PREFIXES:
        if lowered.startswith(prefix):
            rest = lowered[len(prefix):]
            if prefix.endswith(".") or not rest or not rest[0].isalnum():
                stripped = fold_name(rest)
                return stripped or None
    return None


_TONES = frozenset("\u0300\u0301\u0303\u0309\u0323")  # grave, acute, tilde, hook above, dot below


@lru_cache(maxsize=65536)
def tone_fold(text: str) -> str:
    """Lowercase text that keeps its diacritics but not where the tone mark sits: ``Hoà`` and
    ``Hòa`` are one, ``Sa Pa`` and ``Sa Pả`` two (for names that ``fold`` makes equal)."""
    decomposed = unicodedata.normalize("NFD", text.replace("Ð", "Đ").replace("ð", "đ").lower())
    words = []
    for word in re.split(r"[^\w\u0300-\u036f]+", decomposed):
        if word:
            tones = "".join(sorted(ch for ch in word if ch in _TONES))
            words.append(_LEADING_ZEROS.sub("", "".join(ch for ch in word if ch not in _TONES)) + tones)
    return " ".join(words)

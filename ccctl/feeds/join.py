"""Unit names and codes as sources write them, joined to the official units of one scheme.

A GSO code joins directly (leading zeros optional). A name joins by ``fold_name``: case,
diacritics, either tone-mark placement, decomposed Unicode, dashes and spacing do not
matter; the full name with its type (``Xã Tân Phong``) is tried first, then the name with
any type prefix dropped (``TP. Hồ Chí Minh``). Where several units share a name, the
source's province or district column decides, then the marks themselves (``Sa Pa`` is not
``Sa Pả``, wherever the tone mark sits); otherwise the row is reported as ambiguous.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from ccctl.textfold import fold_name, strip_unit_prefix, tone_fold

CODE_WIDTH = {"province": 2, "district": 3, "commune": 5}
ALIASES = {"hcm": "ho chi minh", "tphcm": "ho chi minh", "sai gon": "ho chi minh", "hn": "ha noi"}


class Unit(NamedTuple):
    """One official unit as the joiner needs it (a tuple: a country's worth is built per pull)."""

    code: str
    name: str
    full_name: str
    level: str
    province_code: str
    district_code: str | None


class UnitJoiner:
    """Joins unit cells of one level and scheme; built once per pull from the registry's units."""

    def __init__(self, level: str, scheme: str, units: Iterable[Unit], above: Iterable[Unit] = ()) -> None:
        self.level = level
        self.scheme = scheme
        self.by_code: dict[str, Unit] = {}
        self.by_full: dict[str, list[Unit]] = defaultdict(list)
        self.by_name: dict[str, list[Unit]] = defaultdict(list)
        for u in units:
            self.by_code[u.code] = u
            self.by_full[fold_name(u.full_name)].append(u)
            self.by_name[fold_name(u.name)].append(u)
        # Units above (provinces, districts) to read a parent column: code -> unit, name -> units.
        self.parents = {lvl: UnitJoiner(lvl, scheme, [u for u in above if u.level == lvl])
                        for lvl in {u.level for u in above}} if above else {}
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], Unit | str] = {}

    def candidates(self, text: str) -> list[Unit]:
        """Every unit a cell may name (empty when none)."""
        cell = text.strip()
        if cell.isdigit():
            unit = self.by_code.get(cell.zfill(CODE_WIDTH[self.level]))
            return [unit] if unit else []
        key = fold_name(cell)
        if key in self.by_full:
            return self.by_full[key]
        if key in self.by_name:
            return self.by_name[key]
        stripped = strip_unit_prefix(cell)
        for k in (stripped, ALIASES.get(stripped or key)):
            if k and k in self.by_name:
                return self.by_name[k]
        return []

    def join(self, text: str, parents: dict[str, str] | None = None) -> Unit | str:
        """The unit a cell names, or the reason it names none (or several)."""
        ctx = tuple(sorted((parents or {}).items()))
        hit = self._cache.get((text, ctx))
        if hit is None:
            hit = self._join(text, parents or {})
            self._cache[(text, ctx)] = hit
        return hit

    def _join(self, text: str, parents: dict[str, str]) -> Unit | str:
        found = self.candidates(text)
        if not found:
            kind = "code" if text.strip().isdigit() else "name"
            return f"no {self.level} of scheme {self.scheme} has the {kind} {text.strip()!r}"
        for lvl, cell in parents.items():
            joiner = self.parents.get(lvl)
            if joiner is None:
                continue
            above = {u.code for u in joiner.candidates(cell)}
            field = "province_code" if lvl == "province" else "district_code"
            narrowed = [u for u in found if getattr(u, field) in above]
            if not narrowed:
                return f"no {self.level} named {text.strip()!r} in {lvl} {cell!r}"
            found = narrowed
        if len(found) > 1 and not text.isascii():
            # Names that fold alike (Sa Pa, Sa Pả) differ in their marks, wherever the tone sits;
            # text typed without any marks cannot tell them apart.
            exact = tone_fold(text)
            same = [u for u in found if exact in (tone_fold(u.full_name), tone_fold(u.name))
                    or exact.endswith(" " + tone_fold(u.name))]
            found = same or found
        if len(found) > 1:
            where = ", ".join(f"{u.code} {u.full_name}" for u in found[:4])
            return (f"{len(found)} {self.level}s are named {text.strip()!r} ({where}); "
                    "add a province or district column, or use codes")
        return found[0]

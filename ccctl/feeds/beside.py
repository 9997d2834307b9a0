"""A feed's newest indicators beside another per-unit table (the roll-call report): the
command room reads share ready beside new cases on one line per province.

The table's units are those of the registry's sites, in their scheme (2021 or 2025); the
feed may be in the other one. They line up through the units map (``units map``):
- same scheme: by code;
- a 2021 feed beside 2025 sites: the feed is summed into the 2025 units first (a 2021
  province or district counts in the 2025 province most of its communes went to);
- a 2025 feed beside 2021 sites: each 2021 unit shows the figures of the 2025 province it
  went to, and a ``feed_unit`` column names that province (``96 Tỉnh Cà Mau (2025)``), since several 2021 rows may show
  the figures of one larger 2025 province.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ccctl.errors import UnitsMissing, UsageError
from ccctl.feeds.values import show_value
from ccctl.feeds.views import indicator_table
from ccctl.registry import feeds as store
from ccctl.registry.db import Database

if TYPE_CHECKING:
    import pandas as pd


def _row_scheme(schemes: set[str], feed_scheme: str) -> str:
    """The scheme of one table row from the schemes of its sites (the feed's when mixed or none)."""
    return next(iter(schemes)) if len(schemes) == 1 else feed_scheme


def with_feed(frame: pd.DataFrame, db: Database, feed: str, by: str = "province") -> pd.DataFrame:
    """``frame`` (with a ``{by}_code`` column, codes of the registry's sites) and one more
    column per indicator of ``feed``, its newest values summed up to ``by`` in the sites'
    scheme (see above); units the feed does not cover are left empty."""
    import pandas as pd

    spec, _ = store.get_feed(db, feed)
    codes = [str(c) for c in frame[f"{by}_code"]]
    schemes = store.site_schemes(db, by)
    row_schemes = [_row_scheme(schemes.get(code, set()), spec.scheme) for code in codes]
    tables = {}
    for scheme in sorted(set(row_schemes) | {spec.scheme}):
        if scheme == "2021" and spec.scheme == "2025":
            continue  # looked up below, per 2021 unit
        tables[scheme] = indicator_table(db, feed, by, scheme)
    values: list[dict[str, float]] = []
    feed_units: list[str | None] = []
    if "2021" in row_schemes and spec.scheme == "2025":
        if by != "province":
            raise UsageError("a 2025 feed beside 2021 sites lines up by province only (the 2025 scheme has no districts)")
        moved = store.successors_2025(db, by)
        if not moved:
            raise UnitsMissing("the 2021 -> 2025 mapping is not loaded; run: ccctl units load --scheme 2025")
        names = {code: place[0] for code, place in store.unit_places(db, "2025", by).items()}
    for code, scheme in zip(codes, row_schemes, strict=True):
        if scheme == "2021" and spec.scheme == "2025":
            target = moved[code][1] if code in moved else None
            values.append(tables["2025"].get(target, {}) if target else {})
            feed_units.append(f"{target} {names.get(target, '')} (2025)" if target else None)
        else:
            values.append(tables[scheme].get(code, {}))
            feed_units.append(None)
    indicators = sorted({i for table in tables.values() for row in table.values() for i in row})
    out = frame.copy()
    if any(u is not None for u in feed_units):
        out["feed_unit"] = pd.Series(feed_units, index=out.index, dtype=object)
    for indicator in indicators:
        column = indicator if indicator not in out.columns else f"{feed}_{indicator}"
        # object dtype: a unit without data stays None (JSON null), not NaN.
        out[column] = pd.Series([show_value(indicator, row.get(indicator)) for row in values],
                                index=out.index, dtype=object)
    return out

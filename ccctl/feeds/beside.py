"""A feed's newest indicators beside another per-unit table (the roll-call report): the
command room reads share ready beside new cases on one line per province."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ccctl.feeds.values import show_value
from ccctl.feeds.views import indicator_table
from ccctl.registry.db import Database

if TYPE_CHECKING:
    import pandas as pd


def with_feed(frame: pd.DataFrame, db: Database, feed: str, by: str = "province") -> pd.DataFrame:
    """``frame`` (with a ``{by}_code`` column) and one more column per indicator of ``feed``,
    its newest values summed up to ``by``; units the feed does not cover are left empty."""
    import pandas as pd

    table = indicator_table(db, feed, by)
    indicators = sorted({i for values in table.values() for i in values})
    out = frame.copy()
    codes = out[f"{by}_code"].astype(str)
    for indicator in indicators:
        column = indicator if indicator not in out.columns else f"{feed}_{indicator}"
        # object dtype: a unit without data stays None (JSON null), not NaN.
        out[column] = pd.Series([show_value(indicator, table.get(code, {}).get(indicator)) for code in codes],
                                index=out.index, dtype=object)
    return out

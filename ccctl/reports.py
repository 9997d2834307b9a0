"""Roll-call results as pandas frames: counts and share ready per province or district.

No printing here: the shell hands the frame's records to ``ccctl.output`` or writes xlsx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccctl.errors import UsageError
from ccctl.models import CheckState

if TYPE_CHECKING:
    import pandas as pd

DOWN_STATES = [s.value for s in CheckState if s.is_down]


def rollcall_frame(results: list[dict[str, Any]], by: str = "province") -> pd.DataFrame:
    """Per-province (or district) counts by state and share ready, worst first."""
    import pandas as pd

    if by not in ("province", "district"):
        raise UsageError("--by takes province or district")
    frame = pd.DataFrame.from_records(results, columns=["site_id", "province_code", "province_name",
                                                        "district_code", "district_name", "state"])
    keys = [f"{by}_code", f"{by}_name"] if by == "province" else \
        ["province_code", "province_name", "district_code", "district_name"]
    frame[keys] = frame[keys].fillna("")
    counts = pd.crosstab([frame[k] for k in keys], frame["state"]) if len(frame) else pd.DataFrame()
    for state in CheckState:
        if state.value not in counts.columns:
            counts[state.value] = 0
    counts = counts[[s.value for s in CheckState]]
    out = counts.reset_index() if len(counts) else pd.DataFrame(columns=keys + [s.value for s in CheckState])
    out.columns = [str(c).lower() for c in out.columns]
    lower_down = [s.lower() for s in DOWN_STATES]
    out["sites"] = out[[s.value.lower() for s in CheckState]].sum(axis=1)
    out["down"] = out[lower_down].sum(axis=1)
    out["ready_pct"] = ((out["ok"] + out["degraded"]) * 100.0 / out["sites"].where(out["sites"] > 0)).round(1)
    out = out.sort_values(["ready_pct", "down"], ascending=[True, False], kind="stable")
    columns = keys + ["sites", "ok", "degraded", "down"] + lower_down + ["ready_pct"]
    return out[columns].reset_index(drop=True)


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain Python records (ints, floats, strings) of a frame, for JSON and tables."""
    records: list[dict[str, Any]] = []
    for row in frame.to_dict("records"):
        records.append({str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return records

"""The shape the national COVID-19 data API published in 2021, to rows.

``/api/v3/covid/provinces``: a list of provinces (bare, or under ``data``), each with its
figures as of ``last_updated`` (population, new and total cases, deaths, recovered, active,
7-day averages) and its daily series ``case_by_day`` / ``death_by_day`` keyed ``d/m/yyyy``.
``/api/v3/vaccine/province/{id}``: one province's doses by day. Provinces are joined by
name: the API's own ids are not GSO codes.
"""

from __future__ import annotations

from typing import Any

from ccctl.feeds.spec import Document, RawRow

# API field -> indicator, for the figures as of last_updated.
SNAPSHOT = {
    "population": "population", "new_cases": "new_cases", "total_cases": "total_cases",
    "new_deaths": "new_deaths", "deaths": "deaths", "recovered": "recovered", "active": "active",
    "avg7_cases": "avg7_cases", "avg7_deaths": "avg7_deaths", "risk_level": "risk_level",
}
SERIES = {"case_by_day": "new_cases", "death_by_day": "new_deaths"}
DOSES = {"first_dose": "first_doses", "second_dose": "second_doses", "total_doses": "doses"}


def is_ncsc(data: Any) -> bool:
    """Whether parsed JSON has the API's shape (a province list with series, or doses)."""
    if isinstance(data, dict) and "doses_by_day" in data:
        return True
    items = data.get("data") if isinstance(data, dict) else data
    return isinstance(items, list) and bool(items) and isinstance(items[0], dict) and "case_by_day" in items[0]


def parse_ncsc(data: Any, doc: Document) -> list[RawRow]:
    """Rows of one API document; ValueError when it is not the API's shape.

    Each row's ``line`` is the province's position in the list (1-based) so a problem can
    be found in the document.
    """
    if isinstance(data, dict) and "doses_by_day" in data:
        return _doses(data, doc)
    items = data.get("data") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError("not the /api/v3/covid/provinces shape (no list of provinces)")
    rows: list[RawRow] = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not item.get("name"):
            raise ValueError(f"province {n}: no name")
        name = str(item["name"])
        updated = item.get("last_updated") or (data.get("last_updated") if isinstance(data, dict) else None)
        if updated is None:
            raise ValueError(f"province {n} ({name}): no last_updated")
        snapshot = {ind: item[key] for key, ind in SNAPSHOT.items() if key in item}
        if snapshot:
            rows.append(RawRow(line=n, unit=name, day=updated, values=snapshot, where=doc.name))
        for key, indicator in SERIES.items():
            series = item.get(key) or {}
            if not isinstance(series, dict):
                raise ValueError(f"province {n} ({name}): {key} is not an object keyed d/m/yyyy")
            for day, value in series.items():
                rows.append(RawRow(line=n, unit=name, day=day, values={indicator: value}, where=doc.name))
    return rows


def _doses(data: dict[str, Any], doc: Document) -> list[RawRow]:
    name = data.get("name")
    if not name:
        raise ValueError("vaccine document without a province name")
    days = data["doses_by_day"]
    if not isinstance(days, dict):
        raise ValueError("doses_by_day is not an object keyed d/m/yyyy")
    rows = []
    for day, doses in days.items():
        if not isinstance(doses, dict):
            raise ValueError(f"doses_by_day[{day!r}] is not an object")
        values = {ind: doses[key] for key, ind in DOSES.items() if key in doses}
        rows.append(RawRow(line=1, unit=str(name), day=day, values=values, where=doc.name))
    return rows

"""The edges table on both backends: add, list, get, remove; the region as a site filter."""

from __future__ import annotations

import pytest

from ccctl.errors import NotFound, UsageError
from ccctl.registry import open_registry
from ccctl.registry.edges import Edge, add_edge, get_edge, list_edges, remove_edge
from ccctl.registry.sites import add_site, select_sites


def test_edges_on_each_backend(units_db_url: str) -> None:
    with open_registry(units_db_url) as db:
        add_site(db, {"id": "bn-1", "name": "Bến Nghé", "unit_code": "26740"})
        add_site(db, {"id": "hk-1", "name": "Hoàn Kiếm", "unit_code": "00070"})
        add_edge(db, Edge("hcm-1", "http://10.0.0.2:8088/janus", "/keys/hcm", {"province": "ho chi minh"}, 500))
        add_edge(db, Edge("all", "http://10.0.0.3:8088/janus", "/keys/all"))
        assert [e.name for e in list_edges(db)] == ["all", "hcm-1"]
        hcm = get_edge(db, "hcm-1")
        assert (hcm.capacity, hcm.record()["region"]) == (500, "province=ho chi minh")
        assert [s.id for s in select_sites(db, hcm.site_filter())] == ["bn-1"]
        assert sorted(s.id for s in select_sites(db, get_edge(db, "all").site_filter())) == ["bn-1", "hk-1"]
        with pytest.raises(UsageError, match="exists already"):
            add_edge(db, Edge("all", "http://10.0.0.3:8088/janus", "/keys/all"))
        with pytest.raises(UsageError, match="bad edge name"):
            add_edge(db, Edge("Bad Name", "http://10.0.0.3:8088/janus", "/keys/all"))
        remove_edge(db, "all")
        with pytest.raises(NotFound):
            remove_edge(db, "all")
        assert [e.name for e in list_edges(db)] == ["hcm-1"]

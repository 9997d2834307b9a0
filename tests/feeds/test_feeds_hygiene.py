"""The feeds core and the light ``feed`` commands load no UI, media or pandas."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_import_hygiene import HEAVY, _loaded


@pytest.mark.parametrize("module", ["ccctl.feeds.pull", "ccctl.feeds.views", "ccctl.feeds.poller", "ccctl.registry.feeds"])
def test_feeds_core_imports_nothing_heavy(module: str) -> None:
    assert not _loaded(f"import {module}") & set(HEAVY)


@pytest.mark.parametrize("argv", [["feed", "list", "--json"], ["feed", "show", "x", "--json"]])
def test_feed_listings_load_no_ui_media_or_pandas(argv: list[str], tmp_path: Path) -> None:
    code = (f"import os\nos.environ['CCCTL_HOME'] = {str(tmp_path)!r}\n"
            "from ccctl.cli import cli\n"
            f"try:\n    cli.main(args={argv!r}, prog_name='ccctl', standalone_mode=False)\nexcept BaseException:\n    pass\n")
    assert not _loaded(code) & {"textual", "rich", "aiortc", "av", "pandas", "asyncssh"}

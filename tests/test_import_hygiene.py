"""The core and the light commands never load the UI or media libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("textual", "rich", "aiortc", "av", "pandas", "click")
CORE = ["ccctl.models", "ccctl.config", "ccctl.errors", "ccctl.textfold", "ccctl.output", "ccctl.registry",
        "ccctl.registry.units", "ccctl.registry.sites", "ccctl.registry.schema",
        "ccctl.meetings.scheduler", "ccctl.meetings.printable", "ccctl.registry.meetings",
        "ccctl.feeds.pull", "ccctl.feeds.views", "ccctl.registry.feeds"]


def _loaded(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_shell_or_heavy_library(module: str) -> None:
    loaded = _loaded(f"import {module}")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


@pytest.mark.parametrize("argv", [["--help"], ["sites", "list", "--help"], ["sites", "list", "--format", "json"],
                                  ["rollcall", "list", "--format", "json"], ["sim", "status", "--json"],
                                  ["broadcast", "links", "--json"]])
def test_light_commands_load_no_ui_or_media(argv: list[str], tmp_path: object) -> None:
    code = ("import os, sys\nos.environ['CCCTL_HOME'] = sys.argv[1] if len(sys.argv) > 1 else os.environ.get('CCCTL_HOME', '')\n"
            "from ccctl.cli import cli\n"
            f"try:\n    cli.main(args={argv!r}, prog_name='ccctl', standalone_mode=False)\nexcept SystemExit:\n    pass\n")
    loaded = _loaded(f"import os\nos.environ['CCCTL_HOME'] = {str(tmp_path)!r}\n" + code)
    assert not loaded & {"textual", "rich", "aiortc", "av", "pandas", "asyncssh"}, loaded

"""``ccctl dashboard`` as a command: registered, its options, and Textual loaded only when it runs."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import Ccctl


def test_dashboard_command_help(ccctl: Ccctl) -> None:
    result = ccctl("dashboard", "--help")
    assert result.exit_code == 0
    assert "--readonly" in result.stdout and "--wall" in result.stdout and "--poll" in result.stdout
    assert "dashboard" in ccctl("--help").stdout


def test_cli_does_not_load_textual_until_the_dashboard_runs() -> None:
    code = ("import sys; from ccctl.cli import cli; from ccctl.commands import dashboard; "
            "print('textual' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"

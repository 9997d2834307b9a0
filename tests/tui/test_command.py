"""``ccctl dashboard`` as a command: registered, its options, and Textual loaded only when it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_server_needs_a_token_file_and_a_live_server(ccctl: Ccctl, tmp_path: Path) -> None:
    result = ccctl("dashboard", "--server", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "--server and --token-file go together" in result.stderr
    token = tmp_path / "token"
    token.write_text("t" * 64)
    down = ccctl("dashboard", "--server", "http://127.0.0.1:9", "--token-file", str(token))
    assert down.exit_code == 9 and "no ccctl server" in down.stderr  # nothing listens on port 9
    assert "t" * 64 not in down.stderr + down.stdout  # the token is never printed

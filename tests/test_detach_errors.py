"""``serve --detach`` whose server fails to start says the server's own reason, in one line, and
exits with the server's own code (real faults: a port another socket holds, a key that is not
the certificate's); the reason is read from what this server wrote, not an older one's lines."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccctl.media.client import ServerStartFailed, start_detached, start_failure

from .conftest import Ccctl
from .media.test_tls import TestCA


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a real listening socket holds for the test's length."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_port_in_use_is_the_servers_own_line_and_code(ccctl: Ccctl, held_port: int) -> None:
    listen = f"127.0.0.1:{held_port}"
    foreground = ccctl("serve", "--listen", listen, "--tls", "off")  # the same fault, not detached
    assert foreground.exit_code not in (0, None)
    detached = ccctl("serve", "--listen", listen, "--tls", "off", "--detach")
    assert detached.exit_code == foreground.exit_code, (detached.stderr, foreground.stderr)
    assert detached.stderr.count("\n") == 1, detached.stderr
    line = detached.stderr.strip()
    assert line.startswith("Error: ") and "address already in use" in line and str(held_port) in line
    assert "exited with" not in line  # the reason itself, not only the code
    assert str(ccctl.home / "serve.log") in line
    assert not (ccctl.home / "serve.pid").exists()


def test_a_key_of_another_certificate_is_the_servers_own_line_and_code(ccctl: Ccctl, held_port: int,
                                                                         tmp_path: Path) -> None:
    # The CLI checks the files before it detaches; another caller of start_detached (broadcast
    # start, meeting start) relies on the server's own check, which is what is tested here.
    ca = TestCA.make(tmp_path / "ca")
    cert, _ = ca.issue(["127.0.0.1"])
    _, other_key = ca.issue(["127.0.0.1"], stem="other")
    with socket.socket() as probe:  # a free port (the held one would fail for another reason)
        probe.bind(("127.0.0.1", 0))
        listen = f"127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ServerStartFailed) as caught:
        start_detached(ccctl.home, listen, ccctl.db_url, None, ("--tls-cert", str(cert), "--tls-key", str(other_key)))
    message = str(caught.value)
    assert caught.value.exit_code == 2  # ConfigError's, as the server exited with
    assert "\n" not in message and message.startswith(f"cannot use {cert} with {other_key}"), message
    assert not (ccctl.home / "serve.pid").exists()


def test_only_the_new_servers_lines_are_read(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    log.write_text("Error: an older server's reason\nINFO listening\n", encoding="utf-8")
    start = log.stat().st_size
    with open(log, "a", encoding="utf-8") as f:
        f.write("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                "RuntimeError: the new server's reason\n")
    assert start_failure(log, start, 1) == f"the server exited with 1: RuntimeError: the new server's reason (see {log})"
    assert start_failure(log, log.stat().st_size, 3) == f"the server exited with 3 (see {log})"

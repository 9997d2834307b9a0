"""The site's box from the dashboard: diagnostics in a panel (through the exec core, against a
simulated fleet's real asyncssh servers) and an SSH shell (``ccctl ssh`` with the app
suspended): the shell is driven for real, the dashboard running in a pseudo-terminal, since
Pilot's headless driver has no terminal to hand over (there the action is absent, as in a
browser). Neither action exists read-only."""

from __future__ import annotations

import asyncio
import codecs
import fcntl
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from ccctl.config import load_config
from ccctl.keys import ensure_client_key
from ccctl.registry import open_registry
from ccctl.registry.overview import site_states
from ccctl.registry.sites import update_endpoints
from ccctl.rollcall.session import options_from_config
from ccctl.sim.endpoint import SimEndpointSpec, loopback_address
from ccctl.sim.faults import Fault
from ccctl.sim.fleet import Fleet
from ccctl.tui.screens.diag import DiagScreen
from ccctl.tui.widgets.eventlog import EventLog
from tests.tui.pilot import SIZE, make_app, until

BASE_INDEX = 230_000  # loopback addresses of their own (the sim tests use 200,000 on)
ANSI = re.compile(r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
TIMEOUT = 90.0


@dataclass
class Boxes:
    """Three sites of the test registry on a running simulated fleet: healthy, no camera, down."""

    home: Path
    ok: str
    nocam: str
    down: str
    fleet: Fleet


@pytest_asyncio.fixture
async def boxes(dash_db_url: str, tmp_path: Path) -> AsyncIterator[Boxes]:
    home = tmp_path / "home"
    key_path = home / "keys" / "id_ed25519"  # where the config looks for the login key
    public = ensure_client_key(key_path)
    with open_registry(dash_db_url) as db:
        ok, nocam, down = [s["id"] for s in site_states(db)][:3]
    faults = {ok: None, nocam: Fault("nocam"), down: Fault("down")}
    specs = [SimEndpointSpec(sid, loopback_address(BASE_INDEX + i), 0, f) for i, (sid, f) in enumerate(faults.items())]
    async with Fleet(specs, public, tmp_path / "sim") as fleet:
        with open_registry(dash_db_url) as db:
            update_endpoints(db, {sid: {"host": fleet.address(sid)[0], "ssh_port": fleet.address(sid)[1],
                                        "ssh_user": "ccctl", "host_key": fleet.published_host_key(sid),
                                        "key_path": str(key_path), "simulated": True} for sid in faults})
        yield Boxes(home, ok, nocam, down, fleet)


def options(home: Path) -> object:
    return options_from_config(load_config(env={"CCCTL_HOME": str(home)}))


async def diagnose(app: object, pilot: object, site_id: str) -> DiagScreen:
    """Put the cursor on ``site_id`` in the flat list, press d, wait for the panel's outcome."""
    rows = app.rowlist  # type: ignore[attr-defined]
    rows.cursor = next(i for i, r in enumerate(rows.rows) if r["id"] == site_id)
    await pilot.press("d")  # type: ignore[attr-defined]
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, DiagScreen) and screen.site_id == site_id
    await until(pilot, lambda: screen.outcome is not None, f"the diagnostics of {site_id}")  # type: ignore[arg-type]
    return screen


def body(screen: DiagScreen) -> str:
    return str(screen.query_one("#diag-body").render())


@pytest.mark.asyncio
async def test_diagnostics_in_a_panel(boxes: Boxes, dash_db_url: str) -> None:
    app = make_app(dash_db_url, boxes.home, rollcall_options=options(boxes.home))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s")
        screen = await diagnose(app, pilot, boxes.ok)
        text = body(screen)
        assert text.startswith("OK") and "exit 0" in text
        assert re.search(r"camera\s+yes", text) and re.search(rf"site_id\s+{boxes.ok}", text)
        assert "stdout" in text and '"agent_version"' in text  # the raw answer below the facts
        commands = boxes.fleet.stats().per_site[boxes.ok]["commands"]
        assert commands >= 1  # the box ran it
        await pilot.press("r")  # again: a second login and command on the box
        await until(pilot, lambda: screen.outcome is not None
                    and boxes.fleet.stats().per_site[boxes.ok]["commands"] > commands, "the second run")
        await pilot.press("escape")
        assert not isinstance(app.screen, DiagScreen)
        screen = await diagnose(app, pilot, boxes.nocam)
        assert re.search(r"camera\s+no", body(screen)) and re.search(r"microphone\s+yes", body(screen))
        await pilot.press("escape")
        screen = await diagnose(app, pilot, boxes.down)
        assert body(screen).startswith("UNREACHABLE") and "exit" not in body(screen).split("\n")[0]
        await pilot.press("escape")
        lines = [t for t, _ in app.widget("#log", EventLog).lines]
        assert any(f"diagnostics of {boxes.ok}: OK exit 0" in t for t in lines)
        assert any(f"diagnostics of {boxes.down}: UNREACHABLE" in t for t in lines)


@pytest.mark.asyncio
async def test_diag_and_shell_are_absent_read_only_and_the_shell_runs_ccctl_ssh(dash_db_url: str, tmp_path: Path) -> None:
    app = make_app(dash_db_url, tmp_path / "home", readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s", "d", "S")
        assert not isinstance(app.screen, DiagScreen)
        assert app.check_action("diag", ()) is False and app.check_action("shell", ()) is False
        keys = {b.binding.action for b in app.active_bindings.values()}
        assert "diag" not in keys and "shell" not in keys
        await pilot.press("colon", *"diag", "enter")
        assert "unknown command" in str(app.query_one("#status").render())
    app = make_app(dash_db_url, tmp_path / "home", config_file="/etc/ccctl/extra.toml")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        assert app.check_action("diag", ()) is True
        # Pilot's headless driver cannot suspend (no terminal): the shell is absent here, as in a
        # browser; test_shell_suspends_and_resumes_in_a_terminal runs it in a real one.
        assert app.check_action("shell", ()) is False
        args, env = app.shell_command("95-00001")
        assert args == [sys.executable, "-m", "ccctl", "--config", "/etc/ccctl/extra.toml", "ssh", "95-00001"]
        assert env["CCCTL_HOME"] == str(tmp_path / "home") and env["CCCTL_DB"] == dash_db_url


class Terminal:
    """A process in a pseudo-terminal of 160x48: keys in, the screen's text (escapes removed) out."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))

        def controlling_tty() -> None:  # the child's session gets the pty as its terminal (ssh wants one)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                                     start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.raw = ""
        self.text = ""
        self.seen = 0

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def expect(self, wanted: str) -> None:
        """Read until ``wanted`` appears after what the last expect matched (bounded)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            at = self.text.find(wanted, self.seen)
            if at >= 0:
                self.seen = at + len(wanted)
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{wanted!r} never appeared; the screen's last text: {self.text[-2000:]!r}")
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"the dashboard ended before {wanted!r}: {self.text[-2000:]!r}")
                self.raw += self.decoder.decode(chunk)
                self.text = ANSI.sub("", self.raw)  # whole, so an escape cut between reads is removed too

    def close(self) -> int:
        """Wait for the process to end, reading what it still writes (a terminal nobody reads
        fills up and blocks its writer: the app could not finish drawing its last frame)."""
        deadline = time.monotonic() + TIMEOUT
        try:
            while self.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not end; the screen's last text: {self.text[-2000:]!r}")
                if select.select([self.master], [], [], 0.5)[0]:
                    try:
                        self.raw += self.decoder.decode(os.read(self.master, 65536))
                    except OSError:  # closed by the child
                        pass
            return self.proc.returncode
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client (ccctl ssh runs it) is not installed")
@pytest.mark.asyncio
async def test_shell_suspends_and_resumes_in_a_terminal(boxes: Boxes, dash_db_url: str) -> None:
    env = {**os.environ, "CCCTL_HOME": str(boxes.home), "CCCTL_DB": dash_db_url, "TERM": "xterm-256color"}
    term = Terminal([sys.executable, "-m", "ccctl", "dashboard", "--poll", "0.5"], env)

    def run() -> int:
        term.expect("Bạc Liêu")  # the overview is up
        term.send("s")
        term.expect("sites")  # the flat list: "Việt Nam › sites"
        term.send("/")
        term.expect("filter (diacritics folded")  # the prompt is open (keys sent before would go to the list)
        term.send(boxes.ok)
        term.send("\r")
        term.expect(f"filter “{boxes.ok}”")
        term.expect("1 rows")
        term.send("S")  # suspended: the terminal is the shell's
        term.expect(f"a shell on {boxes.ok}")
        term.expect(f"ccctl sim bridge point {boxes.ok}")  # the box's banner, through the real ssh client
        term.send("hello from the dashboard\r")
        term.expect("hello from the dashboard")
        term.send("\x04")  # end of input: the box's shell exits, ssh ends
        term.expect(f"shell on {boxes.ok} ended (exit 0)")  # resumed: the dashboard draws again
        term.send("l")  # and takes keys again
        term.expect("event log · following")
        term.send("q")
        return term.close()

    # The terminal is read in a thread: the fleet's SSH servers run on this test's loop.
    try:
        assert await asyncio.to_thread(run) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
            term.proc.wait()


@pytest.mark.asyncio
async def test_diagnostics_of_a_site_removed_meanwhile_say_so(dash_db_url: str, tmp_path: Path) -> None:
    from ccctl.registry.sites import remove_sites

    app = make_app(dash_db_url, tmp_path / "home", rollcall_options=options(tmp_path / "home"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.loaded, "the first read of the registry")
        await pilot.press("s")
        gone = app.rowlist.rows[0]["id"]
        with open_registry(dash_db_url) as db:
            remove_sites(db, [gone])
        screen = await diagnose(app, pilot, gone)
        assert f"no site '{gone}'" in body(screen)
        await pilot.press("escape")
        assert any(f"diagnostics of {gone}: no site" in t for t, _ in app.widget("#log", EventLog).lines)

"""Diagnostics of one site, in a panel over the dashboard (``d``).

The box's diagnostics command (``ccctl-diag`` where the box has it, else the ``sh`` facts line:
the roll-call's SSH-stage command) runs through ``run_command``, the core of ``ccctl exec``,
with the same login key and host-key checking as a roll-call. The screen's worker does the
I/O and posts the outcome to the screen; closing the panel cancels a run still going.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from ccctl.tui.style import STATE_STYLES

DIAG_TIMEOUT_S = 30.0  # login plus the command, as ``ccctl exec``'s default


class DiagScreen(ModalScreen[None]):
    """Runs the diagnostics on open (and again on ``r``); Esc closes."""

    BINDINGS = [Binding("escape,q", "close", "Close"), Binding("r", "again", "Run again")]
    DEFAULT_CSS = """
    DiagScreen { align: center middle; }
    #diag { width: 100; height: 80%; border: thick $primary; background: $surface; padding: 1 2; }
    #diag-title { margin-bottom: 1; }
    """

    class Done(Message):
        """The run's outcome: an ``ExecResult`` as a dict, or why there is none (``error``)."""

        def __init__(self, result: dict[str, Any] | None, error: str = "") -> None:
            super().__init__()
            self.result = result
            self.error = error

    def __init__(self, site_id: str, name: str, db_url: str, options: Any) -> None:
        super().__init__()
        self.site_id = site_id
        self.site_name = name
        self.db_url = db_url
        self.options = options  # RollcallOptions: host-key checking and the login key
        self.outcome: DiagScreen.Done | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="diag"):
            yield Static(f"[b]diagnostics[/b] · {self.site_id} ({self.site_name})", id="diag-title", markup=True)
            yield Static("", id="diag-body")

    def on_mount(self) -> None:
        self.action_again()

    def action_again(self) -> None:
        """Run the diagnostics (again)."""
        self.outcome = None
        self.query_one("#diag-body", Static).update("running the diagnostics ...")
        self.diagnose()

    def action_close(self) -> None:
        """Close the panel."""
        self.dismiss(None)

    @work(exclusive=True, group="diag", exit_on_error=False)
    async def diagnose(self) -> None:
        """Read the site's endpoint from the registry, run the command through the exec core."""
        import asyncio

        from ccctl.errors import CcctlError
        from ccctl.rollcall.runner import run_command
        from ccctl.rollcall.shfacts import PROBE_COMMAND

        try:
            endpoint = await asyncio.to_thread(_endpoint, self.db_url, self.site_id, self.options.verify_host_keys)
        except CcctlError as exc:
            self.post_message(self.Done(None, str(exc)))
            return
        results = await run_command([(self.site_id, endpoint)], PROBE_COMMAND, concurrency=1,
                                    timeout=DIAG_TIMEOUT_S, client_key=self.options.client_key)
        r = results[0]
        self.post_message(self.Done({"state": r.state.value, "exit_status": r.exit_status, "stdout": r.stdout,
                                     "stderr": r.stderr, "reason": r.reason, "duration_ms": r.duration_ms}))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A run that failed outside any site's outcome still ends in the panel, not in "running"."""
        if event.worker.group == "diag" and event.state == WorkerState.ERROR:
            self.post_message(self.Done(None, f"diagnostics failed: {event.worker.error!r}"))

    def on_diag_screen_done(self, message: DiagScreen.Done) -> None:
        self.outcome = message
        self.query_one("#diag-body", Static).update(diag_text(message.result, message.error))
        line = f"diagnostics of {self.site_id}: " + (message.error or _summary(message.result or {}))
        ok = message.result is not None and message.result["exit_status"] == 0
        log = getattr(self.app, "log_event", None)
        if log is not None:
            log(line, "info" if ok else "warn")


def _endpoint(db_url: str, site_id: str, verify: bool) -> Any:
    from ccctl.registry import open_registry
    from ccctl.registry.sites import get_site

    with open_registry(db_url) as db:
        return get_site(db, site_id).endpoint(verify)


def _summary(result: dict[str, Any]) -> str:
    status = result.get("exit_status")
    return f"{result['state']}" + (f" exit {status}" if status is not None else "") + \
        (f" ({result['reason']})" if result.get("reason") else "") + f" in {result.get('duration_ms', 0):.0f} ms"


def diag_text(result: dict[str, Any] | None, error: str = "") -> Text:
    """The panel's text: the outcome, the facts the box reported, then its raw output."""
    from ccctl.rollcall.shfacts import parse_facts

    t = Text()
    if result is None:
        t.append(error or "no outcome", style="bold red")
        return t
    t.append(result["state"], style=STATE_STYLES.get(result["state"]))
    t.append("  " + _summary(result)[len(result["state"]):].strip() + "\n\n")
    try:
        facts = parse_facts(result["stdout"])
    except ValueError:
        facts = {}
    if facts:
        width = max(len(k) for k in facts)
        for key, value in facts.items():
            shown = "yes" if value is True else "no" if value is False else "-" if value is None else str(value)
            t.append(f"{key:<{width}}  {shown}\n")
        t.append("\n")
    for name in ("stdout", "stderr"):
        text = (result.get(name) or "").rstrip("\n")
        if text:
            t.append(f"{name}\n", style="bold")
            t.append(text[-4000:] + "\n")  # the panel shows the end of a long output
    return t

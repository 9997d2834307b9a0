"""The operator's actions from the dashboard: re-check now (the CLI's roll-call core, results
arriving live), give / release the floor, move a tier, revoke a token (the control client),
run a site's diagnostics (the core of ``ccctl exec``, in a panel) and open an SSH shell on its
box (``ccctl ssh`` itself, with the app suspended while it runs).

None of this exists in read-only mode: the app's ``check_action`` removes the keys and the
footer entries, and the palette does not offer them. Revoking cuts a site off: it asks first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import SystemCommand
from textual.binding import Binding

from ccctl.tui import messages as msg
from ccctl.tui.guard import while_shown
from ccctl.tui.keys import BOX_KEYS, FLOOR_KEYS
from ccctl.tui.screens.confirm import ConfirmScreen

if TYPE_CHECKING:
    from ccctl.tui.app import Dashboard


ACTIONS = frozenset({"recheck", "floor", "release", "tier", "revoke", "diag", "shell"})
# Not on a remote console (--server): they write the registry or need its endpoints and keys.
REGISTRY_ACTIONS = frozenset({"recheck", "revoke", "diag", "shell"})
PROGRESS_S = 0.2  # results of a re-check reach the screen in batches at most this far apart


class ActionsMixin:
    """Actions of the Dashboard app (kept apart so the app stays readable)."""

    ACTION_BINDINGS = [
        Binding("c", "recheck", "Check"),
        Binding("f", "floor", "Floor", group=FLOOR_KEYS),
        Binding("F", "release", "Release", group=FLOOR_KEYS),
        Binding("t", "tier", "Tier"),
        Binding("x", "revoke", "Revoke"),
        Binding("d", "diag", "Diagnose", group=BOX_KEYS),
        Binding("S", "shell", "Shell", group=BOX_KEYS),
    ]

    def _selected_site(self: Dashboard) -> dict[str, Any] | None:  # type: ignore[misc]
        row = self.rowlist.current()
        return row if row is not None and "level" not in row else None

    def action_commands(self: Dashboard) -> Iterable[SystemCommand]:  # type: ignore[misc]
        """The palette's entries for the actions."""
        yield SystemCommand("Re-check", "Roll-call the selection now", self.action_recheck)
        yield SystemCommand("Give the floor", "The selected site's camera becomes the program", self.action_floor)
        yield SystemCommand("Release the floor", "The program returns to the main source", self.action_release)
        yield SystemCommand("Revoke", "Invalidate the selected site's token (cuts it off)", self.action_revoke)
        yield SystemCommand("Diagnostics", "Run the selected site's diagnostics (ccctl exec's core)", self.action_diag)
        yield SystemCommand("SSH shell", "A shell on the selected site's box (the dashboard waits)", self.action_shell)

    # --- re-check ------------------------------------------------------------------------

    def action_recheck(self: Dashboard) -> None:  # type: ignore[misc]
        """Roll-call the site under the cursor, or every site of the unit under it."""
        row = self.rowlist.current()
        if row is None:
            return
        if "level" in row:
            from ccctl.tui.fleet import Place

            place = Place(row["level"], row["scheme"], row["code"], row["name"])
            ids = [s["id"] for s in self.fleet.order if place.holds(s)]
            what = f"{row['name']} ({len(ids)} sites)"
        else:
            ids, what = [row["id"]], row["id"]
        if any(w.group == "recheck" and not w.is_finished for w in self.workers):
            self.status("a re-check is running; wait for it to end")
            return
        self.log_event(f"re-check of {what} started")
        self.recheck_line = f"re-check 0/{len(ids)}"
        self.recheck(ids)

    @work(exclusive=True, group="recheck", exit_on_error=False)
    async def recheck(self: Dashboard, ids: list[str]) -> None:  # type: ignore[misc]
        """The roll-call core the CLI's ``rollcall run`` uses, recorded as a run; results are
        posted in batches as they arrive."""
        import asyncio

        from ccctl.config import load_config
        from ccctl.errors import CcctlError
        from ccctl.registry import open_registry
        from ccctl.registry.sites import SiteFilter, select_sites
        from ccctl.rollcall.session import options_from_config, rollcall, run_lock

        options = self.rollcall_options or options_from_config(load_config())
        batch: list[dict[str, Any]] = []
        done = 0
        total = len(ids)
        last = time.monotonic()

        def flush(finished: bool = False, line: str = "") -> None:
            nonlocal batch, last
            if batch:
                self.post_message(msg.ResultsArrived(batch, "recheck"))
                batch = []
            self.post_message(msg.RecheckProgress(done, total, finished, line))
            last = time.monotonic()

        try:
            db = await asyncio.to_thread(open_registry, self.db_url)
        except CcctlError as exc:
            self.post_message(msg.ActionDone(f"re-check: {exc}", ok=False))
            return
        try:
            # On this loop, as the run's own registry writes are: a read left running in a thread
            # when the worker is cancelled would meet the connection closed under it (finally).
            sites = select_sites(db, SiteFilter(ids=tuple(ids), enabled_only=True))
            total = len(sites)

            def on_result(result: Any) -> None:
                nonlocal done
                done += 1
                batch.append({"site_id": result.site_id, "state": result.state.value, "reason": result.reason,
                              "stage": result.stage, "rtt_ms": result.rtt_ms,
                              "checked_at": result.started_at + result.duration_ms / 1000})
                if time.monotonic() - last >= PROGRESS_S:
                    flush()

            with run_lock(self.home):
                outcomes = await rollcall(db, sites, options, on_result=on_result)
            flush(True, outcomes[-1].line())
        except CcctlError as exc:
            flush(True, f"re-check: {exc}")
        finally:
            db.close()

    @while_shown
    def on_recheck_progress(self: Dashboard, message: msg.RecheckProgress) -> None:  # type: ignore[misc]
        if message.finished:
            self.recheck_line = ""
            self.log_event(message.line or f"re-check done: {message.done}/{message.total}",
                           "info" if message.line.startswith("ROLLCALL") else "alert")
            self.status(message.line)
            self.last_full = 0.0  # the run's ids are known now: read the registry afresh
        else:
            self.recheck_line = f"re-check {message.done}/{message.total}"
        self.dirty = True

    # --- the broadcast: floor, tier, revoke ----------------------------------------------------

    def action_floor(self: Dashboard) -> None:  # type: ignore[misc]
        """Give the floor to the site under the cursor."""
        site = self._selected_site()
        if site is None:
            self.status("put the cursor on a site first")
            return
        self.control("floor", site["id"])

    def action_release(self: Dashboard) -> None:  # type: ignore[misc]
        """Take the floor back."""
        self.control("release", None)

    def action_tier(self: Dashboard, tier: str = "") -> None:  # type: ignore[misc]
        """Move the site under the cursor to ``tier`` (without one, ask on the command line)."""
        site = self._selected_site()
        if site is None:
            self.status("put the cursor on a site first")
            return
        if not tier:
            self.action_prompt(":")
            from textual.widgets import Input

            prompt = self.widget("#prompt", Input)
            prompt.value = "move "
            prompt.cursor_position = len(prompt.value)
            return
        self.control("tier", site["id"], tier)

    def action_revoke(self: Dashboard) -> None:  # type: ignore[misc]
        """Invalidate the site's token, which cuts its live session: asks first."""
        site = self._selected_site()
        if site is None:
            self.status("put the cursor on a site first")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.control("revoke", site["id"])
            else:
                self.status(f"{site['id']}: not revoked")

        self.push_screen(ConfirmScreen(f"Revoke the token of {site['id']} ({site['name']})?\n"
                                       "Its links stop working and its live session is cut."), answered)

    @work(thread=True, group="control", exit_on_error=False)
    def control(self: Dashboard, verb: str, site_id: str | None, tier: str | None = None) -> None:  # type: ignore[misc]
        """One control call through the CLI's client; its outcome as one line."""
        from urllib.parse import quote

        from ccctl.errors import CcctlError
        from ccctl.tui.feeds import control_client

        try:
            client = control_client(self.home, self.listen, self.server_url, self.token)
            if verb == "floor" and site_id:
                result = client.set_floor(site_id)
                was = result.get("previous")
                line = f"{site_id} has the floor" + (f" (taken from {was})" if was and was != site_id else "")
            elif verb == "release":
                result = client.set_floor(None)
                line = f"floor released (was {result['released']})" if result.get("released") else "nobody held the floor"
            elif verb == "tier" and site_id and tier:
                result = client.set_tier(site_id, tier)
                line = f"{site_id} moved to {tier} (was {result.get('previous')})"
            elif verb == "revoke" and site_id:
                from ccctl.media.tokens import revoke
                from ccctl.registry import open_registry

                with open_registry(self.db_url) as db:
                    generation = revoke(db, site_id)
                line = f"revoked the tokens of {site_id}; generation is now {generation}"
                if client.alive():
                    ended = client.call("DELETE", f"/api/sites/{quote(site_id, safe='')}/session")["sessions_ended"]
                    line += "; its live session ended" if ended else ""
            else:
                return
            self.post_message(msg.ActionDone(line))
        except CcctlError as exc:
            self.post_message(msg.ActionDone(" ".join(filter(None, (verb, site_id))) + f": {exc}", ok=False))

    @while_shown
    def on_action_done(self: Dashboard, message: msg.ActionDone) -> None:  # type: ignore[misc]
        self.log_event(message.line, "info" if message.ok else "alert")
        self.status(message.line)
        if not message.ok:
            self.bell()

    # --- the site's box: diagnostics and a shell -------------------------------------------

    def action_diag(self: Dashboard) -> None:  # type: ignore[misc]
        """Run the site's diagnostics and show them in a panel."""
        from ccctl.tui.screens.diag import DiagScreen

        site = self._selected_site()
        if site is None:
            self.status("put the cursor on a site first")
            return
        options = self.rollcall_options
        if options is None:
            from ccctl.config import load_config
            from ccctl.rollcall.session import options_from_config

            options = options_from_config(load_config())
        self.push_screen(DiagScreen(site["id"], site["name"], self.db_url, options))

    def shell_command(self: Dashboard, site_id: str) -> tuple[list[str], dict[str, str]]:  # type: ignore[misc]
        """What the shell action runs: ``ccctl ssh SITE`` of this installation (its registry, home
        and config file), so the shell logs in exactly as the CLI's would."""
        import os
        import sys

        args = [sys.executable, "-m", "ccctl", *(["--config", self.config_file] if self.config_file else []),
                "ssh", site_id]
        return args, {**os.environ, "CCCTL_HOME": str(self.home), "CCCTL_DB": self.db_url}

    def action_shell(self: Dashboard) -> None:  # type: ignore[misc]
        """Suspend the dashboard, run an SSH shell on the site's box, resume when it ends.

        The one blocking call on the app's loop: the terminal belongs to the shell meanwhile
        (Textual's ``App.suspend``), and the workers' messages wait for the resume."""
        import subprocess
        import sys

        from textual.app import SuspendNotSupported

        site = self._selected_site()
        if site is None:
            self.status("put the cursor on a site first")
            return
        args, env = self.shell_command(site["id"])
        self.log_event(f"shell on {site['id']} opened")
        try:
            with self.suspend():
                print(f"ccctl: a shell on {site['id']} ({site['name']}); leave it to come back to the dashboard",
                      file=sys.stderr, flush=True)
                status = subprocess.call(args, env=env)
        except SuspendNotSupported:
            self.status("a shell needs a terminal the dashboard can hand over (not a browser)")
            return
        except OSError as exc:
            status = -1
            self.log_event(f"shell on {site['id']}: {exc}", "alert")
        line = f"shell on {site['id']} ended (exit {status})"
        self.log_event(line, "info" if status == 0 else "warn")
        self.status(line)
        self.refresh()

"""The help screen (``?``): keys and the ``:`` commands with their aliases."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = """[b]Keys[/b]
  Enter        open the province / district / commune / site under the cursor
  Esc          back along the breadcrumbs
  /            filter as you type (diacritics folded: [i]ca mau[/i] finds Cà Mau; [i]!text[/i] inverts)
  :            command mode (below)
  s            the sites under this place, or its units again
  W N C        sort worst first / by name / by code (again: reversed)
  m            the map (v on the map: coloured by the feeds' risk levels)   l  the event log
  i            the data feeds' panel      M  the meeting panel      r  read the registry now
  p            pause the event log (new lines counted) / follow it again
  e            event log severity: every line, warnings and errors, errors only (in turn)
  ctrl+p       the command palette      ?  this help      q  quit
"""

ACTION_KEYS = """[b]Actions[/b] (not in --readonly)
  c            re-check the selection (the site, or every site of the list) now
  f / F        give the floor to the site / release it
  t            move the site to a tier (:move high|low|audio)
  x            revoke the site's token (cuts it off; asks first)
  d            run the site's diagnostics (ccctl-diag, as ccctl exec would) in a panel
  S            an SSH shell on the site's box (ccctl ssh); the dashboard comes back when it ends
"""

COMMANDS = """[b]Commands[/b]
  :prov 96 | :p cà mau        go to a province (code or name)
  :state UNREACHABLE,TIMEOUT  sites in these states (:state alone clears)
  :tier audio                 sites of a tier (:tier alone clears)
  :filter TEXT                the same as /
  :sites  :units  :top        the flat site list, the units, the country
  :sort worst|name|code       sort order
  :map  :log  :help  :q       the map, the event log, this help, quit
  :log pause|follow           pause the event log or follow it again
  :log info|warning|error     the event log's lines from this severity up
"""

ACTION_COMMANDS = """  :check  :floor  :release  :move TIER  :revoke  :diag  :ssh    the actions above
"""


class HelpScreen(ModalScreen[None]):
    """Keys and commands; Esc, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, readonly: bool) -> None:
        super().__init__()
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        text = KEYS + ("" if self.readonly else "\n" + ACTION_KEYS) + "\n" + COMMANDS
        if not self.readonly:
            text += ACTION_COMMANDS
        with VerticalScroll(id="help"):
            yield Static(text, id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        """Close the help."""
        self.dismiss(None)

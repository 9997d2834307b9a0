"""The footer: every key the screen offers, drawn as one line of text.

Textual's ``Footer`` is a container of one widget per key, removed and mounted again whenever
the screen's bindings are refreshed, which happens on every change of focus (the prompt opening
and closing): each time a layout of the whole screen, twice (the new keys take their sizes,
then ask for a layout again), tens of milliseconds on a loaded machine. This footer draws the
same line (the compact footer's spacing and colours, grouped keys as ``WNC Sort``, the palette
key on the right) as the text of a single widget of one fixed line: new keys repaint that line,
they never lay the screen out, and it repaints only when the keys shown change. A click on a
key presses it, as on Textual's footer.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any, NamedTuple

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


class Key(NamedTuple):
    """One key as the footer shows it."""

    key: str
    display: str
    description: str
    group: Binding.Group | None
    enabled: bool


def shown_keys(screen: Screen[Any]) -> tuple[Key, ...]:
    """The keys the footer shows for ``screen``, in order: the first binding of each action
    with ``show`` (as Textual's footer picks them)."""
    app = screen.app
    seen: set[str] = set()
    keys = []
    for _, binding, enabled, _tooltip in screen.active_bindings.values():
        if binding.show and binding.action not in seen:
            seen.add(binding.action)
            keys.append(Key(binding.key, app.get_key_display(binding), binding.description, binding.group, enabled))
    return tuple(keys)


class KeyFooter(Widget, can_focus=False):
    """The screen's keys on the bottom line; repainted (never laid out) when they change."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-footer--key", "key-footer--description", "key-footer--item", "key-footer--separator"}
    DEFAULT_CSS = """
    KeyFooter {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
        text-wrap: nowrap;
        text-overflow: clip;
        & > .key-footer--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        & > .key-footer--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
        & > .key-footer--item { background: $footer-item-background; }
        & > .key-footer--separator { color: $foreground 20%; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.keys: tuple[Key, ...] = ()
        self.palette: Key | None = None
        self.spans: list[tuple[int, int, Key]] = []  # (first cell, end cell, key) of the last line drawn

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen[Any]) -> None:
        """The screen's bindings were refreshed: repaint if the keys to show changed. While the
        app is blurred (a browser tab) the keys stay as they are, as on Textual's footer."""
        if not screen.app.app_focus or screen is not self.screen:
            return
        keys = shown_keys(screen)
        palette_key = screen.app.COMMAND_PALETTE_BINDING
        palette = None
        if screen.app.ENABLE_COMMAND_PALETTE:
            found = screen.active_bindings.get(palette_key)
            if found is not None:
                palette = Key(found[1].key, screen.app.get_key_display(found[1]), found[1].description, None, found[2])
        keys = tuple(k for k in keys if palette is None or k.key != palette.key)
        if (keys, palette) != (self.keys, self.palette):
            self.keys, self.palette = keys, palette
            self.refresh()

    def render(self) -> Text:
        """The line: ``key description`` entries a cell apart, a group as its keys then its
        description, the palette key at the right after a thin bar."""
        key_style = self.get_component_rich_style("key-footer--key")
        description_style = self.get_component_rich_style("key-footer--description")
        item = self.get_component_rich_style("key-footer--item")
        text = Text(no_wrap=True, end="")
        spans: list[tuple[int, int, Key]] = []

        def add_key(key: Key, with_description: bool) -> None:
            dim = self._dim(key)
            start = len(text)
            text.append(key.display, item + key_style + dim)
            if with_description and key.description:
                text.append(" " + key.description, item + description_style + dim)
            spans.append((start, len(text), key))

        for group, members in groupby(self.keys, lambda k: k.group):
            keys = list(members)
            if group is not None and len(keys) > 1:
                text.append(" ")  # the group's left padding
                if group.compact and len({k.enabled for k in keys}) == 1:  # one run of text: ``WNC``
                    start = len(text)
                    text.append("".join(k.display for k in keys), item + key_style + self._dim(keys[0]))
                    for key in keys:
                        spans.append((start, start + len(key.display), key))
                        start += len(key.display)
                else:
                    pad = "" if group.compact else " "
                    for key in keys:
                        text.append(pad)
                        add_key(key, False)
                        text.append(pad)
                text.append(" ")
                text.append(group.description, description_style)
            else:
                for key in keys:
                    add_key(key, True)
                    text.append(" ")
        if self.palette is not None:
            width = self.size.width
            tail = 1 + len(self.palette.display) + 1 + len(self.palette.description) + 1
            if len(text) + tail <= width:
                text.append(" " * (width - len(text) - tail))
                text.append("▏", item + self.get_component_rich_style("key-footer--separator"))
                add_key(self.palette, True)
                text.append(" ")
        self.spans = spans
        return text

    @staticmethod
    def _dim(key: Key) -> Style:
        return Style() if key.enabled else Style(dim=True)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        """A click on a key presses it (a disabled key rings the bell)."""
        for start, end, key in self.spans:
            if start <= event.x < end:
                if key.enabled:
                    self.app.simulate_key(key.key)
                else:
                    self.app.bell()
                return

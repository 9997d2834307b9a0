"""Edges: existing media servers (Janus) that ccctl feeds and drives to reach more sites.

- :mod:`ccctl.edges.janus`: an async client of Janus's HTTP API, admin side of the
  streaming plugin (mountpoints, viewer counts).
- :mod:`ccctl.edges.keys`: reading an edge's admin key from its file, refusing a file
  others can read.
- :mod:`ccctl.edges.feed`: for a live broadcast, one mountpoint per tier on an edge and
  each tier's RTP sent to it.
- :mod:`ccctl.edges.assign`: which edge serves which site.
The registry side is :mod:`ccctl.registry.edges`.
"""

from __future__ import annotations

from ccctl.errors import CcctlError


class EdgeError(CcctlError):
    """An edge could not be reached or refused a request; the message says which and why."""

    exit_code = 1


__all__ = ["EdgeError"]

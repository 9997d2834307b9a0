"""The embedded media core: program, per-tier encoding, fan-out to sites over WebRTC.

``MediaCore`` (core.py) is the entry point; ``Program`` (program.py) produces and encodes;
tiers.py holds the tier definitions and the per-subscriber fan-out. They are loaded on first
use, so that importing a sibling (server, tokens, state) does not pull in aiortc and PyAV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"MediaCore": "ccctl.media.core", "Program": "ccctl.media.program",
            "TierSpec": "ccctl.media.tiers", "MediaError": "ccctl.media.tiers", "DEFAULT_TIERS": "ccctl.media.tiers"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the media modules lazily (PEP 562)."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Headless Chromium for the tests that open our pages: where it is, and the flags they share."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]  # a page, nothing fetched on the side
WEBRTC_ARGS = [*PAGE_ARGS, "--disable-quic", "--autoplay-policy=no-user-gesture-required",
               "--allow-loopback-in-peer-connection",  # our media candidates are on 127.0.0.0/8
               "--disable-features=WebRtcHideLocalIpsWithMdns"]  # real addresses, not mDNS names


async def launch(playwright: Any, *extra: str) -> Any:
    """A headless Chromium for a join page (sound and picture over WebRTC on loopback), with ``extra`` flags."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=[*WEBRTC_ARGS, *extra])

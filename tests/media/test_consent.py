"""Consent freshness (RFC 7675) on the server's peers: a slow answer is not a lost one.

aioice ends a connection after 6 consent checks each unanswered within 0.5 s, so a site whose
round trip is over half a second (a satellite link) would be cut every 30 s. The server's
peers use ``ccctl.media.net.patient_consent``: consent ends 30 s after the last answer.

The long round trip is made by holding back the site's STUN answers in its own real aioice
stack, just before they reach the socket: that is the fault a slow link makes, seen from the
server. (Delaying the wire itself needs netem in a private network namespace, hence root.)
Intervals and expiry are shortened so the tests take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aioice.ice
import pytest
from aioice import stun

from ccctl.media import net
from ccctl.media.core import MediaCore

from .conftest import JoinFn, Site, until

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("core", ["tight"], indirect=True)]  # conftest's core

INTERVAL_S, EXPIRY_S = 0.2, 2.0
LATE_S = 0.7  # past aioice's 0.5 s answer time, far within the expiry


@pytest.fixture(autouse=True)
def fast_consent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(net, "CONSENT_INTERVAL_S", INTERVAL_S)
    monkeypatch.setattr(net, "CONSENT_EXPIRY_S", EXPIRY_S)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", INTERVAL_S)  # aioice's own, for the contrast


def hold_answers(site: Site, delay: float | None) -> list[float]:
    """From now on the site answers STUN requests ``delay`` s late (None: never); returns the
    list of when each answer went out."""
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    for connection in net.ice_connections(site.pc):
        for protocol in connection._protocols:
            original = protocol.send_stun

            def send(message: stun.Message, addr: tuple[str, int], original: Any = original) -> None:
                if message.message_class != stun.Class.RESPONSE:
                    original(message, addr)
                elif delay is not None:
                    loop.call_later(delay, lambda: (sent.append(time.monotonic()), original(message, addr)))

            protocol.send_stun = send
    assert sent == [] and net.ice_connections(site.pc), "the site has no ICE connection to slow down"
    return sent


async def states(core: MediaCore) -> list[str]:
    return [row["state"] for row in await core.stats()]


async def test_a_site_that_answers_late_stays_connected(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-satellite", "audio", ("audio",))
    await site.frames(2, "audio")
    answered = hold_answers(site, LATE_S)
    start = time.monotonic()
    # Eight late answers over more than two expiries: aioice's checks would have ended the
    # session after six (the next test shows it), ours count each answer when it comes.
    await until(lambda: asyncio.sleep(0, result=len(answered) >= 8 and time.monotonic() - start > 2 * EXPIRY_S))
    assert await states(core) == ["connected"]
    await site.frames(5, "audio")  # and the program still reaches it


async def test_aioices_own_checks_would_cut_that_site(core: MediaCore, join: JoinFn,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ccctl.media.core.patient_consent", lambda pc: True)  # keep aioice's checks
    site, _ = await join("s-satellite", "audio", ("audio",))
    await site.frames(2, "audio")
    answered = hold_answers(site, LATE_S)
    await until(lambda: asyncio.sleep(0, result=not core.sessions()))  # ended: "Consent to send expired"
    assert answered, "the site did answer, only late"


async def test_a_site_that_never_answers_is_ended_after_the_expiry(core: MediaCore, join: JoinFn) -> None:
    site, _ = await join("s-gone", "audio", ("audio",))
    await site.frames(2, "audio")
    hold_answers(site, None)
    start = time.monotonic()
    await until(lambda: asyncio.sleep(0, result=not core.sessions()))
    # Not before consent could expire (the last answer came at most one check before start),
    # and by our expiry: aioice's own checks (were they still on) would take about 4.2 s.
    assert EXPIRY_S - 2 * INTERVAL_S <= time.monotonic() - start < EXPIRY_S + 1.5

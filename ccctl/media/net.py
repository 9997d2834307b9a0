"""Keep media on the interface the server listens on.

aioice (aiortc's ICE) offers every interface address of the machine and has no option to
choose; a server bound to loopback must not offer or reach anything else. ``pin_ice``
replaces aioice's address lookup for this process (the one place we reach into it), and
``keep_candidates`` drops a remote offer's candidates outside the allowed network, so
connectivity checks never target other addresses either. ``gather_only_on`` pins one task
(and the tasks it starts) instead of the process, for the roll-call's media stage and the
simulator, which talk to many addresses from one process.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Callable, Iterator


def pin_ice(host: str) -> None:
    """Gather ICE host candidates on ``host`` only (for a server bound to one address)."""
    import aioice.ice

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [host]

    aioice.ice.get_host_addresses = addresses


def keep_candidates(sdp: str, network: str) -> str:
    """``sdp`` without the ``a=candidate`` lines whose address is outside ``network``.

    Host names (mDNS ``*.local``) are dropped too: they cannot be checked against the network.
    """
    allowed = ipaddress.ip_network(network)
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            try:
                if ipaddress.ip_address(parts[4]) not in allowed:
                    continue
            except (IndexError, ValueError):
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


# ``pin_ice`` pins the whole process to one address; a roll-call talks to
# many boxes (and the simulator serves many addresses) in one process, so the pin is held in
# a context variable that aiortc's gathering tasks inherit.

_PINNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("ccctl_ice_host", default=None)


def _install_pin() -> None:
    """Wrap aioice's address lookup (once, or again if ``pin_ice`` replaced it)."""
    import aioice.ice

    current: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(current, "_ccctl_pinned", False):
        return

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        host = _PINNED.get()
        return [host] if host is not None else current(use_ipv4, use_ipv6)

    addresses._ccctl_pinned = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = addresses


@contextlib.contextmanager
def gather_only_on(host: str) -> Iterator[None]:
    """ICE gathering started in this block (and its tasks) offers ``host`` only."""
    _install_pin()
    token = _PINNED.set(host)
    try:
        yield
    finally:
        _PINNED.reset(token)


def only_peer(sdp: str, address: str) -> str:
    """``sdp`` keeping only the candidates on ``address`` (the other end of our SSH link)."""
    return keep_candidates(sdp, str(ipaddress.ip_network(address)))

"""Keep media on the interface the server listens on.

aioice (aiortc's ICE) offers every interface address of the machine and has no option to
choose; a server bound to loopback must not offer or reach anything else. ``pin_ice``
replaces aioice's address lookup for this process (the one place we reach into it), and
``keep_candidates`` drops a remote offer's candidates outside the allowed network, so
connectivity checks never target other addresses either.
"""

from __future__ import annotations

import ipaddress


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

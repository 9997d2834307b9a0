"""One edge fed one live broadcast: a mountpoint per tier, and each tier's RTP sent to it.

For every tier of the program, :class:`EdgeFeed` creates a private RTP mountpoint on the
edge (Opus and H.264, the same on every tier so that a viewer can ``switch`` between them;
the audio tier's video gets no RTP; ports chosen by Janus) named
``ccctl-b<broadcast>-<tier>``, whose secret and viewers' pin are derived from the edge's
admin key (:func:`ccctl.edges.janus.derived`) and, for an edge that takes SRTP
(:meth:`~ccctl.registry.edges.Edge.uses_srtp`: by default one whose API is not on a loopback
address), a random SRTP master key of its own (given to Janus in ``create``, never stored,
logged or printed), then attaches an
:class:`~ccctl.media.rtpout.RtpOut` per media to the program's feeds: the program packetises
each tier once for every site and edge alike. A mountpoint of the same name left by an
earlier server process (killed before it could clean up) is destroyed first.
:meth:`EdgeFeed.close` stops the sinks and destroys the mountpoints (best effort: a dead
edge has nothing left to destroy).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ccctl.edges import EdgeError
from ccctl.edges.janus import AUDIO_PT, VIDEO_PT, JanusClient, derived, mount_name
from ccctl.edges.keys import read_key
from ccctl.media.rtpout import SRTP_KEY_BYTES, RtpOut

if TYPE_CHECKING:
    from ccctl.media.program import Program
    from ccctl.registry.edges import Edge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mount:
    """ccctl's mountpoint for one tier on one edge: what a viewer needs to watch it."""

    tier: str
    id: int
    pin: str
    secret: str


async def edge_host(api_url: str) -> str:
    """The edge's address (its API URL's host, resolved): where its RTP ports are bound."""
    host = urlsplit(api_url).hostname or ""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise EdgeError(f"edge {api_url}: cannot resolve {host}: {exc}") from None
    return str(infos[0][4][0])


class EdgeFeed:
    """The mountpoints and RTP sinks of one broadcast on one edge."""

    def __init__(self, edge: Edge, program: Program, broadcast_id: int) -> None:
        self.edge = edge
        self.program = program
        self.broadcast_id = broadcast_id
        self.mounts: dict[str, Mount] = {}
        self.sinks: list[RtpOut] = []
        self.tier_sinks: dict[str, list[RtpOut]] = {}  # the sinks of each tier's mountpoint
        self.client: JanusClient | None = None
        self.srtp = edge.uses_srtp()  # what it is sent is SRTP (see Edge.uses_srtp)

    async def open(self) -> EdgeFeed:
        """Connect, create a mountpoint per tier and start sending; on failure nothing is left."""
        key = read_key(self.edge.admin_key_file)
        host = await edge_host(self.edge.api_url)
        self.client = JanusClient(self.edge.api_url, key)
        try:
            await self.client.open()
            names = {mount_name(self.broadcast_id, t): t for t in self.program.tiers}
            for old in await self.client.list():
                if old.get("description") in names:
                    await self.client.destroy(int(old["id"]), derived(key, "secret", str(old["description"])))
            for name, tier in names.items():
                spec = self.program.tiers[tier]
                secret, pin = derived(key, "secret", name), derived(key, "pin", name)
                # Every tier's mountpoint has the same media (audio, video) in the same order, as
                # Janus's ``switch`` requires; the audio tier's video is simply never sent.
                # SRTP (an edge on another machine): a fresh key per mountpoint, told to Janus in
                # the create request and kept only in the sinks' SRTP contexts.
                srtp_key = secrets.token_bytes(SRTP_KEY_BYTES) if self.srtp else None
                mount = await self.client.create_rtp(name, audio=True, video=True, iface=host,
                                                     pin=pin, secret=secret, srtp_key=srtp_key)
                self.mounts[tier] = Mount(tier, mount.id, pin, secret)
                audio = RtpOut("audio", (host, mount.ports["a"]), AUDIO_PT, srtp_key=srtp_key)
                self.sinks.append(audio)
                self.tier_sinks[tier] = [audio]
                audio.attach(self.program.audio_feed)
                if spec.has_video:
                    video = RtpOut("video", (host, mount.ports["v"]), VIDEO_PT, srtp_key=srtp_key)
                    self.sinks.append(video)
                    self.tier_sinks[tier].append(video)
                    video.attach(self.program.feed(tier))
        except BaseException:
            await self.close()
            raise
        return self

    async def viewers(self) -> dict[str, int]:
        """Viewers per tier, from the edge's ``info`` (EdgeError when it does not answer)."""
        if self.client is None:
            raise EdgeError(f"edge {self.edge.name}: not open")
        out = {}
        for tier, mount in self.mounts.items():
            info = await self.client.info(mount.id, mount.secret)
            out[tier] = int(info.get("viewers", 0))
        return out

    def stop_sending(self) -> None:
        """Stop the RTP sinks (the program encodes nothing more for this edge)."""
        sinks, self.sinks, self.tier_sinks = self.sinks, [], {}
        for sink in sinks:
            sink.stop()

    async def close(self, destroy: bool = True) -> None:
        """Stop sending and destroy the mountpoints (errors logged: the edge may be gone);
        ``destroy=False`` (the edge is dead): nothing more is sent to it."""
        self.stop_sending()
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if destroy:
                for mount in self.mounts.values():
                    await client.destroy(mount.id, mount.secret)
        except EdgeError as exc:
            log.warning("edge %s: mountpoints not removed: %s", self.edge.name, exc)
        finally:
            self.mounts = {}
            await client.close(goodbye=destroy)

"""A site's viewer of a Janus edge: aiortc through Janus's plain HTTP protocol.

What a site's join page does in a browser, done with aiortc (for tests, drills and the
benchmark): create a session, attach ``janus.plugin.streaming``, ``watch`` the mountpoint
with its pin, long-poll the session for the plugin's offer, answer it, and ``start`` with the
answer. The long poll runs for as long as the viewer does, which also keeps Janus's session
alive. Janus 1.1.2 has no WHEP, hence this. :attr:`EdgeViewer.hangup` is set when Janus hangs
up, stops answering the long poll, or sends no media for :data:`MEDIA_TIMEOUT_S`: the site's
cue to ask ccctl again where to play from. A tier change is ccctl's ``switch`` on this
viewer's handle (:attr:`EdgeViewer.ids`, reported to ccctl): the same connection carries the
other tier's mountpoint from then on, and :attr:`EdgeViewer.switched` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ccctl.edges import EdgeError
from ccctl.edges.janus import PLUGIN

POLL_MAX_EVENTS = 10
#: Seconds without a new RTP packet, once connected, after which the edge counts as gone (a
#: silent edge: no hangup, no error, the long poll just hangs), as a browser's ICE goes
#: ``disconnected`` after a few seconds.
MEDIA_TIMEOUT_S = 5.0


class EdgeViewer:
    """One peer connection watching mountpoint ``mount_id`` of the Janus at ``url``."""

    def __init__(self, url: str, mount_id: int, pin: str, timeout: float = 30.0,
                 media_timeout: float | None = MEDIA_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.media_timeout = media_timeout
        self.mount_id = mount_id
        self.pin = pin
        self.timeout = timeout
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tracks: dict[str, Any] = {}
        self.connected = asyncio.Event()
        self.hangup = asyncio.Event()  # Janus hung up (the edge destroyed the mountpoint, or died)
        self.switched = asyncio.Event()  # set (and replaced) when Janus says it switched mountpoint
        self._http: aiohttp.ClientSession | None = None
        self._session = self._handle = 0
        self._tx = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.tracks[track.kind] = track

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()
            elif self.pc.connectionState in ("failed", "closed"):
                self.hangup.set()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        try:
            async with self._http.post(f"{self.url}{path}", json=body) as r:
                reply: dict[str, Any] = await r.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise EdgeError(f"edge {self.url}: not answering ({type(exc).__name__})") from None
        if reply.get("janus") == "error":
            raise EdgeError(f"edge {self.url}: {(reply.get('error') or {}).get('reason')}")
        return reply

    async def _message(self, body: dict[str, Any], jsep: dict[str, str] | None = None) -> dict[str, Any]:
        """A plugin message whose answer comes as an event on the long poll."""
        tx = f"v{next(self._tx)}"
        future = self._waiting[tx] = asyncio.get_running_loop().create_future()
        try:
            msg: dict[str, Any] = {"janus": "message", "body": body, "transaction": tx}
            if jsep is not None:
                msg["jsep"] = jsep
            reply = await self._post(f"/{self._session}/{self._handle}", msg)
            if reply.get("janus") == "event":
                return reply
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._waiting.pop(tx, None)

    async def _poll(self) -> None:
        assert self._http is not None
        while True:
            try:
                async with self._http.get(f"{self.url}/{self._session}", params={"maxev": str(POLL_MAX_EVENTS)},
                                          timeout=aiohttp.ClientTimeout(total=60)) as r:
                    events = await r.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                self.hangup.set()  # the edge is gone
                return
            for event in events if isinstance(events, list) else [events]:
                if not isinstance(event, dict):
                    continue
                if event.get("janus") == "hangup":
                    self.hangup.set()
                result = ((event.get("plugindata") or {}).get("data") or {}).get("result") or {}
                if isinstance(result, dict) and result.get("switched") == "ok":  # ccctl moved us (tier)
                    self.mount_id = int(result.get("id", self.mount_id))
                    self.switched.set()
                    self.switched = asyncio.Event()
                waiter = self._waiting.get(str(event.get("transaction")))
                if waiter is None or waiter.done() or event.get("janus") != "event":
                    continue
                data = (event.get("plugindata") or {}).get("data") or {}
                if "error" in data:
                    waiter.set_exception(EdgeError(f"edge {self.url}: {data['error']}"))
                else:
                    waiter.set_result(event)

    @property
    def ids(self) -> dict[str, int]:
        """The Janus session and handle this viewer plays on: what it tells ccctl, so that
        ccctl can ``switch`` it to another tier and find it among the edge's viewers."""
        return {"session": self._session, "handle": self._handle}

    async def _watch_media(self, timeout: float) -> None:
        """Hang up when no RTP has arrived for ``timeout`` seconds (checked every second)."""
        await self.connected.wait()
        last, since = -1, time.monotonic()
        while not self.hangup.is_set():
            stats = await self.pc.getStats()
            packets = sum(getattr(s, "packetsReceived", 0) for s in stats.values() if s.type == "inbound-rtp")
            now = time.monotonic()
            if packets != last:
                last, since = packets, now
            elif now - since >= timeout:
                self.hangup.set()
                return
            await asyncio.sleep(1.0)  # a watchdog's period, not a synchronisation

    async def start(self) -> EdgeViewer:
        """Watch: session, attach, ``watch`` with the pin, answer the offer, ``start``."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            self._session = int((await self._post("", {"janus": "create", "transaction": "c"}))["data"]["id"])
            reply = await self._post(f"/{self._session}", {"janus": "attach", "plugin": PLUGIN, "transaction": "a"})
            self._handle = int(reply["data"]["id"])
            self._poller = asyncio.create_task(self._poll())
            event = await self._message({"request": "watch", "id": self.mount_id, "pin": self.pin})
            offer = event.get("jsep")
            if not offer:
                raise EdgeError(f"edge {self.url}: watch gave no offer")
            await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self._message({"request": "start"}, {"type": "answer", "sdp": self.pc.localDescription.sdp})
            if self.media_timeout is not None:
                self._watchdog = asyncio.create_task(self._watch_media(self.media_timeout))
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Leave: close the peer connection, stop polling, destroy the session (best effort)."""
        await self.pc.close()
        for task in (self._poller, self._watchdog):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            if self._session and not self.hangup.is_set():  # a gone edge: no goodbye to wait for
                with contextlib.suppress(EdgeError, aiohttp.ClientError, OSError, TimeoutError):
                    async with http.post(f"{self.url}/{self._session}", json={"janus": "destroy", "transaction": "d"}):
                        pass
            await http.close()

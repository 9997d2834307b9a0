"""An async client of Janus's HTTP API, for the admin side of its streaming plugin.

One :class:`JanusClient` is one Janus session with one handle on ``janus.plugin.streaming``:
``create``/``destroy`` RTP mountpoints (with the plugin's ``admin_key``; port 0 lets Janus
choose from its ``rtp_port_range`` and the answer says which), ``info`` (viewer count) and
``list``. These plugin requests are synchronous in the streaming plugin: the answer comes in
the POST's reply, so no long poll is needed here. Janus drops a session after its
``session_timeout`` (60 s by default) without a request: :meth:`JanusClient.keepalive`
is the caller's to send (the health loop's probe does).

Errors (Janus unreachable, a refusal, a malformed reply) are :class:`~ccctl.edges.EdgeError`
naming the edge's URL and Janus's own reason; the admin key is never part of a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from ccctl.edges import EdgeError

PLUGIN = "janus.plugin.streaming"
#: Seconds a request to an edge may take before the edge counts as not answering.
REQUEST_TIMEOUT_S = 5.0
VIDEO_PT, AUDIO_PT = 96, 111
H264_FMTP = "profile-level-id=42e01f;packetization-mode=1"
MOUNT_PREFIX = "ccctl-"


@dataclass(frozen=True)
class Mountpoint:
    """An RTP mountpoint Janus created: its id, and the UDP port of each media (by ``mid``)."""

    id: int
    ports: dict[str, int]


class JanusClient:
    """One session and streaming-plugin handle on the Janus at ``url`` (``http://H:P/janus``)."""

    def __init__(self, url: str, admin_key: str | None = None, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._admin_key = admin_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self.session = 0
        self.handle = 0
        self._tx = itertools.count(1)

    async def open(self) -> JanusClient:
        """Create the session and attach the streaming plugin."""
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        try:
            self.session = int((await self._post("", {"janus": "create"}))["data"]["id"])
            reply = await self._post(f"/{self.session}", {"janus": "attach", "plugin": PLUGIN})
            self.handle = int(reply["data"]["id"])
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self, goodbye: bool = True) -> None:
        """Destroy the session (best effort; not with ``goodbye=False``, for an edge known
        dead) and the HTTP client."""
        http, self._http = self._http, None
        if http is None:
            return
        if self.session and goodbye:
            try:
                async with http.post(f"{self.url}/{self.session}", json={"janus": "destroy", "transaction": "bye"}):
                    pass
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
        await http.close()

    async def __aenter__(self) -> JanusClient:
        return await self.open()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            raise EdgeError(f"edge {self.url}: client is closed")
        return await janus_call(self._http, f"{self.url}{path}", body | {"transaction": f"cc{next(self._tx)}"},
                                f"edge {self.url}")

    async def keepalive(self) -> None:
        """Tell Janus the session is in use (also a cheap liveness probe)."""
        await self._post(f"/{self.session}", {"janus": "keepalive"})

    async def request(self, body: dict[str, Any], admin: bool = False) -> dict[str, Any]:
        """A synchronous streaming-plugin request; the plugin's data (``error`` raised)."""
        if admin:
            if not self._admin_key:
                raise EdgeError(f"edge {self.url}: no admin key for {body.get('request')}")
            body = body | {"admin_key": self._admin_key}
        reply = await self._post(f"/{self.session}/{self.handle}", {"janus": "message", "body": body})
        data = (reply.get("plugindata") or {}).get("data")
        if not isinstance(data, dict):
            raise EdgeError(f"edge {self.url}: no answer to {body.get('request')} (janus {reply.get('janus')})")
        if "error" in data:
            raise EdgeError(f"edge {self.url}: {body.get('request')}: {data.get('error')} ({data.get('error_code')})")
        return data

    async def hangup(self, session: int, handle: int) -> None:
        """Hang up a viewer's handle (another session's: the site's, which it gave ccctl): Janus
        closes its connection and tells it (``hangup``) on its own long poll."""
        reply = await self._post(f"/{session}/{handle}", {"janus": "hangup"})
        if reply.get("janus") not in ("success", "ack"):
            raise EdgeError(f"edge {self.url}: hangup answered {reply.get('janus')}")

    async def switch(self, session: int, handle: int, mount_id: int) -> None:
        """Move a viewer's handle (another session's: the site's, which it gave ccctl) to
        mountpoint ``mount_id`` on its connection. Janus acks at once and tells the viewer
        (``switched``) on its own long poll; a refusal in the ack is an EdgeError."""
        reply = await self._post(f"/{session}/{handle}", {"janus": "message",
                                                          "body": {"request": "switch", "id": mount_id}})
        if reply.get("janus") not in ("ack", "event"):
            raise EdgeError(f"edge {self.url}: switch answered {reply.get('janus')}")
        data = (reply.get("plugindata") or {}).get("data") or {}
        if "error" in data:
            raise EdgeError(f"edge {self.url}: switch: {data.get('error')} ({data.get('error_code')})")

    async def create_rtp(self, name: str, audio: bool, video: bool, *, iface: str, pin: str, secret: str,
                         srtp_key: bytes | None = None) -> Mountpoint:
        """A private RTP mountpoint (Opus ``a``, H.264 ``v``) on ports Janus chooses (port 0),
        bound to ``iface``; viewers need ``pin``, changes need ``secret``. Not kept across a
        restart of Janus (``permanent`` false): ccctl recreates what it needs. With
        ``srtp_key`` (30 bytes), what it receives must be SRTP under that key (suite
        AES_CM_128_HMAC_SHA1_80); Janus never gives the key back (``info`` says ``srtp``)."""
        media: list[dict[str, Any]] = []
        if audio:
            media.append({"type": "audio", "mid": "a", "port": 0, "pt": AUDIO_PT, "codec": "opus", "iface": iface})
        if video:
            media.append({"type": "video", "mid": "v", "port": 0, "pt": VIDEO_PT, "codec": "h264",
                          "fmtp": H264_FMTP, "iface": iface})
        data = await self.request({"request": "create", "type": "rtp", "name": name, "description": name,
                                   "is_private": True, "pin": pin, "secret": secret, "permanent": False,
                                   "media": media} | _srtp(srtp_key), admin=True)
        stream = data.get("stream") or {}
        try:
            ports = {str(p["mid"]): int(p["port"]) for p in stream.get("ports", [])}
            mount = Mountpoint(int(stream["id"]), ports)
        except (KeyError, TypeError, ValueError):
            raise EdgeError(f"edge {self.url}: create answered without id or ports") from None
        if set(ports) != {m["mid"] for m in media}:
            raise EdgeError(f"edge {self.url}: create answered ports for {sorted(ports)}")
        return mount

    async def destroy(self, mount_id: int, secret: str) -> None:
        """Remove a mountpoint (its viewers are hung up); gone already is not an error."""
        try:
            await self.request({"request": "destroy", "id": mount_id, "secret": secret, "permanent": False})
        except EdgeError as exc:
            if "(455)" not in str(exc):  # JANUS_STREAMING_ERROR_NO_SUCH_MOUNTPOINT
                raise

    async def info(self, mount_id: int, secret: str) -> dict[str, Any]:
        """The plugin's ``info`` on a mountpoint (``viewers`` among it, given its secret)."""
        data = await self.request({"request": "info", "id": mount_id, "secret": secret})
        info = data.get("info")
        if not isinstance(info, dict):
            raise EdgeError(f"edge {self.url}: info answered without info")
        return info

    async def list(self) -> list[dict[str, Any]]:
        """Every mountpoint (private ones too, with the admin key when there is one)."""
        data = await self.request({"request": "list"}, admin=bool(self._admin_key))
        return [m for m in data.get("list", []) if isinstance(m, dict)]


class JanusAdmin:
    """Janus's admin API at ``url`` (``http://H:7088/admin``), with its ``admin_secret``: what
    ccctl reads of an edge's viewers (``handle_info``: which mountpoint a handle watches, its
    WebRTC state and what was sent to it). Errors are :class:`~ccctl.edges.EdgeError`; a
    handle or session that is gone is :class:`Gone`."""

    def __init__(self, url: str, secret: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._secret = secret
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        self._tx = itertools.count(1)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._http.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = body | {"transaction": f"ca{next(self._tx)}", "admin_secret": self._secret}
        return await janus_call(self._http, f"{self.url}{path}", body, f"edge admin {self.url}")

    async def handle_info(self, session: int, handle: int) -> dict[str, Any]:
        """Janus's ``handle_info`` of one handle (:class:`Gone` when it or its session is)."""
        info = (await self._post(f"/{session}/{handle}", {"janus": "handle_info"})).get("info")
        if not isinstance(info, dict):
            raise EdgeError(f"edge admin {self.url}: handle_info answered without info")
        return info


class Gone(EdgeError):
    """The Janus session or handle asked about does not exist (any more)."""


JANUS_ERROR_SESSION_NOT_FOUND, JANUS_ERROR_HANDLE_NOT_FOUND = 458, 459


async def janus_call(http: aiohttp.ClientSession, url: str, body: dict[str, Any], who: str) -> dict[str, Any]:
    """POST one Janus request (its API or its admin API) and return the reply; an HTTP or
    transport failure, a reply that is not an object and a Janus error are one-line
    :class:`~ccctl.edges.EdgeError` naming ``who``, a session or handle that is gone is :class:`Gone`."""
    try:
        async with http.post(url, json=body) as r:
            if r.status != 200:
                raise EdgeError(f"{who}: HTTP {r.status}")
            reply = await r.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise EdgeError(f"{who}: not answering ({type(exc).__name__}: {exc})") from None
    if not isinstance(reply, dict):
        raise EdgeError(f"{who}: unexpected reply")
    if reply.get("janus") == "error":
        error = reply.get("error") or {}
        if error.get("code") in (JANUS_ERROR_SESSION_NOT_FOUND, JANUS_ERROR_HANDLE_NOT_FOUND):
            raise Gone(f"{who}: {error.get('reason')}")
        raise EdgeError(f"{who}: janus error {error.get('code')}: {error.get('reason')}")
    return reply


def viewer_of(info: dict[str, Any]) -> dict[str, Any] | None:
    """From a ``handle_info``: the streaming mountpoint the handle watches, whether its media
    started, and what Janus sent it (``packets``, ``bytes``, ``kbps`` over the last second,
    ``rtt_ms``), or None when it is no streaming viewer."""
    plugin = info.get("plugin_specific")
    if info.get("plugin") != PLUGIN or not isinstance(plugin, dict) or plugin.get("state") != "watching":
        return None
    packets = octets = lastsec = 0
    rtts = []
    media = ((info.get("webrtc") or {}).get("media") or {})
    for m in media.values() if isinstance(media, dict) else ():
        out = ((m.get("stats") or {}).get("out") or {}) if isinstance(m, dict) else {}
        packets += int(out.get("packets") or 0)
        octets += int(out.get("bytes") or 0)
        lastsec += int(out.get("bytes_lastsec") or 0)
        rtt = (((m.get("rtcp") or {}).get("main") or {}).get("rtt")) if isinstance(m, dict) else None
        if isinstance(rtt, int | float) and rtt > 0:
            rtts.append(float(rtt))
    flags = info.get("flags") or {}
    try:
        mount = int(plugin["mountpoint_id"])
    except (KeyError, TypeError, ValueError):
        return None
    return {"mount": mount, "started": bool(flags.get("ready")) and not flags.get("stopped"),
            "packets_sent": packets, "bytes_sent": octets, "kbps": round(lastsec * 8 / 1000, 1),
            "rtt_ms": max(rtts) if rtts else None}


def _srtp(key: bytes | None) -> dict[str, Any]:
    """The ``create`` fields that make a mountpoint take SRTP under ``key`` (none: plain RTP)."""
    if key is None:
        return {}
    return {"srtpsuite": 80, "srtpcrypto": base64.b64encode(key).decode()}


def mount_name(broadcast_id: int, tier: str) -> str:
    """The name (and description) of ccctl's mountpoint for one tier of one broadcast."""
    return f"{MOUNT_PREFIX}b{broadcast_id}-{tier}"


def derived(admin_key: str, purpose: str, name: str) -> str:
    """A mountpoint's ``secret`` or ``pin``, derived from the edge's admin key and its name.

    Any console holding the key file finds the same values (``edge status`` reads viewer
    counts with the secret) and nothing else has to be stored; a viewer only ever learns the
    pin of the mountpoint it may watch, which says nothing of the key (HMAC-SHA256).
    """
    digest = hmac.new(admin_key.encode(), f"ccctl/{purpose}/{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()

"""A fleet of simulated bridge points: real asyncssh servers on distinct loopback addresses.

``Fleet`` starts one listener per ``SimEndpointSpec`` in the running event loop, each with its
own ed25519 host key kept in ``<state_dir>/hostkeys.json`` (mode 0600) so a restarted fleet
serves the same keys and a registry filled once stays valid. Faults that live below SSH are
made real on the socket:

* ``down``: nothing is bound, so connects are refused.
* ``blackhole``: a plain socket listens with backlog 0 and the fleet fills its accept queue with
  its own connection(s), which it never accepts. Linux then drops further SYNs (a full accept
  queue drops the SYN, syncookies or not), so a client's connect hangs until its own timeout,
  as with a silent firewall. The queue is checked full with ``TCP_INFO`` where available.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import asyncssh

from ccctl.limits import raise_nofile_limit
from ccctl.sim.endpoint import (
    EndpointStats,
    ServerSettings,
    SimEndpoint,
    SimEndpointSpec,
    SimServer,
    handle_process,
)
from ccctl.sim.faults import BLACKHOLE, DOWN, HOSTKEY

HOST_KEYS_FILE = "hostkeys.json"
_MAX_FILL = 8  # connections to try when filling a blackhole's accept queue
_FILL_TIMEOUT_S = 2.0


@dataclass
class FleetStats:
    """Counters across the fleet and per site, for ``sim status``."""

    endpoints: int = 0
    listening: int = 0
    connections: int = 0
    dropped: int = 0
    open: int = 0
    auth_ok: int = 0
    auth_failed: int = 0
    commands: int = 0
    per_site: dict[str, dict[str, int]] = field(default_factory=dict)


class HostKeyStore:
    """The fleet's host keys on disk: ``{"served": {site: key}, "published": {site: key}}``.

    ``served`` holds each endpoint's own key; ``published`` holds the decoy keys announced for
    ``hostkey``-faulted sites. Keys are OpenSSH private keys; the file is kept at mode 0600.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, str]] = {"served": {}, "published": {}}
        self._keys: dict[tuple[str, str], asyncssh.SSHKey] = {}
        self._dirty = False
        if path.exists():
            try:
                loaded = json.loads(path.read_text())
                for section in self._data:
                    self._data[section].update(loaded.get(section, {}))
            except (ValueError, AttributeError, TypeError) as exc:
                raise ValueError(f"unreadable host key file {path}: {exc}") from exc

    def get(self, section: str, site_id: str) -> asyncssh.SSHKey:
        """The key of ``site_id`` in ``section``, generated (and marked for saving) if new."""
        cached = self._keys.get((section, site_id))
        if cached is not None:
            return cached
        text = self._data[section].get(site_id)
        if text is None:
            key = asyncssh.generate_private_key("ssh-ed25519")
            self._data[section][site_id] = key.export_private_key().decode()
            self._dirty = True
        else:
            key = asyncssh.import_private_key(text)
        self._keys[(section, site_id)] = key
        return key

    def save(self) -> None:
        """Write the file atomically at mode 0600 if keys were added since the last save."""
        if self._dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(self._data, fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
            self._dirty = False

    def fix_mode(self) -> None:
        """Put the file back to 0600 if someone loosened it: it holds private keys."""
        if self.path.exists() and self.path.stat().st_mode & 0o777 != 0o600:
            os.chmod(self.path, 0o600)


class Fleet:
    """Simulated endpoints served from this process; use ``async with`` or start()/close().

    ``authorized_key`` is the OpenSSH public key line of the operator's client key; ``user``
    is the accepted login name (None accepts any). Site ids must be unique. Host keys can be
    read before start (to fill a registry); they are saved as soon as they are made. A Fleet
    starts once; make a new one (same ``state_dir``) to restart.
    """

    def __init__(self, specs: Sequence[SimEndpointSpec], authorized_key: str,
                 state_dir: str | os.PathLike[str], *, user: str | None = "ccctl",
                 login_timeout_s: float = 60.0) -> None:
        ids = [spec.site_id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate site ids in fleet specs")
        self.specs = list(specs)
        self._by_id = {spec.site_id: spec for spec in self.specs}
        self._settings = ServerSettings(asyncssh.import_public_key(authorized_key), user)
        self._store = HostKeyStore(Path(state_dir) / HOST_KEYS_FILE)
        self._login_timeout_s = login_timeout_s
        self._endpoints: dict[str, SimEndpoint] = {}
        self._ports: dict[str, int] = {}
        self._acceptors: list[asyncssh.SSHAcceptor] = []
        self._sockets: list[socket.socket] = []
        self._started = False

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind every endpoint; on any failure close what was opened and re-raise."""
        if self._started:
            raise RuntimeError("fleet already started")
        self._started = True
        raise_nofile_limit()
        try:
            for spec in self.specs:
                self._store.get("served", spec.site_id)
                if spec.fault and spec.fault.kind == HOSTKEY:
                    self._store.get("published", spec.site_id)
            self._store.save()
            self._store.fix_mode()
            for spec in self.specs:
                await self._start_one(spec)
        except BaseException:
            await self.close()
            raise

    async def _start_one(self, spec: SimEndpointSpec) -> None:
        """Start the listener (or the socket trick) that one spec asks for."""
        endpoint = SimEndpoint(spec, self._settings)
        self._endpoints[spec.site_id] = endpoint
        kind = spec.fault.kind if spec.fault else None
        if kind == DOWN:
            self._ports[spec.site_id] = spec.port or _unused_port(spec.host)
        elif kind == BLACKHOLE:
            self._ports[spec.site_id] = await self._blackhole(spec.host, spec.port)
        else:
            acceptor = await asyncssh.listen(
                spec.host, spec.port,
                server_factory=functools.partial(SimServer, endpoint),
                process_factory=handle_process,
                server_host_keys=[self._store.get("served", spec.site_id)],
                password_auth=False, kbdint_auth=False, allow_pty=True,
                agent_forwarding=False, x11_forwarding=False,
                login_timeout=self._login_timeout_s,
            )
            self._acceptors.append(acceptor)
            self._ports[spec.site_id] = acceptor.get_port()

    async def _blackhole(self, host: str, port: int) -> int:
        """Listen with backlog 0 and fill the accept queue ourselves; return the bound port."""
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sockets.append(listener)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(0)
        bound = int(listener.getsockname()[1])
        for _ in range(_MAX_FILL):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            self._sockets.append(filler)
            await asyncio.wait_for(loop.sock_connect(filler, (host, bound)), _FILL_TIMEOUT_S)
            full = _accept_queue_full(listener)
            if full is None or full:
                return bound
        raise RuntimeError(f"could not fill the accept queue of blackhole {host}:{bound}")

    async def close(self) -> None:
        """Stop listening, drop every open connection and wait for all of it to finish."""
        for acceptor in self._acceptors:
            acceptor.close()
        conns = list(self._settings.connections)
        for conn in conns:
            conn.close()
        for sock in self._sockets:
            sock.close()
        await asyncio.gather(*(acceptor.wait_closed() for acceptor in self._acceptors),
                             *(conn.wait_closed() for conn in conns),
                             return_exceptions=True)
        self._acceptors.clear()
        self._sockets.clear()
        self._settings.connections.clear()

    @property
    def site_ids(self) -> list[str]:
        """The ids of the fleet's sites, in spec order."""
        return [spec.site_id for spec in self.specs]

    def address(self, site_id: str) -> tuple[str, int]:
        """Where a client should connect for ``site_id`` (the bound port when spec port was 0)."""
        spec = self._spec(site_id)
        return spec.host, self._ports.get(site_id, spec.port)

    def published_host_key(self, site_id: str) -> str:
        """The OpenSSH public key line a registry should record for ``site_id``.

        For a ``hostkey``-faulted site this is a different key from the one served, so a
        client checking it sees a mismatch.
        """
        spec = self._spec(site_id)
        section = "published" if spec.fault and spec.fault.kind == HOSTKEY else "served"
        return self._public_line(section, site_id)

    def served_host_key(self, site_id: str) -> str:
        """The OpenSSH public key line the endpoint actually presents."""
        self._spec(site_id)
        return self._public_line("served", site_id)

    def _public_line(self, section: str, site_id: str) -> str:
        """A stored key's public line, saving the key first if it was just made (before start)."""
        key = self._store.get(section, site_id)
        self._store.save()
        return _public_line(key)

    def stats(self) -> FleetStats:
        """Connection, auth and command counters, per site and in total."""
        result = FleetStats(endpoints=len(self.specs), listening=len(self._acceptors))
        for site_id, endpoint in self._endpoints.items():
            counts = endpoint.stats.as_dict()
            result.per_site[site_id] = counts
            for name in EndpointStats.__slots__:
                setattr(result, name, getattr(result, name) + counts[name])
        return result

    def _spec(self, site_id: str) -> SimEndpointSpec:
        """The spec of ``site_id``; KeyError naming it when unknown."""
        try:
            return self._by_id[site_id]
        except KeyError:
            raise KeyError(f"no simulated site {site_id!r}") from None


def _accept_queue_full(listener: socket.socket) -> bool | None:
    """Whether a listening socket's accept queue is full, from Linux TCP_INFO; None if unknown.

    For a listener, ``tcpi_unacked`` is the queue length and ``tcpi_sacked`` the backlog; the
    kernel drops SYNs once length > backlog.
    """
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return None
    try:
        raw = listener.getsockopt(socket.IPPROTO_TCP, tcp_info, 32)
    except OSError:
        return None
    if len(raw) < 32:
        return None
    queued, backlog = struct.unpack_from("=II", raw, 24)
    return bool(queued > backlog)


def _unused_port(host: str) -> int:
    """A port nothing listens on at ``host``, for a ``down`` site asked to use port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _public_line(key: asyncssh.SSHKey) -> str:
    """``ssh-ed25519 AAAA...`` without a comment."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])

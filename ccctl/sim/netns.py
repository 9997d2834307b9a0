"""Real link faults between private network namespaces: latency, loss and rate on a veth pair.

The simulator's ``loss`` and ``bwcap`` faults act inside our own receivers (fast, and they
run anywhere); this module makes the kernel do it instead, for tests and benchmarks that
need a real network path: :class:`Link` makes two fresh network namespaces joined by a
veth pair with one private address at each end (``10.213.0.1`` and ``.2`` by default),
nothing else in them but ``lo``, so nothing outside is ever reached. Programs run inside
one end with ``ip netns exec`` (:meth:`Link.exec`); :meth:`Link.shape` puts faults on an
end's egress:

* delay: ``tc netem`` (the kernel's network emulator; needs ``sch_netem``);
* loss: a classic BPF classifier (``cls_bpf``) that sends that share of the IPv4 packets,
  chosen at random by the kernel, to an HTB class whose queue holds nothing, so they are
  dropped. ARP is never dropped, so 100 % is a silent blackhole (a connect hangs) rather
  than a failed neighbour (no route to host). This works on kernels built without netem;
  with a delay as well, netem does the dropping (of every packet, ARP included);
* rate: ``tbf`` (a token bucket) as the queue of the link's class.

:func:`why_unavailable` says in one line why this machine cannot do it (not root, no
iproute2, a kernel without netem for delays), so tests can skip with that reason.
:meth:`Link.close` (also on ``with`` exit) kills what still runs in the namespaces and deletes
them, which deletes the veth pair; namespaces left by a process that died are removed by the
next :class:`Link` (they carry its pid). ``veth``/``ip``/``tc`` are the building blocks, also
used by ``benchmarks/janus.py`` inside its own ``unshare --net`` namespace.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from types import TracebackType

from ccctl.limits import pid_exists

PREFIX = "ccctl-"
_COMMAND_TIMEOUT_S = 15.0
_RANDOM = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: a classic BPF load of a random u32
_LOSS_SCALE = 10_000  # loss resolution: 0.01 %


class NetnsError(RuntimeError):
    """An ``ip``/``tc`` command failed; the message names it and the kernel's answer."""


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)


def ip_binary() -> str | None:
    """The ``ip`` executable (iproute2), or None."""
    return _binary("ip")


def _run(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(argv[1:])}: {exc}") from None
    if done.returncode != 0:
        name = os.path.basename(argv[0])
        raise NetnsError(f"{name} {' '.join(argv[1:])}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def ip(*args: str, netns: str | None = None) -> str:
    """Run ``ip [-n NETNS] ARGS``; its stdout, or NetnsError."""
    binary = ip_binary()
    if binary is None:
        raise NetnsError("ip (iproute2) is not installed")
    return _run([binary, *(["-n", netns] if netns else []), *args])


def tc(*args: str, netns: str | None = None) -> str:
    """Run ``tc [-n NETNS] ARGS``; its stdout, or NetnsError."""
    binary = _binary("tc")
    if binary is None:
        raise NetnsError("tc (iproute2) is not installed")
    return _run([binary, *(["-n", netns] if netns else []), *args])


def veth(dev: str, peer: str, *, addresses: Sequence[str] = (), peer_addresses: Sequence[str] = (),
         netns: str | None = None, peer_netns: str | None = None) -> None:
    """A veth pair ``dev`` (in ``netns``, default the current one) <-> ``peer`` (in ``peer_netns``,
    default beside ``dev``), each with its ``ADDR/PREFIX`` addresses, both up, ``lo`` up too."""
    ip("link", "add", dev, "type", "veth", "peer", "name", peer, *(["netns", peer_netns] if peer_netns else []),
       netns=netns)
    for where, name, addrs in ((netns, dev, addresses), (peer_netns or netns, peer, peer_addresses)):
        ip("link", "set", "lo", "up", netns=where)
        for addr in addrs:
            ip("addr", "add", addr, "dev", name, netns=where)
        ip("link", "set", name, "up", netns=where)


def _loss_program(loss_pct: float) -> str:
    """tc's ``bytecode`` text of a classic BPF classifier matching ``loss_pct`` % of packets at random.

    A = random; A %= 10000; A >= threshold: no match (0), else the filter's class (-1).
    """
    threshold = max(0, min(_LOSS_SCALE, round(loss_pct * _LOSS_SCALE / 100)))
    ops = [(0x20, 0, 0, _RANDOM), (0x94, 0, 0, _LOSS_SCALE), (0x35, 0, 1, threshold),
           (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFFFFFF)]
    return ",".join([str(len(ops))] + [" ".join(str(x) for x in op) for op in ops])


def _burst_bytes(rate_kbit: float) -> int:
    """A token bucket of about 10 ms of traffic, at least a few full packets."""
    return max(4 * 1514, int(rate_kbit * 1000 / 8 / 100))


def shape(dev: str, *, delay_ms: float = 0, loss_pct: float = 0, rate_kbit: float = 0,
          netns: str | None = None) -> None:
    """Put faults on ``dev``'s egress (replacing any before); all zero clears them.

    See the module doc for how each is made. Raises NetnsError when the kernel lacks what
    is asked (netem for a delay).
    """
    clear(dev, netns=netns)
    if not (delay_ms or loss_pct or rate_kbit):
        return
    if delay_ms:
        netem = ["delay", f"{delay_ms:g}ms"] + (["loss", "random", f"{loss_pct:g}%"] if loss_pct else [])
        tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "netem", *netem, netns=netns)
        if rate_kbit:
            tc("qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "tbf", "rate", f"{rate_kbit:g}kbit",
               "burst", str(_burst_bytes(rate_kbit)), "latency", "1s", netns=netns)
        return
    # HTB only to hold two classes: 1:10 the link (its queue a tbf when rated), 1:20 the drop.
    tc("qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10", "r2q", "1000", netns=netns)
    tc("class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit", "quantum", "60000",
       netns=netns)
    if rate_kbit:
        tc("qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "tbf", "rate", f"{rate_kbit:g}kbit",
           "burst", str(_burst_bytes(rate_kbit)), "latency", "1s", netns=netns)
    if loss_pct:
        tc("class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate", "8kbit", "quantum", "1514",
           netns=netns)
        tc("qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "pfifo", "limit", "0", netns=netns)
        tc("filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "bpf", "bytecode",
           _loss_program(loss_pct), "classid", "1:20", netns=netns)


def clear(dev: str, *, netns: str | None = None) -> None:
    """Remove every fault from ``dev``'s egress (its default queue comes back)."""
    try:
        tc("qdisc", "del", "dev", dev, "root", netns=netns)
    except NetnsError as exc:
        if "handle of zero" not in str(exc) and "No such file" not in str(exc):
            raise


def drops(dev: str, *, netns: str | None = None) -> int:
    """Packets the faults on ``dev`` have dropped so far (the root qdisc's counter)."""
    out = tc("-s", "qdisc", "show", "dev", dev, "root", netns=netns)
    for part in out.split("(dropped ")[1:2]:
        return int(part.split(",")[0])
    return 0


def namespaces() -> list[str]:
    """The names of the network namespaces ``ip netns`` knows."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def remove_namespace(name: str) -> None:
    """Kill what runs in namespace ``name`` (all started by us: it is ours) and delete it."""
    try:
        pids = [int(p) for p in ip("netns", "pids", name).split()]
    except NetnsError:
        pids = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    ip("netns", "del", name)


def clean_stale() -> int:
    """Delete the namespaces of Links whose process has died (killed before it could); how many."""
    removed = 0
    for name in namespaces():
        parts = name.split("-")
        if name.startswith(PREFIX) and len(parts) >= 3 and parts[1].isdigit() and not pid_exists(int(parts[1])):
            try:
                remove_namespace(name)
                removed += 1
            except NetnsError:
                pass
    return removed


class Link:
    """Two fresh network namespaces, ``near`` and ``far``, joined by a veth pair.

    ``near_addr``/``far_addr`` are the two ends' addresses (the first two hosts of
    ``subnet``); the devices are ``near_dev``/``far_dev``. Use ``with`` (or close()).
    """

    _count = 0

    def __init__(self, subnet: str = "10.213.0.0/30") -> None:
        hosts = list(ipaddress.ip_network(subnet).hosts())
        if len(hosts) < 2:
            raise ValueError(f"subnet {subnet} has no room for two ends")
        Link._count += 1
        tag = f"{os.getpid()}-{Link._count}"
        self.near, self.far = f"{PREFIX}{tag}-n", f"{PREFIX}{tag}-f"
        self.near_dev, self.far_dev = "ccn0", "ccf0"
        prefix = ipaddress.ip_network(subnet).prefixlen
        self.near_addr, self.far_addr = str(hosts[0]), str(hosts[1])
        self._cidr = (f"{self.near_addr}/{prefix}", f"{self.far_addr}/{prefix}")
        self._made: list[str] = []

    def open(self) -> Link:
        """Make the namespaces and the veth pair; on failure nothing is left behind."""
        clean_stale()
        try:
            for name in (self.near, self.far):
                ip("netns", "add", name)
                self._made.append(name)
            veth(self.near_dev, self.far_dev, addresses=[self._cidr[0]], peer_addresses=[self._cidr[1]],
                 netns=self.near, peer_netns=self.far)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Kill what still runs inside and delete both namespaces (and with them the veth)."""
        errors = []
        while self._made:
            name = self._made.pop()
            try:
                remove_namespace(name)
            except NetnsError as exc:
                errors.append(str(exc))
        if errors:
            raise NetnsError("; ".join(errors))

    def __enter__(self) -> Link:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _side(self, side: str) -> tuple[str, str]:
        if side not in ("near", "far"):
            raise ValueError(f"side must be near or far, not {side!r}")
        return (self.near, self.near_dev) if side == "near" else (self.far, self.far_dev)

    def exec(self, side: str) -> list[str]:
        """The command prefix that runs a program inside ``side``'s namespace."""
        binary = ip_binary()
        if binary is None:
            raise NetnsError("ip (iproute2) is not installed")
        return [binary, "netns", "exec", self._side(side)[0]]

    def shape(self, side: str, *, delay_ms: float = 0, loss_pct: float = 0, rate_kbit: float = 0) -> None:
        """Faults on what ``side`` sends (see :func:`shape`); all zero clears them."""
        name, dev = self._side(side)
        shape(dev, delay_ms=delay_ms, loss_pct=loss_pct, rate_kbit=rate_kbit, netns=name)

    def drops(self, side: str) -> int:
        """Packets dropped so far by the faults on what ``side`` sends."""
        name, dev = self._side(side)
        return drops(dev, netns=name)


@functools.lru_cache(maxsize=4)
def why_unavailable(delay: bool = False) -> str | None:
    """Why :class:`Link` (and, with ``delay``, a delay) cannot work here, in one line; None if it can.

    Tries it for real in a throwaway pair of namespaces: root (CAP_NET_ADMIN), iproute2,
    veth, HTB, tbf, cls_bpf, and netem when ``delay``.
    """
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to make network namespaces; CI runs these tests as root"
    if ip_binary() is None or _binary("tc") is None:
        return "needs ip and tc (iproute2)"
    try:
        with Link() as link:
            link.shape("near", loss_pct=1, rate_kbit=1000)
            if delay:
                try:
                    link.shape("near", delay_ms=1)
                except NetnsError:
                    return "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM): no delay can be made"
    except NetnsError as exc:
        return f"cannot make a private link here: {exc}"
    return None

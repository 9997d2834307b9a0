"""A real Janus edge on this machine, in a network namespace of its own (tests, benchmarks, drills).

Janus gathers no ICE candidates on ``lo`` (see benchmarks/janus.py), so each edge gets a
fresh network namespace joined to the caller's by a veth pair with a private /30 in
10.213.0.0/16, chosen by the caller's pid and the edge's index (:func:`edge_subnet`: ``.1`` on
the caller's side, ``.2`` on the edge's), so that two runs at once do not share addresses): Janus's HTTP API (port 8088),
its admin API (7088; ``admin_secret`` is the admin key), its RTP ports and its only ICE
candidate are on ``.2``. The namespace holds nothing else, has no
route anywhere else, and is deleted (with the veth and whatever runs inside) by
:meth:`JanusEdge.close`; a namespace left by a process that died is removed by the next
one (``ccctl.sim.netns.clean_stale``: the name carries the pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ccctl.sim.netns import NetnsError, clean_stale, ip, ip_binary, remove_namespace, veth

ADMIN_KEY = "edge-admin-key-of-a-local-edge"  # a private, throw-away edge: written to a 0600 file


def janus_binary() -> str | None:
    """The ``janus`` executable, or None."""
    return shutil.which("janus") or next((p for p in ("/usr/bin/janus", "/opt/janus/bin/janus")
                                          if os.access(p, os.X_OK)), None)


def janus_module_dirs() -> tuple[Path, Path] | None:
    """Janus's plugins and transports folders (Debian's multiarch path or /opt), or None."""
    for pattern in ("/usr/lib/*/janus/plugins/libjanus_streaming.so", "/usr/lib/janus/plugins/libjanus_streaming.so",
                    "/opt/janus/lib/janus/plugins/libjanus_streaming.so"):
        for hit in sorted(glob.glob(pattern)):
            base = Path(hit).parent.parent
            if (base / "transports" / "libjanus_http.so").exists():
                return base / "plugins", base / "transports"
    return None


def why_unavailable() -> str | None:
    """Why real Janus edges cannot run here, in one line; None when they can."""
    if janus_binary() is None or janus_module_dirs() is None:
        return "needs Debian's janus (scripts/services.sh installs it as root)"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) for the edges' network namespaces; CI runs these tests as root"
    if ip_binary() is None:
        return "needs ip (iproute2)"
    return None


EDGES_PER_PROCESS = 8  # a process's edges take eight consecutive /30 blocks


def edge_subnet(pid: int, index: int) -> int:
    """Offset in 10.213.0.0/16 of the /30 of edge ``index`` of process ``pid``: the 2,048
    eight-block slots of the /16 are taken by pid, so runs at once (their pids differ by less
    than 2,048) never share a subnet, and a replay of one pid finds the same addresses."""
    if not 0 <= index < EDGES_PER_PROCESS:
        raise ValueError(f"edge index {index} out of 0..{EDGES_PER_PROCESS - 1}")
    slots = 65536 // (4 * EDGES_PER_PROCESS)
    return ((pid % slots) * EDGES_PER_PROCESS + index) * 4


class JanusEdge:
    """Janus (HTTP transport and streaming plugin only) in namespace ``ccctl-PID-eI``."""

    def __init__(self, index: int, folder: Path) -> None:
        self.index = index
        self.folder = folder
        self.netns = f"ccctl-{os.getpid()}-e{index}"
        self.dev, self.peer = f"cce{os.getpid()}{index}"[:15], "edge0"
        base = edge_subnet(os.getpid(), index)
        self.local_addr = f"10.213.{base // 256}.{base % 256 + 1}"  # the caller's (ccctl's and the viewers') side
        self.addr = f"10.213.{base // 256}.{base % 256 + 2}"  # Janus's side
        self.port = 8088
        self.url = f"http://{self.addr}:{self.port}/janus"
        self.admin_url = f"http://{self.addr}:7088/admin"  # Janus's admin API (admin_secret: the key)
        self.key_file = folder / "admin.key"
        self.proc: subprocess.Popen[bytes] | None = None
        self._made = False

    def open(self) -> JanusEdge:
        """Make the namespace and the veth, write the config, start Janus (not yet waited on)."""
        clean_stale()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            ip("netns", "add", self.netns)
            self._made = True
            veth(self.dev, self.peer, addresses=[f"{self.local_addr}/30"], peer_addresses=[f"{self.addr}/30"],
                 peer_netns=self.netns)
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def _config(self) -> Path:
        plugins, transports = janus_module_dirs() or (Path(), Path())
        conf, mods = self.folder / "conf", self.folder / "modules"
        for sub in ("plugins", "transports", "none"):
            (mods / sub).mkdir(parents=True, exist_ok=True)
        conf.mkdir(exist_ok=True)
        for link, target in ((mods / "plugins" / "libjanus_streaming.so", plugins / "libjanus_streaming.so"),
                             (mods / "transports" / "libjanus_http.so", transports / "libjanus_http.so")):
            if not link.exists():
                link.symlink_to(target)
        (conf / "janus.jcfg").write_text(f"""general: {{
\tconfigs_folder = "{conf}"
\tplugins_folder = "{mods / 'plugins'}"
\ttransports_folder = "{mods / 'transports'}"
\tevents_folder = "{mods / 'none'}"
\tloggers_folder = "{mods / 'none'}"
\tdebug_level = 4
\tsession_timeout = 60
\tserver_name = "ccctl-edge-{self.index}"
\tadmin_secret = "{ADMIN_KEY}"
}}
nat: {{
\tice_enforce_list = "{self.addr}"
\tignore_mdns = true
}}
media: {{
\trtp_port_range = "20000-40000"
}}
""")
        (conf / "janus.transport.http.jcfg").write_text(f"""general: {{
\tjson = "plain"
\tbase_path = "/janus"
\thttp = true
\tport = {self.port}
\tip = "{self.addr}"
\thttps = false
}}
admin: {{
\tadmin_http = true
\tadmin_base_path = "/admin"
\tadmin_port = 7088
\tadmin_ip = "{self.addr}"
\tadmin_https = false
}}
""")
        (conf / "janus.plugin.streaming.jcfg").write_text(f"""general: {{
\tadmin_key = "{ADMIN_KEY}"
\trtp_port_range = "20000-40000"
\tevents = false
}}
""")
        self.key_file.write_text(ADMIN_KEY + "\n")
        self.key_file.chmod(0o600)
        return conf

    def start(self) -> None:
        """Start Janus inside the namespace (again after :meth:`kill`)."""
        conf = self._config()
        binary = janus_binary()
        assert binary is not None and ip_binary() is not None
        log = open(self.folder / "janus.log", "ab")  # noqa: SIM115 - handed to the child
        with log:
            self.proc = subprocess.Popen([str(ip_binary()), "netns", "exec", self.netns, binary, "-C",
                                          str(conf / "janus.jcfg"), "-F", str(conf), "-o"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, seconds: float = 30.0) -> None:
        """Wait until Janus answers ``/info`` (a bounded poll: Janus has no readiness signal)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"janus {self.index} exited with {self.proc.returncode}: {self.log_tail()}")
            if await asyncio.to_thread(self._answers):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"janus {self.index} did not answer within {seconds:.0f} s: {self.log_tail()}")

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection((self.addr, self.port), timeout=1) as s:
            s.sendall(b"GET /janus/info HTTP/1.0\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.")
        return False

    def log_tail(self, lines: int = 15) -> str:
        """The end of Janus's output, for a failure message."""
        with contextlib.suppress(OSError):
            return " | ".join((self.folder / "janus.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def kill(self) -> None:
        """Kill Janus at once (an edge dying): SIGKILL, no goodbye to anyone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        """Kill Janus and delete the namespace (and with it the veth pair)."""
        self.kill()
        if self._made:
            self._made = False
            with contextlib.suppress(NetnsError):
                remove_namespace(self.netns)
            # The kernel frees a namespace (and its veth) in the background: wait until our end
            # is gone, so that the next edge of this process can take its name and address.
            deadline = time.monotonic() + 10
            while Path(f"/sys/class/net/{self.dev}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)  # a bounded poll on the kernel's cleanup, not a synchronisation
        shutil.rmtree(self.folder / "modules", ignore_errors=True)

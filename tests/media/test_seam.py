"""The one seam into aiortc, aioice and pylibsrtp internals (ccctl.media.seam) and its check.

The installed libraries pass the check. A library that changed is the one fault these tests
cannot make real (it would need another release installed): it is stood in for by putting a
*copy* of one real class, with one name taken out, where the library's module exports it
(monkeypatch; the real class is never touched), and the check must then name the library,
its version and what changed in one line, and ``ccctl serve`` exit 13 before it listens.
"""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path
from typing import Any

import aiortc.rtcrtpsender
import pylibsrtp
import pytest

from ccctl.errors import MediaError, SeamBroken
from ccctl.media import seam

from ..conftest import Ccctl, free_port

ROOT = Path(__file__).resolve().parents[2]


def copy_without(cls: type, name: str, **replace: Any) -> type:
    """A copy of ``cls`` (same name, same module) lacking ``name`` and with ``replace`` put in."""
    body = {k: v for k, v in vars(cls).items() if k not in (name, "__dict__", "__weakref__")} | replace
    return type(cls.__name__, cls.__bases__, body)


def test_the_installed_libraries_pass_the_check() -> None:
    seam.check()
    assert {r.library for r in seam.REACHES} == {"aiortc", "aioice", "pylibsrtp"}


def test_a_method_gone_from_aiortc_is_named_with_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = copy_without(aiortc.rtcrtpsender.RTCRtpSender, "_handle_rtcp_packet")
    monkeypatch.setattr(aiortc.rtcrtpsender, "RTCRtpSender", broken)
    with pytest.raises(SeamBroken) as caught:
        seam.check()
    message = str(caught.value)
    assert "\n" not in message
    version = importlib.metadata.version("aiortc")
    assert message.startswith(f"aiortc {version} changed: aiortc.rtcrtpsender.RTCRtpSender._handle_rtcp_packet is gone")
    assert SeamBroken.exit_code == 13


def test_a_private_field_no_longer_set_by_pylibsrtp_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def renamed(self: Any, policy: Any) -> None:  # a release that calls the buffer something else
        self._buf = bytearray(1500)

    monkeypatch.setattr(pylibsrtp, "Session", copy_without(pylibsrtp.Session, "__init__", __init__=renamed))
    with pytest.raises(SeamBroken, match=r"^pylibsrtp \S+ changed: pylibsrtp\.Session\._buffer is no longer set"):
        seam.check()


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def fewer(self: Any) -> None:
        return None

    broken = copy_without(aiortc.rtcrtpsender.RTCRtpSender, "_send_rtcp", _send_rtcp=fewer)
    monkeypatch.setattr(aiortc.rtcrtpsender, "RTCRtpSender", broken)
    with pytest.raises(SeamBroken, match=r"_send_rtcp now takes 1 arguments, not 2"):
        seam.check()


def test_the_moved_reaches_are_checked() -> None:
    # net.py's consent checks, ICE address patch and closed flag, and native's SRTP keys.
    checked = {(r.owner, r.name) for r in seam.REACHES}
    for owner, name in [
        ("aiortc.rtcicetransport:RTCIceTransport", "_connection"),
        ("aiortc.rtcpeerconnection:RTCPeerConnection", "_RTCPeerConnection__isClosed"),
        ("aiortc.rtcdtlstransport:RTCDtlsTransport", "_ssl"),
        ("aiortc.rtcdtlstransport:RTCDtlsTransport", "_srtp_profiles"),
        ("aiortc.rtcdtlstransport:RTCDtlsTransport", "_role"),
        ("aiortc.rtcdtlstransport:SRTPProtectionProfile", "get_key_and_salt"),
        ("aiortc.rtcdtlstransport:SRTPProtectionProfile", "key_length"),
        ("aioice.ice:Connection", "_query_consent_task"),
        ("aioice.ice:Connection", "_nominated"),
        ("aioice.ice:Connection", "query_consent"),
        ("aioice.ice:Connection", "build_request"),
        ("aioice.ice", "get_host_addresses"),
        ("aioice.ice:StunProtocol", "request"),
    ]:
        assert (owner, name) in checked, (owner, name)


def test_a_dtls_transport_that_no_longer_keeps_its_role_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiortc.rtcdtlstransport

    real = aiortc.rtcdtlstransport.RTCDtlsTransport
    # A release whose DTLS transport keeps its role elsewhere: no method of the copy assigns
    # ``_role`` (the real class's code is only read, never changed).
    body = {k: v for k, v in vars(real).items() if k not in ("__dict__", "__weakref__")}
    for name, value in list(body.items()):
        code = getattr(getattr(value, "__code__", None), "co_names", ())
        if "_role" in code:
            body[name] = lambda self, *args, **kwargs: None
    monkeypatch.setattr(aiortc.rtcdtlstransport, "RTCDtlsTransport", type(real.__name__, real.__bases__, body))
    moved = tuple(r for r in seam.REACHES if r.owner.endswith(":RTCDtlsTransport") and r.name == "_role")
    with pytest.raises(SeamBroken, match=r"^aiortc \S+ changed: aiortc\.rtcdtlstransport\.RTCDtlsTransport\._role is no "):
        seam.check(moved)  # the one reach under test (the copy lost other setters too)


def test_a_profile_field_no_longer_declared_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import aiortc.rtcdtlstransport

    @dataclasses.dataclass
    class SRTPProtectionProfile:  # a release that renamed the key length
        libsrtp_profile: int
        openssl_profile: bytes
        key_len: int
        salt_length: int

        def get_key_and_salt(self, src: bytes, idx: int) -> bytes:
            return src

    monkeypatch.setattr(aiortc.rtcdtlstransport, "SRTPProtectionProfile", SRTPProtectionProfile)
    with pytest.raises(SeamBroken, match=r"SRTPProtectionProfile\.key_length is no longer declared"):
        seam.check()


def test_serve_refuses_to_start_on_a_changed_library(monkeypatch: pytest.MonkeyPatch, ccctl: Ccctl) -> None:
    monkeypatch.setattr(aiortc.rtcrtpsender, "RTCRtpSender",
                        copy_without(aiortc.rtcrtpsender.RTCRtpSender, "_run_rtcp"))
    port = free_port()
    result = ccctl("serve", "--listen", f"127.0.0.1:{port}", "--tls", "off")
    assert result.exit_code == 13, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: aiortc ") and "RTCRtpSender._run_rtcp is gone" in lines[-1]
    assert "listening" not in result.stdout + result.stderr


def _private_reaches(path: Path) -> set[str]:
    """``x._name`` attribute uses in a module on objects other than ``self``/``cls``, less the
    names the module's own classes set on ``self`` (a forwarder's ``_ssrc``): rough, by AST."""
    found, own = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            mine = isinstance(base, ast.Name) and base.id in ("self", "cls")
            (own if mine and isinstance(node.ctx, ast.Store) else found if not mine else set()).add(node.attr)
    return found - own


def _own_fields(path: Path) -> set[str]:
    """The ``_name`` attributes a module's code sets on ``self``."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name) and node.value.id == "self"}


def test_the_moved_modules_reach_no_library_internals_themselves() -> None:
    # What the peer patch, the fan-out and the simulated site took from aiortc/aioice/pylibsrtp
    # now goes through the seam; what is left in them is ccctl's own (a forwarder's fields).
    library_names = {r.name for r in seam.REACHES} | {"_RTCRtpSender__rtt", "_tx_srtp", "_nominated"}
    for module in ("ccctl/media/core.py", "ccctl/media/fastpath.py", "ccctl/sim/receiver.py", "ccctl/media/shard.py",
                   "ccctl/media/net.py", "ccctl/media/native/__init__.py"):
        left = _private_reaches(ROOT / module) & library_names
        if module.startswith("ccctl/media/native"):  # a forwarder's own fields (fastpath.py sets them)
            left -= _own_fields(ROOT / "ccctl/media/fastpath.py")
        assert not left, (module, left)
    for module in ("ccctl/media/core.py", "ccctl/sim/receiver.py"):
        assert "RemoteBitrateEstimator" not in (ROOT / module).read_text()  # the one peer patch is in seam.py


@pytest.mark.asyncio
async def test_a_fan_out_worker_is_asked_only_what_its_table_serves() -> None:
    from ccctl.media.core import MediaCore
    from ccctl.media.shard import WORKER_CALLS, ShardedCore

    assert set(WORKER_CALLS) == {"subscribe", "unsubscribe", "set_tier", "stats", "ping"}
    assert WORKER_CALLS["set_tier"] is MediaCore.set_tier and WORKER_CALLS["stats"] is MediaCore.stats
    core = ShardedCore(workers=1)  # not started: the op is refused before any worker is needed
    with pytest.raises(MediaError, match="no fan-out worker call 'close'"):
        await core._call(core._workers[0], "close")

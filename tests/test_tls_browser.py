"""A real headless Chromium opens a join link over https: the server's certificate is issued by
a test CA made in the test, Chromium trusts that CA (by its public key hash) and nothing else,
and the page plays the broadcast from an origin that is not loopback (``cc.test``, mapped to
127.0.0.1 by Chromium's resolver), so the secure context comes from https alone."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.browser import CHROMIUM, WEBRTC_ARGS
from tests.conftest import Ccctl, free_port
from tests.media.test_tls import TestCA

TIMEOUT = 30.0
NAME = "cc.test"  # not a loopback name: the page's secure context must come from https
pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


def spki_hash(ca: TestCA) -> str:
    """Base64 of the SHA-256 of the CA's SubjectPublicKeyInfo, as Chromium's
    ``--ignore-certificate-errors-spki-list`` takes it."""
    der = ca.certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def https_server(ccctl: Ccctl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ccctl, TestCA, int]]:
    """A detached https server whose certificate (for cc.test, with the CA after it in the
    chain) the test CA issued; sites' links name https://cc.test:PORT."""
    ca = TestCA.make(tmp_path / "ca")
    cert, key = ca.issue([NAME, "127.0.0.1"], chain=True)
    port = free_port()
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", f"127.0.0.1:{port}")
    monkeypatch.setenv("CCCTL_SERVE_PUBLIC_URL", f"https://{NAME}:{port}")
    assert ccctl("sites", "add", "bn-1", "--name", "Điểm cầu Bến Nghé", "--unit", "26740", "--tier", "low").exit_code == 0
    started = ccctl("serve", "--detach", "--tls-cert", str(cert), "--tls-key", str(key))
    assert started.exit_code == 0, started.stderr
    yield ccctl, ca, port
    ccctl("serve", "--stop")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/services.sh installs it as root)")
def test_join_page_plays_over_https_in_chromium_trusting_the_test_ca(https_server: tuple[Ccctl, TestCA, int],
                                                                     tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="the test extra installs playwright")
    ccctl, ca, port = https_server
    assert ccctl("broadcast", "start").exit_code == 0
    link = ccctl.json("broadcast", "links")[0]["join_url"]
    assert link.startswith(f"https://{NAME}:{port}/join/bn-1?t=")
    args = [*WEBRTC_ARGS, f"--host-resolver-rules=MAP {NAME} 127.0.0.1"]

    async def browse() -> tuple[str, dict[str, object]]:
        async with playwright.async_playwright() as p:
            untrusting = await p.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                page = await untrusting.new_page()
                with pytest.raises(playwright.Error) as refused:
                    await page.goto(link)
                refusal = str(refused.value).splitlines()[0]
            finally:
                await untrusting.close()
            browser = await p.chromium.launch(executable_path=CHROMIUM,
                                              args=[*args, f"--ignore-certificate-errors-spki-list={spki_hash(ca)}"])
            try:
                page = await browser.new_page()
                await page.goto(link)
                await page.wait_for_function("window.ccctl.videoFrames > 10 && window.ccctl.audioPackets > 20",
                                             timeout=TIMEOUT * 1000)
                seen: dict[str, object] = await page.evaluate(
                    "({...window.ccctl, protocol: location.protocol, host: location.hostname,"
                    " secure: window.isSecureContext, camera: !!(navigator.mediaDevices"
                    " && navigator.mediaDevices.getUserMedia)})")
                await page.screenshot(path=str(tmp_path / "join-https.png"))
                return refusal, seen
            finally:
                await browser.close()

    refusal, seen = asyncio.run(browse())
    assert "ERR_CERT_AUTHORITY_INVALID" in refusal  # without trusting the test CA, no page
    assert seen["protocol"] == "https:" and seen["host"] == NAME
    assert seen["secure"] is True and seen["camera"] is True  # what a remote site needs for its camera
    assert seen["connected"] and seen["videoFrames"] > 10 and seen["audioPackets"] > 20  # type: ignore[operator]

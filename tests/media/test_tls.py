"""``ccctl serve`` over https: a test CA made here with ``cryptography`` signs the server's
certificate; the CLI against the real detached server (its certificate pinned from the card,
a wrong fingerprint refused with exit 12, a plain-http client getting nothing), the change
stream and a real aiortc site joining by WHEP over https, the self-signed certificate kept
0600 and reused, and a media failure exiting 11."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ccctl.config import ServeConfig
from ccctl.errors import CcctlError, CertificateRefused, ConfigError, MediaError, UsageError, error_class, error_names
from ccctl.media.changes import follow
from ccctl.media.client import ControlClient, ServerDown
from ccctl.media.tls import CARD_FILE, ServerTrust, cert_fingerprint, parse_fingerprint, subject_alt_names
from ccctl.media.tokens import control_token, load_secret
from tests.conftest import Ccctl, free_port
from tests.test_broadcast_e2e import whep_join

TIMEOUT = 30.0
pytestmark = pytest.mark.usefixtures("loopback_ice")  # tests/conftest.py


@dataclass
class TestCA:
    """A certificate authority of the test and what it issued, as PEM files in one folder."""

    __test__ = False  # not a test class for pytest
    folder: Path
    cert: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def make(cls, folder: Path, name: str = "ccctl test CA") -> TestCA:
        """A new self-signed CA (ECDSA P-256) written to ``folder/ca.pem``."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "ca.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder, path, key, cert)

    def issue(self, names: list[str], stem: str = "server", chain: bool = False) -> tuple[Path, Path]:
        """A server certificate for ``names`` (IPs or DNS names) and its key: (cert file, key
        file); with ``chain`` the CA's certificate follows the server's in the cert file."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt = subject_alt_names(names)
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.certificate.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))
        cert_path, key_path = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if chain:
            pem += self.certificate.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(pem)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        return cert_path, key_path


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    """A fresh test CA in its own folder."""
    return TestCA.make(tmp_path / "ca")


@pytest.fixture
def tls_server(ccctl: Ccctl, ca: TestCA, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ccctl, str, Path]]:
    """A detached server on https with a certificate of the test CA, one site to invite:
    (the CLI, the listen address, the server's certificate file)."""
    listen = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", listen)
    cert, key = ca.issue(["127.0.0.1"])
    assert ccctl("sites", "add", "bn-1", "--name", "Điểm cầu Bến Nghé", "--unit", "26740", "--tier", "low").exit_code == 0
    started = ccctl("serve", "--detach", "--tls-cert", str(cert), "--tls-key", str(key))
    assert started.exit_code == 0, started.stderr
    assert f"listening on https://{listen}" in started.stderr
    assert f"SHA256 {cert_fingerprint(cert)}" in started.stderr
    yield ccctl, listen, cert
    ccctl("serve", "--stop")


def test_cli_talks_https_to_its_server_and_pins_its_certificate(tls_server: tuple[Ccctl, str, Path]) -> None:
    ccctl, listen, cert = tls_server
    card = ccctl.home / CARD_FILE
    assert card.stat().st_mode & 0o777 == 0o600
    assert json.loads(card.read_text())["fingerprint"] == cert_fingerprint(cert)
    assert ccctl("broadcast", "start", "--title", "Họp qua https").exit_code == 0
    links = ccctl.json("broadcast", "links")
    assert links[0]["join_url"].startswith(f"https://{listen}/join/bn-1?t=")
    assert links[0]["whep_url"] == f"https://{listen}/whep/bn-1"
    status = ccctl("broadcast", "status")
    assert status.exit_code == 0 and "Họp qua https" in status.stderr
    # A media failure in the server is a MediaError there, and exits 11 here.
    bad = ccctl("broadcast", "start", "--record", str(ccctl.home / "missing" / "p.ts"))
    assert bad.exit_code == 1 and "already live" in bad.stderr  # a conflict, not a media failure
    assert ccctl("broadcast", "stop").exit_code == 0
    bad = ccctl("broadcast", "start", "--record", str(ccctl.home / "missing" / "p.ts"))
    assert bad.exit_code == 11 and "no such directory" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    assert ccctl("serve", "--stop").exit_code == 0
    assert not card.exists()  # the server took its card away


def test_a_certificate_other_than_the_pinned_one_is_refused(tls_server: tuple[Ccctl, str, Path]) -> None:
    ccctl, listen, cert = tls_server
    card = ccctl.home / CARD_FILE
    data = json.loads(card.read_text())
    data["fingerprint"] = "AB:" * 31 + "AB"  # the CLI now trusts another certificate than the server's
    card.write_text(json.dumps(data))
    refused = ccctl("broadcast", "status")
    assert refused.exit_code == 12, refused.stderr
    assert refused.stderr.count("\n") == 1 and f"presented certificate SHA256 {cert_fingerprint(cert)}" in refused.stderr
    token = control_token(load_secret(ccctl.home))
    with pytest.raises(CertificateRefused):
        ControlClient.remote(f"https://{listen}", token, ServerTrust(fingerprint=data["fingerprint"])).call(
            "GET", "/api/broadcast")
    pinned = ControlClient.remote(f"https://{listen}", token, ServerTrust(fingerprint=cert_fingerprint(cert)))
    assert pinned.call("GET", "/api/broadcast")["live"] is False


def test_remote_clients_verify_the_chain_against_a_ca(tls_server: tuple[Ccctl, str, Path], ca: TestCA,
                                                      tmp_path: Path) -> None:
    ccctl, listen, _ = tls_server
    token = control_token(load_secret(ccctl.home))
    trusted = ControlClient.remote(f"https://{listen}", token, ServerTrust(ca_file=str(ca.cert)))
    assert trusted.call("GET", "/api/broadcast")["live"] is False
    other = TestCA.make(tmp_path / "other", "another CA")
    for trust in (ServerTrust(ca_file=str(other.cert)), None):  # another CA; the system's store
        with pytest.raises(CertificateRefused, match="certificate is not trusted"):
            ControlClient.remote(f"https://{listen}", token, trust).call("GET", "/api/broadcast")
    wrong_name = ControlClient.remote(f"https://localhost:{listen.rsplit(':', 1)[1]}", token,
                                      ServerTrust(ca_file=str(ca.cert)))
    with pytest.raises(CertificateRefused, match="localhost"):  # the certificate names 127.0.0.1 only
        wrong_name.call("GET", "/api/broadcast")


def test_plain_http_gets_no_answer(tls_server: tuple[Ccctl, str, Path]) -> None:
    ccctl, listen, _ = tls_server
    token = control_token(load_secret(ccctl.home))
    plain = ControlClient.remote(f"http://{listen}", token)
    with pytest.raises(ServerDown, match="does it speak https"):
        plain.call("GET", "/api/broadcast")
    assert not plain.alive()
    with pytest.raises(Exception) as raw:  # a bare urllib request to the same port: no HTTP answer
        urllib.request.urlopen(f"http://{listen}/healthz", timeout=TIMEOUT)
    assert not isinstance(raw.value, urllib.error.HTTPError)


def test_change_stream_over_https(tls_server: tuple[Ccctl, str, Path]) -> None:
    ccctl, listen, cert = tls_server
    token = control_token(load_secret(ccctl.home))

    async def first_event(trust: ServerTrust) -> tuple[str, str, dict[str, object]]:
        async for event in follow(f"https://{listen}", token, trust=trust):
            return event
        raise AssertionError("the stream ended without an event")

    _, name, data = asyncio.run(asyncio.wait_for(first_event(ServerTrust(fingerprint=cert_fingerprint(cert))),
                                                 TIMEOUT))
    assert name == "hello" and data["epoch"]
    with pytest.raises(CertificateRefused, match="change stream"):
        asyncio.run(asyncio.wait_for(first_event(ServerTrust(fingerprint="00" * 32)), TIMEOUT))
    with pytest.raises(CertificateRefused, match="not trusted"):
        asyncio.run(asyncio.wait_for(first_event(ServerTrust()), TIMEOUT))


def test_a_site_joins_by_whep_over_https(tls_server: tuple[Ccctl, str, Path], ca: TestCA) -> None:
    ccctl, _, _ = tls_server
    assert ccctl("broadcast", "start").exit_code == 0
    link = ccctl.json("broadcast", "links")[0]
    context = ssl.create_default_context(cafile=str(ca.cert))

    async def join() -> dict[str, int]:
        pc, frames, location = await whep_join(link["whep_url"], link["token"], context=context)
        await pc.close()
        assert location.startswith("/whep/bn-1/")
        return frames

    frames = asyncio.run(join())
    assert frames["audio"] >= 5 and frames["video"] >= 5
    assert ccctl.json("broadcast", "attendance")[0]["joins"] == 1


def test_self_signed_certificate_is_private_printed_and_reused(ccctl: Ccctl, monkeypatch: pytest.MonkeyPatch) -> None:
    listen = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CCCTL_SERVE_LISTEN", listen)
    first = ccctl("serve", "--detach", "--tls", "self-signed")
    try:
        assert first.exit_code == 0, first.stderr
        cert, key = ccctl.home / "tls" / "self-signed.crt", ccctl.home / "tls" / "self-signed.key"
        assert cert.stat().st_mode & 0o777 == 0o600 and key.stat().st_mode & 0o777 == 0o600
        fingerprint = cert_fingerprint(cert)
        assert f"made a new one: none existed, {cert}): SHA256 {fingerprint}" in first.stderr
        status = ccctl("broadcast", "status")  # the CLI pins it by itself
        assert status.exit_code == 0 and "no live broadcast" in status.stderr, status.stderr
        # Elsewhere, a copy of the certificate (never the key) serves as the CA file to trust.
        token = control_token(load_secret(ccctl.home))
        remote = ControlClient.remote(f"https://{listen}", token, ServerTrust(ca_file=str(cert)))
        assert remote.call("GET", "/api/broadcast")["live"] is False
        assert ccctl("serve", "--stop").exit_code == 0
        monkeypatch.setenv("CCCTL_SERVE_TLS", "self-signed")  # now from the configuration
        again = ccctl("serve", "--detach")
        assert again.exit_code == 0 and f"(reused, {cert}): SHA256 {fingerprint}" in again.stderr, again.stderr
        assert ccctl("broadcast", "status").exit_code == 0
        log = (ccctl.home / "serve.log").read_text()
        secret = key.read_text()
        assert "PRIVATE KEY" not in first.stderr + again.stderr + log and secret.strip() not in log
        names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
    finally:
        ccctl("serve", "--stop")
    assert ccctl("sites", "add", "bn-1", "--name", "Bến Nghé", "--unit", "26740").exit_code == 0
    assert ccctl.json("broadcast", "links")[0]["join_url"].startswith(f"https://{listen}/join/bn-1?t=")  # config
    monkeypatch.setenv("CCCTL_SERVE_TLS", "yes")
    bogus = ccctl("serve", "--detach")
    assert bogus.exit_code == 2 and "serve.tls" in bogus.stderr and bogus.stderr.count("\n") == 1
    monkeypatch.setenv("CCCTL_SERVE_TLS", "self-signed")
    key.chmod(0o644)  # exposed: refused, not used
    exposed = ccctl("serve", "--detach", "--tls", "self-signed")  # refused before anything starts
    assert exposed.exit_code == 2 and "chmod 600" in exposed.stderr


def test_bad_tls_input_is_one_clear_line(ccctl: Ccctl, ca: TestCA, tmp_path: Path) -> None:
    cert, key = ca.issue(["127.0.0.1"])
    _, other_key = ca.issue(["127.0.0.1"], stem="other")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes(key.read_bytes())
    exposed.chmod(0o644)
    cases = [(("--tls-cert", str(cert)), 2, "go together"),
             (("--tls", "self-signed", "--tls-cert", str(cert), "--tls-key", str(key)), 2, "exclude each other"),
             (("--tls-cert", str(cert), "--tls-key", str(other_key)), 2, "cannot use"),
             (("--tls-cert", str(tmp_path / "junk.pem"), "--tls-key", str(key)), 2, "cannot use"),
             (("--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(key)), 2, "no such file"),
             (("--tls-cert", str(cert), "--tls-key", str(exposed)), 2, "readable by others")]
    for args, code, words in cases:
        result = ccctl("serve", "--detach", *args)
        assert result.exit_code == code and words in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
    assert not (ccctl.home / "serve.pid").exists()


def test_fingerprints_config_and_error_names() -> None:
    pin = "ab" * 32
    canonical = ":".join(["AB"] * 32)
    for text in (pin, canonical, f"sha256:{pin}", f"SHA256 Fingerprint={canonical}", f" {canonical.lower()} "):
        assert parse_fingerprint(text) == canonical
    for bad in ("", "ab" * 31, "zz" * 32):
        with pytest.raises(UsageError):
            parse_fingerprint(bad)
    assert ServeConfig().site_base() == "http://127.0.0.1:8080"  # the default stays plain http on loopback
    assert ServeConfig(tls="self-signed").site_base() == "https://127.0.0.1:8080"
    ServeConfig(tls_cert="c.pem", tls_key="k.pem").check_tls()
    for bad_config in (ServeConfig(tls="yes"), ServeConfig(tls_cert="c.pem"),
                       ServeConfig(tls="self-signed", tls_cert="c.pem", tls_key="k.pem")):
        with pytest.raises(ConfigError):
            bad_config.check_tls()
    from ccctl.media.ingest import FloorRefused

    assert error_names(FloorRefused("x")) == "FloorRefused MediaError CcctlError"
    assert error_class("FloorRefused MediaError CcctlError") is MediaError and MediaError.exit_code == 11
    assert error_class("ServerDown CcctlError") is CcctlError  # only ccctl.errors' own classes
    assert error_class("ImportRejected CcctlError") is CcctlError  # its problems stay with the server
    assert error_class("") is CcctlError and CertificateRefused.exit_code == 12

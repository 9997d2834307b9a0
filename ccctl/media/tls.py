"""TLS for ``ccctl serve`` and for the CLI's clients of it.

The server side: :func:`server_context` loads a certificate and key into a TLS 1.3-only
context; :func:`self_signed` makes (with ``cryptography``) or reuses a certificate and key of
this installation, both 0600 under ``$CCCTL_HOME/tls/``.

The client side: :class:`ServerTrust` says how a client checks the server's certificate: a
pinned SHA-256 fingerprint (exactly that certificate, whoever signed it, whatever name it
carries), or a CA bundle (chain and name checked; the system's store when none is given).

The running server also writes a *card*, ``$CCCTL_HOME/serve.json`` (0600), naming its
address, scheme and certificate fingerprint; a CLI on the same machine reads it
(:func:`read_card`) to talk https to it with that fingerprint pinned, with no option to give.
The card is removed when the server stops, and ignored once its process is gone.

Nothing here imports aiohttp: :mod:`ccctl.media.client` (stdlib only) uses it.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccctl.errors import CertificateRefused, ConfigError, UsageError

TLS_DIR = "tls"
CERT_FILE = "self-signed.crt"
KEY_FILE = "self-signed.key"
CARD_FILE = "serve.json"
#: Lifetime of a self-signed certificate (browsers refuse server certificates valid longer than 398 days).
VALID_DAYS = 397
#: A self-signed certificate closer than this to its end is replaced at the next start.
RENEW_BEFORE = datetime.timedelta(days=7)
_HEX = re.compile(r"[0-9a-f]{64}")


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``openssl x509 -fingerprint`` prints it
    (``AB:CD:...``)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def parse_fingerprint(text: str) -> str:
    """A fingerprint as given by an operator (colons or not, any case, ``sha256:`` or
    ``SHA256 Fingerprint=`` before it) in the form of :func:`fingerprint`; UsageError if it is none."""
    flat = text.strip().lower()
    for prefix in ("sha256 fingerprint=", "sha256:", "sha256="):
        if flat.startswith(prefix):
            flat = flat[len(prefix):]
    flat = flat.replace(":", "").replace(" ", "")
    if not _HEX.fullmatch(flat):
        raise UsageError(f"{text.strip()[:80]!r} is no SHA-256 fingerprint (64 hex digits, colons allowed)")
    return ":".join(flat[i:i + 2] for i in range(0, 64, 2)).upper()


def cert_fingerprint(path: Path) -> str:
    """The fingerprint of the first certificate in a PEM file (the server's own, in a chain)."""
    try:
        pem = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the certificate {path}: {getattr(exc, 'strerror', None) or exc}") from None
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise ConfigError(f"{path} holds no PEM certificate")
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem[start:end + len("-----END CERTIFICATE-----")]))


# -- the server's side -------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerTLS:
    """The certificate and key ``ccctl serve`` speaks https with, and the certificate's fingerprint."""

    cert: Path
    key: Path
    fingerprint: str

    def context(self) -> ssl.SSLContext:
        """A server context for these files (see :func:`server_context`)."""
        return server_context(self.cert, self.key)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.3-only server context holding ``cert`` (PEM, the server's certificate first, then
    any intermediates) and ``key``; ConfigError with one line when they cannot be loaded or do
    not belong together."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ConfigError(f"no such file: {exc.filename or cert}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot use {cert} with {key}: {exc.reason or exc} "
                          "(a PEM certificate and its own unencrypted PEM key)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename or cert}: {exc.strerror or exc}") from None
    return context


def files(cert: str | Path, key: str | Path) -> ServerTLS:
    """The operator's certificate and key files, checked by loading them once; a key that
    every user of the machine may read is refused (a group, like Debian's ssl-cert, may)."""
    cert_path, key_path = Path(cert).expanduser().resolve(), Path(key).expanduser().resolve()
    server_context(cert_path, key_path)
    if key_path.stat().st_mode & 0o007:
        raise ConfigError(f"{key_path} is readable by others; chmod o-rwx it (the server's private key)")
    return ServerTLS(cert_path, key_path, cert_fingerprint(cert_path))


def names_for(listen_host: str, public_url: str = "") -> list[str]:
    """The names a self-signed certificate is made for: the listen address (unless a wildcard),
    the public URL's host, and the loopback names."""
    from urllib.parse import urlsplit

    names = []
    for name in (listen_host.strip("[]"), urlsplit(public_url).hostname or "", "localhost", "127.0.0.1", "::1"):
        if name and name not in ("0.0.0.0", "::") and name not in names:
            names.append(name)
    return names


def self_signed(home: Path, names: list[str]) -> tuple[ServerTLS, str]:
    """This installation's self-signed certificate for ``names``: the one in
    ``$CCCTL_HOME/tls/`` when it covers them and is not about to expire, else a new one (ECDSA
    P-256, SHA-256, key and certificate 0600). Also says what happened ("reused", or why a new
    one was made), for the operator."""
    folder = home / TLS_DIR
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    why = "none existed"
    if cert_path.exists() and key_path.exists():
        why = _unusable(cert_path, key_path, names)
        if not why:
            return ServerTLS(cert_path, key_path, cert_fingerprint(cert_path)), "reused"
    _make(folder, cert_path, key_path, names)
    return ServerTLS(cert_path, key_path, cert_fingerprint(cert_path)), f"made a new one: {why}"


def _unusable(cert_path: Path, key_path: Path, names: list[str]) -> str:
    """Why the stored certificate cannot be reused for ``names`` ("" when it can)."""
    from cryptography import x509

    for path in (cert_path, key_path):
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by others; chmod 600 it (or delete both files in {path.parent})")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        server_context(cert_path, key_path)
    except (ValueError, ConfigError) as exc:
        return f"the stored one is unreadable: {exc}"
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return f"the stored one expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the stored one names no host"
    covered = {str(n) for n in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    missing = [n for n in names if _canonical(n) not in covered]
    return f"the stored one does not name {', '.join(missing)}" if missing else ""


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name



def subject_alt_names(names: list[str]) -> list[Any]:
    """A certificate's subject alternative names for ``names``: an IP address as one, anything else as a DNS name."""
    from cryptography import x509

    alt: list[Any] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    return alt

def _make(folder: Path, cert_path: Path, key_path: Path, names: list[str]) -> None:
    """A new key and self-signed certificate for ``names``, each written whole (temporary
    file renamed into place) with mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt = subject_alt_names(names)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ccctl {names[0]}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


# -- the card: what the running server speaks ----------------------------------------------

def write_card(home: Path, listen: str, tls: ServerTLS | None) -> None:
    """Tell the CLIs of this installation how to reach the server just started (0600)."""
    card = {"pid": os.getpid(), "listen": listen, "scheme": "https" if tls else "http",
            "fingerprint": tls.fingerprint if tls else ""}
    home.mkdir(parents=True, exist_ok=True)
    _write_private(home / CARD_FILE, json.dumps(card).encode())


def remove_card(home: Path) -> None:
    """The server stopped: remove its card (only if it is this process's)."""
    card = _load_card(home)
    if card is not None and card.get("pid") == os.getpid():
        (home / CARD_FILE).unlink(missing_ok=True)


def read_card(home: Path, listen: str) -> dict[str, Any] | None:
    """The card of the server of this installation running at ``listen``; None when there is
    none, it names another address, or its process is gone."""
    from ccctl.limits import pid_exists

    card = _load_card(home)
    if card is None or card.get("listen") != listen or not isinstance(card.get("pid"), int):
        return None
    return card if pid_exists(card["pid"]) else None


def _load_card(home: Path) -> dict[str, Any] | None:
    try:
        card = json.loads((home / CARD_FILE).read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


# -- the clients' side -------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerTrust:
    """How a client checks the server's certificate: ``fingerprint`` pins exactly one
    certificate (a self-signed one: neither its issuer nor its names are checked); else the
    chain and the name are checked against ``ca_file``, or the system's store when it is ""
    (``SSL_CERT_FILE`` is honoured)."""

    fingerprint: str = ""
    ca_file: str = ""

    def context(self) -> ssl.SSLContext:
        """The client context: no verification by OpenSSL when pinned (:meth:`check` does it
        right after the handshake), else the CA file's or the system's."""
        if self.fingerprint:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(cafile=self.ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot use the CA file {self.ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def check(self, der: bytes | None, where: str) -> None:
        """Refuse a server whose certificate is not the pinned one (nothing was sent to it yet)."""
        if not self.fingerprint:
            return
        seen = fingerprint(der) if der else "none"
        if seen != self.fingerprint:
            raise self.mismatch(where, seen)

    def mismatch(self, where: str, seen: str) -> CertificateRefused:
        """The one-line error for a server presenting the certificate of fingerprint ``seen``."""
        return CertificateRefused(f"{where} presented certificate SHA256 {seen}, not the pinned {self.fingerprint}; "
                                  "refusing it (a new self-signed certificate? compare with what `ccctl serve` printed)")


def refused(where: str, exc: BaseException) -> CertificateRefused:
    """The one-line error for a certificate that failed verification against a CA."""
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
    return CertificateRefused(f"{where}: its certificate is not trusted ({reason}); "
                              "pass the CA file that signed it, or pin its fingerprint")

"""Configuration: shipped defaults, then user files, then CCCTL_* environment variables.

The layers, later winning: the dataclass defaults below (kept equal to
``configs/ccctl.toml``, a test checks it), ``configs/ccctl.toml`` when the package runs
from a checkout, ``$CCCTL_HOME/ccctl.toml``, the ``--config`` file, ``CCCTL_<SECTION>_<KEY>``
variables, then ``CCCTL_DB``/``--db`` for the registry URL. The result is frozen.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ccctl.errors import ConfigError

SHIPPED = Path(__file__).resolve().parent.parent / "configs" / "ccctl.toml"


@dataclass(frozen=True)
class RegistryConfig:
    """Where the registry lives and how long a writer waits for another."""

    db: str = ""
    busy_timeout_ms: int = 15000


@dataclass(frozen=True)
class SshConfig:
    """How ccctl logs in to the sites' boxes."""

    user: str = "ccctl"
    port: int = 22
    verify_host_keys: bool = True
    client_key: str = ""
    keepalive_s: int = 30


@dataclass(frozen=True)
class RollcallConfig:
    """Defaults of ``ccctl rollcall run``."""

    stages: str = "tcp,ssh"
    concurrency: int = 64
    timeout_s: float = 5.0
    tcp_timeout_s: float = 0.0  # the tcp stage's own bound (the kernel's handshake); 0: timeout_s
    retries: int = 1
    warn_pct: float = 5.0
    crit_pct: float = 20.0
    rtt_warn_ms: float = 300.0
    exec_warn_ms: float = 1000.0
    persistent: bool = True
    engine: str = "auto"


@dataclass(frozen=True)
class SimConfig:
    """The simulated fleet."""

    port: int = 2222
    processes: int = 2


@dataclass(frozen=True)
class ServeConfig:
    """Where ``ccctl serve`` listens (loopback unless told otherwise), and how sites reach it."""

    listen: str = "127.0.0.1:8080"
    public_url: str = ""  # base of the sites' join links when they reach the server another way
    workers: int = 0  # fan-out worker processes (0: the sites' connections stay in the server process)
    tls: str = ""  # "self-signed": https with a certificate ccctl makes and keeps in its home; "": see tls_cert
    tls_cert: str = ""  # PEM certificate (then its chain) to serve https with; "" and tls "": plain http
    tls_key: str = ""  # its PEM private key (unencrypted, readable by ccctl only)

    @property
    def https(self) -> bool:
        """True when the server is configured to speak https."""
        return bool(self.tls or self.tls_cert)

    def site_base(self) -> str:
        """The base URL of join links: ``public_url``, else the listen address itself (https
        when TLS is configured)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.listen.rsplit(":", 1)[0].strip("[]")
        if host in ("0.0.0.0", "::", ""):
            raise ConfigError(f"serve.listen is {self.listen}, which is no address a site can open: "
                              "set serve.public_url (e.g. https://cc.example.gov.vn)")
        return f"{'https' if self.https else 'http'}://{self.listen}"

    def check_tls(self) -> None:
        """ConfigError unless the TLS keys make sense together."""
        if self.tls not in ("", "self-signed"):
            raise ConfigError(f"serve.tls: expected \"self-signed\" or \"\", got {self.tls!r}")
        if self.tls and (self.tls_cert or self.tls_key):
            raise ConfigError("serve.tls = \"self-signed\" and serve.tls_cert/tls_key exclude each other")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("serve.tls_cert and serve.tls_key go together")


@dataclass(frozen=True)
class AdmissionConfig:
    """``[admission]``: what the media core carries and who gets in (ccctl/media/admission.py)."""

    # RTP packets a second one fan-out process sends; "auto": measured at start (ccctl/media/calibrate.py); 0: no limit
    pps_budget: float | str = "auto"
    pps_headroom: float = 0.15  # "auto": the share of the bare send path's rate the budget takes
    pps_floor: float = 5000.0  # "auto": never less than this (also the budget when the measurement fails)
    pps_ceiling: float = 100000.0  # "auto": never more than this
    handshakes: int = 32  # ICE/DTLS handshakes in flight at most
    queue: int = 256  # offers waiting for a handshake slot; more get 503
    queue_wait_s: float = 10.0  # longest an offer waits for a slot, then 503
    retry_after_s: int = 5  # the Retry-After of a 503, at least
    retry_rate: float = 50.0  # refused sites come back about this many a second in all: Retry-After grows with them
    retry_after_max_s: int = 120  # the longest Retry-After
    degrade_video: bool = True  # move the lowest-priority video sites to audio before refusing
    low_first: str = "low,high"  # video tiers, the lowest priority first
    min_clock_share: float = 0.9  # the program's clock below this share of its rate: no new joins
    connect_timeout_s: float = 20.0  # a session not connected this long after its answer is ended
    worker_timeout_s: float = 15.0  # a fan-out worker not answering this long is restarted (its calls: 503)

    def check(self) -> None:
        """ConfigError unless the budget's calibration bounds make sense."""
        if not 0 < self.pps_headroom <= 1:
            raise ConfigError(f"admission.pps_headroom: expected a share in (0, 1], got {self.pps_headroom}")
        if not 0 < self.pps_floor <= self.pps_ceiling:
            raise ConfigError(f"admission.pps_floor ({self.pps_floor:g}) and pps_ceiling ({self.pps_ceiling:g}): "
                              "expected 0 < floor <= ceiling")


@dataclass(frozen=True)
class AdaptConfig:
    """``[adapt]``: the tier governor that moves a site between tiers on its own receiver
    reports (ccctl/media/adapt.py): down after a few bad reports, up after many good ones."""

    down_loss: float = 0.08  # fraction lost in one report
    down_rtt_ms: float = 800.0
    up_loss: float = 0.01
    up_rtt_ms: float = 300.0
    down_after: int = 2  # bad reports in a row before one tier down
    up_after: int = 15  # good reports in a row before one tier up
    hold_s: float = 20.0  # and at least this long at the lower tier


@dataclass(frozen=True)
class MeetingsConfig:
    """Meetings: the operators' time zone, default pre-checks and attendance tolerances."""

    timezone: str = "Asia/Ho_Chi_Minh"
    checks: str = "-60m,-15m"
    late_grace_s: float = 90.0  # a check run later than this after its time is reported late
    late_after_s: float = 300.0  # a site joining later than this after the start is late
    left_early_s: float = 300.0  # a site gone for good earlier than this before the end left early


@dataclass(frozen=True)
class OutputConfig:
    """Default listing format."""

    format: str = "table"


@dataclass(frozen=True)
class Config:
    """The whole configuration, plus the state directory it was resolved for."""

    home: Path = field(default_factory=lambda: default_home())
    registry: RegistryConfig = RegistryConfig()
    ssh: SshConfig = SshConfig()
    rollcall: RollcallConfig = RollcallConfig()
    sim: SimConfig = SimConfig()
    serve: ServeConfig = ServeConfig()
    admission: AdmissionConfig = AdmissionConfig()
    adapt: AdaptConfig = AdaptConfig()
    meetings: MeetingsConfig = MeetingsConfig()
    output: OutputConfig = OutputConfig()

    @property
    def db_url(self) -> str:
        """The registry URL, SQLite in the home directory unless configured."""
        return self.registry.db or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def client_key_path(self) -> Path:
        """The private key ccctl logs in with."""
        return Path(self.ssh.client_key) if self.ssh.client_key else self.home / "keys" / "id_ed25519"


SECTIONS = ("registry", "ssh", "rollcall", "sim", "serve", "admission", "adapt", "meetings", "output")


def default_home() -> Path:
    """``$CCCTL_HOME`` or ``~/.local/share/ccctl``."""
    env = os.environ.get("CCCTL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "ccctl"


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert a TOML or environment value to the type of the field's default."""
    if name.endswith("admission.pps_budget"):
        return _budget(name, value)
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def _budget(name: str, value: Any) -> float | str:
    """``admission.pps_budget``: ``"auto"`` or a number of packets a second, 0 or more."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected \"auto\" or packets a second, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected \"auto\" or packets a second, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ConfigError(f"{name}: expected \"auto\" or packets a second (0 or more), got {value!r}")
    return number


def _apply(config: Config, data: dict[str, Any], origin: str) -> Config:
    """Overlay one parsed TOML document on ``config``."""
    changes: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{origin}: unknown section [{section}]")
        current = getattr(config, section)
        known = {f.name: getattr(current, f.name) for f in fields(current)}
        updates = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{origin}: unknown key {section}.{key}")
            updates[key] = _coerce(f"{origin}: {section}.{key}", value, known[key])
        changes[section] = replace(current, **updates)
    return replace(config, **changes)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None


def load_config(
    config_file: str | Path | None = None,
    db: str | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Resolve the configuration from every layer; raise ConfigError on bad input."""
    env = dict(os.environ) if env is None else env
    home = Path(env["CCCTL_HOME"]).expanduser() if env.get("CCCTL_HOME") else default_home()
    config = Config(home=home)
    layers: list[Path] = []
    if SHIPPED.is_file():
        layers.append(SHIPPED)
    user_file = home / "ccctl.toml"
    if user_file.is_file():
        layers.append(user_file)
    if config_file:
        layers.append(Path(config_file))
    for path in layers:
        config = _apply(config, _read_toml(path), str(path))
    env_data: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        for f in fields(getattr(config, section)):
            key = f"CCCTL_{section.upper()}_{f.name.upper()}"
            if key in env:
                env_data.setdefault(section, {})[f.name] = env[key]
    if env_data:
        config = _apply(config, env_data, "environment")
    url = db or env.get("CCCTL_DB")
    if url:
        config = replace(config, registry=replace(config.registry, db=url))
    config.serve.check_tls()
    config.admission.check()
    if config.output.format not in ("table", "csv", "json"):
        raise ConfigError(f"output.format: expected table, csv or json, got {config.output.format!r}")
    return config


def as_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data (for ``ccctl config show``)."""
    data = dataclasses.asdict(config)
    data["home"] = str(config.home)
    data["db_url"] = redact_url(config.db_url)
    data["registry"]["db"] = redact_url(config.registry.db)
    return data


def redact_url(url: str) -> str:
    """A database URL with any password (in the user part or the query) replaced by ``***``.

    Anything else is kept exactly as written (``sqlite:////tmp/r.db`` keeps its four slashes).
    """
    from urllib.parse import parse_qsl, urlencode, urlsplit

    parts = urlsplit(url)
    head, sep, query = url.partition("?")
    query, hash_sep, fragment = query.partition("#")
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            redacted = f"{userinfo.split(':', 1)[0]}:***@{host}"
            head = head.replace(netloc, redacted, 1)
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k.lower() in ("password", "passwd", "pwd") for k, _ in pairs):
        query = urlencode([(k, "***" if k.lower() in ("password", "passwd", "pwd") else v) for k, v in pairs],
                          safe="*")
    return f"{head}{sep}{query}{hash_sep}{fragment}"


def secure_home(home: Path) -> None:
    """Create the state directory private (0700), or take "other" access away from ours.

    The home holds the registry, keys, the broadcast secret and logs. One ccctl creates is
    0700. An existing one owned by this user loses only its permissions for others (0755 ->
    0750): group access may be a deliberate sharing, so it is kept; one owned by someone else is
    left alone. A home that cannot be made (read-only disk, no such parent) is no error here:
    a command that needs it says so when it writes there.
    """
    try:
        if not home.exists():
            home.parent.mkdir(parents=True, exist_ok=True)
            home.mkdir(mode=0o700, exist_ok=True)
            return
        info = home.stat()
        if home.is_dir() and info.st_uid == os.geteuid() and info.st_mode & 0o007:
            home.chmod(info.st_mode & 0o770)
    except OSError:
        return

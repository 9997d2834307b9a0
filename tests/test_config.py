"""Configuration layers: shipped file equals the built-in defaults; files and env override."""

from __future__ import annotations

import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from ccctl.config import SHIPPED, Config, ServeConfig, load_config
from ccctl.errors import ConfigError


def test_shipped_file_matches_defaults(tmp_path: Path) -> None:
    shipped = tomllib.loads(SHIPPED.read_text("utf-8"))
    defaults = asdict(Config(home=tmp_path))
    for section, values in shipped.items():
        assert values == defaults[section], section


def test_layers_override_in_order(tmp_path: Path) -> None:
    (tmp_path / "ccctl.toml").write_text("[rollcall]\nconcurrency = 100\nretries = 3\n")
    extra = tmp_path / "extra.toml"
    extra.write_text("[rollcall]\nconcurrency = 200\n")
    env = {"CCCTL_HOME": str(tmp_path), "CCCTL_ROLLCALL_RETRIES": "5", "CCCTL_SSH_VERIFY_HOST_KEYS": "no"}
    config = load_config(extra, env=env)
    assert (config.rollcall.concurrency, config.rollcall.retries, config.ssh.verify_host_keys) == (200, 5, False)
    assert config.db_url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert load_config(env={**env, "CCCTL_DB": "postgresql://x/y"}).db_url == "postgresql://x/y"
    assert load_config(db="sqlite:///a.db", env={**env, "CCCTL_DB": "postgresql://x/y"}).db_url == "sqlite:///a.db"


@pytest.mark.parametrize("text, message", [("[nope]\nx = 1\n", "unknown section"),
                                           ("[rollcall]\nconcurency = 1\n", "unknown key"),
                                           ("[rollcall]\nconcurrency = 'many'\n", "expected int"),
                                           ("[rollcall\n", "bad.toml")])
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(bad, env={"CCCTL_HOME": str(tmp_path)})


def test_join_links_base_on_public_url_or_a_real_listen_address() -> None:
    assert ServeConfig().site_base() == "http://127.0.0.1:8080"
    assert ServeConfig("0.0.0.0:8080", "https://cc.example.gov.vn/").site_base() == "https://cc.example.gov.vn"
    with pytest.raises(ConfigError, match="serve.public_url"):
        ServeConfig("0.0.0.0:8080").site_base()


def test_redact_keeps_every_slash() -> None:
    from ccctl.config import redact_url

    assert redact_url("sqlite:////tmp/r.db") == "sqlite:////tmp/r.db"
    assert redact_url("sqlite:///r.db") == "sqlite:///r.db"
    assert redact_url("postgresql://u@h:5432/d?sslmode=require") == "postgresql://u@h:5432/d?sslmode=require"


def test_secure_home_creates_private_and_takes_others_access_away(tmp_path: Path) -> None:
    from ccctl.config import secure_home

    fresh = tmp_path / "a" / "home"
    secure_home(fresh)
    assert fresh.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o775)
    secure_home(shared)
    assert shared.stat().st_mode & 0o777 == 0o770  # group sharing kept, others out

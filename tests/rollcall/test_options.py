"""The stage table's parser and RollcallOptions built from RollcallConfig (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_stage_table_parses_and_checks_the_list_once() -> None:
    from ccctl.rollcall.runner import STAGES, parse_stages

    assert parse_stages(" tcp, ssh ,media") == ("tcp", "ssh", "media") == tuple(STAGES)
    assert parse_stages(["ssh"]) == ("ssh",)
    for bad, why in (("tcp,ping", "unknown roll-call stages \\['ping'\\]"), ("", "unknown"),
                     ("tcp,tcp", "named twice"), ("media,ssh", "media stage needs the ssh stage")):
        with pytest.raises(ValueError, match=why):
            parse_stages(bad)


def test_options_come_from_the_config_with_overrides(tmp_path: Path) -> None:
    from dataclasses import fields, replace

    from ccctl.config import Config, RollcallConfig
    from ccctl.errors import UsageError
    from ccctl.rollcall.session import RollcallOptions, options_from_config

    config = Config(home=tmp_path)
    options = options_from_config(config)
    shared = [f.name for f in fields(RollcallOptions) if f.name in {g.name for g in fields(RollcallConfig)}]
    assert len(shared) == 11 and "stages" in shared and "tcp_timeout_s" in shared
    assert all(getattr(options, name) == getattr(config.rollcall, name) for name in shared if name != "stages")
    assert options.stages == ("tcp", "ssh") and options.client_key is None
    tuned = replace(config, rollcall=replace(config.rollcall, stages="tcp,ssh,media", retries=4))
    options = options_from_config(tuned, retries=None, timeout_s=2.5, engine="asyncssh")
    assert (options.stages, options.retries, options.timeout_s, options.engine) == (
        ("tcp", "ssh", "media"), 4, 2.5, "asyncssh")
    with pytest.raises(UsageError, match="stages: the media stage needs the ssh stage"):
        options_from_config(config, stages="media")
    with pytest.raises(UsageError, match="unknown SSH engine 'putty'"):
        options_from_config(replace(config, rollcall=replace(config.rollcall, engine="putty")))

"""The agent-less facts: the real ``sh`` command run by ``/bin/sh`` over a directory laid out
like a box (``proc/``, ``dev/``, ``sys/``), and the parser of its line.

The real sshd tests (tests/test_sshd.py) run the same command against this host's own /proc.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ccctl.models import CheckState
from ccctl.rollcall.classify import classify
from ccctl.rollcall.probes import ProbeOutcome
from ccctl.rollcall.shfacts import (
    PROBE_COMMAND,
    SH_MARK,
    parse_facts,
    parse_sh_line,
    probe_command,
    serve_command,
    sh_line,
)

CARDS = """ 0 [PCH            ]: HDA-Intel - HDA Intel PCH
                      HDA Intel PCH at 0xf7f10000 irq 32
 1 [C920           ]: USB-Audio - HD Pro Webcam C920
                      HD Pro Webcam C920 at usb-0000:00:14.0-1, high speed
"""
PCM = """00-00: ALC892 Analog : ALC892 Analog : playback 1 : capture 1
00-03: HDMI 0 : HDMI 0 : playback 1
01-00: USB Audio : USB Audio : capture 1
"""


def _box(root: Path, *, camera: bool, sound: bool) -> Path:
    """A directory with a box's /proc files, its /dev and /sys camera entries."""
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "uptime").write_text("86461.27 170000.10\n")
    (root / "proc" / "loadavg").write_text("0.42 0.30 0.25 1/123 4567\n")
    (root / "dev").mkdir()
    (root / "sys" / "class" / "video4linux").mkdir(parents=True)
    if camera:
        for n in (0, 1):  # a UVC camera makes two nodes (video and metadata)
            (root / "dev" / f"video{n}").touch()
            (root / "sys" / "class" / "video4linux" / f"video{n}").mkdir()
    if sound:
        (root / "proc" / "asound").mkdir()
        (root / "proc" / "asound" / "cards").write_text(CARDS)
        (root / "proc" / "asound" / "pcm").write_text(PCM)
    return root


def _run(command: str, stdin: str = "") -> str:
    done = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"}, check=True)
    assert done.stderr == ""
    return done.stdout


def test_box_with_camera_and_sound(tmp_path: Path) -> None:
    root = _box(tmp_path / "box", camera=True, sound=True)
    out = _run(probe_command(str(root)))
    assert out.count("\n") == 1 and out.startswith(f"{SH_MARK} 1 ")
    facts = parse_facts(out)
    stat = os.statvfs(root)
    free = 100.0 * stat.f_bavail / (stat.f_blocks - stat.f_bfree + stat.f_bavail)
    assert facts.pop("disk_free_pct") == pytest.approx(free, abs=1.0)  # df's own rounding of KiB
    assert facts == {"facts_via": "sh", "uptime_s": 86461, "load1": 0.42, "video_devices": 2, "camera": True,
                     "sound_cards": 2, "microphone": True}
    state, reason = classify(ProbeOutcome(CheckState.OK, facts=facts))
    assert (state, reason) == (CheckState.OK, "")


def test_box_without_camera_or_sound_is_degraded(tmp_path: Path) -> None:
    root = _box(tmp_path / "box", camera=False, sound=False)
    facts = parse_facts(_run(probe_command(str(root))))
    assert (facts["camera"], facts["video_devices"], facts["microphone"], facts["sound_cards"]) == (False, 0, False, 0)
    assert classify(ProbeOutcome(CheckState.OK, facts=facts)) == (CheckState.DEGRADED, "no camera; no microphone")


def test_sound_card_without_capture_is_no_microphone(tmp_path: Path) -> None:
    root = _box(tmp_path / "box", camera=True, sound=True)
    (root / "proc" / "asound" / "pcm").write_text("00-03: HDMI 0 : HDMI 0 : playback 1\n")
    facts = parse_facts(_run(probe_command(str(root))))
    assert (facts["sound_cards"], facts["microphone"]) == (2, False)


def test_serve_form_answers_every_line_until_eof(tmp_path: Path) -> None:
    root = _box(tmp_path / "box", camera=True, sound=False)
    lines = _run(serve_command(str(root)), stdin="\n\n\n").splitlines()
    assert len(lines) == 3 and all(parse_sh_line(line)["camera"] is True for line in lines)


def test_agent_on_the_path_wins(tmp_path: Path) -> None:
    agent = tmp_path / "bin" / "ccctl-diag"
    agent.parent.mkdir()
    agent.write_text('#!/bin/sh\necho \'{"camera": true, "agent_version": "9"}\'\n')
    agent.chmod(0o755)
    done = subprocess.run(["/bin/sh", "-c", PROBE_COMMAND], capture_output=True, text=True, timeout=30, check=True,
                          env={"PATH": f"{agent.parent}:/usr/bin:/bin"})
    assert parse_facts(done.stdout) == {"camera": True, "agent_version": "9", "facts_via": "agent"}


def test_unreadable_sources_are_left_out_not_guessed() -> None:
    facts = parse_sh_line(f"{SH_MARK} 1 uptime= load=x df=1,2 video=0 v4l=0 cards=0 capture=")
    assert facts == {"facts_via": "sh", "video_devices": 0, "camera": False, "sound_cards": 0, "microphone": False}
    for bad in (f"{SH_MARK} 2 uptime=1", f"{SH_MARK}", "hello"):
        with pytest.raises(ValueError):
            parse_facts(bad)


def test_simulator_line_round_trips() -> None:
    facts = {"uptime_s": 3600, "load1": 0.5, "disk_free_pct": 12.5, "camera": False, "microphone": True}
    parsed = parse_sh_line(sh_line(facts))
    assert {k: parsed[k] for k in facts} == facts and parsed["facts_via"] == "sh"

"""A box's facts with or without our agent: the one command the SSH stage runs, and its output.

A site box is a plain Linux machine with OpenSSH; ``ccctl-diag`` may or may not be
installed. The SSH stage therefore runs ONE command line that executes the agent when it
is on the box's PATH and otherwise reads the same facts with POSIX ``sh`` builtins and one
``df`` (uptime and load from ``/proc``, free disk from ``df -P /``, cameras from
``/dev/video*`` and ``/sys/class/video4linux``, sound cards and capture devices from
``/proc/asound``), printed as one line ``ccctl-sh-facts 1 key=value ...``. The client
tells the two answers apart and records which way the facts were read (``facts_via``:
``agent`` or ``sh``). The serve form (pooled rounds) does the same per line read, so a box
without the agent also keeps one warm session per connection.

The command is wrapped in ``exec /bin/sh -c '...'`` so it means the same whatever the
login shell (bash, zsh without globbing surprises, csh); ``exec`` costs one exec, no fork.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

#: The agent's command name on a box.
AGENT = "ccctl-diag"
#: The agent's long-lived form: one JSON line per line read.
SERVE_FLAG = "--serve"
#: First word of the line the ``sh`` fallback prints.
SH_MARK = "ccctl-sh-facts"
SH_VERSION = "1"

#: Longest facts line accepted from a box.
MAX_LINE = 1 << 16


def sh_facts_script(root: str = "") -> str:
    """The POSIX ``sh`` text printing one ``ccctl-sh-facts`` line, reading under ``root``.

    ``root`` is "" on a box; tests point it at a directory laid out like one (``proc/``,
    ``dev/``, ``sys/``). No single quotes inside, so the text can be single-quoted; every
    step is a builtin but the one ``df``; a missing source leaves its value empty.
    """
    r = shlex.quote(root) if root else ""
    return (
        "u=;l=;d=;v=0;s=0;c=0;m=;"
        f"read u _ 2>/dev/null <{r}/proc/uptime;"
        f"read l _ 2>/dev/null <{r}/proc/loadavg;"
        f"d=$(df -P {r}/ 2>/dev/null|{{ read _;read _ b x a _;echo $b,$x,$a; }});"
        f"for f in {r}/dev/video*;do [ -e \"$f\" ]&&v=$((v+1));done;"
        f"for f in {r}/sys/class/video4linux/*;do [ -e \"$f\" ]&&s=$((s+1));done;"
        f"if [ -r {r}/proc/asound/cards ];then while read -r n _;do case $n in [0-9]*)c=$((c+1));;esac;"
        f"done <{r}/proc/asound/cards;fi;"
        f"if [ -r {r}/proc/asound/pcm ];then m=0;while read -r x;do case $x in *capture*)m=$((m+1));;esac;"
        f"done <{r}/proc/asound/pcm;fi;"
        f"echo {SH_MARK} {SH_VERSION} uptime=$u load=$l df=$d video=$v v4l=$s cards=$c capture=$m"
    )


def probe_command(root: str = "") -> str:
    """The SSH stage's one command: the agent if the box has it, else the ``sh`` facts line."""
    script = f"command -v {AGENT} >/dev/null 2>&1&&exec {AGENT};{sh_facts_script(root)}"
    return f"exec /bin/sh -c '{script}'"


def serve_command(root: str = "") -> str:
    """The warm session's command: the agent's serve loop, else a ``sh`` loop answering the
    facts line for every line read, until EOF."""
    script = (f"command -v {AGENT} >/dev/null 2>&1&&exec {AGENT} {SERVE_FLAG};"
              f"while read -r _;do {sh_facts_script(root)};done")
    return f"exec /bin/sh -c '{script}'"


#: What the SSH stage runs per check (cold path, and boxes whose serve session failed).
PROBE_COMMAND = probe_command()
#: What a pooled connection keeps open for warm rounds.
SERVE_PROBE_COMMAND = serve_command()


def is_facts_line(line: bytes) -> bool:
    """True for a line that can be a facts answer: the agent's JSON or the ``sh`` line."""
    return line.startswith(b"{") or line.startswith(SH_MARK.encode())


def parse_facts(stdout: str) -> dict[str, Any]:
    """The facts in a box's answer: its last non-empty line, agent JSON or the ``sh`` line.

    Taking the last line tolerates a login banner or shell noise before it. Adds
    ``facts_via`` (``agent`` or ``sh``) unless the agent set it. Raises ValueError with a
    short message when the line is neither.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise ValueError("empty diag output")
    return parse_line(lines[-1].strip())


def parse_line(line: str) -> dict[str, Any]:
    """The facts of one answer line (see ``parse_facts``)."""
    if line.startswith(SH_MARK):
        return parse_sh_line(line)
    try:
        facts = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"diag output is not JSON ({exc.msg})") from None
    if not isinstance(facts, dict):
        raise ValueError("diag output is not a JSON object")
    facts.setdefault("facts_via", "agent")
    return facts


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse_sh_line(line: str) -> dict[str, Any]:
    """The facts of a ``ccctl-sh-facts`` line, in the agent's names.

    ``uptime_s``, ``load1``, ``disk_free_pct`` (available over used plus available, as
    ``df`` counts its Capacity), ``camera`` (any video4linux device), ``video_devices``,
    ``sound_cards``, ``microphone`` (a capture PCM in ``/proc/asound/pcm``; any sound card
    when that file is missing) and ``facts_via: "sh"``. A value the box could not read is
    left out rather than guessed; missing facts are not held against a site.
    """
    words = line.split()
    if len(words) < 2 or words[0] != SH_MARK:
        raise ValueError("diag output is not a facts line")
    if words[1] != SH_VERSION:
        raise ValueError(f"unknown {SH_MARK} version {words[1][:10]!r}")
    raw = dict(word.partition("=")[::2] for word in words[2:])
    facts: dict[str, Any] = {"facts_via": "sh"}
    uptime = _float(raw.get("uptime", ""))
    if uptime is not None:
        facts["uptime_s"] = int(uptime)
    load = _float(raw.get("load", ""))
    if load is not None:
        facts["load1"] = load
    disk = [_count(part) for part in raw.get("df", "").split(",")]
    if len(disk) == 3 and None not in disk:
        _blocks, used, avail = disk
        assert used is not None and avail is not None
        if used + avail > 0:
            facts["disk_free_pct"] = round(100.0 * avail / (used + avail), 1)
    video, v4l = _count(raw.get("video", "")), _count(raw.get("v4l", ""))
    if video is not None or v4l is not None:
        facts["video_devices"] = max(video or 0, v4l or 0)
        facts["camera"] = facts["video_devices"] > 0
    cards, capture = _count(raw.get("cards", "")), _count(raw.get("capture", ""))
    if cards is not None:
        facts["sound_cards"] = cards
    if capture is not None:
        facts["microphone"] = capture > 0
    elif cards is not None:
        facts["microphone"] = cards > 0
    return facts


def sh_line(facts: dict[str, Any]) -> str:
    """The ``sh`` line a box without the agent would print for these facts (simulators)."""
    free = float(facts.get("disk_free_pct", 50.0))
    avail = int(round(free * 1000))
    camera = 1 if facts.get("camera", True) else 0
    mic = 1 if facts.get("microphone", True) else 0
    return (f"{SH_MARK} {SH_VERSION} uptime={float(facts.get('uptime_s', 0)):.2f} load={facts.get('load1', 0)} "
            f"df=100000,{100000 - avail},{avail} video={camera * 2} v4l={camera * 2} cards={mic} capture={mic}")

"""``ccctl demo`` opens the dashboard only when both stdin and stdout are a terminal (a real
pseudo-terminal here); in a pipe it prints the reports (tests/test_demo.py runs that path)."""

from __future__ import annotations

import os

from ccctl.commands.demo import interactive


def test_only_a_terminal_on_both_ends_gets_the_dashboard() -> None:
    leader, follower = os.openpty()
    read_end, write_end = os.pipe()
    with open(follower, "w", closefd=True) as tty, open(read_end) as pipe_in, open(write_end, "w") as pipe_out:
        assert interactive(tty, tty)
        assert not interactive(pipe_in, tty)  # `ccctl demo < file`
        assert not interactive(tty, pipe_out)  # `ccctl demo | less`, the README's command
        assert interactive(tty, tty, tty) and not interactive(tty, tty, pipe_out)  # `ccctl demo 2>log`
        pipe_out.close()
        assert not interactive(tty, pipe_out)  # a closed stream is no terminal
    os.close(leader)

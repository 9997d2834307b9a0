"""The ``ccctl`` root command: global options, the one async bridge, errors to exit codes.

Exit codes of every command: 0 success; 1 failure; 2 bad usage or configuration;
4 not found; 5 registry error; 6 import rejected; 7 units not loaded; 8 busy (another run
holds the lock); 9 no ccctl server answers; 10 a feed's pull failed or its data were malformed
(its last good data kept); 11 the media core failed (a bad offer, a recording that cannot be
written, a fan-out worker gone); 12 the server's TLS certificate is not the trusted one
(nothing was sent to it); 13 an installed aiortc, aioice or pylibsrtp changed where ccctl
reaches into it (the line names the library and version); 130 interrupted; 141 stdout closed early (``ccctl ... | head``: the
output is cut quietly, as coreutils do). Monitoring commands (``rollcall run``) use the Nagios
convention instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ccctl import __version__
from ccctl.errors import CcctlError, ImportRejected, UsageError

if TYPE_CHECKING:
    from ccctl.config import Config
    from ccctl.registry.db import Database

T = TypeVar("T")


class AppContext:
    """Lazily resolved configuration and registry, shared by every subcommand.

    Tests inject their own by passing ``obj=AppContext(...)`` to CliRunner.invoke.
    """

    def __init__(self, config_file: str | None = None, db_url: str | None = None, debug: bool = False) -> None:
        self.config_file = config_file
        self.db_url = db_url
        self.debug = debug
        self._config: Config | None = None
        self._db: Database | None = None

    @property
    def config(self) -> Config:
        """The resolved configuration (read on first use)."""
        if self._config is None:
            from ccctl.config import load_config, secure_home

            self._config = load_config(self.config_file, self.db_url)
            secure_home(self._config.home)
        return self._config

    @property
    def db(self) -> Database:
        """The registry, opened and migrated on first use, closed when the command ends."""
        if self._db is None:
            from ccctl.registry import open_registry

            self._db = open_registry(self.config.db_url, self.config.registry.busy_timeout_ms)
            click.get_current_context().call_on_close(self.close)
        return self._db

    def close(self) -> None:
        """Close the registry if it was opened."""
        if self._db is not None:
            self._db.close()
            self._db = None


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The single bridge from the synchronous CLI into the async core.

    SIGTERM is turned into KeyboardInterrupt for the duration, so a cron job's kill cancels
    the work the same way as Ctrl-C: cleanly, keeping every result already taken.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    import asyncio  # here, not at the top: a command that never runs async starts ~50 ms sooner

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return asyncio.run(coro)
    finally:
        signal.signal(signal.SIGTERM, previous)


def say(message: str) -> None:
    """A diagnostic for the operator: stderr, never stdout."""
    click.echo(message, err=True)


def confirm(ctx: click.Context, question: str, yes: bool) -> None:
    """Ask before a destructive action; without a terminal, refuse unless --yes was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question.rstrip('?')}: no terminal to confirm on; pass --yes")
    if not click.confirm(question, default=False, err=True):
        raise CcctlError("cancelled")


COMMANDS = {
    "units": "ccctl.commands.units:units",
    "sites": "ccctl.commands.sites:sites",
    "config": "ccctl.commands.config:config_group",
    "sim": "ccctl.commands.sim:sim",
    "rollcall": "ccctl.commands.rollcall:rollcall",
    "report": "ccctl.commands.report:report",
    "exec": "ccctl.commands.remote:exec_cmd",
    "ssh": "ccctl.commands.remote:ssh_cmd",
    "serve": "ccctl.commands.serve:serve",
    "broadcast": "ccctl.commands.broadcast:broadcast",
    "demo": "ccctl.commands.demo:demo",
    "meeting": "ccctl.commands.meeting:meeting",
    "feed": "ccctl.commands.feed:feed",
    "dashboard": "ccctl.commands.dashboard:dashboard",
    "edge": "ccctl.commands.edge:edge",
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that subcommand runs (fast ``--help``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        import importlib

        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; a CcctlError becomes one ``Error:`` line and its exit code."""
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # so that a reader gone away (| head) shows here, not at exit
        except BrokenPipeError:
            _drop_stdout()
            raise click.exceptions.Exit(141) from None
        except ImportRejected as exc:
            if _debug(ctx):
                raise
            for line, reason in exc.problems:
                click.echo(f"line {line}: {reason}", err=True)
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None
        except CcctlError as exc:
            if _debug(ctx):
                raise
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except OSError as exc:
            if _debug(ctx):
                raise
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"Error: {exc.strerror or exc}{where}", err=True)
            raise click.exceptions.Exit(1) from None
        except Exception as exc:  # a bug: still one line, the traceback behind --debug
            if _debug(ctx):
                raise
            click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
            raise click.exceptions.Exit(1) from None


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit finds no closed pipe to complain of."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (e.g. a test runner's buffer)
        pass


def _debug(ctx: click.Context) -> bool:
    return isinstance(ctx.obj, AppContext) and ctx.obj.debug


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=__doc__.split("\n\n", 1)[1])
@click.option("--db", "db_url", metavar="URL", help="Registry URL (sqlite:///PATH or postgresql://...); env CCCTL_DB.")
@click.option("--config", "config_file", metavar="FILE", type=click.Path(dir_okay=False), help="Extra config file.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(__version__, prog_name="ccctl")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, config_file: str | None, debug: bool) -> None:
    """Operator's toolkit for the national command-center video network."""
    if not isinstance(ctx.obj, AppContext):
        ctx.obj = AppContext(config_file, db_url, debug)
    else:  # a caller's context (tests, another command): the options given here still count
        ctx.obj.debug = ctx.obj.debug or debug
        if config_file and ctx.obj._config is None:
            ctx.obj.config_file = config_file


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ccctl`` console script and ``python -m ccctl``.

    Everything ccctl creates is private to its user: directories 0700, files 0600 (the registry,
    its WAL, logs, the simulator's state, exports), whatever the caller's umask allowed.
    """
    import os

    os.umask(os.umask(0o077) | 0o077)
    cli.main(args=argv, prog_name="ccctl")

"""``ccctl report``: per-province or per-district summaries (pandas)."""

from __future__ import annotations

from pathlib import Path

import click

from ccctl.cli import AppContext, say
from ccctl.errors import UsageError
from ccctl.output import atomic_path, emit, write_file


@click.group()
def report() -> None:
    """Reports for the command room."""


@report.command("rollcall")
@click.argument("run_ref", metavar="[RUN]", required=False)
@click.option("--by", type=click.Choice(["province", "district"]), default="province")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "xlsx"]), default=None)
@click.option("--json", "as_json", is_flag=True, help="Shorthand for --format json.")
@click.option("--csv", "as_csv", is_flag=True, help="Shorthand for --format csv.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="File to write (xlsx needs one).")
@click.option("--with-feed", metavar="FEED", help="The feed's newest indicators beside readiness (ccctl feed list).")
@click.pass_obj
def rollcall_report(obj: AppContext, run_ref: str | None, by: str, fmt: str | None, as_json: bool, as_csv: bool,
                    output: Path | None, with_feed: str | None = None) -> None:
    """Counts by state and share ready per province (or district), worst first."""
    from ccctl.reports import frame_records, rollcall_frame
    from ccctl.rollcall.history import resolve_run, run_results

    chosen = "json" if as_json else "csv" if as_csv else fmt or obj.config.output.format
    run_id = resolve_run(obj.db, run_ref)
    frame = rollcall_frame(run_results(obj.db, run_id), by)
    if with_feed:
        from ccctl.feeds.beside import with_feed as add_feed_columns

        frame = add_feed_columns(frame, obj.db, with_feed, by)
    if chosen == "xlsx":
        if output is None:
            raise UsageError("--format xlsx needs --output FILE")
        records = frame_records(frame)
        write_file(output, list(frame.columns), ([r[c] for c in frame.columns] for r in records), f"run {run_id}",
                   excel=True)
        say(f"wrote {len(frame)} rows of run {run_id} to {output}")
        return
    if output is not None:
        with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
            emit(frame_records(frame), chosen, list(frame.columns), fh)
        say(f"wrote {len(frame)} rows of run {run_id} to {output}")
        return
    emit(frame_records(frame), chosen, list(frame.columns))

"""Commands over the event log itself: init, migrate, ingest, export-events."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

import click

from tornstore.eventstore import db
from tornstore.eventstore.capture import export_events
from tornstore.eventstore.migrate import check, current_version, migrate

from .common import (Progress, UserError, db_option, db_path, emit_json, existing_db, friendly_errors, json_option,
                     output_to, progress_option)


@click.command()
@json_option
@db_option
@click.pass_context
@friendly_errors
def init(ctx: click.Context, as_json: bool) -> None:
    """Create the database (every table), or bring it up to date. Safe to run again.

    \b
    Examples:
      tornstore --db torn.db init
      tornstore init --db torn.db --json     # {"database": ..., "schema_version": ..., "applied": [...]}
    """
    path = db_path(ctx)
    conn = db.connect_sync(path)
    try:
        applied = migrate(conn)
        version = current_version(conn)
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json({"database": path, "schema_version": version, "applied": applied})
    elif applied:
        click.echo(f"{path}: created schema version {version} (applied {', '.join(map(str, applied))})")
    else:
        click.echo(f"{path}: already at schema version {version}, nothing to do")


@click.command("migrate")
@click.option("--check", "check_only", is_flag=True,
              help="Only report pending migrations; change nothing. Exit code 1 when one is pending.")
@json_option
@db_option
@click.pass_context
@friendly_errors
def migrate_cmd(ctx: click.Context, check_only: bool, as_json: bool) -> None:
    """Apply pending schema migrations (each in its own transaction).

    With --check nothing changes: exit code 0 when the schema is up to date, 1 when a migration is
    pending (for scripts: `tornstore migrate --check || tornstore migrate`).

    \b
    Examples:
      tornstore --db torn.db migrate --check
      tornstore --db torn.db migrate
      tornstore --db torn.db migrate --check --json | jq '.pending[].version'
    """
    path = existing_db(ctx)
    conn = db.connect_sync(path)
    try:
        pending = check(conn)
        applied = [] if check_only else migrate(conn)
        version = current_version(conn)
    finally:
        db.close_sync(conn)
    still_pending = pending if check_only else []
    if as_json:
        emit_json({"database": path, "schema_version": version, "applied": applied,
                   "pending": [{"version": m.version, "description": m.description} for m in still_pending]})
    elif check_only:
        click.echo(f"schema version {version}; pending: "
                   + (", ".join(f"{m.version:04d} {m.description}" for m in pending) or "none"))
    else:
        click.echo(f"applied {len(applied)} migration(s); schema version {version}")
    if still_pending:
        ctx.exit(1)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--batch", default=500, show_default=True, help="Responses per transaction.")
@click.option("--init", "create", is_flag=True, help="Create the database first if it does not exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@progress_option
@click.option("--ack", is_flag=True, hidden=True,
              help="Print 'ack <responses> <last position>' after each committed batch (crash tests).")
@db_option
@click.pass_context
@friendly_errors
def ingest(ctx: click.Context, files: tuple[str, ...], batch: int, create: bool, as_json: bool,
           progress: bool | None, ack: bool) -> None:
    """Import capture files (NDJSON, one response per line; '-' reads stdin).

    Each line is {"url": ..., "observed_at": <unix seconds>, "body": <JSON>}. Unchanged entities append
    nothing; Torn error bodies are counted, never stored as data; unreadable lines are quarantined.
    A missing database is refused (a mistyped path must not start a new file) unless --init is given.

    \b
    Examples:
      tornstore --db torn.db ingest captures/*.ndjson
      tornstore --db new.db ingest --init capture.ndjson
      cat capture.ndjson | tornstore --db torn.db ingest - --json
    """
    from tornstore.projections.store import ingest_files  # the projections run inline with ingest

    path = db_path(ctx)
    if not create and not db.exists(path):
        raise UserError(f"no database at {db.describe(path)}: create it with `tornstore --db {db.describe(path)} "
                        "init`, or ingest with --init")
    for name in files:
        if name != "-" and not Path(name).exists():
            raise UserError(f"no such capture file: {name}")
    def acknowledge(so_far) -> None:
        click.echo(f"ack {so_far.responses} {so_far.last_position or 0}")
        sys.stdout.flush()

    show = progress if progress is not None else (not as_json and sys.stderr.isatty())
    report = ingest_files(path, files, batch=batch, progress=show, on_commit=acknowledge if ack else None)
    counts = report.as_dict()
    if as_json:
        counts["rejected_reasons"] = [r.reason for r in report.rejected][:100]
        counts["error_codes"] = sorted({e.code for e in report.errors})
        emit_json(counts)
        return
    click.echo(f"responses {counts['responses']}, events appended {counts['appended']}, "
               f"unchanged {counts['unchanged']}, Torn errors {counts['errors']}, "
               f"rejected {counts['rejected']}")
    for rejected in report.rejected[:10]:
        click.echo(f"  rejected: {rejected.reason}", err=True)
    if len(report.rejected) > 10:
        click.echo(f"  ... and {len(report.rejected) - 10} more (see the quarantine table)", err=True)


class _CountingLines:
    """A binary output that reports each capture line written (one line per event) to `counted`."""

    def __init__(self, out: BinaryIO, counted):
        self.out, self.counted = out, counted

    def write(self, data: bytes) -> int:
        written = self.out.write(data)
        lines = data.count(b"\n")
        if lines:
            self.counted(lines)
        return written


def _events_after(conn, after: int) -> int:
    """How many events an export after `after` writes (the progress bar's length)."""
    return conn.execute("SELECT COUNT(*) FROM events WHERE position > ?", (after,)).fetchone()[0]


@click.command("export-events")
@click.option("-o", "--output", type=click.Path(allow_dash=True), default="-", show_default=True,
              help="File to write ('-' for stdout).")
@click.option("--after", default=0, show_default=True, help="Only events after this position.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as one JSON document (needs -o FILE: without it stdout carries the events).")
@progress_option
@db_option
@click.pass_context
@friendly_errors
def export_events_cmd(ctx: click.Context, output: str, after: int, as_json: bool, progress: bool | None) -> None:
    """Write the event log as capture lines (NDJSON); `ingest` of the file rebuilds the same log.

    \b
    Examples:
      tornstore --db torn.db export-events -o events.ndjson --progress
      tornstore --db torn.db export-events --after 120000 | gzip > recent.ndjson.gz
      tornstore --db torn.db export-events -o events.ndjson --json | jq .events
    """
    if as_json and output == "-":
        raise click.UsageError("--json needs -o FILE: without it stdout carries the events")
    path = existing_db(ctx)
    conn = db.connect_sync(path)
    try:
        with Progress("exporting events", _events_after(conn, after), progress) as bar, \
                output_to(output, binary=True) as out:
            count = export_events(conn, _CountingLines(out, bar.update), after=after)
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json({"database": path, "output": output, "after": after, "events": count})
    else:
        click.echo(f"exported {count} events", err=True)


def register(group: click.Group) -> None:
    for command in (init, migrate_cmd, ingest, export_events_cmd):
        group.add_command(command)

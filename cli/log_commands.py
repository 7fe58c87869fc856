"""Commands over the event log itself: init, migrate, ingest, export-events."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from tornstore.eventstore import db
from tornstore.eventstore.capture import export_events
from tornstore.eventstore.migrate import check, current_version, migrate

from .common import UserError, db_option, db_path, emit_json, existing_db, friendly_errors


@click.command()
@db_option
@click.pass_context
@friendly_errors
def init(ctx: click.Context) -> None:
    """Create the database (every table), or bring it up to date. Safe to run again.

    \b
    Example:
      tornstore --db torn.db init
    """
    path = db_path(ctx)
    conn = db.connect_sync(path)
    try:
        applied = migrate(conn)
        version = current_version(conn)
    finally:
        db.close_sync(conn)
    if applied:
        click.echo(f"{path}: created schema version {version} (applied {', '.join(map(str, applied))})")
    else:
        click.echo(f"{path}: already at schema version {version}, nothing to do")


@click.command("migrate")
@click.option("--check", "check_only", is_flag=True, help="Only report pending migrations; change nothing.")
@db_option
@click.pass_context
@friendly_errors
def migrate_cmd(ctx: click.Context, check_only: bool) -> None:
    """Apply pending schema migrations (each in its own transaction).

    \b
    Examples:
      tornstore --db torn.db migrate --check
      tornstore --db torn.db migrate
    """
    path = existing_db(ctx)
    conn = db.connect_sync(path)
    try:
        pending = check(conn)
        if check_only:
            click.echo(f"schema version {current_version(conn)}; pending: "
                       + (", ".join(f"{m.version:04d} {m.description}" for m in pending) or "none"))
            return
        applied = migrate(conn)
        click.echo(f"applied {len(applied)} migration(s); schema version {current_version(conn)}")
    finally:
        db.close_sync(conn)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--batch", default=500, show_default=True, help="Responses per transaction.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option("--ack", is_flag=True, hidden=True,
              help="Print 'ack <responses> <last position>' after each committed batch (crash tests).")
@db_option
@click.pass_context
@friendly_errors
def ingest(ctx: click.Context, files: tuple[str, ...], batch: int, as_json: bool, ack: bool) -> None:
    """Import capture files (NDJSON, one response per line; '-' reads stdin).

    Each line is {"url": ..., "observed_at": <unix seconds>, "body": <JSON>}. Unchanged entities append
    nothing; Torn error bodies are counted, never stored as data; unreadable lines are quarantined.

    \b
    Examples:
      tornstore --db torn.db ingest captures/*.ndjson
      cat capture.ndjson | tornstore --db torn.db ingest - --json
    """
    from tornstore.projections.store import ingest_files  # the projections run inline with ingest

    path = db_path(ctx)
    for name in files:
        if name != "-" and not Path(name).exists():
            raise UserError(f"no such capture file: {name}")
    def acknowledge(so_far) -> None:
        click.echo(f"ack {so_far.responses} {so_far.last_position or 0}")
        sys.stdout.flush()

    report = ingest_files(path, files, batch=batch, progress=not as_json and sys.stderr.isatty(),
                          on_commit=acknowledge if ack else None)
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


@click.command("export-events")
@click.option("-o", "--output", type=click.Path(allow_dash=True), default="-", show_default=True,
              help="File to write ('-' for stdout).")
@click.option("--after", default=0, show_default=True, help="Only events after this position.")
@db_option
@click.pass_context
@friendly_errors
def export_events_cmd(ctx: click.Context, output: str, after: int) -> None:
    """Write the event log as capture lines (NDJSON); `ingest` of the file rebuilds the same log.

    \b
    Examples:
      tornstore --db torn.db export-events -o events.ndjson
      tornstore --db torn.db export-events --after 120000 | gzip > recent.ndjson.gz
    """
    path = existing_db(ctx)
    conn = db.connect_sync(path)
    try:
        if output == "-":
            count = export_events(conn, sys.stdout.buffer, after=after)
            sys.stdout.flush()
        else:
            with open(output, "wb") as out:
                count = export_events(conn, out, after=after)
    finally:
        db.close_sync(conn)
    click.echo(f"exported {count} events", err=True)


def register(group: click.Group) -> None:
    for command in (init, migrate_cmd, ingest, export_events_cmd):
        group.add_command(command)

"""Commands that keep the file in shape: compact (fold closed months, prune old detail) and backup."""
from __future__ import annotations

import time
from pathlib import Path

import click

from tornstore.eventstore import db
from tornstore.eventstore.backup import (backup_database, dated_backup_path, forget_backups, rotate_backups)
from tornstore.eventstore.migrate import check

from .common import StageBars, UserError, db_option, emit_json, emit_table, existing_db, friendly_errors


def _clock(text: str | None) -> int:
    """The run's clock, read once here at the edge and passed down."""
    from tornstore.projections.compactor.periods import parse_time

    if text is None:
        return int(time.time())
    try:
        return parse_time(text)
    except ValueError as exc:
        raise UserError(f"--now: {exc}") from None


def _open(path: str):
    conn = db.connect_sync(path)
    pending = check(conn)
    if pending:
        db.close_sync(conn)
        raise UserError(f"{db.describe(path)} needs {len(pending)} schema migration(s) first: "
                        f"tornstore --db {db.describe(path)} migrate")
    return conn


@click.command()
@click.option("--now", "now_text", metavar="TIME",
              help="The run's clock: ISO 8601 (2027-02-01T00:00:00Z) or Unix seconds. Default: the wall clock.")
@click.option("--month", metavar="YYYY-MM", help="Fold this closed month again (and the months after it).")
@click.option("--dry-run", is_flag=True, help="Report what would be folded and deleted; change nothing.")
@click.option("--no-backup", is_flag=True, help="Do not copy the database before pruning.")
@click.option("--retention-months", default=2, show_default=True, type=click.IntRange(min=0),
              help="Closed months of detail kept before the current month.")
@click.option("--keep-backups", default=3, show_default=True, type=click.IntRange(min=1),
              help="Dated backups kept beside the database.")
@click.option("--json", "as_json", is_flag=True, help="Print the compaction report as JSON.")
@db_option
@click.pass_context
@friendly_errors
def compact(ctx: click.Context, now_text: str | None, month: str | None, dry_run: bool, no_backup: bool,
            retention_months: int, keep_backups: int, as_json: bool) -> None:
    """Fold closed months into the summary tables, then prune detail older than the retention window.

    Every closed UTC month not folded yet is folded (catching up after downtime), and months that received
    late data are folded again. Detail (events, *_history rows) of months older than the window is then
    deleted in batches, after a backup beside the database; each stream's latest event always stays and
    summary rows are kept forever. Safe to run again, and to kill: the next run finishes the job.

    \b
    Examples:
      tornstore --db torn.db compact --dry-run
      tornstore --db torn.db compact
      tornstore --db torn.db compact --now 2027-02-01T00:00:00Z --json
      tornstore --db torn.db compact --month 2026-12 --no-backup
    """
    from tornstore.projections.compactor import CompactionError, Period
    from tornstore.projections.compactor import compact as run_compact

    path = existing_db(ctx)
    now = _clock(now_text)
    if month is not None:
        try:
            Period.parse(month)
        except ValueError as exc:
            raise UserError(f"--month: {exc}") from None
    bars = StageBars()
    conn = _open(path)
    try:
        report = run_compact(conn, now, month=month, dry_run=dry_run, retention_months=retention_months,
                             backup=not no_backup, keep_backups=keep_backups, db_path=path, progress=bars)
    except CompactionError as exc:
        raise UserError(str(exc)) from None
    finally:
        bars.close()
        if dry_run:
            conn.close()  # no PRAGMA optimize: a dry run writes nothing, not even statistics
        else:
            db.close_sync(conn)
    if as_json:
        emit_json(report.as_dict())
        return
    _print_report(report)


def _print_report(report) -> None:
    from tornstore.projections.compactor.periods import iso

    head = "dry run at" if report.dry_run else "compacted at"
    click.echo(f"{head} {iso(report.now)}; keeping detail from {iso(report.window_start)} "
               f"({report.retention_months} closed month(s) + the current one)")
    if report.folded:
        verb = "would fold" if report.dry_run else "folded"
        click.echo(f"{verb} {len(report.folded)} month(s):")
        emit_table([(f.month, f.reason, f.summary_rows["player_stats_summary"], f.summary_rows["faction_summary"],
                     f.summary_rows["war_summary"], f.summary_rows["territory_ownership_summary"])
                    for f in report.folded],
                   ("month", "reason", "players", "factions", "wars", "territories"))
    else:
        click.echo("no month to fold")
    if report.pruned:
        verb = "would delete" if report.dry_run else "deleted"
        click.echo(f"{verb} the detail of {len(report.pruned)} month(s):")
        emit_table([(p.month, p.events, p.history_rows) for p in report.pruned], ("month", "events", "history rows"))
    else:
        click.echo("no detail to prune")
    if report.backup:
        click.echo(f"backup: {report.backup}")
    if report.snapshot:
        click.echo(f"kept the projections' state at {iso(report.snapshot['horizon'])} for replay "
                   f"(the log up to position {report.snapshot['prefix_position']})")
    for removed in report.removed_backups:
        click.echo(f"removed old backup: {removed}")
    if report.reclaimed and report.reclaimed.get("bytes_freed"):
        click.echo(f"reclaimed {report.reclaimed['bytes_freed']} bytes ({report.reclaimed['method']})")
    if report.horizon_after != report.horizon_before:
        click.echo(f"prune horizon {'would move' if report.dry_run else 'moved'} to {iso(report.horizon_after)}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)


@click.command("backup")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the copy here. Default: a dated file beside the database (the newest --keep are kept).")
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=1),
              help="Dated backups kept beside the database (only without -o).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@db_option
@click.pass_context
@friendly_errors
def backup_cmd(ctx: click.Context, output: str | None, keep: int, as_json: bool) -> None:
    """Copy the database to a consistent backup file while it stays in use (VACUUM INTO).

    \b
    Examples:
      tornstore --db torn.db backup                      # torn.db.backup-20270201T000000Z beside it
      tornstore --db torn.db backup -o /mnt/safe/torn.db
      tornstore --db postgresql://bot@dbhost/torn backup -o torn-2027-02.db   # into a SQLite file

    On PostgreSQL the backup is a SQLite file, written with `tornstore copy` (one snapshot of the
    database, verified on both ends); -o is required. The server's own tools (pg_dump) work too.
    """
    path = existing_db(ctx)
    now = int(time.time())
    if db.is_url(path):
        _backup_postgres(path, output, as_json)
        return
    dest = Path(output) if output else dated_backup_path(path, now)
    if dest.exists():
        raise UserError(f"{dest} already exists: choose another -o PATH")
    conn = _open(path)
    removed: list[str] = []
    try:
        try:
            result = backup_database(conn, dest, created_at=now, reason="manual")
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from None
        if output is None:
            removed = rotate_backups(path, keep)
            forget_backups(conn, removed)
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json({"path": result.path, "bytes": result.bytes, "created_at": result.created_at, "removed": removed})
        return
    click.echo(f"backup written: {result.path} ({result.bytes} bytes)")
    for name in removed:
        click.echo(f"removed old backup: {name}")


def _backup_postgres(url: str, output: str | None, as_json: bool) -> None:
    """A PostgreSQL store backed up into a new SQLite file: `tornstore copy`, verified on both ends."""
    from tornstore.projections.copy import CopyError, copy_store

    if output is None:
        raise UserError("a PostgreSQL database has no folder here for a dated backup: give the file, -o PATH "
                        "(a SQLite copy), or use pg_dump")
    dest = Path(output)
    if dest.exists():
        raise UserError(f"{dest} already exists: choose another -o PATH")
    if not dest.parent.is_dir():
        raise UserError(f"cannot write {dest}: the folder {dest.parent} does not exist")
    source, target = _open(url), db.connect_sync(dest)
    try:
        try:
            report = copy_store(source, target)
        except CopyError as exc:
            raise UserError(str(exc)) from None
    finally:
        db.close_sync(target)
        db.close_sync(source)
    if not report["ok"]:
        raise UserError(f"the backup {dest} was written but does not verify: keep the database's own backups")
    size = dest.stat().st_size
    if as_json:
        emit_json({"path": str(dest), "bytes": size, "created_at": None, "removed": []})
        return
    click.echo(f"backup written: {dest} ({size} bytes, a SQLite copy of {db.describe(url)}, verified)")


def register(group: click.Group) -> None:
    for command in (compact, backup_cmd):
        group.add_command(command)

"""copy: the whole store into a new database, SQLite or PostgreSQL, either way (issue 18, "Moving up")."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tornstore.eventstore import db

from .common import StageBars, UserError, db_option, emit_json, emit_table, friendly_errors, json_option


def _same(source: str, target: str) -> bool:
    if db.is_url(source) or db.is_url(target):
        return source == target
    return os.path.realpath(source) == os.path.realpath(target)


@click.command("copy")
@click.option("--from", "source", metavar="PATH|URL",
              help="The store to copy: a SQLite file or a postgresql:// URL (default: --db / TORNSTORE_DB).")
@click.option("--to", "target", required=True, metavar="PATH|URL",
              help="Where to copy it: a new SQLite file, or a new or empty PostgreSQL database.")
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(min=1),
              help="Rows read and written at a time.")
@json_option
@db_option
@click.pass_context
@friendly_errors
def copy_cmd(ctx: click.Context, source: str | None, target: str, batch: int, as_json: bool) -> None:
    """Copy the whole store into a new database, then replay and verify it there.

    Copies the event log, the collector's state, the summaries and compaction ledger, the snapshot at
    the horizon and the projected tables, table by table; sets every id sequence as the source has it
    (ids are never reused); replays the projections on the target from the copied log; and runs
    `verify` on both ends. Exit code 1 when either verify finds a problem.

    The target must be new or empty: one that already holds tornstore data is refused and left as it
    is. Rows of `backups` are not copied (they name backup files of the source). The source must be at
    this tornstore's schema version (run `tornstore --db SOURCE migrate` first). Passwords in URLs are
    never printed.

    \b
    Examples:
      tornstore copy --from torn.db --to postgresql://tornstore@dbhost/torn
      tornstore --db torn.db copy --to postgresql://tornstore@dbhost/torn --json
      tornstore copy --from postgresql://tornstore@dbhost/torn --to back.db
      tornstore copy --from torn.db --to moved.db --batch 20000
    """
    from tornstore.projections.copy import CopyError, copy_store

    if source is None:
        source = (ctx.obj or {}).get("db")
        if not source:
            raise UserError("no source given: use --from PATH|URL (or --db PATH, or set TORNSTORE_DB)")
    shown_source, shown_target = db.describe(source), db.describe(target)
    if _same(source, target):
        raise UserError(f"--from and --to are the same database ({shown_source})")
    if not db.is_url(source) and not Path(source).exists():
        raise UserError(f"no database at {shown_source}")
    if not db.is_url(target) and not Path(target).parent.is_dir():
        raise UserError(f"cannot create {shown_target}: the folder {Path(target).parent} does not exist")

    src = db.connect_sync(source)
    try:
        dst = db.connect_sync(target)
        try:
            bar = StageBars(label_width=38)   # (a bar per table)
            try:
                report = copy_store(src, dst, batch=batch, progress=bar)
            except CopyError as exc:
                raise UserError(str(exc)) from None
            finally:
                bar.close()
        finally:
            db.close_sync(dst)
    finally:
        db.close_sync(src)

    report = {"source": shown_source, "target": shown_target, **report}
    if as_json:
        emit_json(report)
    else:
        click.echo(f"copied {shown_source} -> {shown_target}")
        emit_table([(t, f"{n:,}") for t, n in report["tables"].items()], ["table", "rows"])
        for table, skipped in report["not_copied"].items():
            if skipped["rows"]:
                click.echo(f"not copied: {table} ({skipped['rows']} rows): {skipped['reason']}")
        click.echo(f"sequences set: {len(report['sequences'])}; events replayed on the target: "
                   f"{report['replayed_events']:,}")
        for end in ("source", "target"):
            v = report["verify"][end]
            detail = (f"integrity {v['integrity']}, {v['foreign_key_violations']} foreign key violations, "
                      f"{v['hashes_checked']} hashes checked, {v['hashes_mismatched']} mismatched, replay "
                      + ("identical" if not v["replay_differences"]
                         else f"differs in {', '.join(v['replay_differences'])}"))
            click.echo(f"verify {end}: {'OK' if v['ok'] else 'PROBLEMS FOUND'} ({detail})")
        click.echo("verdict: " + ("OK" if report["ok"] else "COPY FAILED VERIFY"))
    if not report["ok"]:
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(copy_cmd)

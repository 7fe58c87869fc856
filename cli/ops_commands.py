"""Operator commands: replay, status, verify."""
from __future__ import annotations

import sys

import click

from tornstore.eventstore import db
from tornstore.projections import health, runner

from .common import (Progress, db_option, emit_json, emit_record, emit_table, existing_db, friendly_errors, json_option,
                     progress_option)


def _open(ctx: click.Context):
    from tornstore.eventstore.migrate import migrate
    conn = db.connect_sync(existing_db(ctx))
    migrate(conn)
    return conn


PROJECTIONS = [h.name for h in runner.handlers()]


@click.command()
@click.option("--projection", "name", type=click.Choice(PROJECTIONS), metavar="NAME",
              help=f"Rebuild only this projection ({', '.join(PROJECTIONS)}).")
@click.option("--batch", default=5000, show_default=True, type=click.IntRange(min=1),
              help="Events read from the log at a time.")
@json_option
@progress_option
@db_option
@click.pass_context
@friendly_errors
def replay(ctx: click.Context, name: str | None, batch: int, as_json: bool, progress: bool | None) -> None:
    """Rebuild projection tables from the state kept at the prune horizon and the retained event log
    (summaries are never touched).

    The rebuild happens beside the live tables, which readers and writers keep using; it is swapped in
    at once at the end. If interrupted, nothing changed: run it again.

    \b
    Examples:
      tornstore --db torn.db replay
      tornstore --db torn.db replay --projection player_stats
      tornstore --db torn.db replay --json --progress 2>replay.log
    """
    conn = _open(ctx)
    try:
        with Progress("replaying", _event_count(conn), progress) as bar:
            applied = runner.replay(conn, name, batch=batch, progress=bar.update)
        errors = conn.execute("SELECT COUNT(*) FROM projection_errors").fetchone()[0]
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json({"projections": [name] if name else PROJECTIONS, "events_applied": applied,
                   "projection_errors": errors})
    else:
        click.echo(f"replayed {applied} events into {name or 'every projection'}; projection errors: {errors}")


def _event_count(conn) -> int:
    """The events a replay reads (the progress bar's length): those after the state kept at the horizon."""
    return runner.replay_event_count(conn)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--wal-warn-mb", default=health.WAL_WARN_BYTES // 2**20, show_default=True,
              type=click.IntRange(min=1), help="Warn when the write-ahead log is larger than this.")
@db_option
@click.pass_context
@friendly_errors
def status(ctx: click.Context, as_json: bool, wal_warn_mb: int) -> None:
    """Row counts, file size, streams, events, projection lag, last compaction and backup, key states.

    Warns (on stderr, and in --json's "warnings") when the write-ahead log has grown past --wal-warn-mb:
    a reader holding a long transaction keeps checkpoints from folding it back.

    \b
    Examples:
      tornstore --db torn.db status
      tornstore --db torn.db status --json | jq .projection_lag
    """
    path = existing_db(ctx)
    conn = _open(ctx)
    try:
        info = health.status(conn, path, wal_warn_mb * 2**20)
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json(info)
        return
    for warning in info["warnings"]:
        click.echo(f"Warning: {warning}", err=True)
    emit_record({
        "database": info["database"],
        "file size": f"{info['file_bytes']:,} bytes (of which write-ahead log {info['wal_bytes']:,})",
        "schema version": info["schema_version"],
        "events": f"{info['rows']['events']:,} (last position {info['log']['last_position']})",
        "streams": f"{info['rows']['streams']:,}",
        "observed": f"{_when(info['log']['first_observed_at'])} .. {_when(info['log']['last_observed_at'])}",
        "projection lag": ", ".join(f"{k} {v}" for k, v in info["projection_lag"].items()),
        "last compaction": _compaction(info["last_compaction"]),
        "state for replay": _kept(info["snapshot"]),
        "last backup": (f"{info['last_backup']['path']} at {_when(info['last_backup']['created_at'])}"
                        if info["last_backup"] else "never"),
    })
    click.echo()
    emit_table(sorted(info["rows"].items()), ["table", "rows"])
    if info["keys"]:
        click.echo()
        emit_table([(k["fingerprint"], k["owner"], k["state"], k["last_error_code"], k["requests"])
                    for k in info["keys"]], ["key", "owner", "state", "last error", "requests"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@progress_option
@db_option
@click.pass_context
@friendly_errors
def verify(ctx: click.Context, as_json: bool, progress: bool | None) -> None:
    """Integrity check, hash check of stored events, and a replay into a scratch copy compared with the
    live tables. Exit code 1 when anything is wrong.

    Progress (the replay into the scratch copy, its longest part) goes to stderr on a terminal, or
    anywhere with --progress; stdout keeps only the result.

    \b
    Examples:
      tornstore --db torn.db verify
      tornstore --db torn.db verify --json --progress > verify.json
    """
    conn = _open(ctx)
    try:
        with Progress("verifying (replay in a scratch copy)", _event_count(conn), progress) as bar:
            result = health.verify(conn, progress=bar.update)
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json(result)
    else:
        hashes = result["hashes"]
        emit_record({
            "integrity": ", ".join(result["integrity"]),
            "foreign keys": f"{result['foreign_key_violations']} violations",
            "event hashes": f"{hashes['checked']} checked, {hashes['mismatched']} mismatched"
                            + (f", {hashes['other_rules']} made by older rules" if hashes["other_rules"] else ""),
            "replay": "identical" if not result["replay"]["differences"]
                      else f"differs in {', '.join(result['replay']['differences'])}",
            **({"note": result["replay"]["note"]} if result["replay"].get("note") else {}),
            "verdict": "OK" if result["ok"] else "PROBLEMS FOUND",
        })
    if not result["ok"]:
        sys.exit(1)


def _when(ts) -> str:
    if ts is None:
        return "-"
    import datetime as dt
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _kept(snapshot) -> str:
    """Where replay starts: the projections' state the compactor kept at the horizon."""
    if not snapshot:
        return "from the start of the log (nothing pruned)"
    if snapshot["legacy"]:
        return f"none kept at {_when(snapshot['horizon'])[:10]} (pruned before migration 0004)"
    return f"kept at {_when(snapshot['horizon'])[:10]}, then the log after position {snapshot['prefix_position']}"


def _compaction(row) -> str:
    if not row:
        return "never"
    return f"month {_when(row['period_start'])[:7]} {row['state']}"


def register(group: click.Group) -> None:
    for command in (replay, status, verify):
        group.add_command(command)

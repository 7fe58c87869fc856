"""`tornstore quarantine`: what could not be stored, and routing again what only lacked its key's owner."""
from __future__ import annotations

import click

from tornstore.eventstore import db
from tornstore.eventstore.ingest import retry_waiting
from tornstore.eventstore.migrate import migrate
from tornstore.projections.runner import project_inline

from .common import db_option, emit_json, emit_table, existing_db, friendly_errors, json_option


@click.group()
def quarantine() -> None:
    """Responses that could not be stored as events, each with its reason.

    \b
    Examples:
      tornstore --db torn.db quarantine list
      tornstore --db torn.db quarantine retry
    """


@quarantine.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="Newest rows to show.")
@json_option
@db_option
@click.pass_context
@friendly_errors
def list_(ctx: click.Context, limit: int, as_json: bool) -> None:
    """The newest quarantined responses: when, URL, key fingerprint, whether an owner would route it, why.

    \b
    Examples:
      tornstore --db torn.db quarantine list --limit 50
      tornstore --db torn.db quarantine list --json
    """
    conn = db.connect_sync(existing_db(ctx))
    try:
        migrate(conn)
        rows = conn.execute("SELECT id, observed_at, source_url, key_fp, needs_owner, reason FROM quarantine "
                            "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    finally:
        db.close_sync(conn)
    names = ("id", "observed_at", "url", "key", "needs_owner", "reason")
    if as_json:
        emit_json([dict(zip(names, row, strict=True)) | {"needs_owner": bool(row[4])} for row in rows])
    else:
        emit_table([(i, at, url, key or "-", "yes" if needs else "no", reason[:80])
                    for i, at, url, key, needs, reason in rows], names)


@quarantine.command()
@json_option
@db_option
@click.pass_context
@friendly_errors
def retry(ctx: click.Context, as_json: bool) -> None:
    """Store what waited only for its key's owner, now that the owner is known.

    A response under an own-key URL (`/v2/user/bars`, `/v2/faction/members`) names its entity only
    through the key's owner; made with a key whose owner was not known yet, it waits in quarantine. Once
    the owner is learned (`/v2/key/info` or an own profile made with that key) this routes it. Ingest
    does the same by itself for the keys a batch teaches.

    \b
    Examples:
      tornstore --db torn.db quarantine retry
      tornstore --db torn.db quarantine retry --json
    """
    conn = db.connect_sync(existing_db(ctx))
    try:
        migrate(conn)
        report = retry_waiting(conn, project_inline)
        waiting = conn.execute("SELECT COUNT(*) FROM quarantine WHERE needs_owner = 1").fetchone()[0]
    finally:
        db.close_sync(conn)
    if as_json:
        emit_json({"retried": report.retried, "appended": report.appended, "still_waiting": waiting})
    else:
        click.echo(f"routed {report.retried} quarantined responses ({report.appended} events appended); "
                   f"{waiting} still wait for their key's owner")


def register(group: click.Group) -> None:
    group.add_command(quarantine)

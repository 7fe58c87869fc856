"""Copying a whole store to another database: SQLite to PostgreSQL, back, or SQLite to SQLite (issue 18,
"Moving up"). `tornstore copy --from torn.db --to postgresql://...` is this module's command.

What is copied: every table that holds what the source cannot recompute (the event log, the collector's
state, store_meta, the compaction ledger, the summaries, kept forever, and the snapshot at the horizon),
and the projected tables too, so the copy is usable at once. Then each table's AUTOINCREMENT (SQLite) or
identity sequence (PostgreSQL) is set to the source's value, so an id is never handed out twice, even one
whose rows were pruned; the projections are replayed on the target from the copied log and snapshot, and
`verify` runs on both ends. A failed verify on either end is a failed copy.

What is not copied, on purpose:
* `backups`: its rows name backup files of the source (copies of the source file, beside it), which the
  target does not have; the target starts with no backups of its own (its sequence is still carried over);
* `schema_version`: the target's own migrations write it (the source must be at this tornstore's version);
* SQLite's own tables (`sqlite_sequence`, whose values are carried as sequences, and `sqlite_stat*`, the
  query planner's statistics).

A table this module does not know (one a later migration added) is an error, never skipped in silence:
add it to TABLES in its place (after the tables it refers to).

The target must be new or empty: a target that holds any tornstore data is refused before anything in it
is changed, so a copy never merges two stores and never overwrites one. Rows are read `batch` at a time in
primary-key order (one consistent read snapshot of the source for the whole copy) and written with one
executemany per batch, one target transaction per table.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from tornstore.eventstore import db
from tornstore.eventstore.migrate import MigrationError, check, current_version, migrate
from tornstore.projections import health, runner

# Every table of the schema, in foreign-key order (a table after those it refers to), by what it holds.
LOG = ("streams", "events", "gaps", "quarantine")
STATE = ("store_meta", "compaction_ledger", "api_keys", "target_problems", "key_owners", "owner_requests")
PROJECTED = ("factions", "players", "territories", "player_stats_history", "war_status_history",
             "territory_ownership_history", "faction_history", "stat_history",
             "projection_checkpoints", "projection_errors")
SUMMARIES = ("player_stats_summary", "war_summary", "territory_ownership_summary", "faction_summary",
             "stat_summary")
SNAPSHOT = ("projection_snapshots", "sequences_at_horizon", "factions_at_horizon", "players_at_horizon",
            "territories_at_horizon", "player_stats_history_at_horizon", "war_status_history_at_horizon",
            "territory_ownership_history_at_horizon", "faction_history_at_horizon", "stat_history_at_horizon")
TABLES = LOG + STATE + PROJECTED + SUMMARIES + SNAPSHOT

# Tables whose rows are not copied, and why (the report says so).
NOT_COPIED = {
    "backups": "its rows name backup files of the source, which the target does not have",
    "schema_version": "the target's own migrations write it",
}
# SQLite's own tables: not the store's data.
SQLITE_INTERNAL = "sqlite_"

COMMIT_EVERY = 20   # batches per target transaction within one large table


class CopyError(RuntimeError):
    """The copy cannot start (a message for the user), or the target was left incomplete."""


def copy_store(source: sqlite3.Connection, target: sqlite3.Connection, *, batch: int = 5000,
               progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Copy the store on `source` into the new or empty database on `target` (either backend), replay the
    projections there and verify both ends. Returns the report; `report["ok"]` is False when a verify
    found a problem. Raises CopyError (or MigrationError) when the copy cannot be made; the target is then
    unchanged, except where the message says it was left incomplete.

    `progress(table, rows_done, rows_total)` is called after each batch written (and once per table).
    """
    if batch < 1:
        raise ValueError("copy batch must be at least 1 row")
    if source.in_transaction or target.in_transaction:
        raise RuntimeError("copy needs connections outside any transaction")
    _check_source(source)
    tables = _tables_to_copy(source)
    _check_target_empty(target, tables)
    migrate(target)
    _check_target_empty(target, tables)   # another process may have written it meanwhile
    missing = [t for t in tables if t not in db.table_names(target)]
    if missing:
        raise CopyError(f"the target's schema has no table {', '.join(missing)}")

    copied: dict[str, int] = {}
    sequences: dict[str, int] = {}
    source.execute("BEGIN")   # one consistent view of the source; its writers go on
    try:
        for table in tables:
            copied[table] = _copy_table(source, target, table, batch, progress)
        present = sorted(t for t in db.table_names(source) if not t.startswith(SQLITE_INTERNAL))
        for table in present:
            value = db.sequence_value(source, table)
            if value:
                sequences[table] = value
        skipped = {t: {"rows": source.execute(f"SELECT COUNT(*) FROM main.{t}").fetchone()[0], "reason": why}
                   for t, why in NOT_COPIED.items() if t in present}
    except BaseException as exc:
        source.execute("ROLLBACK")
        if any(copied.values()) or _written_any(target, tables):
            raise CopyError(_incomplete(copied, exc)) from exc
        raise
    source.execute("COMMIT")

    with db.Transaction(target):
        for table, value in sequences.items():
            db.set_sequence(target, table, value)
    replayed = runner.replay(target, batch=batch)
    verdicts = {"source": _verdict(health.verify(source)), "target": _verdict(health.verify(target))}
    return {
        "ok": all(v["ok"] for v in verdicts.values()),
        "schema_version": current_version(target),
        "tables": copied,
        "rows_copied": sum(copied.values()),
        "not_copied": skipped,
        "sequences": sequences,
        "replayed_events": replayed,
        "verify": verdicts,
    }


def _written_any(target: sqlite3.Connection, tables: list[str]) -> bool:
    try:
        return any(target.execute(f"SELECT 1 FROM main.{t} LIMIT 1").fetchone() for t in tables)
    except sqlite3.Error:
        return True   # cannot tell: say the target may be incomplete


def _incomplete(copied: dict[str, int], exc: BaseException) -> str:
    done = ", ".join(f"{t} ({n} rows)" for t, n in copied.items() if n) or "no complete table"
    return (f"the copy stopped after {done}: {str(exc) or type(exc).__name__}. The target is incomplete: "
            f"delete it (or drop and create the database again) before copying again")


def _check_source(source: sqlite3.Connection) -> None:
    if "schema_version" not in db.table_names(source):
        raise CopyError("the source is not a tornstore database (it has no schema_version table)")
    pending = check(source)   # a source newer than this tornstore raises MigrationError here
    if pending:
        raise MigrationError(
            f"the source's schema is at version {current_version(source)}, this tornstore's at "
            f"{pending[-1].version}: open it with this tornstore first (`tornstore --db SOURCE migrate`), then copy")


def _tables_to_copy(source: sqlite3.Connection) -> list[str]:
    present = db.table_names(source)
    unknown = sorted(t for t in present
                     if t not in TABLES and t not in NOT_COPIED and not t.startswith(SQLITE_INTERNAL))
    if unknown:
        raise CopyError(f"the source has tables this copy does not know how to handle: {', '.join(unknown)} "
                        f"(a newer tornstore's? nothing was copied)")
    return [t for t in TABLES if t in present]


def _check_target_empty(target: sqlite3.Connection, tables: list[str]) -> None:
    present = db.table_names(target)
    held = {}
    for table in (t for t in (*tables, *NOT_COPIED) if t in present and t != "schema_version"):
        n = target.execute(f"SELECT COUNT(*) FROM main.{table}").fetchone()[0]
        if n:
            held[table] = n
    if held:
        shown = ", ".join(f"{t}: {n}" for t, n in sorted(held.items(), key=lambda kv: (kv[0] != "events", kv[0])))
        raise CopyError(f"the target already holds tornstore data ({shown} rows): copy only into a new or "
                        f"empty database; nothing was changed")


def _columns(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[str]]:
    """The table's columns in order, and its primary key's columns in key order."""
    info = conn.execute(f"PRAGMA main.table_info({table})").fetchall()
    return [r[1] for r in info], primary_key(conn, table, info)


def primary_key(conn: sqlite3.Connection, table: str, info: list[tuple] | None = None) -> list[str]:
    """The columns of `table`'s primary key, in key order.

    On PostgreSQL read from pg_index here: PgConnection's `PRAGMA table_info` numbers the key's columns
    from 0 (its int2vector keeps a lower bound of 0), so the first key column reads as "not in the key"."""
    if db.is_postgres(conn):
        return [r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = CAST(? AS regclass) AND i.indisprimary "
            "ORDER BY array_position(CAST(i.indkey AS int2[]), a.attnum)", (f"public.{table}",))]
    info = info if info is not None else conn.execute(f"PRAGMA main.table_info({table})").fetchall()
    return [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])]


def _copy_table(source: sqlite3.Connection, target: sqlite3.Connection, table: str, batch: int,
                progress: Callable[[str, int, int], None] | None) -> int:
    columns, key = _columns(source, table)
    target_columns, _ = _columns(target, table)
    if sorted(columns) != sorted(target_columns):
        raise CopyError(f"{table} has columns {columns} on the source but {target_columns} on the target")
    if not key:
        raise CopyError(f"{table} has no primary key to copy it in order by")
    total = source.execute(f"SELECT COUNT(*) FROM main.{table}").fetchone()[0]
    if progress:
        progress(table, 0, total)
    if not total:
        return 0
    names = ", ".join(f'"{c}"' for c in columns)
    order = ", ".join(f'"{c}"' for c in key)
    at = [columns.index(c) for c in key]
    first = f"SELECT {names} FROM main.{table} ORDER BY {order} LIMIT ?"
    after = (f"SELECT {names} FROM main.{table} WHERE ({order}) > ({', '.join('?' for _ in key)}) "
             f"ORDER BY {order} LIMIT ?")
    insert = f"INSERT INTO main.{table} ({names}) VALUES ({', '.join('?' for _ in columns)})"
    done = batches = 0
    last: tuple | None = None
    target.execute("BEGIN IMMEDIATE")
    try:
        while True:
            rows = (source.execute(first, (batch,)) if last is None
                    else source.execute(after, (*last, batch))).fetchall()
            if not rows:
                break
            target.executemany(insert, rows)
            done += len(rows)
            batches += 1
            last = tuple(rows[-1][i] for i in at)
            if batches % COMMIT_EVERY == 0:
                target.execute("COMMIT")
                target.execute("BEGIN IMMEDIATE")
            if progress:
                progress(table, done, total)
        target.execute("COMMIT")
    except BaseException:
        if target.in_transaction:
            target.execute("ROLLBACK")
        raise
    return done


def _verdict(result: dict) -> dict[str, Any]:
    """verify's result, short: what the copy report shows of each end."""
    hashes, replay = result["hashes"], result["replay"]
    verdict = {
        "ok": result["ok"],
        "integrity": ", ".join(result["integrity"]),
        "foreign_key_violations": result["foreign_key_violations"],
        "hashes_checked": hashes["checked"],
        "hashes_mismatched": hashes["mismatched"],
        "replay_differences": sorted(replay["differences"]),
    }
    if replay.get("note"):
        verdict["note"] = replay["note"]
    return verdict

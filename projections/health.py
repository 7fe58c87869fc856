"""What `status` and `verify` report: counts, lag, last compaction and backup, key states; integrity,
stored hashes, and a replay into a scratch copy compared with the live tables."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from tornstore.eventstore.canonical import RULES, canonical_hash
from tornstore.eventstore.db import close_sync, connect_sync, describe, is_postgres, table_names

from . import runner

COUNTED_TABLES = (
    "streams", "events", "quarantine", "gaps", "projection_errors",
    "players", "factions", "territories",
    "player_stats_history", "faction_history", "war_status_history", "territory_ownership_history",
    "player_stats_summary", "faction_summary", "war_summary", "territory_ownership_summary",
)

# Columns refreshed on every poll (from unchanged polls too): they may differ between inline projection
# and replay by design, so the replay comparison leaves them out. See projections/handlers.
LIVE_COLUMNS = {table: set(cols) for table, cols in runner.LIVE_COLUMNS.items()}
# Projected tables compared by verify, with the columns that identify a row's order.
COMPARED_TABLES = {
    "players": "player_id",
    "factions": "faction_id",
    "territories": "territory_id",
    "player_stats_history": "player_id, timestamp, event_position",
    "faction_history": "faction_id, timestamp, event_position",
    "war_status_history": "war_id, recorded_at, event_position",
    "territory_ownership_history": "territory_id, recorded_at, event_position",
    "stat_history": "entity_type, entity_id, stat, recorded_at, event_position",
}


WAL_WARN_BYTES = 256 * 1024 * 1024  # past this, checkpoints are not keeping up: a reader holds them back


def wal_warning(wal_bytes: int, limit: int = WAL_WARN_BYTES) -> str | None:
    """What to tell an operator whose write-ahead log has grown past `limit`, else None.

    SQLite folds the WAL back into the database at each checkpoint, but never past a page that a reader's
    open transaction still needs: one long read transaction (a notebook or a bot holding a cursor open)
    makes the WAL grow with every write until it ends."""
    if wal_bytes <= limit:
        return None
    return (f"the write-ahead log is {wal_bytes / 2**20:,.0f} MB (over {limit / 2**20:,.0f} MB): a reader is "
            "probably holding a long transaction open, so checkpoints cannot finish; end it (close the "
            "cursor or connection), and the WAL is folded back at the next checkpoint")


def status(conn: sqlite3.Connection, path: str, wal_limit: int = WAL_WARN_BYTES) -> dict:
    """Everything an operator asks first, as one plain dict (the CLI prints it, --json dumps it)."""
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in COUNTED_TABLES}
    if is_postgres(conn):   # (the database's size on the server; it has no file of its own here)
        size, wal_bytes = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0], 0
    else:
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        wal_bytes = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    warning = wal_warning(wal_bytes, wal_limit)
    first, last = conn.execute("SELECT MIN(observed_at), MAX(observed_at) FROM events").fetchone()
    ledger = conn.execute(
        "SELECT period_start, state, folded_at, pruned_at FROM compaction_ledger "
        "ORDER BY period_start DESC LIMIT 1").fetchone()
    backup = conn.execute("SELECT path, created_at, bytes FROM backups ORDER BY id DESC LIMIT 1").fetchone()
    keys = [dict(zip(("fingerprint", "owner", "state", "paused_until", "last_error_code", "requests"), row,
                     strict=True))
            for row in conn.execute("SELECT fingerprint, owner, state, paused_until, last_error_code, requests "
                                    "FROM api_keys ORDER BY fingerprint")]
    views = dict(conn.execute("SELECT view, COUNT(*) FROM streams GROUP BY view ORDER BY view"))
    return {
        "database": describe(path),
        "file_bytes": size,
        "wal_bytes": wal_bytes,
        "warnings": [warning] if warning else [],
        "schema_version": conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0],
        "rows": counts,
        "streams_by_view": views,
        "log": {"last_position": runner.log_end(conn), "first_observed_at": first, "last_observed_at": last},
        "projection_lag": runner.lag(conn),
        "prune_horizon": runner.prune_horizon(conn),
        "snapshot": _snapshot_info(conn),
        "last_compaction": (dict(zip(("period_start", "state", "folded_at", "pruned_at"), ledger, strict=True))
                            if ledger else None),
        "last_backup": dict(zip(("path", "created_at", "bytes"), backup, strict=True)) if backup else None,
        "keys": keys,
    }


def _snapshot_info(conn: sqlite3.Connection) -> dict | None:
    meta = runner.snapshot_meta(conn)
    if not meta.horizon:
        return None
    return {"horizon": meta.horizon, "prefix_position": meta.prefix, "made_at": meta.made_at,
            "legacy": meta.legacy}


def check_hashes(conn: sqlite3.Connection, batch: int = 5000) -> dict:
    """Recompute the canonical hash of every stored event made with today's rules."""
    checked = mismatched = other_rules = 0
    bad: list[int] = []
    after = 0
    while True:
        rows = conn.execute(
            "SELECT e.position, s.view, e.hash, e.rules, e.payload FROM events e JOIN streams s USING (stream_id) "
            "WHERE e.position > ? ORDER BY e.position LIMIT ?", (after, batch)).fetchall()
        if not rows:
            break
        for position, view, digest, rules, payload in rows:
            if rules != RULES:
                other_rules += 1
                continue
            checked += 1
            if canonical_hash(view, msgspec.json.decode(payload)) != digest:
                mismatched += 1
                if len(bad) < 20:
                    bad.append(position)
        after = rows[-1][0]
    return {"checked": checked, "mismatched": mismatched, "other_rules": other_rules, "bad_positions": bad}


def table_rows(conn: sqlite3.Connection, table: str, since: int = 0, upto: int | None = None,
               schema: str = "main") -> list[tuple]:
    """A projected table's rows in a stable order, without `id` and the live columns; for a history table
    only the rows observed at or after `since`, and (`upto`) made by events up to that position."""
    cols = [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({table})")
            if r[1] != "id" and r[1] not in LIVE_COLUMNS.get(table, ())]
    terms = []
    if since and table in runner.HISTORY_TABLES:
        terms.append(f"{runner.HISTORY_TABLES[table][0]} >= {int(since)}")
    if upto is not None and table in runner.HISTORY_TABLES:
        terms.append(f"event_position <= {int(upto)}")
    where = f" WHERE {' AND '.join(terms)}" if terms else ""
    return conn.execute(f"SELECT {', '.join(cols)} FROM {schema}.{table}{where} "
                        f"ORDER BY {COMPARED_TABLES[table]}").fetchall()


@contextlib.contextmanager
def _replayed(conn: sqlite3.Connection, progress: Callable[[int], None] | None) -> Iterator[tuple]:
    """(connection, schema) holding every projection replayed from the log, beside the live database.

    SQLite: a copy of the file (VACUUM INTO) replayed whole. PostgreSQL, where a copy of the database is
    no cheap thing: the replay's own shadow (TEMP tables on this connection), built in one read snapshot
    and compared with the live tables in that same snapshot."""
    if is_postgres(conn):
        with runner.Shadow(conn) as shadow:
            conn.execute("BEGIN")
            try:
                meta = runner.snapshot_meta(conn)
                shadow.load(meta)
                shadow.apply(meta, meta.prefix, runner.log_end(conn), progress=progress)
                shadow.trim(runner.projection_horizon(conn))
                yield conn, "temp"
            finally:
                conn.execute("ROLLBACK")
        return
    with tempfile.TemporaryDirectory(prefix="tornstore-verify-") as tmp:
        scratch = str(Path(tmp) / "scratch.db")
        conn.execute("VACUUM INTO ?", (scratch,))
        copy = connect_sync(scratch)
        try:
            runner.replay(copy, progress=progress)
            yield copy, "main"
        finally:
            close_sync(copy)


def compare_with_replay(conn: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> dict:
    """Copy the database, replay every projection in the copy, and compare projected tables.

    Like with like: replay writes no history row before the projection horizon (the newest snapshot's,
    or the prune horizon), and the live history rows there are months being pruned, so history is
    compared from that horizon on; current state is compared whole, live columns aside. A projection
    behind the log (a new one, added by a migration, catches up with the next ingest) is compared for
    the events it has applied, and reported in `behind`."""
    since = runner.projection_horizon(conn)
    meta = runner.snapshot_meta(conn)
    behind = {name: n for name, n in runner.lag(conn).items() if n}
    done = runner.load_checkpoints(conn)
    upto = {t: done.get(h.name, 0) for h in runner.handlers() if h.name in behind for t in h.history_tables}
    with _replayed(conn, progress) as (copy, schema):
        differences = {}
        present = table_names(conn)
        for table in (t for t in COMPARED_TABLES if t in present):   # (stat_history: from 0007 on)
            live, rebuilt = (table_rows(conn, table, since, upto.get(table)),
                             table_rows(copy, table, since, upto.get(table), schema))
            if live != rebuilt:
                live_set, rebuilt_set = set(live), set(rebuilt)
                differences[table] = {
                    "live_only": len(live_set - rebuilt_set),
                    "replay_only": len(rebuilt_set - live_set),
                    "example": repr(sorted(live_set ^ rebuilt_set, key=repr)[:1])[:300],
                }
    result: dict = {"tables_compared": len(COMPARED_TABLES), "differences": differences, "history_since": since}
    if behind:
        result["behind"] = behind
        result["behind_note"] = ("these projections have events still to apply (a projection added by an "
                                 "upgrade): the next ingest or `tornstore replay --projection NAME` brings them "
                                 "up to date; they were compared for the events they have applied")
    if meta.legacy:
        result["note"] = ("pruned before migration 0004, which keeps the projections' state at the horizon: "
                          "replay rebuilds from the retained log alone, and what only pruned events carried "
                          "cannot come back; `tornstore replay` once adopts the rebuilt tables")
    return result


def verify(conn: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> dict:
    integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    hashes = check_hashes(conn)
    replay = compare_with_replay(conn, progress)
    ok = integrity == ["ok"] and not fk and hashes["mismatched"] == 0 and not replay["differences"]
    return {"ok": ok, "integrity": integrity[:10], "foreign_key_violations": len(fk), "hashes": hashes,
            "replay": replay}

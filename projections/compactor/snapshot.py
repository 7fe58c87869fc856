"""The projections' state at the prune horizon, kept before pruning so that replay can start there.

    prefix = take(conn, horizon, now)      # before the first delete of months ending before `horizon`

Pruning deletes the events and history rows of old months, but the projected tables still carry values
only those events gave (a territory's sector, a player's life maximum, an open war). So before a prune
the compactor replays the projections up to the new horizon in a shadow (runner.Shadow: the newest
snapshot, plus the events after its prefix that belong to the new one) and keeps the result in the
`*_at_horizon` tables (migration 0004): every current-state row, and per entity the history rows in force
at the horizon. Replay then starts from that state and applies the events after its prefix
(runner.replay), and inline projection writes no history row before its horizon.

The snapshot is the projection of a prefix of the log, positions 1..prefix: the longest one whose events
were all observed before the horizon. An event observed before the horizon but appended after an event
observed after it (late data) is outside the prefix: the compactor keeps it in the log and replay applies
it at its position, as inline projection did.

Taking a snapshot seals its months: no later run folds them again (late data behind it is kept in the
log and reported, as behind the prune horizon). The build reads the log in one read transaction (writers
go on) and the snapshot is written in one short write transaction. Crash hooks: snapshot:built (the shadow
is complete, nothing written), snapshot:before-commit, snapshot:committed.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from tornstore.eventstore.db import table_names
from tornstore.projections import runner

from .ledger import crash_point


def prefix_for(conn: sqlite3.Connection, horizon: int, after: int = 0) -> int:
    """The longest prefix of the log (its last position) whose events were all observed before `horizon`,
    and never shorter than `after` (an earlier snapshot's prefix)."""
    first = conn.execute("SELECT MIN(position) FROM events WHERE observed_at >= ?", (horizon,)).fetchone()[0]
    end = first - 1 if first is not None else runner.log_end(conn)
    return max(end, after)


def supported(conn: sqlite3.Connection) -> bool:
    """Whether the schema keeps snapshots (migration 0004): a database opened with older code does not."""
    return "projection_snapshots" in table_names(conn)


def take(conn: sqlite3.Connection, horizon: int, now: int, batch: int = 5000,
         progress: Callable[[str, int, int], None] | None = None) -> int | None:
    """Keep the projections' state at `horizon`, unless a snapshot at or after it exists. Returns the prefix
    of the snapshot in force afterwards (None on a schema without snapshots).

    `conn` is outside any transaction; it must not be projecting for anyone else meanwhile (the shadow
    lives on it until this returns).
    """
    if not supported(conn):
        return None
    meta = runner.snapshot_meta(conn)
    if meta.horizon >= horizon:
        return meta.prefix
    with runner.Shadow(conn) as shadow:
        conn.execute("BEGIN")   # read: one view of the log while the shadow is built
        meta = runner.snapshot_meta(conn)
        if meta.horizon >= horizon:
            conn.execute("COMMIT")
            return meta.prefix
        prefix = prefix_for(conn, horizon, meta.prefix)
        shadow.load(meta)
        step = None
        if progress is not None:
            report = progress
            total = conn.execute("SELECT COUNT(*) FROM events WHERE position > ? AND position <= ?",
                                 (meta.prefix, prefix)).fetchone()[0]
            done = [0]
            report("keep state", 0, total)

            def step(n: int) -> None:
                done[0] += n
                report("keep state", done[0], total)
        shadow.apply(meta, meta.prefix, prefix, batch, step)
        conn.execute("COMMIT")
        crash_point("snapshot:built")
        conn.execute("BEGIN IMMEDIATE")
        try:
            if runner.snapshot_meta(conn) != meta:   # another run took one meanwhile
                conn.execute("ROLLBACK")
                return runner.snapshot_meta(conn).prefix
            shadow.save(horizon, prefix, now)
            crash_point("snapshot:before-commit")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    crash_point("snapshot:committed")
    return prefix

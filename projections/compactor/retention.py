"""Pruning a folded month's detail, in bounded batches, and giving the space back.

What a prune of month M deletes (each batch is its own transaction, and the ledger's counters move in
the same transaction, so a crash between batches loses nothing and counts nothing twice):

  * events observed in M whose position the fold covered (`position <= covered_position`) and that are
    not the latest event of their stream (greatest observed_at, ties by version): current state, replay
    and change detection start from the latest event, so it always stays;
  * every `*_history` row observed in M: history is a projection of the log, and no history row may
    exist behind the prune horizon (replay writes none there), so what the log keeps stays consistent
    with a rebuild.

Events of M with a higher position than the fold covered arrived after the fold. They are never deleted:
before a prune starts they make the month fold again (the compactor checks just before pruning); once
detail is gone they stay in the log, outside the sealed summary, and every compaction report counts them
(`late_behind_horizon`). Their history rows, if a projection wrote any before the month was sealed, go
with the rest of the month's history.

Summary rows are never touched here.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from . import ledger
from .folds import HISTORY_TABLES
from .periods import Period

BATCH = 20000

# An event that is not the latest of its stream: another event of the stream observed later, or in the same
# second and appended after it (a higher version: versions and positions both grow with every append to a
# stream, so within a stream the higher position is the higher version). One probe of the covering index
# events(stream_id, observed_at) per event.
_NOT_LATEST = (
    "EXISTS (SELECT 1 FROM events AS n WHERE n.stream_id = e.stream_id AND n.observed_at >= e.observed_at "
    "AND (n.observed_at > e.observed_at OR n.position > e.position))"
)


def count_prunable(conn: sqlite3.Connection, period: Period, covered: int) -> tuple[int, int]:
    """(events, history rows) a prune of the month would delete now (for dry runs and progress)."""
    events = conn.execute(
        f"SELECT COUNT(*) FROM events AS e WHERE e.observed_at BETWEEN ? AND ? AND e.position <= ? AND {_NOT_LATEST}",
        (period.start, period.end, covered)).fetchone()[0]
    history = 0
    for h in HISTORY_TABLES:
        history += conn.execute(f"SELECT COUNT(*) FROM {h.table} WHERE {h.time} BETWEEN ? AND ?",
                                (period.start, period.end)).fetchone()[0]
    return events, history


def estimate_rows(conn: sqlite3.Connection, period: Period) -> int:
    """Rows observed in the month (index-only counts): the progress bar's total."""
    total = conn.execute("SELECT COUNT(*) FROM events WHERE observed_at BETWEEN ? AND ?",
                         (period.start, period.end)).fetchone()[0]
    for h in HISTORY_TABLES:
        total += conn.execute(f"SELECT COUNT(*) FROM {h.table} WHERE {h.time} BETWEEN ? AND ?",
                              (period.start, period.end)).fetchone()[0]
    return total


class Pruner:
    """Deletes one month's detail batch by batch. `batches` counts committed batches over the whole run
    (the crash hook `prune:batch:N` fires after the N-th commit)."""

    def __init__(self, conn: sqlite3.Connection, batch: int = BATCH,
                 progress: Callable[[int], None] | None = None):
        self.conn = conn
        self.batch = batch
        self.batches = 0
        self.progress = progress

    def _commit_batch(self, period: Period, events: int, history: int, scanned: int) -> None:
        ledger.add_pruned(self.conn, period, events, history)
        ledger.crash_point(f"prune:batch:{self.batches + 1}:before-commit")
        self.conn.execute("COMMIT")
        self.batches += 1
        ledger.crash_point(f"prune:batch:{self.batches}")
        if self.progress:
            self.progress(scanned)

    def prune_month(self, period: Period, covered: int) -> tuple[int, int]:
        """Delete the month's prunable detail; returns (events, history rows) deleted by this call."""
        conn = self.conn
        deleted_events = deleted_history = 0
        # Events: walk the month in (observed_at, position) order, `batch` rows a step, so rows that stay
        # (latest of their stream, late arrivals) are looked at once, not once per batch.
        cursor = (period.start, 0)
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT e.observed_at, e.position, "
                    f"(e.position <= ? AND {_NOT_LATEST}) FROM events AS e "
                    "WHERE e.observed_at >= ? AND e.observed_at <= ? AND (e.observed_at > ? OR e.position > ?) "
                    "ORDER BY e.observed_at, e.position LIMIT ?",
                    (covered, cursor[0], period.end, cursor[0], cursor[1], self.batch)).fetchall()
                doomed = [(r[1],) for r in rows if r[2]]
                if doomed:
                    conn.executemany("DELETE FROM events WHERE position = ?", doomed)
                if not rows:
                    conn.execute("ROLLBACK")
                    break
                cursor = (rows[-1][0], rows[-1][1])
                self._commit_batch(period, len(doomed), 0, len(rows))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            deleted_events += len(doomed)
            if len(rows) < self.batch:
                break
        # History rows: all of the month's.
        for h in HISTORY_TABLES:
            while True:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    n = conn.execute(
                        f"DELETE FROM {h.table} WHERE id IN (SELECT id FROM {h.table} "
                        f"WHERE {h.time} BETWEEN ? AND ? ORDER BY {h.time}, id LIMIT ?)",
                        (period.start, period.end, self.batch)).rowcount
                    if n == 0:
                        conn.execute("ROLLBACK")
                        break
                    self._commit_batch(period, 0, n, n)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                deleted_history += n
                if n < self.batch:
                    break
        return deleted_events, deleted_history


def reclaim_space(conn: sqlite3.Connection, step: int = 2000) -> dict:
    """Give freed pages back to the file system: `PRAGMA incremental_vacuum` in steps (each step is its
    own small transaction) on an auto_vacuum=INCREMENTAL database, a full VACUUM otherwise; then a WAL
    checkpoint so the file itself shrinks."""
    mode = conn.execute("PRAGMA auto_vacuum").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    before = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    method = "none"
    if free:
        if mode == 2:
            method = "incremental_vacuum"
            while free > 0:
                ledger.crash_point("vacuum:step")
                # executescript steps the pragma to the end: through execute(), Python's sqlite3 frees one
                # page per call (measured: 17,323 statements for one pruned month).
                conn.executescript(f"PRAGMA incremental_vacuum({int(step)});")
                left = conn.execute("PRAGMA freelist_count").fetchone()[0]
                if left >= free:
                    break  # nothing more can be given back now
                free = left
        elif mode == 0:
            method = "vacuum"
            ledger.crash_point("vacuum:step")
            conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    after = conn.execute("PRAGMA page_count").fetchone()[0]
    return {"method": method, "pages_freed": before - after, "bytes_freed": (before - after) * page_size}

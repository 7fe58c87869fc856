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

On PostgreSQL the history tables are partitioned by month (migration 0008): a month's history goes by
detaching and dropping its partition, in one transaction with the ledger's counters, and `prepare_chunks`
gives each month its partition before rows pile up in the default one.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable

from tornstore.eventstore.db import is_postgres
from tornstore.eventstore.postgres import partitions

from . import ledger
from .folds import HistoryTable, history_tables
from .periods import Period

BATCH = 20000
# History rows of one month are deleted in at most this many batches (each of at least `batch` rows).
PRUNE_STEPS = 8

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
    for h in history_tables(conn):
        history += conn.execute(f"SELECT COUNT(*) FROM {h.table} WHERE {h.time} BETWEEN ? AND ?",
                                (period.start, period.end)).fetchone()[0]
    return events, history


def estimate_rows(conn: sqlite3.Connection, period: Period) -> int:
    """Rows observed in the month (index-only counts): the progress bar's total."""
    total = conn.execute("SELECT COUNT(*) FROM events WHERE observed_at BETWEEN ? AND ?",
                         (period.start, period.end)).fetchone()[0]
    for h in history_tables(conn):
        total += conn.execute(f"SELECT COUNT(*) FROM {h.table} WHERE {h.time} BETWEEN ? AND ?",
                              (period.start, period.end)).fetchone()[0]
    return total


class Pruner:
    """Deletes one month's detail batch by batch. `batches` counts committed batches over the whole run
    (the crash hook `prune:batch:N` fires after the N-th commit, and `prune:<YYYY-MM>:batch:K` after the
    K-th commit of that month)."""

    def __init__(self, conn: sqlite3.Connection, batch: int = BATCH,
                 progress: Callable[[int], None] | None = None):
        self.conn = conn
        self.batch = batch
        self.batches = 0
        self.month_batches: dict[Period, int] = {}
        self.progress = progress

    def _commit_batch(self, period: Period, events: int, history: int, scanned: int) -> None:
        ledger.add_pruned(self.conn, period, events, history)
        ledger.crash_point(f"prune:batch:{self.batches + 1}:before-commit")
        self.conn.execute("COMMIT")
        self.batches += 1
        self.month_batches[period] = self.month_batches.get(period, 0) + 1
        ledger.crash_point(f"prune:batch:{self.batches}")
        ledger.crash_point(f"prune:{period.label}:batch:{self.month_batches[period]}")
        if self.progress:
            self.progress(scanned)

    def _prune_history(self, h: HistoryTable, period: Period) -> int:
        """Delete the month's rows of one history table; returns how many.

        Each history table has an (entity, time) index whose entries for one month are spread over all of
        its leaves, so every batch that deletes in time order rewrites most of that index: bounded batches
        cost (batches x index size), which grows with the square of the month. Hence:

        * when the month is at least half of the table, one transaction drops the table's secondary
          indexes, deletes the month's rows and builds the indexes again from the rows that stay (or,
          when no row stays, empties the table whole): sequential work in proportion to the table, and
          atomic like any batch (a crash leaves the table and its indexes as they were);
        * otherwise batches in time order of at least `batch` rows and at most PRUNE_STEPS per month,
          so the index is rewritten a bounded number of times whatever the month's size.
        """
        conn = self.conn
        month = conn.execute(f"SELECT COUNT(*) FROM {h.table} WHERE {h.time} BETWEEN ? AND ?",
                             (period.start, period.end)).fetchone()[0]
        if month == 0:
            return 0
        if is_postgres(conn) and partitions.is_partitioned(conn, h.table):
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = partitions.drop_month(conn, h.table, period.start)
                if n is None:      # no partition: the month's rows are in the default one, deleted below
                    conn.execute("ROLLBACK")
                else:
                    self._commit_batch(period, 0, n, n)
                    return n
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if month > self.batch and month * 2 >= _table_rows(conn, h) and not is_postgres(conn):
            # Deleting child rows cannot break a foreign key; with enforcement off (it can only change outside
            # a transaction) SQLite empties a whole table page by page instead of row by row.
            fk = conn.execute("PRAGMA foreign_keys").fetchone()[0]
            conn.execute("PRAGMA foreign_keys = OFF")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    n = _delete_rebuilding_indexes(conn, h, period)
                    self._commit_batch(period, 0, n, n)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                conn.execute(f"PRAGMA foreign_keys = {'ON' if fk else 'OFF'}")
            return n
        step = max(self.batch, -(-month // PRUNE_STEPS))
        deleted = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = conn.execute(
                    f"DELETE FROM {h.table} WHERE id IN (SELECT id FROM {h.table} "
                    f"WHERE {h.time} BETWEEN ? AND ? ORDER BY {h.time}, id LIMIT ?)",
                    (period.start, period.end, step)).rowcount
                if n == 0:
                    conn.execute("ROLLBACK")
                    break
                self._commit_batch(period, 0, n, n)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            deleted += n
            if n < step:
                break
        return deleted

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
        for h in history_tables(conn):
            deleted_history += self._prune_history(h, period)
        return deleted_events, deleted_history


def prepare_chunks(conn: sqlite3.Connection, now: int, keep_from: int | None = None) -> list[str]:
    """PostgreSQL: a partition for the month of `now`, the next month, and every month from `keep_from` (the
    retention window's start; default: this month) whose rows sit in a history table's default partition, in
    one write transaction. Returns the partitions made; nothing to do on SQLite, whose months are ranges of
    one table."""
    if not is_postgres(conn):
        return []
    this = Period.containing(now)
    conn.execute("BEGIN IMMEDIATE")
    try:
        made = partitions.maintain(conn, [(h.table, h.time) for h in history_tables(conn)],
                                   [(p.start, p.end + 1) for p in (this, this.next)],
                                   this.start if keep_from is None else keep_from)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return made


def _table_rows(conn: sqlite3.Connection, h: HistoryTable) -> int:
    return conn.execute(f"SELECT COUNT(*) FROM {h.table}").fetchone()[0]


def _delete_rebuilding_indexes(conn: sqlite3.Connection, h: HistoryTable, period: Period) -> int:
    """Inside the caller's transaction: delete the month's rows of `h` with its secondary indexes dropped, then
    create them again (same names, same SQL). When the month is the whole table, `DELETE` without WHERE
    empties table and indexes page by page (SQLite's truncate optimization) and the indexes stay."""
    month, total = conn.execute(
        f"SELECT COUNT(*) FILTER (WHERE {h.time} BETWEEN ? AND ?), COUNT(*) FROM {h.table}",
        (period.start, period.end)).fetchone()
    if month == total:
        conn.execute(f"DELETE FROM {h.table}")
        return total
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL "
        "ORDER BY name", (h.table,)).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    n = conn.execute(f"DELETE FROM {h.table} WHERE {h.time} BETWEEN ? AND ?",
                     (period.start, period.end)).rowcount
    for _, sql in indexes:
        conn.execute(sql)
    return n


def reclaim_space(conn: sqlite3.Connection, step: int = 2000) -> dict:
    """Give freed pages back to the file system: `PRAGMA incremental_vacuum` in steps (each step is its
    own small transaction) on an auto_vacuum=INCREMENTAL database, a full VACUUM otherwise; then a WAL
    checkpoint so the file itself shrinks. On PostgreSQL, a plain VACUUM of the tables the prune emptied
    rows from: their space is reused by new rows (the server's autovacuum would get there too)."""
    if is_postgres(conn):
        return _vacuum_postgres(conn)
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


def _vacuum_postgres(conn: sqlite3.Connection) -> dict:
    size = "SELECT pg_database_size(current_database())"
    before = conn.execute(size).fetchone()[0]
    ledger.crash_point("vacuum:step")
    for table in ("events", "streams", *(h.table for h in history_tables(conn))):
        conn.execute(f"VACUUM (ANALYZE) {table}")   # (outside a transaction: the connection is in autocommit)
    after = conn.execute(size).fetchone()[0]
    return {"method": "vacuum", "pages_freed": 0, "bytes_freed": max(before - after, 0)}

"""The compaction ledger: one row per closed month, and the crash hook the crash tests use.

States of a month (table `compaction_ledger`):

  * no row   -- never folded;
  * folded   -- its summary rows are written; `covered_position` is the highest event position whose
                history rows the fold could see. Rows of the month with a higher position arrived late;
  * stale    -- must be folded again on the next run (set before a refold starts, so a crash between two
                refolds still leaves every month that needs it marked);
  * pruned   -- its detail is deleted; the summary is sealed and never refolded.

A `folded` month whose `pruned_events` or `pruned_history_rows` is above zero is being pruned (a run died
in the middle of it): detail is already gone, so it is never refolded either; the next run finishes the
prune.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from .periods import Period

CRASH_ENV = "TORNSTORE_CRASH_AT"


def crash_point(name: str) -> None:
    """Die on the spot (like SIGKILL: no cleanup, no rollback, no flush) when TORNSTORE_CRASH_AT names
    this step. Used by the crash tests to stop a real process at a chosen point; costs one getenv."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted == name:
        os._exit(86)


@dataclass
class LedgerRow:
    period: Period
    state: str
    covered_position: int
    summary_rows: int
    pruned_events: int
    pruned_history_rows: int
    folded_at: int | None
    pruned_at: int | None

    @property
    def prune_started(self) -> bool:
        return self.state == "pruned" or self.pruned_events > 0 or self.pruned_history_rows > 0


def read(conn: sqlite3.Connection) -> dict[Period, LedgerRow]:
    rows = conn.execute(
        "SELECT period_start, state, covered_position, summary_rows, pruned_events, pruned_history_rows, "
        "folded_at, pruned_at FROM compaction_ledger ORDER BY period_start").fetchall()
    out = {}
    for start, *rest in rows:
        period = Period.containing(start)
        out[period] = LedgerRow(period, *rest)
    return out


def mark_stale(conn: sqlite3.Connection, periods: list[Period]) -> None:
    """Inside the caller's transaction: these months will be folded again."""
    conn.executemany("UPDATE compaction_ledger SET state = 'stale' WHERE period_start = ? AND state = 'folded'",
                     [(p.start,) for p in periods])


def record_fold(conn: sqlite3.Connection, period: Period, covered: int, summary_rows: int, now: int) -> None:
    """Inside the fold's transaction: the month is folded up to `covered`."""
    conn.execute(
        "INSERT INTO compaction_ledger (period_start, period_end, state, covered_position, summary_rows, "
        "pruned_events, pruned_history_rows, folded_at, pruned_at) VALUES (?, ?, 'folded', ?, ?, 0, 0, ?, NULL) "
        "ON CONFLICT (period_start) DO UPDATE SET period_end = excluded.period_end, state = 'folded', "
        "covered_position = excluded.covered_position, summary_rows = excluded.summary_rows, "
        "pruned_events = 0, pruned_history_rows = 0, folded_at = excluded.folded_at, pruned_at = NULL",
        (period.start, period.end, covered, summary_rows, now),
    )


def add_pruned(conn: sqlite3.Connection, period: Period, events: int, history_rows: int) -> None:
    """Inside a prune batch's transaction: count what the batch deleted."""
    conn.execute(
        "UPDATE compaction_ledger SET pruned_events = pruned_events + ?, "
        "pruned_history_rows = pruned_history_rows + ? WHERE period_start = ?",
        (events, history_rows, period.start),
    )


def record_pruned(conn: sqlite3.Connection, period: Period, now: int) -> None:
    conn.execute("UPDATE compaction_ledger SET state = 'pruned', pruned_at = ? WHERE period_start = ?",
                 (now, period.start))

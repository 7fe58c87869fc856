"""The compactor: fold each closed UTC month into the `*_summary` tables, then prune old detail.

    report = compact(conn, now)            # conn from eventstore.db.connect_sync; now = Unix seconds

One run, in order (every step can be killed at any point and the next run ends where an uninterrupted
run would have ended):

1. **Plan.** Every closed month from the oldest retained detail (event or history row at or after the
   prune horizon) to the month before `now` that has no fold yet, or whose fold is out of date: late
   rows arrived (rows of the month with an event position above the ledger's `covered_position`), the
   ledger says `stale`, or it was asked for with `month=`. Once one month is folded again, every later
   folded month is folded again too (its start values come from the month before it).
   Months whose detail is (being) pruned are sealed: never folded again.
2. **Mark** the months to refold `stale` in one transaction (a crash before they are refolded leaves
   them marked), then **fold** each month, oldest first, each in one transaction: the month's summary
   rows are replaced whole and the ledger row says `folded`, with the log position it covered.
3. **Back up** (before the first delete of the run; see eventstore.backup), **keep the state at the
   new horizon** (snapshot.py: the projections replayed up to it, so replay can start there; this seals
   the months before it), then **prune**: each closed month older than the retention window
   (`retention_months` closed months before the current month, plus the current month, are kept) whose
   fold is complete, oldest first, stopping at the first month that is not folded (or that received late
   rows since its fold: it is folded again by the next run first). Bounded batches, each its own
   transaction (see retention.py); no event after the snapshot's prefix is deleted. When a month is done
   the ledger says `pruned` and store_meta `prune_horizon` moves to the first second after it; after
   the last month it is the start of the retention window.
4. **Reclaim** the freed pages (incremental vacuum) so the file shrinks.

Late data behind the horizon (observed in a pruned month, after its fold) cannot be folded honestly:
it stays in the log, the sealed summary is left alone, and the report counts it.

`now` is the run's clock, read once by the caller; every time the compactor writes (created_at,
folded_at, pruned_at, backup name) comes from it.

Crash hooks (TORNSTORE_CRASH_AT=<name> makes the process `os._exit` at that step, see ledger.crash_point):
  plan:marked, fold:<YYYY-MM>:computed, fold:<YYYY-MM>:before-commit, fold:<YYYY-MM>:committed,
  backup:before, backup:copied, backup:rotated, snapshot:built, snapshot:before-commit, snapshot:committed,
  prune:batch:<N>:before-commit, prune:batch:<N> (after
  the N-th batch of the run commits), prune:<YYYY-MM>:batch:<K> (after the K-th batch of that month commits),
  prune:<YYYY-MM>:before-seal, prune:<YYYY-MM>:sealed, vacuum:step,
  compact:done.
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tornstore.eventstore.backup import (backup_database, database_path, dated_backup_path, forget_backups,
                               record_backup, rotate_backups)
from tornstore.eventstore.db import is_postgres
from tornstore.projections import runner
from tornstore.projections.runner import prune_horizon

from . import folds, ledger, retention, snapshot
from .ledger import crash_point
from .periods import Period, iso, last_closed, months_between, retention_start

__all__ = ["compact", "months_to_fold", "plan", "CompactionReport", "CompactionError", "FoldPlan", "FoldResult",
           "PruneResult", "Period", "DEFAULT_RETENTION_MONTHS"]

DEFAULT_RETENTION_MONTHS = 2

# progress(stage, done, total): stage is "fold", "keep state", "prune <YYYY-MM>" or "vacuum"; done and total
# count months (fold), events replayed (keep state) or rows scanned (prune).
Progress = Callable[[str, int, int], None]


class CompactionError(ValueError):
    """A request the compactor cannot honour (the message says why): a month that is not closed,
    a month whose detail is already pruned, a connection inside a transaction."""


@dataclass(frozen=True)
class FoldPlan:
    period: Period
    reason: str     # new, stale, late, requested, cascade


@dataclass
class FoldResult:
    month: str
    reason: str
    summary_rows: dict[str, int]
    covered_position: int


@dataclass
class PruneResult:
    month: str
    events: int
    history_rows: int


@dataclass
class CompactionReport:
    now: int
    dry_run: bool
    retention_months: int
    window_start: int
    horizon_before: int
    horizon_after: int
    folded: list[FoldResult] = field(default_factory=list)
    pruned: list[PruneResult] = field(default_factory=list)
    late_behind_horizon: int = 0
    late_behind_horizon_by_month: dict[str, int] = field(default_factory=dict)
    backup: str | None = None
    removed_backups: list[str] = field(default_factory=list)
    snapshot: dict | None = None     # the state kept at the horizon by this run: horizon, prefix_position
    reclaimed: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def summary_rows(self) -> int:
        return sum(sum(f.summary_rows.values()) for f in self.folded)

    @property
    def events_pruned(self) -> int:
        return sum(p.events for p in self.pruned)

    @property
    def history_rows_pruned(self) -> int:
        return sum(p.history_rows for p in self.pruned)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["now_iso"] = iso(self.now)
        out["window_start_iso"] = iso(self.window_start)
        out["horizon_before_iso"] = iso(self.horizon_before) if self.horizon_before else None
        out["horizon_after_iso"] = iso(self.horizon_after) if self.horizon_after else None
        if self.snapshot:
            out["snapshot"] = dict(self.snapshot, horizon_iso=iso(self.snapshot["horizon"]))
        out["totals"] = {"months_folded": len(self.folded), "summary_rows": self.summary_rows,
                         "months_pruned": len(self.pruned), "events_pruned": self.events_pruned,
                         "history_rows_pruned": self.history_rows_pruned}
        return out


# ---------------------------------------------------------------------------------------------- reading
def _earliest_detail(conn: sqlite3.Connection, horizon: int) -> int | None:
    """Observed time of the oldest event or history row at or after the horizon."""
    times = [conn.execute("SELECT MIN(observed_at) FROM events WHERE observed_at >= ?", (horizon,)).fetchone()[0]]
    for h in folds.history_tables(conn):
        times.append(conn.execute(f"SELECT MIN({h.time}) FROM {h.table} WHERE {h.time} >= ?",
                                  (horizon,)).fetchone()[0])
    times = [t for t in times if t is not None]
    return min(times) if times else None


def _has_late_rows(conn: sqlite3.Connection, period: Period, covered: int) -> bool:
    """Rows observed in the month that the fold did not see (position above the covered one)."""
    if conn.execute("SELECT EXISTS (SELECT 1 FROM events WHERE observed_at BETWEEN ? AND ? AND position > ?)",
                    (period.start, period.end, covered)).fetchone()[0]:
        return True
    for h in folds.history_tables(conn):
        if conn.execute(f"SELECT EXISTS (SELECT 1 FROM {h.table} WHERE {h.time} BETWEEN ? AND ? "
                        "AND event_position > ?)", (period.start, period.end, covered)).fetchone()[0]:
            return True
    return False


def _covered_position(conn: sqlite3.Connection) -> int:
    """The highest event position whose history rows exist now: the end of the log, or less when a
    projection that writes history is behind (its rows for later events do not exist yet)."""
    end = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    try:
        from tornstore.projections.runner import runnable
        names = [h.name for h in runnable(conn) if h.history_tables]
    except ImportError:  # no handlers registered (yet): history rows are written by hand
        names = []
    if names and end:
        checkpoints = dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))
        end = min([end] + [checkpoints.get(n, 0) for n in names])
    return end


def plan(conn: sqlite3.Connection, now: int, month: Period | str | None = None) -> list[FoldPlan]:
    """The months a run at `now` would fold, oldest first, each with the reason."""
    if isinstance(month, str):
        month = Period.parse(month)
    last = last_closed(now)
    rows = ledger.read(conn)
    horizon = prune_horizon(conn)
    sealed = runner.projection_horizon(conn)   # a snapshot taken for a prune seals its months at once
    if month is not None:
        if not month.is_closed(now):
            raise CompactionError(f"month {month} is not closed yet at {iso(now)}: only closed months are folded")
        row = rows.get(month)
        if row is not None and row.prune_started:
            raise CompactionError(f"month {month} is pruned: its detail is gone and its summary is sealed")
        if month.end < sealed:
            raise CompactionError(f"month {month} is behind the prune horizon {iso(sealed)}: its summary is sealed")
    starts = []
    earliest = _earliest_detail(conn, horizon)
    if earliest is not None:
        starts.append(Period.containing(earliest))
    open_rows = [p for p, r in rows.items() if not r.prune_started]
    if open_rows:
        starts.append(min(open_rows))
    if month is not None and (not starts or month < min(starts)):
        raise CompactionError(f"month {month} has no detail to fold"
                              + (f" (detail starts {min(starts)})" if starts else ""))
    if not starts:
        return []
    out: list[FoldPlan] = []
    cascading = False
    for period in months_between(min(starts), last):
        row = rows.get(period)
        if (row is not None and row.prune_started) or period.end < sealed:
            continue
        reason = None
        if row is None:
            reason = "new"
        elif row.state == "stale":
            reason = "stale"
        elif _has_late_rows(conn, period, row.covered_position):
            reason = "late"
        elif month == period:
            reason = "requested"
        elif cascading:
            reason = "cascade"
        if reason:
            out.append(FoldPlan(period, reason))
            cascading = True
    return out


def months_to_fold(conn: sqlite3.Connection, now: int) -> list[Period]:
    """Every closed month a run at `now` would fold (new ones, and ones with late data), oldest first."""
    return [p.period for p in plan(conn, now)]


def _late_behind_horizon(conn: sqlite3.Connection, horizon: int) -> dict[str, int]:
    """Events observed before the horizon that no fold saw (they arrived after their month was folded):
    kept in the log, outside the sealed summaries. Counted per month."""
    if not horizon:
        return {}
    out: dict[str, int] = {}
    for observed_at, position, covered in conn.execute(
            "SELECT e.observed_at, e.position, l.covered_position FROM events AS e "
            "LEFT JOIN compaction_ledger AS l ON e.observed_at BETWEEN l.period_start AND l.period_end "
            "WHERE e.observed_at < ?", (horizon,)):
        if covered is None or position > covered:
            label = Period.containing(observed_at).label
            out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items()))


def _prune_candidates(rows: dict[Period, ledger.LedgerRow], planned: set[Period], window_start: int,
                      horizon: int, notes: list[str]) -> list[Period]:
    """Closed months before the window, oldest first, that may be pruned: folded (now, or by this run's
    plan), not pruned yet. Stops at the first month without a completed fold, so the horizon never
    jumps over one."""
    pending = sorted(p for p, r in rows.items() if r.state != "pruned")
    pending = sorted(set(pending) | planned)
    out: list[Period] = []
    if not pending:
        return out
    for period in months_between(pending[0], Period.containing(window_start).previous):
        if period.end < horizon:
            continue
        row = rows.get(period)
        folded = period in planned or (row is not None and row.state == "folded")
        if not folded:
            notes.append(f"{period} is not folded: it and later months keep their detail until a fold completes")
            break
        out.append(period)
    return out


# ---------------------------------------------------------------------------------------------- running
def compact(conn: sqlite3.Connection, now: int, *, month: Period | str | None = None, dry_run: bool = False,
            retention_months: int = DEFAULT_RETENTION_MONTHS, backup: bool = True, keep_backups: int = 3,
            db_path: str | Path | None = None, progress: Progress | None = None,
            batch: int = retention.BATCH) -> CompactionReport:
    """Fold every closed month that needs it, then prune detail older than the retention window.

    `conn`: a sync connection from eventstore.db.connect_sync, not inside a transaction. `now`: the run's
    clock in Unix seconds. `month`: also fold this closed month again ('YYYY-MM' or Period), with the
    later months that start from it. `dry_run`: work out and report what would happen; change nothing.
    `backup`: copy the database beside itself before the first prune of the run (`db_path` names the file;
    default: the connection's own file), keeping the newest `keep_backups` dated copies.
    """
    if conn.in_transaction:
        raise CompactionError("compact needs a connection outside any transaction")
    if retention_months < 0:
        raise CompactionError("retention_months must be 0 or more")
    if backup and keep_backups < 1:
        raise CompactionError("keep_backups must be 1 or more (or pass backup=False)")
    now = int(now)
    window_start = retention_start(now, retention_months)
    horizon = prune_horizon(conn)
    report = CompactionReport(now=now, dry_run=dry_run, retention_months=retention_months,
                              window_start=window_start, horizon_before=horizon, horizon_after=horizon)
    with _one_compactor(conn, dry_run):
        try:
            if dry_run:
                _dry_run(conn, now, month, window_start, report, progress)
            else:
                _run(conn, now, month, window_start, report, progress, backup, keep_backups, db_path, batch)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            folds.drop_temp(conn)
    # A dry run moves no horizon: what is behind the horizon now is what it reports.
    report.late_behind_horizon_by_month = _late_behind_horizon(
        conn, report.horizon_before if dry_run else report.horizon_after)
    report.late_behind_horizon = sum(report.late_behind_horizon_by_month.values())
    if report.late_behind_horizon:
        report.notes.append(
            f"{report.late_behind_horizon} event(s) observed before the prune horizon arrived after their month "
            "was folded: kept in the log, not in the sealed summaries")
    crash_point("compact:done")
    return report


@contextlib.contextmanager
def _one_compactor(conn: sqlite3.Connection, dry_run: bool) -> Iterator[None]:
    """On PostgreSQL, one compactor at a time across every host (a session advisory lock, held for the
    run): any node may start it, a second one is told to wait. (On SQLite each step's write lock is
    enough: the ledger lets a second run find the work done.)"""
    if dry_run or not is_postgres(conn):
        yield
        return
    from tornstore.eventstore.postgres.connection import COMPACT_LOCK
    if not conn.execute("SELECT pg_try_advisory_lock(?, ?)", COMPACT_LOCK).fetchone()[0]:
        raise CompactionError("another compactor is running on this database (on this host or another): "
                              "try again when it has finished")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("SELECT pg_advisory_unlock(?, ?)", COMPACT_LOCK)


def _fold_month(conn: sqlite3.Connection, item: FoldPlan, now: int, folded_months: set[Period],
                write: bool) -> FoldResult:
    period = item.period
    prior_from_summary = period.previous in folded_months
    covered = _covered_position(conn)
    counts = folds.compute_all(conn, period, prior_from_summary)
    label = period.label
    if write:
        crash_point(f"fold:{label}:computed")
        folds.write_all(conn, period, now)
        ledger.record_fold(conn, period, covered, sum(counts.values()), now)
        crash_point(f"fold:{label}:before-commit")
    return FoldResult(label, item.reason, counts, covered)


def _run(conn, now, month, window_start, report, progress, backup, keep_backups, db_path, batch) -> None:
    retention.prepare_chunks(conn, now, window_start)
    items = plan(conn, now, month)
    rows = ledger.read(conn)
    if items:
        conn.execute("BEGIN IMMEDIATE")
        try:
            ledger.mark_stale(conn, [i.period for i in items if i.period in rows])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        crash_point("plan:marked")
    folded_months = set(rows)
    for done, item in enumerate(items):
        if progress:
            progress("fold", done, len(items))
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = _fold_month(conn, item, now, folded_months, write=True)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        crash_point(f"fold:{item.period.label}:committed")
        folds.drop_temp(conn)
        folded_months.add(item.period)
        report.folded.append(result)
    if progress and items:
        progress("fold", len(items), len(items))

    rows = ledger.read(conn)
    horizon = prune_horizon(conn)
    candidates = _prune_candidates(rows, set(), window_start, horizon, report.notes)
    kept = runner.snapshot_meta(conn).horizon   # months before it are sealed already (a run died pruning them)
    ready: list[Period] = []
    for period in candidates:
        row = rows[period]
        if not row.prune_started and period.end >= kept and _has_late_rows(conn, period, row.covered_position):
            # Late rows landed after this run folded it: fold it again next run rather than seal them out.
            report.notes.append(f"{period} received late data during this run: it is pruned after the next fold")
            break
        ready.append(period)
    if not ready:
        return
    if backup:
        _backup(conn, now, keep_backups, db_path, report)
    new_horizon = ready[-1].end + 1
    prefix = snapshot.take(conn, new_horizon, now, batch=max(batch, 5000), progress=progress)
    if prefix is not None and kept < new_horizon:
        report.snapshot = {"horizon": new_horizon, "prefix_position": prefix}
    pruner = retention.Pruner(conn, batch=batch)
    for period in ready:
        row = rows[period]
        if progress:
            total = retention.estimate_rows(conn, period)
            scanned = [0]
            stage = f"prune {period.label}"
            progress(stage, 0, total)

            def advance(n, stage=stage, total=total, scanned=scanned):
                scanned[0] += n
                progress(stage, min(scanned[0], total), total)
            pruner.progress = advance
        # Events after the snapshot's prefix are not in it: replay applies them, so they stay.
        pruner.prune_month(period, row.covered_position if prefix is None else min(row.covered_position, prefix))
        crash_point(f"prune:{period.label}:before-seal")
        conn.execute("BEGIN IMMEDIATE")
        try:
            ledger.record_pruned(conn, period, now)
            conn.execute(
                "INSERT INTO store_meta (key, value) VALUES ('prune_horizon', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = MAX(COALESCE(store_meta.value, 0), excluded.value)",
                (period.end + 1,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        crash_point(f"prune:{period.label}:sealed")
        sealed = ledger.read(conn)[period]
        report.pruned.append(PruneResult(period.label, sealed.pruned_events, sealed.pruned_history_rows))
    report.horizon_after = prune_horizon(conn)
    if progress:
        progress("vacuum", 0, 1)
    report.reclaimed = retention.reclaim_space(conn)
    if progress:
        progress("vacuum", 1, 1)


def _backup(conn, now, keep_backups, db_path, report) -> None:
    if is_postgres(conn):
        report.notes.append("PostgreSQL: no file copy is taken before the prune; back the database up with "
                            "pg_dump (or your server's backups)")
        return
    path = db_path or database_path(conn)
    if not path:
        report.notes.append("in-memory database: no backup taken")
        return
    dest = dated_backup_path(path, now)
    crash_point("backup:before")
    if dest.exists():
        # A run at the same clock already made it (and then died): keep that copy, it predates the prune.
        record_backup(conn, dest, now, dest.stat().st_size, "compact")
    else:
        backup_database(conn, dest, created_at=now, reason="compact")
    crash_point("backup:copied")
    report.backup = str(dest)
    removed = rotate_backups(path, keep_backups)
    forget_backups(conn, removed)
    report.removed_backups = removed
    crash_point("backup:rotated")


def _dry_run(conn, now, month, window_start, report, progress) -> None:
    """Work out what a run would do, reading only (temp tables live in memory): nothing is written."""
    items = plan(conn, now, month)
    rows = ledger.read(conn)
    folded_months = set(rows)
    covered_now = _covered_position(conn)
    conn.execute("BEGIN")  # one consistent snapshot for the whole preview
    try:
        for done, item in enumerate(items):
            if progress:
                progress("fold", done, len(items))
            # Start values come from the summary as it stands: a month the plan folds before this one is not
            # written in a dry run, so the preview of a cascade can differ slightly from the real run.
            result = _fold_month(conn, item, now, folded_months, write=False)
            folds.drop_temp(conn)
            report.folded.append(result)
        horizon = prune_horizon(conn)
        planned = {i.period for i in items}
        candidates = _prune_candidates(rows, planned, window_start, horizon, report.notes)
        prefix = None
        if candidates and snapshot.supported(conn):
            meta = runner.snapshot_meta(conn)
            new_horizon = candidates[-1].end + 1
            prefix = meta.prefix if meta.horizon >= new_horizon else snapshot.prefix_for(conn, new_horizon, meta.prefix)
        for period in candidates:
            row = rows.get(period)
            covered = covered_now if (period in planned or row is None) else row.covered_position
            if prefix is not None:
                covered = min(covered, prefix)
            events, history = retention.count_prunable(conn, period, covered)
            report.pruned.append(PruneResult(period.label, events, history))
            report.horizon_after = max(report.horizon_after, period.end + 1)
        if report.pruned:
            report.notes.append("dry run: nothing was changed; the counts are what a run would delete")
    finally:
        conn.execute("ROLLBACK")

"""The compactor's fast paths give the rows the folding rules give, and prune what the rules prune.

* The numeric fold reads each entity's first and last rows of the month and checks, in one pass, that a
  stat NULL in the last row is NULL in all of them (projections carry values forward). Histories written
  here break that on purpose (a value that turns NULL, values only mid-month, rows of one second, rows
  appended out of time order) and every summary row is compared with the rules computed in Python.
* Pruning a month that is most of its table drops and rebuilds the table's indexes in one transaction;
  a smaller month goes in batches. Both delete exactly the month's rows and leave the schema as it was.

Real SQLite files; `now` is passed in; no timing.
"""
from __future__ import annotations

import calendar
import random
import sqlite3
from pathlib import Path

import pytest

from tornstore.eventstore.db import connect_sync
from tornstore.eventstore.migrate import migrate
from tornstore.projections.compactor import compact, retention
from tornstore.projections.compactor.folds import FACTION, PLAYER_STATS, NumericFold
from tornstore.projections.compactor.periods import Period

MONTHS = [Period(2026, 1), Period(2026, 2), Period(2026, 3)]
NOW = calendar.timegm((2026, 4, 2, 0, 0, 0))


def _new_db(path: Path) -> sqlite3.Connection:
    conn = connect_sync(path)
    migrate(conn)
    return conn


def _entities(conn: sqlite3.Connection, players: int, factions: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (?, ?, 0, 0)",
                     [(f, f"f{f}") for f in range(1, factions + 1)])
    conn.executemany("INSERT INTO players (player_id, name, created_at, last_updated) VALUES (?, ?, 0, 0)",
                     [(p, f"p{p}") for p in range(1, players + 1)])
    conn.execute("COMMIT")


def _value(rnd: random.Random, column: str, carry: dict, style: str):
    """The next value of a stat for one row. Styles: carry (stays once set), flaky (any row may be NULL),
    never (always NULL), late (NULL until some row, then carried)."""
    if style == "never":
        return None
    if style == "flaky":
        return None if rnd.random() < 0.4 else rnd.randint(1, 1000)
    if style == "late" and column not in carry and rnd.random() < 0.85:
        return None
    if column not in carry or rnd.random() < 0.3:
        carry[column] = rnd.randint(1, 1000)
    return carry[column]


def _fill_history(conn: sqlite3.Connection, fold: NumericFold, keys: int, seed: int) -> list[tuple]:
    """Rows for `keys` entities over the three months, some appended late (out of time order), some
    sharing a second. Returns them as (id, key, time, *values)."""
    rnd = random.Random(seed)
    rows = []
    for k in range(1, keys + 1):
        styles = {c: rnd.choice(["carry", "carry", "flaky", "never", "late"]) for c in fold.columns}
        carry: dict = {}
        active = [m for m in MONTHS if rnd.random() < 0.7]   # some entities skip months (carried rows)
        for period in active:
            for _ in range(rnd.randint(1, 6)):
                t = rnd.randint(period.start, period.end)
                for _ in range(rnd.choice([1, 1, 1, 2])):     # sometimes two rows in one second
                    rows.append((k, t, *[_value(rnd, c, carry, styles[c]) for c in fold.columns]))
    rnd.shuffle(rows)   # append order is not time order (late rows get higher ids)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO {fold.history} ({fold.key}, {fold.time}, {', '.join(fold.columns)}) "
        f"VALUES ({', '.join('?' * (2 + len(fold.columns)))})", rows)
    conn.execute("COMMIT")
    return conn.execute(f"SELECT id, {fold.key}, {fold.time}, {', '.join(fold.columns)} FROM {fold.history}"
                        ).fetchall()


def _expected(fold: NumericFold, history: list[tuple], period: Period) -> dict:
    """The folding rules (folds.py docstring) in Python: {key: (record_count, {column: (start, end)})}."""
    out = {}
    by_key: dict = {}
    for row in sorted(history, key=lambda r: (r[2], r[0])):    # time, then id
        by_key.setdefault(row[1], []).append(row)
    for k, rows in by_key.items():
        before = [r for r in rows if r[2] < period.start]
        inside = [r for r in rows if period.start <= r[2] <= period.end]
        if not before and not inside:
            continue
        values = {}
        for i, c in enumerate(fold.columns, start=3):
            prior = next((r[i] for r in reversed(before) if r[i] is not None), None)
            first = next((r[i] for r in inside if r[i] is not None), None)
            last = next((r[i] for r in reversed(inside) if r[i] is not None), None)
            values[c] = (prior if prior is not None else first, last if last is not None else prior)
        out[k] = (len(inside), values)
    return out


def _summary(conn: sqlite3.Connection, fold: NumericFold, period: Period) -> dict:
    cols = ", ".join(f"{c}_start, {c}_end" for c in fold.columns)
    out = {}
    for row in conn.execute(
            f"SELECT {fold.key}, record_count, {cols} FROM {fold.summary} WHERE period_start = ? "
            "AND period_type = 'monthly'", (period.start,)):
        out[row[0]] = (row[1], {c: (row[2 + 2 * i], row[3 + 2 * i]) for i, c in enumerate(fold.columns)})
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numeric_folds_follow_the_rules_when_values_are_not_carried(tmp_path, seed):
    conn = _new_db(tmp_path / "torn.db")
    try:
        _entities(conn, players=60, factions=20)
        histories = {fold.name: _fill_history(conn, fold, keys, seed)
                     for fold, keys in ((PLAYER_STATS, 60), (FACTION, 20))}
        # Fold January first (start values from history before it: none), then February and March (from
        # the summary before them); nothing pruned.
        report = compact(conn, NOW, retention_months=12, backup=False)
        assert [f.month for f in report.folded] == ["2026-01", "2026-02", "2026-03"]
        for fold in (PLAYER_STATS, FACTION):
            for period in MONTHS:
                assert _summary(conn, fold, period) == _expected(fold, histories[fold.name], period), \
                    (fold.name, period.label)
        # Folding January again (its start values from history, the later ones cascade) changes nothing.
        before = {p: _summary(conn, PLAYER_STATS, p) for p in MONTHS}
        compact(conn, NOW, month="2026-01", retention_months=12, backup=False)
        assert {p: _summary(conn, PLAYER_STATS, p) for p in MONTHS} == before
    finally:
        conn.close()


def _schema(conn: sqlite3.Connection) -> set:
    return set(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def _pruned_db(tmp_path: Path, name: str, months: list[Period]) -> sqlite3.Connection:
    conn = _new_db(tmp_path / name)
    _entities(conn, players=40, factions=5)
    rnd = random.Random(5)
    rows = [(rnd.randint(1, 40), rnd.randint(p.start, p.end), rnd.randint(1, 100)) for p in months
            for _ in range(300)]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO player_stats_history (player_id, timestamp, level) VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    return conn


@pytest.mark.parametrize("months, batch", [
    ([MONTHS[0]], 20),                          # the whole table: emptied at once
    ([MONTHS[0], MONTHS[1]], 20),               # half of it: indexes dropped and built again
    ([MONTHS[0], MONTHS[1], MONTHS[2]], 20),    # a third: batches
    ([MONTHS[0], MONTHS[1]], 1000),             # fewer rows than a batch: one batch
])
def test_pruning_a_month_deletes_exactly_its_rows_and_keeps_the_schema(tmp_path, months, batch):
    conn = _pruned_db(tmp_path, "torn.db", months)
    try:
        schema = _schema(conn)
        keep = conn.execute("SELECT * FROM player_stats_history WHERE timestamp > ? ORDER BY id",
                            (MONTHS[0].end,)).fetchall()
        january = conn.execute("SELECT COUNT(*) FROM player_stats_history WHERE timestamp <= ?",
                               (MONTHS[0].end,)).fetchone()[0]
        pruner = retention.Pruner(conn, batch=batch)
        events, history = pruner.prune_month(MONTHS[0], covered=0)
        assert (events, history) == (0, january)
        assert conn.execute("SELECT * FROM player_stats_history ORDER BY id").fetchall() == keep
        assert _schema(conn) == schema
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ledger = conn.execute("SELECT pruned_history_rows FROM compaction_ledger WHERE period_start = ?",
                              (MONTHS[0].start,)).fetchall()
        assert ledger in ([(january,)], [])
        if len(months) == 3:
            # batches of at least `batch` rows, at most PRUNE_STEPS of them
            step = max(batch, -(-january // retention.PRUNE_STEPS))
            assert pruner.batches == -(-january // step) == retention.PRUNE_STEPS
        else:
            assert pruner.batches == 1
    finally:
        conn.close()


def test_a_failed_rebuild_leaves_table_and_indexes_as_they_were(tmp_path, monkeypatch):
    conn = _pruned_db(tmp_path, "torn.db", [MONTHS[0], MONTHS[1]])
    try:
        schema = _schema(conn)
        before = conn.execute("SELECT * FROM player_stats_history ORDER BY id").fetchall()

        def boom(name: str) -> None:
            if name.endswith("before-commit"):
                raise RuntimeError("killed")
        monkeypatch.setattr(retention.ledger, "crash_point", boom)
        with pytest.raises(RuntimeError):
            retention.Pruner(conn, batch=20).prune_month(MONTHS[0], covered=0)
        assert not conn.in_transaction
        assert conn.execute("SELECT * FROM player_stats_history ORDER BY id").fetchall() == before
        assert _schema(conn) == schema
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()

"""The monthly fold of stat_history into stat_summary, against the rules computed here in Python.

Random stat histories over three months, written by hand (rows out of time order, rows of one second,
values that fall, stats first seen mid-month, stats silent for a month): every summary row equals what the
rules give (start = the value in force when the month began, else the first in the month; end = the last in
the month, else start; min/max over the values in force during the month; a silent stat is carried). Then
the same after the first month is pruned (its start comes from the summary), and a second compaction
changes nothing. Real SQLite files and PostgreSQL databases; `now` is passed in.
"""
# ruff: noqa: F811 (test functions take the fixtures imported from test_compactor by name)
from __future__ import annotations

import calendar
import random
import sqlite3

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate
from tornstore.projections.compactor import compact
from tornstore.projections.compactor.periods import Period

from .test_compactor import db_stores  # noqa: F401 (a fixture)

MONTHS = [Period(2026, 1), Period(2026, 2), Period(2026, 3)]
NOW = calendar.timegm((2026, 4, 2, 0, 0, 0))
KEYS = [(kind, entity, stat) for kind in ("player", "faction") for entity in (1, 2, 3)
        for stat in ("xantaken", "refills", "networth")]


def _history(seed: int) -> list[tuple]:
    """(entity_type, entity_id, stat, recorded_at, value) rows, in a shuffled order."""
    rng = random.Random(seed)
    rows = []
    for kind, entity, stat in KEYS:
        value = rng.randint(0, 50)
        for month in MONTHS:
            if rng.random() < 0.25:
                continue                                   # silent this month: carried
            start = month.start + (rng.randint(0, 20) * 86400 if rng.random() < 0.3 else 0)
            for _ in range(rng.randint(1, 6)):
                value += rng.randint(-3, 10)                # networth can fall
                t = rng.randint(start, month.end)
                rows.append((kind, entity, stat, t, value))
                if rng.random() < 0.2:
                    rows.append((kind, entity, stat, t, value + 1))   # a second row in the same second
    rng.shuffle(rows)
    return rows


def _expected(rows: list[tuple]) -> dict[tuple, tuple]:
    """The rules, in Python: (key, month start) -> (start, end, change, min, max, record_count)."""
    ordered = sorted(enumerate(rows), key=lambda ir: (ir[1][3], ir[0]))   # time, then insertion (id) order
    out = {}
    for key in KEYS:
        series = [r for _, r in ordered if r[:3] == key]
        for month in MONTHS:
            before = [r[4] for r in series if r[3] < month.start]
            inside = [r[4] for r in series if month.start <= r[3] <= month.end]
            prior = before[-1] if before else None
            if prior is None and not inside:
                continue
            start = prior if prior is not None else inside[0]
            end = inside[-1] if inside else start
            seen = ([prior] if prior is not None else []) + inside
            out[(*key, month.start)] = (start, end, end - start, min(seen), max(seen), len(inside))
    return out


def _summaries(conn: sqlite3.Connection) -> dict[tuple, tuple]:
    return {r[:4]: r[4:] for r in conn.execute(
        "SELECT entity_type, entity_id, stat, period_start, value_start, value_end, change, value_min, value_max, "
        "record_count FROM stat_summary WHERE period_type = 'monthly'")}


def test_stat_summaries_follow_the_rules_through_folds_prunes_and_reruns(db_stores, tmp_path):
    for seed in range(3):
        conn = connect_sync(db_stores.new(tmp_path / f"s{seed}.db"))
        try:
            migrate(conn)
            rows = _history(seed)
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO stat_history (entity_type, entity_id, stat, recorded_at, value) "
                             "VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
            expected = _expected(rows)
            # Fold all three months, keep their detail.
            report = compact(conn, NOW, retention_months=3, backup=False)
            assert [f.month for f in report.folded] == ["2026-01", "2026-02", "2026-03"]
            assert _summaries(conn) == expected
            # Prune January and February: March's start now comes from February's summary, same rows.
            report = compact(conn, NOW, retention_months=1, backup=False)
            assert [p.month for p in report.pruned] == ["2026-01", "2026-02"]
            assert conn.execute("SELECT COUNT(*) FROM stat_history WHERE recorded_at < ?",
                                (MONTHS[2].start,)).fetchone()[0] == 0
            assert _summaries(conn) == expected
            # Refold March from the summary of February (its detail pruned) and run again: nothing changes.
            compact(conn, NOW, month="2026-03", retention_months=1, backup=False)
            assert _summaries(conn) == expected
            again = compact(conn, NOW, retention_months=1, backup=False)
            assert again.folded == [] and again.pruned == []
            assert _summaries(conn) == expected
        finally:
            close_sync(conn)


def test_a_simulated_month_gives_one_summary_row_per_member_and_stat(db_path, tmp_path):
    """A month of simulated personal stats polls of a faction, through the real CLI, compacted: one
    stat_summary row per member and stat for January; start and end of the checked stats equal the values
    read straight from the raw responses (in force at the month's start, and last in January)."""
    from .crashkit import cli
    from .test_stat_history import CHECKED, month_of_polls, raw_values, write

    _, lines = month_of_polls()
    db = db_path
    done = cli(db, "ingest", "--init", str(write(tmp_path / "polls.ndjson", lines)))
    assert done.returncode == 0, done.stderr
    january = Period(2026, 1)
    conn = connect_sync(db)
    try:
        keys = set(conn.execute("SELECT entity_type, entity_id, stat FROM stat_history WHERE recorded_at <= ?",
                                (january.end,)))
    finally:
        close_sync(conn)
    for _ in range(2):   # the second run folds nothing new and changes nothing
        done = cli(db, "compact", "--now", "2026-02-02T00:00:00Z", "--retention-months", "0", "--no-backup")
        assert done.returncode == 0, done.stderr
    conn = connect_sync(db)
    try:
        summary = {r[:3]: r[3:] for r in conn.execute(
            "SELECT entity_type, entity_id, stat, value_start, value_end, change, record_count FROM stat_summary "
            "WHERE period_start = ? AND period_end = ?", (january.start, january.end))}
        assert conn.execute("SELECT COUNT(*) FROM stat_history WHERE recorded_at <= ?",
                            (january.end,)).fetchone()[0] == 0      # January's detail pruned
    finally:
        close_sync(conn)
    assert keys and set(summary) == keys                            # one row per member and stat
    raw = raw_values(lines)
    checked = 0
    for (pid, name), values in raw.items():
        inside = [v for t, v in values if january.start <= t <= january.end]
        if not inside:
            continue
        before = [v for t, v in values if t < january.start]
        start, end, change, _ = summary[("player", pid, name)]
        assert (start, end, change) == ((before or inside)[-1 if before else 0], inside[-1],
                                        inside[-1] - (before or inside)[-1 if before else 0]), (pid, name)
        checked += 1
    assert checked >= len(CHECKED) * 5

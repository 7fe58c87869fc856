"""The monthly fold of `stat_history` (one row per stat change, long format) into `stat_summary`.

One row per (entity_type, entity_id, stat) and closed month, under the same rules as the other numeric
folds (folds.py):

* **start** is the value in force when the month began: the previous month's `value_end` when that month
  is in the ledger (its detail may be pruned), else the last value recorded before the month; for a stat
  first seen during the month, its first value in the month. **end** is the last value in the month, else
  the start value. **change** = end - start.
* **min / max** are over the values in force during the month: the start value and every value recorded
  in it (a stat that only grows has min = start and max = end).
* **Carry**: a stat with a known value and no record in the month gets a row anyway (start = end = min =
  max = the value in force, change 0, record_count 0), so next month's start is always in this month's
  summary and a leaderboard over summaries sees members who did nothing.

Set-based like the other folds: one GROUP BY over the month's rows, one index probe per stat for its
first and last values, one upsert.
"""
from __future__ import annotations

import sqlite3

from .periods import Period

_M, _P, _R = "_fold_stat_m", "_fold_stat_p", "_fold_stat_r"
TEMP_TABLES = (_M, _P, _R)
_KEY = "entity_type, entity_id, stat"


def _value(at: str, order: str) -> str:
    """The value recorded at time `at` for the row's key (ties within one second: by id)."""
    return (f"(SELECT h.value FROM stat_history AS h WHERE h.entity_type = a.entity_type "
            f"AND h.entity_id = a.entity_id AND h.stat = a.stat AND h.recorded_at = a.{at} "
            f"ORDER BY h.id {order} LIMIT 1)")


def compute(conn: sqlite3.Connection, period: Period, prior_from_summary: bool) -> int:
    """Fill the temp table of the month's summary rows; returns how many."""
    for name in TEMP_TABLES:
        conn.execute(f"DROP TABLE IF EXISTS temp.{name}")
    span = {"ps": period.start, "pe": period.end}
    conn.execute(f"CREATE TEMP TABLE {_M} (entity_type TEXT, entity_id INTEGER, stat TEXT, n INTEGER, "
                 "lo NUMERIC, hi NUMERIC, first NUMERIC, last NUMERIC, PRIMARY KEY (entity_type, entity_id, stat))")
    conn.execute(
        f"INSERT INTO {_M} SELECT a.entity_type, a.entity_id, a.stat, a.n, a.lo, a.hi, "
        f"{_value('ft', 'ASC')}, {_value('lt', 'DESC')} FROM (SELECT {_KEY}, COUNT(*) AS n, MIN(value) AS lo, "
        "MAX(value) AS hi, MIN(recorded_at) AS ft, MAX(recorded_at) AS lt FROM stat_history "
        f"WHERE recorded_at BETWEEN :ps AND :pe GROUP BY {_KEY}) AS a", span)
    conn.execute(f"CREATE TEMP TABLE {_P} (entity_type TEXT, entity_id INTEGER, stat TEXT, value NUMERIC, "
                 "PRIMARY KEY (entity_type, entity_id, stat))")
    if prior_from_summary:
        prev = period.previous
        conn.execute(
            f"INSERT INTO {_P} SELECT {_KEY}, value_end FROM stat_summary WHERE period_start = ? "
            "AND period_end = ? AND period_type = 'monthly' AND value_end IS NOT NULL", (prev.start, prev.end))
    else:
        conn.execute(
            f"INSERT INTO {_P} SELECT a.entity_type, a.entity_id, a.stat, {_value('lt', 'DESC')} FROM "
            f"(SELECT {_KEY}, MAX(recorded_at) AS lt FROM stat_history WHERE recorded_at < :ps "
            f"GROUP BY {_KEY}) AS a", span)
    conn.execute(f"CREATE TEMP TABLE {_R} (entity_type TEXT, entity_id INTEGER, stat TEXT, n INTEGER, "
                 "v_start NUMERIC, v_end NUMERIC, lo NUMERIC, hi NUMERIC, PRIMARY KEY (entity_type, entity_id, stat))")
    conn.execute(
        f"INSERT INTO {_R} SELECT m.entity_type, m.entity_id, m.stat, m.n, COALESCE(p.value, m.first), m.last, "
        "CASE WHEN p.value IS NOT NULL AND p.value < m.lo THEN p.value ELSE m.lo END, "
        "CASE WHEN p.value IS NOT NULL AND p.value > m.hi THEN p.value ELSE m.hi END "
        f"FROM {_M} AS m LEFT JOIN {_P} AS p USING (entity_type, entity_id, stat)")
    conn.execute(
        f"INSERT INTO {_R} SELECT p.entity_type, p.entity_id, p.stat, 0, p.value, p.value, p.value, p.value "
        f"FROM {_P} AS p WHERE NOT EXISTS (SELECT 1 FROM {_M} AS m WHERE m.entity_type = p.entity_type "
        "AND m.entity_id = p.entity_id AND m.stat = p.stat)")
    return conn.execute(f"SELECT COUNT(*) FROM {_R}").fetchone()[0]


def write(conn: sqlite3.Connection, period: Period, now: int) -> int:
    """Replace the month's stat_summary rows with the computed ones (inside the caller's transaction)."""
    conn.execute(
        "DELETE FROM stat_summary WHERE period_start = ? AND period_end = ? AND period_type = 'monthly' "
        f"AND ({_KEY}) NOT IN (SELECT {_KEY} FROM {_R})", (period.start, period.end))
    cursor = conn.execute(
        "INSERT INTO stat_summary (entity_type, entity_id, stat, period_start, period_end, period_type, "
        "value_start, value_end, change, value_min, value_max, record_count, created_at) "
        f"SELECT {_KEY}, ?, ?, 'monthly', v_start, v_end, v_end - v_start, lo, hi, n, ? FROM {_R} "
        f"WHERE true ORDER BY {_KEY} "
        "ON CONFLICT (entity_type, entity_id, stat, period_start, period_end, period_type) DO UPDATE SET "
        "value_start = excluded.value_start, value_end = excluded.value_end, change = excluded.change, "
        "value_min = excluded.value_min, value_max = excluded.value_max, record_count = excluded.record_count, "
        "created_at = excluded.created_at",
        (period.start, period.end, now))
    return cursor.rowcount

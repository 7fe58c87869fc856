"""The four monthly folds: `*_history` rows of one closed UTC month -> `*_summary` rows.

Each fold is set-based SQL: one GROUP BY (or one window pass) over the month's history rows, a few index
look-ups per entity, and one upsert into the summary table. `compute` fills temp tables only (a dry run
stops there); `write` replaces the month's summary rows with them, inside the caller's transaction.

Rules (the same for every run, so a month folded twice gives the same rows):

* **Value in force at the start of the month** (the "prior" value): the previous month's summary end
  value when the previous month is in the ledger (folded or pruned: the summary is the only record left
  once its detail is pruned), otherwise the last history value observed before the month. So a month
  refolded after its predecessor was pruned gives the same row as before the prune.
* **Per column**: a NULL in a history row means "not observed in that record" (a profile poll carries no
  battle stats); the value in force for a stat is its last non-NULL value. Territory owners are the
  exception: NULL there means "unowned" and is a value.
* **start** = the value in force when the month began; for an entity (or a stat) first seen during the
  month, its first value in the month. **end** = its last value in the month, else the start value.
  **change** = end - start (NULL when either is unknown).
* **Carry**: an entity with no record in the month but a known value gets a row anyway: start = end =
  the value in force, change 0, record_count 0. So every month lists every known player, faction and
  territory, and next month's start values are always in this month's summary.
* **Wars** are the exception to the carry: a war appears in a month when it has a record observed in
  the month, or when it was still unresolved when the month began (carried with record_count 0).
  A war is **over** when its last record says status completed or cancelled, or names a winner.
  `winner_faction_id` is the winner its last record in force at month end names (NULL while
  unresolved). `duration_seconds` is the war's whole length once it is over: ends_at - started_at (for a
  territory war ends_at is the scheduled end the API gives; the time of its last record stands in for a
  missing end, its first record in the month for a missing start); NULL while it is still running at
  the end of the month -- which is also how the next month recognises a war to carry (winner and
  duration both NULL). Rows are per (war_type, war_id).
* **Territories**: `ownership_changes` counts records whose owner differs from the owner before them
  (the value in force at month start counts as "before" for the first record; a territory first seen
  in the month starts without a change). `days_owned` is the whole days (floor) the end owner held the
  territory without interruption up to the month's last second, counted from the first record that
  showed it as owner, or from the month start when it owned it already; NULL when the end owner is
  "unowned".
* `record_count` is the number of history rows observed in the month.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from tornstore.eventstore.db import table_names

from . import stat_fold
from .periods import Period

DAY = 86400


@dataclass(frozen=True)
class NumericFold:
    """A fold of numeric stats per entity (players, factions)."""
    name: str
    history: str
    summary: str
    key: str
    time: str
    columns: tuple[str, ...]
    no_change: frozenset[str] = frozenset()

    @property
    def tmp(self) -> str:
        return f"_fold_{self.name}"


PLAYER_STATS = NumericFold(
    name="player_stats", history="player_stats_history", summary="player_stats_summary",
    key="player_id", time="timestamp",
    columns=("strength", "defense", "speed", "dexterity", "total_stats", "level", "life_maximum", "networth"),
    no_change=frozenset({"life_maximum"}),
)
FACTION = NumericFold(
    name="faction", history="faction_history", summary="faction_summary",
    key="faction_id", time="timestamp", columns=("respect", "member_count", "best_chain"),
)


@dataclass(frozen=True)
class HistoryTable:
    """Where a history table keeps its time and event position (for retention and late-data checks)."""
    table: str
    time: str


HISTORY_TABLES = (
    HistoryTable("player_stats_history", "timestamp"),
    HistoryTable("faction_history", "timestamp"),
    HistoryTable("war_status_history", "recorded_at"),
    HistoryTable("territory_ownership_history", "recorded_at"),
    HistoryTable("stat_history", "recorded_at"),
)


def history_tables(conn: sqlite3.Connection) -> tuple[HistoryTable, ...]:
    """The history tables this database has (one made before migration 0007 has no stat_history)."""
    names = table_names(conn)
    return tuple(h for h in HISTORY_TABLES if h.table in names)


def _has_stats(conn: sqlite3.Connection) -> bool:
    return "stat_summary" in table_names(conn)


def _drop(conn: sqlite3.Connection, *names: str) -> None:
    for name in names:
        conn.execute(f"DROP TABLE IF EXISTS temp.{name}")


# ---------------------------------------------------------------------------------------------- numeric
def _numeric_compute(conn: sqlite3.Connection, f: NumericFold, period: Period, prior_from_summary: bool) -> int:
    m, p, r, s, hits = f.tmp + "_m", f.tmp + "_p", f.tmp + "_r", f.tmp + "_s", f.tmp + "_h"
    _drop(conn, m, p, r, s, hits)
    cols = f.columns
    span = {"ps": period.start, "pe": period.end}
    # 1. Per entity of the month: its row count and its first and last rows (by time, ties by id). The GROUP BY
    #    reads only the (entity, time) index; the two ids are one index probe each.
    conn.execute(
        f"CREATE TEMP TABLE {m} (k INTEGER PRIMARY KEY, n INTEGER, "
        + ", ".join(f"{c}_f INTEGER, {c}_l INTEGER" for c in cols) + ")")
    conn.execute(
        f"INSERT INTO {m} SELECT g.k, g.n, " + ", ".join(f"fr.{c}, lr.{c}" for c in cols)
        + f" FROM (SELECT k, n, (SELECT MIN(h.id) FROM {f.history} AS h WHERE h.{f.key} = a.k AND h.{f.time} = a.ft) "
        f"AS fid, (SELECT MAX(h.id) FROM {f.history} AS h WHERE h.{f.key} = a.k AND h.{f.time} = a.lt) AS lid "
        f"FROM (SELECT {f.key} AS k, COUNT(*) AS n, MIN({f.time}) AS ft, MAX({f.time}) AS lt FROM {f.history} "
        f"WHERE {f.time} BETWEEN :ps AND :pe GROUP BY {f.key}) AS a) AS g "
        f"JOIN {f.history} AS fr ON fr.id = g.fid JOIN {f.history} AS lr ON lr.id = g.lid", span)
    # 2. Projections carry values forward, so a stat NULL in an entity's last row of the month is normally NULL
    #    in all of them. Check that in one pass over the month's rows (in table order, no sort) against the
    #    entities whose last row has a NULL, and note where it does not hold: there, and only there, the
    #    first and last non-NULL values are looked up row by row (step 4).
    conn.execute(f"CREATE TEMP TABLE {s} (k INTEGER PRIMARY KEY, " + ", ".join(f"{c} INTEGER" for c in cols) + ")")
    conn.execute(
        f"INSERT INTO {s} SELECT k, " + ", ".join(f"CASE WHEN {c}_l IS NULL THEN 1 ELSE 0 END" for c in cols)
        + f" FROM {m} WHERE "
        + " OR ".join(f"{c}_l IS NULL" for c in cols))
    conn.execute(f"CREATE TEMP TABLE {hits} (k INTEGER PRIMARY KEY, " + ", ".join(f"{c} INTEGER" for c in cols) + ")")
    nullable = [c for c in cols if conn.execute(f"SELECT 1 FROM {s} WHERE {c} = 1 LIMIT 1").fetchone()]
    if nullable:
        conn.execute(
            f"INSERT INTO {hits} SELECT h.{f.key}, "
            + ", ".join(f"MAX(CASE WHEN h.{c} IS NOT NULL AND s.{c} = 1 THEN 1 ELSE 0 END)" if c in nullable else "0"
                        for c in cols)
            + f" FROM {f.history} AS h{_by_time_index(conn, f.history, f.time)} CROSS JOIN {s} AS s ON s.k = h.{f.key} "
            f"WHERE h.{f.time} BETWEEN :ps AND :pe AND ("
            + " OR ".join(f"h.{c} IS NOT NULL" for c in nullable) + ") AND ("
            + " OR ".join(f"(h.{c} IS NOT NULL AND s.{c} = 1)" for c in nullable) + f") GROUP BY h.{f.key}", span)
    # 3. The value of each stat in force when the month began.
    conn.execute(f"CREATE TEMP TABLE {p} (k INTEGER PRIMARY KEY, " + ", ".join(f"{c} INTEGER" for c in cols) + ")")
    if prior_from_summary:
        prev = period.previous
        conn.execute(
            f"INSERT INTO {p} SELECT {f.key}, " + ", ".join(f"{c}_end" for c in cols)
            + f" FROM {f.summary} WHERE period_start = ? AND period_end = ? AND period_type = 'monthly'",
            (prev.start, prev.end))
    else:
        last_before = ", ".join(f"MAX(CASE WHEN {c} IS NOT NULL THEN {f.time} END) AS {c}_lt" for c in cols)
        conn.execute(
            f"INSERT INTO {p} SELECT b.k, " + ", ".join(_value_at(f, c, "b.k", f"b.{c}_lt", last=True) for c in cols)
            + f" FROM (SELECT {f.key} AS k, {last_before} FROM {f.history} WHERE {f.time} < ? "
            f"GROUP BY {f.key}) AS b", (period.start,))
    # 4. start / end per entity; entities of the month plus carried ones. start: the value in force, else the
    #    first row's, else (a stat first seen later in the month) the first non-NULL one; end: the last row's,
    #    else the last non-NULL one in the month (only where step 2 found one), else the value in force.
    conn.execute(
        f"CREATE TEMP TABLE {r} (k INTEGER PRIMARY KEY, n INTEGER, "
        + ", ".join(f"{c}_start INTEGER, {c}_end INTEGER" for c in cols) + ")")
    select = []
    for c in cols:
        select.append(f"COALESCE(p.{c}, m.{c}_f, CASE WHEN m.{c}_l IS NOT NULL OR x.{c} = 1 "
                      f"THEN {_month_value(f, c, 'keys.k', last=False)} END)")
        select.append(f"COALESCE(m.{c}_l, CASE WHEN x.{c} = 1 THEN {_month_value(f, c, 'keys.k', last=True)} END, "
                      f"p.{c})")
    conn.execute(
        f"INSERT INTO {r} SELECT keys.k, COALESCE(m.n, 0), " + ", ".join(select)
        + f" FROM (SELECT k FROM {m} UNION SELECT k FROM {p}) AS keys "
        f"LEFT JOIN {m} AS m ON m.k = keys.k LEFT JOIN {p} AS p ON p.k = keys.k "
        f"LEFT JOIN {hits} AS x ON x.k = keys.k", span)
    return conn.execute(f"SELECT COUNT(*) FROM {r}").fetchone()[0]


def _by_time_index(conn: sqlite3.Connection, table: str, time: str) -> str:
    """` INDEXED BY <the table's index on time alone>`, or nothing: a pass over a month's rows in time order
    reads the table in the order it was written, where the (entity, time) index would seek once per row."""
    for _, name, *_ in conn.execute(f"PRAGMA index_list({table})").fetchall():
        columns = [row[2] for row in conn.execute(f'PRAGMA index_info("{name}")')]
        if columns == [time]:
            return f' INDEXED BY "{name}"'
    return ""


def _month_value(f: NumericFold, column: str, key_expr: str, last: bool) -> str:
    """The stat's first (last) non-NULL value in the month (ties between rows of one second: by id)."""
    order = "DESC" if last else "ASC"
    return (f"(SELECT h.{column} FROM {f.history} AS h WHERE h.{f.key} = {key_expr} "
            f"AND h.{f.time} BETWEEN :ps AND :pe AND h.{column} IS NOT NULL "
            f"ORDER BY h.{f.time} {order}, h.id {order} LIMIT 1)")


def _value_at(f: NumericFold, column: str, key_expr: str, time_expr: str, last: bool) -> str:
    """The stat's non-NULL value recorded at that time (ties between rows of one second: by id)."""
    order = "DESC" if last else "ASC"
    return (f"(SELECT h.{column} FROM {f.history} AS h WHERE h.{f.key} = {key_expr} AND h.{f.time} = {time_expr} "
            f"AND h.{column} IS NOT NULL ORDER BY h.id {order} LIMIT 1)")


def _numeric_write(conn: sqlite3.Connection, f: NumericFold, period: Period, now: int) -> int:
    r = f.tmp + "_r"
    cols = f.columns
    conn.execute(
        f"DELETE FROM {f.summary} WHERE period_start = ? AND period_end = ? AND period_type = 'monthly' "
        f"AND {f.key} NOT IN (SELECT k FROM {r})", (period.start, period.end))
    names, values = [f.key, "period_start", "period_end", "period_type"], ["k", "?", "?", "'monthly'"]
    for c in cols:
        names += [f"{c}_start", f"{c}_end"]
        values += [f"{c}_start", f"{c}_end"]
        if c not in f.no_change:
            names.append(f"{c}_change")
            values.append(f"{c}_end - {c}_start")
    names += ["record_count", "created_at"]
    values += ["n", "?"]
    updates = ", ".join(f"{n} = excluded.{n}" for n in names[4:])
    cursor = conn.execute(
        f"INSERT INTO {f.summary} ({', '.join(names)}) SELECT {', '.join(values)} FROM {r} WHERE true ORDER BY k "
        f"ON CONFLICT ({f.key}, period_start, period_end, period_type) DO UPDATE SET {updates}",
        (period.start, period.end, now))
    return cursor.rowcount


# ---------------------------------------------------------------------------------------------- territory
_T = "_fold_territory"


def _territory_compute(conn: sqlite3.Connection, period: Period, prior_from_summary: bool) -> int:
    p, r = _T + "_p", _T + "_r"
    _drop(conn, p, r)
    conn.execute(f"CREATE TEMP TABLE {p} (k TEXT PRIMARY KEY, owner INTEGER)")
    if prior_from_summary:
        prev = period.previous
        conn.execute(
            f"INSERT INTO {p} SELECT territory_id, faction_id_end FROM territory_ownership_summary "
            "WHERE period_start = ? AND period_end = ? AND period_type = 'monthly'", (prev.start, prev.end))
    else:
        conn.execute(
            f"INSERT INTO {p} SELECT territory_id, faction_id FROM (SELECT territory_id, faction_id, "
            "ROW_NUMBER() OVER (PARTITION BY territory_id ORDER BY recorded_at DESC, id DESC) AS rn "
            "FROM territory_ownership_history WHERE recorded_at < ?) WHERE rn = 1", (period.start,))
    conn.execute(
        f"CREATE TEMP TABLE {r} (k TEXT PRIMARY KEY, owner_start INTEGER, owner_end INTEGER, "
        "changes INTEGER, days INTEGER, n INTEGER)")
    conn.execute(
        f"""
        INSERT INTO {r}
        WITH seq AS (
            SELECT territory_id AS k, faction_id AS owner, recorded_at AS t,
                   ROW_NUMBER() OVER w AS rn,
                   LAG(faction_id) OVER w AS before,
                   CASE WHEN LEAD(1, 1, 0) OVER w = 0 THEN 1 ELSE 0 END AS is_last
            FROM territory_ownership_history
            WHERE recorded_at BETWEEN :ps AND :pe
            WINDOW w AS (PARTITION BY territory_id ORDER BY recorded_at, id)
        ),
        marked AS (
            SELECT seq.*, CASE WHEN p.k IS NOT NULL THEN 1 ELSE 0 END AS known, p.owner AS prior,
                   CASE WHEN seq.rn = 1 THEN CASE WHEN p.k IS NOT NULL AND seq.owner IS NOT p.owner THEN 1 ELSE 0 END
                        WHEN seq.owner IS NOT seq.before THEN 1 ELSE 0 END AS changed
            FROM seq LEFT JOIN {p} AS p ON p.k = seq.k
        ),
        agg AS (
            SELECT k, COUNT(*) AS n, SUM(changed) AS changes, MAX(known) AS known, MIN(prior) AS prior,
                   MIN(CASE WHEN rn = 1 THEN owner END) AS first_owner,
                   MIN(CASE WHEN is_last = 1 THEN owner END) AS last_owner,
                   MAX(CASE WHEN changed = 1 THEN t END) AS last_change, MIN(t) AS first_t
            FROM marked GROUP BY k
        )
        SELECT k,
               CASE WHEN known = 1 THEN prior ELSE first_owner END,
               last_owner,
               changes,
               CASE WHEN last_owner IS NULL THEN NULL
                    ELSE (:pe + 1 - MAX(:ps, COALESCE(last_change, CASE WHEN known = 1 THEN :ps ELSE first_t END)))
                         / {DAY} END,
               n
        FROM agg
        UNION ALL
        SELECT p.k, p.owner, p.owner, 0,
               CASE WHEN p.owner IS NULL THEN NULL ELSE (:pe + 1 - :ps) / {DAY} END, 0
        FROM {p} AS p
        WHERE NOT EXISTS (SELECT 1 FROM territory_ownership_history AS h
                          WHERE h.territory_id = p.k AND h.recorded_at BETWEEN :ps AND :pe)
        """,
        {"ps": period.start, "pe": period.end})
    return conn.execute(f"SELECT COUNT(*) FROM {r}").fetchone()[0]


def _territory_write(conn: sqlite3.Connection, period: Period, now: int) -> int:
    r = _T + "_r"
    conn.execute(
        "DELETE FROM territory_ownership_summary WHERE period_start = ? AND period_end = ? "
        f"AND period_type = 'monthly' AND territory_id NOT IN (SELECT k FROM {r})", (period.start, period.end))
    cursor = conn.execute(
        "INSERT INTO territory_ownership_summary (territory_id, period_start, period_end, period_type, "
        "faction_id_start, faction_id_end, ownership_changes, days_owned, record_count, created_at) "
        f"SELECT k, ?, ?, 'monthly', owner_start, owner_end, changes, days, n, ? FROM {r} WHERE true ORDER BY k "
        "ON CONFLICT (territory_id, period_start, period_end, period_type) DO UPDATE SET "
        "faction_id_start = excluded.faction_id_start, faction_id_end = excluded.faction_id_end, "
        "ownership_changes = excluded.ownership_changes, days_owned = excluded.days_owned, "
        "record_count = excluded.record_count, created_at = excluded.created_at",
        (period.start, period.end, now))
    return cursor.rowcount


# ---------------------------------------------------------------------------------------------- wars
_W = "_fold_war"
_WAR_FIELDS = ("territory_id", "attacking_faction_id", "defending_faction_id", "attacking_score",
               "defending_score")


def _war_compute(conn: sqlite3.Connection, period: Period, prior_from_summary: bool) -> int:
    p, r = _W + "_p", _W + "_r"
    _drop(conn, p, r)
    conn.execute(
        f"CREATE TEMP TABLE {p} (war_type TEXT, war_id INTEGER, territory_id TEXT, attacking_faction_id INTEGER, "
        "defending_faction_id INTEGER, attacking_score INTEGER, defending_score INTEGER, "
        "PRIMARY KEY (war_type, war_id))")
    if prior_from_summary:
        prev = period.previous
        # Unresolved at the end of the previous month: no winner and no duration yet.
        conn.execute(
            f"INSERT INTO {p} SELECT war_type, war_id, territory_id, attacking_faction_id, defending_faction_id, "
            "final_attacking_score, final_defending_score FROM war_summary "
            "WHERE period_start = ? AND period_end = ? AND period_type = 'monthly' "
            "AND winner_faction_id IS NULL AND duration_seconds IS NULL", (prev.start, prev.end))
    else:
        conn.execute(
            f"INSERT INTO {p} SELECT war_type, war_id, {', '.join(_WAR_FIELDS)} FROM ("
            f"SELECT *, ROW_NUMBER() OVER (PARTITION BY war_type, war_id ORDER BY recorded_at DESC, id DESC) AS rn "
            "FROM war_status_history WHERE recorded_at < ?) "
            "WHERE rn = 1 AND winner_faction_id IS NULL AND COALESCE(status, 'ongoing') = 'ongoing'",
            (period.start,))
    conn.execute(
        f"CREATE TEMP TABLE {r} (war_type TEXT, war_id INTEGER, territory_id TEXT, attacking_faction_id INTEGER, "
        "defending_faction_id INTEGER, attacking_score INTEGER, defending_score INTEGER, winner INTEGER, "
        "duration INTEGER, n INTEGER, PRIMARY KEY (war_type, war_id))")
    conn.execute(
        f"""
        INSERT INTO {r}
        WITH ranked AS (
            SELECT *,
                   ROW_NUMBER() OVER (PARTITION BY war_type, war_id ORDER BY recorded_at DESC, id DESC) AS rn,
                   COUNT(*) OVER (PARTITION BY war_type, war_id) AS n,
                   MIN(recorded_at) OVER (PARTITION BY war_type, war_id) AS first_t
            FROM war_status_history WHERE recorded_at BETWEEN :ps AND :pe
        )
        SELECT war_type, war_id, {', '.join(_WAR_FIELDS)}, winner_faction_id,
               CASE WHEN status IN ('completed', 'cancelled') OR winner_faction_id IS NOT NULL
                    THEN MAX(0, COALESCE(NULLIF(ends_at, 0), recorded_at) - COALESCE(NULLIF(started_at, 0), first_t))
               END,
               n
        FROM ranked WHERE rn = 1
        UNION ALL
        SELECT p.war_type, p.war_id, {', '.join('p.' + c for c in _WAR_FIELDS)}, NULL, NULL, 0
        FROM {p} AS p
        WHERE NOT EXISTS (SELECT 1 FROM war_status_history AS h WHERE h.war_id = p.war_id
                          AND h.war_type = p.war_type AND h.recorded_at BETWEEN :ps AND :pe)
        """,
        {"ps": period.start, "pe": period.end})
    return conn.execute(f"SELECT COUNT(*) FROM {r}").fetchone()[0]


def _war_write(conn: sqlite3.Connection, period: Period, now: int) -> int:
    r = _W + "_r"
    conn.execute(
        "DELETE FROM war_summary WHERE period_start = ? AND period_end = ? AND period_type = 'monthly' "
        f"AND (war_type, war_id) NOT IN (SELECT war_type, war_id FROM {r})", (period.start, period.end))
    cursor = conn.execute(
        "INSERT INTO war_summary (war_id, war_type, territory_id, period_start, period_end, period_type, "
        "attacking_faction_id, defending_faction_id, final_attacking_score, final_defending_score, "
        "winner_faction_id, duration_seconds, record_count, created_at) "
        f"SELECT war_id, war_type, territory_id, ?, ?, 'monthly', attacking_faction_id, defending_faction_id, "
        f"attacking_score, defending_score, winner, duration, n, ? FROM {r} AS w ORDER BY war_type, war_id "
        "ON CONFLICT (war_id, war_type, period_start, period_end, period_type) DO UPDATE SET "
        "territory_id = excluded.territory_id, "
        "attacking_faction_id = excluded.attacking_faction_id, defending_faction_id = excluded.defending_faction_id, "
        "final_attacking_score = excluded.final_attacking_score, "
        "final_defending_score = excluded.final_defending_score, winner_faction_id = excluded.winner_faction_id, "
        "duration_seconds = excluded.duration_seconds, record_count = excluded.record_count, "
        "created_at = excluded.created_at",
        (period.start, period.end, now))
    return cursor.rowcount


# ---------------------------------------------------------------------------------------------- together
def compute_all(conn: sqlite3.Connection, period: Period, prior_from_summary: bool) -> dict[str, int]:
    """Compute the month's summary rows into temp tables; returns rows per summary table."""
    return {
        "player_stats_summary": _numeric_compute(conn, PLAYER_STATS, period, prior_from_summary),
        "faction_summary": _numeric_compute(conn, FACTION, period, prior_from_summary),
        "war_summary": _war_compute(conn, period, prior_from_summary),
        "territory_ownership_summary": _territory_compute(conn, period, prior_from_summary),
    } | ({"stat_summary": stat_fold.compute(conn, period, prior_from_summary)} if _has_stats(conn) else {})


def write_all(conn: sqlite3.Connection, period: Period, now: int) -> None:
    """Replace the month's summary rows with the computed ones (inside the caller's transaction)."""
    _numeric_write(conn, PLAYER_STATS, period, now)
    _numeric_write(conn, FACTION, period, now)
    _war_write(conn, period, now)
    _territory_write(conn, period, now)
    if _has_stats(conn):
        stat_fold.write(conn, period, now)


def drop_temp(conn: sqlite3.Connection) -> None:
    names = []
    for prefix in (PLAYER_STATS.tmp, FACTION.tmp, _W, _T):
        names += [prefix + "_m", prefix + "_p", prefix + "_r", prefix + "_s", prefix + "_h"]
    _drop(conn, *names, *stat_fold.TEMP_TABLES)

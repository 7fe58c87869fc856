"""Compact: seconds to fold one closed month of history rows into summaries and prune it.

* Workload: the four `*_history` tables of January 2026 filled by SQL (a recursive CTE, rows in time
  order as polls would append them) with `compact_rows` rows in all: 88 % player_stats_history (44 rows
  per player: 20,000 players for 1M rows; level and life_maximum always, networth for half, battle stats
  for a fifth, values growing with time), 5 % faction_history (500 factions), 5 %
  territory_ownership_history (4,100 territories, owners changing every few days, wars and rackets),
  2 % war_status_history (20 wars per 2-day window, ranked and territory, scores rising, the last hour
  `completed` with a winner). Players, factions and
  territories they refer to exist. Rows have no event_position (written by hand), so all are prunable. On
  PostgreSQL January's monthly partitions exist before the rows go in, as the compactor leaves them.
  The database is closed once (PRAGMA optimize) before timing, as a store would have been.
* `seconds`: `projections.compactor.compact(conn, now=2026-02-02, retention_months=0, backup=False)`:
  folds January (the only closed month with detail) and prunes it (the window starts at the current
  month), then reclaims the pages; one call, timed whole.
* `limit_seconds`: per history table one `SELECT key, COUNT(*), MIN(time), MAX(time) ... WHERE time in
  January GROUP BY key` over the same rows (fetched), the four summed; measured after an untimed warm-up
  scan, so both run on a warm page cache.
* `raw_delete_seconds` (context, not a goal): one plain `DELETE ... WHERE time in January` per table in one
  transaction on a copy of the same database: what deleting the rows costs at all. `stage_seconds` splits
  the compactor's time into plan, fold, prune and vacuum (from its progress callback); `fold_seconds` and
  `prune_seconds` repeat two of them.
* `growth`: the same workload at 4N rows (a fresh database, same shapes: 4x the players) in the same run:
  seconds(4N) / (4 x seconds(N)); 1.0 is linear. `at_4n` has that run's figures.
"""
from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate

from .common import Databases, Sizes, databases, missing, rnd

MONTH_START = calendar.timegm((2026, 1, 1, 0, 0, 0))
MONTH_END = calendar.timegm((2026, 2, 1, 0, 0, 0)) - 1
NOW = MONTH_END + 1 + 86400
ROWS_PER_PLAYER = 44       # player_stats_history rows per player in the month (1M rows: 20,000 players)
FACTIONS = 500
TERRITORIES = 4_100
PID0 = 1_000_000
FID0 = 10_000

TIME_COLUMN = {"player_stats_history": "timestamp", "faction_history": "timestamp",
               "territory_ownership_history": "recorded_at", "war_status_history": "recorded_at"}
LIMIT_QUERIES = (
    ("player_stats_history", "SELECT player_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM player_stats_history "
                             "WHERE timestamp BETWEEN ? AND ? GROUP BY player_id"),
    ("faction_history", "SELECT faction_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM faction_history "
                        "WHERE timestamp BETWEEN ? AND ? GROUP BY faction_id"),
    ("territory_ownership_history", "SELECT territory_id, COUNT(*), MIN(recorded_at), MAX(recorded_at) "
                                    "FROM territory_ownership_history WHERE recorded_at BETWEEN ? AND ? "
                                    "GROUP BY territory_id"),
    ("war_status_history", "SELECT war_id, war_type, COUNT(*), MIN(recorded_at), MAX(recorded_at) "
                           "FROM war_status_history WHERE recorded_at BETWEEN ? AND ? GROUP BY war_id, war_type"),
)

# A territory code from a number k (0 <= k < 26*26*7): three capitals, the last in A..G (as real codes).
_CODE = "char(65 + (({k}) / 182) % 26) || char(65 + (({k}) / 7) % 26) || char(65 + ({k}) % 7)"


def _counts(total: int) -> dict[str, int]:
    faction = total * 5 // 100
    territory = total * 5 // 100
    war = total * 2 // 100
    return {"player_stats_history": total - faction - territory - war, "faction_history": faction,
            "territory_ownership_history": territory, "war_status_history": war}


def players_for(total: int) -> int:
    return max(100, _counts(total)["player_stats_history"] // ROWS_PER_PLAYER)


_CHAR = re.compile(r"char\(65 \+ (.*?) % (26|7)\)")


class _PgFill:
    """The fill's statements as PostgreSQL takes them (the rest the connection's translation does): chr() for
    SQLite's char(), and a bigint counter (SQLite's integers are 64-bit; k * 7919 overflows int4)."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, sql: str, params=()):
        sql = _CHAR.sub(r"chr(CAST(65 + \1 % \2 AS integer))", sql)
        sql = sql.replace("AS (SELECT 0 UNION ALL", "AS (SELECT CAST(0 AS bigint) UNION ALL")
        return self.conn.execute(sql, params)


def fill(conn, total: int) -> dict[str, int]:
    """Generate the month's history rows (and the rows they refer to) in one transaction."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        conn = _PgFill(conn)
    counts = _counts(total)
    players = players_for(total)
    span = MONTH_END - MONTH_START
    before = MONTH_START - 86400
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?) "
        "INSERT INTO factions (faction_id, name, tag, leader_id, respect, age, best_chain, member_count, created_at, "
        "last_updated) SELECT ? + k, 'Faction ' || k, 'F' || k, ? + k, 100000 + k * 997, 300 + k, 100 + k % 900, "
        "20 + k % 80, ?, ? FROM c", (FACTIONS - 1, FID0, PID0, before, before))
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?) "
        "INSERT INTO players (player_id, name, level, rank, faction_id, status_state, life_current, life_maximum, "
        "created_at, last_updated) SELECT ? + k, 'player' || k, 1 + k % 80, 'Average', ? + k % ?, 'Okay', "
        "100 + (k % 80) * 50, 100 + (k % 80) * 50, ?, ? FROM c",
        (players - 1, PID0, FID0, FACTIONS, before, before))
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?) "
        f"INSERT INTO territories (territory_id, faction_id, sector, coordinates, coordinate_x, coordinate_y, "
        f"racket_level, racket_type, war_status, last_updated) SELECT {_CODE.format(k='k')}, "
        "CASE WHEN k % 3 = 0 THEN NULL ELSE ? + k % ? END, CAST(1 + k % 7 AS TEXT), "
        "(k % 600) || '.5,' || (k / 600) || '.25', (k % 600) + 0.5, (k / 600) + 0.25, NULL, NULL, 'none', ? FROM c",
        (TERRITORIES - 1, FID0, FACTIONS, before))

    # player_stats_history: row n at time t(n), player p(n); values grow with time from a per-player base.
    n = counts["player_stats_history"]
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?), "
        "r AS (SELECT k, ? + (k * 7919) % ? AS pid, ? + (k * ?) / ? AS t FROM c) "
        "INSERT INTO player_stats_history (player_id, timestamp, strength, defense, speed, dexterity, total_stats, "
        "level, life_maximum, networth) SELECT pid, t, "
        "CASE WHEN pid % 5 = 0 THEN 1000000 + (pid % 997) * 100000 + (t - ?) * (1 + pid % 7) END, "
        "CASE WHEN pid % 5 = 0 THEN 900000 + (pid % 991) * 100000 + (t - ?) * (1 + pid % 5) END, "
        "CASE WHEN pid % 5 = 0 THEN 800000 + (pid % 983) * 100000 + (t - ?) * (1 + pid % 3) END, "
        "CASE WHEN pid % 5 = 0 THEN 700000 + (pid % 977) * 100000 + (t - ?) * (1 + pid % 11) END, "
        "CASE WHEN pid % 5 = 0 THEN 3400000 + (pid % 997) * 400000 + (t - ?) * (4 + pid % 26) END, "
        "MIN(100, 1 + pid % 80 + (t - ?) / 864000), "
        "100 + MIN(100, 1 + pid % 80 + (t - ?) / 864000) * 50, "
        "CASE WHEN pid % 2 = 0 THEN 5000000 + (pid % 1009) * 1000000 + ((t - ?) / 3600) * 2500 "
        "- (k % 13) * 40000 END "
        "FROM r",
        (n - 1, PID0, players, MONTH_START, span, n) + (MONTH_START,) * 8)

    n = counts["faction_history"]
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?), "
        "r AS (SELECT ? + (k * 7) % ? AS fid, ? + (k * ?) / ? AS t, k FROM c) "
        "INSERT INTO faction_history (faction_id, timestamp, respect, member_count, best_chain) "
        "SELECT fid, t, 100000 + (fid % 1000) * 997 + (t - ?) / 60, 20 + (fid + (t - ?) / 259200) % 80, "
        "100 + fid % 900 + (t - ?) / 604800 * 25 FROM r",
        (n - 1, FID0, FACTIONS, MONTH_START, span, n, MONTH_START, MONTH_START, MONTH_START))

    n = counts["territory_ownership_history"]
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?), "
        "r AS (SELECT (k * 13) % ? AS tk, ? + (k * ?) / ? AS t, k FROM c) "
        f"INSERT INTO territory_ownership_history (territory_id, faction_id, sector, coordinates, coordinate_x, "
        f"coordinate_y, racket_level, racket_type, war_status, recorded_at) SELECT {_CODE.format(k='tk')}, "
        "CASE WHEN (tk + (t - ?) / 259200) % 7 = 0 THEN NULL ELSE ? + (tk * 31 + (t - ?) / 259200) % ? END, "
        "CAST(1 + tk % 7 AS TEXT), (tk % 600) || '.5,' || (tk / 600) || '.25', (tk % 600) + 0.5, (tk / 600) + 0.25, "
        "CASE WHEN tk % 40 = 0 THEN 1 + (t - ?) / 604800 END, "
        "CASE WHEN tk % 40 = 0 THEN 'Protection Racket' END, "
        "CASE (k + (t - ?) / 3600) % 10 WHEN 0 THEN 'under_attack' WHEN 1 THEN 'defending' ELSE 'none' END, t "
        "FROM r",
        (n - 1, TERRITORIES, MONTH_START, span, n, MONTH_START, FID0, MONTH_START, FACTIONS, MONTH_START,
         MONTH_START))

    n = counts["war_status_history"]
    window = 2 * 86400
    conn.execute(
        "WITH RECURSIVE c(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM c WHERE k < ?), "
        "r AS (SELECT k, ? + (k * ?) / ? AS t FROM c), "
        "w AS (SELECT k, t, 30000 + ((t - ?) / ?) * 20 + k % 20 AS war_id, (t - ?) % ? AS pos FROM r) "
        "INSERT INTO war_status_history (war_id, war_type, territory_id, attacking_faction_id, defending_faction_id, "
        "attacking_score, defending_score, required_score, status, started_at, ends_at, winner_faction_id, "
        "recorded_at) SELECT war_id, CASE WHEN war_id % 2 = 0 THEN 'ranked' ELSE 'territory' END, "
        f"CASE WHEN war_id % 2 = 1 THEN {_CODE.format(k='war_id % 4100')} END, "
        "? + war_id % ?, ? + (war_id * 7 + 1) % ?, pos / 60, pos / 90, 5000, "
        "CASE WHEN pos > ? THEN 'completed' ELSE 'ongoing' END, t - pos, t - pos + ?, "
        "CASE WHEN pos > ? THEN ? + war_id % ? END, t FROM w",
        (n - 1, MONTH_START, span, n, MONTH_START, window, MONTH_START, window, FID0, FACTIONS, FID0, FACTIONS,
         window - 3600, window, window - 3600, FID0, FACTIONS))
    conn.execute("COMMIT")
    return counts


def _raw_delete(path: Path | str) -> float:
    """Reference (not the goal's limit): one DELETE per history table of the month's rows, one transaction."""
    conn = connect_sync(path)
    try:
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        for table, column in TIME_COLUMN.items():
            conn.execute(f"DELETE FROM {table} WHERE {column} BETWEEN ? AND ?", (MONTH_START, MONTH_END))
        conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


def _limit(conn) -> float:
    t0 = time.perf_counter()
    for _, sql in LIMIT_QUERIES:
        conn.execute(sql, (MONTH_START, MONTH_END)).fetchall()
    return time.perf_counter() - t0


def _stage_seconds(stages: dict[str, float], t0: float, t1: float) -> dict[str, float]:
    """Seconds per compactor stage (fold, prune, vacuum) from the first progress call of each."""
    marks = sorted(stages.items(), key=lambda kv: kv[1])
    out = {}
    for i, (name, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else t1
        out[name] = rnd(end - start)
    if marks:
        out["plan"] = rnd(marks[0][1] - t0)
    return out


def _measure(dbs: Databases, total: int, tag: str, raw_delete: bool) -> dict:
    """Fill a fresh database with `total` history rows of January, then time the limit and one compact."""
    from tornstore.projections.compactor import compact
    from tornstore.projections.compactor.retention import prepare_chunks

    path = dbs.new(f"compact-{tag}")
    conn = connect_sync(path)
    t0 = time.perf_counter()
    try:
        migrate(conn)
        # As the collector's compactor leaves a store at the turn of a month: on PostgreSQL, January's
        # partition is there before its rows (pruned by dropping it); nothing to do on SQLite.
        prepare_chunks(conn, MONTH_START)
        counts = fill(conn, total)
    finally:
        close_sync(conn)
    fill_s = time.perf_counter() - t0
    delete_s = None
    if raw_delete:
        copy = dbs.new(f"compact-{tag}-delete", template=path)
        delete_s = _raw_delete(copy)
        dbs.drop(copy)

    conn = connect_sync(path)
    try:
        rows = sum(conn.execute(f"SELECT COUNT(*) FROM {t} WHERE {TIME_COLUMN[t]} BETWEEN ? AND ?",
                                (MONTH_START, MONTH_END)).fetchone()[0] for t in counts)
        _limit(conn)  # warm-up, untimed
        limit_s = _limit(conn)
        stages: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            stages.setdefault(stage.split()[0], time.perf_counter())

        t0 = time.perf_counter()
        report = compact(conn, NOW, retention_months=0, backup=False, progress=progress)
        t1 = time.perf_counter()
        left = sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in counts)
    finally:
        conn.close()
    dbs.drop(path)
    return {"seconds": t1 - t0, "limit_seconds": limit_s, "rows": rows, "counts": counts, "report": report,
            "stages": _stage_seconds(stages, t0, t1), "left": left, "fill_seconds": fill_s,
            "raw_delete_seconds": delete_s}


def run(sizes: Sizes, ctx: dict) -> dict:
    reason = missing("tornstore.projections.compactor")
    if reason:
        return {"skipped": reason}
    dbs = databases(ctx)
    n = sizes.compact_rows
    one = _measure(dbs, n, "n", raw_delete=True)
    four = _measure(dbs, 4 * n, "4n", raw_delete=False)
    seconds, limit_s = one["seconds"], one["limit_seconds"]
    totals = one["report"].as_dict()["totals"]
    counts = one["counts"]
    return {
        "seconds": rnd(seconds),
        "limit_seconds": rnd(limit_s),
        "rows": one["rows"],
        "rows_by_table": counts,
        "ratio_vs_limit": rnd(seconds / limit_s, 2),
        "goal": "seconds <= 3 * limit_seconds; growth <= 1.15",
        "goal_met": bool(seconds <= 3 * limit_s and four["seconds"] <= 1.15 * 4 * seconds),
        "growth": rnd(four["seconds"] / (4 * seconds), 2),
        "fold_seconds": one["stages"].get("fold"),
        "prune_seconds": one["stages"].get("prune"),
        "at_4n": {"rows": four["rows"], "seconds": rnd(four["seconds"]), "limit_seconds": rnd(four["limit_seconds"]),
                  "ratio_vs_limit": rnd(four["seconds"] / four["limit_seconds"], 2),
                  "limit_growth": rnd(four["limit_seconds"] / (4 * limit_s), 2),
                  "stage_seconds": four["stages"], "fill_seconds": rnd(four["fill_seconds"], 1)},
        "summary_rows": totals["summary_rows"],
        "months_folded": totals["months_folded"],
        "history_rows_pruned": totals["history_rows_pruned"],
        "history_rows_left": one["left"],
        "stage_seconds": one["stages"],
        "raw_delete_seconds": rnd(one["raw_delete_seconds"]),
        "reclaimed": None if dbs.postgres else one["report"].reclaimed,
        "workload": (f"{one['rows']} history rows of one month (2026-01) in the four *_history tables "
                     f"({', '.join(f'{t} {c}' for t, c in counts.items())}); "
                     f"{players_for(n)} players, {FACTIONS} factions, "
                     f"{TERRITORIES} territories; compact(now=2026-02-02, retention_months=0, backup=False) "
                     f"folds and prunes 2026-01; limit = 4 GROUP BY scans over the same rows; growth: the same "
                     f"at {4 * n} rows in a fresh database, seconds(4N) / (4 x seconds(N))"),
        "fill_seconds": rnd(one["fill_seconds"], 1),
        "backend": dbs.backend,
        **({"note": "PostgreSQL: the same rows generated by the same SQL (chr() for char(), a bigint counter); "
                    "reclaimed (bytes a SQLite VACUUM gave back) is null: the server's VACUUM frees no file "
                    "bytes to count"} if dbs.postgres else {}),
    }

"""Query: latency of the embedded API against the same SQL through a bare aiosqlite connection.

* Database: the storage section's (30 simulated days of 4-minute polls of 10 factions and their members;
  3 days and 3 factions with --quick), built here when the storage section did not run.
* Calls: `Store.player(id)` and `Store.history('player', id, 'level', since, until)` with a 60-day window
  ending at the workload's end, cycling through every player that has stats history; `query_calls` timed
  calls of each after 50 warm-up calls. Each call is timed around its `await`.
* Baseline: the SQL statements the query function itself runs for that id (recorded once beforehand by
  running `projections.queries.player` / `history` over a recording connection; BEGIN/COMMIT left out),
  each as one `await conn.execute_fetchall(sql, args)` on a bare `aiosqlite.connect(path)` with the same
  PRAGMAs. Store and baseline calls alternate, so both see the same machine noise.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import aiosqlite

from tornstore.eventstore.db import PRAGMAS, connect_sync

from .common import Sizes, missing, percentile, rnd

DAY = 86400
WARMUP = 50


class _Recorder:
    """Looks like a sqlite3.Connection to the query functions; remembers every statement they run."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self.statements: list[tuple[str, tuple]] = []

    def execute(self, sql: str, args=()):
        self.statements.append((sql, tuple(args)))
        return self._conn.execute(sql, args)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _record(path: Path, fn, *args) -> list[tuple[str, tuple]]:
    conn = connect_sync(path)
    try:
        rec = _Recorder(conn)
        fn(rec, *args)
        return [(sql, a) for sql, a in rec.statements if sql.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
    finally:
        conn.close()


def run(sizes: Sizes, ctx: dict) -> dict:
    reason = missing("tornstore.projections.handlers.registry", "tornstore.projections.queries")
    if reason:
        return {"skipped": reason}
    from tornstore.projections import queries

    built = ctx.get("fixtures", {}).get("storage")
    if built is None:
        from .storage import build
        built = build(sizes, ctx["workdir"], naive=False)
        ctx.setdefault("fixtures", {})["storage"] = built
        db_note = "the storage workload built here"
    else:
        db_note = "the storage section's database"
    path: Path = built["path"]
    until = built["end"]
    since = until - 60 * DAY

    conn = connect_sync(path)
    try:
        ids = [r[0] for r in conn.execute(
            "SELECT player_id FROM player_stats_history GROUP BY player_id ORDER BY player_id")]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        history_rows = conn.execute("SELECT COUNT(*) FROM player_stats_history").fetchone()[0]
    finally:
        conn.close()
    if not ids:
        return {"skipped": "no player has stats history in the query database"}
    player_sql = {pid: _record(path, queries.player, pid, None) for pid in ids}
    history_sql = {pid: _record(path, queries.history, "player", pid, "level", since, until) for pid in ids}
    points = []
    timings = asyncio.run(_measure(path, ids, player_sql, history_sql, since, until, sizes.query_calls, points))

    out = {}
    for name, (api, base) in timings.items():
        out[f"{name}_p50_ms"] = rnd(percentile(api, 50) * 1000, 4)
        out[f"{name}_p99_ms"] = rnd(percentile(api, 99) * 1000, 4)
        out[f"{name}_baseline_p50_ms"] = rnd(percentile(base, 50) * 1000, 4)
        out[f"{name}_baseline_p99_ms"] = rnd(percentile(base, 99) * 1000, 4)
        out[f"{name}_p99_ratio"] = rnd(percentile(api, 99) / percentile(base, 99), 2)
    result = {
        "player_p99_ms": out["player_p99_ms"],
        "player_baseline_p99_ms": out["player_baseline_p99_ms"],
        "history_p99_ms": out["history_p99_ms"],
        "history_baseline_p99_ms": out["history_baseline_p99_ms"],
        **out,
        "calls": sizes.query_calls,
        "players": len(ids),
        "statements_per_call": {"player": max(len(v) for v in player_sql.values()),
                                "history": max(len(v) for v in history_sql.values())},
        "mean_history_points": rnd(sum(points) / len(points), 1) if points else 0,
        "goal": "p99 <= 1.5 * baseline p99 for player and history",
        "goal_met": bool(out["player_p99_ratio"] <= 1.5 and out["history_p99_ratio"] <= 1.5),
        "workload": (f"{sizes.query_calls} timed calls each (after {WARMUP} warm-up) over {len(ids)} players with "
                     f"history, 60-day 'level' window; database: {db_note} ({events} events, {history_rows} "
                     f"player_stats_history rows); baseline = the same statements via execute_fetchall on a bare "
                     f"aiosqlite connection"),
    }
    return result


async def _measure(path: Path, ids: list[int], player_sql: dict, history_sql: dict, since: int, until: int,
                   calls: int, points: list[int]) -> dict:
    from tornstore.projections.store import Store

    store = await Store.open(path, create=False)
    bare = await aiosqlite.connect(str(path))
    try:
        for pragma in PRAGMAS:
            await bare.execute(pragma)

        async def api_player(pid):
            return await store.player(pid)

        async def api_history(pid):
            series = await store.history("player", pid, "level", since, until)
            return series

        async def base_player(pid):
            for sql, args in player_sql[pid]:
                await bare.execute_fetchall(sql, args)

        async def base_history(pid):
            for sql, args in history_sql[pid]:
                await bare.execute_fetchall(sql, args)

        results = {}
        for name, api, base in (("player", api_player, base_player), ("history", api_history, base_history)):
            api_t: list[float] = []
            base_t: list[float] = []
            for i in range(WARMUP + calls):
                pid = ids[i % len(ids)]
                order = ((api, api_t), (base, base_t)) if i % 2 == 0 else ((base, base_t), (api, api_t))
                for fn, sink in order:
                    t0 = time.perf_counter()
                    answer = await fn(pid)
                    dt = time.perf_counter() - t0
                    if i >= WARMUP:
                        sink.append(dt)
                        if fn is api_history:
                            points.append(len(answer.points))
            results[name] = (api_t, base_t)
        return results
    finally:
        await bare.close()
        await store.close()

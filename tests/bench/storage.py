"""Storage: bytes on disk after a month of 4-minute polls, against keeping every poll's response.

* `bytes`: the store's database file after ingesting the whole workload through the real pipeline
  (`ingest_batch`, batches of 50 responses: routing, hashing, dedup, appends, heartbeats) with the
  projections caught up from the log at the end (`runner.catch_up`) rather than inline in each batch:
  the same events, streams and projected rows (checked equal, byte for byte in file size, on 3 days of
  10 factions), at half the time, which keeps the full run under 10 minutes; closed, then
  `PRAGMA wal_checkpoint(TRUNCATE)`.
* `naive_bytes`: a database with one table holding one row per poll response (url, observed_at, the
  response's compact JSON text), same PRAGMAs, one transaction per batch, same checkpoint.
* Workload: 30 simulated days of PollPlan(factions=10, api='v2', member_profiles_every=15, wars_every=1)
  (3 days and 3 factions with --quick).
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import msgspec

from tornstore.eventstore.db import close_sync, connect_sync

from .common import Sizes, checkpointed_size, faction_workload, ingest_workload_into, missing, rnd

_encode = msgspec.json.Encoder().encode


def build(sizes: Sizes, workdir: Path, naive: bool = True) -> dict:
    """Ingest the storage workload into workdir/storage.db (and every response into storage-naive.db)."""
    workload = faction_workload(sizes.storage_factions, sizes.storage_days)
    path = workdir / "storage.db"
    naive_path = workdir / "storage-naive.db"
    nconn = connect_sync(naive_path) if naive else None
    polls = 0

    def keep_everything(batch) -> None:
        nonlocal polls
        polls += len(batch)
        if nconn is None:
            return
        nconn.execute("BEGIN")
        nconn.executemany("INSERT INTO responses (url, observed_at, body) VALUES (?, ?, ?)",
                          [(r.url, r.observed_at, _encode(r.body).decode()) for r in batch])
        nconn.execute("COMMIT")

    if nconn is not None:
        nconn.execute("CREATE TABLE responses (id INTEGER PRIMARY KEY, url TEXT NOT NULL, "
                      "observed_at INTEGER NOT NULL, body TEXT NOT NULL)")
    t0 = time.perf_counter()
    try:
        report = ingest_workload_into(path, workload, batch=50, on_batch=keep_everything, inline=False)
    finally:
        if nconn is not None:
            close_sync(nconn)
    return {"path": path, "naive_path": naive_path if naive else None, "polls": polls, "report": report,
            "workload": workload.description, "start": workload.start, "end": workload.end,
            "seconds": time.perf_counter() - t0}


def run(sizes: Sizes, ctx: dict) -> dict:
    reason = missing("tornstore.projections.handlers.registry")
    if reason:
        return {"skipped": reason}
    built = build(sizes, ctx["workdir"])
    ctx.setdefault("fixtures", {})["storage"] = built
    size = checkpointed_size(built["path"])
    naive_size = checkpointed_size(built["naive_path"])
    result = {
        "bytes": size,
        "naive_bytes": naive_size,
        "polls": built["polls"],
        "ratio_naive_over_store": rnd(naive_size / size, 2),
        "goal": "naive_bytes >= 10 * bytes",
        "goal_met": bool(naive_size >= 10 * size),
        "events": built["report"]["appended"],
        "unchanged_parts": built["report"]["unchanged"],
        "workload": (f"{built['polls']} poll responses: {built['workload']}; projections caught up from the log "
                     "after ingest; naive = one row per response with its JSON text"),
        "build_wall_seconds": rnd(built["seconds"], 1),
    }
    tables = _table_bytes(built["path"])
    if tables:
        result["bytes_by_table"] = tables
    return result


def _table_bytes(path: Path) -> dict | None:
    """Bytes per table with its indexes (dbstat), largest first; None when SQLite lacks dbstat."""
    conn = sqlite3.connect(str(path))
    try:
        rows = conn.execute(
            "SELECT COALESCE(m.tbl_name, d.name), SUM(d.pgsize) FROM dbstat d "
            "LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1 ORDER BY 2 DESC").fetchall()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return {name: int(size) for name, size in rows[:12]}

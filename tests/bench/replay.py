"""Replay: events per second rebuilding every projection from the log, and the peak memory it takes.

* Workload: a database ingested normally from the ingest mix (the ingest section's database when it ran,
  else the same workload ingested here, untimed), then grown with SQL to `replay_events` events: the
  steady-state events (every event but each stream's first) are copied again and again with
  `INSERT ... SELECT`, each copy shifted by the seed's time span (observed_at) and by its highest version
  (version), in position order, so the log keeps the mix's shapes and change rates and reads as
  consecutive weeks of the same polls. Stream heads are brought up to date.
* `per_s`: events / seconds of `projections.runner.replay(conn)` (reset + catch-up of every handler),
  run in a child process (`python -m tests.bench.replay --child DB`) whose own memory at its peak
  (anonymous pages, RssAnon, sampled after every batch of events) is `peak_rss_mb`: the memory-mapped
  database pages it touched are the file's, shared with the page cache, and are reported apart
  (`peak_rss_with_file_pages_mb`, VmHWM); `rss_at_end_mb` splits the RSS at the
  end into anonymous and file-backed pages. To keep the run bounded the child stops after
  `replay_budget_s` (150 s; 60 s with --quick): then `complete` is false and `per_s` is over the events
  replayed so far. `first_tenth_per_s` / `last_tenth_per_s` show whether the rate holds as tables grow.
* `limit_per_s`: events / (a full scan of the same events: events JOIN streams in position order, every
  row fetched, payloads not decoded + one executemany per table of the rows the replay ends up with in
  the history and current-state tables into bare tables of the same columns, one transaction, rows
  fetched beforehand).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from tornstore.eventstore.db import close_sync, connect_sync

from .common import Sizes, databases, ingest_workload_into, missing, mixed_workload, peak_rss_mb, rnd

SCAN_SQL = ("SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.payload, "
            "e.source_url FROM events e JOIN streams s USING (stream_id) ORDER BY e.position")


def grow(path: Path | str, target: int) -> dict:
    """Replicate the steady-state events until the log holds at least `target` events."""
    conn = connect_sync(path)
    pg = getattr(conn, "dialect", "sqlite") == "postgresql"
    # PostgreSQL has no rowid: the seed keeps the event's position to copy in the same order.
    seed_cols = "position AS seed_pos, " if pg else ""
    seed_order = "seed_pos" if pg else "rowid"
    try:
        total, top_version, t_min, t_max = conn.execute(
            "SELECT COUNT(*), MAX(version), MIN(observed_at), MAX(observed_at) FROM events").fetchone()
        conn.execute(f"CREATE TEMP TABLE seed AS SELECT {seed_cols}stream_id, version, observed_at, hash, rules, "
                     "source_url, payload FROM events WHERE version > 1 ORDER BY position")
        steady = conn.execute("SELECT COUNT(*) FROM temp.seed").fetchone()[0]
        if steady == 0:
            raise RuntimeError("the seed log has no steady-state events to replicate")
        span = t_max - t_min + 240
        copies = max(0, math.ceil((target - total) / steady))
        conn.execute("BEGIN")
        for k in range(1, copies + 1):
            conn.execute(
                "INSERT INTO events (stream_id, version, observed_at, hash, rules, source_url, payload) "
                "SELECT stream_id, version + ?, observed_at + ?, hash, rules, source_url, payload "
                f"FROM temp.seed ORDER BY {seed_order}", (k * top_version, k * span))
        conn.execute(
            "UPDATE streams SET (version, head_observed_at, last_changed, last_checked, hash) = "
            "(SELECT e.version, e.observed_at, e.observed_at, MAX(streams.last_checked, e.observed_at), e.hash "
            " FROM events e WHERE e.stream_id = streams.stream_id ORDER BY e.version DESC LIMIT 1) "
            "WHERE EXISTS (SELECT 1 FROM events e WHERE e.stream_id = streams.stream_id)")
        conn.execute("COMMIT")
        conn.execute("DROP TABLE temp.seed")
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        days = (conn.execute("SELECT MAX(observed_at) - MIN(observed_at) FROM events").fetchone()[0] or 0) / 86400
    finally:
        close_sync(conn)
    return {"seed_events": total, "steady_events": steady, "copies": copies, "events": events, "days": days}


class _OutOfTime(Exception):
    pass


def _rss_breakdown() -> dict:
    """Current RSS split (MB): anonymous memory vs file-backed pages (the memory-mapped database)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def _child(path: str, budget: float) -> None:
    """Runs in the child process: replay everything (or until `budget` seconds have passed), print seconds,
    events, peak RSS and the rate over the first and last tenth as JSON."""
    from tornstore.projections.runner import replay
    conn = connect_sync(path)
    total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    rss_before = peak_rss_mb()
    marks: list[tuple[float, int]] = [(0.0, 0)]
    peak_anon = [_rss_breakdown().get("RssAnon", 0.0)]
    t0 = time.perf_counter()

    def progress(n: int) -> None:
        elapsed = time.perf_counter() - t0
        marks.append((elapsed, marks[-1][1] + n))
        peak_anon[0] = max(peak_anon[0], _rss_breakdown().get("RssAnon", 0.0))
        if elapsed > budget:
            raise _OutOfTime

    complete = True
    try:
        replay(conn, progress=progress)
    except _OutOfTime:
        complete = False
    seconds, events = marks[-1]
    rss_end = _rss_breakdown()
    peak_anon[0] = max(peak_anon[0], rss_end.get("RssAnon", 0.0))
    conn.close()

    def rate(lo: float, hi: float) -> float | None:
        a = [m for m in marks if m[1] <= lo * events][-1]
        b = next(m for m in marks if m[1] >= hi * events)
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else None

    print(json.dumps({"seconds": seconds, "events": events, "log_events": total, "complete": complete,
                      "peak_rss_mb": peak_anon[0], "peak_rss_with_file_pages_mb": peak_rss_mb(),
                      "rss_before_mb": rss_before, "rss_end": rss_end,
                      "first_tenth_per_s": rate(0.0, 0.1), "last_tenth_per_s": rate(0.9, 1.0)}))


def _limit(path: Path | str, bare_path: Path | str, tables: list[str]) -> dict:
    """Scan the events; then insert the rows the replay left in `tables` into bare copies."""
    conn = connect_sync(path)
    try:
        t0 = time.perf_counter()
        scanned = 0
        cursor = conn.execute(SCAN_SQL)
        while True:
            rows = cursor.fetchmany(5000)
            if not rows:
                break
            scanned += len(rows)
        scan_s = time.perf_counter() - t0
        data = {}
        types: dict[str, list[str]] = {}
        for table in tables:
            info = list(conn.execute(f"PRAGMA table_info({table})"))
            cols = [r[1] for r in info]
            types[table] = [r[2] for r in info]
            data[table] = (cols, conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall())
    finally:
        conn.close()
    bare = connect_sync(bare_path)
    pg = getattr(bare, "dialect", "sqlite") == "postgresql"
    try:
        for table, (cols, _) in data.items():
            # PostgreSQL needs column types: the store's own (no constraint, no index, as on SQLite).
            spec = [f"{c} {t}" for c, t in zip(cols, types[table], strict=True)] if pg else cols
            bare.execute(f"CREATE TABLE {table} ({', '.join(spec)})")
        t0 = time.perf_counter()
        bare.execute("BEGIN")
        for table, (cols, rows) in data.items():
            bare.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})", rows)
        bare.execute("COMMIT")
        insert_s = time.perf_counter() - t0
    finally:
        bare.close()
    return {"scan_seconds": scan_s, "insert_seconds": insert_s, "scanned": scanned,
            "rows_written": {t: len(rows) for t, (_, rows) in data.items()}}


def run(sizes: Sizes, ctx: dict) -> dict:
    reason = missing("tornstore.projections.handlers.registry")
    if reason:
        return {"skipped": reason}
    from tornstore.projections.runner import handlers

    dbs = databases(ctx)
    seed = ctx.get("fixtures", {}).get("mix")
    seed_note = "the ingest section's database"
    t0 = time.perf_counter()
    if seed is None:
        seed = dbs.new("replay-seed")
        ingest_workload_into(seed, mixed_workload(sizes.ingest_factions, sizes.ingest_hours), sizes.ingest_batch)
        seed_note = "the ingest mix ingested here"
    path = dbs.new("replay", template=seed)
    grown = grow(path, sizes.replay_events)
    build_s = time.perf_counter() - t0

    proc = subprocess.run([sys.executable, "-m", "tests.bench.replay", "--child", str(path),
                           "--budget", str(sizes.replay_budget_s)],
                          capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[2]))
    if proc.returncode != 0:
        raise RuntimeError(f"replay child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])

    tables = list(dict.fromkeys(["projection_checkpoints"] + [t for h in handlers()
                                                              for t in (*h.history_tables, *h.state_tables)]))
    limit_target = dbs.new("replay-limit")
    limit = _limit(path, limit_target, tables)
    if dbs.postgres:
        dbs.drop(limit_target)
    errors = _projection_errors(path)
    events = child["events"]
    per_s = events / child["seconds"]
    partial = "" if child["complete"] else (
        f"; STOPPED at the {sizes.replay_budget_s:g} s budget after {events} of {child['log_events']} events: "
        "per_s is over the events replayed")
    limit_s = limit["scan_seconds"] + limit["insert_seconds"]
    limit_per_s = grown["events"] / limit_s
    ctx.setdefault("fixtures", {})["replayed"] = path
    return {
        "per_s": rnd(per_s, 1),
        "limit_per_s": rnd(limit_per_s, 1),
        "events": events,
        "peak_rss_mb": rnd(child["peak_rss_mb"], 1),
        "peak_rss_with_file_pages_mb": rnd(child["peak_rss_with_file_pages_mb"], 1),
        "rss_before_replay_mb": rnd(child["rss_before_mb"], 1),
        "seconds": rnd(child["seconds"]),
        "complete": child["complete"],
        "log_events": child["log_events"],
        "first_tenth_per_s": rnd(child["first_tenth_per_s"] or 0, 1),
        "last_tenth_per_s": rnd(child["last_tenth_per_s"] or 0, 1),
        "rss_at_end_mb": child["rss_end"],
        "limit_scan_seconds": rnd(limit["scan_seconds"]),
        "limit_insert_seconds": rnd(limit["insert_seconds"]),
        "rows_written": limit["rows_written"],
        "projection_errors": errors,
        "ratio_vs_limit": rnd(per_s / limit_per_s),
        "tenths_ratio": rnd((child["last_tenth_per_s"] or 0) / child["first_tenth_per_s"])
        if child["first_tenth_per_s"] else None,
        "goal": "per_s >= 0.4 * limit_per_s, last_tenth_per_s >= 0.85 * first_tenth_per_s, peak_rss_mb < 300",
        "goal_met": bool(per_s >= 0.4 * limit_per_s and child["peak_rss_mb"] < 300
                         and (child["last_tenth_per_s"] or 0) >= 0.85 * (child["first_tenth_per_s"] or 0)),
        "workload": (f"{grown['events']} events over {grown['days']:.0f} simulated days: {seed_note} "
                     f"({grown['seed_events']} events) plus {grown['copies']} time-shifted copies of its "
                     f"{grown['steady_events']} steady-state events; limit = scan of the same events + "
                     f"executemany of the {sum(limit['rows_written'].values())} rows the replay left" + partial),
        "build_seconds": rnd(build_s, 1),
        "backend": dbs.backend,
        **({"note": "PostgreSQL: the log copied from the seed with CREATE DATABASE ... TEMPLATE; the memory "
                    "figures are the replaying client's only (the server's memory is not counted)"}
           if dbs.postgres else {}),
    }


def _projection_errors(path: Path | str) -> int:
    conn = connect_sync(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM projection_errors").fetchone()[0]
    finally:
        conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--budget", type=float, default=float("inf"))
    args = parser.parse_args()
    _child(args.child, args.budget)

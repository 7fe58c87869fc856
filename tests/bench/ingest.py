"""Ingest: responses per second through the whole pipeline, against raw inserts and the naive pattern.

* `per_s`: responses / seconds spent in `eventstore.ingest.ingest_batch(conn, batch, project_inline)`,
  batches of `ingest_batch` responses (the collector's default), bodies already decoded (the simulator
  hands decoded bodies; decoding is the same work for every approach). Includes routing, canonical
  hashing, the dedup against stream heads, appends, heartbeats and the inline projections.
* `limit_per_s`: the rows the pipeline would write if it stored every routed part of the same responses
  (stream id, version, observed_at, hash, rules, url, payload JSON), prepared beforehand, then inserted
  with one `executemany` into a bare table of the same columns (no index, no constraint) in one
  transaction; only the insert and the commit are timed. Expressed as responses / that time.
* `append_all_per_s`: an event store that appends every response unchanged, in the same batches: one row
  per response (url without key, observed_at, body as JSON text) into a table of its own, one `executemany`
  and one commit per batch, the same PRAGMAs as the store; timed per batch beside the pipeline (encoding
  the bodies included: the pipeline too gets decoded bodies). It dedups nothing and projects nothing;
  `ratio_vs_append_all` >= 1 means storing only what changed, projected, costs no more than storing it all.
* `cpu_seconds`, `append_all_cpu_seconds`: the same spans in process CPU time, steadier than wall time on a
  busy machine (the ratios are of wall times).
* `naive_per_s`: the plan's example pattern on a subset (the first whole hourly cycles of the same
  workload, >= `naive_responses` responses): per response `json.loads` of its text, then per routed part
  one `await conn.execute(INSERT ...)` and one `await conn.commit()` through aiosqlite, into a table with
  one row per part (stream key, observed_at, url, payload JSON). Same PRAGMAs as the store.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiosqlite
import msgspec

from tornstore.eventstore.canonical import RULES, canonical_hash
from tornstore.eventstore.db import PRAGMAS, close_sync, connect_sync
from tornstore.eventstore.ingest import IngestReport, ingest_batch, torn_error
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.routing import route
from tornstore.eventstore.secrets import strip_key

from .common import Sizes, Stopwatch, databases, missing, mixed_workload, rnd

_encode = msgspec.json.Encoder().encode
CYCLE = 15  # rounds per hourly cycle of the mix (profiles and the territory map every 15 rounds)

BARE_EVENTS = ("CREATE TABLE events (position INTEGER PRIMARY KEY, stream_id INTEGER, version INTEGER, "
               "observed_at INTEGER, hash TEXT, rules TEXT, source_url TEXT, payload TEXT)")
BARE_INSERT = ("INSERT INTO events (stream_id, version, observed_at, hash, rules, source_url, payload) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)")
APPEND_ALL_TABLE = ("CREATE TABLE responses (position INTEGER PRIMARY KEY, url TEXT NOT NULL, "
                    "observed_at INTEGER NOT NULL, body TEXT NOT NULL)")
APPEND_ALL_INSERT = "INSERT INTO responses (url, observed_at, body) VALUES (?, ?, ?)"
NAIVE_TABLE = ("CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT, entity_type TEXT, "
               "entity_id TEXT, view TEXT, observed_at INTEGER, source_url TEXT, payload TEXT)")
NAIVE_INSERT = ("INSERT INTO snapshots (entity_type, entity_id, view, observed_at, source_url, payload) "
                "VALUES (?, ?, ?, ?, ?, ?)")


def run(sizes: Sizes, ctx: dict) -> dict:
    reason = missing("tornstore.projections.handlers.registry")
    if reason:
        return {"skipped": reason}
    from tornstore.projections.runner import project_inline

    dbs = databases(ctx)
    workload = mixed_workload(sizes.ingest_factions, sizes.ingest_hours)
    pipe_path = dbs.new("ingest")
    conn = connect_sync(pipe_path)
    migrate(conn)

    pipeline = Stopwatch()
    pipeline_cpu = CpuStopwatch()
    appender = AppendAll(dbs.new("ingest-append-all"))
    report = IngestReport()
    stream_ids: dict[tuple, int] = {}
    versions: dict[tuple, int] = {}
    limit_rows: list[tuple] = []
    naive_texts: list[tuple[str, int, str]] = []
    naive_open = True
    pending = []
    responses = 0
    generate_t0 = time.perf_counter()
    try:
        for rounds_seen, batch_round in enumerate(workload.rounds(), start=1):
            responses += len(batch_round)
            for response in batch_round:
                url = strip_key(response.url)
                body = response.body
                if naive_open:
                    naive_texts.append((url, response.observed_at, json.dumps(body)))
                if torn_error(body) is not None:
                    continue  # an error body is a gap, not an event, for every approach
                for part in route(url, body):
                    key = (part.entity_type, part.entity_id, part.view)
                    sid = stream_ids.get(key)
                    if sid is None:
                        sid = stream_ids[key] = len(stream_ids) + 1
                    version = versions[key] = versions.get(key, 0) + 1
                    limit_rows.append((sid, version, response.observed_at, canonical_hash(part.view, part.payload),
                                       RULES, url, _encode(part.payload).decode()))
            if naive_open and len(naive_texts) >= sizes.naive_responses and rounds_seen % CYCLE == 0:
                naive_open = False
            for response in batch_round:
                pending.append(response)
                if len(pending) >= sizes.ingest_batch:
                    with pipeline, pipeline_cpu:
                        report.merge(ingest_batch(conn, pending, project_inline))
                    appender.append(pending)
                    pending = []
        if pending:
            with pipeline, pipeline_cpu:
                report.merge(ingest_batch(conn, pending, project_inline))
            appender.append(pending)
    finally:
        close_sync(conn)
        appender.close()
    wall = time.perf_counter() - generate_t0
    ctx.setdefault("fixtures", {})["mix"] = pipe_path

    limit_target = dbs.new("ingest-limit")
    limit_s = _limit(limit_target, limit_rows)
    dbs.drop(limit_target)
    n_limit_rows = len(limit_rows)
    del limit_rows
    if dbs.postgres:
        # The naive pattern is the plan's aiosqlite example: SQLite-only, reported as null.
        naive_s, naive_parts = None, None
    else:
        naive_s, naive_parts = asyncio.run(_naive(dbs.workdir / "ingest-naive.db", naive_texts))

    per_s = responses / pipeline.seconds
    limit_per_s = responses / limit_s
    naive_per_s = len(naive_texts) / naive_s if naive_s else None
    append_all_per_s = responses / appender.wall.seconds
    result = {
        "per_s": rnd(per_s, 1),
        "limit_per_s": rnd(limit_per_s, 1),
        "naive_per_s": rnd(naive_per_s, 1) if naive_per_s else None,
        "append_all_per_s": rnd(append_all_per_s, 1),
        "responses": responses,
        "seconds": rnd(pipeline.seconds),
        "cpu_seconds": rnd(pipeline_cpu.seconds),
        "limit_seconds": rnd(limit_s),
        "append_all_seconds": rnd(appender.wall.seconds),
        "append_all_cpu_seconds": rnd(appender.cpu.seconds),
        "limit_rows": n_limit_rows,
        "naive_responses": len(naive_texts),
        "naive_rows": naive_parts,
        "naive_seconds": rnd(naive_s) if naive_s else None,
        "appended_events": report.appended,
        "unchanged_parts": report.unchanged,
        "errors": len(report.errors),
        "rejected": len(report.rejected),
        "batch": sizes.ingest_batch,
        "ratio_vs_limit": rnd(per_s / limit_per_s),
        "ratio_vs_naive": rnd(per_s / naive_per_s, 2) if naive_per_s else None,
        "ratio_vs_append_all": rnd(per_s / append_all_per_s),
        "goal": "per_s >= 0.5 * limit_per_s and per_s >= 10 * naive_per_s",
        "goal_met": bool(per_s >= 0.5 * limit_per_s and (naive_per_s is None or per_s >= 10 * naive_per_s)),
        "workload": (f"{responses} responses: {workload.description}; pipeline in batches of "
                     f"{sizes.ingest_batch}; limit = {n_limit_rows} rows (every routed part) in one executemany; "
                     f"naive = first {len(naive_texts)} responses ({naive_parts} parts, one commit each); "
                     f"append-all = every response as one row, one executemany and commit per batch"),
        "generate_and_ingest_wall_seconds": rnd(wall, 1),
        "backend": dbs.backend,
    }
    if dbs.postgres:
        result["note"] = ("PostgreSQL: pipeline, limit and append-all ran on fresh PostgreSQL databases (bare tables "
                          "with an identity position); naive_* are null (the naive pattern is aiosqlite, SQLite-only) "
                          "and goal_met ignores it")
    return result


class CpuStopwatch(Stopwatch):
    """Stopwatch in process CPU time."""

    def __enter__(self) -> CpuStopwatch:
        self._t0 = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.process_time() - self._t0


class AppendAll:
    """The append-everything event store: each batch's responses as rows, one executemany, one commit."""

    def __init__(self, path: Path | str):
        self.conn = connect_sync(path)
        self.conn.execute(_ddl(self.conn, APPEND_ALL_TABLE))
        self.wall, self.cpu = Stopwatch(), CpuStopwatch()
        self.target = path

    def append(self, batch: list) -> None:
        with self.wall, self.cpu:
            rows = [(strip_key(r.url), r.observed_at, _encode(r.body).decode()) for r in batch]
            self.conn.execute("BEGIN")
            self.conn.executemany(APPEND_ALL_INSERT, rows)
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _ddl(conn, sql: str) -> str:
    """The bare table's DDL for this connection: on PostgreSQL the position is an identity column (SQLite's
    INTEGER PRIMARY KEY numbers rows by itself)."""
    if getattr(conn, "dialect", "sqlite") == "postgresql":
        return sql.replace("position INTEGER PRIMARY KEY",
                           "position bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    return sql


def _limit(path: Path | str, rows: list[tuple]) -> float:
    """One executemany of prepared rows into a bare table, one transaction; seconds for insert + commit."""
    conn = connect_sync(path)
    try:
        conn.execute(_ddl(conn, BARE_EVENTS))
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(BARE_INSERT, rows)
        conn.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        conn.close()


async def _naive(path: Path, texts: list[tuple[str, int, str]]) -> tuple[float, int]:
    """The plan's pattern: decode, then one awaited INSERT and one awaited commit per row."""
    conn = await aiosqlite.connect(str(path))
    try:
        for pragma in PRAGMAS:
            await conn.execute(pragma)
        await conn.execute(NAIVE_TABLE)
        await conn.commit()
        parts_written = 0
        t0 = time.perf_counter()
        for url, observed_at, text in texts:
            body = json.loads(text)
            if torn_error(body) is not None:
                continue
            for part in route(url, body):
                await conn.execute(NAIVE_INSERT, (part.entity_type, part.entity_id, part.view, observed_at, url,
                                                  json.dumps(part.payload)))
                await conn.commit()
                parts_written += 1
        return time.perf_counter() - t0, parts_written
    finally:
        await conn.close()

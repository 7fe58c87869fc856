"""The compactor on PostgreSQL gives what it gives on SQLite.

The generated world of test_compactor (five months of players, factions, wars and territories) is ingested
into a SQLite file and a PostgreSQL database through the same pipeline, both are compacted at the same
clock through the CLI, and every summary, history, ledger and horizon table must be equal on both. A
second run changes nothing, verify passes, replay keeps it, and a second compactor on another connection
is turned away while one runs (the advisory lock: any host may start it, one runs at a time)."""
from __future__ import annotations

import pytest

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.projections.compactor import CompactionError, compact
from tornstore.projections.store import ingest_files

from .crashkit import cli
from .test_compactor import HISTORY, KEPT, NOW, SUMMARIES, dump, generate, write_capture

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'tornstore[postgresql]')")

ROWS_WITH_RUN_TIMES = {"created_at", "folded_at", "pruned_at", "made_at", "id"}


def compared(target) -> dict:
    """What compaction made, without row ids and the run's own clock columns."""
    conn = connect_sync(str(target))
    try:
        out = {}
        for table in (*SUMMARIES, *HISTORY, *KEPT, "compaction_ledger", "store_meta", "projection_snapshots"):
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            out[table] = dump(conn, table, drop=tuple(c for c in cols if c in ROWS_WITH_RUN_TIMES))
        out["events"] = conn.execute("SELECT COUNT(*), MIN(position), MAX(position) FROM events").fetchone()
        return out
    finally:
        close_sync(conn)


def test_compaction_on_postgres_equals_compaction_on_sqlite(postgres_url, tmp_path):
    lines, _ = generate()
    capture = write_capture(tmp_path / "world.ndjson", lines)
    lite = tmp_path / "torn.db"
    for target in (lite, postgres_url):
        ingest_files(str(target), [str(capture)], now=NOW)
        done = cli(target, "compact", "--now", str(NOW), "--no-backup", "--json")
        assert done.returncode == 0, done.stderr
    want = compared(lite)
    assert want["player_stats_summary"] and want["compaction_ledger"] and want["projection_snapshots"]
    assert compared(postgres_url) == want

    again = cli(postgres_url, "compact", "--now", str(NOW), "--no-backup")
    assert again.returncode == 0, again.stderr
    assert compared(postgres_url) == want
    for args in (("verify",), ("replay",), ("verify",)):
        result = cli(postgres_url, *args)
        assert result.returncode == 0, result.stderr
    assert compared(postgres_url) == want


def test_one_compactor_at_a_time_across_connections(postgres_url, tmp_path):
    from tornstore.eventstore.postgres.connection import COMPACT_LOCK

    ingest_files(postgres_url, [str(write_capture(tmp_path / "w.ndjson", generate()[0][:200]))], now=NOW)
    holder = psycopg.connect(postgres_url, autocommit=True)   # another host's compactor, mid-run
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", COMPACT_LOCK)
        conn = connect_sync(postgres_url)
        try:
            with pytest.raises(CompactionError, match="another compactor is running"):
                compact(conn, NOW, backup=False)
            assert compact(conn, NOW, backup=False, dry_run=True).dry_run   # a dry run reads only
        finally:
            close_sync(conn)
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", COMPACT_LOCK)
        conn = connect_sync(postgres_url)
        try:
            assert compact(conn, NOW, backup=False).horizon_after > 0
        finally:
            close_sync(conn)
    finally:
        holder.close()

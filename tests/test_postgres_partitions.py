"""Monthly chunks as native partitions on PostgreSQL (migration 0008, eventstore/postgres/partitions.py).

The history tables are `PARTITION BY RANGE` on their time column. What the tests hold the store to: rows of a
month without a partition wait in the default partition and move to their own when the compactor runs;
pruning a month detaches and drops its partitions (and counts exactly the rows they held); the rows, ids,
sequences, foreign keys and views of a database made before 0008 come through the migration unchanged.
"""
from __future__ import annotations

import pytest

from tornstore.eventstore.db import close_sync, connect_sync, sequence_value
from tornstore.eventstore.migrate import available_migrations
from tornstore.eventstore.postgres import partitions
from tornstore.projections.compactor import compact
from tornstore.projections.compactor.periods import Period
from tornstore.projections.store import ingest_files

from .crashkit import cli
from .test_compactor import HISTORY, MONTHS, NOW, dump, generate, write_capture

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'tornstore[postgresql]')")

TABLES = {**HISTORY, "stat_history": "recorded_at"}
LATER = Period.containing(NOW).shift(2).start        # 2027-04-01


def layout(conn) -> dict[str, dict]:
    """Per history table: rows per month partition (by label), and rows in the default partition."""
    out = {}
    for table in TABLES:
        parts = {Period.containing(start).label: conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                 for start, name in partitions.months(conn, table).items()}
        default = conn.execute(f"SELECT COUNT(*) FROM {table}_default").fetchone()[0]
        out[table] = {"months": parts, "default": default}
    return out


def rows_by_month(conn) -> dict[str, dict[str, int]]:
    return {table: dict(conn.execute(
        f"SELECT to_char(to_timestamp({time}) AT TIME ZONE 'UTC', 'YYYY-MM'), COUNT(*) FROM {table} GROUP BY 1"
    ).fetchall()) for table, time in TABLES.items()}


def pruned_rows(conn) -> dict[str, int]:
    return {Period.containing(start).label: n for start, n in conn.execute(
        "SELECT period_start, pruned_history_rows FROM compaction_ledger WHERE pruned_at IS NOT NULL")}


def test_compaction_makes_month_partitions_and_prunes_by_dropping_them(postgres_url, tmp_path):
    capture = write_capture(tmp_path / "world.ndjson", generate()[0])
    ingest_files(postgres_url, [str(capture)], now=NOW)
    conn = connect_sync(postgres_url)
    try:
        before = rows_by_month(conn)
        # No compactor has run: every row waits in its table's default partition.
        assert all(not v["months"] and v["default"] == sum(before[t].values()) for t, v in layout(conn).items())
        assert set(before["player_stats_history"]) == {p.label for p in MONTHS}
        ids = {t: dump(conn, t) for t in TABLES}

        # February 2027: September to November are pruned (deleted where they waited, in the default
        # partition); December and January move to partitions of their own; February and March are made ready.
        report = compact(conn, NOW, backup=False)
        first = {r.month for r in report.pruned}
        assert first == {"2026-09", "2026-10", "2026-11"}
        after = layout(conn)
        for table in TABLES:
            kept = {m: n for m, n in before[table].items() if m not in first}
            assert after[table] == {"months": {"2027-02": 0, "2027-03": 0, **kept}, "default": 0}, table
            # The rows that stay are the rows that were there, ids and all.
            assert dump(conn, table) == [r for r in ids[table] if r in set(dump(conn, table))]
        assert compact(conn, NOW, backup=False).pruned == []       # a second run makes and drops nothing
        assert layout(conn) == after

        # April 2027: December and January go by dropping their partitions.
        report = compact(conn, LATER, backup=False)
        assert {r.month for r in report.pruned} == {"2026-12", "2027-01"}
        for table in TABLES:
            assert layout(conn)[table] == {"months": {"2027-02": 0, "2027-03": 0, "2027-04": 0, "2027-05": 0},
                                           "default": 0}, table
        # The ledger counts exactly the rows each month held, however they went.
        assert pruned_rows(conn) == {p.label: sum(before[t].get(p.label, 0) for t in TABLES) for p in MONTHS}
    finally:
        close_sync(conn)
    for args in (("verify",), ("replay",), ("verify",)):
        result = cli(postgres_url, *args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_rows_of_a_month_without_a_partition_wait_in_default_until_the_compactor_runs(postgres_url, tmp_path):
    ingest_files(postgres_url, [str(write_capture(tmp_path / "a.ndjson", generate()[0][:400]))], now=NOW)
    conn = connect_sync(postgres_url)
    try:
        compact(conn, NOW, backup=False)
        # Rows of a month beyond the next one (a clock running ahead, say) find no partition yet.
        ahead = Period.containing(NOW).shift(3)
        conn.execute("INSERT INTO faction_history (faction_id, timestamp, respect) "
                     "SELECT faction_id, ?, 1 FROM factions ORDER BY faction_id LIMIT 3", (ahead.start + 60,))
        assert layout(conn)["faction_history"]["default"] == 3
        rows = dump(conn, "faction_history")
        compact(conn, NOW, backup=False)
        assert layout(conn)["faction_history"]["default"] == 0
        assert layout(conn)["faction_history"]["months"][ahead.label] == 3
        assert dump(conn, "faction_history") == rows
    finally:
        close_sync(conn)


def test_migration_0008_keeps_rows_ids_sequences_keys_and_views(postgres_url):
    pg = psycopg.connect(postgres_url, autocommit=True)
    try:
        for m in available_migrations("tornstore.eventstore.postgres"):
            if m.version <= 7:
                pg.execute(m.sql)
        pg.execute("INSERT INTO players (player_id, name, created_at, last_updated) VALUES (1, 'Alice', 0, 0)")
        pg.execute("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (9, 'F', 0, 0)")
        for ts in (1727740800, 1730419200, 1730419300):     # October, November, November 2024
            pg.execute("INSERT INTO player_stats_history (player_id, timestamp, level) VALUES (1, %s, 5)", (ts,))
            pg.execute("INSERT INTO stat_history (entity_type, entity_id, stat, recorded_at, value) "
                       "VALUES ('faction', 9, 'respect', %s, 1.5)", (ts,))
        pg.execute("DELETE FROM player_stats_history WHERE timestamp = 1730419300")   # id 3 handed out, gone
        views = {v: pg.execute(f"SELECT * FROM {v} ORDER BY id").fetchall()
                 for v in ("player_stats_history_view", "stat_history_view")}

        pg.execute(next(m for m in available_migrations("tornstore.eventstore.postgres") if m.version == 8).sql)

        assert {v: pg.execute(f"SELECT * FROM {v} ORDER BY id").fetchall() for v in views} == views
        assert pg.execute("SELECT relkind FROM pg_class WHERE relname = 'player_stats_history'").fetchone() == ("p",)
        new_id = pg.execute("INSERT INTO player_stats_history (player_id, timestamp) VALUES (1, 1730419400) "
                            "RETURNING id").fetchone()[0]
        assert new_id == 4    # the sequence goes on from the identity's value: no id handed out twice
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            pg.execute("INSERT INTO player_stats_history (player_id, timestamp) VALUES (404, 1730419400)")
        with pytest.raises(psycopg.errors.CheckViolation):
            pg.execute("INSERT INTO player_stats_history (player_id, timestamp, level) VALUES (1, 1730419400, 0)")
    finally:
        pg.close()
    conn = connect_sync(postgres_url)
    try:
        assert sequence_value(conn, "player_stats_history") == 6     # (4, then the ids the two refused rows took)
        assert sequence_value(conn, "stat_history") == 3
    finally:
        close_sync(conn)

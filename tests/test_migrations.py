"""The schema: every table of the plan, applied once, refused when the code and the file disagree."""
from __future__ import annotations

import json
import sqlite3

import pytest

from tornstore.eventstore import migrate as migrate_mod
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import MigrationError, available_migrations, current_version, migrate

PLAN_TABLES = {
    "schema_version": {"version", "applied_at", "description", "checksum"},
    "players": {"player_id", "name", "level", "rank", "faction_id", "status_state", "status_description",
                "life_current", "life_maximum", "created_at", "last_updated"},
    "factions": {"faction_id", "name", "tag", "leader_id", "co_leader_id", "respect", "age", "best_chain",
                 "member_count", "created_at", "last_updated"},
    "player_stats_history": {"id", "player_id", "timestamp", "strength", "defense", "speed", "dexterity",
                             "total_stats", "level", "life_maximum", "networth"},
    "war_status_history": {"id", "war_id", "war_type", "territory_id", "attacking_faction_id",
                           "defending_faction_id", "attacking_score", "defending_score", "required_score",
                           "status", "started_at", "ends_at", "recorded_at"},
    "territory_ownership_history": {"id", "territory_id", "faction_id", "sector", "coordinates",
                                    "racket_level", "racket_type", "war_status", "recorded_at"},
    "faction_history": {"id", "faction_id", "timestamp", "respect", "member_count", "best_chain"},
    "player_stats_summary": {"id", "player_id", "period_start", "period_end", "period_type",
                             *(f"{s}_{p}" for s in ("strength", "defense", "speed", "dexterity", "total_stats",
                                                    "level", "networth") for p in ("start", "end", "change")),
                             "life_maximum_start", "life_maximum_end", "record_count", "created_at"},
    "war_summary": {"id", "war_id", "war_type", "territory_id", "period_start", "period_end", "period_type",
                    "attacking_faction_id", "defending_faction_id", "final_attacking_score",
                    "final_defending_score", "winner_faction_id", "duration_seconds", "record_count",
                    "created_at"},
    "territory_ownership_summary": {"id", "territory_id", "period_start", "period_end", "period_type",
                                    "faction_id_start", "faction_id_end", "ownership_changes", "days_owned",
                                    "record_count", "created_at"},
    "faction_summary": {"id", "faction_id", "period_start", "period_end", "period_type",
                        *(f"{s}_{p}" for s in ("respect", "member_count", "best_chain")
                          for p in ("start", "end", "change")), "record_count", "created_at"},
    "streams": {"stream_id", "entity_type", "entity_id", "view", "version", "hash", "rules", "first_seen",
                "last_changed", "last_checked"},
    "events": {"position", "stream_id", "version", "observed_at", "hash", "rules", "source_url", "payload"},
}


def columns(conn, table):
    return {row[1]: row for row in conn.execute(f"PRAGMA table_info({table})")}


def test_every_plan_table_and_column_exists(conn):
    for table, expected in PLAN_TABLES.items():
        assert expected <= set(columns(conn, table)), table


@pytest.mark.sqlite_only("reads SQLite's declared types; test_postgres_schema compares the PostgreSQL ones")
def test_territory_ids_are_text_and_checks_hold(conn):
    for table in ("war_status_history", "territory_ownership_history", "war_summary",
                  "territory_ownership_summary"):
        assert columns(conn, table)["territory_id"][2] == "TEXT"
    conn.execute("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (1, 'F', 0, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO players (player_id, name, life_maximum, created_at, last_updated) "
                     "VALUES (1, 'p', 0, 0, 0)")
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are on
        conn.execute("INSERT INTO players (player_id, name, faction_id, created_at, last_updated) "
                     "VALUES (2, 'p', 999, 0, 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO war_status_history (war_id, war_type, recorded_at) VALUES (1, 'raid', 0)")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_migrate_twice_changes_nothing(conn):
    assert current_version(conn) == len(available_migrations())
    before = conn.execute("SELECT * FROM schema_version").fetchall()
    assert migrate(conn) == []
    assert conn.execute("SELECT * FROM schema_version").fetchall() == before
    assert all(len(row[3]) == 64 for row in before)  # sha256 checksum recorded


def test_database_newer_than_code_is_refused(conn):
    conn.execute("INSERT INTO schema_version (version, applied_at, description, checksum) "
                 "VALUES (999, 0, 'from the future', 'x')")
    with pytest.raises(MigrationError, match="newer than this tornstore"):
        migrate(conn)


@pytest.mark.sqlite_only("patches the SQLite migration list")
def test_changed_migration_file_is_refused(conn, monkeypatch):
    real = available_migrations()
    changed = [migrate_mod.Migration(m.version, m.description, m.sql + "\n-- edited\n") for m in real]
    monkeypatch.setattr(migrate_mod, "available_migrations", lambda: changed)
    with pytest.raises(MigrationError, match="was changed after it was applied"):
        migrate(conn)


def test_failed_migration_leaves_nothing_behind(tmp_path, monkeypatch):
    broken = [migrate_mod.Migration(1, "broken", "CREATE TABLE a (x INTEGER);\nCREATE TABLE oops (;\n")]
    monkeypatch.setattr(migrate_mod, "available_migrations", lambda: broken)
    conn = connect_sync(tmp_path / "b.db")
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'a'").fetchone() is None
    close_sync(conn)


# ------------------------------------------------------------------------------------------------ 0002
READABLE_VIEWS = {f"{t}_view" for t in ("player_stats_history", "faction_history", "war_status_history",
                                        "territory_ownership_history", "player_stats_summary", "faction_summary",
                                        "war_summary", "territory_ownership_summary")}


def _contents(conn) -> tuple[list, dict]:
    """Every table and index definition, and every table's rows (sqlite_sequence and schema_version too)."""
    schema = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE type != 'view' "
                          "ORDER BY type, name").fetchall()
    tables = [name for kind, name, _, _ in schema if kind == "table"]
    return schema, {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}


def test_0002_adds_the_views_to_a_0001_database_and_loses_nothing(tmp_path, monkeypatch):
    from tornstore.projections.compactor import compact
    from tornstore.projections.store import ingest_files

    from .test_queries import pipeline_capture, ts

    # A database made by 0001 alone: four months ingested and projected, compacted (summaries, pruned history).
    first = available_migrations()[:1]
    assert [m.version for m in first] == [1]
    monkeypatch.setattr(migrate_mod, "available_migrations", lambda: first)
    db = tmp_path / "old.db"
    assert ingest_files(str(db), [str(pipeline_capture(tmp_path / "capture.ndjson"))]).appended > 0
    conn = connect_sync(db)
    try:
        assert [p.month for p in compact(conn, ts(2025, 12, 15), backup=False).pruned] == ["2025-08", "2025-09"]
        assert current_version(conn) == 1
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'view'").fetchone()[0] == 0
        schema, before = _contents(conn)
        for table in ("player_stats_history", "faction_history", "war_status_history",
                      "territory_ownership_history", "player_stats_summary", "faction_summary", "war_summary",
                      "territory_ownership_summary", "sqlite_sequence", "events"):
            assert before[table], table   # there is something to lose

        monkeypatch.undo()
        upto_0002 = available_migrations()[:2]   # later migrations have their own tests
        monkeypatch.setattr(migrate_mod, "available_migrations", lambda: upto_0002)
        assert migrate(conn, now=ts(2025, 12, 16)) == [2]
        assert current_version(conn) == 2
        schema_after, after = _contents(conn)
        assert schema_after == schema                       # no table or index added, dropped or changed
        assert after.pop("schema_version") == before.pop("schema_version") + [
            (2, ts(2025, 12, 16), "readable views", upto_0002[1].checksum)]
        assert after == before                              # every row, AUTOINCREMENT sequences included
        views = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}
        assert views == READABLE_VIEWS
        for view in views:
            table = view.removesuffix("_view")
            assert (conn.execute(f"SELECT COUNT(*) FROM {view}").fetchone()
                    == conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()), view
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        rows_before = conn.execute("SELECT COUNT(*) FROM player_stats_history_view").fetchone()[0]
    finally:
        close_sync(conn)

    # The migrated store keeps ingesting (with every later migration applied), and the views show what arrives.
    monkeypatch.undo()
    later = tmp_path / "later.ndjson"
    later.write_text(json.dumps({"url": "https://api.torn.com/user/1?selections=battlestats",
                                 "observed_at": ts(2025, 12, 5), "body": {
                                     "strength": 9000, "defense": 500, "speed": 500, "dexterity": 500,
                                     "total": 10500}}) + "\n")
    assert ingest_files(str(db), [str(later)]).appended == 1
    conn = connect_sync(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM player_stats_history_view").fetchone()[0] == rows_before + 1
        assert conn.execute("SELECT player_name, timestamp_utc, strength FROM player_stats_history_view "
                            "ORDER BY id DESC LIMIT 1").fetchone() == ("P1", "2025-12-05T00:00:00Z", 9000)
    finally:
        close_sync(conn)


def _compacted_store_of(db, migrations, monkeypatch):
    """A store made with only `migrations`: the pipeline capture ingested, then compacted and pruned (the
    monkeypatch stays on: the caller undoes it to migrate the rest)."""
    from tornstore.projections.compactor import compact
    from tornstore.projections.store import ingest_files

    from .test_queries import pipeline_capture, ts

    monkeypatch.setattr(migrate_mod, "available_migrations", lambda: migrations)
    assert ingest_files(str(db), [str(pipeline_capture(db.parent / "capture.ndjson"))]).appended > 0
    conn = connect_sync(db)
    compact(conn, ts(2025, 12, 15), backup=False)
    return conn


def _assert_rows_kept(conn, before: dict, skip: tuple[str, ...]) -> None:
    """Every row each table held before is still there, in its columns of then (new columns come after)."""
    for table, rows in before.items():
        if table in skip:
            continue
        columns = [c[1] for c in conn.execute(f'PRAGMA table_xinfo("{table}")')][:len(rows[0]) if rows else None]
        assert conn.execute(f'SELECT {", ".join(columns)} FROM "{table}" ORDER BY rowid').fetchall() == rows, table


def test_a_database_of_the_previous_release_migrates_to_the_latest_and_loses_nothing(tmp_path, monkeypatch):
    """A store made and pruned by 0001 (the last release), a quarantined row in it, migrated through every
    later migration: every row of every table it had is still there, and one replay makes verify pass."""
    from tornstore.projections import health, runner

    from .test_queries import ts

    conn = _compacted_store_of(tmp_path / "old.db", available_migrations()[:1], monkeypatch)
    try:
        conn.execute("INSERT INTO quarantine (observed_at, source_url, reason, body, body_hash) VALUES "
                     "(?, 'https://api.torn.com/v2/user/bars', 'URL names no player', '{\"bars\": {}}', 'h')",
                     (ts(2025, 12, 1),))                      # as the last release quarantined own-key URLs
        assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 1
        _, before = _contents(conn)
        monkeypatch.undo()
        applied = migrate(conn, now=ts(2025, 12, 16))
        assert applied == [m.version for m in available_migrations()[1:]]
        _assert_rows_kept(conn, before, skip=("schema_version", "sqlite_sequence"))
        assert conn.execute("SELECT key_fp, needs_owner FROM quarantine").fetchall() == [(None, 0)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runner.replay(conn)                      # pruned before 0004: one replay takes the log as baseline
        report = health.verify(conn)
        assert report["ok"], report
    finally:
        close_sync(conn)


def test_a_database_made_before_0006_migrates_in_place_and_loses_nothing(tmp_path, monkeypatch):
    """A store made, compacted and pruned with the schema of 0001-0005 (the projections' state kept at the
    horizon) migrates to the latest: every row of every table is still there, the new column comes empty,
    and verify passes without a replay (the projections' newest observation is read from the log once)."""
    from tornstore.projections import health

    from .test_queries import ts

    conn = _compacted_store_of(tmp_path / "0005.db", [m for m in available_migrations() if m.version < 6],
                               monkeypatch)
    try:
        _, before = _contents(conn)
        assert sum(len(rows) for rows in before.values()) > 100
        monkeypatch.undo()
        applied = migrate(conn, now=ts(2025, 12, 16))
        assert applied and min(applied) == 6
        _assert_rows_kept(conn, before, skip=("schema_version",))
        assert {r[0] for r in conn.execute("SELECT newest_observed_at FROM projection_checkpoints")} == {None}
        report = health.verify(conn)
        assert report["ok"], report
        # stat_history (0007) is new: behind the log, compared for what it has applied, not yet filled.
        assert set(report["replay"]["behind"]) == {"stat_history"}
        assert conn.execute("SELECT COUNT(*) FROM stat_history").fetchone()[0] == 0
    finally:
        close_sync(conn)
    # The next ingest fills it from the retained log; then verify finds nothing behind.
    from tornstore.projections.store import ingest_files
    later = tmp_path / "later.ndjson"
    later.write_text(json.dumps({"url": "https://api.torn.com/user/1?selections=battlestats",
                                 "observed_at": ts(2025, 12, 5), "body": {
                                     "strength": 9000, "defense": 500, "speed": 500, "dexterity": 500,
                                     "total": 10500}}) + "\n")
    assert ingest_files(str(tmp_path / "0005.db"), [str(later)]).appended == 1
    conn = connect_sync(tmp_path / "0005.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM stat_history WHERE recorded_at < ?",
                            (ts(2025, 12, 5),)).fetchone()[0] > 0            # from events before the upgrade
        report = health.verify(conn)
        assert report["ok"] and "behind" not in report["replay"], report
    finally:
        close_sync(conn)

"""The readable views of migration 0002 (`<table>_view` for every history and summary table), read the way
Datasette or the sqlite3 shell reads them: a plain read-only connection to a database built by the real
pipeline (capture -> ingest with inline projections -> compaction).

Each view is its table's row, column for column, with the name of each id and the UTC form of each time
beside it; names and times are checked against the base tables and Python's own clock arithmetic.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.projections.compactor import compact
from tornstore.projections.runner import replay
from tornstore.projections.store import ingest_files

from .test_queries import pipeline_capture, ts

# For each view: the readable columns it adds, each placed right after the column it reads.
#   name column: (id column, table the name comes from, that table's key, the table's column shown)
#   time column: (time column, "utc" for '2025-11-05T00:00:00Z' or "date" for '2025-11-05')
NAMES = {
    "player_stats_history_view": {"player_name": ("player_id", "players", "player_id", "name")},
    "faction_history_view": {"faction_name": ("faction_id", "factions", "faction_id", "name")},
    "war_status_history_view": {
        "territory_sector": ("territory_id", "territories", "territory_id", "sector"),
        "attacking_faction_name": ("attacking_faction_id", "factions", "faction_id", "name"),
        "defending_faction_name": ("defending_faction_id", "factions", "faction_id", "name"),
        "winner_faction_name": ("winner_faction_id", "factions", "faction_id", "name")},
    "territory_ownership_history_view": {"faction_name": ("faction_id", "factions", "faction_id", "name")},
    "player_stats_summary_view": {"player_name": ("player_id", "players", "player_id", "name")},
    "faction_summary_view": {"faction_name": ("faction_id", "factions", "faction_id", "name")},
    "war_summary_view": {
        "territory_sector": ("territory_id", "territories", "territory_id", "sector"),
        "attacking_faction_name": ("attacking_faction_id", "factions", "faction_id", "name"),
        "defending_faction_name": ("defending_faction_id", "factions", "faction_id", "name"),
        "winner_faction_name": ("winner_faction_id", "factions", "faction_id", "name")},
    "territory_ownership_summary_view": {
        "territory_sector": ("territory_id", "territories", "territory_id", "sector"),
        "faction_name_start": ("faction_id_start", "factions", "faction_id", "name"),
        "faction_name_end": ("faction_id_end", "factions", "faction_id", "name")},
}
_SUMMARY_TIMES = {"period_start_date": ("period_start", "date"), "period_end_date": ("period_end", "date"),
                  "created_utc": ("created_at", "utc")}
TIMES = {
    "player_stats_history_view": {"timestamp_utc": ("timestamp", "utc")},
    "faction_history_view": {"timestamp_utc": ("timestamp", "utc")},
    "war_status_history_view": {"started_utc": ("started_at", "utc"), "ends_utc": ("ends_at", "utc"),
                                "recorded_utc": ("recorded_at", "utc")},
    "territory_ownership_history_view": {"recorded_utc": ("recorded_at", "utc")},
    "player_stats_summary_view": _SUMMARY_TIMES,
    "faction_summary_view": _SUMMARY_TIMES,
    "war_summary_view": _SUMMARY_TIMES,
    "territory_ownership_summary_view": _SUMMARY_TIMES,
}
VIEWS = sorted(NAMES)
AFTER = {view: {**{c: spec[0] for c, spec in NAMES[view].items()}, **{c: spec[0] for c, spec in TIMES[view].items()}}
         for view in VIEWS}

NOW = ts(2025, 12, 15)   # the compaction's clock: Aug-Nov folded, Aug and Sep pruned


def base_table(view: str) -> str:
    return view.removesuffix("_view")


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def as_dicts(conn: sqlite3.Connection, sql: str, args=()) -> list[dict]:
    cur = conn.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def readable(seconds: int | None, kind: str) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.date().isoformat() if kind == "date" else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_only(path: Path) -> sqlite3.Connection:
    """What Datasette or `sqlite3 -readonly` opens: no tornstore PRAGMAs, foreign keys off."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _wars_line(faction_id: int, at: int, war: dict) -> dict:
    return {"url": f"https://api.torn.com/v2/faction/{faction_id}/wars", "observed_at": at,
            "body": {"pacts": [], "wars": {"ranked": None, "raids": [], "territory": [war]}}}


def views_capture(path: Path) -> Path:
    """test_queries' four months of polls, plus two territory wars: 901 on AAC (declared in October, over
    when it leaves Alpha's list in November) and 902 on XYZ, a territory no poll ever returns, first seen
    in Beta's list already won. Lines in time order, as a collector writes them."""
    lines = [json.loads(line) for line in pipeline_capture(path).read_text().splitlines()]
    lines.append(_wars_line(9420, ts(2025, 10, 12), {
        "war_id": 901, "territory": "AAC", "start": ts(2025, 10, 11), "end": 0, "target": 1000, "winner": None,
        "factions": [{"id": 9420, "name": "Alpha", "score": 300, "chain": 0, "is_aggressor": True},
                     {"id": 100, "name": "Beta", "score": 0, "chain": 0, "is_aggressor": False}]}))
    lines.append(_wars_line(100, ts(2025, 11, 8), {
        "war_id": 902, "territory": "XYZ", "start": ts(2025, 11, 1), "end": ts(2025, 11, 3), "target": 500,
        "winner": 100,
        "factions": [{"id": 100, "name": "Beta", "score": 500, "chain": 0, "is_aggressor": True},
                     {"id": 777, "name": "Gamma", "score": 0, "chain": 0, "is_aggressor": False}]}))
    lines.sort(key=lambda line: line["observed_at"])
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.fixture(scope="module")
def views_db(tmp_path_factory) -> Path:
    """Built once for the module; tests that write work on a copy."""
    tmp = tmp_path_factory.mktemp("views")
    db = tmp / "torn.db"
    report = ingest_files(str(db), [str(views_capture(tmp / "capture.ndjson"))])
    assert report.rejected == [] and report.appended > 0
    conn = connect_sync(db)
    try:
        compaction = compact(conn, NOW, backup=False)
        assert [p.month for p in compaction.pruned] == ["2025-08", "2025-09"]
        assert conn.execute("SELECT COUNT(*) FROM projection_errors").fetchone()[0] == 0
    finally:
        close_sync(conn)
    return db


@pytest.fixture
def ro(views_db: Path):
    conn = read_only(views_db)
    yield conn
    conn.close()


# ------------------------------------------------------------------------------------------------ shape
def test_every_history_and_summary_table_has_its_view(ro):
    tables = {r[0] for r in ro.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' "
        "AND (name LIKE '%\\_history' ESCAPE '\\' OR name LIKE '%\\_summary' ESCAPE '\\')")}
    views = {r[0] for r in ro.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert len(tables) == 10 and {f"{t}_view" for t in tables} == views == set(VIEWS) | set(STAT_VIEWS)


@pytest.mark.parametrize("view", VIEWS)
def test_a_view_is_its_table_row_for_row_with_readable_columns_beside_their_sources(ro, view):
    table = base_table(view)
    base = columns(ro, table)
    expected = []
    for col in base:
        expected.append(col)
        expected += [added for added, source in AFTER[view].items() if source == col]
    assert columns(ro, view) == expected
    rows = ro.execute(f"SELECT {', '.join(base)} FROM {view} ORDER BY id").fetchall()
    assert rows and rows == ro.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


@pytest.mark.parametrize("view", VIEWS)
def test_names_and_times_agree_with_the_base_tables(ro, view):
    lookups = {}
    for name_col, (_id_col, table, key, shown) in NAMES[view].items():
        lookups[name_col] = dict(ro.execute(f"SELECT {key}, {shown} FROM {table}"))
    rows = as_dicts(ro, f"SELECT * FROM {view} ORDER BY id")
    assert rows
    for row in rows:
        for name_col, (id_col, *_rest) in NAMES[view].items():
            assert row[name_col] == lookups[name_col].get(row[id_col]), (row["id"], name_col)
        for time_col, (source, kind) in TIMES[view].items():
            assert row[time_col] == readable(row[source], kind), (row["id"], time_col)
    # The world exercises every readable column: each one shows a value somewhere.
    for col in AFTER[view]:
        assert any(row[col] is not None for row in rows), col


def test_period_dates_are_the_months_first_and_last_days(ro):
    for view in ("player_stats_summary_view", "faction_summary_view", "war_summary_view",
                 "territory_ownership_summary_view"):
        months = ro.execute(f"SELECT DISTINCT period_start_date, period_end_date FROM {view} "
                            "ORDER BY period_start").fetchall()
        assert months and set(months) <= {("2025-08-01", "2025-08-31"), ("2025-09-01", "2025-09-30"),
                                          ("2025-10-01", "2025-10-31"), ("2025-11-01", "2025-11-30")}, view


# Migration 0007's views name a player or a faction by the row's entity_type (tested here, on their own).
STAT_VIEWS = ("stat_history_view", "stat_summary_view")


def test_the_stat_views_name_players_and_factions_and_give_utc_times(tmp_path):
    from tornstore.eventstore.migrate import migrate
    conn = connect_sync(tmp_path / "stats.db")
    try:
        migrate(conn)
        t, start, end = ts(2025, 11, 5), ts(2025, 11, 1), ts(2025, 12, 1) - 1
        conn.execute("INSERT INTO players (player_id, name, created_at, last_updated) VALUES (7, 'Seven', 0, 0)")
        conn.execute("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (7, 'Lucky', 0, 0)")
        conn.executemany("INSERT INTO stat_history (entity_type, entity_id, stat, recorded_at, value) "
                         "VALUES (?, 7, ?, ?, ?)", [("player", "xantaken", t, 12), ("faction", "attackswon", t, 90),
                                                    ("player", "refills", t + 1, 3)])
        summary = ("INSERT INTO stat_summary (entity_type, entity_id, stat, period_start, period_end, value_start, "
                   "value_end, change, value_min, value_max, record_count) VALUES ('player', ?, 'xantaken', ?, ?, "
                   "?, ?, ?, ?, ?, ?)")
        conn.execute(summary, (7, start, end, 10, 12, 2, 10, 12, 1))
        conn.execute(summary, (8, start, end, 1, 1, 0, 1, 1, 0))   # a player the store does not know
        utc = [readable(t, "utc"), readable(t, "utc"), readable(t + 1, "utc")]
        assert conn.execute("SELECT entity_type, entity_name, stat, recorded_at_utc, value FROM stat_history_view "
                            "ORDER BY id").fetchall() == [
            ("player", "Seven", "xantaken", utc[0], 12), ("faction", "Lucky", "attackswon", utc[1], 90),
            ("player", "Seven", "refills", utc[2], 3)]
        assert conn.execute("SELECT entity_id, entity_name, period_start_date, period_end_date, change "
                            "FROM stat_summary_view ORDER BY id").fetchall() == [
            (7, "Seven", "2025-11-01", "2025-11-30", 2), (8, None, "2025-11-01", "2025-11-30", 0)]
        for view in STAT_VIEWS:   # every column of its table, in its order
            table = view.removesuffix("_view")
            assert [c for c in columns(conn, view) if c in columns(conn, table)] == columns(conn, table)
    finally:
        close_sync(conn)


# ------------------------------------------------------------------------------------------------ unknown ids
def test_a_war_on_a_territory_never_polled_still_shows(ro):
    """Why 0002 adds no foreign key to `territories`: the wars projection writes war 902 on XYZ, which no
    territory poll returned and which the territories projection therefore never added. The LEFT JOIN
    keeps the war in both views, with its factions named and no sector."""
    assert ro.execute("SELECT 1 FROM territories WHERE territory_id = 'XYZ'").fetchone() is None
    history = as_dicts(ro, "SELECT * FROM war_status_history_view WHERE war_id = 902")
    summary = as_dicts(ro, "SELECT * FROM war_summary_view WHERE war_id = 902")
    assert [(r["territory_id"], r["territory_sector"], r["attacking_faction_name"], r["defending_faction_name"],
             r["winner_faction_name"], r["status"], r["ends_utc"]) for r in history] == [
        ("XYZ", None, "Beta", "Gamma", "Beta", "completed", "2025-11-03T00:00:00Z")]
    assert [(r["territory_id"], r["territory_sector"], r["period_start_date"], r["winner_faction_name"])
            for r in summary] == [("XYZ", None, "2025-11-01", "Beta")]
    # The territory war that AAC did see shows its sector.
    sectors = ro.execute("SELECT DISTINCT territory_sector FROM war_status_history_view WHERE war_id = 901")
    assert sectors.fetchall() == [("6",)]


ORPHANS = "SELECT DISTINCT territory_id FROM {} WHERE territory_id NOT IN (SELECT territory_id FROM territories)"


def test_only_war_rows_name_territories_missing_from_territories_inline_and_after_replay(views_db, tmp_path):
    """The facts behind 0002's foreign-key decision, through ingest + compaction and again after a full
    replay: territory ownership rows always have their territory (a key would only restate it); war rows
    may not (a key would refuse them)."""
    copy = tmp_path / "replayed.db"
    shutil.copy(views_db, copy)
    conn = connect_sync(copy)
    try:
        replay(conn)
    finally:
        close_sync(conn)
    for db in (views_db, copy):
        conn = read_only(db)
        try:
            assert conn.execute("SELECT COUNT(*) FROM territory_ownership_history").fetchone()[0] > 0
            for table in ("territory_ownership_history", "territory_ownership_summary"):
                assert conn.execute(ORPHANS.format(table)).fetchall() == [], (db.name, table)
            for table in ("war_status_history", "war_summary"):
                assert conn.execute(ORPHANS.format(table)).fetchall() == [("XYZ",)], (db.name, table)
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        finally:
            conn.close()


@pytest.mark.sqlite_only("a sqlite3 shell keeps foreign keys off; PostgreSQL always enforces them")
def test_rows_whose_ids_name_nothing_still_show(conn, db_path):
    """Rows added by hand in a shell (sqlite3 keeps foreign keys off unless asked) with ids nobody knows:
    every view still lists them, names NULL, times readable."""
    t = ts(2025, 11, 5, 12)
    october = (ts(2025, 10, 1), ts(2025, 11, 1) - 1)
    shell = sqlite3.connect(db_path)
    try:
        with shell:
            shell.execute("INSERT INTO player_stats_history (player_id, timestamp) VALUES (404, ?)", (t,))
            shell.execute("INSERT INTO faction_history (faction_id, timestamp) VALUES (4040, ?)", (t,))
            shell.execute("INSERT INTO war_status_history (war_id, war_type, territory_id, attacking_faction_id, "
                          "defending_faction_id, winner_faction_id, started_at, ends_at, recorded_at) "
                          "VALUES (1, 'territory', 'QQQ', 4041, 4042, 4041, ?, ?, ?)", (t, t, t))
            shell.execute("INSERT INTO territory_ownership_history (territory_id, faction_id, recorded_at) "
                          "VALUES ('QQQ', 4041, ?)", (t,))
            shell.execute("INSERT INTO player_stats_summary (player_id, period_start, period_end, created_at) "
                          "VALUES (404, ?, ?, ?)", (*october, t))
            shell.execute("INSERT INTO faction_summary (faction_id, period_start, period_end, created_at) "
                          "VALUES (4040, ?, ?, ?)", (*october, t))
            shell.execute("INSERT INTO war_summary (war_id, war_type, territory_id, period_start, period_end, "
                          "attacking_faction_id, defending_faction_id, winner_faction_id, created_at) "
                          "VALUES (1, 'territory', 'QQQ', ?, ?, 4041, 4042, 4041, ?)", (*october, t))
            shell.execute("INSERT INTO territory_ownership_summary (territory_id, period_start, period_end, "
                          "faction_id_start, faction_id_end, created_at) VALUES ('QQQ', ?, ?, 4041, 4042, ?)",
                          (*october, t))
        for view in VIEWS:
            rows = as_dicts(shell, f"SELECT * FROM {view}")
            assert len(rows) == 1, view
            row = rows[0]
            for name, (source, *_rest) in NAMES[view].items():
                assert row[source] is not None and row[name] is None, (view, name)
            for time_col, (source, kind) in TIMES[view].items():
                assert row[time_col] == {"utc": "2025-11-05T12:00:00Z", "date": readable(row[source], "date")}[kind]
            if "period_end_date" in row:
                assert (row["period_start_date"], row["period_end_date"]) == ("2025-10-01", "2025-10-31"), view
    finally:
        shell.close()


# ------------------------------------------------------------------------------------------------ snapshot
SNAPSHOT_EXTRA = {"war_status_history_view": ("war_id", "status"), "war_summary_view": ("war_id",)}


def test_newest_rows_of_each_view(ro, snapshot):
    """The newest two rows of each view: the id, each readable column and what it was read from."""
    shown = {}
    for view in VIEWS:
        keep = {"id", *SNAPSHOT_EXTRA.get(view, ()), *AFTER[view], *AFTER[view].values()}
        total = ro.execute(f"SELECT COUNT(*) FROM {view}").fetchone()[0]
        rows = as_dicts(ro, f"SELECT * FROM (SELECT * FROM {view} ORDER BY id DESC LIMIT 2) ORDER BY id")
        shown[f"{view} ({total} rows)"] = [{k: v for k, v in row.items() if k in keep} for row in rows]
    assert shown == snapshot

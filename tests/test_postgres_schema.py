"""The PostgreSQL migrations (eventstore/postgres/NNNN_*.sql) against the SQLite ones (migrations/): the same
versions and names, and after each version the same tables, views, columns (names, order, types, NOT NULL,
defaults), keys, unique constraints, foreign keys, checks and indexes; every readable view gives the same rows.

Nothing here lists the schema: each side is read back from a database its migrations built (SQLite: PRAGMAs and
sqlite_master; PostgreSQL: information_schema and the catalogs) and the two are compared.

Against the real server at 127.0.0.1:5432 (or TORNSTORE_TEST_POSTGRES): each test makes its own database and
drops it afterwards; where no server is reachable the tests skip and say so (they fail instead under
TORNSTORE_REQUIRE_POSTGRES=1).
"""
from __future__ import annotations

import os
import re
import sqlite3
from decimal import Decimal

import pytest

REQUIRED = os.environ.get("TORNSTORE_REQUIRE_POSTGRES") == "1"
if REQUIRED:
    import psycopg
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'tornstore[postgresql]')")


from tornstore.eventstore.db import connect_sync  # noqa: E402
from tornstore.eventstore.migrate import available_migrations, migrate  # noqa: E402

PG_PACKAGE = "tornstore.eventstore.postgres"


@pytest.fixture
def pg_url(postgres_url):
    """The test's own new database on the server (conftest.postgres_url), dropped after the test."""
    return postgres_url



@pytest.fixture
def pg(pg_url):
    conn = psycopg.connect(pg_url, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def pg_migrate(conn, first: int = 1, last: int | None = None) -> None:
    """The PostgreSQL migration files first..last, each whole, in version order (as the runner runs them)."""
    for m in available_migrations(PG_PACKAGE):
        if first <= m.version and (last is None or m.version <= last):
            conn.execute(m.sql)


# ------------------------------------------------------------------------------------------ reading a schema

def _norm(text: str | None) -> str | None:
    """An expression without case, quotes, parentheses or blanks: `(needs_owner = 1)` ~ `needs_owner = 1`."""
    return None if text is None else re.sub(r'[\s()"]', "", text).lower()


def _check_bodies(create_sql: str) -> list[str]:
    """The expression of every CHECK (...) in a CREATE TABLE statement, parentheses balanced."""
    bodies = []
    for match in re.finditer(r"\bCHECK\s*\(", create_sql, re.IGNORECASE):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(create_sql[i], 0)
            i += 1
        bodies.append(create_sql[match.end():i - 1])
    return bodies


def sqlite_schema(conn: sqlite3.Connection) -> dict:
    rels = {name: (kind, sql) for name, kind, sql in conn.execute(
        "SELECT name, type, sql FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'")}
    out: dict = {"relations": {n: k for n, (k, _) in rels.items()}, "columns": {}, "types": {}, "notnull": {},
                 "defaults": {}, "pk": {}, "unique": {}, "fk": {}, "checks": {}, "indexes": {}}
    for name, (kind, sql) in rels.items():
        info = conn.execute(f'PRAGMA table_info("{name}")').fetchall()
        out["columns"][name] = [r[1] for r in info]
        out["types"][name] = {r[1]: r[2].upper() for r in info}
        if kind != "table":
            continue
        cols = [r[1] for r in info]
        out["notnull"][name] = {r[1] for r in info if r[3] or r[5]}    # a key column cannot be NULL on PostgreSQL
        out["defaults"][name] = {r[1]: r[4] for r in info if r[4] is not None}
        out["pk"][name] = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        uniques = set()
        for _, iname, _unique, origin, _partial in conn.execute(f'PRAGMA index_list("{name}")'):
            if origin == "u":
                uniques.add(tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{iname}")')))
        out["unique"][name] = uniques
        fks: dict = {}
        for row in conn.execute(f'PRAGMA foreign_key_list("{name}")'):
            fks.setdefault(row[0], (row[2], [], []))
            fks[row[0]][1].append(row[3])
            fks[row[0]][2].append(row[4])
        out["fk"][name] = sorted((tuple(f), t, tuple(k)) for t, f, k in fks.values())
        # which columns each CHECK reads (the expressions themselves are spelled differently by each server)
        out["checks"][name] = sorted(
            tuple(sorted(c for c in cols if re.search(rf"\b{c}\b", body))) for body in _check_bodies(sql))
        indexes = {}
        for iname, isql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                (name,)):
            keys = tuple((r[2], bool(r[3])) for r in conn.execute(f'PRAGMA index_xinfo("{iname}")') if r[5])
            unique = bool(re.match(r"\s*CREATE\s+UNIQUE", isql, re.IGNORECASE))
            where = re.search(r"\bWHERE\b(.*)$", isql, re.IGNORECASE | re.DOTALL)
            indexes[iname] = (keys, unique, _norm(where[1]) if where else None)
        out["indexes"][name] = indexes
    return out


def pg_schema(conn) -> dict:
    out: dict = {"columns": {}, "types": {}, "notnull": {}, "defaults": {}, "identity": set(),
                 "pk": {}, "unique": {}, "fk": {}, "checks": {}, "indexes": {}}
    # (a partitioned table's monthly partitions are part of it, not relations of their own)
    rels = {n: ("table" if t == "BASE TABLE" else "view") for n, t in conn.execute(
        "SELECT t.table_name, t.table_type FROM information_schema.tables t "
        "JOIN pg_class c ON c.oid = ('public.' || quote_ident(t.table_name))::regclass "
        "WHERE t.table_schema = 'public' AND NOT c.relispartition")}
    out["partitioned"] = {n: conn.execute(
        "SELECT a.attname FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid "
        "AND a.attnum = p.partattrs[0] WHERE p.partrelid = %s::regclass", (f"public.{n}",)).fetchone()[0]
        for n, in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'p' "
                               "AND relnamespace = 'public'::regnamespace")}
    out["relations"] = rels
    for name, kind in rels.items():
        info = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position", (name,)).fetchall()
        out["columns"][name] = [r[0] for r in info]
        out["types"][name] = {r[0]: r[1] for r in info}
        if kind != "table":
            continue
        out["notnull"][name] = {r[0] for r in info if r[2] == "NO"}
        out["defaults"][name] = {r[0]: r[3] for r in info if r[3] is not None}
        out["identity"] |= {(name, r[0]) for r in info if r[4] == "YES"}
        cons = conn.execute(
            "SELECT c.contype, "
            "       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i) "
            "             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), "
            "       c.confrelid::regclass::text, "
            "       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i) "
            "             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) "
            "FROM pg_constraint c WHERE c.conrelid = %s::regclass", (f"public.{name}",)).fetchall()
        pk = [tuple(cols) for t, cols, _, _ in cons if t == "p"]
        out["pk"][name] = pk[0] if pk else ()
        out["unique"][name] = {tuple(cols) for t, cols, _, _ in cons if t == "u"}
        out["fk"][name] = sorted((tuple(cols), ref, tuple(refcols)) for t, cols, ref, refcols in cons if t == "f")
        out["checks"][name] = sorted(tuple(sorted(cols)) for t, cols, _, _ in cons if t == "c")
        indexes = {}
        for iname, nkeys, options, unique, pred, oid in conn.execute(
                "SELECT c.relname, i.indnkeyatts, i.indoption::int2[], i.indisunique, "
                "       pg_get_expr(i.indpred, i.indrelid), i.indexrelid "
                "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = %s::regclass "
                "  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",  # *_pkey, *_key
                (f"public.{name}",)):
            keys = tuple((conn.execute("SELECT pg_get_indexdef(%s, %s, true)", (oid, k + 1)).fetchone()[0].strip('"'),
                          bool(options[k] & 1)) for k in range(nkeys))
            indexes[iname] = (keys, unique, _norm(pred))
        out["indexes"][name] = indexes
    return out


# What each SQLite declared type must be on PostgreSQL.
TYPES = {"INTEGER": {"bigint", "integer"}, "REAL": {"double precision"}, "TEXT": {"text"}, "NUMERIC": {"numeric"},
         "BLOB": {"bytea"}}


def assert_same_shape(lite: dict, post: dict) -> None:
    assert post["relations"] == lite["relations"]
    for name, kind in lite["relations"].items():
        assert post["columns"][name] == lite["columns"][name], name
        for col, decl in lite["types"][name].items():
            if decl:    # a view's computed column has no declared type in SQLite
                assert post["types"][name][col] in TYPES[decl], (name, col, decl, post["types"][name][col])
        if kind != "table":
            continue
        parted = post["partitioned"].get(name)
        for key in ("notnull", "pk", "unique", "fk", "checks", "indexes"):
            want = lite[key][name]
            if key == "pk" and parted:   # a partitioned table's key holds its partition column
                want = (*want, parted)
            assert post[key][name] == want, (key, name)
        got_defaults = dict(post["defaults"][name])
        if parted:   # its id numbered by a sequence the column owns (no identity on a partitioned table in 15)
            assert got_defaults.pop("id") == f"nextval('{name}_id_seq'::regclass)", name
        assert got_defaults.keys() == lite["defaults"][name].keys(), name
        for col, default in lite["defaults"][name].items():
            got = post["defaults"][name][col]
            if "strftime('%s', 'now')" in default:   # the insert clock, whole Unix seconds
                assert "now()" in got and "floor" in got and got.endswith("::bigint"), (name, col, got)
            else:
                assert re.sub(r"::(text|bigint|integer)$", "", got) == default, (name, col, got, default)
    # The ids the database hands out (AUTOINCREMENT, and streams' rowid, which ingest lets SQLite assign) are
    # identities; the natural keys (player, faction, territory ids, the *_at_horizon copies' ids) are not.
    expected = {(n, lite["pk"][n][0]) for n, kind in lite["relations"].items()
                if kind == "table" and "AUTOINCREMENT" in lite["sql"][n].upper()}
    if "streams" in lite["relations"]:
        expected.add(("streams", "stream_id"))
    assert post["identity"] == {(n, c) for n, c in expected if n not in post["partitioned"]}


def sqlite_full_schema(conn: sqlite3.Connection) -> dict:
    out = sqlite_schema(conn)
    out["sql"] = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    return out


# ------------------------------------------------------------------------------------------ the tests

def test_same_versions_and_names():
    lite = [(m.version, m.description) for m in available_migrations()]
    post = [(m.version, m.description) for m in available_migrations(PG_PACKAGE)]
    assert post == lite and len(lite) >= 7


def test_same_schema_as_sqlite(tmp_path, pg):
    conn = connect_sync(tmp_path / "x.db")
    try:
        migrate(conn)
        lite = sqlite_full_schema(conn)
    finally:
        conn.close()
    pg_migrate(pg)
    post = pg_schema(pg)
    assert "schema_version" in post["relations"] and len(post["relations"]) == len(lite["relations"])
    assert post["types"]["schema_version"] == {"version": "integer", "applied_at": "bigint",
                                               "description": "text", "checksum": "text"}
    # (migration 0008: the history tables are partitioned by month on their time column)
    assert post["partitioned"] == {"player_stats_history": "timestamp", "faction_history": "timestamp",
                                   "war_status_history": "recorded_at", "territory_ownership_history": "recorded_at",
                                   "stat_history": "recorded_at"}
    assert_same_shape(lite, post)


def test_same_schema_at_every_version(tmp_path, pg):
    """A database at version N has the same shape on both backends: no migration folded into an earlier one."""
    conn = sqlite3.connect(tmp_path / "steps.db", isolation_level=None)
    try:
        for m in available_migrations():
            conn.executescript(m.sql)
            pg_migrate(pg, first=m.version, last=m.version)
            try:
                assert_same_shape(sqlite_full_schema(conn), pg_schema(pg))
            except AssertionError as exc:
                raise AssertionError(f"after migration {m.version:04d}: {exc}") from exc
    finally:
        conn.close()


def test_state_at_horizon_migration_keeps_a_pruned_horizon(pg):
    """0004's INSERT ... SELECT: a database pruned before it gets its empty snapshot row, as on SQLite."""
    pg_migrate(pg, last=3)
    pg.execute("INSERT INTO store_meta (key, value) VALUES ('prune_horizon', 1727740800), ('other', 5)")
    pg_migrate(pg, first=4)
    assert pg.execute("SELECT horizon, prefix_position, sealed_position, made_at FROM projection_snapshots"
                      ).fetchall() == [(1727740800, 0, 0, None)]


# One representative set of rows, inserted the same way on both backends. Times cover a month's first and last
# second, a leap day, a time before 1970-01-02 and NULLs; names are looked up in the current-state tables.
T = 1730764800              # 2024-11-05T00:00:00Z
NOV_START, NOV_END = 1730419200, 1733011199
ROWS: list[tuple[str, dict]] = [
    ("factions", {"faction_id": 9420, "name": "Dark Lords", "tag": "DL", "respect": 5_000_000_000, "is_stub": 0,
                  "created_at": T, "last_updated": T}),
    ("factions", {"faction_id": 11, "name": "Faction 11", "is_stub": 1, "created_at": T, "last_updated": T}),
    ("players", {"player_id": 2001, "name": "Alice", "level": 50, "faction_id": 9420, "created_at": T,
                 "last_updated": T}),
    ("territories", {"territory_id": "AAC", "faction_id": 9420, "sector": "5", "coordinates": "502.67,130.1",
                     "coordinate_x": 502.67, "coordinate_y": 130.1, "racket_level": 2, "war_status": "none",
                     "last_updated": T}),
    ("player_stats_history", {"id": 1, "player_id": 2001, "timestamp": T, "strength": 3_000_000_000,
                              "defense": 1, "speed": 2, "dexterity": 3, "total_stats": 3_000_000_006, "level": 50,
                              "life_maximum": 7500, "networth": -12, "event_position": 7}),
    ("player_stats_history", {"id": 2, "player_id": 2001, "timestamp": 1709164800}),   # 2024-02-29
    ("faction_history", {"id": 1, "faction_id": 9420, "timestamp": T + 86399, "respect": 5_000_000_000,
                         "member_count": 100, "best_chain": 2500, "event_position": 8}),
    ("faction_history", {"id": 2, "faction_id": 11, "timestamp": 59}),
    ("war_status_history", {"id": 1, "war_id": 77, "war_type": "territory", "territory_id": "AAC",
                            "attacking_faction_id": 11, "defending_faction_id": 9420, "attacking_score": 10,
                            "defending_score": 20, "required_score": 3000, "status": "completed",
                            "started_at": T - 3600, "ends_at": T, "winner_faction_id": 9420, "recorded_at": T,
                            "event_position": 9}),
    ("war_status_history", {"id": 2, "war_id": 78, "war_type": "ranked", "status": "ongoing", "started_at": T,
                            "recorded_at": T + 1}),
    ("war_status_history", {"id": 3, "war_id": 79, "war_type": "territory", "territory_id": "ZZZ",  # never polled
                            "recorded_at": T + 2}),
    ("territory_ownership_history", {"id": 1, "territory_id": "AAC", "faction_id": 9420, "sector": "5",
                                     "coordinates": "502.67,130.1", "coordinate_x": 502.67, "coordinate_y": 130.1,
                                     "racket_level": 2, "racket_type": "drugs", "war_status": "defending",
                                     "recorded_at": T, "event_position": 10}),
    ("territory_ownership_history", {"id": 2, "territory_id": "AAC", "recorded_at": T + 5}),
    ("stat_history", {"id": 1, "entity_type": "player", "entity_id": 2001, "stat": "xantaken", "recorded_at": T,
                      "value": 12_345_678_901, "event_position": 11}),
    ("stat_history", {"id": 2, "entity_type": "faction", "entity_id": 9420, "stat": "respect", "recorded_at": T,
                      "value": 1.5}),
    ("stat_history", {"id": 3, "entity_type": "player", "entity_id": 9420, "stat": "refills",  # a player unknown
                      "recorded_at": T, "value": 0}),
    ("player_stats_summary", {"id": 1, "player_id": 2001, "period_start": NOV_START, "period_end": NOV_END,
                              "strength_start": 1, "strength_end": 3_000_000_000, "strength_change": 2_999_999_999,
                              "record_count": 2, "created_at": NOV_END + 1}),
    ("faction_summary", {"id": 1, "faction_id": 9420, "period_start": NOV_START, "period_end": NOV_END,
                         "respect_start": 1, "respect_end": 2, "respect_change": 1, "record_count": 1,
                         "created_at": NOV_END + 1}),
    ("war_summary", {"id": 1, "war_id": 77, "war_type": "territory", "territory_id": "AAC",
                     "period_start": NOV_START, "period_end": NOV_END, "attacking_faction_id": 11,
                     "defending_faction_id": 9420, "final_attacking_score": 10, "final_defending_score": 20,
                     "winner_faction_id": 9420, "duration_seconds": 3600, "record_count": 2,
                     "created_at": NOV_END + 1}),
    ("war_summary", {"id": 2, "war_id": 78, "war_type": "ranked", "period_start": 1706745600,
                     "period_end": 1709251199, "created_at": 1709251200}),   # February 2024: ends on the 29th
    ("territory_ownership_summary", {"id": 1, "territory_id": "AAC", "period_start": NOV_START,
                                     "period_end": NOV_END, "faction_id_start": 11, "faction_id_end": 9420,
                                     "ownership_changes": 1, "days_owned": 25, "record_count": 2,
                                     "created_at": NOV_END + 1}),
    ("stat_summary", {"id": 1, "entity_type": "faction", "entity_id": 9420, "stat": "respect",
                      "period_start": NOV_START, "period_end": NOV_END, "value_start": 1, "value_end": 2.5,
                      "change": 1.5, "value_min": 1, "value_max": 2.5, "record_count": 2, "created_at": NOV_END}),
    ("stat_summary", {"id": 2, "entity_type": "player", "entity_id": 2001, "stat": "xantaken",
                      "period_start": NOV_START, "period_end": NOV_END, "value_start": 10, "value_end": 10,
                      "change": 0, "record_count": 0, "created_at": NOV_END}),
]


def _plain(value):
    """NUMERIC comes back as int/float from SQLite and as Decimal from psycopg: compare the numbers."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _insert(conn, table: str, row: dict, placeholder: str) -> None:
    conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join([placeholder] * len(row))})",
                 tuple(row.values()))


def test_views_give_the_same_rows(tmp_path, pg):
    conn = connect_sync(tmp_path / "x.db")
    try:
        migrate(conn)
        pg_migrate(pg)
        pg.execute("SET TimeZone = 'America/New_York'")   # the views say UTC whatever the session's zone
        tables_with_rows = set()
        for table, row in ROWS:
            _insert(conn, table, row, "?")
            _insert(pg, table, row, "%s")
            tables_with_rows.add(table)
        views = sorted(n for (n, k) in conn.execute("SELECT name, type FROM sqlite_master WHERE type = 'view'"))
        assert views and all(v.endswith("_view") and v[:-5] in tables_with_rows for v in views)
        for view in views:
            lite_cur = conn.execute(f"SELECT * FROM {view} ORDER BY id")
            post_cur = pg.execute(f"SELECT * FROM {view} ORDER BY id")
            assert [d[0] for d in post_cur.description] == [d[0] for d in lite_cur.description], view
            lite_rows = [tuple(_plain(v) for v in r) for r in lite_cur.fetchall()]
            post_rows = [tuple(_plain(v) for v in r) for r in post_cur.fetchall()]
            assert lite_rows, view
            assert post_rows == lite_rows, view
        # a spot check that the formatting is what the views promise, not merely equal on both sides
        assert conn.execute("SELECT timestamp_utc FROM player_stats_history_view WHERE id = 2").fetchone() == (
            "2024-02-29T00:00:00Z",)
        assert pg.execute("SELECT period_start_date, period_end_date FROM war_summary_view WHERE id = 2").fetchone() \
            == ("2024-02-01", "2024-02-29")
    finally:
        conn.close()


def test_insert_clock_defaults_are_whole_seconds_now(pg):
    """The DEFAULTs only people inserting by hand meet: Unix seconds of the insert, truncated like SQLite's."""
    pg_migrate(pg)
    with pg.transaction():   # (one transaction: now() is its start, the same in both statements)
        pg.execute("INSERT INTO factions (faction_id, name) VALUES (1, 'x')")
        created, last, now = pg.execute(
            "SELECT created_at, last_updated, extract(epoch FROM now()) FROM factions").fetchone()
    assert created == last == int(now)
    ident = pg.execute("INSERT INTO gaps (observed_at, source_url, reason) VALUES (1, 'u', 'r') RETURNING id")
    assert ident.fetchone() == (1,)
    pg.execute("INSERT INTO gaps (id, observed_at, source_url, reason) VALUES (50, 1, 'u', 'r')")  # BY DEFAULT

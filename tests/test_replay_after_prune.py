# ruff: noqa: F811 (test functions take the fixtures imported from test_compactor by name)
"""Replay after pruning (invariant 3): the compactor keeps the projections' state at the horizon, so
replay = that state + the retained events = the tables inline projection made, and `verify` passes after
any mix of ingest, compaction (killed or not) and replay.

Everything runs on real stores, each test on a SQLite file and on a PostgreSQL database: the generated
world of test_compactor.py ingested month by month with the compactor at each month boundary, hand-made
months whose values only pruned events carried, real kill -9s of `compact`, and a database pruned by the
compactor before migration 0004.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tornstore.eventstore import migrate as migrate_mod
from tornstore.eventstore.db import close_sync, connect_sync, is_postgres, sequence_value, table_names
from tornstore.eventstore.migrate import available_migrations, current_version, migrate
from tornstore.projections import health, runner
from tornstore.projections.compactor import compact
from tornstore.projections.compactor.periods import Period, parse_time
from tornstore.projections.store import ingest_files

from .test_compactor import (  # noqa: F401 (backend, db_stores, module_stores, stores: fixtures)
    NOW, backend, db_stores, generate, module_stores, personalstats_body, player_body, stores)

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400
BOUNDARIES = [Period(2026, m).start for m in (10, 11, 12)] + [Period(2027, 1).start, NOW]


# ---------------------------------------------------------------------------------------------- helpers
def every_table(db: Path | str) -> dict[str, list]:
    """Every table a user can query (sqlite_sequence too; not the planner's statistics), every column but
    the live ones, each value with its type: equal dumps hold the same bytes for a query to read. On
    PostgreSQL, each table's identity sequence stands for sqlite_sequence."""
    conn = connect_sync(db)
    try:
        names = sorted(n for n in table_names(conn) if not n.startswith("sqlite_stat"))   # not ANALYZE's
        out = {}
        if is_postgres(conn):
            out["(sequences)"] = [(name, sequence_value(conn, name)) for name in names]
        for name in names:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')
                    if r[1] not in runner.LIVE_COLUMNS.get(name, ())]
            quoted = ", ".join(f'"{c}"' for c in cols)
            rows = conn.execute(f'SELECT {quoted} FROM "{name}"').fetchall()
            out[name] = sorted((tuple((type(v).__name__, v) for v in row) for row in rows), key=repr)
        return out
    finally:
        close_sync(conn)


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ingest(db: Path | str, lines: list[dict], now: int) -> None:
    if lines:
        with tempfile.TemporaryDirectory() as folder:
            report = ingest_files(str(db), [str(write_lines(Path(folder) / "part.ndjson", lines))], now=now)
        assert report.rejected == [] and report.errors == []


def run_compact(db: Path, now: int, **kw):
    conn = connect_sync(db)
    try:
        return compact(conn, now, backup=False, **kw)
    finally:
        close_sync(conn)


def verify(db: Path) -> dict:
    conn = connect_sync(db)
    try:
        return health.verify(conn)
    finally:
        close_sync(conn)


def replayed(db: Path | str, where: Path, stores) -> Path | str:
    """A copy of `db` after `replay`."""
    copy = stores.copy(db, where / "replayed.db")
    conn = connect_sync(copy)
    try:
        runner.replay(conn)
    finally:
        close_sync(conn)
    return copy


def assert_replay_changes_nothing_and_verify_passes(db: Path | str, where: Path, stores) -> None:
    result = verify(db)
    assert result["ok"], result
    before = every_table(db)
    after = every_table(replayed(db, where, stores))
    assert [t for t in before if before[t] != after[t]] == []
    assert after == before


def history_since(db: Path | str, table: str, time: str, since: int, cols: str = "*") -> list[tuple]:
    conn = connect_sync(db)
    try:
        return conn.execute(f"SELECT {cols} FROM {table} WHERE {time} >= ? ORDER BY id", (since,)).fetchall()
    finally:
        close_sync(conn)


# ---------------------------------------------------------------------------------------------- the world
# test_compactor's five months (players, factions, ranked and territory wars, territories changing hands),
# ingested month by month, with the compactor at the first second of each month as a scheduled job runs it:
# the state is kept at December 1 (pruning September), January 1 (October) and February 1 (November).
@pytest.fixture(scope="module")
def monthly(module_stores, tmp_path_factory) -> dict[int, Path | str]:
    lines, _ = generate()
    base = tmp_path_factory.mktemp("monthly")
    db = module_stores.new(base / "torn.db")
    after: dict[int, Path | str] = {}
    start = 0
    for boundary in BOUNDARIES:
        ingest(db, [line for line in lines if start <= line["observed_at"] < boundary], boundary)
        start = boundary
        run_compact(db, boundary)
        after[boundary] = module_stores.copy(db, base / str(boundary) / "torn.db")
    return after


@pytest.fixture(scope="module")
def inline(module_stores, tmp_path_factory) -> Path | str:
    """The same world ingested at once and never compacted: what inline projection makes."""
    db = module_stores.new(tmp_path_factory.mktemp("inline") / "torn.db")
    ingest(db, generate()[0], NOW)
    return db


@pytest.mark.parametrize("boundary", BOUNDARIES, ids=[Period.containing(b).label for b in BOUNDARIES])
def test_after_each_monthly_compaction_verify_passes_and_replay_changes_nothing(monthly, boundary, tmp_path,
                                                                                stores):
    assert_replay_changes_nothing_and_verify_passes(monthly[boundary], tmp_path, stores)


def test_the_monthly_world_is_pruned_and_keeps_its_state_at_each_horizon(monthly):
    conn = connect_sync(monthly[NOW])
    try:
        snapshots = conn.execute("SELECT horizon, prefix_position, sealed_position, made_at FROM projection_snapshots "
                                 "ORDER BY horizon").fetchall()
        # Taken at December 1, January 1 and February 1, each at the start of the window (two months back).
        assert [(h, made) for h, _, _, made in snapshots] == list(zip(BOUNDARIES[:3], BOUNDARIES[2:], strict=True))
        assert all(prefix <= sealed for _, prefix, sealed, _ in snapshots)
        assert conn.execute("SELECT value FROM store_meta WHERE key = 'prune_horizon'").fetchone() == (BOUNDARIES[2],)
        horizon = BOUNDARIES[2]
        # Every event of the prefix was observed before the horizon; none after it was deleted.
        prefix = snapshots[-1][1]
        assert conn.execute("SELECT COUNT(*) FROM events WHERE position <= ? AND observed_at >= ?",
                            (prefix, horizon)).fetchone() == (0,)
        # The kept history rows are the rows in force: one per player, faction and territory, all before it.
        for table, (time, keys) in runner.HISTORY_TABLES.items():
            kept = conn.execute(f"SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT DISTINCT {', '.join(keys)} "
                                f"FROM {table}_at_horizon) AS k), MAX({time}) FROM {table}_at_horizon").fetchone()
            assert kept[0] > 0 and kept[0] == kept[1] and kept[2] < horizon, table
        # Every player seen before the horizon (player 5 appears in December).
        assert conn.execute("SELECT player_id FROM players_at_horizon ORDER BY player_id").fetchall() == \
            conn.execute("SELECT player_id FROM players WHERE created_at < ? ORDER BY player_id", (horizon,)).fetchall()
    finally:
        close_sync(conn)


def test_monthly_compaction_keeps_what_inline_projection_made(monthly, inline, tmp_path, stores):
    """The pruned store, and a replay of it, hold exactly the rows of a store that never pruned (its
    history from the horizon on): ids, event positions and sequences included."""
    final = monthly[NOW]
    horizon = BOUNDARIES[2]
    for db in (final, replayed(final, tmp_path / "again", stores)):
        for table, (time, _) in runner.HISTORY_TABLES.items():
            assert history_since(db, table, time, horizon) == history_since(inline, table, time, horizon), table
        full, ours = every_table(inline), every_table(db)
        for table in runner.STATE_TABLES:
            assert ours[table] == full[table], table


def test_late_data_before_and_behind_the_horizon_then_compaction(monthly, tmp_path, stores):
    """Late data into a retained month, behind the horizon, and observed before the next horizon but
    appended after later months (kept outside the snapshot's prefix): verify passes before and after the
    next compaction, and replay changes nothing."""
    db = stores.copy(monthly[NOW], tmp_path / "torn.db")
    _, truth = generate()
    t_dec, t_oct = parse_time("2026-12-30T12:00:00Z"), parse_time("2026-10-15T12:00:00Z")
    late = [
        {"url": "https://api.torn.com/user/1?selections=personalstats", "observed_at": t_dec,
         "body": personalstats_body(dict([v for t, v in truth.players[1] if t < t_dec][-1], networth=123))},
        {"url": "https://api.torn.com/user/2?selections=personalstats", "observed_at": t_oct,
         "body": personalstats_body(dict([v for t, v in truth.players[2] if t < t_oct][-1], networth=456))},
    ]
    ingest(db, late, NOW)
    assert_replay_changes_nothing_and_verify_passes(db, tmp_path / "a", stores)
    # February: a poll of player 3, then a late December poll of player 6 appended after it.
    more = [{"url": "https://api.torn.com/user/3?selections=profile,personalstats", "observed_at": NOW + 2 * DAY,
             "body": player_body(3, dict(truth.players[3][-1][1], level=99), 202)},
            {"url": "https://api.torn.com/user/6?selections=personalstats", "observed_at": t_dec + 60,
             "body": personalstats_body(dict([v for t, v in truth.players[6] if t < t_dec][-1], networth=789))}]
    ingest(db, more, NOW + 5 * DAY)
    report = run_compact(db, Period(2027, 3).start)
    assert [p.month for p in report.pruned] == ["2026-12"]
    conn = connect_sync(db)
    try:
        prefix = conn.execute("SELECT MAX(prefix_position) FROM projection_snapshots").fetchone()[0]
        kept = conn.execute("SELECT COUNT(*) FROM events WHERE observed_at = ? AND position > ?",
                            (t_dec + 60, prefix)).fetchone()
        assert kept == (1,)   # outside the prefix: kept, and applied by replay at its position
    finally:
        close_sync(conn)
    assert_replay_changes_nothing_and_verify_passes(db, tmp_path / "b", stores)


def test_replay_then_compaction_then_replay(monthly, tmp_path, stores):
    """A replay, then more months and compactions: the snapshot taken from replayed tables still agrees."""
    db = replayed(monthly[Period(2026, 12).start], tmp_path / "first", stores)
    lines, _ = generate()
    start = Period(2026, 12).start
    for boundary in BOUNDARIES[3:]:
        ingest(db, [line for line in lines if start <= line["observed_at"] < boundary], boundary)
        start = boundary
        run_compact(db, boundary)
        assert_replay_changes_nothing_and_verify_passes(db, tmp_path / str(boundary), stores)
    assert every_table(db)["war_summary"] == every_table(monthly[NOW])["war_summary"]


# ---------------------------------------------------------------------------------------------- carried values
T0 = parse_time("2026-08-05T12:00:00Z")


def _carried_lines() -> list[dict]:
    """Values set in August or September and never sent again, then used by October's rows:
    * territory AAC's sector, coordinates and racket come from its owners' v2 territory lists; in October
      only the owner changes (/v2/faction/territoryownership), and the list's newest event is November's;
    * player 7's level and life maximum come from profiles; October brings only battle stats, and the
      newest profile is November's;
    * a territory war on BAC is listed (and scored) in September, listed unchanged in October, and gone
      from the list mid-October: it ended then;
    * player 8's level and life maximum never change after August, while its status does (so its
      profile stream has events): no history row may follow August's, pruned or not."""
    racket = {"name": "Arms Dealer II", "level": 2, "description": "d", "created_at": T0, "changed_at": T0,
              "reward": {"type": "Item", "quantity": 200, "id": 222}}

    def territory(fid: int, t: int, level: int) -> dict:
        item = {"id": "AAC", "acquired_at": T0 - DAY, "sector": 6, "size": 4, "density": 2, "slots": 28,
                "respect": 66, "coordinates": {"x": 5480.74, "y": 663.71},
                "racket": dict(racket, name=f"Arms Dealer {'I' * level}", level=level)}
        return {"url": f"https://api.torn.com/v2/faction/{fid}/territory", "observed_at": t,
                "body": {"territory": [item]}}

    def profile(t: int, level: int) -> dict:
        body = player_body(7, {"level": level, "life_maximum": 1708, "networth": 1, "strength": 1, "defense": 1,
                               "speed": 1, "dexterity": 1, "total_stats": 4}, 101)
        del body["personalstats"]
        return {"url": "https://api.torn.com/user/7?selections=profile", "observed_at": t, "body": body}

    def steady(t: int, state: str) -> dict:
        body = player_body(8, {"level": 20, "life_maximum": 2000, "networth": 1, "strength": 1, "defense": 1,
                               "speed": 1, "dexterity": 1, "total_stats": 4}, 101)
        del body["personalstats"]
        body["status"] = dict(body["status"], state=state, description=state)
        return {"url": "https://api.torn.com/user/8?selections=profile", "observed_at": t, "body": body}

    def battlestats(t: int, strength: int) -> dict:
        return {"url": "https://api.torn.com/user/7?selections=battlestats", "observed_at": t,
                "body": {"strength": strength, "defense": 10, "speed": 10, "dexterity": 10,
                         "total": strength + 30}}

    def wars(t: int, listed: bool, score: int = 500) -> dict:
        war = {"territory_war_id": 8001, "assaulting_faction": 303, "defending_faction": 101, "score": score,
               "required_score": 100000, "started": sept + 3600, "ends": sept + 40 * DAY,
               "assaulters": [], "defenders": []}
        return {"url": "https://api.torn.com/torn/?selections=territorywars", "observed_at": t,
                "body": {"territorywars": {"BAC": war} if listed else {}}}

    sept, octo, nov, dec = (Period(2026, m).start for m in (9, 10, 11, 12))
    return sorted([
        territory(101, T0, 1), profile(T0 + 60, 10), battlestats(T0 + 120, 100),
        territory(101, sept + 5 * DAY, 2), profile(sept + 5 * DAY + 60, 11), wars(sept + 2 * DAY, True, 100),
        wars(sept + 6 * DAY, True, 500),
        {"url": "https://api.torn.com/v2/faction/territoryownership", "observed_at": octo + 10 * DAY,
         "body": {"territoryOwnership": [{"id": "AAC", "owned_by": 202, "acquired_at": octo + 10 * DAY - 5}]}},
        battlestats(octo + 11 * DAY, 150), wars(octo + 2 * DAY, True, 500), wars(octo + 15 * DAY, False),
        territory(202, nov + 3 * DAY, 3), profile(nov + 3 * DAY + 60, 12), battlestats(nov + 4 * DAY, 170),
        battlestats(dec + 4 * DAY, 190), profile(dec + 5 * DAY, 13), territory(202, dec + 5 * DAY, 4),
        wars(dec + DAY, False),
        steady(T0 + 300, "Okay"), steady(sept + 9 * DAY, "Hospital"), steady(nov + 9 * DAY, "Okay"),
        steady(dec + 9 * DAY, "Traveling"),
    ], key=lambda line: line["observed_at"])


@pytest.fixture(scope="module")
def carried(module_stores, tmp_path_factory) -> Path | str:
    db = module_stores.new(tmp_path_factory.mktemp("carried") / "torn.db")
    lines = _carried_lines()
    start = 0
    for boundary in [Period(2026, m).start for m in (9, 10, 11, 12)]:
        ingest(db, [line for line in lines if start <= line["observed_at"] < boundary], boundary)
        start = boundary
        run_compact(db, boundary)   # December 1 prunes August and September
    ingest(db, [line for line in lines if line["observed_at"] >= start], Period(2027, 1).start)
    return db


def test_values_only_pruned_events_carried_survive_replay(carried, tmp_path, stores):
    octo = Period(2026, 10).start
    never_pruned = stores.new(tmp_path / "never" / "torn.db")
    ingest(never_pruned, _carried_lines(), Period(2027, 1).start)
    conn = connect_sync(carried)
    try:
        assert conn.execute("SELECT value FROM store_meta WHERE key = 'prune_horizon'").fetchone() == (octo,)
        assert conn.execute("SELECT COUNT(*) FROM events WHERE observed_at < ?", (octo,)).fetchone()[0] < 8
    finally:
        close_sync(conn)
    for db in (carried, replayed(carried, tmp_path, stores)):
        # AAC changes hands in October: its row keeps the sector, coordinates and racket seen in September.
        assert history_since(db, "territory_ownership_history", "recorded_at", octo,
                             "recorded_at, faction_id, sector, coordinates, racket_level")[0] == \
            (octo + 10 * DAY, 202, "6", "5480.74,663.71", 2)
        # Player 7's October battle stats keep the level and life maximum of September's profile.
        assert history_since(db, "player_stats_history", "timestamp", octo,
                             "timestamp, strength, level, life_maximum")[0] == (octo + 11 * DAY, 150, 11, 1708)
        # The war open at the horizon ends when it leaves the list in October.
        assert history_since(db, "war_status_history", "recorded_at", octo,
                             "war_id, recorded_at, attacking_score, status") == \
            [(8001, octo + 15 * DAY, 500, "completed")]
        conn = connect_sync(db)
        try:
            assert conn.execute("SELECT faction_id, sector, last_updated > 0 FROM territories "
                                "WHERE territory_id = 'AAC'").fetchone() == (202, "6", 1)
            assert conn.execute("SELECT level, life_maximum FROM players WHERE player_id = 7").fetchone() == (13, 1708)
            assert conn.execute("SELECT COUNT(*) FROM player_stats_history WHERE player_id = 8").fetchone() == (0,)
        finally:
            close_sync(conn)
        # Inline projection after the prune, and replay, made the rows a store that never pruned has.
        for table, (time, _) in runner.HISTORY_TABLES.items():
            assert history_since(db, table, time, octo) == history_since(never_pruned, table, time, octo), table
        for table in runner.STATE_TABLES:
            assert every_table(db)[table] == every_table(never_pruned)[table], table
    assert_replay_changes_nothing_and_verify_passes(carried, tmp_path / "check", stores)


def test_a_single_projection_replays_alone(carried, tmp_path, stores):
    db = stores.copy(carried, tmp_path / "torn.db")
    before = every_table(db)
    conn = connect_sync(db)
    try:
        conn.execute("DELETE FROM territory_ownership_history")   # a projection gone wrong
        conn.execute("UPDATE players SET level = 1")              # and another one, left alone below
        runner.replay(conn, "territories")
    finally:
        close_sync(conn)
    after = every_table(db)
    assert after["territory_ownership_history"] == before["territory_ownership_history"]
    assert after["territories"] == before["territories"]
    assert {r[2][1] for r in after["players"]} == {1}


# ---------------------------------------------------------------------------------------------- kill -9
_CHILD = ("import sys; from tornstore.eventstore.db import connect_sync; "
          "from tornstore.projections.compactor import compact; conn = connect_sync(sys.argv[1]); "
          "compact(conn, int(sys.argv[2]), batch=int(sys.argv[3]), backup=False); conn.close()")

CRASH_POINTS = ["snapshot:built", "snapshot:before-commit", "snapshot:committed", "prune:batch:1",
                "prune:batch:6", "prune:2026-09:before-seal", "prune:2026-09:sealed", "prune:2026-10:sealed",
                "vacuum:step", "compact:done"]


def _compact_child(db: Path | str, now: int, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_CRASH_AT"}
    if crash_at:
        env["TORNSTORE_CRASH_AT"] = crash_at
    done = subprocess.run([sys.executable, "-c", _CHILD, str(db), str(now), "30"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 86), done.stderr
    return done.returncode


@pytest.fixture(scope="module")
def before_catch_up(module_stores, tmp_path_factory) -> Path | str:
    """The world ingested through December, compacted monthly until November 1 (nothing pruned yet); the
    next run, on January 1, prunes September and October at once."""
    db = module_stores.new(tmp_path_factory.mktemp("catchup") / "torn.db")
    lines, _ = generate()
    start = 0
    for boundary in BOUNDARIES[:2]:
        ingest(db, [line for line in lines if start <= line["observed_at"] < boundary], boundary)
        start = boundary
        run_compact(db, boundary)
    ingest(db, [line for line in lines if start <= line["observed_at"] < BOUNDARIES[3]], BOUNDARIES[3])
    return db


@pytest.fixture(scope="module")
def caught_up(before_catch_up, module_stores, tmp_path_factory) -> dict:
    db = module_stores.copy(before_catch_up, tmp_path_factory.mktemp("caught-up") / "torn.db")
    assert _compact_child(db, BOUNDARIES[3], None) == 0
    return every_table(db)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_killed_compaction_then_verify_replay_and_rerun(before_catch_up, caught_up, point, tmp_path, stores):
    db = stores.copy(before_catch_up, tmp_path / "torn.db")
    assert _compact_child(db, BOUNDARIES[3], point) == 86
    # As the kill left it: verify passes and replay changes nothing.
    assert_replay_changes_nothing_and_verify_passes(db, tmp_path / "killed", stores)
    # A replay in between, then the run again: it ends where an uninterrupted run ends.
    db = replayed(db, tmp_path / "replayed", stores)
    assert _compact_child(db, BOUNDARIES[3], None) == 0
    assert every_table(db) == caught_up
    assert_replay_changes_nothing_and_verify_passes(db, tmp_path / "rerun", stores)


# ---------------------------------------------------------------------------------------------- schema
def test_snapshot_tables_have_the_columns_of_the_tables_they_copy(db_path):
    conn = connect_sync(db_path)
    try:
        migrate(conn)
        for table in runner.PROJECTED_TABLES:
            ours = [(r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({table}_at_horizon)")]
            assert ours == [(r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({table})")], table
    finally:
        close_sync(conn)


@pytest.mark.sqlite_only("a store pruned by a tornstore before migration 0004 is a SQLite file: the PostgreSQL "
                         "backend came with schema 7, and its migrations run whole before anything reads")
def test_a_store_pruned_before_0004_is_told_and_one_replay_makes_it_whole(db_path, db_stores, tmp_path,
                                                                          monkeypatch):
    """Pruned by a compactor that kept no state: 0004 records its horizon with an empty state; verify says
    so (its replay cannot bring back what only pruned events carried); one `replay` adopts the rebuilt
    tables; from then on compaction keeps the state and verify passes."""
    monkeypatch.setattr(migrate_mod, "available_migrations",
                        lambda package="tornstore.migrations": available_migrations(package)[:3])
    db = db_path
    lines = _carried_lines()
    start = 0
    for boundary in [Period(2026, m).start for m in (9, 10, 11, 12)]:
        ingest(db, [line for line in lines if start <= line["observed_at"] < boundary], boundary)
        start = boundary
        run_compact(db, boundary)
    conn = connect_sync(db)
    try:
        assert current_version(conn) == 3
        assert runner.prune_horizon(conn) == Period(2026, 10).start
    finally:
        close_sync(conn)
    monkeypatch.undo()
    conn = connect_sync(db)
    try:
        assert migrate(conn)[:1] == [4]   # (and any later migration)
        assert conn.execute("SELECT horizon, prefix_position, sealed_position, made_at FROM projection_snapshots"
                            ).fetchall() == [(Period(2026, 10).start, 0, 0, None)]
        result = health.verify(conn)
        assert not result["ok"] and "before migration 0004" in result["replay"]["note"]
        created = conn.execute("SELECT player_id, created_at FROM players ORDER BY 1").fetchall()
        runner.replay(conn)
        assert health.verify(conn)["ok"]
        # The earliest observations only pruned events made stay known.
        assert conn.execute("SELECT player_id, created_at FROM players ORDER BY 1").fetchall() == created
    finally:
        close_sync(conn)
    ingest(db, [line for line in lines if line["observed_at"] >= start], Period(2027, 1).start)
    run_compact(db, Period(2027, 1).start)
    assert_replay_changes_nothing_and_verify_passes(db, tmp_path / "after", db_stores)

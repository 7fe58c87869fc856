"""Every Torn API fixture through the real pipeline (route, hash, append, project inline) into a SQLite
file, with the projected rows snapshotted and the facts a person would check asserted by hand."""
from __future__ import annotations

import pytest

from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.records import Response
from tornstore.projections import runner
from tornstore.projections.runner import project_inline

from .conftest import FIXTURE_URLS, OBSERVED_AT, fixture_body

# A plausible capture time for each fixture (its data's own era), so "ongoing" means what it meant then.
CAPTURED_AT = {
    "v1/user_profile.json": 1663183800,                    # last_action 1663183762 (2022-09)
    "v1/user_basic.json": 1663183800,
    "v1/faction_basic_with_members.json": 1630931000,      # latest member action 1630930715 (2021-09)
    "v1/faction_chain.json": 1630952000,
    "v1/torn_rackets.json": 1628950000,                    # 2021-08
    "v1/torn_territorywars.json": 1628950000,              # inside the 2021 wars' 72 hours
    "v1/torn_territory_by_ids.json": 1628950000,
    "v1/torn_rankedwars.json": 1639670000,                 # an hour after the wars' start (2021-12)
    "v2/faction_rankedwars_captured_excerpt.json": 1783090000,   # "captured 2026-07-03"
}

TABLES = {
    "factions": ("faction_id, name, tag, leader_id, co_leader_id, respect, age, best_chain, member_count, is_stub",
                 "faction_id"),
    "players": ("player_id, name, level, rank, faction_id, status_state, status_description, life_current, "
                "life_maximum, last_action_status", "player_id"),
    "player_stats_history": ("player_id, timestamp, strength, defense, speed, dexterity, total_stats, level, "
                             "life_maximum, networth", "player_id, timestamp, id"),
    "faction_history": ("faction_id, timestamp, respect, member_count, best_chain", "faction_id, timestamp, id"),
    "war_status_history": ("war_id, war_type, territory_id, attacking_faction_id, defending_faction_id, "
                           "attacking_score, defending_score, required_score, status, started_at, ends_at, "
                           "winner_faction_id, recorded_at", "war_type, war_id, recorded_at, id"),
    "territories": ("territory_id, faction_id, sector, coordinates, coordinate_x, coordinate_y, racket_level, "
                    "racket_type, war_status", "territory_id"),
    "territory_ownership_history": ("territory_id, recorded_at, faction_id, sector, coordinates, racket_level, "
                                    "racket_type, war_status", "territory_id, recorded_at, id"),
    "projection_errors": ("projection, stream, reason", "projection, position"),
}
SHOWN = 6  # rows per table in a snapshot; the count says how many there are


def ingest(conn, items):
    """items: (url, observed_at, body), each ingested as its own batch in the given order."""
    for url, observed_at, body in items:
        ingest_batch(conn, [Response(url=url, observed_at=observed_at, body=body)], project_inline)


def rows(conn, table):
    cols, order = TABLES[table]
    return conn.execute(f"SELECT {cols} FROM {table} ORDER BY {order}").fetchall()


def picture(conn) -> dict:
    """The projected tables as short readable text: a header, the first rows, and how many there are."""
    out = {}
    for table, (cols, _) in TABLES.items():
        found = rows(conn, table)
        if not found:
            continue
        lines = [cols.replace(", ", " | ")]
        lines += [" | ".join("NULL" if v is None else str(v) for v in row) for row in found[:SHOWN]]
        if len(found) > SHOWN:
            lines.append(f"... {len(found) - SHOWN} more ({len(found)} rows)")
        out[table] = lines
    return out


@pytest.fixture
def db(conn):
    """A migrated database on disk (conftest's `conn`), by the name these tests use."""
    return conn


@pytest.mark.parametrize("name", sorted(FIXTURE_URLS))
def test_fixture_projects(db, snapshot, name):
    ingest(db, [(FIXTURE_URLS[name], CAPTURED_AT.get(name, OBSERVED_AT), fixture_body(name))])
    assert rows(db, "projection_errors") == []
    assert picture(db) == snapshot


def test_v1_profile_faction_and_life(db):
    ingest(db, [(FIXTURE_URLS["v1/user_profile.json"], 1663183800, fixture_body("v1/user_profile.json"))])
    player = db.execute("SELECT name, level, rank, faction_id, life_maximum FROM players WHERE player_id = 1879891"
                        ).fetchone()
    assert player == ("Mudbottom", 100, "Elite Medalist", 13274, 7500)
    # the faction named by the profile is a stub with the profile's name and tag
    assert db.execute("SELECT name, tag, is_stub FROM factions WHERE faction_id = 13274").fetchone() == \
        ("SPECTRE", "SPCR", 1)
    assert db.execute("SELECT level, life_maximum FROM player_stats_history WHERE player_id = 1879891").fetchall() \
        == [(100, 7500)]


def test_v1_faction_zero_becomes_null(db):
    body = fixture_body("v1/user_profile.json")
    body["faction"] = {"position": "None", "faction_id": 0, "days_in_faction": 0, "faction_name": "None",
                       "faction_tag": None}
    ingest(db, [(FIXTURE_URLS["v1/user_profile.json"], 1663183800, body)])
    assert db.execute("SELECT faction_id FROM players WHERE player_id = 1879891").fetchone() == (None,)
    assert db.execute("SELECT COUNT(*) FROM factions WHERE faction_id = 0").fetchone() == (0,)


def test_v1_faction_members_and_co_leader(db):
    ingest(db, [(FIXTURE_URLS["v1/faction_basic_with_members.json"], 1630931000,
                 fixture_body("v1/faction_basic_with_members.json"))])
    faction = db.execute("SELECT name, leader_id, co_leader_id, member_count, is_stub FROM factions "
                         "WHERE faction_id = 39894").fetchone()
    members = db.execute("SELECT COUNT(*) FROM players WHERE faction_id = 39894").fetchone()[0]
    assert faction == ("Synthetic Kingdom Recluse", 1361985, 2390523, members, 0)
    assert db.execute("SELECT respect, member_count, best_chain FROM faction_history WHERE faction_id = 39894"
                      ).fetchall() == [(92969, members, 100)]
    # the ranked war it carries: lower faction id attacking, winner known -> completed; stubs for both sides
    war = db.execute("SELECT attacking_faction_id, defending_faction_id, attacking_score, defending_score, status, "
                     "winner_faction_id FROM war_status_history WHERE war_id = 495").fetchone()
    assert war == (7969, 14581, 26824, 24724, "completed", 7969)
    assert db.execute("SELECT name, is_stub FROM factions WHERE faction_id IN (7969, 14581) ORDER BY faction_id"
                      ).fetchall() == [("Killer Mafia Kings", 1), ("Stygian: Underworld", 1)]


@pytest.mark.sqlite_only("asks SQLite's typeof(); PostgreSQL's column is double precision")
def test_territory_coordinates_are_floats(db):
    ingest(db, [(FIXTURE_URLS["v1/torn_territory_by_ids.json"], 1628950000,
                 fixture_body("v1/torn_territory_by_ids.json"))])
    aac = db.execute("SELECT faction_id, sector, coordinates, coordinate_x, coordinate_y, typeof(coordinate_x) "
                     "FROM territories WHERE territory_id = 'AAC'").fetchone()
    assert aac == (7969, "6", "5480.74,663.71", 5480.74, 663.71, "real")


def test_ranked_wars_without_end_are_ongoing(db):
    ingest(db, [(FIXTURE_URLS["v1/torn_rankedwars.json"], 1639670000, fixture_body("v1/torn_rankedwars.json")),
                (FIXTURE_URLS["v2/faction_rankedwars_captured_excerpt.json"], 1783090000,
                 fixture_body("v2/faction_rankedwars_captured_excerpt.json"))])
    status = dict(db.execute("SELECT war_id, status FROM war_status_history"))
    assert status == {139: "ongoing", 140: "ongoing", 44751: "ongoing", 43781: "completed"}
    assert db.execute("SELECT ends_at, winner_faction_id FROM war_status_history WHERE war_id = 44751").fetchone() \
        == (None, None)
    # every faction a war names exists (as a stub), with the war's name for it
    assert db.execute("SELECT name, is_stub FROM factions WHERE faction_id = 37498").fetchone() == ("The Railroad", 1)


def test_territory_wars_listed_are_ongoing_and_their_territories_at_war(db):
    ingest(db, [(FIXTURE_URLS["v1/torn_territorywars.json"], 1628950000, fixture_body("v1/torn_territorywars.json"))])
    statuses = {s for (s,) in db.execute("SELECT status FROM war_status_history")}
    assert statuses == {"ongoing"}
    # old entries have no war id: a synthetic negative one; the new-format entry keeps its id
    assert db.execute("SELECT war_id FROM war_status_history WHERE territory_id = 'AMF'").fetchone() == (40113,)
    assert db.execute("SELECT war_id < 0 FROM war_status_history WHERE territory_id = 'EAD'").fetchone() == (1,)
    # AMF: assaulting score 0 -> defending; old entries report no score -> under_attack
    assert dict(db.execute("SELECT territory_id, war_status FROM territories WHERE territory_id IN ('AMF', 'EAD')")) \
        == {"AMF": "defending", "EAD": "under_attack"}
    assert db.execute("SELECT COUNT(*) FROM factions WHERE is_stub = 1").fetchone()[0] > 0


def test_all_fixtures_together_replay_to_the_same_tables(db):
    items = sorted((CAPTURED_AT.get(n, OBSERVED_AT), FIXTURE_URLS[n], n) for n in FIXTURE_URLS)
    ingest(db, [(url, t, fixture_body(n)) for t, url, n in items])
    before = {table: rows(db, table) for table in TABLES}
    runner.replay(db)
    after = {table: rows(db, table) for table in TABLES}
    assert after == before
    assert before["projection_errors"] == []

"""The projection rules, one at a time, with small hand-made bodies observed at several times.

Every test ends by replaying the log from scratch and checking the tables come out the same: projections
are pure functions of the events.
"""
from __future__ import annotations

import pytest

from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.records import Response
from tornstore.projections import runner
from tornstore.projections.runner import project_inline

T0 = 1_760_000_000
HOUR = 3600
DAY = 86400

TABLES = {
    "factions": "SELECT * FROM factions ORDER BY faction_id",
    "players": "SELECT * FROM players ORDER BY player_id",
    "player_stats_history": "SELECT * FROM player_stats_history ORDER BY id",
    "faction_history": "SELECT * FROM faction_history ORDER BY id",
    "war_status_history": "SELECT * FROM war_status_history ORDER BY id",
    "territories": "SELECT * FROM territories ORDER BY territory_id",
    "territory_ownership_history": "SELECT * FROM territory_ownership_history ORDER BY id",
}


@pytest.fixture
def db(conn):
    """A migrated database on disk (conftest's `conn`), by the name these tests use."""
    return conn


def feed(conn, url: str, observed_at: int, body: dict) -> None:
    ingest_batch(conn, [Response(url=url, observed_at=observed_at, body=body)], project_inline)


def assert_replay_gives_the_same_tables(conn) -> None:
    before = {name: conn.execute(sql).fetchall() for name, sql in TABLES.items()}
    runner.replay(conn)
    after = {name: conn.execute(sql).fetchall() for name, sql in TABLES.items()}
    assert after == before


def errors(conn):
    return conn.execute("SELECT projection, stream, reason FROM projection_errors ORDER BY id").fetchall()


# ------------------------------------------------------------------------------------------ bodies
def status(state="Okay", description="Okay"):
    return {"description": description, "details": None, "state": state, "color": "green", "until": None}


def last_action(ts, relative="1 minute ago"):
    return {"status": "Online", "timestamp": ts, "relative": relative}


def v2_profile(pid, name="Carrier", level=10, life_max=1000, life_current=None, faction_id=None, state="Okay",
               description="Okay", seen=T0, relative="1 minute ago"):
    return {"profile": {
        "id": pid, "name": name, "level": level, "rank": "Average", "title": "Trader", "age": 100,
        "signed_up": T0 - 100 * DAY, "faction_id": faction_id, "honor_id": 1, "property": {"id": 1, "name": "Shack"},
        "image": None, "gender": "Male", "revivable": False, "role": "Civilian",
        "status": status(state, description), "spouse": None, "awards": 1, "friends": 1, "enemies": 0,
        "forum_posts": 0, "karma": 0, "last_action": last_action(seen, relative),
        "life": {"current": life_max if life_current is None else life_current, "maximum": life_max},
        "donator_status": None}}


def v2_battlestats(strength, defense, speed, dexterity):
    def stat(v):
        return {"value": v, "modifier": 0, "modifiers": []}
    return {"battlestats": {"strength": stat(strength), "defense": stat(defense), "speed": stat(speed),
                            "dexterity": stat(dexterity), "total": strength + defense + speed + dexterity}}


def v2_member(pid, name, level=10):
    return {"id": pid, "name": name, "level": level, "days_in_faction": 1, "last_action": last_action(T0),
            "status": status(), "revive_setting": "Unknown", "position": "Member", "is_revivable": False,
            "is_on_wall": False, "is_in_oc": False, "has_early_discharge": False}


def v2_ranked(war_id, start, end, winner, a, b, target=5000):
    return {"id": war_id, "start": start, "end": end, "target": target, "winner": winner,
            "factions": [{"id": fid, "name": name, "score": score, "chain": 0} for fid, name, score in (a, b)]}


def v1_territory_war(war_id, assaulting, defending, score, started, required=1000):
    return {"territory_war_id": war_id, "assaulting_faction": assaulting, "defending_faction": defending,
            "score": score, "required_score": required, "started": started, "ends": started + 3 * DAY,
            "assaulters": [], "defenders": []}


def v1_territory(owner, x="5480.74", y=663.71, sector=6, **extra):
    return {"sector": sector, "size": 4, "density": 2, "slots": 28, "daily_respect": 66, "faction": owner,
            "coordinate_x": x, "coordinate_y": y, "neighbors": ["RAC"], **extra}


def v1_racket(name, level, owner):
    return {"name": name, "level": level, "reward": "something daily", "created": T0 - DAY, "changed": T0 - DAY,
            "faction": owner}


def stats_rows(conn, pid):
    return conn.execute(
        "SELECT timestamp, strength, defense, speed, dexterity, total_stats, level, life_maximum, networth "
        "FROM player_stats_history WHERE player_id = ? ORDER BY timestamp, id", (pid,)).fetchall()


# ------------------------------------------------------------------------------------------ players and stats
def test_battle_stats_carry_forward_and_level_up_rows(db):
    pid, url = 4242, "https://api.torn.com/v2/user/4242"
    feed(db, f"{url}/battlestats", T0, v2_battlestats(1000, 2000, 3000, 4000))
    feed(db, f"{url}/profile", T0 + HOUR, v2_profile(pid, level=10, life_max=1000))
    feed(db, f"{url}/profile", T0 + 2 * HOUR, v2_profile(pid, level=11, life_max=1100))        # level up
    feed(db, f"{url}/profile", T0 + 3 * HOUR, v2_profile(pid, level=11, life_max=1100, state="Hospital",
                                                         description="In hospital for 3 mins"))  # no tracked change
    feed(db, f"https://api.torn.com/user/{pid}?selections=personalstats", T0 + 4 * HOUR,
         {"personalstats": {"networth": 14_387_325_972, "attackswon": 3}})
    assert stats_rows(db, pid) == [
        (T0, 1000, 2000, 3000, 4000, 10000, None, None, None),
        (T0 + HOUR, 1000, 2000, 3000, 4000, 10000, 10, 1000, None),
        (T0 + 2 * HOUR, 1000, 2000, 3000, 4000, 10000, 11, 1100, None),
        (T0 + 4 * HOUR, 1000, 2000, 3000, 4000, 10000, 11, 1100, 14_387_325_972),
    ]
    player = db.execute("SELECT name, level, rank, status_state, faction_id, created_at, last_updated FROM players "
                        "WHERE player_id = ?", (pid,)).fetchone()
    # the stub made by the battle stats is filled by the profile; created_at is the first observation
    assert player == ("Carrier", 11, "Average Trader", "Hospital", None, T0, T0 + 3 * HOUR)
    assert_replay_gives_the_same_tables(db)


def test_one_observation_makes_one_stats_row(db):
    body = {"level": 15, "gender": "Male", "player_id": 77, "name": "Both", "status": status(),
            "strength": 5, "speed": 6, "dexterity": 7, "defense": 8, "total": 26,
            "strength_modifier": 0, "defense_modifier": 0, "speed_modifier": 0, "dexterity_modifier": 0}
    feed(db, "https://api.torn.com/user/77?selections=basic,battlestats", T0, body)
    assert stats_rows(db, 77) == [(T0, 5, 8, 6, 7, 26, 15, None, None)]
    assert_replay_gives_the_same_tables(db)


def test_member_who_leaves_loses_the_faction(db):
    url = "https://api.torn.com/v2/faction/777/members"
    feed(db, url, T0, {"members": [v2_member(11, "Stays"), v2_member(12, "Leaves"), v2_member(13, "Moves"),
                                   v2_member(14, "Newer")]})
    # 13 shows up in another faction; 14's own profile (newer than the next list) still says 777
    feed(db, "https://api.torn.com/v2/user/13/profile", T0 + HOUR, v2_profile(13, "Moves", faction_id=888))
    feed(db, "https://api.torn.com/v2/user/14/profile", T0 + 3 * HOUR, v2_profile(14, "Newer", faction_id=777))
    feed(db, url, T0 + 2 * HOUR, {"members": [v2_member(11, "Stays")]})   # observed before 14's profile
    factions = dict(db.execute("SELECT player_id, faction_id FROM players"))
    assert factions == {11: 777, 12: None, 13: 888, 14: 777}
    assert db.execute("SELECT member_count FROM factions WHERE faction_id = 777").fetchone() == (1,)
    assert db.execute("SELECT timestamp, member_count FROM faction_history WHERE faction_id = 777 ORDER BY id"
                      ).fetchall() == [(T0, 4), (T0 + 2 * HOUR, 1)]
    assert_replay_gives_the_same_tables(db)


def test_late_event_does_not_roll_back_current_state(db):
    url = "https://api.torn.com/v2/user/55/profile"
    feed(db, url, T0 + 2 * HOUR, v2_profile(55, "NewName", level=20))
    feed(db, url, T0 + HOUR, v2_profile(55, "OldName", level=19))          # arrives late
    assert db.execute("SELECT name, level, created_at, last_updated FROM players WHERE player_id = 55").fetchone() \
        == ("NewName", 20, T0 + HOUR, T0 + 2 * HOUR)
    # the history still learns what was true at the earlier time
    assert [(r[0], r[6]) for r in stats_rows(db, 55)] == [(T0 + HOUR, 19), (T0 + 2 * HOUR, 20)]
    assert_replay_gives_the_same_tables(db)


def test_live_columns_follow_heartbeats(db):
    url = "https://api.torn.com/v2/user/66/profile"
    feed(db, url, T0, v2_profile(66, life_current=500, state="Hospital", description="In hospital for 30 mins",
                                 seen=T0, relative="now"))
    feed(db, url, T0 + 600, v2_profile(66, life_current=800, state="Hospital",
                                       description="In hospital for 20 mins", seen=T0 + 590, relative="10 secs ago"))
    assert db.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)    # the second poll was a heartbeat
    row = db.execute("SELECT status_description, life_current, last_action_at, last_updated FROM players "
                     "WHERE player_id = 66").fetchone()
    assert row == ("In hospital for 20 mins", 800, T0 + 590, T0)


def test_life_maximum_zero_is_an_error_and_the_next_event_projects(db):
    url = "https://api.torn.com/v2/user/99/profile"
    feed(db, url, T0, v2_profile(99, life_max=0, life_current=0))
    found = errors(db)
    assert {p for p, _, _ in found} == {"players", "player_stats"}
    assert all(stream == "user:99:v2.profile" and "life.maximum" in reason for _, stream, reason in found)
    assert db.execute("SELECT COUNT(*) FROM players WHERE player_id = 99").fetchone() == (0,)
    feed(db, url, T0 + HOUR, v2_profile(99, life_max=1500))
    assert db.execute("SELECT life_maximum FROM players WHERE player_id = 99").fetchone() == (1500,)
    assert [(r[0], r[7]) for r in stats_rows(db, 99)] == [(T0 + HOUR, 1500)]


def test_a_bad_event_inside_a_batch_is_recorded_and_the_events_around_it_project(db):
    """Handlers apply a batch under one savepoint; a failure undoes the batch and redoes it event by
    event, so the result is the same as one savepoint per event."""
    batch = [Response(url=f"https://api.torn.com/v2/user/{pid}/profile", observed_at=T0 + i,
                      body=v2_profile(pid, life_max=0 if pid == 72 else 1000 + pid))
             for i, pid in enumerate((71, 72, 73))]
    ingest_batch(db, batch, project_inline)
    assert {(p, stream) for p, stream, _ in errors(db)} == {("players", "user:72:v2.profile"),
                                                            ("player_stats", "user:72:v2.profile")}
    assert db.execute("SELECT player_id, life_maximum FROM players ORDER BY player_id").fetchall() == [
        (71, 1071), (73, 1073)]
    assert [r[0] for r in db.execute("SELECT player_id FROM player_stats_history ORDER BY id")] == [71, 73]
    assert db.execute("SELECT MIN(position) FROM projection_checkpoints").fetchone()[0] == \
        db.execute("SELECT MAX(position) FROM events").fetchone()[0]


def test_no_history_before_the_horizon_but_values_carry_forward(db):
    db.execute("INSERT INTO store_meta (key, value) VALUES ('prune_horizon', ?)", (T0 + DAY,))
    feed(db, "https://api.torn.com/v2/user/31/battlestats", T0, v2_battlestats(10, 20, 30, 40))
    feed(db, "https://api.torn.com/v2/user/31/profile", T0 + HOUR, v2_profile(31, "Early", level=3))
    assert stats_rows(db, 31) == []
    assert db.execute("SELECT name, level FROM players WHERE player_id = 31").fetchone() == ("Early", 3)
    feed(db, "https://api.torn.com/v2/user/31/profile", T0 + 2 * DAY, v2_profile(31, "Early", level=4))
    assert stats_rows(db, 31) == [(T0 + 2 * DAY, 10, 20, 30, 40, 100, 4, 1000, None)]
    assert_replay_gives_the_same_tables(db)


# ------------------------------------------------------------------------------------------ wars
def test_ranked_war_lifecycle(db):
    url = "https://api.torn.com/v2/faction/500/rankedwars"
    start = T0 - HOUR
    feed(db, url, T0, {"rankedwars": [v2_ranked(9001, start, 0, None, (500, "Alpha", 10), (400, "Bravo", 5))]})
    feed(db, url, T0 + HOUR, {"rankedwars": [v2_ranked(9001, start, 0, None, (500, "Alpha", 900), (400, "Bravo", 70))]})
    feed(db, url, T0 + 2 * HOUR, {"rankedwars": [v2_ranked(9001, start, T0 + 2 * HOUR - 60, 500,
                                                           (500, "Alpha", 5000), (400, "Bravo", 80))]})
    rows = db.execute("SELECT attacking_faction_id, defending_faction_id, attacking_score, defending_score, status, "
                      "ends_at, winner_faction_id, recorded_at FROM war_status_history WHERE war_id = 9001 ORDER BY id"
                      ).fetchall()
    # lower faction id = attacking, whichever order the API lists them in
    assert rows == [
        (400, 500, 5, 10, "ongoing", None, None, T0),
        (400, 500, 70, 900, "ongoing", None, None, T0 + HOUR),
        (400, 500, 80, 5000, "completed", T0 + 2 * HOUR - 60, 500, T0 + 2 * HOUR),
    ]
    assert db.execute("SELECT faction_id, name, is_stub FROM factions ORDER BY faction_id").fetchall() == \
        [(400, "Bravo", 1), (500, "Alpha", 1)]
    # the faction's own data later replaces the stub
    feed(db, "https://api.torn.com/v2/faction/400/basic", T0 + 3 * HOUR,
         {"basic": {"id": 400, "name": "Bravo Company", "tag": "BRV", "tag_image": None, "leader_id": 1,
                    "co_leader_id": None, "respect": 1000, "days_old": 10, "capacity": 10, "members": 5,
                    "is_enlisted": None, "rank": {"level": 1, "name": "Bronze", "division": 1}, "best_chain": 10}})
    assert db.execute("SELECT name, tag, co_leader_id, is_stub FROM factions WHERE faction_id = 400").fetchone() == \
        ("Bravo Company", "BRV", None, 0)
    assert_replay_gives_the_same_tables(db)


def test_ranked_war_with_no_score_and_no_winner_is_cancelled(db):
    url = "https://api.torn.com/v2/faction/500/rankedwars"
    feed(db, url, T0, {"rankedwars": [v2_ranked(9002, T0 - DAY, T0 - HOUR, None, (500, "A", 0), (400, "B", 0))]})
    assert db.execute("SELECT status FROM war_status_history WHERE war_id = 9002").fetchall() == [("cancelled",)]


def test_territory_war_lifecycle_and_territory_war_status(db):
    wars = "https://api.torn.com/torn/?selections=territorywars"
    feed(db, "https://api.torn.com/torn/AAC,CAA?selections=territory", T0 - HOUR,
         {"territory": {"AAC": v1_territory(200), "CAA": v1_territory(210, x=592.37, y="367.33")}})
    feed(db, wars, T0, {"territorywars": {"AAC": v1_territory_war(555, 300, 200, 0, T0 - 60),
                                          "CAA": v1_territory_war(556, 310, 210, 0, T0 - 60)}})
    feed(db, wars, T0 + HOUR, {"territorywars": {"AAC": v1_territory_war(555, 300, 200, 400, T0 - 60),
                                                 "CAA": v1_territory_war(556, 310, 210, 0, T0 - 60)}})
    feed(db, wars, T0 + 2 * HOUR, {"territorywars": None})     # both wars are gone, before their end
    war = db.execute("SELECT war_id, territory_id, attacking_faction_id, defending_faction_id, attacking_score, "
                     "status, recorded_at FROM war_status_history ORDER BY war_id, id").fetchall()
    assert war == [
        (555, "AAC", 300, 200, 0, "ongoing", T0),
        (555, "AAC", 300, 200, 400, "ongoing", T0 + HOUR),
        (555, "AAC", 300, 200, 400, "completed", T0 + 2 * HOUR),   # the wall was scored: won, winner unknown
        (556, "CAA", 310, 210, 0, "ongoing", T0),
        (556, "CAA", 310, 210, 0, "cancelled", T0 + 2 * HOUR),     # gone early with no score: called off
    ]
    aac = db.execute("SELECT recorded_at, faction_id, war_status FROM territory_ownership_history "
                     "WHERE territory_id = 'AAC' ORDER BY id").fetchall()
    assert aac == [(T0 - HOUR, 200, "none"), (T0, 200, "defending"), (T0 + HOUR, 200, "under_attack"),
                   (T0 + 2 * HOUR, 200, "none")]
    assert dict(db.execute("SELECT territory_id, war_status FROM territories")) == {"AAC": "none", "CAA": "none"}
    assert_replay_gives_the_same_tables(db)


def test_old_territory_war_entries_get_a_synthetic_id_then_the_real_one(db):
    wars = "https://api.torn.com/torn/?selections=territorywars"
    old = {"assaulting_faction": 300, "defending_faction": 200, "started": T0 - 60, "ends": T0 + 3 * DAY}
    feed(db, wars, T0, {"territorywars": {"AAC": old}})
    (war_id,) = db.execute("SELECT DISTINCT war_id FROM war_status_history").fetchone()
    assert war_id < 0
    feed(db, wars, T0 + HOUR, {"territorywars": {"AAC": v1_territory_war(555, 300, 200, 10, T0 - 60)}})
    assert db.execute("SELECT war_id, attacking_score, status FROM war_status_history ORDER BY id").fetchall() == \
        [(555, None, "ongoing"), (555, 10, "ongoing")]
    assert_replay_gives_the_same_tables(db)


# ------------------------------------------------------------------------------------------ territories
def test_territory_changes_hands_across_views_in_one_history(db):
    feed(db, "https://api.torn.com/torn/AAC?selections=territory", T0, {"territory": {"AAC": v1_territory(7969)}})
    feed(db, "https://api.torn.com/v2/faction/territoryownership", T0 + HOUR,
         {"territoryOwnership": [{"id": "AAC", "owned_by": 8989, "acquired_at": T0 + HOUR - 5, "irradiated": False}],
          "_metadata": {"links": {"next": None, "prev": None}}})
    racket = {"name": "Arms Dealer IV", "level": 4, "description": "d", "created_at": T0, "changed_at": T0,
              "reward": {"type": "Item", "quantity": 200, "id": 222}}
    geometry = {"sector": 6, "size": 4, "density": 2, "slots": 28, "respect": 66,
                "coordinates": {"x": 5480.74, "y": 663.71}}
    feed(db, "https://api.torn.com/v2/faction/8989/territory", T0 + 2 * HOUR,
         {"territory": [{"id": "AAC", "acquired_at": T0 + HOUR - 5, **geometry, "racket": racket}]})
    feed(db, "https://api.torn.com/v2/torn/territory?ids=AAC", T0 + 3 * HOUR,
         {"territory": [{"id": "AAC", **geometry, "neighbors": ["RAC"]}], "_metadata": {"links": {"next": None}}})
    feed(db, "https://api.torn.com/v2/faction/8989/territory", T0 + 4 * HOUR, {"territory": []})
    history = db.execute("SELECT recorded_at, faction_id, sector, coordinates, racket_level, racket_type "
                         "FROM territory_ownership_history WHERE territory_id = 'AAC' ORDER BY id").fetchall()
    assert history == [
        (T0, 7969, "6", "5480.74,663.71", None, None),
        (T0 + HOUR, 8989, "6", "5480.74,663.71", None, None),
        (T0 + 2 * HOUR, 8989, "6", "5480.74,663.71", 4, "Arms Dealer"),
        # geometry alone (v2 torn territory) changed nothing; dropped from its owner's list: owner unknown
        (T0 + 4 * HOUR, None, "6", "5480.74,663.71", 4, "Arms Dealer"),
    ]
    assert db.execute("SELECT faction_id, coordinate_x, coordinate_y, last_updated FROM territories").fetchone() == \
        (None, 5480.74, 663.71, T0 + 4 * HOUR)
    assert_replay_gives_the_same_tables(db)


def test_racket_removed_when_no_longer_listed(db):
    url = "https://api.torn.com/torn/?selections=rackets"
    feed(db, url, T0, {"rackets": {"YOD": v1_racket("Arms Dealer IV", 4, 7835),
                                   "XWD": v1_racket("Arms Dealer III", 3, 21526)}})
    feed(db, url, T0 + HOUR, {"rackets": {"YOD": v1_racket("Arms Dealer V", 5, 7835)}})
    history = db.execute("SELECT territory_id, recorded_at, faction_id, racket_level, racket_type "
                         "FROM territory_ownership_history ORDER BY territory_id, id").fetchall()
    assert history == [
        ("XWD", T0, 21526, 3, "Arms Dealer"),
        ("XWD", T0 + HOUR, 21526, None, None),
        ("YOD", T0, 7835, 4, "Arms Dealer"),
        ("YOD", T0 + HOUR, 7835, 5, "Arms Dealer"),
    ]
    assert_replay_gives_the_same_tables(db)


def test_v1_strings_and_sentinels(db):
    feed(db, "https://api.torn.com/faction/321?selections=basic", T0,
         {"ID": 321, "name": "Tom &amp; Jerry&#039;s", "tag": "TJ", "leader": "12", "co-leader": 0, "respect": "5000",
          "age": 10, "best_chain": 0, "members": [], "ranked_wars": [], "territory_wars": []})
    assert db.execute("SELECT name, leader_id, co_leader_id, respect, member_count FROM factions").fetchone() == \
        ("Tom & Jerry's", 12, None, 5000, 0)
    feed(db, "https://api.torn.com/torn/ABC?selections=territory", T0,
         {"territory": {"ABC": v1_territory(0, x=318, y="502.67", sector="3")}})
    assert db.execute("SELECT faction_id, sector, coordinates, coordinate_x FROM territories").fetchone() == \
        (None, "3", "318.0,502.67", 318.0)
    assert errors(db) == []


def v2_territory_war(war_id, code, aggressor, defender, score, start, winner=None):
    return {"war_id": war_id, "territory": code, "start": start, "end": start + 3 * DAY, "target": 1000,
            "winner": winner,
            "factions": [{"id": aggressor, "name": "Raiders", "score": score, "chain": 0, "is_aggressor": True,
                          "playerIds": []},
                         {"id": defender, "name": "Holders", "score": 0, "chain": 0, "is_aggressor": False,
                          "playerIds": []}]}


def test_territory_war_gone_from_a_faction_list_has_ended_for_good(db):
    wars = "https://api.torn.com/v2/faction/{}/wars"

    def body(*territory):
        return {"pacts": [], "wars": {"ranked": None, "raids": [], "territory": list(territory)}}

    feed(db, wars.format(300), T0, body(v2_territory_war(777, "XYZ", 300, 200, 50, T0 - 60)))
    assert db.execute("SELECT war_status FROM territories WHERE territory_id = 'XYZ'").fetchone() == ("under_attack",)
    feed(db, wars.format(300), T0 + HOUR, body())
    # a stale list of the other side still shows it (with a new score): the war does not come back
    feed(db, wars.format(200), T0 + HOUR + 30, body(v2_territory_war(777, "XYZ", 300, 200, 60, T0 - 60)))
    rows = db.execute("SELECT attacking_faction_id, defending_faction_id, attacking_score, defending_score, status "
                      "FROM war_status_history ORDER BY id").fetchall()
    assert rows == [(300, 200, 50, 0, "ongoing"), (300, 200, 50, 0, "completed"), (300, 200, 60, 0, "completed")]
    assert db.execute("SELECT war_status FROM territories WHERE territory_id = 'XYZ'").fetchone() == ("none",)
    assert db.execute("SELECT name FROM factions WHERE faction_id = 300").fetchone() == ("Raiders",)
    assert_replay_gives_the_same_tables(db)


def test_a_late_profile_still_names_a_player_known_only_from_bars(db):
    bars = {"life": {"current": 10, "maximum": 250, "increment": 5, "interval": 300, "ticktime": 10, "fulltime": 0},
            "server_time": T0}
    feed(db, "https://api.torn.com/user/88?selections=bars", T0 + HOUR, bars)
    assert db.execute("SELECT name, life_maximum FROM players WHERE player_id = 88").fetchone() == ("Player 88", 250)
    feed(db, "https://api.torn.com/v2/user/88/profile", T0, v2_profile(88, "Named", level=7, life_max=240))
    assert db.execute("SELECT name, level, life_maximum, last_updated FROM players WHERE player_id = 88").fetchone() \
        == ("Named", 7, 250, T0 + HOUR)
    assert_replay_gives_the_same_tables(db)


def test_territory_war_status_looks_past_an_ended_war_to_an_older_open_one(db):
    wars = "https://api.torn.com/v2/faction/{}/wars"

    def body(*territory):
        return {"pacts": [], "wars": {"ranked": None, "raids": [], "territory": list(territory)}}

    feed(db, "https://api.torn.com/torn/AAC?selections=territory", T0 - HOUR, {"territory": {"AAC": v1_territory(200)}})
    feed(db, wars.format(300), T0, body(v2_territory_war(555, "AAC", 300, 200, 0, T0 - 60)))
    feed(db, wars.format(310), T0 + 10, body(v2_territory_war(556, "AAC", 310, 200, 50, T0 - 30)))
    feed(db, wars.format(310), T0 + HOUR, body())          # 556 has ended; 555 (not in 310's list) is still on
    feed(db, wars.format(300), T0 + 2 * HOUR, body())      # and now 555 too, with no wall taken
    assert db.execute("SELECT war_id, attacking_score, status, recorded_at FROM war_status_history "
                      "ORDER BY war_id, id").fetchall() == [
        (555, 0, "ongoing", T0), (555, 0, "cancelled", T0 + 2 * HOUR),
        (556, 50, "ongoing", T0 + 10), (556, 50, "completed", T0 + HOUR)]
    assert db.execute("SELECT recorded_at, war_status FROM territory_ownership_history ORDER BY id").fetchall() == [
        (T0 - HOUR, "none"), (T0, "defending"), (T0 + 10, "under_attack"), (T0 + HOUR, "defending"),
        (T0 + 2 * HOUR, "none")]
    assert_replay_gives_the_same_tables(db)


def test_every_handler_with_live_columns_names_the_views_ingest_must_send_heartbeats_for():
    """Ingest builds heartbeats only for project_inline.live_views: a handler that refreshes live columns
    from heartbeats must list its views there, or its columns would go stale."""
    from tornstore.projections.handlers.base import Handler
    from tornstore.projections.runner import handlers, project_inline

    for handler in handlers():
        refreshes = type(handler).live is not Handler.live or type(handler).live_batch is not Handler.live_batch
        assert bool(handler.live_views) == refreshes, handler.name
        assert handler.live_views <= handler.views, handler.name
        assert handler.live_views <= project_inline.live_views

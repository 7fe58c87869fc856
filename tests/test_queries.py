"""The query library through real SQLite files: views, the joined series, the change feed, freshness.

`build_world` fills a database the way the pipeline would: events, streams and gaps through the real
ingest (projections off), projected tables by INSERT (history rows point at real event positions).
Other query tests (CLI, charts, the Discord example) reuse it.
"""
from __future__ import annotations

import calendar
import json
from pathlib import Path

import msgspec
import pytest

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response
from tornstore.projections import queries
from tornstore.projections.queries import QueryError
from tornstore.projections.store import Store


def ts(year: int, month: int, day: int, hour: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, 0, 0))


def month_end(year: int, month: int) -> int:
    """The compactor's period_end: the month's last second."""
    nxt = (year + month // 12, month % 12 + 1)
    return calendar.timegm((*nxt, 1, 0, 0, 0)) - 1


T1, T2, T3, T4, T5 = (ts(2025, 10, 5), ts(2025, 10, 20), ts(2025, 11, 3), ts(2025, 11, 10), ts(2025, 11, 12))


def _members(ids: list[int]) -> dict:
    return {"members": [{"id": i, "name": f"P{i}", "level": 10} for i in ids]}


def _ingest(conn, url: str, body, at: int) -> int:
    """Ingest one response without projections; the position of its last appended event."""
    report = ingest_batch(conn, [Response(url=url, observed_at=at, body=body)], None)
    return report.last_position


def build_world(path: Path) -> dict:
    conn = connect_sync(path)
    migrate(conn)
    members = "https://api.torn.com/v2/faction/9420/members"
    basic = "https://api.torn.com/v2/faction/9420/basic"
    pos = {
        "m1": _ingest(conn, members, _members([1, 2]), T1),
        "b1": _ingest(conn, basic, {"basic": {"id": 9420, "name": "Alpha", "respect": 1_000_000}}, T1),
        "m2": _ingest(conn, members, _members([1, 2, 3]), T2),
        "b2": _ingest(conn, basic, {"basic": {"id": 9420, "name": "Alpha", "respect": 1_005_000}}, T2),
        "m3": _ingest(conn, members, _members([1, 3, 4]), T3),
        "b3": _ingest(conn, basic, {"basic": {"id": 9420, "name": "Alpha", "respect": 1_050_000}}, T3),
        # The same list seen through v1 later: not a second join or leave.
        "v1": _ingest(conn, "https://api.torn.com/faction/9420?selections=basic",
                      {"ID": 9420, "name": "Alpha", "respect": 1_050_000,
                       "members": {"1": {"name": "P1"}, "3": {"name": "P3"}, "4": {"name": "P4"}}}, T4),
        "u1": _ingest(conn, "https://api.torn.com/v2/user/1/profile", {"profile": {"id": 1, "level": 10}}, T1),
        "u2": _ingest(conn, "https://api.torn.com/v2/user/1/profile", {"profile": {"id": 1, "level": 11}}, T5),
    }
    # Unchanged poll later: last_checked moves, last_changed does not.
    _ingest(conn, basic, {"basic": {"id": 9420, "name": "Alpha", "respect": 1_050_000}}, T5)
    # Polls that brought no data: two by target, one by URL only (a Torn error body through ingest).
    _ingest(conn, basic, {"error": {"code": 5, "error": "Too many requests"}}, T5 + 600)
    conn.executemany(
        "INSERT INTO gaps (observed_at, source_url, target, error_code, reason) VALUES (?, ?, ?, ?, ?)",
        [(T4, "https://api.torn.com/v2/faction/9420/basic", "faction:9420", None, "timeout (before data)"),
         (T5 + 300, "https://api.torn.com/v2/faction/9420/basic", "faction:9420", None, "timeout"),
         (T5 + 900, "https://api.torn.com/v2/faction/9420/members", "faction:9420", None, "HTTP 502"),
         (T5 + 400, "https://api.torn.com/v2/faction/1/basic", "faction:1", None, "timeout"),
         (T5 + 500, "https://api.torn.com/torn/AAC,CAA?selections=territory", "territory:AAC,CAA", 8, "IP block"),
         (T5 + 700, "https://api.torn.com/torn/?selections=territory", None, 9, "API disabled")])

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO factions (faction_id, name, tag, leader_id, co_leader_id, respect, age, best_chain, "
        "member_count, is_stub, created_at, last_updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(9420, "Alpha", "ALP", 1, 3, 1_050_000, 2500, 250, 3, 0, T1, T3),
         (100, "Beta", "BET", None, None, 500_000, 900, 100, 0, 0, T1, T1),
         (55, "Stubby", None, None, None, None, None, None, None, 1, T1, T1)])
    conn.executemany(
        "INSERT INTO players (player_id, name, level, rank, faction_id, status_state, status_description, "
        "life_current, life_maximum, last_action_status, last_action_at, created_at, last_updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(1, "Alice", 11, "Champion", 9420, "Okay", "Okay", 500, 500, "Online", T5, T1, T5),
         (2, "Bob", 30, "Hero", None, "Hospital", "In hospital", 10, 900, "Offline", T3, T1, T3),
         (3, "Carol", 20, "Star", 9420, "Okay", "Okay", 300, 300, "Idle", T4, T1, T4),
         (7, "Dave", 5, None, 100, None, None, None, None, None, None, T1, T1)])
    # Player 1: Aug and Sep pruned (summaries only), Oct folded but kept (summary AND history), Nov recent.
    conn.executemany(
        "INSERT INTO player_stats_summary (player_id, period_start, period_end, strength_start, strength_end, "
        "strength_change, level_start, level_end, level_change, record_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(1, ts(2025, 8, 1), month_end(2025, 8), 50, 100, 50, 8, 9, 1, 4),
         (1, ts(2025, 9, 1), month_end(2025, 9), 100, 200, 100, 9, 10, 1, 5),
         (1, ts(2025, 10, 1), month_end(2025, 10), 250, 300, 50, 10, 10, 0, 2),
         (2, ts(2025, 9, 1), month_end(2025, 9), 1000, 1100, 100, 30, 30, 0, 3)])
    conn.executemany(
        "INSERT INTO player_stats_history (player_id, timestamp, strength, defense, speed, dexterity, "
        "total_stats, level, life_maximum, networth, event_position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(1, T1, 250, 10, 10, 10, 280, 10, 400, 1000, pos["u1"]),
         (1, T2, 300, 10, 10, 10, 330, 10, 400, 1000, pos["m2"]),
         (1, T5, 350, 20, 20, 20, 410, 11, 500, 5000, pos["u2"])])
    conn.executemany(
        "INSERT INTO faction_summary (faction_id, period_start, period_end, respect_start, respect_end, "
        "respect_change, member_count_start, member_count_end, member_count_change, best_chain_start, "
        "best_chain_end, best_chain_change, record_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(9420, ts(2025, 9, 1), month_end(2025, 9), 900_000, 990_000, 90_000, 2, 2, 0, 250, 250, 0, 6),
         (9420, ts(2025, 10, 1), month_end(2025, 10), 1_000_000, 1_005_000, 5_000, 2, 3, 1, 250, 250, 0, 2)])
    conn.executemany(
        "INSERT INTO faction_history (faction_id, timestamp, respect, member_count, best_chain, event_position) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(9420, T1, 1_000_000, 2, 250, pos["b1"]),
         (9420, T2, 1_005_000, 3, 250, pos["b2"]),
         (9420, T3, 1_050_000, 3, 250, pos["b3"])])
    conn.executemany(
        "INSERT INTO territories (territory_id, faction_id, sector, coordinates, coordinate_x, coordinate_y, "
        "racket_level, racket_type, war_status, last_updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("AAC", 9420, "1", "502.67,291.5", 502.67, 291.5, 2, "Cannabis", "under_attack", T3),
         ("CAA", None, "3", "10,20", 10, 20, None, None, "none", T1)])
    conn.executemany(
        "INSERT INTO territory_ownership_history (territory_id, faction_id, sector, racket_level, war_status, "
        "recorded_at, event_position) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [("AAC", 100, "1", 2, "none", T1, pos["b1"]),
         ("AAC", 9420, "1", 2, "none", T3, pos["b3"]),
         ("AAC", 9420, "1", 2, "under_attack", T4, pos["v1"])])
    conn.executemany(
        "INSERT INTO war_status_history (war_id, war_type, territory_id, attacking_faction_id, "
        "defending_faction_id, attacking_score, defending_score, required_score, status, started_at, ends_at, "
        "winner_faction_id, recorded_at, event_position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(77, "ranked", None, 9420, 100, 0, 0, 5000, "ongoing", T2 + 3600, None, None, T2, pos["b2"]),
         (77, "ranked", None, 9420, 100, 2000, 1500, 5000, "ongoing", T2 + 3600, None, None, T3, pos["b3"]),
         (77, "ranked", None, 9420, 100, 5000, 3100, 5000, "completed", T2 + 3600, T4, 9420, T4, pos["v1"]),
         # Seen for the first time already over: not a start, not an end.
         (88, "ranked", None, 100, 55, 10, 20, 100, "completed", T1 - 9000, T1 - 10, 55, T1, pos["m1"]),
         (812, "territory", "AAC", 100, 9420, 10, 20, 500, "ongoing", T4, T4 + 86400, None, T4, pos["v1"])])
    conn.execute(
        "INSERT INTO war_summary (war_id, war_type, period_start, period_end, attacking_faction_id, "
        "defending_faction_id, final_attacking_score, final_defending_score, winner_faction_id, "
        "duration_seconds, record_count) VALUES (66, 'ranked', ?, ?, 100, 9420, 4000, 5000, 9420, 7200, 9)",
        (ts(2025, 8, 1), month_end(2025, 8)))
    conn.execute("COMMIT")
    close_sync(conn)
    return pos


@pytest.fixture
def world(db_path: Path) -> dict:
    return build_world(db_path)


@pytest.fixture
async def store(db_path: Path, world):
    s = await Store.open(db_path, create=False)
    yield s
    await s.close()


# ------------------------------------------------------------------------------------------------ views
async def test_player_view(store):
    view = await store.player(1, now=T5 + 1000)
    assert view.name == "Alice" and view.level == 11 and view.faction_name == "Alpha" and view.faction_tag == "ALP"
    assert view.stats.source == "history" and view.stats.at == T5 and view.stats.strength == 350
    assert view.stats.total_stats == 410 and view.stats.networth == 5000
    assert view.freshness.entity_type == "user" and view.freshness.last_checked == T5
    assert view.freshness.age_seconds == 1000
    assert [s.stream for s in view.freshness.streams] == ["user:1:v1.member", "user:1:v2.member",
                                                           "user:1:v2.profile"]


async def test_player_stats_fall_back_to_the_newest_summary(store):
    view = await store.player(2)
    assert view.faction_id is None and view.faction_name is None
    assert view.stats.source == "summary" and view.stats.at == month_end(2025, 9) and view.stats.strength == 1100
    assert view.stats.defense is None


async def test_missing_entities_are_none(store):
    assert await store.player(999) is None
    assert await store.faction(999) is None
    assert await store.war(999) is None
    assert await store.territory("ZZZ") is None


async def test_faction_view_lists_members_from_the_newest_member_list(store):
    view = await store.faction(9420)
    assert view.name == "Alpha" and view.leader_name == "Alice" and view.co_leader_name == "Carol"
    assert view.members_source == "member_list"
    # Newest list is [1, 3, 4]; player 4 was never projected (no name), Bob (2) left.
    assert {m.player_id: m.name for m in view.members} == {1: "Alice", 3: "Carol", 4: None}
    assert view.territories == ["AAC"] and view.is_stub is False


async def test_faction_without_member_list_uses_players(store):
    view = await store.faction(100)
    assert view.members_source == "players" and [m.name for m in view.members] == ["Dave"]
    stub = await store.faction(55)
    assert stub.is_stub is True and stub.members == []


async def test_war_view_is_the_newest_snapshot_with_its_count(store):
    view = await store.war(77)
    assert view.source == "history" and view.status == "completed" and view.snapshots == 3
    assert (view.attacking_score, view.defending_score) == (5000, 3100)
    assert view.winner_faction_name == "Alpha" and view.defending_faction_name == "Beta"
    territory_war = await store.war(812, "territory")
    assert territory_war.territory_id == "AAC" and territory_war.status == "ongoing"
    assert await store.war(812, "ranked") is None
    with pytest.raises(QueryError):
        await store.war(812, "raid")


async def test_war_known_only_from_a_summary(store):
    view = await store.war(66)
    assert view.source == "summary" and view.snapshots == 0 and view.status == "completed"
    assert view.recorded_at == month_end(2025, 8) and view.winner_faction_name == "Alpha"


async def test_territory_view(store):
    view = await store.territory("aac")
    assert view.territory_id == "AAC" and view.faction_name == "Alpha"
    assert view.owned_since == T3 and view.ownership_changes == 1 and view.history_rows == 3
    assert view.war_id == 812 and view.racket_type == "Cannabis"
    unowned = await store.territory("CAA")
    assert unowned.faction_id is None and unowned.owned_since is None and unowned.war_id is None


def test_unowned_territory_has_no_owned_since(db_path):
    conn = connect_sync(db_path)
    migrate(conn)
    conn.execute("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (100, 'Beta', 0, 0)")
    conn.execute("INSERT INTO territories (territory_id, faction_id, war_status, last_updated) "
                 "VALUES ('CAA', NULL, 'none', ?)", (T3,))
    conn.executemany("INSERT INTO territory_ownership_history (territory_id, faction_id, recorded_at) "
                     "VALUES ('CAA', ?, ?)", [(100, T1), (None, T3)])
    view = queries.territory(conn, "CAA")
    close_sync(conn)
    assert view.faction_id is None and view.owned_since is None
    assert view.ownership_changes == 1 and view.history_rows == 2


# ------------------------------------------------------------------------------------------------ history
async def test_player_series_joins_summaries_and_history_without_double_counting(store):
    series = await store.history("player", 1, "strength")
    assert [(p.at, p.value, p.source) for p in series.points] == [
        (month_end(2025, 8), 100, "summary"),
        (month_end(2025, 9), 200, "summary"),
        # October was folded (a summary exists) but its history rows are kept: history wins.
        (T1, 250, "history"),
        (T2, 300, "history"),
        (T5, 350, "history"),
    ]
    assert series.points[0].period_start == ts(2025, 8, 1) and series.points[2].period_start is None
    assert series.name == "Alice" and len(series.summary_points) == 2 and len(series.history_points) == 3


async def test_series_since_until_and_dates(store):
    series = await store.history("player", 1, "level", since="2025-09-15", until="2025-10-05")
    assert [(p.value, p.source) for p in series.points] == [(10, "summary"), (10, "history")]
    assert series.since == ts(2025, 9, 15) and series.until == ts(2025, 10, 5) + 86_399
    only_recent = await store.history("player", 1, "strength", since=T2)
    assert [p.value for p in only_recent.points] == [300, 350]


async def test_faction_series_and_summary_only_entities(store):
    respect = await store.history("faction", 9420, "respect")
    assert [(p.value, p.source) for p in respect.points] == [
        (990_000, "summary"), (1_000_000, "history"), (1_005_000, "history"), (1_050_000, "history")]
    bob = await store.history("player", 2, "strength")
    assert [(p.value, p.source) for p in bob.points] == [(1100, "summary")]
    nobody = await store.history("faction", 31337, "respect")
    assert nobody.points == [] and nobody.name is None


async def test_history_rejects_unknown_stats_and_kinds(store):
    with pytest.raises(QueryError, match="use one of strength"):
        await store.history("player", 1, "respect")
    with pytest.raises(QueryError, match="'player' or 'faction'"):
        await store.history("war", 1, "respect")


def test_summary_ending_on_the_first_history_second_is_not_double_counted(db_path):
    conn = connect_sync(db_path)
    migrate(conn)
    conn.execute("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (1, 'F', 0, 0)")
    conn.execute("INSERT INTO faction_summary (faction_id, period_start, period_end, respect_end) "
                 "VALUES (1, ?, ?, 10)", (ts(2025, 9, 1), month_end(2025, 9)))
    # A history row at the last second of September: September is still covered by history.
    conn.execute("INSERT INTO faction_history (faction_id, timestamp, respect) VALUES (1, ?, 10)",
                 (month_end(2025, 9),))
    series = queries.history(conn, "faction", 1, "respect")
    close_sync(conn)
    assert [p.source for p in series.points] == ["history"]


# ------------------------------------------------------------------------------------------------ changes
async def test_changes_since_finds_every_kind(store, world):
    feed = await store.changes_since(0)
    assert feed.more is False and feed.next_position == await store.head_position()
    got = [(c.kind, c.entity, c.position, c.before, c.after) for c in feed.changes]
    assert got == [
        # The first kept respect row compares with September's summary (990,000): +10,000.
        ("respect_jump", "faction:9420", world["b1"], 990_000, 1_000_000),
        ("member_joined", "faction:9420", world["m2"], None, 3),
        ("war_started", "rankedwar:77", world["b2"], None, "ongoing"),
        ("member_left", "faction:9420", world["m3"], 2, None),
        ("member_joined", "faction:9420", world["m3"], None, 4),
        ("territory_changed_hands", "territory:AAC", world["b3"], 100, 9420),
        ("respect_jump", "faction:9420", world["b3"], 1_005_000, 1_050_000),
        ("war_ended", "rankedwar:77", world["v1"], "ongoing", "completed"),
        ("war_started", "territorywar:812", world["v1"], None, "ongoing"),
        ("level_up", "user:1", world["u2"], 10, 11),
    ]
    texts = {c.kind: c.text for c in feed.changes}
    assert texts["member_left"] == "Bob [2] left Alpha [9420]"
    assert texts["level_up"] == "Alice [1] reached level 11 (was 10)"
    assert texts["territory_changed_hands"] == "AAC changed hands: Beta [100] -> Alpha [9420]"
    assert [c.text for c in feed.changes if c.kind == "respect_jump"][-1] == \
        "Alpha [9420] respect 1,005,000 -> 1,050,000 (+45,000)"
    assert texts["war_ended"] == "Ranked war 77 ended: Alpha [9420] vs Beta [100], 5,000-3,100, winner Alpha [9420]"
    assert "starts 2025-10-20 01:00:00Z" in [c.text for c in feed.changes if c.entity == "rankedwar:77"][0]
    by_kind = {c.kind for c in feed.changes}
    assert by_kind == {"member_joined", "member_left", "level_up", "respect_jump", "territory_changed_hands",
                       "war_started", "war_ended"}


async def test_respect_threshold_is_configurable(store, world):
    low = await store.changes_since(0, respect_threshold=1_000)
    assert [(c.before, c.after) for c in low.changes if c.kind == "respect_jump"] == [
        (990_000, 1_000_000), (1_000_000, 1_005_000), (1_005_000, 1_050_000)]
    high = await store.changes_since(0, respect_threshold=100_000)
    assert not [c for c in high.changes if c.kind == "respect_jump"]


async def test_changes_page_by_limit_and_window_without_losing_or_repeating(store):
    everything = (await store.changes_since(0)).changes
    for kwargs in ({"limit": 1}, {"limit": 2}, {"scan": 1}, {"limit": 3, "scan": 2}):
        seen, position, calls = [], 0, 0
        while True:
            feed = await store.changes_since(position, **kwargs)
            seen += feed.changes
            assert feed.next_position >= position
            position, calls = feed.next_position, calls + 1
            if not feed.more:
                break
            assert calls < 100
        assert seen == everything, kwargs



async def test_one_events_changes_are_never_split(store, world):
    # m3 brings a leave and a join together: a limit that would cut between them stops before m3 ...
    feed = await store.changes_since(0, limit=4)
    assert [c.position for c in feed.changes] == [world["b1"], world["m2"], world["b2"]]
    assert feed.next_position == world["b2"] and feed.more is True
    # ... and when m3 comes first, it comes whole even over the limit.
    feed = await store.changes_since(world["b2"], limit=1)
    assert [(c.kind, c.position) for c in feed.changes] == [("member_left", world["m3"]),
                                                            ("member_joined", world["m3"])]
    assert feed.next_position == world["m3"] and feed.more is True


async def test_changes_from_the_head_are_empty(store):
    head = await store.head_position()
    feed = await store.changes_since(head)
    assert feed.changes == [] and feed.next_position == head and feed.more is False


# ------------------------------------------------------------------------------------------------ freshness
async def test_freshness_unchanged_since_and_no_data_between(store):
    fresh = await store.freshness("faction", 9420, now=T5 + 3600)
    assert fresh.last_changed == T4 and fresh.last_checked == T5  # v1 changed at T4; the T5 poll was unchanged
    basic = [s for s in fresh.streams if s.stream == "faction:9420:v2.faction"][0]
    assert (basic.last_changed, basic.last_checked) == (T3, T5)
    # After T5: two gaps by target, one Torn error matched by its URL; the T4 gap and faction 1's are not.
    assert [(g.observed_at, g.target) for g in fresh.gaps] == [
        (T5 + 300, "faction:9420"), (T5 + 600, None), (T5 + 900, "faction:9420")]
    assert (fresh.gap_count, fresh.no_data_from, fresh.no_data_until) == (3, T5 + 300, T5 + 900)
    assert fresh.gaps[1].error_code == 5 and fresh.age_seconds == 3600
    assert fresh.describe() == ("unchanged since 2025-11-10 00:00:00Z, last checked 2025-11-12 00:00:00Z; "
                                "no data between 2025-11-12 00:05:00Z and 2025-11-12 00:15:00Z (3 failed polls)")


async def test_freshness_of_territories_and_unknown_entities(store):
    aac = await store.freshness("territory", "AAC")
    # Never polled as a stream: every gap naming it (a listed code, or the whole map by URL) counts.
    assert aac.last_checked is None and [g.error_code for g in aac.gaps] == [8, 9]
    other = await store.freshness("territory", "XYZ")
    assert [g.error_code for g in other.gaps] == [9]
    nobody = await store.freshness("player", 424242)
    assert nobody.describe() == "never seen" and nobody.gaps == [] and nobody.age_seconds is None
    with pytest.raises(QueryError):
        await store.freshness("planet", 1)


# ------------------------------------------------------------------------------------------------ misc
def test_parse_when_accepts_dates_iso_and_unix_seconds():
    assert queries.parse_when("2026-01-01") == 1767225600
    assert queries.parse_when("2026-01-01", end_of_day=True) == 1767225600 + 86_399
    assert queries.parse_when("2026-01-01T02:00:00+02:00") == 1767225600
    assert queries.parse_when("2026-01-01T00:00:00Z") == 1767225600
    assert queries.parse_when("2026-01-01 00:00") == 1767225600
    assert queries.parse_when("1767225600") == 1767225600
    assert queries.parse_when(1767225600) == 1767225600
    with pytest.raises(QueryError, match="YYYY-MM-DD"):
        queries.parse_when("next tuesday")


async def test_results_are_plain_json_for_programs(store):
    view = await store.faction(9420)
    data = json.loads(msgspec.json.encode(view))
    assert data["members"][0]["player_id"] in (1, 3, 4) and data["freshness"]["entity_id"] == "9420"


async def test_a_query_is_one_round_trip(store, monkeypatch):
    calls = []
    original = Store.read

    async def counting(self, fn, *args):
        calls.append(fn.__name__)
        return await original(self, fn, *args)
    monkeypatch.setattr(Store, "read", counting)   # queries go to the read connection
    await store.player(1)
    await store.faction(9420)
    await store.history("player", 1, "strength")
    await store.changes_since(0)
    assert calls == ["player", "faction", "history", "changes_since"]


# ------------------------------------------------------------------------------------------------ real pipeline
def pipeline_capture(path: Path) -> Path:
    """Four months of polls (Aug-Nov 2025, the 5th and 20th) as capture lines: a faction whose respect
    grows, whose members change in November, a player's battle stats and level, a territory that
    changes hands, a ranked war that starts and ends."""
    lines = []

    def add(url: str, at: int, body) -> None:
        lines.append(json.dumps({"url": url, "observed_at": at, "body": body}))
    k = 0
    for month in (8, 9, 10, 11):
        for day in (5, 20):
            at = ts(2025, month, day)
            add("https://api.torn.com/v2/faction/9420/basic", at, {"basic": {
                "id": 9420, "name": "Alpha", "tag": "ALP", "leader_id": 1, "co_leader_id": 0,
                "respect": 1_000_000 + 10_000 * k + (50_000 if k == 7 else 0), "days_old": 100 + k,
                "members": 2, "best_chain": 100}})
            ids = [1, 2] if k < 6 else ([1, 2, 3] if k == 6 else [1, 3])
            add("https://api.torn.com/v2/faction/9420/members", at, {"members": [
                {"id": i, "name": f"P{i}", "level": 10 + (i == 1 and k >= 6),
                 "last_action": {"status": "Online", "timestamp": at},
                 "status": {"description": "Okay", "state": "Okay"}} for i in ids]})
            add("https://api.torn.com/user/1?selections=battlestats", at, {
                "strength": 1000 * (k + 1), "defense": 500, "speed": 500, "dexterity": 500,
                "total": 1000 * (k + 1) + 1500})
            add("https://api.torn.com/torn/AAC?selections=territory", at, {"territory": {"AAC": {
                "sector": 6, "faction": 100 if k < 7 else 9420, "coordinate_x": "5480.74",
                "coordinate_y": "663.71"}}})
            if k >= 6:
                add("https://api.torn.com/v2/faction/9420/wars", at, {"pacts": [], "raids": [], "wars": {
                    "ranked": {"war_id": 77, "start": ts(2025, 11, 5), "end": 0 if k == 6 else at - 1,
                               "target": 5000, "winner": None if k == 6 else 9420,
                               "factions": [{"id": 9420, "name": "Alpha", "score": 100 * k, "chain": 0},
                                            {"id": 100, "name": "Beta", "score": 10, "chain": 0}]},
                    "raids": [], "territory": []}})
            k += 1
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_through_ingest_and_compaction(tmp_path):
    from tornstore.projections.compactor import compact
    from tornstore.projections.store import ingest_files

    db = tmp_path / "pipe.db"
    report = ingest_files(str(db), [str(pipeline_capture(tmp_path / "capture.ndjson"))])
    assert report.rejected == [] and report.appended > 0

    async with await Store.open(db, create=False) as s:
        feed = await s.changes_since(0, respect_threshold=20_000)
        kinds = [(c.kind, c.before, c.after) for c in feed.changes]
        assert kinds == [
            ("member_joined", None, 3),
            ("level_up", 10, 11),
            ("war_started", None, "ongoing"),
            ("respect_jump", 1_060_000, 1_120_000),
            ("member_left", 2, None),
            ("territory_changed_hands", 100, 9420),
            ("war_ended", "ongoing", "completed"),
        ]
        before = await s.history("faction", 9420, "respect")
        assert {p.source for p in before.points} == {"history"} and len(before.points) == 8

    # Fold every closed month; prune August and September (two months are kept before December).
    conn = connect_sync(db)
    compaction = compact(conn, ts(2025, 12, 15), backup=False)
    counted = conn.execute("SELECT COUNT(*) FROM faction_summary WHERE faction_id = 9420").fetchone()[0]
    close_sync(conn)
    assert [p.month for p in compaction.pruned] == ["2025-08", "2025-09"] and counted == 4

    async with await Store.open(db, create=False) as s:
        respect = await s.history("faction", 9420, "respect")
        assert [(p.at, p.value, p.source) for p in respect.points] == [
            (month_end(2025, 8), 1_010_000, "summary"),
            (month_end(2025, 9), 1_030_000, "summary"),
            (ts(2025, 10, 5), 1_040_000, "history"),
            (ts(2025, 10, 20), 1_050_000, "history"),
            (ts(2025, 11, 5), 1_060_000, "history"),
            (ts(2025, 11, 20), 1_120_000, "history"),
        ]  # October and November are summarized too, but shown once: from their history rows
        strength = await s.history("player", 1, "strength", since="2025-09-01")
        assert [(p.value, p.source) for p in strength.points] == [
            (4000, "summary"), (5000, "history"), (6000, "history"), (7000, "history"), (8000, "history")]
        me = await s.player(1)
        assert me.faction_name == "Alpha" and me.stats.strength == 8000 and me.level == 11
        war = await s.war(77)
        assert war.status == "completed" and war.winner_faction_name == "Alpha" and war.snapshots == 2
        aac = await s.territory("AAC")
        assert aac.faction_id == 9420 and aac.owned_since == ts(2025, 11, 20)
        alpha = await s.faction(9420)
        assert [m.player_id for m in alpha.members] == [1, 3] and alpha.members_source == "member_list"
        # Asked again after compaction: the owner before November 20 now comes from September's summary;
        # the join of November 5 is lost with the pruned August member list it was compared with.
        retained = await s.changes_since(0, respect_threshold=20_000)
        assert [(c.kind, c.before, c.after) for c in retained.changes] == [
            k for k in kinds if k[0] != "member_joined"]

"""Ingest's shortcuts for unchanged parts decide exactly what the full path decides.

The hash memo, the memo of big responses, the compiled noise strippers, routing's fast paths for common
ids, live_views and the per-value last_checked writes are caches or cheaper spellings: each is checked
here against the plain computation it stands for.
"""
from __future__ import annotations

import copy
import gc
import math
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from tornstore.eventstore import ingest as ingest_module
from tornstore.eventstore.canonical import HashMemo, _tree_of, _without, canonical_hash, stripper
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.gctuning import collections_paused
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response
from tornstore.eventstore.routing import RoutingError, route

T0 = 1764000000
MAP_URL = "https://api.torn.com/torn/?selections=territory,rackets"
MEMBERS_URL = "https://api.torn.com/v2/faction/9420/members"


def territory_map(n: int = 40, owner_of: dict[str, int] | None = None) -> dict:
    codes = [a + b + c for a in "ABC" for b in "ABCDEFG" for c in "ABCDEFG"][:n]
    return {"territory": {code: {"sector": 1 + i % 7, "size": 2, "slots": 20, "daily_respect": 40,
                                 "faction": (owner_of or {}).get(code, 1000 + i % 5),
                                 "coordinate_x": "1.5", "coordinate_y": "2.5", "neighbors": []}
                          for i, code in enumerate(codes)},
            "rackets": None}


def members(t: int, faction_id: int = 9420, level_of_1: int = 10) -> dict:
    return {"members": [{"id": 1, "name": "a", "level": level_of_1, "days_in_faction": t // 86400,
                         "last_action": {"status": "Online", "timestamp": t, "relative": f"{t % 60} minutes ago"},
                         "status": {"description": "Okay", "details": None, "state": "Okay", "until": None}},
                        {"id": 2, "name": "b", "level": 20, "days_in_faction": 3,
                         "last_action": {"status": "Offline", "timestamp": T0, "relative": "2 days ago"},
                         "status": {"description": f"In hospital for {t % 9} mins", "details": "x",
                                    "state": "Hospital", "until": t + 100}}]}


def streams(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT entity_type, entity_id, view, version, hash, rules, head_observed_at, first_seen, "
                        "last_changed, last_checked FROM streams ORDER BY stream_id").fetchall()


def events(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT position, stream_id, version, observed_at, hash, rules, source_url, payload "
                        "FROM events ORDER BY position").fetchall()


class Recorder:
    """A projector that keeps what it was given."""

    def __init__(self, live_views=None):
        self.events: list = []
        self.heartbeats: list = []
        if live_views is not None:
            self.live_views = frozenset(live_views)

    def __call__(self, conn, events, heartbeats):
        self.events += events
        self.heartbeats += heartbeats


@pytest.fixture
def two(tmp_path):
    """Two fresh stores: what goes into both must come out the same."""
    conns = []
    for name in ("a.db", "b.db"):
        c = connect_sync(tmp_path / name)
        migrate(c)
        conns.append(c)
    yield conns
    for c in conns:
        close_sync(c)


def test_heartbeats_only_for_live_views_and_all_without_them(two):
    live, every = Recorder({"v2.member"}), Recorder()
    for t in (T0, T0 + 240, T0 + 480):
        batch = [Response(url=MEMBERS_URL, observed_at=t, body=members(t)),
                 Response(url=MAP_URL, observed_at=t, body=territory_map())]
        ingest_batch(two[0], copy.deepcopy(batch), live)
        ingest_batch(two[1], copy.deepcopy(batch), every)
    assert streams(two[0]) == streams(two[1]) and events(two[0]) == events(two[1])
    assert {hb.stream.view for hb in live.heartbeats} == {"v2.member"}
    assert {hb.stream.view for hb in every.heartbeats} == {"v2.member", "v2.members", "v1.territory", "v1.rackets"}
    # the same heartbeats for the live view, payload as routed
    pick = [(hb.stream, hb.observed_at, hb.payload) for hb in every.heartbeats if hb.stream.view == "v2.member"]
    assert [(hb.stream, hb.observed_at, hb.payload) for hb in live.heartbeats] == pick
    member_2 = [hb for hb in live.heartbeats if hb.stream.entity_id == "2"][-1]
    assert member_2.payload == {**members(T0 + 480)["members"][1], "_faction_id": 9420}
    assert type(member_2.stream).__name__ == "StreamKey" and member_2.stream.view == "v2.member"


def test_a_repeated_map_is_compared_with_its_streams_and_changes_land(two):
    projector = Recorder(set())  # no live view: the map's memo is used
    plain = Recorder()           # heartbeats for all: every part routed every time
    maps = [territory_map(), territory_map(), territory_map(owner_of={"ABC": 77}), territory_map(owner_of={"ABC": 77})]
    for i, body in enumerate(maps):
        t = T0 + 3600 * i
        ingest_batch(two[0], [Response(url=MAP_URL, observed_at=t, body=copy.deepcopy(body))], projector)
        ingest_batch(two[1], [Response(url=MAP_URL, observed_at=t, body=copy.deepcopy(body))], plain)
    assert streams(two[0]) == streams(two[1])
    assert events(two[0]) == events(two[1])
    changed = [e for e in projector.events if e.observed_at > T0]
    assert [(e.stream.entity_id, e.version, e.payload["faction"]) for e in changed] == [("ABC", 2, 77)]
    # last_checked of every territory is the last poll, last_changed where it changed
    rows = {r[1]: r for r in streams(two[0]) if r[0] == "territory"}
    assert {r[9] for r in rows.values()} == {T0 + 3 * 3600}
    assert rows["ABC"][8] == T0 + 2 * 3600 and rows["ABB"][8] == T0


def test_a_repeated_map_still_sees_what_another_writer_stored(tmp_path):
    path = tmp_path / "w.db"
    ours, theirs = connect_sync(path), connect_sync(path)
    migrate(ours)
    projector = Recorder(set())
    try:
        ingest_batch(ours, [Response(url=MAP_URL, observed_at=T0, body=territory_map())], projector)
        ingest_batch(ours, [Response(url=MAP_URL, observed_at=T0 + 60, body=territory_map())], projector)
        # another process stores a change of one territory
        ingest_batch(theirs, [Response(url=MAP_URL, observed_at=T0 + 120,
                                       body=territory_map(owner_of={"ABC": 5}))], projector)
        # our next poll repeats our last body byte for byte: the memo recognises it, the states do not
        report = ingest_batch(ours, [Response(url=MAP_URL, observed_at=T0 + 180, body=territory_map())], projector)
    finally:
        close_sync(ours)
        close_sync(theirs)
    assert report.appended == 1
    ours_again = territory_map()["territory"]["ABC"]["faction"]
    assert [(e.stream.entity_id, e.payload["faction"]) for e in projector.events[-1:]] == [("ABC", ours_again)]


def test_nan_is_not_null_to_the_response_memo(conn):
    projector = Recorder(set())
    body = territory_map()
    assert ingest_batch(conn, [Response(url=MAP_URL, observed_at=T0, body=body)], projector).rejected == []
    # JSON writes NaN as null; routing refuses a NaN where null means "none": quarantined, as without the memo
    hostile = {**territory_map(), "rackets": math.nan}
    with pytest.raises(RoutingError):
        route(MAP_URL, hostile)
    report = ingest_batch(conn, [Response(url=MAP_URL, observed_at=T0 + 60, body=hostile)], projector)
    assert len(report.rejected) == 1 and "rackets" in report.rejected[0].reason


def test_last_checked_after_each_batch(two):
    """The grouped last_checked writes leave every stream column as a write of each row would."""
    recorder = Recorder({"v2.member"})
    bodies = [(T0 + 240 * i, members(T0 + 240 * i, level_of_1=10 + i // 3)) for i in range(8)]
    for t, body in bodies:
        ingest_batch(two[0], [Response(url=MEMBERS_URL, observed_at=t, body=body)], recorder)
    rows = {r[1]: r for r in streams(two[0]) if r[2] == "v2.member"}
    last = bodies[-1][0]
    assert rows["1"][9] == last and rows["2"][9] == last               # last_checked: the last poll
    assert rows["1"][3] == 3 and rows["1"][8] == T0 + 240 * 6         # member 1 levelled up twice
    assert rows["2"][3] == 1 and rows["2"][8] == T0                   # member 2: only noise moved
    # late data (an old poll re-read) moves nothing
    ingest_batch(two[0], [Response(url=MEMBERS_URL, observed_at=T0 + 240, body=bodies[1][1])], recorder)
    assert {r[1]: r for r in streams(two[0]) if r[2] == "v2.member"} == rows


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.5, 1.0, -0.0]) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["status", "description", "until", "life", "current", "last_action", "level", "id",
                         "x", "personalstats", "other", "activity", "travel", "time_left", "faction"]),
        inner, max_size=4),
    max_leaves=12)
VIEWS = ["v2.member", "v1.member", "v2.profile", "v1.profile", "v2.personalstats", "v1.bars", "v2.bars",
         "v1.territory", "v1.icons+travel", "v2.faction", "raw"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VIEWS), st.lists(_json, min_size=1, max_size=6))
def test_hash_memo_and_strippers_decide_what_the_hash_decides(view, payloads):
    memo = HashMemo()
    for payload in payloads:
        assert stripper(view)(payload) == _without(payload, _tree_of(view))
        assert memo.hash("s", view, payload) == canonical_hash(view, payload)
        assert memo.hash("s", view, payload) == canonical_hash(view, payload)  # the memo's own answer


def test_hash_memo_follows_nested_noise_and_real_changes():
    memo = HashMemo()
    first = {"id": 1, "level": 5, "status": {"state": "Hospital", "until": 100, "description": "3 mins"}}
    moved = {"id": 1, "level": 5, "status": {"state": "Hospital", "until": 160, "description": "2 mins"}}
    real = {"id": 1, "level": 5, "status": {"state": "Okay", "until": 160, "description": "2 mins"}}
    floaty = {"id": 1, "level": 5.0, "status": {"state": "Okay", "until": 160, "description": "2 mins"}}
    hashes = [memo.hash("s", "v2.member", p) for p in (first, moved, real, floaty)]
    assert hashes == [canonical_hash("v2.member", p) for p in (first, moved, real, floaty)]
    assert hashes[0] == hashes[1] != hashes[2] != hashes[3]


@pytest.mark.parametrize("member_id, routed", [
    (5, "5"), ("5", "5"), (10 ** 18 - 1, str(10 ** 18 - 1)),
    (0, None), (-3, None), (True, None), (10 ** 18, None), ("05", "5"), (5.0, None), (None, None),
])
def test_member_ids_fast_and_slow(member_id, routed):
    body = {"members": [{"id": member_id, "name": "x"}]}
    if routed is None:
        with pytest.raises(RoutingError):
            route(MEMBERS_URL, body)
        return
    parts = route(MEMBERS_URL, body)
    assert parts[0].entity_id == routed and parts[0].payload == {"id": member_id, "name": "x", "_faction_id": 9420}
    assert parts[-1].payload == {"member_ids": [int(routed)]}


@pytest.mark.parametrize("key, routed", [
    ("AAC", "AAC"), ("ABCD", "ABCD"), ("ABCDE", None), ("aac", None), ("A1C", None), ("", None),
])
def test_territory_codes_fast_and_slow(key, routed):
    body = {"territory": {key: {"sector": 1}}}
    if routed is None:
        with pytest.raises(RoutingError):
            route("https://api.torn.com/torn/?selections=territory", body)
        return
    (part,) = route("https://api.torn.com/torn/?selections=territory", body)
    assert (part.entity_id, part.payload) == (routed, {"sector": 1, "_id": routed})


@pytest.mark.parametrize("key, routed", [("2900013", "2900013"), ("0123", "123"), ("-1", None), ("1" * 19, None)])
def test_v1_member_keys_fast_and_slow(key, routed):
    url = "https://api.torn.com/faction/23005?selections=basic"
    body = {"ID": 23005, "members": {key: {"name": "x"}}}
    if routed is None:
        with pytest.raises(RoutingError):
            route(url, body)
        return
    member = route(url, body)[0]
    assert (member.entity_id, member.payload) == (routed, {"name": "x", "_id": routed, "_faction_id": 23005})


def test_gc_is_paused_for_a_batch_and_left_as_found(conn):
    seen = []

    def projector(c, evs, hbs):
        seen.append(gc.isenabled())

    assert gc.isenabled()
    ingest_batch(conn, [Response(url=MEMBERS_URL, observed_at=T0, body=members(T0))], projector)
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        ingest_batch(conn, [Response(url=MEMBERS_URL, observed_at=T0 + 60, body=members(T0 + 60))], projector)
        assert not gc.isenabled()  # someone else's choice stays
        with collections_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ValueError), collections_paused():
        raise ValueError
    assert gc.isenabled()


def test_a_failed_batch_leaves_no_cached_marks(conn):
    """A projector failure rolls the batch back; the next batch writes the same rows as a fresh store."""
    def failing(c, evs, hbs):
        raise RuntimeError("projection failed")

    first = [Response(url=MAP_URL, observed_at=T0, body=territory_map())]
    ingest_batch(conn, first, Recorder(set()))
    before = streams(conn)
    with pytest.raises(RuntimeError):
        ingest_batch(conn, [Response(url=MAP_URL, observed_at=T0 + 60, body=territory_map(owner_of={"ABC": 9}))],
                     failing)
    assert streams(conn) == before
    ingest_batch(conn, [Response(url=MAP_URL, observed_at=T0 + 120, body=territory_map())], Recorder(set()))
    assert {r[9] for r in streams(conn) if r[0] == "territory"} == {T0 + 120}
    territories = len(territory_map()["territory"])
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == territories + 1  # and the rackets list


def test_response_memo_is_bounded():
    memo = ingest_module._ResponseMemo()
    items = [(("territory", f"A{i}", "v1.territory"), "h") for i in range(memo.MIN_PARTS)]
    for i in range(memo.LIMIT + 5):
        memo.remember(f"u{i}", None, {"n": i}, items, frozenset(), None)
    assert len(memo._last) <= memo.LIMIT
    # a response whose views need heartbeats keeps no body
    memo.remember("m", None, {"n": 1}, [(("user", str(i), "v2.member"), "h") for i in range(20)],
                  frozenset({"v2.member"}), None)
    assert memo._last["m", None][1] is None
    assert memo.lookup("m", None, {"n": 1}, frozenset({"v2.member"})) == (None, None)


def test_the_ingest_command_loads_only_its_own_command_module():
    code = ("import sys\n"
            "import click\n"
            "from click.testing import CliRunner\n"
            "from tornstore.cli.main import cli\n"
            "result = CliRunner().invoke(cli, ['ingest', '--help'])\n"
            "assert result.exit_code == 0, result.output\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('tornstore.cli.') and m.endswith(('_commands', "
            "'_command')))\n"
            "print(loaded)\n"
            "assert 'tornstore' in sys.modules and '__version__' not in vars(sys.modules['tornstore'])\n"
            "names = cli.list_commands(click.Context(cli))\n"
            "assert {'ingest', 'player', 'demo', 'export-events', 'simulate-api'} <= set(names), names\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['tornstore.cli.log_commands']"


@pytest.mark.sqlite_only("compares with SQLite's own AUTOINCREMENT (sqlite_sequence)")
def test_positions_and_stream_ids_are_the_ones_sqlite_would_give(conn):
    """Events and streams are inserted in one executemany each, their ids given beforehand: the same
    ids an INSERT would get, also after the newest events were deleted (AUTOINCREMENT never reuses one)."""
    ingest_batch(conn, [Response(url=MEMBERS_URL, observed_at=T0, body=members(T0))])
    top = conn.execute("SELECT MAX(position) FROM events").fetchone()[0]
    conn.execute("DELETE FROM events WHERE position = ?", (top,))  # as a pruning of the newest would
    conn.execute("UPDATE streams SET version = version - 1, hash = 'x' WHERE stream_id = "
                  "(SELECT stream_id FROM streams ORDER BY stream_id DESC LIMIT 1)")
    conn.stream_cache = None
    report = ingest_batch(conn, [Response(url=MEMBERS_URL, observed_at=T0 + 60, body=members(T0 + 60, level_of_1=11)),
                                 Response(url=MAP_URL, observed_at=T0 + 60, body=territory_map(3))])
    positions = [p for (p,) in conn.execute("SELECT position FROM events WHERE observed_at = ? ORDER BY position",
                                            (T0 + 60,))]
    assert positions[0] == top + 1 and positions == list(range(top + 1, top + 1 + report.appended))
    assert (report.first_position, report.last_position) == (positions[0], positions[-1])
    ids = [i for (i,) in conn.execute("SELECT stream_id FROM streams ORDER BY stream_id")]
    assert ids == list(range(1, len(ids) + 1))
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()[0] == positions[-1]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

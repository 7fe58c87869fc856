"""Own-key URLs: what a bot sends with its own key names its entity only through the key's owner.

Every URL form below is one the official spec or the docs define without an id. With the owner given,
or learned from `/v2/key/info` made with the same key, each is stored and projected; parts that need
no owner (a ranked war names both factions) are stored even when no owner is known; the rest waits in
quarantine and is routed once the owner is known. Nothing is lost. On a SQLite file and on a PostgreSQL
database.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tornstore import Store
from tornstore.eventstore.db import close_sync, connect_sync, is_url, table_names
from tornstore.eventstore.records import Owner
from tornstore.eventstore.secrets import fingerprint

from .conftest import OBSERVED_AT, fixture_body

ROOT = Path(__file__).resolve().parents[1]
API = "https://api.torn.com"
T = OBSERVED_AT
ME, MY_FACTION = 2001, 39894
KEY = "OwNeRkEy12345678"


def _stat(value: int) -> dict:
    return {"value": value, "modifier": 0, "modifiers": []}


BATTLESTATS = {"battlestats": {"strength": _stat(1000), "defense": _stat(2000), "speed": _stat(3000),
                               "dexterity": _stat(4000), "total": 10000}}
BARS = {"bars": {"energy": {"current": 100, "maximum": 150, "increment": 5, "interval": 600, "tick_time": 60,
                            "full_time": 600},
                 "life": {"current": 500, "maximum": 700, "increment": 10, "interval": 300, "tick_time": 30,
                          "full_time": 600}}}
KEY_INFO = {"info": {"selections": {}, "access": {"level": 3, "type": "Limited", "faction": True},
                     "user": {"id": ME, "faction_id": MY_FACTION, "company_id": None}}}


def _members() -> dict:
    return fixture_body("v2/faction_members.json")


def _rows(db: Path | str, sql: str, args: tuple = ()) -> list[tuple]:
    conn = connect_sync(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        close_sync(conn)


def _assert_key_nowhere(db: Path | str, folder: Path, but: tuple[Path, ...] = ()) -> None:
    """The raw key is in no file of the test's folder (a SQLite store is one of them), nor, on PostgreSQL, in
    any row of any table."""
    for path in folder.iterdir():
        if path.is_file() and path not in but:
            assert KEY.encode() not in path.read_bytes(), path
    if is_url(db):
        conn = connect_sync(db)
        try:
            for table in table_names(conn):
                assert KEY not in repr(conn.execute(f"SELECT * FROM {table}").fetchall()), table
        finally:
            close_sync(conn)


async def test_own_key_url_forms_are_stored_and_projected_with_the_owner_given(db_path):
    db = db_path
    owner = Owner(player_id=ME, faction_id=MY_FACTION)
    calls = [
        ("/v2/user/battlestats", BATTLESTATS),
        ("/v2/user/bars", BARS),
        ("/v2/user?selections=bars,cooldowns", BARS | {"cooldowns": {"drug": 0, "medical": 0, "booster": 0}}),
        ("/v2/user/stocks", {"stocks": []}),
        ("/v2/faction/members", _members()),
        ("/v2/faction/wars", fixture_body("v2/faction_wars_active_ranked.json")),
        ("/v2/faction?selections=wars", fixture_body("v2/faction_wars_no_war.json")),
        ("/faction/?selections=rankedwars", {"rankedwars": {}}),
        ("/user/?selections=personalstats", fixture_body("v1/user_personalstats_sanitized_capture.json")),
        ("/user/?selections=stocks", {"stocks": {}}),
    ]
    async with Store.open(db, create=True) as store:
        for i, (path, body) in enumerate(calls):
            report = await store.ingest(API + path, body, observed_at=T + i, owner=owner)
            assert report.rejected == [], (path, report.rejected)
    streams = {(t, e, v) for t, e, v in _rows(db, "SELECT entity_type, entity_id, view FROM streams")}
    assert ("user", str(ME), "v2.battlestats") in streams
    assert ("user", str(ME), "v2.bars") in streams
    assert ("faction", str(MY_FACTION), "v2.members") in streams
    assert ("faction", str(MY_FACTION), "v2.wars") in streams
    assert ("user", str(ME), "v1.personalstats") in streams
    # Projected: battle stats into the history, members into players with their faction.
    stats = _rows(db, "SELECT strength, defense, speed, dexterity, total_stats FROM player_stats_history "
                      "WHERE player_id = ? AND strength IS NOT NULL ORDER BY timestamp", (ME,))
    assert stats and stats[0] == (1000, 2000, 3000, 4000, 10000)   # the battle stats call, the first at T
    members = _rows(db, "SELECT COUNT(*) FROM players WHERE faction_id = ?", (MY_FACTION,))[0][0]
    assert members == len(_members()["members"])
    assert _rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_a_ranked_war_in_faction_wars_is_projected_with_no_owner_known(db_path):
    db = db_path
    body = fixture_body("v2/faction_wars_active_ranked.json")
    async with Store.open(db, create=True) as store:
        report = await store.ingest(f"{API}/v2/faction/wars", body, observed_at=T)
    war_id = body["wars"]["ranked"]["war_id"]
    assert _rows(db, "SELECT war_type, attacking_faction_id, defending_faction_id FROM war_status_history "
                     "WHERE war_id = ?", (war_id,)) == [("ranked", 1, 2)]
    # The faction's own list of its wars needs the faction: it waits, with the reason, for its owner.
    assert len(report.rejected) == 1
    (reason, needs_owner, key_fp), = _rows(db, "SELECT reason, needs_owner, key_fp FROM quarantine")
    assert "names no faction" in reason and "no key fingerprint" in reason
    assert needs_owner == 1 and key_fp is None


async def test_the_owner_is_learned_from_key_info_and_what_waited_is_routed(db_path, tmp_path):
    db = db_path
    async with Store.open(db, create=True) as store:
        waiting = await store.ingest(f"{API}/v2/user/battlestats", BATTLESTATS, observed_at=T, key=KEY)
        members = await store.ingest(f"{API}/v2/faction/members", _members(), observed_at=T + 1,
                                     key=fingerprint(KEY))
        assert len(waiting.rejected) == 1 and len(members.rejected) == 1
        assert fingerprint(KEY) in waiting.rejected[0].reason
        assert KEY not in waiting.rejected[0].reason

        learned = await store.ingest(f"{API}/v2/key/info", KEY_INFO, observed_at=T + 2, key=KEY)
        assert learned.retried == 2
        # From now on the key alone resolves its owner.
        later = await store.ingest(f"{API}/v2/user/bars", BARS, observed_at=T + 3, key=KEY)
        assert later.rejected == []
    assert _rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]
    assert _rows(db, "SELECT key_fp, player_id, faction_id FROM key_owners") == [(fingerprint(KEY), ME, MY_FACTION)]
    assert _rows(db, "SELECT DISTINCT strength FROM player_stats_history WHERE player_id = ?", (ME,)) == [(1000,)]
    assert _rows(db, "SELECT COUNT(*) FROM players WHERE faction_id = ?", (MY_FACTION,))[0][0] == 2
    _assert_key_nowhere(db, tmp_path)


async def test_a_key_owner_changing_faction_is_followed_and_old_news_does_not_win(db_path):
    db = db_path
    moved = {"info": KEY_INFO["info"] | {"user": {"id": ME, "faction_id": 777, "company_id": None}}}
    async with Store.open(db, create=True) as store:
        await store.ingest(f"{API}/v2/key/info", KEY_INFO, observed_at=T, key=KEY)
        await store.ingest(f"{API}/v2/key/info", moved, observed_at=T + 100, key=KEY)
        await store.ingest(f"{API}/v2/key/info", KEY_INFO, observed_at=T + 50, key=KEY)   # a late, older copy
        # An own v1 profile teaches it too.
        profile = fixture_body("v1/user_profile.json")
        await store.ingest(f"{API}/user/?selections=profile", profile, observed_at=T + 200, key="AnOtHeRkEy000001")
    owners = dict(((fp, (p, f)) for fp, p, f in _rows(db, "SELECT key_fp, player_id, faction_id FROM key_owners")))
    assert owners[fingerprint(KEY)] == (ME, 777)
    assert owners[fingerprint("AnOtHeRkEy000001")] == (profile["player_id"], profile["faction"]["faction_id"])


def test_capture_lines_carry_owner_and_key_and_quarantine_retry_routes_what_waited(db_path, tmp_path):
    db = db_path
    lines = [
        {"url": f"{API}/v2/user/bars", "observed_at": T, "body": BARS, "owner": {"player_id": ME}},
        {"url": f"{API}/v2/user/battlestats", "observed_at": T, "body": BATTLESTATS, "key": fingerprint(KEY)},
        {"url": f"{API}/v2/faction/members", "observed_at": T, "body": _members(), "key": KEY},  # a key by mistake
    ]
    capture = tmp_path / "capture.ndjson"
    capture.write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_DB"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return proc

    cli("init")
    cli("ingest", str(capture))
    assert _rows(db, "SELECT COUNT(*) FROM streams WHERE entity_id = ? AND view = 'v2.bars'", (str(ME),)) == [(1,)]
    assert _rows(db, "SELECT key_fp FROM quarantine WHERE needs_owner = 1 ORDER BY id") == \
        [(fingerprint(KEY),), (fingerprint(KEY),)]
    listed = json.loads(cli("quarantine", "list", "--json").stdout)
    assert [row["needs_owner"] for row in listed] == [True, True]

    # The owner becomes known another way than a batch with that key (here: by hand, as an operator would).
    conn = connect_sync(db)   # (autocommit: the insert commits)
    try:
        conn.execute("INSERT INTO key_owners VALUES (?, ?, ?, ?, ?)", (fingerprint(KEY), ME, MY_FACTION, T, "manual"))
    finally:
        close_sync(conn)
    # battle stats (1 event) and the member list (2 members and the list: 3 events)
    assert json.loads(cli("quarantine", "retry", "--json").stdout) == {"retried": 2, "appended": 1 + 3,
                                                                        "still_waiting": 0}
    assert json.loads(cli("quarantine", "retry", "--json").stdout)["retried"] == 0
    _assert_key_nowhere(db, tmp_path, but=(capture,))


async def test_v1_faction_basic_and_rankedwars_polls_do_not_flip_one_stream(db_path):
    db = db_path
    basic = fixture_body("v1/faction_basic_with_members.json")
    fid = basic["ID"]
    async with Store.open(db, create=True) as store:
        for i in range(4):
            await store.ingest(f"{API}/faction/{fid}?selections=basic", basic, observed_at=T + 2 * i)
            await store.ingest(f"{API}/faction/{fid}?selections=rankedwars", {"rankedwars": {}},
                               observed_at=T + 2 * i + 1)
    versions = dict(_rows(db, "SELECT view, version FROM streams WHERE entity_type = 'faction'"))
    assert versions["v1.faction"] == 1
    assert versions["v1.faction_rankedwars"] == 1

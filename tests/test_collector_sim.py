"""The collector against the Torn API simulator over real HTTP on loopback.

Time is the simulator's: the collector's clock reads the world's clock and its sleep moves it (and the
simulator's rate-limit window), so pauses of minutes or days take no real time.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.eventstore.db import connect_sync
from tornstore.eventstore.collector import Collector, parse_config
from tornstore.eventstore.records import Owner
from tornstore.eventstore.secrets import fingerprint
from tornstore.eventstore.simulator import World, start_simulator
from tornstore.projections.store import Store

REPO = Path(__file__).resolve().parents[1]
KEY_A = "AAAAAAAAAAAAAAA1"
KEY_B = "BBBBBBBBBBBBBBB2"
ENV = {"TK_A": KEY_A, "TK_B": KEY_B}


class SimClock:
    """The world's clock as the collector's clock; sleeping moves the world (concurrent sleeps overlap)."""

    def __init__(self, sim):
        self.sim = sim
        self.stop_at: float | None = None
        self.collector: Collector | None = None

    def __call__(self) -> float:
        return float(self.sim.world.now)

    async def sleep(self, seconds: float) -> None:
        target = math.ceil(self.sim.world.now + max(0.0, seconds))
        await asyncio.sleep(0)
        if self.sim.world.now < target:
            self.sim.set_clock(target)
        if self.stop_at is not None and self.sim.world.now >= self.stop_at and self.collector is not None:
            self.collector.stop()


def make_world() -> World:
    return World(seed=5, factions=2, members_per_faction=(3, 4), territories=300)


@pytest.fixture
async def sim():
    world = make_world()
    factions = list(world.factions.values())
    own = {KEY_A: factions[0].members[0], KEY_B: factions[1].members[0]}
    handle = await start_simulator(world, keys=[KEY_A, KEY_B], own_ids=own, rate_clock="sim")
    handle.owner_a, handle.owner_b = own[KEY_A], own[KEY_B]
    handle.faction_a = factions[0]
    try:
        yield handle
    finally:
        await handle.close()


def config_for(sim, keys=("A", "B"), **extra):
    key_tables = {
        "A": {"key": "env:TK_A", "owner": str(sim.owner_a), "access": "limited"},
        "B": {"key": "env:TK_B", "owner": str(sim.owner_b), "access": "public"},
    }
    data = {"api_base": sim.url, "interval": "1m", "jitter": 0, "keys": [key_tables[k] for k in keys]}
    data.update(extra)
    return parse_config(data, env=ENV)


async def collect_once(sim, db_path, cfg, clock=None, **kw):
    """Open the store, run one round, close; returns (report, collector)."""
    clock = clock or SimClock(sim)
    store = await Store.open(db_path, create=True)
    try:
        collector = Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep, **kw)
        async with collector:
            report = await collector.run_once()
    finally:
        await store.close()
    return report, collector


def query(db_path, sql, *args):
    conn = connect_sync(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def assert_no_error_events(db_path):
    rows = query(db_path, "SELECT payload FROM events")
    assert not any('"error":{' in p.replace(" ", "") for (p,) in rows)


# ------------------------------------------------------------------------------------------ filling the store
async def test_one_round_fills_the_store_and_later_rounds_append_only_changes(sim, db_path):
    fa = sim.faction_a
    cfg = config_for(sim,
                     factions=[{"id": fa.id, "fetch": ["basic", "members", "wars", "v1:chain"], "members": True}],
                     players=[{"id": sim.owner_a, "fetch": ["profile", "battlestats", "v1:profile", "v1:bars"]}],
                     territories=[{"all": True, "api": "v2"}],
                     wars={"ranked": True, "territory": True, "rackets": True})
    first, collector = await collect_once(sim, db_path, cfg)
    assert first.polls_failed == 0 and first.gaps == 0 and first.appended > 0
    # Every member was polled in the same round.
    members = {t for (t,) in query(db_path, "SELECT entity_id FROM streams WHERE view = 'v2.profile'")}
    assert members >= {str(m) for m in fa.members}
    # The v2 territory list (300 rows, 250 a page) was followed to its last page.
    assert query(db_path, "SELECT count(*) FROM streams WHERE view = 'v2.territory'")[0][0] == 300
    assert sim.stats()["by_path"]["/v2/torn/territory"] == 2
    assert sim.stats()["by_path"]["/v2/faction"] == 1           # basic, members and wars: one request
    # Own-only battle stats went out with the player's own key.
    assert query(db_path, "SELECT count(*) FROM streams WHERE entity_id = ? AND view = 'v2.battlestats'",
                 str(sim.owner_a))[0][0] == 1
    events_after_first = query(db_path, "SELECT count(*) FROM events")[0][0]

    again, _ = await collect_once(sim, db_path, cfg)         # same moment: nothing changed
    assert again.appended == 0 and again.unchanged > 0
    sim.advance(86400)
    later, _ = await collect_once(sim, db_path, cfg)          # a day later: some things changed
    assert 0 < later.appended < first.appended
    assert query(db_path, "SELECT count(*) FROM events")[0][0] == events_after_first + later.appended
    assert_no_error_events(db_path)


async def collect_map(db_path, territories: int, **kw):
    """One round of `[[territories]] all = true` (v2) over a world of `territories`; returns (report,
    the world's codes, the simulator's requests by path)."""
    world = World(seed=5, factions=2, members_per_faction=(3, 4), territories=territories)
    async with await start_simulator(world, keys=[KEY_A], rate_clock="sim") as handle:
        cfg = parse_config({"api_base": handle.url, "interval": "1m", "jitter": 0,
                            "keys": [{"key": "env:TK_A", "owner": "1", "access": "public"}],
                            "territories": [{"all": True, "api": "v2"}]}, env=ENV)
        report, _ = await collect_once(handle, db_path, cfg, **kw)
        return report, set(world.territories), handle.stats()["by_path"]


@pytest.mark.parametrize("territories, asked, raw", [(1234, 3, False), (1000, 3, True), (499, 1, False)])
async def test_territory_ownership_is_paged_by_offset_to_the_last_territory(db_path, territories, asked, raw):
    # The spec's /v2/faction/territoryownership has offset and limit (at most 500) but no `_metadata` links:
    # the collector asks offset 0, 500, 1000, ... until a page comes back shorter than 500 (for 1000
    # territories the third page is empty). Undecoded bodies (raw_bodies, as with an ingest process) too.
    report, codes, by_path = await collect_map(db_path, territories, raw_bodies=raw)
    assert len(codes) == territories
    assert report.polls_failed == 0 and report.gaps == 0
    assert by_path["/v2/faction/territoryownership"] == asked
    owned = {c for (c,) in query(db_path, "SELECT entity_id FROM streams WHERE view = 'v2.ownership'")}
    assert owned == codes
    urls = {u for (u,) in query(db_path, "SELECT DISTINCT source_url FROM events WHERE source_url LIKE "
                                         "'%territoryownership%'")}
    assert {u.split("?")[1] for u in urls} == {"limit=500"} | {f"limit=500&offset={500 * i}" for i in
                                                               range(1, asked)}


async def test_a_list_longer_than_the_page_cap_leaves_a_gap_that_says_so(db_path):
    report, codes, by_path = await collect_map(db_path, 1234, max_pages=2)
    assert by_path["/v2/faction/territoryownership"] == 2
    assert len(query(db_path, "SELECT entity_id FROM streams WHERE view = 'v2.ownership'")) == 1000
    gaps = query(db_path, "SELECT source_url, target, reason FROM gaps ORDER BY source_url")
    assert [(url.split("/", 3)[3], target) for url, target, _ in gaps] == [
        ("v2/faction/territoryownership?limit=500&offset=1000", "torn"),   # the page not asked
        ("v2/torn/territory?limit=250&offset=500", "torn")]                # (the link-paged list, 250 a page)
    assert all("stopped after 2 pages" in reason for _, _, reason in gaps)
    assert report.gaps == 2 and report.polls_failed == 0


# ------------------------------------------------------------------------------------------ every error code
RETRIED = [0, 12, 15, 17]
OTHER_KEY = [2, 10, 13, 18, 14, 5]
PAUSE_ALL = {8: 300, 9: 60, 24: 60}
BUGS = [1, 3, 4, 19, 20, 21, 23, 25, 26, 27, 28, 29, 30]     # 23 on a v2 request: nothing to switch to


def poll_requests(sim) -> int:
    """Requests other than /v2/key/info (asked only when the config learns owners)."""
    stats = sim.stats()
    return stats["requests"] - stats["by_path"].get("/v2/key/info", 0)


@pytest.mark.parametrize("code", RETRIED + [11] + OTHER_KEY + list(PAUSE_ALL) + [6, 7, 16] + BUGS + [22, 77])
async def test_each_error_code_leads_to_its_action(sim, db_path, code):
    player = sim.owner_a
    cfg = config_for(sim, players=[{"id": player, "fetch": ["profile"]}])
    sim.inject_fault("error", code=code, count=1, path="/profile")   # the poll, not the keys' /v2/key/info
    t0 = sim.world.now
    report, collector = await collect_once(sim, db_path, cfg)
    pool = collector.pool
    first = pool.by_fp(fingerprint(KEY_A))              # the least recently used key goes first
    other = pool.by_fp(fingerprint(KEY_B))
    requests = poll_requests(sim)
    job = next(j for j in collector.scheduler.jobs.values() if j.target == f"user:{player}")

    gaps = query(db_path, "SELECT target, error_code, reason FROM gaps")
    assert gaps[0][:2] == (f"user:{player}", code)
    assert fingerprint(KEY_A) in gaps[0][2] and KEY_A not in gaps[0][2]
    assert report.errors[code] == 1
    assert_no_error_events(db_path)
    keys = dict(query(db_path, "SELECT fingerprint, state FROM api_keys"))
    observed = [at for (at,) in query(db_path, "SELECT observed_at FROM events")]

    if code in RETRIED:                                  # same request again after a backoff
        assert requests == 2 and report.polls_ok == 1
        assert first.state == "active" and first.paused_until == 0
    elif code == 11:                                     # the key may change once per 60 s: retried a minute later
        assert requests == 2 and report.polls_ok == 1
        assert first.paused_until == t0 + 60
        assert observed and min(observed) >= t0 + 60     # not after a ~14 s backoff
    elif code in (2, 10):                                # key disabled for good, another key serves
        assert requests == 2 and report.polls_ok == 1
        assert keys[fingerprint(KEY_A)] == "disabled"
    elif code in (13, 18):                               # key paused with a daily re-check
        assert requests == 2 and report.polls_ok == 1
        assert keys[fingerprint(KEY_A)] == "paused" and first.recheck_at == t0 + 86400
    elif code == 14:                                     # that owner stops asking it for an hour (rolling 24 h)
        assert requests == 2 and report.polls_ok == 1
        assert first.blocked == {"profile": t0 + 3600} and other.blocked == {}
    elif code == 5:                                      # that owner backs off for a minute
        assert requests == 2 and report.polls_ok == 1
        assert first.paused_until == t0 + 60 and other.paused_until == 0
    elif code in PAUSE_ALL:                              # every key waits; this poll is a gap
        assert requests == 1 and report.polls_failed == 1
        assert first.paused_until == other.paused_until == t0 + PAUSE_ALL[code]
    elif code == 6:                                      # not found: recorded, polled rarely
        assert requests == 1 and report.polls_failed == 1
        assert query(db_path, "SELECT target, error_code, count FROM target_problems") == [(f"user:{player}", 6, 1)]
        assert job.due >= t0 + 86400 * 0.9
    elif code in (7, 16):                                # permission: recorded once, key kept, other key tried
        assert requests == 2 and report.polls_ok == 1
        assert query(db_path, "SELECT target, error_code FROM target_problems") == [(f"user:{player}", code)]
        assert first.state == "active" and first.paused_until == 0
    elif code == 22:                                     # only in v1: asked through v1 at once, and from then on
        assert requests == 2 and report.polls_ok == 1
        assert job.request.url(sim.url) == f"{sim.url}/user/{player}?selections=profile"
        assert f"asking {sim.url}/user/{player}?selections=profile instead" in gaps[0][2]
        assert query(db_path, "SELECT view FROM streams") == [("v1.profile",)]
    elif code in BUGS:                                   # our request is wrong: no retry, poll rarely
        assert requests == 1 and report.polls_failed == 1
        assert first.state == "active" and job.due >= t0 + 6 * 3600 * 0.9
    else:                                                # unknown code: a gap and a backoff
        assert requests == 1 and report.polls_failed == 1
        assert job.due > t0 + 60


async def test_http_errors_timeouts_and_bad_bodies_are_gaps_and_retried(sim, db_path):
    cfg = config_for(sim, keys=("A",), timeout=1, max_body="64KB", max_tries=2,
                     players=[{"id": sim.owner_a, "fetch": ["profile", "personalstats"]}],   # one request
                     factions=[{"id": sim.faction_a.id, "fetch": ["basic"]}],
                     territories=[{"ids": ["AAC"]}, {"ids": ["CAA"], "api": "v2"}])
    sim.inject_fault("http", status=503, count=1, path="/v2/user")
    sim.inject_fault("slow", delay=1.5, count=1, path="/basic")
    sim.inject_fault("html", count=1, path="/torn/AAC")
    sim.inject_fault("huge", size=200_000, count=1, path="/v2/torn/territory")
    report, _ = await collect_once(sim, db_path, cfg)
    reasons = sorted(r for (r,) in query(db_path, "SELECT reason FROM gaps WHERE error_code IS NULL"))
    assert "HTTP 503" in reasons
    assert "timeout after 1s" in reasons
    assert "body is not JSON (quarantined)" in reasons
    assert sum(r.startswith("body too large") for r in reasons) == 1
    assert report.polls_ok == 3 and report.polls_failed == 1     # a body too large is not tried again
    assert query(db_path, "SELECT count(*) FROM quarantine")[0][0] == 1   # the HTML page, with its reason
    assert_no_error_events(db_path)


# ------------------------------------------------------------------------------------------ no storms
async def run_for(sim, db_path, cfg, seconds):
    clock = SimClock(sim)
    clock.stop_at = sim.world.now + seconds
    store = await Store.open(db_path, create=True)
    try:
        collector = Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep)
        clock.collector = collector
        async with collector:
            report = await asyncio.wait_for(collector.run_forever(), timeout=20)
    finally:
        await store.close()
    return report


@pytest.mark.parametrize("fault", [{"kind": "error", "code": 5}, {"kind": "http", "status": 503}])
async def test_a_stream_of_rate_limits_or_5xx_stays_within_budgets(sim, db_path, fault):
    minutes = 10
    cfg = config_for(sim, players=[{"id": sim.owner_a, "fetch": ["profile", "personalstats"]},
                                   {"id": sim.owner_b, "fetch": ["profile"]}])
    sim.inject_fault(fault["kind"], rate=1.0, **{k: v for k, v in fault.items() if k != "kind"})
    report = await run_for(sim, db_path, cfg, minutes * 60)
    stats = sim.stats()
    per_key = stats["by_key"]
    if fault["kind"] == "error":
        # Each code 5 stops that owner for 60 s: at most one request per owner per minute.
        for key in (KEY_A, KEY_B):
            assert per_key.get(fingerprint(key), 0) <= minutes + 2
    else:
        # Each poll tries at most max_tries (4) times with backoff; polls come once a minute per job.
        assert stats["requests"] <= 3 * (minutes + 1) * 4
    assert report.polls_ok == 0 and report.polls > 0
    assert query(db_path, "SELECT count(*) FROM events")[0][0] == 0
    assert query(db_path, "SELECT count(*) FROM gaps")[0][0] == stats["requests"] + report.deferred


# ------------------------------------------------------------------------------------------ key states
async def test_a_disabled_key_is_never_used_again(sim, db_path):
    cfg = config_for(sim, players=[{"id": sim.owner_a, "fetch": ["profile"]},
                                   {"id": sim.owner_b, "fetch": ["profile"]}])
    sim.inject_fault("error", code=2, count=1, key=KEY_A)
    await collect_once(sim, db_path, cfg)
    used_a = sim.requests_for(KEY_A)
    assert used_a == 1
    for _ in range(3):                                    # restarts, days later
        sim.advance(2 * 86400)
        report, collector = await collect_once(sim, db_path, cfg)
        assert report.polls_ok == 2
        assert collector.pool.by_fp(fingerprint(KEY_A)).state == "disabled"
    assert sim.requests_for(KEY_A) == used_a


@pytest.mark.parametrize("code", [13, 18])
async def test_a_paused_key_comes_back_when_it_works(sim, db_path, code):
    cfg = config_for(sim, keys=("A",), players=[{"id": sim.owner_a, "fetch": ["profile"]}])
    sim.inject_fault("error", code=code, count=1, path="/profile")
    t0 = sim.world.now
    report, _ = await collect_once(sim, db_path, cfg)
    assert report.deferred == 1                           # no other key: the poll waits, as a gap
    assert query(db_path, "SELECT state, recheck_at FROM api_keys") == [("paused", t0 + 86400)]

    sim.advance(3600)                                     # a restart during the pause: key left alone
    before = sim.requests_for(KEY_A)
    report, _ = await collect_once(sim, db_path, cfg)
    assert sim.requests_for(KEY_A) == before and report.deferred == 1

    sim.set_clock(t0 + 86400)                             # the re-check: one trial request, it works
    report, collector = await collect_once(sim, db_path, cfg)
    assert report.polls_ok == 1 and sim.requests_for(KEY_A) == before + 1
    assert query(db_path, "SELECT state, paused_until, recheck_at FROM api_keys") == [("active", None, None)]


async def test_request_now_goes_first_and_resolves_after_commit(sim, db_path):
    cfg = config_for(sim, interval="1h", players=[{"id": sim.owner_a, "fetch": ["profile"]}])
    store = await Store.open(db_path, create=True)
    try:
        collector = Collector(cfg, store.ingest_many, run=store.run)   # the real clock: it idles for 1 h
        async with collector:
            loop_task = asyncio.create_task(collector.run_forever())
            stranger = next(p for p in sim.world.players if p not in (sim.owner_a, sim.owner_b))
            responses = await asyncio.wait_for(collector.request_now(f"user:{stranger}"), timeout=10)
            assert [r.url for r in responses] == [f"{sim.url}/v2/user/{stranger}/profile"]
            rows = await store.run(lambda c: c.execute(
                "SELECT count(*) FROM streams WHERE entity_id = ?", (str(stranger),)).fetchone()[0])
            assert rows == 1                               # committed before the future resolved
            collector.stop()
            report = await asyncio.wait_for(loop_task, timeout=10)
    finally:
        await store.close()
    assert report.polls_ok == 2


# ------------------------------------------------------------------------------------------ owners and spec URLs
@contextlib.asynccontextmanager
async def capturing(sim, db_path, cfg):
    """A started collector on the simulator's clock whose sink keeps the Responses it is handed."""
    clock = SimClock(sim)
    seen: list = []
    store = await Store.open(db_path, create=True)

    async def sink(responses):
        seen.extend(responses)
        return await store.ingest_many(responses)

    try:
        collector = Collector(cfg, sink, run=store.run, clock=clock, sleep=clock.sleep)
        async with collector:
            yield collector, seen
    finally:
        await store.close()


async def collect_capturing(sim, db_path, cfg, rounds=1, between=0):
    """Like collect_once, with the Responses handed to the sink kept; `rounds` on one collector."""
    async with capturing(sim, db_path, cfg) as (collector, seen):
        for i in range(rounds):
            if i:
                sim.advance(between)
            report = await collector.run_once()
    return report, collector, seen


def streams(db_path, entity_id):
    return {view for (view,) in query(db_path, "SELECT view FROM streams WHERE entity_id = ?", str(entity_id))}


@pytest.mark.parametrize("learn", [False, True])
async def test_every_response_names_its_key_and_the_keys_owner(sim, db_path, learn):
    """Own-key URLs (/v2/user?selections=bars,battlestats) name no player: the owner sent with them files
    them. With learn_owners the faction comes from /v2/key/info, which is not stored."""
    a, b = sim.owner_a, sim.owner_b
    cfg = config_for(sim, learn_owners=learn,
                     players=[{"id": a, "fetch": ["profile", "bars", "battlestats"]},
                              {"id": b, "fetch": ["profile"]}],
                     factions=[{"id": sim.faction_a.id, "fetch": ["basic", "members"]}])
    report, collector, seen = await collect_capturing(sim, db_path, cfg)
    assert report.polls_failed == 0 and report.gaps == 0 and len(seen) == report.responses == 4
    faction_of = {a: sim.world.player(a).faction_id, b: sim.world.player(b).faction_id} if learn else {a: None, b: None}
    expected = {fingerprint(KEY_A): Owner(player_id=a, faction_id=faction_of[a]),
                fingerprint(KEY_B): Owner(player_id=b, faction_id=faction_of[b])}
    for response in seen:
        assert response.owner == expected[response.key], response.url
    urls = {r.url.removeprefix(sim.url): r for r in seen}
    assert urls["/v2/user?selections=bars,battlestats"].key == fingerprint(KEY_A)   # a's own key
    assert {r.key for r in seen} == set(expected)                                     # both keys served
    assert {"v2.bars", "v2.battlestats", "v2.profile"} <= streams(db_path, a)
    assert "v2.profile" in streams(db_path, b)
    assert query(db_path, "SELECT count(*) FROM quarantine") == [(0,)]
    key_info = sim.stats()["by_path"].get("/v2/key/info", 0)
    assert key_info == (2 if learn else 0) and not any("/key/" in r.url for r in seen)


async def test_the_api_corrects_a_wrong_owner_in_the_config(sim, db_path, caplog):
    caplog.set_level(logging.WARNING)
    cfg = parse_config({"api_base": sim.url, "interval": "1m", "jitter": 0, "learn_owners": True,
                        "keys": [{"key": "env:TK_A", "owner": "1", "access": "limited"}],
                        "players": [{"id": sim.owner_b, "fetch": ["profile"]}]}, env=ENV)
    report, collector, seen = await collect_capturing(sim, db_path, cfg)
    key = collector.pool.keys[0]
    assert key.owner == str(sim.owner_a) and key.faction == str(sim.faction_a.id)
    assert f"the config says its owner is 1, the API says {sim.owner_a}" in caplog.text
    assert [r.owner for r in seen] == [Owner(player_id=sim.owner_a, faction_id=sim.faction_a.id)]


async def test_owners_are_learned_at_start_and_again_after_an_hour(sim, db_path):
    cfg = config_for(sim, learn_owners=True, players=[{"id": sim.owner_b, "fetch": ["profile"]}])
    asked = []
    async with capturing(sim, db_path, cfg) as (collector, seen):
        for step in (0, 600, 1200, 2400, 600):             # rounds over 80 minutes
            sim.advance(step)
            await collector.run_once()
            asked.append(sim.stats()["by_path"].get("/v2/key/info", 0))
    assert asked == [2, 2, 2, 4, 4]                         # two keys: at start, then after the hour
    assert len(seen) == 5 and not any("/key/" in r.url for r in seen)


async def test_a_factions_own_data_goes_out_with_a_members_key(sim, db_path):
    fa = sim.faction_a
    keys = [{"key": "env:TK_A", "owner": str(sim.owner_a), "access": "limited", "faction": fa.id},
            {"key": "env:TK_B", "owner": str(sim.owner_b), "access": "limited"}]
    cfg = parse_config({"api_base": sim.url, "interval": "1m", "jitter": 0, "keys": keys,
                        "factions": [{"id": fa.id, "fetch": ["basic", "chain(own)", "members(own)"]}]}, env=ENV)
    report, collector, seen = await collect_capturing(sim, db_path, cfg)
    assert report.polls_ok == 2 and report.gaps == 0
    urls = {r.url.removeprefix(sim.url): r for r in seen}
    assert set(urls) == {f"/v2/faction/{fa.id}/basic", "/v2/faction?selections=chain,members"}
    own = urls["/v2/faction?selections=chain,members"]
    assert own.key == fingerprint(KEY_A) and own.owner == Owner(player_id=sim.owner_a, faction_id=fa.id)
    assert {"v2.faction", "v2.chain", "v2.members"} <= streams(db_path, fa.id)
    assert sim.stats()["by_path"]["/v2/key/info"] == 2    # a faction's own data: owners are learned


async def test_members_own_data_is_polled_only_for_members_with_a_key(sim, db_path):
    fa = sim.faction_a
    cfg = config_for(sim, factions=[{"id": fa.id, "fetch": ["basic", "members"], "members": True,
                                     "member_fetch": ["profile", "bars"]}])
    report, _ = await collect_once(sim, db_path, cfg)
    assert report.polls_failed == 0 and report.gaps == 0
    for member in fa.members:
        assert ("v2.bars" in streams(db_path, member)) == (member == sim.owner_a)
        assert "v2.profile" in streams(db_path, member)


async def test_code_22_on_a_combined_request_switches_it_to_v1(sim, db_path):
    b = sim.owner_b
    cfg = config_for(sim, players=[{"id": b, "fetch": ["profile", "personalstats"]}])
    sim.inject_fault("error", code=22, count=1, path="/v2/user")
    report, collector, seen = await collect_capturing(sim, db_path, cfg, rounds=2, between=120)
    paths = sim.stats()["by_path"]
    assert paths["/v2/user"] == 1 and paths["/user/{id}"] == 2       # from then on straight to v1
    assert [r.url.removeprefix(sim.url) for r in seen] == [f"/user/{b}?selections=profile,personalstats"] * 2
    assert {"v1.profile", "v1.personalstats"} <= streams(db_path, b)
    (reason,) = query(db_path, "SELECT reason FROM gaps WHERE error_code = 22")[0]
    assert f"asking {sim.url}/user/{b}?selections=profile,personalstats instead" in reason


async def test_code_22_splits_a_combined_request_and_records_why_when_v1_has_no_such_selection(sim, db_path):
    b = sim.owner_b
    cfg = config_for(sim, players=[{"id": b, "fetch": ["profile", "faction"]}])    # user 'faction': v2 only
    sim.inject_fault("error", code=22, count=1, path="/v2/user")
    async with capturing(sim, db_path, cfg) as (collector, seen):
        report = await collector.run_once()
        assert report.polls_ok == 2 and report.polls_failed == 0
        assert sorted(r.url.removeprefix(sim.url) for r in seen) == [f"/v2/user/{b}/faction",
                                                                     f"/v2/user/{b}/profile"]
        assert {"v2.profile", "v2.faction"} <= streams(db_path, b)
        # The single that still answers 22 has no v1 form: a gap says so, and it is not retried.
        sim.inject_fault("error", code=22, count=1, path="/faction")
        sim.advance(120)
        t0 = sim.world.now
        report = await collector.run_once()
        job = next(j for j in collector.scheduler.jobs.values() if j.request.path == f"v2/user/{b}/faction")
        assert job.due >= t0 + 6 * 3600 * 0.9
    assert report.polls_failed == 1
    (reason,) = query(db_path, "SELECT reason FROM gaps WHERE error_code = 22 ORDER BY id DESC LIMIT 1")[0]
    assert reason.endswith("the collector has no API v1 form of it, not retried")


@pytest.mark.parametrize("fetch, asks, stored", [
    (["v1:profile", "v1:personalstats"], "/v2/user?selections=profile,personalstats&id={id}&cat=all",
     {"v2.profile", "v2.personalstats"}),
    (["v1:armorynews"], None, set()),                       # faction armory news has no v2 form
])
async def test_code_23_switches_a_v1_request_to_v2_where_it_can(sim, db_path, fetch, asks, stored):
    b, fb = sim.owner_b, sim.world.player(sim.owner_b).faction_id
    section = "players" if fetch[0] != "v1:armorynews" else "factions"
    entity = b if section == "players" else fb
    cfg = config_for(sim, **{section: [{"id": entity, "fetch": fetch}]})
    sim.inject_fault("error", code=23, count=1)
    report, collector, seen = await collect_capturing(sim, db_path, cfg)
    (reason,) = query(db_path, "SELECT reason FROM gaps WHERE error_code = 23")[0]
    if asks is None:
        assert report.polls_failed == 1 and not seen
        assert reason.endswith("the collector has no API v2 form of it, not retried")
    else:
        url = sim.url + asks.format(id=entity)
        assert report.polls_ok == 1 and [r.url for r in seen] == [url] and f"asking {url} instead" in reason
        assert stored <= streams(db_path, entity)


async def test_code_14_holds_back_that_category_for_an_hour_not_until_midnight(sim, db_path):
    a = sim.owner_a
    t0 = (sim.world.now // 86400 + 1) * 86400 - 600       # ten minutes before UTC midnight
    sim.set_clock(t0)
    cfg = config_for(sim, keys=("A",), players=[{"id": a, "fetch": ["profile", "personalstats"]}])
    sim.inject_fault("error", code=14, count=1, path="/v2/user")
    async with capturing(sim, db_path, cfg) as (collector, seen):
        report = await collector.run_once()
        # Split: the profile is asked at once; personal stats wait (a gap says why).
        assert [r.url.removeprefix(sim.url) for r in seen] == [f"/v2/user/{a}/profile"]
        assert report.deferred == 1
        rounds = []
        for at in (t0 + 900, t0 + 1800, t0 + 3600):       # past midnight: still waiting; after an hour: asked
            sim.set_clock(at)
            before = sim.stats()["by_path"].get("/v2/user/{id}/personalstats", 0)
            await collector.run_once()
            rounds.append(sim.stats()["by_path"].get("/v2/user/{id}/personalstats", 0) - before)
    assert rounds == [0, 0, 1]
    assert query(db_path, "SELECT reason FROM gaps WHERE error_code IS NULL")[0][0].endswith(
        "(daily read limit (14) for personalstats)")


async def test_a_key_taken_out_of_use_does_not_use_up_the_requests_tries(sim, db_path):
    cfg = config_for(sim, max_tries=1, players=[{"id": sim.owner_b, "fetch": ["profile"]}])
    sim.inject_fault("error", code=2, count=1, path="/profile")
    report, collector = await collect_once(sim, db_path, cfg)
    assert report.polls_ok == 1 and poll_requests(sim) == 2
    assert collector.pool.by_fp(fingerprint(KEY_A)).state == "disabled"


# ------------------------------------------------------------------------------------------ secrets
@pytest.mark.sqlite_only("reads the file and its WAL byte by byte (test_postgres_log looks in every table)")
async def test_keys_never_reach_the_database_wal_or_logs(sim, db_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    cfg = config_for(sim, timeout=1, max_body="64KB",
                     players=[{"id": sim.owner_a, "fetch": ["profile", "battlestats", "v1:profile"]}],
                     factions=[{"id": sim.faction_a.id, "fetch": ["basic", "v1:basic"], "members": True}],
                     territories=[{"ids": ["AAC"]}])
    for kind, extra in (("http", {"status": 502}), ("malformed", {}), ("html", {}), ("slow", {"delay": 1.2}),
                        ("huge", {"size": 100_000})):
        sim.inject_fault(kind, count=1, **extra)
    sim.inject_fault("error", code=2, count=1, key=KEY_B)
    sim.inject_fault("error", code=18, count=1, key=KEY_A)
    sim.inject_fault("error", code=7, count=1, path="/user/")

    clock = SimClock(sim)
    store = await Store.open(db_path, create=True)
    collector = Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep)
    async with collector:
        report = await collector.run_once()
    assert report.gaps >= 8
    wal = Path(f"{db_path}-wal")
    blobs = {"db": db_path.read_bytes(), "wal": wal.read_bytes() if wal.exists() else b""}
    await store.close()
    blobs["db after close"] = db_path.read_bytes()
    captured = capsys.readouterr()
    blobs["logs"] = caplog.text.encode()
    blobs["stdout"] = captured.out.encode() + captured.err.encode()
    blobs["report"] = json.dumps(report.as_dict()).encode()
    assert blobs["wal"] or blobs["db"]
    for where, blob in blobs.items():
        for key in (KEY_A, KEY_B):
            assert key.encode() not in blob, f"a key leaked into {where}"
    for table in ("events", "gaps", "quarantine"):
        assert query(db_path, f"SELECT count(*) FROM {table} WHERE source_url LIKE '%key=%'") == [(0,)]
    assert fingerprint(KEY_A) in caplog.text              # keys are named by fingerprint


# ------------------------------------------------------------------------------------------ the CLI
class ThreadedSimulator:
    """The simulator in its own thread and event loop, for the CLI (which runs its own asyncio.run)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle = self._call(self._start())

    async def _start(self):
        world = make_world()
        factions = list(world.factions.values())
        self.faction = factions[0]
        self.owner = factions[0].members[0]
        return await start_simulator(world, keys=[KEY_A], own_ids={KEY_A: self.owner})

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def advance(self, seconds: int) -> None:
        request = urllib.request.Request(f"{self.handle.url}/__sim/clock", method="POST",
                                         data=json.dumps({"advance": seconds}).encode())
        urllib.request.urlopen(request, timeout=5).read()

    def close(self) -> None:
        self._call(self.handle.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def threaded_sim():
    sim = ThreadedSimulator()
    try:
        yield sim
    finally:
        sim.close()


def write_config(path: Path, sim: ThreadedSimulator, **extra) -> Path:
    lines = [
        'interval = "1m"', "jitter = 0", 'flush_every = "1s"',
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
        "[[keys]]", 'key = "env:TK_A"', f'owner = "{sim.owner}"', 'access = "limited"',
        "[[factions]]", f"id = {sim.faction.id}", 'fetch = ["basic", "members"]', "members = true",
        "[[players]]", f"id = {sim.owner}", 'fetch = ["profile", "battlestats"]',
        "[wars]", "ranked = true", "territory = true",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_collect_once_via_click(threaded_sim, tmp_path):
    from tornstore.cli.main import cli

    cfg = write_config(tmp_path / "collect.toml", threaded_sim)
    db = str(tmp_path / "cli.db")
    args = ["--db", db, "collect", "-c", str(cfg), "--api-base", threaded_sim.handle.url, "--once", "--json"]
    runner = CliRunner()
    first = runner.invoke(cli, args, env={"TK_A": KEY_A})
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert data["polls_failed"] == 0 and data["appended"] > 0 and not data["interrupted"]
    threaded_sim.advance(3 * 86400)
    second = runner.invoke(cli, args, env={"TK_A": KEY_A})
    later = json.loads(second.stdout)
    assert 0 < later["appended"] < data["appended"] and later["unchanged"] > 0
    assert KEY_A not in first.output + second.output

    human = runner.invoke(cli, ["--db", db, "collect", "-c", str(cfg), "--api-base", threaded_sim.handle.url,
                                "--once", "-q"], env={"TK_A": KEY_A})
    assert human.exit_code == 0
    assert "events appended 0" in human.stdout and fingerprint(KEY_A) in human.stdout

    bad = runner.invoke(cli, ["--db", db, "collect", "-c", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 1 and "no config file" in bad.output


def _env() -> dict:
    env = dict(os.environ, TK_A=KEY_A, PYTHONPATH=str(REPO))
    env.pop("TORNSTORE_DB", None)
    return env


def test_collect_once_as_a_real_process(threaded_sim, tmp_path):
    cfg = write_config(tmp_path / "collect.toml", threaded_sim)
    db = tmp_path / "proc.db"
    cmd = [sys.executable, "-m", "tornstore", "--db", str(db), "collect", "-c", str(cfg),
           "--api-base", threaded_sim.handle.url, "--once", "--json"]
    first = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    appended = json.loads(first.stdout)["appended"]
    threaded_sim.advance(3 * 86400)
    second = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert 0 < json.loads(second.stdout)["appended"] < appended
    assert query(db, "SELECT count(*) FROM events")[0][0] == appended + json.loads(second.stdout)["appended"]
    assert KEY_A not in first.stdout + first.stderr + second.stdout + second.stderr


def test_sigint_stops_collect_cleanly(threaded_sim, tmp_path):
    cfg = write_config(tmp_path / "collect.toml", threaded_sim)
    db = tmp_path / "sig.db"
    cmd = [sys.executable, "-m", "tornstore", "--db", str(db), "collect", "-c", str(cfg),
           "--api-base", threaded_sim.handle.url, "-v"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    if query(db, "SELECT count(*) FROM events")[0][0] > 0:
                        break
                except sqlite3.OperationalError:
                    pass
            time.sleep(0.1)
        else:
            pytest.fail("collect never stored anything")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped:" in out and "events appended" in out
    assert KEY_A not in out + err and fingerprint(KEY_A) in err
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    responses = int(out.split("responses ")[1].split(",")[0])
    checked = query(db, "SELECT count(*) FROM streams")[0][0]
    assert responses > 0 and checked > 0


async def test_a_failing_sink_keeps_the_batch_for_the_final_flush(sim, db_path):
    cfg = config_for(sim, batch=1, players=[{"id": sim.owner_a, "fetch": ["profile", "bars"]}])
    store = await Store.open(db_path, create=True)
    calls = []

    async def flaky_sink(responses):
        calls.append(len(responses))
        if len(calls) == 1:
            raise OSError("disk full")
        return await store.ingest_many(responses)

    clock = SimClock(sim)
    try:
        collector = Collector(cfg, flaky_sink, run=store.run, clock=clock, sleep=clock.sleep)
        async with collector:
            with pytest.raises(OSError, match="disk full"):
                await collector.run_once()
    finally:
        await store.close()
    assert query(db_path, "SELECT count(DISTINCT source_url) FROM events") == [(2,)]   # nothing lost


def test_simulate_api_serves_until_interrupted(tmp_path):
    cmd = [sys.executable, "-m", "tornstore", "simulate-api", "--port", "0", "--seed", "3", "--factions", "2",
           "--territories", "50", "--keys", KEY_A]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in first, first + proc.stderr.read()
        url = first.split("listening on ")[1].strip()
        for _ in range(50):
            try:
                world = json.loads(urllib.request.urlopen(f"{url}/__sim/world", timeout=2).read())
                break
            except OSError:
                time.sleep(0.1)
        assert world["seed"] == 3 and len(world["factions"]) == 2
        request = urllib.request.Request(f"{url}/v2/faction/{world['factions'][0]['id']}/basic",
                                         headers={"Authorization": f"ApiKey {KEY_A}"})
        assert "basic" in json.loads(urllib.request.urlopen(request, timeout=2).read())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert KEY_A not in out + err


async def test_the_cli_runs_the_compactor_when_a_utc_month_ends(db_path):
    from tornstore.cli.collect_commands import _MonthlyCompaction

    store = await Store.open(db_path, create=True)
    try:
        hook = _MonthlyCompaction(store)
        jan_31 = 1769817600  # 2026-01-31T00:00:00Z
        await hook(jan_31)
        await hook(jan_31 + 3600)
        assert hook.runs == 0
        await hook(jan_31 + 86400)                         # 2026-02-01: January is closed
        assert hook.runs == 1
        await hook(jan_31 + 2 * 86400)
        assert hook.runs == 1
    finally:
        await store.close()


# ------------------------------------------------------------------------------------------ batching rounds
async def test_rounds_without_flush_wait_for_flush_every_and_lose_nothing(sim, db_path):
    """run_once(flush=False) leaves a round's responses pending until flush_every (simulated) has passed,
    so a caller driving rounds stores several per transaction; close() stores the rest."""
    fa = sim.faction_a
    cfg = config_for(sim, batch=1000, flush_every="10m",
                     factions=[{"id": fa.id, "fetch": ["v1:basic"], "members": False}])
    clock = SimClock(sim)
    store = await Store.open(db_path, create=True)
    batches = []

    async def counting_sink(responses):
        batches.append(len(responses))
        return await store.ingest_many(responses)

    try:
        collector = Collector(cfg, counting_sink, run=store.run, clock=clock, sleep=clock.sleep)
        async with collector:
            for _ in range(7):                      # 7 rounds, 4 simulated minutes apart
                await collector.run_once(flush=False)
                sim.advance(240)
            stored_before_close = sum(batches)
        report = collector.report
    finally:
        await store.close()
    assert stored_before_close < 7 and len(batches) >= 2 and max(batches) >= 3   # several rounds per batch
    assert sum(batches) == 7 == report.responses                                 # and every one stored
    assert query(db_path, "SELECT count(*) FROM streams WHERE last_checked = ?", clock() - 240)[0][0] > 0


async def test_key_use_counts_are_saved_on_a_cadence_and_state_changes_at_once(sim, db_path):
    fa = sim.faction_a
    cfg = config_for(sim, keys=("A",), factions=[{"id": fa.id, "fetch": ["v1:basic"], "members": False}])
    clock = SimClock(sim)
    store = await Store.open(db_path, create=True)
    fp = fingerprint(KEY_A)

    def saved():
        return query(db_path, "SELECT requests, last_error_code FROM api_keys WHERE fingerprint = ?", fp)

    try:
        collector = Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep,
                              usage_every=3600)
        async with collector:
            await collector.run_once()
            assert saved() == [(1, None)]           # the first save
            for _ in range(3):
                sim.advance(240)
                await collector.run_once()
            assert saved() == [(1, None)]           # use counts wait for usage_every...
            sim.inject_fault("error", code=17, count=1)
            sim.advance(240)
            await collector.run_once()
            assert saved()[0][1] == 17              # ...an error code does not
        assert saved()[0][0] == collector.pool.keys[0].requests == 6   # close() saves the counts
    finally:
        await store.close()

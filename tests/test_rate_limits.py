"""The 100 requests a minute per key owner across restarts and clock steps (issue 15 item 5).

Two `collect --once` runs back to back used to send up to twice the limit in a minute: the window was kept
in memory only. And it ran on the wall clock: after a step back of an hour the keys were "busy" for 59
minutes. Now the request times are saved per owner with the key state (the `owner_requests` table) and
loaded at start, and the windows run on a monotonic clock; saved Unix times are read against the wall
clock at load (ahead of it: "just now"; older than the window: dropped) and saved pauses are cut to the
longest their policy sets.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tornstore.eventstore.collector import ApiKey, Collector, KeyPool, parse_config
from tornstore.eventstore.collector import gaps as gapstore
from tornstore.eventstore.collector.keypool import COUNTED, DAY
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.secrets import fingerprint
from tornstore.eventstore.simulator import World, start_simulator
from tornstore.projections.store import Store

from .test_collector_sim import SimClock, query  # SimClock: the world's clock; sleeping moves it

REPO = Path(__file__).resolve().parents[1]
K1, K2, K3 = "AAAAAAAAAAAAAAA1", "BBBBBBBBBBBBBBB2", "CCCCCCCCCCCCCCC3"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


# ------------------------------------------------------------------------------------------ the CLI, twice
LIMIT = 20   # the simulator's per-owner limit and the config's owner_limit: small, so a run is quick


class ThreadedSimulator:
    """The simulator in a thread of its own (the CLI runs in subprocesses), its rate limit on real time."""

    def __init__(self, world: World, **kw):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handle = asyncio.run_coroutine_threadsafe(start_simulator(world, **kw), self.loop).result(timeout=10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.handle.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


@pytest.fixture
def limited_sim():
    world = World(seed=11, factions=1, members_per_faction=(12, 12), territories=20)
    faction = next(iter(world.factions.values()))
    owner = faction.members[0]
    sim = ThreadedSimulator(world, keys=[K1, K2], own_ids={K1: owner, K2: owner}, rate_limit=LIMIT)
    sim.faction, sim.owner = faction, owner
    try:
        yield sim
    finally:
        sim.close()


def test_two_collect_once_runs_back_to_back_stay_within_the_owners_minute(limited_sim, tmp_path):
    """Each run wants 13 requests (the faction, then its 12 members' profiles), both with keys of one owner
    whose limit is 20 a minute. The second run starts where the first left off: 7 more, and the other 6
    polls are deferred (max_wait 2 s: no key is free for a minute) instead of meeting code 5."""
    sim = limited_sim
    config = tmp_path / "collect.toml"
    config.write_text("\n".join([
        'interval = "1m"', "jitter = 0", f"owner_limit = {LIMIT}", 'max_wait = "2s"', "concurrency = 2",
        "[[keys]]", 'key = "env:TK_1"', f'owner = "{sim.owner}"', "budget = 12",
        "[[keys]]", 'key = "env:TK_2"', f'owner = "{sim.owner}"', "budget = 12",
        "[[factions]]", f"id = {sim.faction.id}", 'fetch = ["basic", "members"]', "members = true",
        'member_fetch = ["profile"]',
    ]) + "\n")
    db = tmp_path / "torn.db"
    env = dict(os.environ, TK_1=K1, TK_2=K2, PYTHONPATH=str(REPO))
    env.pop("TORNSTORE_DB", None)
    cmd = [sys.executable, "-m", "tornstore", "--db", str(db), "collect", "-c", str(config),
           "--api-base", sim.handle.url, "--once", "--json", "-q"]
    started = time.monotonic()
    runs = []
    for _ in range(2):
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    elapsed = time.monotonic() - started
    assert elapsed < 60 - 5, "both runs must fall within one minute for the count below to mean anything"

    # The simulator's own counter: every request either key of the owner sent, in less than a minute.
    stats = sim.handle.stats()
    sent = stats["by_key"].get(fingerprint(K1), 0) + stats["by_key"].get(fingerprint(K2), 0)
    assert sent == stats["requests"] == LIMIT
    assert stats["errors"] == {} and stats["rate_limited"] == 0          # no code 5
    assert [(r["requests"], r["polls_ok"], r["deferred"]) for r in runs] == [(13, 13, 0), (7, 7, 6)]
    assert runs[1]["errors_by_code"] == {}
    reasons = [r for (r,) in query(db, "SELECT reason FROM gaps")]
    assert len(reasons) == 6 and all(r.startswith("not polled: no key free until ") for r in reasons)

    # What the second run loaded and saved: the owner's 20 requests of the minute, by key fingerprint.
    (owner, sent_json), = query(db, "SELECT owner, sent FROM owner_requests")
    saved = json.loads(sent_json)
    assert owner == str(sim.owner) and set(saved) <= {fingerprint(K1), fingerprint(K2)}
    assert sum(len(t) for t in saved.values()) == LIMIT
    assert K1 not in sent_json and K2 not in sent_json




async def test_a_restarted_collector_on_a_simulated_clock_waits_out_the_minute(db_path):
    """With an injected (simulated) clock the windows follow it: the second collector finds the first
    one's 7 requests, sends 3, then sleeps (moving the world's clock) until the first ones leave."""
    world = World(seed=5, factions=1, members_per_faction=(8, 8), territories=20)
    players = next(iter(world.factions.values())).members
    async with await start_simulator(world, keys=[K1], own_ids={K1: players[0]}, rate_limit=10,
                                     rate_clock="sim") as sim:
        cfg = parse_config({"api_base": sim.url, "interval": "1m", "jitter": 0, "owner_limit": 10,
                            "keys": [{"key": "env:TK", "owner": str(players[0])}],
                            "players": [{"id": p, "fetch": ["profile"]} for p in players[:7]]}, env={"TK": K1})
        clock = SimClock(sim)
        t0 = clock()
        reports = []
        for _ in range(2):
            async with Store.open(db_path, create=True) as store:
                async with Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep) as c:
                    reports.append(await c.run_once())
        stats = sim.stats()
    assert stats["errors"] == {} and stats["requests"] == 14
    assert [(r.requests, r.polls_ok) for r in reports] == [(7, 7), (7, 7)]
    assert clock() - t0 >= COUNTED                    # the second run waited for the first minute to pass


# ------------------------------------------------------------------------------------------ the key pool
class Clocks:
    """A wall clock and a monotonic one, moved by hand; sleeping moves both."""

    def __init__(self, wall: float = T0, mono: float = 1000.0):
        self.wall, self.mono = wall, mono

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.tick(max(0.0, seconds))
        await asyncio.sleep(0)


def pool_on(clocks: Clocks, *keys: ApiKey, **kw) -> KeyPool:
    return KeyPool(keys, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono, sleep=clocks.sleep, **kw)


def use_up(pool: KeyPool, clocks: Clocks, n: int, step: float = 0.1) -> None:
    for _ in range(n):
        key = pool.choose()
        assert key is not None
        pool.use(key)
        clocks.tick(step)


def test_a_wall_clock_set_back_an_hour_leaves_the_keys_free_after_the_minute():
    clocks = Clocks()
    pool = pool_on(clocks, ApiKey(K1, "1"), ApiKey(K2, "1"))
    use_up(pool, clocks, 100)
    assert pool.choose() is None                          # the owner's 100 are spent
    pool.failed(pool.keys[0], 5)                          # and a code 5 pauses its keys for 60 s
    clocks.wall -= 3600                                   # the wall clock steps back an hour
    assert pool.next_free() - clocks.mono <= COUNTED      # busy for at most a minute, not 59 more
    assert all(k["waits"] <= 60 for k in pool.summary())
    clocks.tick(COUNTED)
    assert pool.choose() is not None
    asyncio.run(pool.acquire())                           # and acquire does not sleep for an hour
    assert clocks.wall < T0 - 3600 + 2 * 60


def db_with(db_path: Path) -> sqlite3.Connection:
    conn = connect_sync(db_path)
    migrate(conn)
    return conn


def save(conn: sqlite3.Connection, pool: KeyPool) -> None:
    gapstore.persist(conn, [], pool.dirty_rows(), [], pool.owner_rows())


def load(conn: sqlite3.Connection, pool: KeyPool) -> None:
    rows, _problems, sent = gapstore.load_state(conn, [k.fp for k in pool.keys], {k.owner for k in pool.keys})
    pool.load_rows(rows)
    pool.load_requests(sent)


def test_a_restart_after_the_clock_was_set_back_counts_saved_times_as_just_now(db_path, caplog):
    clocks = Clocks()
    pool = pool_on(clocks, ApiKey(K1, "1"), ApiKey(K2, "1"), ApiKey(K3, "1"))
    use_up(pool, clocks, 100)
    pool.failed(pool.by_fp(fingerprint(K1)), 11)          # paused_until: a minute from now (key cooldown)
    pool.failed(pool.by_fp(fingerprint(K3)), 13)          # paused for a day, then a trial
    conn = db_with(db_path)
    save(conn, pool)
    assert query(db_path, "SELECT paused_until FROM api_keys WHERE fingerprint = ?", fingerprint(K1)) == [
        (int(clocks.wall + 60),)]                         # saved as Unix times

    # The machine restarts with its wall clock an hour behind; its monotonic clock starts again.
    later = Clocks(wall=clocks.wall - 3600 + 5, mono=50.0)
    fresh = pool_on(later, ApiKey(K1, "1"), ApiKey(K2, "1"), ApiKey(K3, "1"))
    load(conn, fresh)
    close_sync(conn)
    k1, k2, k3 = (fresh.by_fp(fingerprint(k)) for k in (K1, K2, K3))
    # The owner's 100 requests are an hour "in the future": counted as just now, so busy for a minute.
    assert len(fresh.owner_uses["1"]) == 100 and set(fresh.owner_uses["1"]) == {50.0}
    assert fresh.choose() is None and fresh.next_free() == 50.0 + COUNTED
    # Pauses are cut to the longest their policy sets from now, not an hour longer. (A saved row does not
    # say which code set an active key's pause: it is cut to the longest of 5, 11, 8, 9 and 24's.)
    assert k1.paused_until == 50.0 + fresh.longest_pause("active") == 50.0 + 300
    assert k3.state == "paused" and k3.recheck_at == k3.paused_until == 50.0 + DAY
    assert "the clock was set back" in caplog.text and "ahead of the clock" in caplog.text
    later.tick(COUNTED)
    assert fresh.choose() is k2                           # K1 still waits out its (cut) pause


def test_a_restart_keeps_the_requests_of_the_last_minute_and_drops_older_ones(db_path):
    clocks = Clocks()
    pool = pool_on(clocks, ApiKey(K1, "1", budget=100), owner_limit=60)
    use_up(pool, clocks, 30, step=0.0)                    # 30 at T0
    clocks.tick(30)
    use_up(pool, clocks, 25, step=0.0)                    # 25 at T0 + 30
    conn = db_with(db_path)
    save(conn, pool)
    (sent,), = query(db_path, "SELECT sent FROM owner_requests WHERE owner = '1'")
    assert sorted(json.loads(sent)[fingerprint(K1)]) == [T0] * 30 + [T0 + 30] * 25

    restarted = Clocks(wall=T0 + 70, mono=7.0)            # 40 s after the last save, 70 s after the first 30
    fresh = pool_on(restarted, ApiKey(K1, "1", budget=100), owner_limit=60)
    load(conn, fresh)
    assert list(fresh.owner_uses["1"]) == [7.0 - 40] * 25  # the 30 older than the window are gone
    assert list(fresh.keys[0].uses) == [7.0 - 40] * 25     # the key's own budget counts them too
    use_up(fresh, restarted, 35, step=0.0)
    assert fresh.choose() is None
    assert fresh.next_free() == 7.0 - 40 + COUNTED         # when the 25 saved ones leave the window
    save(conn, fresh)                                      # adds its 35 to the 25 (the 30 are dropped)
    (sent,), = query(db_path, "SELECT sent FROM owner_requests WHERE owner = '1'")
    assert sorted(json.loads(sent)[fingerprint(K1)]) == [T0 + 30] * 25 + [T0 + 70] * 35
    close_sync(conn)


def test_collectors_sharing_an_owner_add_up_its_requests(db_path):
    """Two pools with keys of one owner (a bot and a collector) each save their own new requests: the
    saved window holds both, and a failed save is saved next time, not lost nor counted twice."""
    clocks = Clocks()
    first = pool_on(clocks, ApiKey(K1, "7"))
    second = pool_on(clocks, ApiKey(K2, "7"))
    use_up(first, clocks, 30, step=0.0)
    use_up(second, clocks, 20, step=0.0)
    conn = db_with(db_path)
    save(conn, first)
    rows, owners = second.dirty_rows(), second.owner_rows()
    second.save_failed(rows)                              # as if the database had refused the write
    use_up(second, clocks, 5, step=0.0)
    save(conn, second)
    save(conn, first)                                     # nothing new: adds nothing
    (sent,), = query(db_path, "SELECT sent FROM owner_requests WHERE owner = '7'")
    assert {fp: len(t) for fp, t in json.loads(sent).items()} == {fingerprint(K1): 30, fingerprint(K2): 25}
    assert owners and owners[0].owner == "7"
    third = pool_on(clocks, ApiKey(K3, "7"))
    load(conn, third)                                     # another key of the owner: the owner's 55 count
    close_sync(conn)
    assert len(third.owner_uses["7"]) == 55 and not third.keys[0].uses


def test_a_key_whose_owner_the_api_corrects_takes_its_requests_along():
    clocks = Clocks()
    pool = pool_on(clocks, ApiKey(K1, "cfg"), ApiKey(K2, "99"))
    use_up(pool, clocks, 6, step=1.0)                     # 3 each
    pool.set_owner(pool.keys[0], "99")
    assert len(pool.owner_uses["99"]) == 6
    assert [r.owner for r in pool.owner_rows()] == ["99"]
    pool.set_owner(pool.keys[0], "99")                    # the same owner again: nothing counted twice
    assert len(pool.owner_uses["99"]) == 6


# ------------------------------------------------------------------------------------------ a running collector
async def test_a_running_collector_keeps_its_schedule_when_the_wall_clock_steps_back():
    """The schedule runs on the monotonic clock too: after the wall clock steps back an hour, the polls
    go on every minute (they used to wait for the wall clock to catch up, an hour without data)."""
    world = World(seed=5, factions=1, members_per_faction=(3, 3), territories=20)
    player = next(iter(world.factions.values())).members[0]
    clocks = Clocks(wall=T0, mono=1000.0)
    got: list = []
    stepped_at: list[float] = []
    async with await start_simulator(world, keys=[K1]) as sim:
        cfg = parse_config({"api_base": sim.url, "interval": "1m", "jitter": 0,
                            "keys": [{"key": "env:TK", "owner": str(player)}],
                            "players": [{"id": player, "fetch": ["profile"]}]}, env={"TK": K1})

        async def sleep(seconds: float) -> None:
            clocks.tick(max(0.0, seconds))
            if not stepped_at and clocks.mono >= 1000.0 + 150:
                clocks.wall -= 3600
                stepped_at.append(clocks.wall)
            if clocks.mono >= 1000.0 + 600:
                collector.stop()
            await asyncio.sleep(0)

        async def sink(responses: list) -> None:
            got.extend(responses)

        collector = Collector(cfg, sink, clock=lambda: clocks.wall, monotonic=lambda: clocks.mono, sleep=sleep)
        async with collector:
            report = await asyncio.wait_for(collector.run_forever(), timeout=20)
    assert stepped_at and clocks.mono < 1000.0 + 600 + 60      # ten minutes passed, not an hour
    assert report.requests >= 10 and report.polls_ok == report.polls and len(got) == report.responses
    after = [r.observed_at for r in got if r.observed_at >= stepped_at[0] - 1 and r.observed_at < T0]
    assert len(after) >= 7                                     # polls went on after the step, once a minute

"""The collector's pieces without HTTP: key pool limits and states, error policy, config, jobs, scheduler."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tornstore.eventstore.collector import (ApiKey, ApiRequest, ConfigError, KeyPool, KeysBusy, NoUsableKey, TornClient,
                                  build_jobs, parse_config, parse_duration, policy)
from tornstore.eventstore.collector import gaps as gapstore
from tornstore.eventstore.collector.keypool import (BUG, COUNTED, HOUR, KEY_COOLDOWN, OTHER_VERSION, PAUSE_ALL,
                                                    RETRY, RETRY_OTHER_KEY, TARGET, UNKNOWN)
from tornstore.eventstore.collector.scheduler import (BUG as OUT_BUG, NOT_FOUND, OK, RARE_DENIED, RARE_NOT_FOUND,
                                            Scheduler, member_ids)
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.secrets import fingerprint

K1, K2, K3 = "AAAAAAAAAAAAAAA1", "BBBBBBBBBBBBBBB2", "CCCCCCCCCCCCCCC3"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


class Clock:
    """A clock tests move by hand; its sleep moves it."""

    def __init__(self, t: float = T0):
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def pool_of(*keys: ApiKey, clock: Clock | None = None, **kw) -> tuple[KeyPool, Clock]:
    clock = clock or Clock()
    return KeyPool(keys, clock=clock, sleep=clock.sleep, **kw), clock


# ------------------------------------------------------------------------------------------ choosing keys
def test_least_recently_used_key_with_enough_access():
    pool, clock = pool_of(ApiKey(K1, "1", access=0), ApiKey(K2, "2", access=2), ApiKey(K3, "3", access=2))
    picks = []
    for _ in range(4):
        key = pool.choose(access=2)
        pool.use(key)
        picks.append(key.secret)
    assert picks == [K2, K3, K2, K3]            # K1 is public only: never picked for a limited request
    assert pool.choose(access=0).secret == K1   # the least recently used of all


def test_own_only_requests_use_the_players_own_key():
    pool, _ = pool_of(ApiKey(K1, "100", access=3), ApiKey(K2, "200", access=2))
    assert pool.choose(access=2, own_id="200").secret == K2
    assert pool.choose(access=2, own_id="300") is None
    assert pool.next_free(access=2, own_id="300") is None
    with pytest.raises(NoUsableKey, match="player 300"):
        asyncio.run(pool.acquire(access=2, own_id="300"))


def test_faction_requests_use_a_members_key_and_key_info_its_own_key():
    pool, _ = pool_of(ApiKey(K1, "100", access=2, faction="9420"), ApiKey(K2, "200", access=2, faction="555"),
                      ApiKey(K3, "300", access=2))
    picks = set()
    for _ in range(3):
        key = pool.choose(access=1, own_faction="9420")
        pool.use(key)
        picks.add(key.secret)
    assert picks == {K1}                        # only the member of 9420, however often
    assert pool.choose(own_faction="777") is None
    with pytest.raises(NoUsableKey, match="member of faction 777"):
        asyncio.run(pool.acquire(own_faction="777"))
    assert pool.choose(key_fp=fingerprint(K3)).secret == K3
    pool.failed(pool.keys[2], 2)
    with pytest.raises(NoUsableKey, match=f"key {fingerprint(K3)} is not usable"):
        asyncio.run(pool.acquire(key_fp=fingerprint(K3)))


def test_key_budget_and_owner_limit_over_a_rolling_minute():
    # Two keys of one owner (limit 5/min together), one with its own budget of 3.
    pool, clock = pool_of(ApiKey(K1, "1", budget=3), ApiKey(K2, "1", budget=60), owner_limit=5)
    used = []
    for _ in range(5):
        key = pool.choose()
        pool.use(key)
        used.append(key.secret)
        clock.t += 1
    assert used.count(K1) <= 3
    assert pool.choose() is None                        # the owner's 5 are spent
    # The first use leaves the window at T0 + 60, and the pool waits a second more (SEND_MARGIN): Torn
    # counts a request when it arrives, after the pool sent it.
    assert COUNTED == 61.0
    assert pool.next_free() == T0 + COUNTED
    clock.t = T0 + COUNTED - 0.5
    assert pool.choose() is None
    clock.t = T0 + COUNTED
    assert pool.choose() is not None


async def test_acquire_waits_through_the_injected_sleep():
    pool, clock = pool_of(ApiKey(K1, "1", budget=2))
    for _ in range(2):
        await pool.acquire()
    start = clock.t
    await pool.acquire()                        # the third waits for the window, in fake time
    assert clock.t - start >= 60
    assert sum(clock.slept) >= 60
    await pool.acquire()                        # both early uses left the window together
    with pytest.raises(KeysBusy) as info:
        await pool.acquire(deadline=clock.t + 5)  # budget spent again: not free within 5 s
    assert info.value.free_at > clock.t + 5


# ------------------------------------------------------------------------------------------ error codes
@pytest.mark.parametrize("code, action", [
    (0, RETRY), (11, RETRY), (12, RETRY), (15, RETRY), (17, RETRY),
    (5, RETRY_OTHER_KEY), (2, RETRY_OTHER_KEY), (10, RETRY_OTHER_KEY), (13, RETRY_OTHER_KEY),
    (18, RETRY_OTHER_KEY), (14, RETRY_OTHER_KEY),
    (8, PAUSE_ALL), (9, PAUSE_ALL), (24, PAUSE_ALL),
    (6, TARGET), (7, TARGET), (16, TARGET),
    (1, BUG), (3, BUG), (4, BUG), (21, BUG), (22, OTHER_VERSION), (23, OTHER_VERSION), (30, BUG),
    (31, UNKNOWN), (99, UNKNOWN), (-1, UNKNOWN),
])
def test_every_code_has_a_policy(code, action):
    assert policy(code) == action


@pytest.mark.parametrize("code", [2, 10])
def test_codes_2_and_10_disable_the_key_for_good(code):
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "2"))
    key = pool.choose()
    pool.use(key)
    pool.failed(key, code)
    assert key.state == "disabled"
    clock.t += 10 * 86400
    assert all(pool.choose() is not key for _ in range(3))
    assert pool.candidates() == [pool.by_fp(fingerprint(K2))]


@pytest.mark.parametrize("code", [13, 18])
def test_codes_13_and_18_pause_then_one_trial_brings_the_key_back(code):
    pool, clock = pool_of(ApiKey(K1, "1"))
    key = pool.choose()
    pool.use(key)
    pool.failed(key, code)
    assert (key.state, key.recheck_at) == ("paused", T0 + 86400)
    assert pool.choose() is None
    clock.t = T0 + 86400
    trial = pool.choose()
    assert trial is key
    pool.use(trial)
    assert pool.choose() is None                # only one trial request at a time
    pool.succeeded(trial)
    assert key.state == "active" and key.recheck_at is None
    assert pool.choose() is key


def test_a_failed_trial_pauses_the_key_for_another_period():
    pool, clock = pool_of(ApiKey(K1, "1"))
    key = pool.keys[0]
    pool.use(key)
    pool.failed(key, 18)
    clock.t = T0 + 86400
    pool.use(pool.choose())
    pool.failed(key, 18)
    assert key.state == "paused" and key.recheck_at == T0 + 2 * 86400


def test_code_5_backs_off_every_key_of_that_owner_only():
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "1"), ApiKey(K3, "2"))
    key = pool.keys[0]
    pool.use(key)
    pool.failed(key, 5)
    assert [k.paused_until for k in pool.keys] == [T0 + 60, T0 + 60, 0.0]
    assert pool.choose().secret == K3
    clock.t = T0 + 60
    assert pool.choose().secret in (K1, K2)


def test_after_a_rate_limit_pause_one_probe_goes_first():
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "1"))
    pool.use(pool.keys[0])
    pool.failed(pool.keys[0], 5)
    clock.t = T0 + 60
    probe = pool.choose()
    pool.use(probe)
    assert pool.choose() is None                # the owner's other key waits for the probe's answer
    pool.succeeded(probe)
    assert pool.choose() is not None
    # A probe that is rate limited again pauses the owner again.
    pool.use(pool.choose())
    pool.failed(pool.keys[0], 5)
    assert pool.choose() is None and pool.next_free() == pytest.approx(T0 + 120)


def test_code_8_stops_every_key_for_minutes_and_9_24_briefly():
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "2"))
    pool.failed(pool.keys[0], 8)
    assert all(k.paused_until == T0 + 300 for k in pool.keys)
    assert pool.choose() is None
    clock.t = T0 + 300
    pool.failed(pool.keys[1], 24)
    assert all(k.paused_until == T0 + 360 for k in pool.keys)
    clock.t = T0 + 360
    assert pool.choose() is not None


def test_code_14_pauses_that_cloud_category_of_that_owner_over_a_rolling_day():
    """The 50,000 rows are counted over a rolling 24 h: the limit frees up gradually, not at UTC midnight.
    An hour's pause, doubled at each further 14, never more than a day; an answer ends the backoff."""
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "1"), ApiKey(K3, "2"))
    clock.t = T0 + 86400 - 60                   # a minute before UTC midnight: midnight would be too soon
    a1, a2, b = pool.keys
    pool.failed(a1, 14, "profile,personalstats")
    # Every key of that owner stops asking personal stats; the other owner's key and other selections go on.
    assert pool.choose(category="personalstats", exclude={b.fp}) is None
    assert pool.choose(category="personalstats") is b
    assert pool.choose(category="profile,personalstats", exclude={b.fp}) is None
    assert pool.choose(category="profile", exclude={b.fp}) in (a1, a2)
    assert pool.next_free(category="personalstats", exclude={b.fp}) == clock.t + HOUR
    waits = []
    for _ in range(7):                           # still at the limit at every probe: 2 h, 4 h, ... 24 h at most
        clock.t = pool.next_free(category="personalstats", exclude={b.fp})
        probe = pool.choose(category="personalstats", exclude={b.fp})
        pool.use(probe)
        start = clock.t
        pool.failed(probe, 14, "personalstats")
        waits.append((pool.next_free(category="personalstats", exclude={b.fp}) - start) / HOUR)
    assert waits == [2, 4, 8, 16, 24, 24, 24]
    clock.t = pool.next_free(category="personalstats", exclude={b.fp})
    probe = pool.choose(category="personalstats", exclude={b.fp})
    pool.use(probe)
    pool.succeeded(probe, "personalstats")       # rows have aged out: the next 14 starts at an hour again
    pool.failed(probe, 14, "personalstats")
    assert pool.next_free(category="personalstats", exclude={b.fp}) == clock.t + HOUR
    # news, events and the log are categories of their own; a selection no category names blocks itself.
    pool.failed(b, 14, "news")
    assert pool.choose(category="personalstats", exclude={a1.fp, a2.fp}) is b
    assert pool.choose(category="news", exclude={a1.fp, a2.fp}) is None


def test_code_11_waits_60_seconds_for_that_key():
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "2"))
    key = pool.keys[0]
    pool.use(key)
    pool.failed(key, 11)
    assert key.state == "active" and key.paused_until == T0 + KEY_COOLDOWN == T0 + 60
    assert pool.choose() is pool.keys[1]         # another key is not held back
    assert pool.next_free(exclude={pool.keys[1].fp}) == T0 + 60


@pytest.mark.parametrize("code", [6, 7, 16, 1, 4, 22, 0, 17])
def test_target_bug_and_transient_codes_leave_the_key_alone(code):
    pool, _ = pool_of(ApiKey(K1, "1"))
    key = pool.keys[0]
    pool.use(key)
    pool.failed(key, code)
    assert key.state == "active" and key.paused_until == 0.0
    assert key.last_error_code == code
    assert pool.choose() is key


def test_key_state_survives_a_restart(db_path):
    pool, clock = pool_of(ApiKey(K1, "1"), ApiKey(K2, "2"), ApiKey(K3, "3"))
    for key in pool.keys:
        pool.use(key)
    pool.failed(pool.keys[0], 2)
    pool.failed(pool.keys[1], 18)
    conn = connect_sync(db_path)
    migrate(conn)
    gapstore.persist(conn, [], pool.dirty_rows(), [])
    close_sync(conn)

    conn = connect_sync(db_path)
    rows = gapstore.load_keys(conn, [fingerprint(k) for k in (K1, K2, K3)])
    states = gapstore.key_states(conn)
    close_sync(conn)
    fresh, _ = pool_of(ApiKey(K1, "1"), ApiKey(K2, "2"), ApiKey(K3, "3"), clock=clock)
    fresh.load_rows(rows)
    assert [k.state for k in fresh.keys] == ["disabled", "paused", "active"]
    assert fresh.keys[1].recheck_at == int(T0 + 86400)
    assert [k.requests for k in fresh.keys] == [1, 1, 1]
    assert fresh.choose().secret == K3
    # The table holds fingerprints, never keys.
    assert {s["fingerprint"] for s in states} == {fingerprint(k) for k in (K1, K2, K3)}
    assert not any(k in repr(states) for k in (K1, K2, K3))


# ------------------------------------------------------------------------------------------ config
ENV = {"TK1": K1, "TK2": K2}


def config(**extra):
    data = {"keys": [{"key": "env:TK1", "owner": "100", "access": "limited"},
                     {"key": "env:TK2", "owner": "200"}]}
    data.update(extra)
    return parse_config(data, env=ENV)


def test_durations():
    assert parse_duration("4m", "x") == 240
    assert parse_duration("1h30m", "x") == 5400
    assert parse_duration("45s", "x") == 45
    assert parse_duration(90, "x") == 90
    assert parse_duration("1d", "x") == 86400
    with pytest.raises(ConfigError):
        parse_duration("soon", "x")


@pytest.mark.parametrize("data, message", [
    ({"interval": "10s", "players": [{"id": 1}]}, "30 s minimum"),
    ({"players": [{"id": 1, "fetch": ["profile"], "interval": 5}]}, "30 s minimum"),
    ({"players": [{"id": -3}]}, "positive id"),
    ({"players": [{"id": 1, "fetch": ["v1:personalstats:networth"]}]}, "v1 items take no argument"),
    ({"factions": [{"id": 1, "fetch": ["rackets(own)"]}]}, "cannot be \\(own\\)"),
    ({"factions": [{"id": 1, "fetch": ["battlestats"]}]}, "not a v2 faction selection"),
    ({"players": [{"id": 100, "fetch": ["battlestats"]}], "keys": [{"key": "env:TK2", "owner": "200"}]},
     "owner = \"100\""),
    ({"keys": [{"key": "env:TK1", "owner": "1", "faction": "x"}], "players": [{"id": 1}]}, "positive id"),
    ({"territories": [{"ids": ["AAC"], "all": True}]}, "either ids"),
    ({"territories": [{"ids": ["aac"]}]}, "territory codes"),
    ({}, "nothing to poll"),
    ({"players": [{"id": 1}], "colour": "red"}, "unknown setting"),
    ({"players": [{"id": 1}], "api_base": "ftp://x"}, "http"),
])
def test_config_mistakes_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        config(**data)


def test_config_key_problems_never_echo_the_key():
    bad = "ABC123secretXYZ!"
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"key": bad, "owner": "1"}], "players": [{"id": 1}]}, env={})
    assert bad not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": [{"key": "env:NOPE", "owner": "1"}], "players": [{"id": 1}]}, env={})
    assert "NOPE is not set" in str(info.value)
    with pytest.raises(ConfigError, match="same key"):
        parse_config({"keys": [{"key": K1, "owner": "1"}, {"key": "env:TK1", "owner": "2"}],
                      "players": [{"id": 1}]}, env=ENV)


def test_jobs_from_config_merge_v1_and_v2_and_route_own_selections():
    cfg = config(
        factions=[{"id": 9420, "fetch": ["basic", "members", "v1:basic", "v1:chain"], "members": True}],
        players=[{"id": 100, "fetch": ["profile", "personalstats:networth", "battlestats", "bars", "v1:profile",
                                       "v1:bars"]}],
        territories=[{"all": True}, {"ids": ["CAA", "AAC"]}, {"all": True, "api": "v2", "interval": "10m"}],
        wars={"ranked": True, "territory": True, "interval": "2m"},
    )
    urls = {j.request.url("https://api.torn.com"): j for j in build_jobs(cfg)}
    assert set(urls) == {
        "https://api.torn.com/v2/faction?selections=basic,members&id=9420",
        "https://api.torn.com/faction/9420?selections=basic,chain",
        "https://api.torn.com/v2/user?selections=profile,personalstats&id=100&cat=networth",
        "https://api.torn.com/v2/user?selections=battlestats,bars",       # no id: the key says whose
        "https://api.torn.com/user/100?selections=profile,bars",
        # [[territories]] all (v1) and [wars] share one request, polled at the shorter interval
        "https://api.torn.com/torn/?selections=territory,rankedwars,territorywars",
        "https://api.torn.com/torn/AAC,CAA?selections=territory",
        "https://api.torn.com/v2/torn/territory?limit=250",
        "https://api.torn.com/v2/faction/territoryownership?limit=500",
    }
    assert urls["https://api.torn.com/torn/?selections=territory,rankedwars,territorywars"].interval == 120
    own = urls["https://api.torn.com/v2/user?selections=battlestats,bars"].request
    assert (own.own_id, own.access) == ("100", 2)                         # player 100's key, limited
    public = urls["https://api.torn.com/v2/user?selections=profile,personalstats&id=100&cat=networth"].request
    assert public.own_id is None and public.access == 0                   # any key
    bars = urls["https://api.torn.com/user/100?selections=profile,bars"].request
    assert bars.own_id == "100"                  # merged with an own-only selection: the player's key
    assert urls["https://api.torn.com/v2/torn/territory?limit=250"].paged
    assert urls["https://api.torn.com/v2/faction?selections=basic,members&id=9420"].members_of == 9420
    # Before: one request per v2 item (basic, members, profile, personalstats, battlestats, bars): 6; now 3.
    assert sum(1 for u in urls if "/v2/faction?" in u or "/v2/user" in u) == 3


# ------------------------------------------------------------------------------------------ scheduler
def test_on_demand_goes_ahead_of_overdue_background_polls():
    cfg = config(players=[{"id": 1, "fetch": ["profile"]}, {"id": 2, "fetch": ["profile"]}])
    sched = Scheduler(build_jobs(cfg), jitter=0)
    sched.start(T0, spread=False)
    sched.request_now("user:2")
    sched.request_now("user:555")                # not configured: a one-off profile poll
    first, second = sched.pop_due(T0 + 1000), sched.pop_due(T0 + 1000)
    assert (first.target, first.origin) == ("user:2", "ondemand")
    assert (second.target, second.request.path) == ("user:555", "v2/user/555/profile")
    assert sched.pop_due(T0 + 1000).origin == "config"
    with pytest.raises(ValueError):
        sched.request_now("nonsense")


def test_outcomes_set_the_next_poll():
    cfg = config(players=[{"id": 1, "fetch": ["profile"], "interval": "1m"}])
    sched = Scheduler(build_jobs(cfg), jitter=0)
    sched.start(T0, spread=False)
    job = sched.pop_due(T0)
    sched.done(job, OK, T0)
    assert job.due == T0 + 60
    sched.done(job, NOT_FOUND, T0)
    assert job.due == T0 + RARE_NOT_FOUND
    sched.done(job, OUT_BUG, T0)
    assert job.due == T0 + RARE_DENIED


def test_members_come_and_go():
    cfg = config(factions=[{"id": 9, "fetch": ["basic"], "members": True}], players=[{"id": 2}])
    sched = Scheduler(build_jobs(cfg), jitter=0,
                      member_fetch={9: (cfg.factions[0].member_fetch, 300.0)})
    added, removed = sched.update_members(9, [1, 2, 3], T0)
    assert sorted(j.target for j in added) == ["user:1", "user:3"]   # user:2 is configured on its own
    added, removed = sched.update_members(9, [1, 4], T0)
    assert [j.target for j in added] == ["user:4"] and removed == [2, 3]
    assert sorted(j.target for j in sched.jobs.values() if j.target.startswith("user:")) == \
        ["user:1", "user:2", "user:4"]
    assert member_ids({"members": [{"id": 5}, {"id": 6}]}) == [5, 6]
    assert member_ids({"members": {"7": {}, "8": {}}}) == [7, 8]


# ------------------------------------------------------------------------------------------ client
class _RaisingSession:
    """Stands in for aiohttp.ClientSession: every GET fails with the URL (and its key) in the message."""

    def __init__(self, exc_type):
        self.exc_type = exc_type

    def get(self, url, **kw):
        raise self.exc_type(url)

    async def close(self):
        pass


@pytest.mark.parametrize("exc_type", [aiohttp.InvalidURL, aiohttp.ClientPayloadError, ValueError, OSError])
async def test_client_failures_never_carry_the_key(exc_type):
    client = TornClient("https://api.torn.com", secrets=[K1], session=_RaisingSession(exc_type))
    result = await client.fetch(ApiRequest("user/1", (("selections", "profile"),)), K1)
    assert result.failure and K1 not in result.failure
    assert result.url == "https://api.torn.com/user/1?selections=profile"


def test_next_page_links_stay_on_the_api_host_and_drop_keys():
    client = TornClient("https://api.torn.com")
    req = ApiRequest("v2/torn/territory", (("limit", "250"),))
    body = {"_metadata": {"links": {"next": "https://api.torn.com/v2/torn/territory?limit=250&offset=250&key=X"}}}
    nxt = client.next_page(req, body)
    assert nxt.url("https://api.torn.com") == "https://api.torn.com/v2/torn/territory?limit=250&offset=250"
    evil = {"_metadata": {"links": {"next": "https://evil.example/v2/torn/territory?offset=250"}}}
    assert client.next_page(req, evil) is None
    assert client.next_page(req, {"_metadata": {"links": {"next": None}}}) is None


def test_the_example_config_and_the_docstring_example_parse():
    import tomllib
    from pathlib import Path

    from tornstore.eventstore.collector import config as config_module
    from tornstore.eventstore.collector import load_config

    env = {"TORN_KEY_1": K1, "TORN_KEY_2": K2}
    example = load_config(Path(__file__).resolve().parents[1] / "examples" / "collect.toml", env=env)
    assert len(example.keys) == 2 and example.factions[0].members
    doc = config_module.__doc__
    text = doc[doc.index('    api_base = '):doc.index("Keys: ")]
    data = tomllib.loads("\n".join(line[4:] for line in text.splitlines()))
    parsed = parse_config(data, env=env)
    assert parsed.wars.interval == 120 and parsed.territories[0].ids == ["AAC", "CAA"]
    # The README's config too (its faction's own news needs the key's `faction`).
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Collecting from the Torn API"):]
    block = section[section.index("```toml\n") + 8:section.index("```\n", section.index("```toml\n") + 8)]
    jobs = build_jobs(parse_config(tomllib.loads(block), env=env))
    assert "https://api.torn.com/v2/faction?selections=basic,members,wars&id=9420" in {
        j.request.url("https://api.torn.com") for j in jobs}


def test_collectors_sharing_a_key_add_up_its_request_count(db_path):
    """Two pools with the same key (two collectors, or a bot and a collector) each save what they used:
    the saved count is the sum, not whichever saved last; a failed save is added next time."""
    conn = connect_sync(db_path)
    migrate(conn)
    first, _ = pool_of(ApiKey(K1, "1"))
    second, _ = pool_of(ApiKey(K1, "1"))
    for _ in range(3):
        first.use(first.keys[0])
    for _ in range(5):
        second.use(second.keys[0])
    gapstore.persist(conn, [], first.dirty_rows(), [])
    lost = second.dirty_rows()
    second.save_failed(lost)              # as if the database had refused the write
    second.use(second.keys[0])
    gapstore.persist(conn, [], second.dirty_rows(), [])
    gapstore.persist(conn, [], first.dirty_rows(), [])   # nothing new: adds nothing
    assert [s["requests"] for s in gapstore.key_states(conn)] == [9]
    close_sync(conn)

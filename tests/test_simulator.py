"""The offline Torn API simulator: real HTTP server on 127.0.0.1, real shapes, faults, limits, determinism."""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tornstore.eventstore.secrets import fingerprint
from tornstore.eventstore.simulator import Ctx, Rates, World, render, start_simulator
from tornstore.eventstore.simulator.world import DAY, build_territories

from .conftest import FIXTURES

KEY = "AbCdEfGh12345678"
OTHER_KEY = "ZzYyXxWw98765432"

# Key sets copied from the fixtures in tests/fixtures/torn-api/fixtures (checked against them below).
STATUS_KEYS = {"description", "details", "state", "color", "until"}
V1_PROFILE_KEYS = {"rank", "level", "gender", "property", "signup", "awards", "friends", "enemies", "forum_posts",
                   "karma", "age", "role", "donator", "player_id", "name", "property_id", "revivable", "life",
                   "status", "job", "faction", "married", "basicicons", "states", "last_action"}
V1_BASIC_KEYS = {"level", "gender", "player_id", "name", "status"}
V1_FACTION_KEYS = {"ID", "name", "tag", "tag_image", "leader", "co-leader", "respect", "age", "capacity", "best_chain",
                   "rank", "ranked_wars", "members", "peace", "territory_wars", "raid_wars"}
V1_MEMBER_KEYS = {"name", "level", "days_in_faction", "last_action", "status", "position"}
V1_BARS_COOLDOWNS_KEYS = {"chain", "cooldowns", "energy", "happy", "life", "nerve", "server_time"}
V1_TERRITORY_KEYS = {"sector", "size", "density", "slots", "daily_respect", "faction", "coordinate_x",
                     "coordinate_y", "neighbors"}
V1_RACKET_KEYS = {"name", "level", "reward", "created", "changed", "faction"}
V1_CHAIN_KEYS = {"current", "max", "timeout", "modifier", "cooldown", "start", "end"}
V2_PROFILE_KEYS = {"age", "awards", "donator_status", "enemies", "faction_id", "forum_posts", "friends", "gender",
                   "honor_id", "id", "image", "karma", "last_action", "level", "life", "name", "property", "rank",
                   "revivable", "role", "signed_up", "spouse", "status", "title"}
V2_BASIC_KEYS = {"id", "name", "level", "gender", "status"}
V2_MEMBER_KEYS = {"id", "name", "level", "days_in_faction", "last_action", "status", "revive_setting", "position",
                  "is_revivable", "is_on_wall", "is_in_oc", "has_early_discharge"}
V2_FACTION_BASIC_KEYS = {"id", "name", "tag", "tag_image", "leader_id", "co_leader_id", "respect", "days_old",
                         "capacity", "members", "is_enlisted", "rank", "best_chain"} | {"banner_image"}  # spec 6.6.1
V2_RANKEDWAR_KEYS = {"id", "start", "end", "target", "winner", "factions"}
V2_CHAIN_KEYS = {"cooldown", "current", "end", "id", "max", "modifier", "start", "timeout"}


def _fixture(rel: str) -> dict:
    return json.loads((FIXTURES / rel).read_text())


def test_embedded_key_sets_match_the_fixtures():
    assert set(_fixture("v1/user_profile.json")) - {"competition"} == V1_PROFILE_KEYS
    assert set(_fixture("v1/user_basic.json")) == V1_BASIC_KEYS
    faction = _fixture("v1/faction_basic_with_members.json")
    assert set(faction) == V1_FACTION_KEYS
    assert all(set(m) | {"position"} == V1_MEMBER_KEYS for m in faction["members"].values())
    assert set(_fixture("v1/user_bars_cooldowns_sanitized_capture.json")) == V1_BARS_COOLDOWNS_KEYS
    assert all(set(t) == V1_TERRITORY_KEYS for t in _fixture("v1/torn_territory_by_ids.json")["territory"].values())
    assert all(set(r) - {"war"} == V1_RACKET_KEYS for r in _fixture("v1/torn_rackets.json")["rackets"].values())
    assert set(_fixture("v1/faction_chain.json")["chain"]) == V1_CHAIN_KEYS
    assert set(_fixture("v2/user_profile_sanitized_capture.json")["profile"]) == V2_PROFILE_KEYS
    assert set(_fixture("v2/user_basic_swagger_example.json")["profile"]) == V2_BASIC_KEYS
    assert all(set(m) == V2_MEMBER_KEYS for m in _fixture("v2/faction_members.json")["members"])
    assert set(_fixture("v2/faction_basic.json")["basic"]) == V2_FACTION_BASIC_KEYS - {"banner_image"}
    assert set(_fixture("v2/faction_rankedwars_captured_excerpt.json")["rankedwars"][0]) == V2_RANKEDWAR_KEYS
    assert set(_fixture("v2/faction_chain_sanitized_capture.json")["chain"]) == V2_CHAIN_KEYS


# ---- helpers ----------------------------------------------------------------------------------------

@pytest.fixture
async def server():
    world = World(seed=1, factions=3, members_per_faction=(8, 12), territories=300)
    handle = await start_simulator(world, rate_limit=None)
    async with aiohttp.ClientSession() as session:
        handle.session = session
        yield handle
    await handle.close()


async def call(handle, path: str, key: str | None = KEY, headers: dict | None = None, raw: bool = False):
    url = path if path.startswith("http") else handle.url + path
    params = {"key": key} if key is not None else None
    async with handle.session.get(url, params=params, headers=headers or {}) as resp:
        body = await resp.read()
        if raw:
            return resp.status, resp.headers.get("Content-Type", ""), body
        return json.loads(body)


def error_code(body: dict) -> int | None:
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


def some_member(world: World, index: int = 3) -> int:
    return world.factions[next(iter(world.factions))].members[index]


def pick_status(world: World, state: str) -> int:
    """A member forced into `state`, so shape tests see the fields that state brings."""
    pid = some_member(world, 2)
    world.set_status(pid, state, 3600, details="Mugged by Someone" if state == "Hospital" else "")
    return pid


# ---- shapes -----------------------------------------------------------------------------------------

async def test_v1_user_shapes(server):
    world = server.world
    pid = some_member(world)
    body = await call(server, f"/user/{pid}?selections=profile")
    assert set(body) == V1_PROFILE_KEYS
    assert set(body["status"]) == STATUS_KEYS
    assert set(body["life"]) == {"current", "maximum", "increment", "interval", "ticktime", "fulltime"}
    assert set(body["faction"]) == {"position", "faction_id", "days_in_faction", "faction_name", "faction_tag"}
    assert body["donator"] in (0, 1) and body["revivable"] in (0, 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body["signup"])

    assert set(await call(server, f"/user/{pid}?selections=basic")) == V1_BASIC_KEYS
    merged = await call(server, f"/user/{pid}?selections=profile,personalstats")
    assert set(merged) == V1_PROFILE_KEYS | {"personalstats"}
    assert "networth" in merged["personalstats"] and "strength" not in merged["personalstats"]

    own = await call(server, "/user/?selections=bars,cooldowns,battlestats,personalstats")
    assert V1_BARS_COOLDOWNS_KEYS <= set(own)
    assert {"strength", "defense", "speed", "dexterity", "total", "strength_modifier", "strength_info"} <= set(own)
    assert own["personalstats"]["totalstats"] == own["total"]
    assert set(own["cooldowns"]) == {"booster", "drug", "medical"}


async def test_v1_faction_and_torn_shapes(server):
    world = server.world
    fid = next(iter(world.factions))
    body = await call(server, f"/faction/{fid}")  # basic is the default selection
    assert set(body) == V1_FACTION_KEYS
    assert all(set(m) == V1_MEMBER_KEYS for m in body["members"].values())
    assert list(body["members"]) == [str(p) for p in world.factions[fid].members]
    assert set(body["rank"]) == {"level", "name", "division", "position", "wins"}
    chain = await call(server, f"/faction/{fid}?selections=chain,territory")
    assert set(chain["chain"]) == V1_CHAIN_KEYS
    assert all(set(t) <= V1_TERRITORY_KEYS | {"racket"} for t in chain["territory"].values())

    terr = await call(server, "/torn/AAC,CAA?selections=territory")
    assert list(terr["territory"]) == ["AAC", "CAA"]
    assert all(V1_TERRITORY_KEYS <= set(t) for t in terr["territory"].values())
    full = await call(server, "/torn/?selections=territory,rackets,rankedwars,territorywars")
    assert len(full["territory"]) == 300
    assert all(set(r) - {"war"} == V1_RACKET_KEYS for r in full["rackets"].values())
    with_racket = [t for t in full["territory"].values() if "racket" in t]
    assert with_racket and set(with_racket[0]["racket"]) == {"name", "level", "reward", "created", "changed"}


async def test_v2_shapes(server):
    world = server.world
    fid = next(iter(world.factions))
    pid = pick_status(world, "Traveling")
    profile = (await call(server, f"/v2/user/{pid}/profile"))["profile"]
    assert set(profile) == V2_PROFILE_KEYS
    assert set(profile["status"]) == STATUS_KEYS | {"plane_image_type"}  # only while Traveling
    basic = await call(server, f"/v2/user/{pid}/basic")
    assert list(basic) == ["profile"] and set(basic["profile"]) == V2_BASIC_KEYS

    members = (await call(server, f"/v2/faction/{fid}/members"))["members"]
    assert members and all(set(m) == V2_MEMBER_KEYS for m in members)
    assert all(STATUS_KEYS <= set(m["status"]) <= STATUS_KEYS | {"plane_image_type"} for m in members)
    assert set((await call(server, f"/v2/faction/{fid}/basic"))["basic"]) == V2_FACTION_BASIC_KEYS
    assert set((await call(server, f"/v2/faction/{fid}/chain"))["chain"]) == V2_CHAIN_KEYS

    stats = (await call(server, "/v2/user/battlestats"))["battlestats"]
    assert set(stats) == {"strength", "defense", "speed", "dexterity", "total"}
    assert set(stats["speed"]) == {"value", "modifier", "modifiers"}
    assert stats["total"] == sum(stats[k]["value"] for k in ("strength", "defense", "speed", "dexterity"))
    bars = (await call(server, "/v2/user/bars"))["bars"]
    assert set(bars) == {"energy", "nerve", "happy", "life", "chain"}
    assert set(bars["life"]) == {"current", "maximum", "increment", "interval", "tick_time", "full_time"}
    nw = await call(server, f"/v2/user/{pid}/personalstats?cat=networth")
    assert isinstance(nw["personalstats"]["networth"]["total"], int)

    wars = await call(server, f"/v2/faction/{fid}/wars")
    assert list(wars) == ["pacts", "wars"] and set(wars["wars"]) == {"ranked", "raids", "territory"}
    ranked = await call(server, f"/v2/faction/{fid}/rankedwars")
    assert set(ranked) == {"rankedwars", "_metadata"} and set(ranked["_metadata"]["links"]) == {"next", "prev"}
    assert all(set(w) == V2_RANKEDWAR_KEYS for w in ranked["rankedwars"])
    own_terr = (await call(server, f"/v2/faction/{fid}/territory"))["territory"]
    assert all(set(t) == {"id", "acquired_at", "sector", "size", "density", "slots", "respect", "coordinates",
                          "racket"} for t in own_terr)
    rackets = (await call(server, "/v2/faction/rackets"))["rackets"]
    assert rackets and all(set(r) == {"name", "level", "description", "reward", "created_at", "changed_at"}
                           for r in rackets)
    torn = await call(server, "/v2/torn/territory?ids=AAC,CAA")
    assert [t["id"] for t in torn["territory"]] == ["AAC", "CAA"]
    assert set(torn["territory"][0]["coordinates"]) == {"x", "y"}
    assert isinstance(torn["territory"][0]["coordinates"]["x"], float)
    generic = await call(server, f"/v2/user?selections=profile,basic&id={pid}")  # the spec puts the id in ?id=
    assert set(generic) == {"profile"}


async def test_id_less_forms_answer_for_the_keys_owner(server):
    """The spec defines many selections only without an id (bars, battlestats, ...; the own faction's
    members, wars, ...): they answer for the key's owner, as the {id} forms do for that id."""
    world = server.world
    owner = server.sim.owner_of(KEY)
    fid = world.player(owner).faction_id
    assert (await call(server, "/v2/user/basic")) == await call(server, f"/v2/user/{owner}/basic")
    assert (await call(server, "/v2/faction/members")) == await call(server, f"/v2/faction/{fid}/members")
    assert (await call(server, "/v2/faction/basic"))["basic"]["id"] == fid
    info = (await call(server, "/v2/key/info"))["info"]
    assert info["user"]["id"] == owner and info["user"]["faction_id"] == fid
    assert {"bars", "battlestats", "personalstats"} <= set(info["selections"]["user"])
    other = server.sim.owner_of(OTHER_KEY)
    assert (await call(server, "/v2/key/info", key=OTHER_KEY))["info"]["user"]["id"] == other != owner

    both = await call(server, "/v2/faction?selections=basic,members")
    assert both == {**await call(server, "/v2/faction/basic"), **await call(server, "/v2/faction/members")}
    someone = next(pid for pid in world.factions[fid].members if pid != owner)
    assert (await call(server, f"/v2/user?selections=profile,bars&id={owner}")).keys() == {"profile", "bars"}
    assert error_code(await call(server, f"/v2/user?selections=profile,bars&id={someone}")) == 7
    assert error_code(await call(server, f"/v2/user/{someone}/bars")) == 4  # not a path of the spec


async def test_personalstats_in_every_form(server):
    world = server.world
    owner = server.sim.owner_of(KEY)
    other = next(pid for pid in world.players if pid != owner)
    full = (await call(server, "/v2/user/personalstats?cat=all"))["personalstats"]
    battle = (await call(server, "/v2/user/battlestats"))["battlestats"]
    assert full["battle_stats"] == {"strength": battle["strength"]["value"], "defense": battle["defense"]["value"],
                                    "speed": battle["speed"]["value"], "dexterity": battle["dexterity"]["value"],
                                    "total": battle["total"]}
    assert full["networth"]["total"] == world.player(owner).networth and len(full["networth"]) == 20
    public = (await call(server, f"/v2/user/{other}/personalstats?cat=all"))["personalstats"]
    assert "battle_stats" not in public and public["networth"] == {"total": world.player(other).networth}
    assert set(public) == set(full) - {"battle_stats", "investments"}
    popular = (await call(server, f"/v2/user/{other}/personalstats?cat=popular"))["personalstats"]
    assert popular["crimes"] == {"total": popular["crimes"]["total"], "version": "v2"}
    assert list((await call(server, f"/v2/user/{other}/personalstats?cat=attacking"))["personalstats"]) == \
        ["attacking"]
    flat = (await call(server, f"/v2/user/{other}/personalstats?stat=networth,attackswon"))["personalstats"]
    assert [(s["name"], s["value"]) for s in flat] == [("networth", public["networth"]["total"]),
                                                       ("attackswon", public["attacking"]["attacks"]["won"])]
    v1 = (await call(server, f"/user/{other}?selections=personalstats"))["personalstats"]
    assert v1["attackswon"] == public["attacking"]["attacks"]["won"] and v1["networth"] == flat[0]["value"]
    assert error_code(await call(server, f"/v2/user/{other}/personalstats?stat=strength")) == 7  # not yours
    assert (await call(server, "/v2/user/personalstats?stat=strength"))["personalstats"][0]["value"] == \
        battle["strength"]["value"]
    assert error_code(await call(server, "/v2/user/personalstats?cat=battle_stats")) == 21  # no schema for it
    assert error_code(await call(server, "/v2/user/personalstats?stat=nonsense")) == 25
    assert error_code(await call(server, "/v2/user/personalstats?stat=networth&cat=all")) == 26


async def test_v1_own_selections_and_ranked_war_reports(server):
    world = server.world
    owner = server.sim.owner_of(KEY)
    world.set_status(owner, "Traveling", 1800)
    own = await call(server, "/user/?selections=stocks,events,messages,travel,icons,notifications")
    assert set(own) == {"stocks", "events", "messages", "travel", "icons", "notifications"}
    v2_travel = (await call(server, "/v2/user/travel"))["travel"]
    assert own["travel"]["destination"] == v2_travel["destination"] == "Japan"
    assert own["travel"]["timestamp"] == v2_travel["arrival_at"] == world.now + 1800
    assert own["travel"]["time_left"] == 1800 and v2_travel["method"] == "Standard"
    v2_events = (await call(server, "/v2/user/events?limit=25"))["events"]
    assert list(own["events"]) == [e["id"] for e in v2_events]
    assert all(e["timestamp"] <= world.now for e in v2_events)
    assert own["notifications"] == (await call(server, "/v2/user/notifications"))["notifications"]
    assert own["icons"]["icon71"] == "Traveling to Japan"
    someone = next(pid for pid in world.players if pid != owner)
    for selection in ("stocks", "events", "messages", "travel", "icons", "notifications"):
        assert error_code(await call(server, f"/user/{someone}?selections={selection}")) == 7

    fid = next(iter(world.factions))
    ranked = (await call(server, f"/faction/{fid}?selections=rankedwars"))["rankedwars"]
    assert list(ranked) == [str(w.id) for w in world.ranked_wars_of(fid)]
    war = next(w for w in world.ranked_wars_of(fid) if w.end)
    report = (await call(server, f"/torn/{war.id}?selections=rankedwarreport"))["rankedwarreport"]
    assert report["war"]["winner"] == war.winner and report["war"]["end"] == war.end
    for f, body in report["factions"].items():
        assert body["score"] == war.scores[int(f)]
        assert abs(sum(m["score"] for m in body["members"].values()) - body["score"]) < 1
    v2 = (await call(server, f"/v2/faction/{war.id}/rankedwarreport"))["rankedwarreport"]
    assert v2["winner"] == war.winner and {f["id"]: f["score"] for f in v2["factions"]} == war.scores
    ongoing = world.start_ranked_war(*[f for f in world.factions if not world._busy(f)][:2])
    assert error_code(await call(server, f"/torn/{ongoing.id}?selections=rankedwarreport")) == 6
    assert error_code(await call(server, f"/v2/faction/{ongoing.id}/rankedwarreport")) == 6


async def test_v1_and_v2_say_no_value_differently(server):
    world = server.world
    fid = next(iter(world.factions))
    faction = world.factions[fid]
    if faction.co_leader is not None:
        world.leave_faction(faction.co_leader)
    loner = next(pid for pid, p in world.players.items() if p.faction_id is None)
    okay = some_member(world, 4)
    world.set_status(okay, "Okay")

    v1 = await call(server, f"/faction/{fid}")
    v2 = (await call(server, f"/v2/faction/{fid}/basic"))["basic"]
    assert v1["co-leader"] == 0 and v2["co_leader_id"] == 0  # the spec's FactionBasic.co_leader_id is never null
    v1p = await call(server, f"/user/{loner}?selections=profile")
    v2p = (await call(server, f"/v2/user/{loner}/profile"))["profile"]
    assert v1p["faction"]["faction_id"] == 0 and v2p["faction_id"] is None
    s1 = (await call(server, f"/user/{okay}?selections=basic"))["status"]
    s2 = (await call(server, f"/v2/user/{okay}/basic"))["profile"]["status"]
    assert (s1["until"], s1["details"]) == (0, "") and (s2["until"], s2["details"]) == (None, None)
    assert isinstance(v2p["revivable"], bool) and v1p["revivable"] in (0, 1)

    # coordinates: v1 mixes strings and numbers, v2 always floats
    full = await call(server, "/torn/?selections=territory")
    kinds = {type(t["coordinate_x"]) for t in full["territory"].values()}
    assert str in kinds and (int in kinds or float in kinds)

    # a ranked war: v2 rankedwars keeps end 0 while ongoing, v2 wars says null, v1 says 0
    other = [f for f in world.factions if f != fid and not world._busy(f)][0]
    for war in list(world.ranked_wars.values()):
        if war.end == 0 and fid in war.factions:
            world.end_ranked_war(war.id)
    war = world.start_ranked_war(fid, other, target=10**6)
    server.advance(3600)
    listed = (await call(server, f"/v2/faction/{fid}/rankedwars"))["rankedwars"][0]
    assert listed["id"] == war.id and listed["end"] == 0 and listed["winner"] is None
    current = (await call(server, f"/v2/faction/{fid}/wars"))["wars"]["ranked"]
    assert current["war_id"] == war.id and current["end"] is None and current["winner"] is None
    v1war = (await call(server, f"/faction/{fid}"))["ranked_wars"][str(war.id)]
    assert v1war["war"]["end"] == 0 and v1war["war"]["winner"] == 0
    assert set(v1war["factions"]) == {str(fid), str(other)}
    world.end_ranked_war(war.id, winner=other)
    done = (await call(server, f"/v2/faction/{fid}/wars"))["wars"]["ranked"]
    assert done["winner"] == other and done["end"] == world.now

    # v1 territorywars is null when there are none, a dict keyed by territory when there are
    for tw in world.active_territory_wars():
        world._finish_territory_war(tw, world.now, tw.defending)
    assert (await call(server, "/torn/?selections=territorywars"))["territorywars"] is None
    code = next(t.code for t in world.territories.values() if t.owner not in (None, fid))
    world.set_racket(code, 2)
    tw = world.start_territory_war(code, fid)
    body = await call(server, "/torn/?selections=territorywars")
    assert body["territorywars"][code]["territory_war_id"] == tw.id
    assert {"assaulting_faction", "defending_faction", "score", "required_score", "started", "ends",
            "assaulters", "defenders"} <= set(body["territorywars"][code])
    body = await call(server, f"/torn/{code}?selections=territory,rackets")
    brief = {"assaulting_faction": fid, "defending_faction": tw.defending, "started": tw.start, "ends": tw.end}
    assert body["territory"][code]["war"] == brief and body["rackets"][code]["war"] == brief
    assert (await call(server, f"/v2/faction/{fid}/wars"))["wars"]["territory"][0]["territory"] == code


# ---- paging -----------------------------------------------------------------------------------------

async def follow(handle, first: str, list_key: str) -> tuple[list, int]:
    rows, pages, url = [], 0, handle.url + first
    while url:
        body = await call(handle, url)
        rows.extend(body[list_key])
        pages += 1
        assert "key=" not in (body["_metadata"]["links"]["next"] or "")
        url = body["_metadata"]["links"]["next"]
    return rows, pages


async def by_offset(handle, first: str, list_key: str, limit: int) -> tuple[list, int]:
    """A list the spec gives without `_metadata` (territoryownership): ask offset after offset until a
    page comes back short."""
    rows: list = []
    pages = 0
    while True:
        page = (await call(handle, f"{first}?limit={limit}&offset={len(rows)}"))[list_key]
        assert "_metadata" not in page
        rows.extend(page)
        pages += 1
        if len(page) < limit:
            return rows, pages


async def test_paging_follows_next_links_to_every_territory_once(server):
    rows, pages = await by_offset(server, "/v2/faction/territoryownership", "territoryOwnership", 70)
    ids = [r["id"] for r in rows]
    assert pages == 5 and len(ids) == 300 and set(ids) == set(server.world.territories)
    assert all(set(r) == {"id", "owned_by", "acquired_at", "irradiated"} for r in rows)
    first = await call(server, "/v2/faction/territoryownership")
    assert len(first["territoryOwnership"]) == 20 and set(first) == {"territoryOwnership"}
    first = await call(server, "/v2/torn/territory")
    assert len(first["territory"]) == 20 and first["_metadata"]["links"]["prev"] is None
    second = await call(server, first["_metadata"]["links"]["next"])
    assert second["_metadata"]["links"]["prev"].endswith("offset=0")
    clamped = await call(server, "/v2/torn/territory?limit=1000")
    assert len(clamped["territory"]) == 250  # limit max 250 for torn/territory
    rows, _ = await follow(server, "/v2/torn/territory?limit=250", "territory")
    assert len({r["id"] for r in rows}) == 300


async def test_full_size_map_pages_at_most_500():
    world = World(seed=2, factions=2, members_per_faction=(5, 5))  # the real 4,100 territories
    async with await start_simulator(world, rate_limit=None) as handle:
        async with aiohttp.ClientSession() as session:
            handle.session = session
            clamped = await call(handle, "/v2/faction/territoryownership?limit=9999")
            assert len(clamped["territoryOwnership"]) == 500
            rows, pages = await by_offset(handle, "/v2/faction/territoryownership", "territoryOwnership", 500)
            assert pages == 9 and len({r["id"] for r in rows}) == len(rows) == 4100
            v1 = await call(handle, "/torn/?selections=territory")
            assert len(v1["territory"]) == 4100


# ---- auth and errors ---------------------------------------------------------------------------------

async def test_keys_and_errors(server):
    pid = some_member(server.world)
    assert error_code(await call(server, f"/user/{pid}", key=None)) == 1
    assert error_code(await call(server, f"/user/{pid}", key="short")) == 2
    assert error_code(await call(server, f"/user/{pid}", key="AbCdEfGh1234567!")) == 2
    assert error_code(await call(server, f"/v2/user/{pid}/basic", key=None)) == 1
    header = {"Authorization": f"ApiKey {KEY}"}
    assert "profile" in await call(server, f"/v2/user/{pid}/basic", key=None, headers=header)
    assert error_code(await call(server, f"/user/{pid}", key=None, headers=header)) == 1  # v1 takes ?key= only
    assert error_code(await call(server, "/nosuchsection/")) == 3
    assert error_code(await call(server, "/v2/nosuchsection/basic")) == 3
    assert error_code(await call(server, f"/user/{pid}?selections=profile,nonsense")) == 4
    assert error_code(await call(server, f"/v2/user/{pid}/nonsense")) == 4
    assert error_code(await call(server, "/user/99?selections=profile")) == 6
    assert error_code(await call(server, "/v2/torn/rankedwars")) == 22  # v1 only, as the real API says
    assert error_code(await call(server, f"/user/{pid}?selections=battlestats")) == 7
    assert error_code(await call(server, f"/user/{pid}?selections=bars")) == 7
    status, ctype, _ = await call(server, "/nosuchsection/", raw=True)
    assert status == 200 and ctype.startswith("application/json")


async def test_key_list_and_own_ids():
    world = World(seed=4, factions=2, members_per_faction=(5, 6), territories=50)
    me = world.initial_members[2]
    async with await start_simulator(world, keys=[KEY], own_ids={OTHER_KEY: me}, rate_limit=None) as handle:
        async with aiohttp.ClientSession() as session:
            handle.session = session
            assert error_code(await call(handle, "/user/?selections=basic", key="QQQQQQQQQQQQQQQQ")) == 2
            assert "player_id" in await call(handle, "/user/?selections=basic", key=KEY)
            own = await call(handle, f"/user/{me}?selections=battlestats", key=OTHER_KEY)
            assert own["total"] == world.player(me).total_stats
            assert (await call(handle, "/user/?selections=basic", key=OTHER_KEY))["player_id"] == me
            owner = handle.sim.owner_of(KEY)
            assert owner in world.initial_members and owner == World(seed=4, factions=2,
                                                                     members_per_faction=(5, 6),
                                                                     territories=50).owner_for_key(KEY)


# ---- faults -------------------------------------------------------------------------------------------

async def control(handle, method: str, what: str, payload: dict | None = None, query: str = ""):
    async with handle.session.request(method, f"{handle.url}/__sim/{what}{query}", json=payload) as resp:
        return resp.status, await resp.json()


async def test_every_fault_kind_works_and_clears(server):
    path = f"/user/{some_member(server.world)}?selections=basic"
    assert (await control(server, "POST", "fault", {"kind": "error", "code": 17, "count": 2}))[0] == 200
    assert [error_code(await call(server, path)) for _ in range(3)] == [17, 17, None]

    await control(server, "POST", "fault", {"kind": "http", "status": 503})
    status, ctype, body = await call(server, path, raw=True)
    assert status == 503 and ctype.startswith("text/html") and b"<html" in body
    assert "level" in await call(server, path)

    await control(server, "POST", "fault", {"kind": "slow", "delay": 0.4})
    started = time.monotonic()
    assert "level" in await call(server, path)
    assert time.monotonic() - started >= 0.35

    await control(server, "POST", "fault", {"kind": "malformed"})
    status, _, body = await call(server, path, raw=True)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)

    await control(server, "POST", "fault", {"kind": "html"})
    status, ctype, body = await call(server, path, raw=True)
    assert status == 200 and ctype.startswith("text/html") and b"maintenance" in body

    await control(server, "POST", "fault", {"kind": "huge"})
    status, _, body = await call(server, path, raw=True)
    assert status == 200 and len(body) >= 10 * 1024 * 1024

    # one key answers code 2 until cleared; other keys are unaffected
    await control(server, "POST", "fault", {"kind": "error", "code": 2, "count": -1,
                                            "key_fingerprint": fingerprint(OTHER_KEY)})
    assert [error_code(await call(server, path, key=OTHER_KEY)) for _ in range(4)] == [2] * 4
    assert error_code(await call(server, path)) is None
    listed = (await control(server, "GET", "fault"))[1]["faults"]
    assert len(listed) == 1 and OTHER_KEY not in json.dumps(listed)
    assert (await control(server, "DELETE", "fault"))[1]["cleared"] == 1
    assert error_code(await call(server, path, key=OTHER_KEY)) is None

    # random faults at a rate are seeded: the same sequence every run
    fault = server.inject_fault("error", code=9, rate=0.5)
    hits = [error_code(await call(server, path)) == 9 for _ in range(30)]
    assert 5 < sum(hits) < 25 and fault.fired == sum(hits)
    server.clear_faults()
    assert error_code(await call(server, path)) is None
    assert (await control(server, "POST", "fault", {"kind": "nope"}))[0] == 400


async def test_rate_limit_per_owner_on_wall_and_sim_clocks():
    world = World(seed=5, factions=2, members_per_faction=(5, 6), territories=50)
    async with await start_simulator(world) as handle:  # default: 100 per rolling minute, wall clock
        async with aiohttp.ClientSession() as session:
            handle.session = session
            codes = [error_code(await call(handle, "/user/?selections=basic")) for _ in range(101)]
            assert codes[:100] == [None] * 100 and codes[100] == 5
            assert error_code(await call(handle, "/user/?selections=basic", key=OTHER_KEY)) is None
            assert handle.stats()["rate_limited"] == 1

    world = World(seed=5, factions=2, members_per_faction=(5, 6), territories=50)
    async with await start_simulator(world, rate_clock="sim", rate_limit=3) as handle:
        async with aiohttp.ClientSession() as session:
            handle.session = session
            codes = [error_code(await call(handle, "/user/?selections=basic")) for _ in range(4)]
            assert codes == [None, None, None, 5]
            await control(handle, "POST", "clock", {"advance": 61})
            assert error_code(await call(handle, "/user/?selections=basic")) is None


# ---- clock and stats ------------------------------------------------------------------------------------

async def test_clock_and_stats_endpoints(server):
    status, body = await control(server, "GET", "clock")
    assert status == 200 and body["now"] == 1767225600 and body["iso"] == "2026-01-01T00:00:00Z"
    assert (await control(server, "POST", "clock", {"advance": 600}))[1]["now"] == 1767226200
    assert (await control(server, "POST", "clock", {"now": 1767300000}))[1]["now"] == 1767300000
    assert (await control(server, "POST", "clock", {"now": 1}))[0] == 400  # never backwards
    pid = some_member(server.world)
    await call(server, f"/user/{pid}?selections=basic")
    await call(server, f"/v2/user/{pid}/basic", key=OTHER_KEY)
    status, stats = await control(server, "GET", "stats")
    assert stats["requests"] == 2 == server.requests
    assert stats["by_key"] == {fingerprint(KEY): 1, fingerprint(OTHER_KEY): 1}
    assert KEY not in json.dumps(stats) and server.requests_for(KEY) == 1
    assert stats["by_path"] == {"/user/{id}": 1, "/v2/user/{id}/basic": 1}
    summary = (await control(server, "GET", "world"))[1]
    assert len(summary["factions"]) == 3
    status, _ = await control(server, "POST", "world", {"action": "set_level", "args": {"pid": pid, "level": 77}})
    assert status == 200 and (await call(server, f"/user/{pid}?selections=basic"))["level"] == 77


# ---- the world ------------------------------------------------------------------------------------------

def _snapshot(world: World) -> bytes:
    owner = world.initial_members[0]
    parts = []
    for fid in sorted(world.factions):
        parts.append(render(Ctx(world, owner), 2, ["faction", str(fid), "members"]))
        parts.append(render(Ctx(world, owner), 1, ["faction", str(fid)]))
        parts.append(render(Ctx(world, owner, {"limit": "100"}), 2, ["faction", str(fid), "rankedwars"]))
    parts.append(render(Ctx(world, owner, {"selections": "territory,rackets,rankedwars,territorywars"}), 1, ["torn"]))
    for pid in sorted(world.players)[:30]:
        own = Ctx(world, pid, {"selections": "profile,battlestats,personalstats"})
        parts.append(render(own, 1, ["user", str(pid)]))
        parts.append(render(Ctx(world, pid, {"selections": "stocks,events,messages,travel,notifications"}), 1,
                            ["user"]))
        parts.append(render(Ctx(world, owner, {"cat": "all"}), 2, ["user", str(pid), "personalstats"]))
    parts.append(render(Ctx(world, owner), 2, ["key", "info"]))
    finished = max(w.id for w in world.ranked_wars.values() if w.end)
    parts.append(render(Ctx(world, owner, {"selections": "rankedwarreport"}), 1, ["torn", str(finished)]))
    return msgspec.json.encode(parts)


def test_same_seed_and_times_give_identical_bodies_whatever_was_asked_between():
    a = World(seed=9, factions=3, territories=200)
    b = World(seed=9, factions=3, territories=200)
    assert _snapshot(a) == _snapshot(b)
    end = a.now + 5 * DAY
    while a.now < end:  # a is polled often, b jumps straight to the end
        a.advance_to(min(end, a.now + 5 * 3600 + 7))
        _snapshot(a)
    b.advance_to(end)
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(World(seed=10, factions=3, territories=200)) != _snapshot(World(seed=9, factions=3,
                                                                                      territories=200))


async def test_served_bodies_are_byte_identical_for_the_same_seed_and_time():
    bodies = []
    for _ in range(2):
        world = World(seed=11, factions=2, members_per_faction=(5, 8), territories=100)
        async with await start_simulator(world, rate_limit=None) as handle:
            async with aiohttp.ClientSession() as session:
                handle.session = session
                handle.advance(3 * DAY + 123)
                fid = next(iter(world.factions))
                _, _, members = await call(handle, f"/v2/faction/{fid}/members", raw=True)
                _, _, profile = await call(handle, f"/user/{some_member(world)}?selections=profile", raw=True)
                bodies.append(members + profile)
    assert bodies[0] == bodies[1]


def test_a_month_changes_tracked_fields_but_most_four_minute_polls_see_none():
    world = World(seed=3, factions=4, members_per_faction=(10, 20), territories=500)
    owner = world.initial_members[0]

    def tracked(w: World) -> dict:
        out = {}
        for fid, f in w.factions.items():
            members = render(Ctx(w, owner), 2, ["faction", str(fid), "members"])["members"]
            out[fid] = (f.respect, tuple(m["id"] for m in members),
                        {m["id"]: (m["level"], m["status"]["state"]) for m in members})
        return out

    # 3 days of 4-minute polls: count polls of one member that see a tracked change
    prev, polls, changed = tracked(world), 0, 0
    volatile_changed = 0
    fid = next(iter(world.factions))
    prev_la = None
    for _ in range(3 * 360):
        world.advance(240)
        cur = tracked(world)
        for f in cur:
            for pid, value in cur[f][2].items():
                if pid in prev[f][2]:
                    polls += 1
                    changed += value != prev[f][2][pid]
        la = render(Ctx(world, owner), 2, ["faction", str(fid), "members"])["members"]
        la = [(m["last_action"]["relative"], m["status"]["description"]) for m in la]
        volatile_changed += la != prev_la
        prev, prev_la = cur, la
    assert polls > 10_000 and changed / polls < 0.10
    assert volatile_changed > 0.5 * 3 * 360  # the volatile text moves on almost every poll

    start_levels = {pid: p.level for pid, p in world.players.items()}
    start_stats = {pid: world.player(pid).total_stats for pid in world.players}
    start_respect = {fid: f.respect for fid, f in world.factions.items()}
    start_members = {fid: list(f.members) for fid, f in world.factions.items()}
    start_owners = {c: t.owner for c, t in world.territories.items()}
    start_wars = set(world.ranked_wars)
    world.advance(30 * DAY)
    assert any(world.player(pid).level != lvl for pid, lvl in start_levels.items())
    assert sum(world.player(pid).total_stats > s for pid, s in start_stats.items()) > len(start_stats) / 2
    assert all(world.factions[fid].respect != r for fid, r in start_respect.items())
    assert any(world.factions[fid].members != m for fid, m in start_members.items())
    assert any(world.territories[c].owner != o for c, o in start_owners.items())
    new_wars = [w for w in world.ranked_wars.values() if w.id not in start_wars]
    assert new_wars and any(w.winner for w in new_wars)


def test_a_month_for_ten_factions_is_cheap():
    started = time.perf_counter()
    world = World(seed=1, factions=10, members_per_faction=(25, 25), territories=4100)
    world.advance(30 * DAY)
    for pid in world.players:
        world.player(pid).last_action(world.now)
    assert time.perf_counter() - started < 2.0


def test_rates_are_parameters():
    calm = World(seed=3, factions=2, territories=50,
                 rates=Rates(respect_events_per_day=0, member_changes_per_day=0, ranked_war_every_days=1e9))
    respect = {fid: f.respect for fid, f in calm.factions.items()}
    members = {fid: list(f.members) for fid, f in calm.factions.items()}
    calm.advance(10 * DAY)
    assert {fid: f.respect for fid, f in calm.factions.items()} == respect
    assert {fid: list(f.members) for fid, f in calm.factions.items()} == members
    busy = World(seed=3, factions=2, territories=50, rates=Rates(respect_events_per_day=200))
    before = {fid: f.respect for fid, f in busy.factions.items()}
    busy.advance(4 * 240)
    assert all(busy.factions[fid].respect != r for fid, r in before.items())


async def test_clock_can_follow_the_wall_clock():
    world = World(seed=4, factions=2, members_per_faction=(5, 6), territories=50)
    async with await start_simulator(world, speed=3600.0, rate_limit=None) as handle:
        async with aiohttp.ClientSession() as session:
            handle.session = session
            start = world.now
            await asyncio.sleep(0.1)
            await call(handle, "/user/?selections=basic")
            assert world.now - start >= 300  # 0.1 s of wall time at 3600x


def test_territory_map():
    terr = build_territories(1, 4100)
    assert len(terr) == 4100 and {"AAC", "CAA"} <= set(terr)
    assert all(re.fullmatch(r"[A-Z]{2}[A-G]", code) for code in terr)
    assert list(terr) == sorted(terr)
    for code, t in terr.items():
        assert 1 <= t.sector <= 7 and t.neighbors
        assert all(code in terr[n].neighbors for n in t.neighbors)
    assert [t.__dict__ for t in build_territories(1, 300).values()] == \
        [t.__dict__ for t in build_territories(1, 300).values()]
    assert set(build_territories(2, 300)) != set(build_territories(1, 300))


def test_most_of_the_map_is_owned_as_on_the_real_map():
    """About 12% of the real map is unowned; the rest is held by the world's factions and by filler factions
    that exist only as owners (and names), all drawn from the seed."""
    world = World(seed=2, factions=3, members_per_faction=(5, 6))
    owners = [t.owner for t in world.territories.values()]
    assert 0.10 <= owners.count(None) / len(owners) <= 0.14
    held = {fid for fid in owners if fid is not None}
    assert set(world.factions) <= held and held - set(world.factions) == set(world.filler_factions)
    assert not set(world.factions) & set(world.filler_factions)
    assert len(world.filler_factions) > 50 and world.faction_name(min(world.filler_factions)) != "Unknown"
    again = World(seed=2, factions=3, members_per_faction=(5, 6))
    assert [t.owner for t in again.territories.values()] == owners
    assert [t.owner for t in World(seed=3, factions=3, members_per_faction=(5, 6)).territories.values()] != owners


def test_battle_stats_and_networth_exceed_int32():
    world = World(seed=1, factions=5)
    assert max(p.total_stats for p in world.players.values()) > 2**31
    assert any(v > 2**31 for p in world.players.values() for v in p.stats.values())


def test_forced_events_show_up():
    world = World(seed=6, factions=3, members_per_faction=(6, 8), territories=100)
    owner = world.initial_members[0]
    f1, f2 = sorted(world.factions)[:2]
    code = next(c for c, t in world.territories.items() if t.owner is None)
    world.transfer_territory(code, f1)
    rows = render(Ctx(world, owner, {"limit": "500"}), 2, ["faction", "territoryownership"])["territoryOwnership"]
    assert next(r for r in rows if r["id"] == code)["owned_by"] == f1
    pid = world.factions[f2].members[-1]
    world.join_faction(pid, f1)
    assert str(pid) in render(Ctx(world, owner), 1, ["faction", str(f1)])["members"]
    world.set_level(pid, 42)
    assert render(Ctx(world, owner), 2, ["user", str(pid), "basic"])["profile"]["level"] == 42
    world.set_status(pid, "Hospital", 1800, details="Mugged by X")
    status = render(Ctx(world, owner), 2, ["user", str(pid), "basic"])["profile"]["status"]
    assert status["state"] == "Hospital" and status["until"] == world.now + 1800
    assert status["description"] == "In hospital for 30 mins"


async def test_a_simulator_process_serves_the_same_bodies_on_a_shared_clock():
    """The demo's simulator runs in a process of its own; moving the shared clock is all it takes, and it
    answers byte for byte what the in-process simulator answers at the same time."""
    from tornstore.eventstore.simulator.process import SimulatorProcess

    kw = {"seed": 11, "factions": 2, "members_per_faction": (5, 8), "territories": 100}
    world = World(**kw)
    fid = sorted(world.factions)[0]
    paths = [f"/v2/faction/{fid}/members", f"/faction/{fid}?selections=basic", "/torn/?selections=territory"]
    async with await start_simulator(world, rate_limit=None) as handle:
        handle.advance(3 * DAY + 123)
        async with aiohttp.ClientSession() as session:
            expected = [await (await session.get(f"{handle.url}{p}", params={"key": KEY})).read() for p in paths]
    with SimulatorProcess(**kw) as proc:
        assert proc.faction_ids == sorted(world.factions) and proc.start == World(**kw).now
        async with aiohttp.ClientSession() as session:
            before = await (await session.get(f"{proc.url}{paths[0]}", params={"key": KEY})).read()
            assert proc.set_clock(proc.start + 3 * DAY + 123) == proc.start + 3 * DAY + 123
            assert proc.set_clock(proc.start) == proc.start + 3 * DAY + 123  # never back
            got = [await (await session.get(f"{proc.url}{p}", params={"key": KEY})).read() for p in paths]
        pid = proc.pid
    assert got == expected and before != expected[0]
    with pytest.raises(ProcessLookupError):  # closed: the child has exited and was reaped
        os.kill(pid, 0)


def test_a_simulator_process_that_cannot_start_says_so(capfd):
    from tornstore.eventstore.simulator.process import SimulatorProcess

    with pytest.raises(RuntimeError, match="did not start"):
        SimulatorProcess(seed=1, no_such_option=True).start_process()
    assert "no_such_option" in capfd.readouterr().err   # the child's own error reaches stderr


async def test_the_simulator_dispatches_by_itself_control_api_and_get_only(server):
    """start_simulator serves without an application router: /__sim/<what> is the control API, any other
    path the Torn API, which answers GET only."""
    status, clock = await control(server, "GET", "clock")
    assert status == 200 and clock["now"] == server.world.now and clock["iso"].endswith("Z")
    status, body = await control(server, "GET", "nothing-here")
    assert status == 404 and "unknown control endpoint GET /__sim/nothing-here" in body["error"]
    async with server.session.post(f"{server.url}/faction/1?selections=basic", params={"key": KEY}) as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "GET"
    assert "level" in await call(server, f"/user/{some_member(server.world)}?selections=basic")

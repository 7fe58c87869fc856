"""Polls of the simulated world without HTTP: realistic capture streams for tests, benchmarks and demos.

`answer(world, url)` renders what the server would send for a URL (an error body included);
`poll_rounds(world, plan, start, end)` advances the world and yields, round by round, the Responses a
collector following `plan` would have stored. Most polls see no tracked change, as in the real game.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from ..records import Response
from .bodies import Ctx, TornError, error_body, render
from .world import World

BASE = "https://api.torn.com"


def answer(world: World, url: str, owner: int | None = None) -> dict:
    """The body the simulator would answer for `url` at the world's current time."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    version = 1
    if segments and segments[0] == "v2":
        version, segments = 2, segments[1:]
    query = dict(parse_qsl(parts.query))
    owner = owner if owner is not None else (world.initial_members or sorted(world.players))[0]
    try:
        return render(Ctx(world, owner, query, BASE, parts.path), version, segments)
    except TornError as exc:
        return error_body(exc.code, exc.text)


@dataclass
class PollPlan:
    """What to poll each round. Every `*_every` counts rounds (1 = every round, 0 = never)."""
    factions: tuple[int, ...] = ()
    interval: int = 240                 # seconds between rounds (the plan's 4 minutes)
    api: str = "v2"                     # v2: faction basic + members; v1: faction basic with members
    member_profiles_every: int = 15     # each member's profile (level, life maximum), hourly by default
    wars_every: int = 1                 # the faction's wars (v2) / torn rankedwars (v1)
    territory_map_every: int = 0        # the full territory map (v1 torn territory), e.g. 15
    networth_every: int = 0             # members' personalstats networth (v2), e.g. 360 (daily)
    personalstats_every: int = 0        # members' whole personal stats, e.g. 15 (hourly)
    personalstats_form: str = "v2"      # v2: /v2/user/{id}/personalstats?cat=all, v1: ?selections=personalstats


def round_urls(world: World, plan: PollPlan, round_number: int) -> list[str]:
    urls: list[str] = []
    for fid in plan.factions:
        if plan.api == "v1":
            urls.append(f"{BASE}/faction/{fid}?selections=basic")
        else:
            urls.append(f"{BASE}/v2/faction/{fid}/basic")
            urls.append(f"{BASE}/v2/faction/{fid}/members")
        faction = world.factions.get(fid)
        members = sorted(faction.members) if faction else []
        if plan.wars_every and round_number % plan.wars_every == 0 and plan.api == "v2":
            urls.append(f"{BASE}/v2/faction/{fid}/wars")
        if plan.member_profiles_every and round_number % plan.member_profiles_every == 0:
            for pid in members:
                urls.append(f"{BASE}/user/{pid}?selections=profile" if plan.api == "v1"
                            else f"{BASE}/v2/user/{pid}/profile")
        if plan.networth_every and round_number % plan.networth_every == 0:
            for pid in members:
                urls.append(f"{BASE}/v2/user/{pid}/personalstats?cat=networth")
        if plan.personalstats_every and round_number % plan.personalstats_every == 0:
            for pid in members:
                urls.append(f"{BASE}/user/{pid}?selections=personalstats" if plan.personalstats_form == "v1"
                            else f"{BASE}/v2/user/{pid}/personalstats?cat=all")
    if plan.wars_every and round_number % plan.wars_every == 0 and plan.api == "v1":
        urls.append(f"{BASE}/torn/?selections=rankedwars,territorywars")
    if plan.territory_map_every and round_number % plan.territory_map_every == 0:
        urls.append(f"{BASE}/torn/?selections=territory")
    return urls


def poll_rounds(world: World, plan: PollPlan, start: int, end: int) -> Iterator[list[Response]]:
    """Advance the world from `start` to `end` and yield each round's responses."""
    t = start
    number = 0
    while t < end:
        world.advance_to(t)
        yield [Response(url=url, observed_at=t, body=answer(world, url))
               for url in round_urls(world, plan, number)]
        number += 1
        t += plan.interval

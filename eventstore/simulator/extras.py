"""Pages the world does not simulate but a key's owner can read: travel, stocks, events, messages,
notifications; and the report of a finished ranked war.

Why drawn and not simulated: nothing in tornstore follows these over time yet, and a process per player
would cost the hot paths. Each is a pure function of (seed, player, time), like bars and cooldowns, so the
same seed and time give the same answer whatever was asked before. bodies.py turns them into v1 and v2
shapes; the values here are version-neutral.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .world import DAY, HOUR, FACTION_TIERS, ROMAN, Player, RankedWar, World, _h01

# (plane in world.PLANES, the spec's UserFlyMethodEnum)
FLY_METHODS = {"airliner": "Standard", "light_aircraft": "Airstrip", "private_jet": "Private"}
STOCKS = 35  # stock ids 1..35
# Ranked war reward caches (item id, name)
CACHES = ((1118, "Armor Cache"), (1119, "Melee Cache"), (1120, "Small Arms Cache"), (1121, "Medium Arms Cache"),
          (1122, "Heavy Arms Cache"))
_EVENTS = ("{user} attacked you and lost.", "You were hospitalized by {user}.",
           "{user} mugged you and stole ${money:,}.",
           "You have been credited with ${money:,} from your bank investment.", "{user} sent you ${money:,}.",
           "You were busted out of jail by {user}.", "{user} revived you.")
_TOPICS = ("Re: bounty", "war tonight", "thanks!", "loan", "Faction newsletter", "trade?", "Hi")
_DAYS_BACK = 30  # how far back events and messages go


class Travel(NamedTuple):
    destination: str  # a country, or "Torn" (home, or flying home)
    method: str | None  # UserFlyMethodEnum; None when at home
    departed: int | None
    arrival: int | None
    time_left: int


def travel(player: Player, t: int) -> Travel:
    """The flight the player is on, or the one that took them abroad; at home, none."""
    span = player.current_span(t)
    if span is None or span.state not in ("Traveling", "Abroad"):
        return Travel("Torn", None, None, None, 0)
    method = FLY_METHODS.get(span.plane or "")
    if span.state == "Abroad":
        return Travel(span.place, method, span.departed or None, span.start, 0)
    return Travel("Torn" if span.returning else span.place, method, span.start, span.end, max(0, span.end - t))


class Trade(NamedTuple):
    id: int
    shares: int
    price: float
    when: int


class Holding(NamedTuple):
    stock_id: int
    shares: int
    trades: list[Trade]
    ready: bool  # the dividend (or benefit) can be collected
    progress: int  # days into the current period
    frequency: int  # days per period
    increment: int


def holdings(world: World, player: Player, t: int) -> list[Holding]:
    """Zero to three stocks per player, bought before the world began; a dividend period cycles by the day."""
    seed, pid = world.seed, player.id
    ids = sorted({1 + int(_h01(seed, "stock", pid, k) * STOCKS) for k in range(int(_h01(seed, "stocks", pid) * 4))})
    out = []
    for sid in ids:
        trades = []
        for k in range(1 + int(_h01(seed, "trades", pid, sid) * 2)):
            when = player.signup + int(_h01(seed, "trade-t", pid, sid, k) * (world.start - DAY - player.signup))
            shares = 1000 * (1 + int(_h01(seed, "trade-n", pid, sid, k) * 500))
            price = round(10 + _h01(seed, "trade-p", pid, sid, k) * 990, 2)
            trades.append(Trade(int(_h01(seed, "trade-id", pid, sid, k) * 2**31), shares, price, when))
        frequency = (7, 14, 31)[int(_h01(seed, "stock-f", sid) * 3)]
        progress = (t // DAY + int(_h01(seed, "stock-o", pid, sid) * frequency)) % frequency
        out.append(Holding(sid, sum(tr.shares for tr in trades), trades, progress == frequency - 1, progress,
                           frequency, 1))
    return out


def _mention(world: World, seed_parts: tuple, players: list[int]) -> tuple[int, str]:
    pid = players[int(_h01(world.seed, *seed_parts) * len(players))]
    return pid, world.players[pid].name


def _profile_link(pid: int, name: str) -> str:
    return f'<a href = "http://www.torn.com/profiles.php?XID={pid}">{name}</a>'


class Event(NamedTuple):
    id: str
    timestamp: int
    text: str


def events(world: World, player: Player, t: int) -> Iterator[Event]:
    """The player's events, newest first: up to three a day over the last 30 days, none after t."""
    seed, pid = world.seed, player.id
    everyone = list(world.players)
    for day in range(t // DAY, t // DAY - _DAYS_BACK, -1):
        drawn = []
        for k in range(int(_h01(seed, "ev-n", pid, day) * 4)):
            when = day * DAY + int(_h01(seed, "ev-t", pid, day, k) * DAY)
            if when <= t:
                template = _EVENTS[int(_h01(seed, "ev-k", pid, day, k) * len(_EVENTS))]
                who = _profile_link(*_mention(world, ("ev-u", pid, day, k), everyone))
                money = 1000 * (1 + int(_h01(seed, "ev-m", pid, day, k) * 5000))
                event_id = f"{int(_h01(seed, 'ev-id', pid, day, k) * 2**64):016x}"
                drawn.append(Event(event_id, when, template.format(user=who, money=money)))
        yield from sorted(drawn, key=lambda e: (-e.timestamp, e.id))


class Message(NamedTuple):
    id: int
    sender_id: int
    sender_name: str
    timestamp: int
    topic: str
    kind: str  # UserMessageTypeEnum
    seen: bool
    read: bool


def messages(world: World, player: Player, t: int) -> Iterator[Message]:
    """Mail, newest first: a message every couple of days, from faction mates or anyone; read after a day."""
    seed, pid = world.seed, player.id
    faction = world.factions.get(player.faction_id) if player.faction_id else None
    mates = [m for m in faction.members if m != pid] if faction else []
    everyone = mates or [p for p in world.players if p != pid]
    for day in range(t // DAY, t // DAY - _DAYS_BACK, -1):
        if _h01(seed, "msg", pid, day) >= 0.5:
            continue
        when = day * DAY + int(_h01(seed, "msg-t", pid, day) * DAY)
        if when > t:
            continue
        sender, name = _mention(world, ("msg-u", pid, day), everyone)
        newsletter = faction is not None and _h01(seed, "msg-k", pid, day) < 0.1
        topic = _TOPICS[int(_h01(seed, "msg-s", pid, day) * len(_TOPICS))]
        old = t - when > DAY
        yield Message(int(_h01(seed, "msg-id", pid, day) * 2**31), sender, name, when, topic,
                      "Faction newsletter" if newsletter else "User message", old or t - when > 6 * HOUR, old)


def notifications(world: World, player: Player, t: int) -> dict[str, int]:
    """Counts of what is new: unread messages, events of the last six hours, awards waiting."""
    unread = sum(1 for m in messages(world, player, t) if not m.read)
    fresh = 0
    for event in events(world, player, t):
        if t - event.timestamp > 6 * HOUR:
            break
        fresh += 1
    return {"messages": unread, "events": fresh, "awards": int(_h01(world.seed, "awards", player.id, t // DAY) * 3),
            "competition": 0}


class ReportMember(NamedTuple):
    id: int
    name: str
    level: int
    attacks: int
    score: float


class ReportFaction(NamedTuple):
    id: int
    name: str
    score: int
    attacks: int
    rank_before: str
    rank_after: str
    respect: int
    points: int
    items: list[tuple[int, str, int]]  # (item id, name, quantity)
    members: list[ReportMember]


def war_report(world: World, war: RankedWar) -> list[ReportFaction]:
    """Who fought in a finished ranked war and what they got: the faction's members at the war's end share its
    score; the winner gets more respect and caches."""
    seed, out = world.seed, []
    for fid in war.factions:
        faction = world.factions.get(fid)
        members = [world.players[pid] for pid in (faction.members if faction else [])
                   if world.players[pid].faction_joined <= war.end]
        weights = [_h01(seed, "rw-w", war.id, p.id) for p in members]
        total_weight = sum(weights) or 1.0
        score = war.scores[fid]
        fighters = [ReportMember(p.id, p.name, p.level, int(w * 40), round(score * w / total_weight, 2))
                    for p, w in zip(members, weights, strict=True)]
        won = fid == war.winner
        tier = FACTION_TIERS[min(len(FACTION_TIERS) - 1, int(_h01(seed, "rw-tier", fid) * len(FACTION_TIERS)))]
        division = int(_h01(seed, "rw-div", war.id, fid) * 3)
        after = 1 + max(0, min(2, division + (-1 if won else 1)))
        items = [(item_id, name, 1 + int(_h01(seed, "rw-cache", war.id, fid, item_id) * 2))
                 for item_id, name in CACHES[: 3 if won else 1]]
        out.append(ReportFaction(
            fid, world.faction_name(fid), score, sum(m.attacks for m in fighters),
            f"{tier} {ROMAN[division]}", f"{tier} {ROMAN[after - 1]}",
            int(score * (0.8 if won else 0.2)), 0, items, fighters))
    return out

"""A small, seeded Torn City whose factions, players, territories, wars and rackets change as time passes.

Why: tornstore cannot reach the real API, so tests and demos poll this world instead.

How it stays cheap and deterministic:
- World-level changes (respect, membership, wars, territories, rackets, chains) are processes on one
  event heap. Each process owns a random stream seeded from (seed, process name) and draws its own
  next-event time, so the state at time t depends only on the seed and t, never on which times were
  asked before (events forced through the public methods are the only exception).
- Each player's private changes (status episodes, training, level, networth, sessions) run lazily
  from the player's own streams when the player is synced, so nothing is computed per second.
- Volatile values (last_action text, countdowns, bar timers) are derived from the clock when rendered.
"""
from __future__ import annotations

import hashlib
import functools
import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from .territory_codes import TERRITORY_CODES

MINUTE = 60
HOUR = 3600
DAY = 86400
DEFAULT_START = 1767225600  # 2026-01-01T00:00:00Z

MAP_WIDTH, MAP_HEIGHT = 6000.0, 3000.0
OWNED_SHARE = 0.88  # of the map held by some faction: the real map has about 12% unowned
FILLER_HOLDING = 25  # territories per filler faction, on average

USER_RANKS = (
    "Absolute beginner", "Beginner", "Inexperienced", "Rookie", "Novice", "Below average", "Average",
    "Reasonable", "Above average", "Competent", "Highly competent", "Veteran", "Distinguished",
    "Highly distinguished", "Professional", "Star", "Master", "Outstanding", "Celebrity", "Supreme",
    "Idolized", "Champion", "Heroic", "Legendary", "Elite", "Invincible",
)
TITLES = (
    "Medalist", "Sharpshooter", "Killer", "Merchant", "Tycoon", "Slayer", "Hired Gun", "Outcast",
    "Punchbag", "Tank", "Druggy", "Scavenger", "Boxer", "Importer", "Looter", "Felon", "Mercenary",
    "Thief", "Mobster", "Racer", "Soldier", "Healer", "Trader", "Tourist", "Citizen", "Newcomer",
)
# (country, one-way airliner minutes)
COUNTRIES = (
    ("Mexico", 26), ("Cayman Islands", 35), ("Canada", 41), ("Hawaii", 134), ("United Kingdom", 159),
    ("Argentina", 167), ("Switzerland", 175), ("Japan", 225), ("China", 242), ("UAE", 271),
    ("South Africa", 297),
)
PLANES = (("airliner", 1.0), ("light_aircraft", 0.7), ("private_jet", 0.5))
PROPERTIES = ("Shack", "Cottage", "Apartment", "Ranch", "Palace", "Castle", "Private Island")
COMPANIES = (("Lawyers, Guns, and Money", 2), ("Candy Land", 7), ("Sweet Shop Ltd", 9),
             ("Flying Pigs Logistics", 14), ("Night Owl Club", 23))
ROLES = ("Civilian",) * 18 + ("Wiki Contributor", "Helper")
FACTION_POSITIONS = ("Member", "Recruit", "Soldier", "Lieutenant", "Banker", "Comrades", "Lord")
FACTION_TIERS = ("Unranked", "Bronze", "Silver", "Gold", "Platinum", "Diamond")

# (racket family, reward type, item id, item name, quantity at level 1); quantity doubles per level.
RACKETS = (
    ("Protection Racket", "Money", None, None, 5_000_000),
    ("Illegal Casino", "Money", None, None, 25_000_000),
    ("Money Launderer", "Money", None, None, 10_000_000),
    ("Point Broker", "Points", None, None, 500),
    ("Arms Dealer", "Item", 222, "Flash Grenade", 25),
    ("Street Surgeon", "Item", 1030, "Serotonin", 5),
    ("Bootleg Distillery", "Item", 984, "Bottle of Moonshine", 10),
    ("Truck Stop", "Item", 530, "Can of Munster", 10),
    ("Drug Lab", "Item", 197, "Ecstasy", 25),
    ("Cannabis Factory", "Item", 196, "Cannabis", 25),
)
ROMAN = ("I", "II", "III", "IV", "V")
CHAIN_MILESTONES = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000)

_SYLLABLES = ("ka", "zo", "mi", "ra", "ne", "lu", "tor", "vek", "sha", "dro", "ix", "bel", "gar",
              "quo", "fen", "mud", "bot", "tom", "lan", "cel", "sly", "pep", "rox", "dex")
_ADJ = ("Killer", "Silent", "Crimson", "Stygian", "Iron", "Lucky", "Synthetic", "Broken", "Golden",
        "Midnight", "Savage", "Mile High")
_NOUN = ("Kings", "Collective", "Mafia", "Clinic", "Railroad", "Masters", "Warband", "Syndicate",
         "Medics", "Wolves", "Underworld", "Recluse")


def _stream(seed: int, *parts: object) -> random.Random:
    """A random stream owned by one process; seeding by string is stable across runs and platforms."""
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def _h01(seed: int, *parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for a pure function of its parts (no stream state)."""
    digest = hashlib.blake2b("/".join(str(p) for p in (seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _gap(rng: random.Random, per_day: float, floor: int = 60) -> int:
    """Seconds to the next event of a Poisson process with `per_day` events per day."""
    if per_day <= 0:
        return 10**9
    return max(floor, int(rng.expovariate(per_day / DAY)))


def _name(rng: random.Random) -> str:
    word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    style = rng.random()
    if style < 0.3:
        return word.capitalize()
    if style < 0.5:
        return word + str(rng.randint(1, 99))
    if style < 0.6:
        return word.capitalize() + "_" + rng.choice(_SYLLABLES).capitalize()
    return word


@dataclass(frozen=True)
class Rates:
    """Change rates. Defaults aim at realism: a 4-minute poll of one entity usually sees no tracked change."""

    status_episodes_per_day: float = 2.5  # hospital / travel / jail episodes per player
    hospital_weight: float = 0.5
    travel_weight: float = 0.35
    jail_weight: float = 0.15
    sessions_per_day: float = 8.0  # online sessions of an active player
    session_minutes: float = 25.0
    inactive_fraction: float = 0.1  # players who log in every ~10 days
    train_probability: float = 0.8  # chance a player trains (stats grow) on a given day
    level_up_days: float = 4.0  # mean days between level-ups at level 0; grows with level
    respect_events_per_day: float = 5.0  # per faction
    member_changes_per_day: float = 0.15  # joins + leaves per faction
    ranked_war_every_days: float = 14.0  # per faction
    war_tick_minutes: float = 20.0
    territory_wars_per_day: float = 0.5  # whole world
    territory_claims_per_day: float = 1.0  # whole world: claims of empty land and drops
    racket_events_per_day: float = 0.5  # whole world
    chains_per_day: float = 0.5  # per faction


class Status(NamedTuple):
    """A player's status at one instant; bodies map None/'' to each API version's sentinel."""

    state: str
    description: str
    details: str
    color: str
    until: int | None
    plane_image_type: str | None


class LastAction(NamedTuple):
    status: str  # Online / Idle / Offline
    timestamp: int
    relative: str


@dataclass
class _Span:
    start: int
    end: int
    state: str
    place: str = ""
    details: str = ""
    plane: str | None = None  # the flight's plane; an Abroad span keeps the one it came on
    returning: bool = False
    departed: int = 0  # Abroad: when the flight there took off


def relative_text(seconds: int) -> str:
    """Torn's 'N units ago' text for last_action.relative."""
    if seconds < 60:
        return "Just Now"
    for unit, size in (("day", DAY), ("hour", HOUR), ("minute", MINUTE)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "Just Now"


def countdown_text(seconds: int) -> str:
    """Torn's '1 hr 20 mins' text used in hospital and jail descriptions."""
    seconds = max(0, seconds)
    hours, minutes = divmod(max(1, math.ceil(seconds / 60)), 60)
    parts = []
    if hours:
        parts.append(f"{hours} hr{'s' if hours != 1 else ''}")
    if minutes or not hours:
        parts.append(f"{minutes} min{'s' if minutes != 1 else ''}")
    return " ".join(parts)


def life_for_level(level: int, bonus: int) -> int:
    return 100 + 50 * (level - 1) + bonus


class Player:
    """One player. Private changes run lazily from the player's own streams (see module docstring)."""

    def __init__(self, world: World, pid: int, rng: random.Random, origin: int):
        self.world = world
        self.id = pid
        self.name = _name(rng)
        self.gender = rng.choice(("Male", "Female", "Male", "Female", "Enby"))
        self.level = max(1, min(100, int(rng.triangular(1, 100, 35))))
        self.life_bonus = int(rng.random() * 25 * self.level)
        self.signup = origin - rng.randint(30 * DAY, 10 * 365 * DAY)
        self.title = rng.choice(TITLES)
        self.role = rng.choice(ROLES)
        self.donator = rng.random() < 0.6
        self.honor_id = rng.randint(1, 1000)
        self.property_name = rng.choice(PROPERTIES)
        self.property_id = rng.randint(10_000, 5_000_000)
        company = rng.choice(COMPANIES) if rng.random() < 0.7 else None
        self.job = (rng.choice(("Employee", "Director", "Manager")), company,
                    rng.randint(1000, 120_000) if company else 0)
        self.spouse: tuple[int, str, int] | None = None  # (id, name, married since)
        self.image = (f"https://profileimages.torn.com/{hashlib.sha1(str(pid).encode()).hexdigest()[:24]}.png"
                      if rng.random() < 0.7 else None)
        self.revive_setting = rng.choice(("Everyone", "Friends & faction", "No one"))
        self.counters = {k: rng.randint(0, 5000) for k in ("awards", "friends", "enemies", "forum_posts", "karma")}
        total = 10 ** (2.5 + 7.7 * (self.level / 100) ** 0.8 + rng.gauss(0, 0.3))
        shares = [rng.uniform(0.6, 1.4) for _ in range(4)]
        self.stats = {k: max(10, int(total * s / sum(shares)))
                      for k, s in zip(("strength", "defense", "speed", "dexterity"), shares, strict=True)}
        self.networth = int(10 ** (5 + 5.2 * self.level / 100 + rng.gauss(0, 0.4)))
        self.inactive = rng.random() < world.rates.inactive_fraction
        # faction membership (world processes change these)
        self.faction_id: int | None = None
        self.position = "None"
        self.faction_joined = 0
        # lazy private processes, each with its own stream
        seed = world.seed
        self._rs = _stream(seed, "status", pid)
        self._spans: deque[_Span] = deque()
        self._free_from = origin - 2 * DAY
        self._last_hospital_end = 0
        self._rsess = _stream(seed, "sessions", pid)
        first = origin - (40 * DAY if self.inactive else DAY)
        self._sess: tuple[int, int] = (first, first + 600)
        self._next_sess: tuple[int, int] = self._draw_session(self._sess[1])
        self._rt = _stream(seed, "train", pid)
        self.train_offset = self._rt.randint(0, DAY - 1)
        self.last_train = origin - DAY + self.train_offset
        self._next_train = origin + self.train_offset
        self._rl = _stream(seed, "level", pid)
        self._next_level = origin + self._level_gap()
        self.synced_to = origin

    # ---- lazy private processes ---------------------------------------------------------------
    def _level_gap(self) -> int:
        mean_days = self.world.rates.level_up_days * (1 + self.level / 10)
        return max(HOUR, int(self._rl.expovariate(1 / (mean_days * DAY))))

    def _draw_session(self, after: int) -> tuple[int, int]:
        r, rates = self._rsess, self.world.rates
        per_day = 0.1 if self.inactive else rates.sessions_per_day
        start = after + _gap(r, per_day, floor=5 * MINUTE)
        length = max(MINUTE, int(r.expovariate(1 / (rates.session_minutes * MINUTE))))
        return start, start + length

    def _draw_episode(self) -> None:
        r, rates = self._rs, self.world.rates
        t0 = self._free_from + _gap(r, rates.status_episodes_per_day, floor=10 * MINUTE)
        kind = r.choices(("Hospital", "Travel", "Jail"),
                         (rates.hospital_weight, rates.travel_weight, rates.jail_weight))[0]
        if kind == "Hospital":
            end = t0 + r.randint(10 * MINUTE, 4 * HOUR)
            details = r.choice(("Hospitalized by {}", "Mugged by {}", "Lost to {}", "Overdosed on Xanax",
                                "Crashed a car", "Attacked by {}"))
            self._spans.append(_Span(t0, end, "Hospital", details=details.format(_name(r))))
        elif kind == "Jail":
            end = t0 + r.randint(5 * MINUTE, 90 * MINUTE)
            details = r.choice(("Caught shoplifting", "Failed to bust {} out of jail", "Arrested for vandalism"))
            self._spans.append(_Span(t0, end, "Jail", details=details.format(_name(r))))
        else:
            country, minutes = r.choice(COUNTRIES)
            plane, factor = r.choice(PLANES)
            fly = int(minutes * MINUTE * factor)
            stay = r.randint(15 * MINUTE, 6 * HOUR)
            self._spans.append(_Span(t0, t0 + fly, "Traveling", place=country, plane=plane))
            self._spans.append(_Span(t0 + fly, t0 + fly + stay, "Abroad", place=country, plane=plane, departed=t0))
            end = t0 + 2 * fly + stay
            self._spans.append(_Span(t0 + fly + stay, end, "Traveling", place=country, plane=plane, returning=True))
        self._free_from = end

    def sync(self, t: int) -> None:
        """Run this player's private processes up to time t (idempotent, never backwards)."""
        if t <= self.synced_to:
            return
        while not self._spans or self._spans[-1].end <= t:
            self._draw_episode()
        while self._spans[0].end <= t:
            span = self._spans.popleft()
            if span.state == "Hospital":
                self._last_hospital_end = span.end
        rates = self.world.rates
        while self._next_train <= t:
            when = self._next_train
            if self._rt.random() < rates.train_probability:
                self.last_train = when
                for stat in self._rt.sample(sorted(self.stats), self._rt.randint(1, 2)):
                    gain = int(self.stats[stat] * self._rt.uniform(0.001, 0.006)) + self._rt.randint(10, 500)
                    self.stats[stat] += gain
            self.networth = max(0, int(self.networth * (1 + self._rt.gauss(0.002, 0.03))))
            self._next_train += DAY
        while self._next_level <= t:
            if self.level < 100:
                self.level += 1
            self._next_level += self._level_gap()
        while self._next_sess[0] <= t:
            self._sess = self._next_sess
            self._next_sess = self._draw_session(self._sess[1])
        self.synced_to = t

    # ---- views at the world's clock (call sync first; World.player() does) ----------------------
    @property
    def life_maximum(self) -> int:
        return life_for_level(self.level, self.life_bonus)

    @property
    def total_stats(self) -> int:
        return sum(self.stats.values())

    def current_span(self, t: int) -> _Span | None:
        self.sync(t)
        span = self._spans[0] if self._spans else None
        return span if span and span.start <= t < span.end else None

    def status(self, t: int) -> Status:
        span = self.current_span(t)
        if span is None:
            return Status("Okay", "Okay", "", "green", None, None)
        if span.state == "Hospital":
            return Status("Hospital", f"In hospital for {countdown_text(span.end - t)}", span.details, "red",
                          span.end, None)
        if span.state == "Jail":
            return Status("Jail", f"In jail for {countdown_text(span.end - t)}", span.details, "red", span.end, None)
        if span.state == "Abroad":
            return Status("Abroad", f"In {span.place}", "", "blue", None, None)
        text = f"Returning to Torn from {span.place}" if span.returning else f"Traveling to {span.place}"
        return Status("Traveling", text, "", "blue", None, span.plane)

    def life_current(self, t: int) -> int:
        top = self.life_maximum
        span = self.current_span(t)
        if span is not None and span.state == "Hospital":
            frac = 0.05 + 0.45 * (t - span.start) / max(1, span.end - span.start)
            return max(1, int(top * frac))
        if self._last_hospital_end and t - self._last_hospital_end < 2 * HOUR:
            ticks = (t - self._last_hospital_end) // 300
            return min(top, int(top * (0.5 + 0.06 * ticks)))
        return top

    def last_action(self, t: int) -> LastAction:
        self.sync(t)
        start, end = self._sess
        if start <= t < end:
            stamp = start + ((t - start) // 97) * 97
            return LastAction("Online", stamp, relative_text(t - stamp))
        stamp = min(end, t)
        return LastAction("Idle" if t - stamp < 15 * MINUTE else "Offline", stamp, relative_text(t - stamp))

    def rank_name(self) -> str:
        return USER_RANKS[min(len(USER_RANKS) - 1, self.level // 4 + (1 if self.total_stats > 1e8 else 0))]

    def counter(self, name: str, t: int) -> int:
        """Slow profile counters (awards, karma, ...): step up at most once a day."""
        days = max(0, (t - self.signup) // DAY)
        return self.counters.get(name, 0) + int(days * (0.02 + 0.2 * _h01(self.world.seed, name, self.id)))


@dataclass
class Faction:
    id: int
    name: str
    tag: str
    created: int
    capacity: int
    leader: int
    co_leader: int | None
    respect: int
    best_chain: int
    rank_points: int
    strength: float  # how hard it hits in wars
    positions: tuple[str, ...]
    is_enlisted: bool
    tag_image: str
    banner_image: str
    members: list[int] = field(default_factory=list)  # join order
    wins: int = 0
    chain: Chain | None = None  # ongoing chain
    last_chain: Chain | None = None

    @property
    def rank(self) -> dict:
        tier = min(len(FACTION_TIERS) - 1, self.rank_points // 6)
        division = 3 - (self.rank_points % 6) // 2 if tier else 2
        return {"level": 1 + tier * 3 + (3 - division), "name": FACTION_TIERS[tier], "division": division,
                "wins": self.wins}


@dataclass
class Chain:
    id: int
    start: int
    end: int  # when it breaks (planned)
    length: int  # hits at the break


@dataclass
class Territory:
    code: str
    sector: int
    size: int
    density: int
    slots: int
    respect: int
    x: float
    y: float
    numeric_coords: bool  # v1 prints these coordinates as numbers instead of strings
    neighbors: list[str] = field(default_factory=list)
    owner: int | None = None
    acquired_at: int | None = None
    racket: Racket | None = None
    irradiated: bool = False
    war_id: int | None = None


@dataclass
class Racket:
    family: int  # index in RACKETS
    level: int
    created: int
    changed: int

    @property
    def name(self) -> str:
        return f"{RACKETS[self.family][0]} {ROMAN[self.level - 1]}"

    @property
    def reward(self) -> tuple[str, int, int | None, str | None]:
        _, kind, item_id, item_name, base = RACKETS[self.family]
        return kind, base * 2 ** (self.level - 1), item_id, item_name

    @property
    def reward_text(self) -> str:
        kind, qty, _, item_name = self.reward
        if kind == "Money":
            return f"${qty:,} daily"
        if kind == "Points":
            return f"{qty}x Points daily"
        return f"{qty}x {item_name} daily"


@dataclass
class RankedWar:
    id: int
    factions: tuple[int, int]
    scores: dict[int, int]
    target: int
    created: int
    start: int
    end: int = 0  # 0 while ongoing
    winner: int | None = None

    def current_target(self, t: int) -> int:
        """After 24 hours the lead needed to win drops by 1% of the target per hour."""
        late_hours = max(0, (t - self.start - DAY) // HOUR)
        return max(0, int(self.target * (1 - 0.01 * late_hours)))


@dataclass
class TerritoryWar:
    id: int
    territory: str
    assaulting: int
    defending: int
    required: int
    start: int
    end: int  # planned end (start + 72 h)
    momentum: float
    score: int = 0
    ended: int = 0  # actual end, 0 while ongoing
    winner: int | None = None
    assaulters: list[int] = field(default_factory=list)
    defenders: list[int] = field(default_factory=list)


class World:
    """The simulated game. `now` is the clock; `advance_to`/`advance` move it forward."""

    def __init__(self, seed: int = 1, start: int = DEFAULT_START, factions: int = 5,
                 members_per_faction: tuple[int, int] = (10, 25), territories: int = 4100,
                 rates: Rates | None = None, warmup_days: float = 3.0):
        self.seed = seed
        self.start = start
        self.rates = rates or Rates()
        self.players: dict[int, Player] = {}
        self.factions: dict[int, Faction] = {}
        self.ranked_wars: dict[int, RankedWar] = {}
        self.territory_wars: dict[int, TerritoryWar] = {}
        # Factions outside the simulated ones that hold most of the map (id -> name); nothing else about them
        # is simulated, so the API answers error 6 for their ids.
        self.filler_factions: dict[int, str] = {}
        self._heap: list[tuple[int, str]] = []
        self._handlers: dict[str, Callable[[int], int | None]] = {}
        self._rngs: dict[str, random.Random] = {}
        origin = start - int(warmup_days * DAY)
        self.now = origin
        rng = _stream(seed, "genesis")
        self._next_rw_id = rng.randint(20_000, 30_000)
        self._next_tw_id = rng.randint(40_000, 50_000)
        self._next_chain_id = rng.randint(1_000_000, 2_000_000)
        self.territories = build_territories(seed, territories)
        self._codes = list(self.territories)
        self._make_people(rng, factions, members_per_faction, origin)
        self.initial_members = sorted(pid for f in self.factions.values() for pid in f.members)
        self._seed_territory(rng, origin)
        self._seed_history(rng, origin)
        self._start_processes(origin)
        self.advance_to(start)

    # ---- genesis ---------------------------------------------------------------------------------
    def _make_people(self, rng: random.Random, n_factions: int, span: tuple[int, int], origin: int) -> None:
        sizes = [rng.randint(span[0], max(span[0], span[1])) for _ in range(n_factions)]
        pool = max(5, sum(sizes) // 5)
        pids = rng.sample(range(100_000, 3_900_000), sum(sizes) + pool)
        for pid in pids:
            self.players[pid] = Player(self, pid, _stream(self.seed, "player", pid), origin)
        couples = rng.sample(pids, 2 * (len(pids) // 10))
        for a, b in zip(couples[::2], couples[1::2], strict=True):
            since = origin - rng.randint(1, 2000) * DAY
            self.players[a].spouse = (b, self.players[b].name, since)
            self.players[b].spouse = (a, self.players[a].name, since)
        fids = rng.sample(range(1_000, 55_000), n_factions)
        cursor = 0
        for i, (fid, size) in enumerate(zip(fids, sizes, strict=True)):
            members = pids[cursor:cursor + size]
            cursor += size
            name = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
            if i % 4 == 1:
                name = f"{rng.choice(_NOUN)}&#039; Den"  # real names carry HTML entities
            tag = "".join(w[0] for w in name.replace("&#039;", "").split()).upper()[:4] + (str(i) if i > 9 else "")
            created = origin - rng.randint(200, 4000) * DAY
            faction = Faction(
                id=fid, name=name, tag=tag, created=created, capacity=rng.randint(size + 5, max(size + 5, 100)),
                leader=members[0], co_leader=members[1] if size > 1 and rng.random() < 0.7 else None,
                respect=rng.randint(50_000, 20_000_000), best_chain=rng.choice(CHAIN_MILESTONES[:9]),
                rank_points=rng.randint(0, 30), strength=rng.uniform(0.6, 1.4),
                positions=tuple(rng.sample(FACTION_POSITIONS, 3)), is_enlisted=rng.random() < 0.8,
                tag_image=f"{fid}-{rng.randint(10_000, 99_999)}.png",
                banner_image=f"{fid}-{rng.randint(10_000, 99_999)}.png",
            )
            self.factions[fid] = faction
            for pid in members:
                self._join(pid, fid, max(created, origin - rng.randint(0, 1500) * DAY), rng)

    def _join(self, pid: int, fid: int, when: int, rng: random.Random) -> None:
        faction, player = self.factions[fid], self.players[pid]
        faction.members.append(pid)
        player.faction_id, player.faction_joined = fid, when
        if pid == faction.leader:
            player.position = "Leader"
        elif pid == faction.co_leader:
            player.position = "Co-leader"
        else:
            player.position = rng.choice(faction.positions)

    def _leave(self, pid: int) -> None:
        player = self.players[pid]
        if player.faction_id is None:
            return
        faction = self.factions[player.faction_id]
        faction.members.remove(pid)
        if faction.co_leader == pid:
            faction.co_leader = None
        player.faction_id, player.position, player.faction_joined = None, "None", 0

    def _seed_territory(self, rng: random.Random, origin: int) -> None:
        n = len(self._codes)
        free = list(self._codes)
        rng.shuffle(free)
        for fid in self.factions:
            for _ in range(rng.randint(1, max(1, min(40, n // (3 * max(1, len(self.factions))))))):
                if free:
                    terr = self.territories[free.pop()]
                    terr.owner, terr.acquired_at = fid, origin - rng.randint(1, 700) * DAY
        self._seed_filler_owners(free, origin)
        for code in rng.sample(self._codes, min(n, max(1, n // 100))):
            created = origin - rng.randint(1, 700) * DAY
            self.territories[code].racket = Racket(rng.randrange(len(RACKETS)), rng.randint(1, 5), created,
                                                   created + rng.randint(0, origin - created))
        for code in rng.sample(self._codes, n // 50):
            self.territories[code].irradiated = True

    def _seed_filler_owners(self, free: list[str], origin: int) -> None:
        """The rest of the land goes to factions outside the simulated ones, until OWNED_SHARE of the map
        is held, as on the real map (about 12% unowned). Their own stream: the rest of genesis is unchanged."""
        rng = _stream(self.seed, "filler")
        to_fill = max(0, round(len(self._codes) * OWNED_SHARE) - (len(self._codes) - len(free)))
        if not to_fill:
            return
        taken = set(self.factions)
        count = max(1, to_fill // FILLER_HOLDING)
        for fid in rng.sample(range(1_000, 55_000), count + len(taken)):
            if fid not in taken and len(self.filler_factions) < count:
                self.filler_factions[fid] = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {_name(rng).capitalize()}"
        fillers = sorted(self.filler_factions)
        for code in free[-to_fill:]:
            terr = self.territories[code]
            terr.owner, terr.acquired_at = rng.choice(fillers), origin - rng.randint(1, 1500) * DAY

    def _seed_history(self, rng: random.Random, origin: int) -> None:
        """Finished ranked wars, so /rankedwars has history to page through."""
        fids = sorted(self.factions)
        if len(fids) < 2:
            return
        past = []
        for k in range(3 * len(fids)):
            a, b = rng.sample(fids, 2)
            start = origin - (k + 1) * 9 * DAY - rng.randint(0, 3 * DAY)
            past.append((start, a, b))
        for start, a, b in sorted(past):
            target = rng.randrange(1000, 15000, 100)
            winner = rng.choice((a, b))
            loser = b if winner == a else a
            scores = {winner: target + rng.randint(0, 9000)}
            scores[loser] = max(0, scores[winner] - target - rng.randint(0, 200))
            war = RankedWar(self._next_rw_id, (a, b), {a: scores[a], b: scores[b]}, target, start - 2 * DAY,
                            start, start + rng.randint(DAY, 4 * DAY), winner)
            self._next_rw_id += 1
            self.ranked_wars[war.id] = war
            self.factions[winner].wins += 1

    def _start_processes(self, origin: int) -> None:
        for fid in sorted(self.factions):
            self._process(f"respect:{fid}", functools.partial(self._on_respect, fid), origin,
                          self.rates.respect_events_per_day)
            self._process(f"members:{fid}", functools.partial(self._on_membership, fid), origin,
                          self.rates.member_changes_per_day)
            self._process(f"chain:{fid}", functools.partial(self._on_chain, fid), origin,
                          self.rates.chains_per_day)
        pairs_per_day = len(self.factions) / (2 * self.rates.ranked_war_every_days) if self.factions else 0
        self._process("rw-match", self._on_match, origin, pairs_per_day)
        self._process("tw-start", self._on_territory_war_start, origin, self.rates.territory_wars_per_day)
        self._process("territory", self._on_territory_drift, origin, self.rates.territory_claims_per_day)
        self._process("rackets", self._on_racket, origin, self.rates.racket_events_per_day)

    # ---- event engine ----------------------------------------------------------------------------
    def _rng(self, name: str) -> random.Random:
        if name not in self._rngs:
            self._rngs[name] = _stream(self.seed, "proc", name)
        return self._rngs[name]

    def _process(self, name: str, handler: Callable[[int], int | None], t: int, per_day: float | None = None) -> None:
        """Register a process; with per_day it fires as a Poisson process (handler returns None)."""
        if per_day is not None:
            def poisson(when: int, handler=handler, name=name, per_day=per_day) -> int:
                handler(when)
                return when + _gap(self._rng(name), per_day)
            self._handlers[name] = poisson
            if per_day > 0:
                heapq.heappush(self._heap, (t + _gap(self._rng(name), per_day), name))
        else:
            self._handlers[name] = handler
            heapq.heappush(self._heap, (t, name))

    def advance_to(self, t: int) -> None:
        """Move the clock to t, running every event due on the way. The clock never goes back."""
        t = int(t)
        if t < self.now:
            raise ValueError(f"the clock cannot go back ({t} < {self.now})")
        while self._heap and self._heap[0][0] <= t:
            when, name = heapq.heappop(self._heap)
            self.now = when
            nxt = self._handlers[name](when)
            if nxt is not None:
                heapq.heappush(self._heap, (max(nxt, when + 1), name))
            else:
                self._handlers.pop(name, None)
        self.now = t

    def advance(self, seconds: int) -> None:
        self.advance_to(self.now + int(seconds))

    # ---- processes -------------------------------------------------------------------------------
    def _on_respect(self, fid: int, t: int) -> None:
        r = self._rng(f"respect:{fid}")
        faction = self.factions[fid]
        loss = r.randint(0, 40) if r.random() < 0.1 else 0
        faction.respect = max(0, faction.respect + int(r.expovariate(1 / 150)) - loss)

    def _on_membership(self, fid: int, t: int) -> None:
        r = self._rng(f"members:{fid}")
        faction = self.factions[fid]
        leavers = [p for p in faction.members if p not in (faction.leader, faction.co_leader)]
        pool = sorted(pid for pid, p in self.players.items() if p.faction_id is None)
        if leavers and (r.random() < 0.5 or not pool or len(faction.members) >= faction.capacity):
            self._leave(r.choice(leavers))
        elif pool and len(faction.members) < faction.capacity:
            self._join(r.choice(pool), fid, t, r)

    def _on_chain(self, fid: int, t: int) -> None:
        """A chain starts now and breaks later; its current count is interpolated when rendered."""
        faction = self.factions[fid]
        if faction.chain is not None:
            return
        r = self._rng(f"chain:{fid}")
        length = int(r.paretovariate(1.2) * 10)
        duration = int(length * r.uniform(40, 120))
        chain = Chain(self._next_chain_id, t, t + max(5 * MINUTE, duration), length)
        self._next_chain_id += 1
        faction.chain = chain
        self._process(f"chain-end:{chain.id}", functools.partial(self._end_chain, fid), chain.end)

    def _end_chain(self, fid: int, t: int) -> None:
        faction = self.factions[fid]
        chain = faction.chain
        if chain is None:
            return None
        faction.best_chain = max(faction.best_chain, chain.length)
        faction.last_chain, faction.chain = chain, None
        return None

    def chain_current(self, fid: int, t: int | None = None) -> int:
        t = self.now if t is None else t
        chain = self.factions[fid].chain
        if chain is None or t < chain.start:
            return 0
        return min(chain.length, int(chain.length * (t - chain.start) / max(1, chain.end - chain.start)))

    def _busy(self, fid: int) -> bool:
        return any(w.end == 0 and fid in w.factions for w in self.ranked_wars.values())

    def _on_match(self, t: int) -> None:
        r = self._rng("rw-match")
        idle = [fid for fid in sorted(self.factions) if not self._busy(fid)]
        if len(idle) < 2:
            return
        a, b = r.sample(idle, 2)
        start = (t // HOUR + 1) * HOUR + r.randint(2, 30) * HOUR
        self.start_ranked_war(a, b, start=start, target=r.randrange(1000, 15000, 100), now=t)

    def _tick_war(self, war_id: int, t: int) -> int | None:
        war = self.ranked_wars[war_id]
        if war.end:
            return None
        if t < war.start:
            return war.start
        r = self._rng(f"rw:{war_id}")
        mean = max(10, war.target / 60)
        for fid in war.factions:
            strength = self.factions[fid].strength if fid in self.factions else 1.0
            if r.random() < 0.8:
                war.scores[fid] += int(r.expovariate(1 / (mean * strength)))
        a, b = war.factions
        if abs(war.scores[a] - war.scores[b]) >= war.current_target(t):
            self._finish_war(war, t, a if war.scores[a] >= war.scores[b] else b)
            return None
        return t + max(MINUTE, int(r.expovariate(1 / (self.rates.war_tick_minutes * MINUTE))))

    def _finish_war(self, war: RankedWar, t: int, winner: int) -> None:
        war.end, war.winner = t, winner
        r = self._rng(f"rw:{war.id}")
        for fid in war.factions:
            faction = self.factions.get(fid)
            if faction is None:
                continue
            if fid == winner:
                faction.wins += 1
                faction.rank_points += 3
                faction.respect += r.randint(200, 3000)
            else:
                faction.rank_points = max(0, faction.rank_points - 2)

    def _on_territory_war_start(self, t: int) -> None:
        r = self._rng("tw-start")
        fids = sorted(self.factions)
        if len(fids) < 2:
            return
        attacker = r.choice(fids)
        targets = [c for c in self._codes if self.territories[c].owner not in (None, attacker)
                   and self.territories[c].war_id is None]
        if targets:
            self.start_territory_war(r.choice(targets), attacker, now=t)

    def _tick_territory_war(self, war_id: int, t: int) -> int | None:
        war = self.territory_wars[war_id]
        if war.ended:
            return None
        r = self._rng(f"tw:{war_id}")
        step = war.required / 144 * war.momentum
        war.score = max(0, war.score + int(r.gauss(step, step)))
        if war.score >= war.required:
            self._finish_territory_war(war, t, war.assaulting)
            return None
        if t >= war.end:
            self._finish_territory_war(war, t, war.defending)
            return None
        return min(war.end, t + max(MINUTE, int(r.expovariate(1 / (30 * MINUTE)))))

    def _finish_territory_war(self, war: TerritoryWar, t: int, winner: int) -> None:
        war.ended, war.winner = t, winner
        terr = self.territories[war.territory]
        terr.war_id = None
        if winner == war.assaulting:
            terr.owner, terr.acquired_at = winner, t

    def _on_territory_drift(self, t: int) -> None:
        """Empty land gets claimed and held land gets dropped, now and then."""
        r = self._rng("territory")
        fids = sorted(self.factions)
        if not fids:
            return
        fid = r.choice(fids)
        owned = [c for c in self._codes if self.territories[c].owner == fid and self.territories[c].war_id is None]
        if r.random() < 0.6 or len(owned) < 2:
            for _ in range(10):
                code = r.choice(self._codes)
                if self.territories[code].owner is None:
                    self.transfer_territory(code, fid, now=t)
                    return
        elif owned:
            self.transfer_territory(r.choice(owned), None, now=t)

    def _on_racket(self, t: int) -> None:
        r = self._rng("rackets")
        with_racket = [c for c in self._codes if self.territories[c].racket is not None]
        roll = r.random()
        target_count = max(1, len(self._codes) // 100)
        if roll < 0.3 or not with_racket:
            if len(with_racket) < target_count * 1.5:
                code = r.choice(self._codes)
                if self.territories[code].racket is None:
                    self.territories[code].racket = Racket(r.randrange(len(RACKETS)), 1, t, t)
        else:
            racket = self.territories[r.choice(with_racket)].racket
            assert racket is not None  # with_racket: the territories that have one
            if roll < 0.7 and racket.level < 5:
                racket.level, racket.changed = racket.level + 1, t
            elif roll < 0.85 and racket.level > 1:
                racket.level, racket.changed = racket.level - 1, t
            elif len(with_racket) > 1:
                self.territories[r.choice(with_racket)].racket = None

    # ---- queries ---------------------------------------------------------------------------------
    def player(self, pid: int) -> Player | None:
        """The player synced to now (None if unknown)."""
        player = self.players.get(pid)
        if player is not None:
            player.sync(self.now)
        return player

    def _known_player(self, pid: int) -> Player:
        """The player synced to now; KeyError (a 400 from the control API) if unknown."""
        player = self.player(pid)
        if player is None:
            raise KeyError(f"no player {pid}")
        return player

    def faction(self, fid: int) -> Faction | None:
        return self.factions.get(fid)

    def faction_name(self, fid: int) -> str:
        faction = self.factions.get(fid)
        return faction.name if faction else self.filler_factions.get(fid, "Unknown")

    def current_ranked_war(self, fid: int) -> RankedWar | None:
        """The faction's ongoing war, or the one that ended in the last two days."""
        wars = [w for w in self.ranked_wars.values() if fid in w.factions]
        if not wars:
            return None
        war = max(wars, key=lambda w: (w.start, w.id))
        if war.end and self.now - war.end > 2 * DAY:
            return None
        return war

    def ranked_wars_of(self, fid: int) -> list[RankedWar]:
        """Every war of the faction, newest first."""
        return sorted((w for w in self.ranked_wars.values() if fid in w.factions), key=lambda w: (-w.start, -w.id))

    def live_ranked_wars(self) -> list[RankedWar]:
        return sorted((w for w in self.ranked_wars.values() if w.end == 0 or self.now - w.end < DAY),
                      key=lambda w: w.id)

    def active_territory_wars(self, fid: int | None = None) -> list[TerritoryWar]:
        return [w for w in sorted(self.territory_wars.values(), key=lambda w: w.id)
                if not w.ended and (fid is None or fid in (w.assaulting, w.defending))]

    def faction_rank(self, fid: int) -> dict:
        """The faction's rank block with its position among the world's factions."""
        me = self.factions[fid]
        above = sum(1 for f in self.factions.values() if (f.rank_points, -f.id) > (me.rank_points, -me.id))
        rank = me.rank
        return {"level": rank["level"], "name": rank["name"], "division": rank["division"],
                "position": above + 1, "wins": rank["wins"]}

    def territories_of(self, fid: int) -> list[Territory]:
        return [t for t in self.territories.values() if t.owner == fid]

    def owner_for_key(self, key: str) -> int:
        """A key's default owner: a stable pick among the players who started in a faction."""
        pool = self.initial_members or sorted(self.players)
        return pool[int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % len(pool)]

    def summary(self) -> dict:
        return {
            "now": self.now, "seed": self.seed,
            "factions": [{"id": f.id, "name": f.name, "members": list(f.members)} for f in self.factions.values()],
            "players": sorted(self.players), "territories": len(self.territories),
            "ranked_wars_active": [w.id for w in self.ranked_wars.values() if w.end == 0],
            "territory_wars_active": [w.id for w in self.active_territory_wars()],
        }

    # ---- forced events (tests and demos) -----------------------------------------------------------
    def start_ranked_war(self, f1: int, f2: int, *, start: int | None = None, target: int = 5000,
                         now: int | None = None) -> RankedWar:
        """Match two factions; scores start moving at `start` (default: now)."""
        now = self.now if now is None else now
        war = RankedWar(self._next_rw_id, (f1, f2), {f1: 0, f2: 0}, target, now, now if start is None else start)
        self._next_rw_id += 1
        self.ranked_wars[war.id] = war
        self._process(f"rw:{war.id}", functools.partial(self._tick_war, war.id), war.start)
        return war

    def end_ranked_war(self, war_id: int, winner: int | None = None) -> RankedWar:
        war = self.ranked_wars[war_id]
        if not war.end:
            a, b = war.factions
            leader = a if war.scores[a] >= war.scores[b] else b
            self._finish_war(war, self.now, winner if winner is not None else leader)
        return war

    def start_territory_war(self, code: str, assaulting: int, *, now: int | None = None) -> TerritoryWar:
        now = self.now if now is None else now
        terr = self.territories[code]
        if terr.owner is None or terr.war_id is not None:
            raise ValueError(f"territory {code} is not owned or already at war")
        r = self._rng("tw-start")
        war = TerritoryWar(self._next_tw_id, code, assaulting, terr.owner,
                           required=(300_000 + 50_000 * (terr.size + terr.density)) // 50_000 * 50_000,
                           start=now, end=now + 72 * HOUR, momentum=r.uniform(0.3, 1.6))
        for fid, seats in ((assaulting, war.assaulters), (terr.owner, war.defenders)):
            members = self.factions[fid].members if fid in self.factions else []
            seats.extend(sorted(r.sample(members, min(len(members), r.randint(1, 4)))))
        self._next_tw_id += 1
        terr.war_id = war.id
        self.territory_wars[war.id] = war
        self._process(f"tw:{war.id}", functools.partial(self._tick_territory_war, war.id), now + 30 * MINUTE)
        return war

    def transfer_territory(self, code: str, faction_id: int | None, *, now: int | None = None) -> Territory:
        terr = self.territories[code]
        terr.owner = faction_id
        terr.acquired_at = (self.now if now is None else now) if faction_id is not None else None
        return terr

    def set_level(self, pid: int, level: int) -> None:
        self._known_player(pid).level = max(1, min(100, int(level)))

    def set_status(self, pid: int, state: str, seconds: int = HOUR, *, place: str = "Japan", details: str = "") -> None:
        """Force a status now for `seconds`; later episodes follow from the player's own stream."""
        player = self._known_player(pid)
        t = self.now
        player._spans = deque([_Span(t, t + int(seconds), state, place=place, details=details,
                                     plane="airliner" if state == "Traveling" else None)])
        player._free_from = t + int(seconds)
        if state != "Okay":
            return
        player._spans.clear()
        player._free_from = t
        player.synced_to = t - 1
        player.sync(t)

    def join_faction(self, pid: int, fid: int) -> None:
        self._leave(pid)
        self._join(pid, fid, self.now, self._rng(f"members:{fid}"))

    def leave_faction(self, pid: int) -> None:
        self._leave(pid)

    def add_respect(self, fid: int, amount: int) -> None:
        self.factions[fid].respect += int(amount)

    def set_racket(self, code: str, level: int | None, family: int = 0) -> None:
        """level None removes the racket; otherwise create or change it."""
        terr = self.territories[code]
        if level is None:
            terr.racket = None
        elif terr.racket is None:
            terr.racket = Racket(family % len(RACKETS), level, self.now, self.now)
        else:
            terr.racket.level, terr.racket.changed = level, self.now


def build_territories(seed: int, n: int) -> dict[str, Territory]:
    """The map: n territories on a jittered grid, real codes shuffled over it, neighbors from adjacent cells.

    Cheap (one pass, a few random draws per cell) and always contains AAC and CAA when n >= 2, so the
    ids in the v1 fixture can be requested.
    """
    rng = _stream(seed, "map")
    n = max(1, min(int(n), len(TERRITORY_CODES)))
    must = ["AAC", "CAA"][: min(2, n)]
    must_set = set(must)
    codes = must + rng.sample([c for c in TERRITORY_CODES if c not in must_set], n - len(must))
    rng.shuffle(codes)
    cols = max(1, round(math.sqrt(n * 2)))
    rows = math.ceil(n / cols)
    sx, sy = MAP_WIDTH / cols, MAP_HEIGHT / rows
    cells: list[Territory] = []
    for i, code in enumerate(codes):
        row, col = divmod(i, cols)
        x = (col + 0.5 + rng.uniform(-0.3, 0.3)) * sx
        y = (row + 0.5 + rng.uniform(-0.3, 0.3)) * sy
        numeric = rng.random() < 0.2
        x, y = (float(round(x)), float(round(y))) if numeric else (round(x, 2), round(y, 2))
        size = rng.choices((1, 2, 3, 4, 5, 6), (20, 25, 25, 15, 10, 5))[0]
        density = rng.choice((1, 2, 3))
        cells.append(Territory(
            code=code, sector=1 + min(6, int(7 * x / MAP_WIDTH)), size=size, density=density,
            slots=4 * size + 2 * density + rng.randint(0, 8), respect=10 + size * density * 7 + rng.randint(0, 6),
            x=x, y=y, numeric_coords=numeric,
        ))
    for i, cell in enumerate(cells):
        row, col = divmod(i, cols)
        for dr, dc, p in ((0, 1, 0.85), (1, 0, 0.85), (1, 1, 0.4), (1, -1, 0.4)):
            r2, c2 = row + dr, col + dc
            j = r2 * cols + c2
            if 0 <= c2 < cols and j < n and rng.random() < p:
                cell.neighbors.append(cells[j].code)
                cells[j].neighbors.append(cell.code)
    for i, cell in enumerate(cells):
        if not cell.neighbors and n > 1:  # every territory borders at least one other
            other = cells[i - 1] if i else cells[1]
            cell.neighbors.append(other.code)
            other.neighbors.append(cell.code)
    for cell in cells:
        cell.neighbors.sort()
    return {t.code: t for t in sorted(cells, key=lambda t: t.code)}

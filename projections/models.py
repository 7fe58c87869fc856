"""Typed models of the payloads routing files into streams (see eventstore/routing.py), v1 and v2.

A payload is decoded once with `decode(payload, Model)` (msgspec.convert, strict=False) and handlers work on
plain values. Unknown fields are ignored, so new API fields never break a projection.

v1 is loose: numbers may be strings ("502.67"), booleans 0/1, and "no value" is 0, "" or "None". Fields
that can hold such values are typed `Loose` (int | float | str | None) and read through the converters
below: `opt_int` (a number, or None), `opt_id` (an id, with 0/""/"None" meaning none), `as_float`.
Enum-like fields (rank, status.state, position, last_action.status) are plain `str`: Torn adds values.

Context keys added by routing start with '_' (`_id`, `_faction_id`, `_territory`); they are declared with
`msgspec.field(name="_...")`.
"""
from __future__ import annotations

import html
import re
from typing import Any, TypeGuard, TypeVar

import msgspec
from msgspec import UNSET, Struct, UnsetType, field

Loose = int | float | str | None
T = TypeVar("T")


def decode(payload: Any, model: type[T]) -> T:
    """A payload as `model`; msgspec.ValidationError names the field that does not fit.

    The payload is a dict (decoded JSON), or the JSON text itself as bytes (replay reads the log so: a typed
    decode skips the fields no projection reads, several times faster than a dict of every field). A payload
    the typed decode refuses is decoded the dict way, so the error names the field in the same words."""
    if type(payload) is bytes:
        try:
            return _typed_decoder(model).decode(payload)
        except msgspec.DecodeError:
            payload = _any_json(payload)
    return msgspec.convert(payload, model, strict=False)


_any_json = msgspec.json.Decoder().decode
_DECODERS: dict[type, msgspec.json.Decoder] = {}


def _typed_decoder(model: type[T]) -> msgspec.json.Decoder[T]:
    found = _DECODERS.get(model)
    if found is None:
        found = _DECODERS[model] = msgspec.json.Decoder(model, strict=False)
    return found


# ------------------------------------------------------------------------------------------ converters
_NONE_TEXT = {"", "none", "null", "n/a"}


def opt_int(value: Any, field: str = "") -> int | None:
    """A whole number, or None. Accepts ints, integral floats (12.0, "12.0"), numeric strings ("1,234").
    ""/"None"/None mean no value; 0 stays 0. A number with a fraction where Torn gives integers (level 9.5)
    is refused, never rounded: ValueError naming `field`, which the runner records as a projection error."""
    if type(value) is int:
        return value
    if value is None or value is UNSET:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"{field or 'value'} {value!r} is not a whole number")
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if text.lower() in _NONE_TEXT:
            return None
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{field or 'value'} {value!r} is not a number") from None
            return opt_int(number, field)
    raise ValueError(f"{field or 'value'} {value!r} is not a number")


def opt_score(value: Any, field: str = "score") -> int | None:
    """A war score as a whole number: war reports give some scores with fractions (fact 8 of the Torn API
    notes) and the plan's columns are INTEGER, so these alone are rounded."""
    if isinstance(value, float) and not value.is_integer():
        return round(value)
    if isinstance(value, str):
        try:
            number = float(value.strip().replace(",", ""))
        except ValueError:
            return opt_int(value, field)
        return round(number) if not number.is_integer() else opt_int(value, field)
    return opt_int(value, field)


def opt_id(value: Any) -> int | None:
    """An entity id, or None: v1 says "no faction" with 0, "" or "None"; v2 with null."""
    if type(value) is int:
        number: int | None = value
    elif type(value) is str and value.isascii() and value.isdigit():   # a stream's entity id
        number = int(value)
    else:
        number = opt_int(value)
    if number is None or number <= 0:
        return None
    return number


def as_float(value: Any) -> float | None:
    """A float from a number or a numeric string ("502.67", 318), or None."""
    if value is None or value is UNSET:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _NONE_TEXT:
            return None
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    raise ValueError(f"{value!r} is not a number")


def opt_text(value: Any) -> str | None:
    """A display name: HTML entities decoded (Torn sends "&#039;"), "" and None mean no value."""
    if value is None or value is UNSET:
        return None
    text = str(value)
    if "&" in text:
        text = html.unescape(text)
    return text.strip() or None


_ROMAN_SUFFIX = re.compile(r"\s+[IVXLCDM]+$")


def racket_type(name: str | None) -> str | None:
    """The kind of racket without its level numeral: "Arms Dealer IV" -> "Arms Dealer"."""
    if not name:
        return None
    return _ROMAN_SUFFIX.sub("", html.unescape(name).strip()) or None


def is_set(value: T | UnsetType) -> TypeGuard[T]:
    """Whether a field was in the payload (UNSET: it was not)."""
    return value is not UNSET


# ------------------------------------------------------------------------------------------ shared parts
class Status(Struct, kw_only=True):
    description: str | None = None
    details: str | None = None
    state: str | None = None
    color: str | None = None
    until: Loose = None


class LastAction(Struct, kw_only=True):
    status: str | None = None
    timestamp: Loose = None
    relative: str | None = None


class Life(Struct, kw_only=True):
    current: Loose = None
    maximum: Loose = None


class Coordinates(Struct, kw_only=True):
    x: Loose = None
    y: Loose = None


# ------------------------------------------------------------------------------------------ users
class V1ProfileFaction(Struct, kw_only=True):
    faction_id: Loose = None
    faction_name: str | None = None
    faction_tag: str | None = None
    position: str | None = None


class V1Profile(Struct, kw_only=True):
    """user:<id>:v1.profile (user/<id>?selections=profile; other selections are split off by routing)."""
    player_id: Loose = None
    name: str | None = None
    level: Loose = None
    rank: str | None = None
    life: Life | None = None
    status: Status | None = None
    faction: V1ProfileFaction | None = None
    last_action: LastAction | None = None


class V1Basic(Struct, kw_only=True):
    """user:<id>:v1.basic."""
    player_id: Loose = None
    name: str | None = None
    level: Loose = None
    status: Status | None = None


class V1Member(Struct, kw_only=True):
    """user:<id>:v1.member: one entry of a v1 faction's `members`, plus `_id` and `_faction_id`."""
    id: Loose = field(default=None, name="_id")
    faction_id: Loose = field(default=None, name="_faction_id")
    name: str | None = None
    level: Loose = None
    position: str | None = None
    status: Status | None = None
    last_action: LastAction | None = None


class V2Profile(Struct, kw_only=True):
    """user:<id>:v2.profile (the content of `profile`)."""
    id: Loose = None
    name: str | None = None
    level: Loose = None
    rank: str | None = None
    title: str | None = None
    faction_id: Loose = None
    status: Status | None = None
    last_action: LastAction | None = None
    life: Life | None = None


class V2Basic(Struct, kw_only=True):
    """user:<id>:v2.basic (/v2/user/<id>/basic, wrapped in `profile`)."""
    id: Loose = None
    name: str | None = None
    level: Loose = None
    status: Status | None = None


class V2Member(Struct, kw_only=True):
    """user:<id>:v2.member: one item of /v2/faction/<id>/members, plus `_faction_id`."""
    id: Loose = None
    faction_id: Loose = field(default=None, name="_faction_id")
    name: str | None = None
    level: Loose = None
    position: str | None = None
    status: Status | None = None
    last_action: LastAction | None = None


class V1BattleStats(Struct, kw_only=True):
    """user:<id>:v1.battlestats (own key only)."""
    strength: Loose = None
    defense: Loose = None
    speed: Loose = None
    dexterity: Loose = None
    total: Loose = None


class V2StatDetail(Struct, kw_only=True):
    value: Loose = None
    modifier: Loose = None


class V2BattleStatsBody(Struct, kw_only=True):
    strength: V2StatDetail | None = None
    defense: V2StatDetail | None = None
    speed: V2StatDetail | None = None
    dexterity: V2StatDetail | None = None
    total: Loose = None


class V2BattleStats(Struct, kw_only=True):
    """user:<id>:v2.battlestats: {"battlestats": {...}} (own key only)."""
    battlestats: V2BattleStatsBody | None = None


class V1PersonalStatsBody(Struct, kw_only=True):
    strength: Loose = None          # own key only
    defense: Loose = None
    speed: Loose = None
    dexterity: Loose = None
    totalstats: Loose = None
    networth: Loose = None          # public


class V1PersonalStats(Struct, kw_only=True):
    """user:<id>:v1.personalstats: {"personalstats": {...}}."""
    personalstats: V1PersonalStatsBody | None = None


class V2PersonalBattleStats(Struct, kw_only=True):
    strength: Loose = None
    defense: Loose = None
    speed: Loose = None
    dexterity: Loose = None
    total: Loose = None


class V2Networth(Struct, kw_only=True):
    total: Loose = None


class V2PersonalStatsBody(Struct, kw_only=True):
    battle_stats: V2PersonalBattleStats | None = None   # own key, full/limited access only
    networth: V2Networth | None = None


class V2HistoricStat(Struct, kw_only=True):
    name: str
    value: Loose = None
    timestamp: Loose = None


class V2PersonalStats(Struct, kw_only=True):
    """user:<id>:v2.personalstats: {"personalstats": {...}} by category, or a list of historic stats
    ([{name, value, timestamp}]) for ?stat=."""
    personalstats: V2PersonalStatsBody | list[V2HistoricStat] | None = None


class V1Bars(Struct, kw_only=True):
    """user:<id>:v1.bars (own key only)."""
    life: Life | None = None


class V2BarsBody(Struct, kw_only=True):
    life: Life | None = None


class V2Bars(Struct, kw_only=True):
    """user:<id>:v2.bars: {"bars": {...}}."""
    bars: V2BarsBody | None = None


# ------------------------------------------------------------------------------------------ factions
class V1Faction(Struct, kw_only=True):
    """faction:<id>:v1.faction: faction basic without its members (now `member_ids`), ranked wars
    (`ranked_war_ids`) and territory wars (`territory_war_ids`). Other selections land here too, so every
    field may be missing: UNSET means "not in this payload", which is not the same as 0/None."""
    ID: Loose = None
    name: str | None | UnsetType = UNSET
    tag: str | None | UnsetType = UNSET
    leader: Loose | UnsetType = UNSET
    co_leader: Loose | UnsetType = field(default=UNSET, name="co-leader")
    respect: Loose | UnsetType = UNSET
    age: Loose | UnsetType = UNSET
    best_chain: Loose | UnsetType = UNSET
    member_ids: list[int] | None | UnsetType = UNSET
    ranked_war_ids: list[int] | None | UnsetType = UNSET
    territory_war_ids: list[str] | None | UnsetType = UNSET


class V2Faction(Struct, kw_only=True):
    """faction:<id>:v2.faction: the content of /v2/faction/<id>/basic `basic`."""
    id: Loose = None
    name: str | None | UnsetType = UNSET
    tag: str | None | UnsetType = UNSET
    leader_id: Loose | UnsetType = UNSET
    co_leader_id: Loose | UnsetType = UNSET
    respect: Loose | UnsetType = UNSET
    days_old: Loose | UnsetType = UNSET
    best_chain: Loose | UnsetType = UNSET
    members: Loose | UnsetType = UNSET


class MemberIds(Struct, kw_only=True):
    """faction:<id>:v2.members: the ids a faction's member list held."""
    member_ids: list[int] = []


class TerritoryIds(Struct, kw_only=True):
    """faction:<id>:v1.territory / faction:<id>:v2.territory (a faction's territories) and
    torn:rackets:v1.rackets (territories that have a racket)."""
    territory_ids: list[str] = []


class TerritoryWarIds(Struct, kw_only=True):
    """torn:territorywars:v1.territorywars: every territory war Torn lists (ids as routing named them:
    "40113", or "EAD@1628841674" for an old entry without territory_war_id)."""
    war_ids: list[str] = []


class V2FactionWars(Struct, kw_only=True):
    """faction:<id>:v2.wars: which wars /v2/faction/<id>/wars listed."""
    ranked_war_id: Loose = None
    territory_war_ids: list[int] = []


# ------------------------------------------------------------------------------------------ wars
class V1RankedWarFaction(Struct, kw_only=True):
    name: str | None = None
    score: Loose = None
    chain: Loose = None


class V1RankedWarInfo(Struct, kw_only=True):
    start: Loose = None
    end: Loose = None
    target: Loose = None
    winner: Loose = None


class V1RankedWar(Struct, kw_only=True):
    """rankedwar:<id>:v1.rankedwar: {factions: {"<fid>": {name, score, chain}}, war: {start, end, target,
    winner}} (torn rankedwars, or a faction's ranked_wars)."""
    factions: dict[str, V1RankedWarFaction] = {}
    war: V1RankedWarInfo | None = None


class V2WarFaction(Struct, kw_only=True):
    id: Loose = None
    name: str | None = None
    score: Loose = None
    chain: Loose = None
    is_aggressor: bool | None = None       # territory wars only


class V2RankedWar(Struct, kw_only=True):
    """rankedwar:<id>:v2.war (wars.ranked, `war_id`, `end` null while ongoing) and rankedwar:<id>:v2.rankedwar
    (faction rankedwars, `id`, `end` 0 while ongoing)."""
    id: Loose = None
    war_id: Loose = None
    start: Loose = None
    end: Loose = None
    target: Loose = None
    winner: Loose = None
    factions: list[V2WarFaction] = []


class V1TerritoryWar(Struct, kw_only=True):
    """territorywar:<id>:v1.territorywar: an entry of torn territorywars (keyed by territory there, now
    `_territory`); old entries have only the four first fields. Also the `war` inside a v1 torn territory."""
    assaulting_faction: Loose = None
    defending_faction: Loose = None
    started: Loose = None
    ends: Loose = None
    territory_war_id: Loose = None
    score: Loose | UnsetType = UNSET
    required_score: Loose | UnsetType = UNSET
    territory: str | None = field(default=None, name="_territory")


class V1FactionTerritoryWar(Struct, kw_only=True):
    """territorywar:<id>:v1.faction_territorywar: an entry of a v1 faction's territory_wars."""
    territory: str | None = None
    assaulting_faction: Loose = None
    defending_faction: Loose = None
    score: Loose | UnsetType = UNSET
    required_score: Loose | UnsetType = UNSET
    start_time: Loose = None
    end_time: Loose = None
    territory_war_id: Loose = None
    faction_id: Loose = field(default=None, name="_faction_id")  # in events routed before rules r2 only


class V2TerritoryWar(Struct, kw_only=True):
    """territorywar:<id>:v2.war: an item of /v2/faction/<id>/wars `territory`."""
    war_id: Loose = None
    territory: str | None = None
    start: Loose = None
    end: Loose = None
    target: Loose = None
    winner: Loose = None
    factions: list[V2WarFaction] = []


# ------------------------------------------------------------------------------------------ territories
class V1Racket(Struct, kw_only=True):
    """territory:<code>:v1.racket: an entry of torn rackets (`faction` is the territory's owner)."""
    name: str | None = None
    level: Loose = None
    reward: Any = None
    faction: Loose = None
    id: str | None = field(default=None, name="_id")


# The views whose payloads decode as V1Territory (rules r2 gave a faction's listing its own view).
V1_TERRITORY_VIEWS = frozenset({"v1.territory", "v1.faction_territory"})


class V1Territory(Struct, kw_only=True):
    """territory:<code>:v1.territory: torn territory (owner in `faction`, 0 when unowned, optional
    `racket` and `war`); territory:<code>:v1.faction_territory: a faction's territory selection
    (`_faction_id`)."""
    id: str | None = field(default=None, name="_id")
    faction_id: Loose = field(default=None, name="_faction_id")
    sector: Loose = None
    faction: Loose | UnsetType = UNSET
    coordinate_x: Loose = None
    coordinate_y: Loose = None
    racket: V1Racket | None = None
    war: V1TerritoryWar | None = None


class V2Racket(Struct, kw_only=True):
    """A v2 racket (TornRacket): inside a faction territory, or territory:<code>:v2.racket."""
    name: str | None = None
    level: Loose = None
    territory: str | None = None
    id: str | None = None


class V2Territory(Struct, kw_only=True):
    """territory:<code>:v2.territory: /v2/torn/territory geometry (no owner, no racket)."""
    id: str | None = None
    sector: Loose = None
    coordinates: Coordinates | None = None


class V2FactionTerritory(Struct, kw_only=True):
    """territory:<code>:v2.faction_territory: an item of /v2/faction/<id>/territory, plus `_faction_id`.
    `racket` is null when the territory has none."""
    id: str | None = None
    faction_id: Loose = field(default=None, name="_faction_id")
    sector: Loose = None
    coordinates: Coordinates | None = None
    racket: V2Racket | None = None
    acquired_at: Loose = None


class V2Ownership(Struct, kw_only=True):
    """territory:<code>:v2.ownership: an item of /v2/faction/territoryownership."""
    id: str | None = None
    owned_by: Loose = None
    acquired_at: Loose = None


class V2Rackets(Struct, kw_only=True):
    """torn:rackets:v2.rackets: spec 6.6.1 rackets carry no territory, so they are kept but not projected."""
    rackets: list[V2Racket] = []

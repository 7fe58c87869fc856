"""Render the simulated world as Torn API v1 and v2 response bodies, and route a request path to them.

Why a separate module: the shapes (and their quirks) are what tornstore must cope with, so they live
in one place, apart from HTTP, auth and faults (server.py) and from the game state (world.py).

v1 quirks kept on purpose: collections keyed by id strings, 0 / "" for "no value", booleans as 0/1,
empty collections as [] (PHP-style), territory coordinates as a mix of strings and numbers,
`territorywars` null when there are none. v2: lists of objects with `id`, null for "no value"
(except rankedwars `end: 0` for an ongoing war), per-selection wrappers, `_metadata.links` paging.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from . import extras
from . import personalstats as ps
from .world import (CHAIN_MILESTONES, DAY, HOUR, Faction, Player, RankedWar, Racket, Territory,
                    TerritoryWar, World, _h01)

ERROR_TEXT = {
    0: "Unknown error", 1: "Key is empty", 2: "Incorrect key", 3: "Wrong type", 4: "Wrong fields",
    5: "Too many requests", 6: "Incorrect ID", 7: "Incorrect ID-entity relation", 8: "IP block",
    9: "API disabled", 10: "Key owner is in federal jail", 11: "Key change error", 12: "Key read error",
    13: "The key is temporarily disabled due to owner inactivity", 14: "Daily read limit reached",
    15: "Temporary error", 16: "Access level of this key is not high enough",
    17: "Backend error occurred, please try again", 18: "API key has been paused by the owner",
    19: "Must be migrated to crimes 2.0", 20: "Race not yet finished", 21: "Incorrect category",
    22: "This selection is only available in API v1", 23: "This selection is only available in API v2",
    24: "Closed temporarily",
}


class TornError(Exception):
    """A Torn error body to send instead of a success body (always with HTTP 200)."""

    def __init__(self, code: int, text: str | None = None):
        super().__init__(code)
        self.code = code
        self.text = text or ERROR_TEXT.get(code, "Unknown error")


def error_body(code: int, text: str | None = None) -> dict:
    return {"error": {"code": code, "error": text or ERROR_TEXT.get(code, "Unknown error")}}


@dataclass
class Ctx:
    """What a renderer needs besides the world: who asks, with which query, and where links point."""

    world: World
    owner: int  # the key owner's player id
    query: Mapping[str, str] = field(default_factory=dict)
    base_url: str = "http://127.0.0.1"
    path: str = "/"

    @property
    def now(self) -> int:
        return self.world.now

    @property
    def owner_faction(self) -> int | None:
        player = self.world.player(self.owner)
        return player.faction_id if player else None


# ---- shared pieces ---------------------------------------------------------------------------------

def _status(player: Player, t: int, v: int) -> dict:
    s = player.status(t)
    out = {"description": s.description, "details": s.details or ("" if v == 1 else None), "state": s.state,
           "color": s.color, "until": s.until if s.until is not None else (0 if v == 1 else None)}
    if v == 2 and s.plane_image_type:
        out["plane_image_type"] = s.plane_image_type
    return out


def _last_action(player: Player, t: int) -> dict:
    la = player.last_action(t)
    return {"status": la.status, "timestamp": la.timestamp, "relative": la.relative}


def _bar(current: int, maximum: int, increment: int, interval: int, t: int, v: int) -> dict:
    """A regenerating bar; tick and full times count down with the clock (volatile by design)."""
    current = max(0, current)
    tick = interval - (t % interval)
    full = 0 if current >= maximum else tick + interval * (math.ceil((maximum - current) / max(1, increment)) - 1)
    keys = ("ticktime", "fulltime") if v == 1 else ("tick_time", "full_time")
    return {"current": current, "maximum": maximum, "increment": increment, "interval": interval,
            keys[0]: tick, keys[1]: full}


def _regen(last_spent: int, per_tick: int, interval: int, t: int) -> int:
    return per_tick * max(0, (t - last_spent) // interval)


def _life_bar(player: Player, t: int, v: int) -> dict:
    top = player.life_maximum
    return _bar(player.life_current(t), top, max(1, top * 6 // 100), 300, t, v)


def _daily_mark(world: World, pid: int, what: str, t: int) -> int:
    """The most recent daily moment (stable per player) at or before t, e.g. when nerve was spent."""
    offset = int(_h01(world.seed, what, pid) * DAY)
    mark = (t - offset) // DAY * DAY + offset
    return mark if mark <= t else mark - DAY


def _bars(world: World, player: Player, t: int, v: int) -> dict:
    seed, pid = world.seed, player.id
    e_max = 150 if player.donator else 100
    n_max = 10 + player.level // 2 + int(_h01(seed, "nerve-max", pid) * 60)
    h_max = 250 + int(_h01(seed, "happy-max", pid) * 4775)
    energy = min(e_max, _regen(player.last_train, 5, 600, t))
    nerve = min(n_max, _regen(_daily_mark(world, pid, "nerve", t), 1, 300, t))
    out = {"energy": _bar(energy, e_max, 5, 600, t, v), "nerve": _bar(nerve, n_max, 1, 300, t, v),
           "happy": _bar(h_max, h_max, 5, 900, t, v), "life": _life_bar(player, t, v)}
    return out


def _chain_numbers(world: World, fid: int | None, t: int) -> dict:
    faction = world.factions.get(fid) if fid else None
    chain = faction.chain if faction else None
    if chain is None or fid is None:  # (no faction id, no chain)
        last = faction.last_chain if faction else None
        return {"id": last.id if last else 0, "current": 0, "max": 10, "timeout": 0, "modifier": 1.0,
                "cooldown": 0, "start": last.start if last else 0, "end": last.end if last else 0}
    current = world.chain_current(fid, t)
    next_milestone = next((m for m in CHAIN_MILESTONES if m > current), CHAIN_MILESTONES[-1])
    timeout = 300 - ((t - chain.start) % 300)
    modifier = round(1 + min(2.0, current / 500), 2)
    return {"id": chain.id, "current": current, "max": next_milestone, "timeout": timeout, "modifier": modifier,
            "cooldown": 0, "start": chain.start, "end": t + timeout}


def _cooldowns(world: World, pid: int, t: int) -> dict:
    out = {}
    for what, length in (("drug", 6 * HOUR), ("medical", 3 * HOUR), ("booster", 12 * HOUR)):
        mark = _daily_mark(world, pid, "cd-" + what, t)
        out[what] = max(0, mark + int(length * _h01(world.seed, what, pid, mark)) - t)
    return {"booster": out["booster"], "drug": out["drug"], "medical": out["medical"]}


def _modifiers(player: Player) -> dict[str, list[tuple[str, int, str]]]:
    """Stable stat modifiers per player: (effect text, percent, source type)."""
    out = {}
    for stat in ("strength", "defense", "speed", "dexterity"):
        mods = []
        if player.faction_id is not None:
            pct = 1 + int(_h01(player.world.seed, "mod", stat, player.id) * 12)
            mods.append((f"+{pct}% to {stat.capitalize()} from Faction upgrades", pct, "Faction"))
        if player.donator:
            mods.append((f"+1% to {stat.capitalize()} from Education", 1, "Education"))
        out[stat] = mods
    return out


_PUBLIC_PS = ("activestreak", "attackswon", "attackslost", "attacksdraw", "defendswon", "defendslost",
              "hospital", "jailed", "revives", "drugsused", "xantaken", "overdosed", "refills", "traveltimes",
              "meritsbought", "racesentered", "raceswon", "missionscompleted", "respectforfaction",
              "rankedwarhits", "territoryjoins", "useractivity", "bestactivestreak", "awards", "elo")
_OWN_PS = ("networthwallet", "networthbank", "networthpoints", "networthitems", "networthproperties",
           "networthstockmarket", "networthcayman", "networthvault", "networthpiggybank")


def _int_arg(query: Mapping[str, str], name: str, default: int, maximum: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TornError(4, f"Wrong fields: {name}") from None
    return max(0, min(value, maximum)) if name == "offset" else max(1, min(value, maximum))


def _page(ctx: Ctx, items: list, default: int, maximum: int) -> tuple[list, dict]:
    """Offset/limit paging with full-URL next/prev links (the key is never put into a link)."""
    limit = _int_arg(ctx.query, "limit", default, maximum)
    offset = _int_arg(ctx.query, "offset", 0, 10**9)
    keep = [(k, v) for k, v in ctx.query.items() if k.lower() not in ("key", "limit", "offset")]

    def link(off: int) -> str:
        return f"{ctx.base_url}{ctx.path}?{urlencode(keep + [('limit', limit), ('offset', off)], safe=',')}"

    chunk = items[offset:offset + limit]
    nxt = link(offset + limit) if offset + limit < len(items) else None
    prev = link(max(0, offset - limit)) if offset > 0 else None
    return chunk, {"links": {"next": nxt, "prev": prev}}


def _v1_coord(terr: Territory, value: float) -> str | int | float:
    if terr.numeric_coords:
        return int(value) if value == int(value) else value
    return f"{value:.2f}"


# ---- v1 user --------------------------------------------------------------------------------------

def v1_basic(ctx: Ctx, p: Player) -> dict:
    return {"level": p.level, "gender": p.gender, "player_id": p.id, "name": p.name, "status": _status(p, ctx.now, 1)}


def _icons(ctx: Ctx, p: Player) -> dict:
    t = ctx.now
    icons = {"icon6": p.gender}
    if p.donator:
        icons["icon4"] = "Subscriber"
    if p.spouse:
        icons["icon8"] = f"Married - To {p.spouse[1]}"
    if p.job[1]:
        icons["icon27"] = f"Company - {p.job[0]} of {p.job[1][0]}"
    faction = ctx.world.factions.get(p.faction_id) if p.faction_id else None
    if faction:
        icons["icon9"] = f"Faction - {p.position} of {faction.name}"
    s = p.status(t)
    if s.until:
        left = max(0, s.until - t)
        clock = f"{left // 3600:02d}:{left % 3600 // 60:02d}:{left % 60:02d}"
        icons["icon15" if s.state == "Hospital" else "icon16"] = f"{s.state} - {s.details} - {clock}"
    if s.state == "Traveling":
        icons["icon71"] = s.description
    return icons


def v1_profile(ctx: Ctx, p: Player) -> dict:
    t, world = ctx.now, ctx.world
    faction = world.factions.get(p.faction_id) if p.faction_id else None
    s = p.status(t)
    company = p.job[1]
    return {
        "rank": f"{p.rank_name()} {p.title}", "level": p.level, "gender": p.gender, "property": p.property_name,
        "signup": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p.signup)),
        "awards": p.counter("awards", t), "friends": p.counter("friends", t), "enemies": p.counter("enemies", t),
        "forum_posts": p.counter("forum_posts", t), "karma": p.counter("karma", t),
        "age": (t - p.signup) // DAY, "role": p.role, "donator": 1 if p.donator else 0,
        "player_id": p.id, "name": p.name, "property_id": p.property_id,
        "revivable": 1 if s.state == "Hospital" and p.revive_setting != "No one" else 0,
        "life": _life_bar(p, t, 1), "status": _status(p, t, 1),
        "job": {"job": p.job[0] if company else "None", "position": p.job[0] if company else "None",
                "company_id": p.job[2], "company_name": company[0] if company else "None",
                "company_type": company[1] if company else 0},
        "faction": {"position": p.position if faction else "None", "faction_id": faction.id if faction else 0,
                    "days_in_faction": (t - p.faction_joined) // DAY if faction else 0,
                    "faction_name": faction.name if faction else "None",
                    "faction_tag": faction.tag if faction else None},
        "married": {"spouse_id": p.spouse[0] if p.spouse else 0, "spouse_name": p.spouse[1] if p.spouse else "None",
                    "duration": (t - p.spouse[2]) // DAY if p.spouse else 0},
        "basicicons": _icons(ctx, p),
        "states": {"hospital_timestamp": s.until if s.state == "Hospital" else 0,
                   "jail_timestamp": s.until if s.state == "Jail" else 0},
        "last_action": _last_action(p, t),
    }


def v1_personalstats(ctx: Ctx, p: Player) -> dict:
    own = p.id == ctx.owner
    names = _PUBLIC_PS + ("networth",) + (_OWN_PS + tuple(p.stats) + ("totalstats",) if own else ())
    return {"personalstats": {name: ps.value(ctx.world, p, name, ctx.now) for name in sorted(names)}}


def v1_battlestats(ctx: Ctx, p: Player) -> dict:
    mods = _modifiers(p)
    out: dict = {name: p.stats[name] for name in ("strength", "speed", "dexterity", "defense")}
    out["total"] = p.total_stats
    for name in ("strength", "defense", "speed", "dexterity"):
        out[f"{name}_modifier"] = sum(m[1] for m in mods[name])
    for name in ("strength", "defense", "speed", "dexterity"):
        out[f"{name}_info"] = [m[0] for m in mods[name]]
    return out


def v1_bars(ctx: Ctx, p: Player) -> dict:
    out = _bars(ctx.world, p, ctx.now, 1)
    c = _chain_numbers(ctx.world, p.faction_id, ctx.now)
    out["chain"] = {"current": c["current"], "maximum": c["max"], "timeout": c["timeout"],
                    "modifier": c["modifier"], "cooldown": c["cooldown"]}
    out["server_time"] = ctx.now
    return out


def v1_cooldowns(ctx: Ctx, p: Player) -> dict:
    return {"cooldowns": _cooldowns(ctx.world, p.id, ctx.now)}


def v1_travel(ctx: Ctx, p: Player) -> dict:
    trip = extras.travel(p, ctx.now)
    return {"travel": {"destination": trip.destination, "method": trip.method or "Standard",
                       "timestamp": trip.arrival or 0, "departed": trip.departed or 0, "time_left": trip.time_left}}


def v1_icons(ctx: Ctx, p: Player) -> dict:
    return {"icons": _icons(ctx, p)}


def v1_stocks(ctx: Ctx, p: Player) -> dict:
    stocks = {}
    for h in extras.holdings(ctx.world, p, ctx.now):
        bonus = {"ready": int(h.ready), "increment": h.increment, "progress": h.progress, "frequency": h.frequency}
        stocks[str(h.stock_id)] = {
            "stock_id": h.stock_id, "total_shares": h.shares, "dividend": bonus,
            "transactions": {str(tr.id): {"shares": tr.shares, "bought_price": tr.price, "time_bought": tr.when}
                             for tr in h.trades}}
    return {"stocks": stocks or []}


def _time_window(query: Mapping[str, str], default_limit: int) -> tuple[int | None, int | None, int]:
    """from, to and limit of a v1 or v2 list of events or messages (v1 gives 100 when `from` is set)."""
    since = _int_arg(query, "from", 0, 2**31) or None
    until = _int_arg(query, "to", 0, 2**31) or None
    return since, until, _int_arg(query, "limit", 100 if since and default_limit == 25 else default_limit, 100)


def _in_window(items, since: int | None, until: int | None, limit: int) -> list:
    """Items (newest first, with a timestamp) between since and until, at most limit + 1 (one more says
    whether there is a next page)."""
    out = []
    for item in items:
        if until is not None and item.timestamp > until:
            continue
        if since is not None and item.timestamp < since:
            break
        out.append(item)
        if len(out) > limit:
            break
    return out


def v1_events(ctx: Ctx, p: Player) -> dict:
    since, until, limit = _time_window(ctx.query, 25)
    shown = _in_window(extras.events(ctx.world, p, ctx.now), since, until, limit)[:limit]
    return {"events": {e.id: {"timestamp": e.timestamp, "event": e.text} for e in shown} or []}


def v1_messages(ctx: Ctx, p: Player) -> dict:
    since, until, limit = _time_window(ctx.query, 25)
    shown = _in_window(extras.messages(ctx.world, p, ctx.now), since, until, limit)[:limit]
    return {"messages": {str(m.id): {"timestamp": m.timestamp, "ID": m.sender_id, "name": m.sender_name,
                                     "type": m.kind, "title": m.topic, "seen": int(m.seen), "read": int(m.read)}
                         for m in shown} or []}


def v1_notifications(ctx: Ctx, p: Player) -> dict:
    return {"notifications": extras.notifications(ctx.world, p, ctx.now)}


V1_USER: dict[str, Callable[[Ctx, Player], dict]] = {
    "basic": v1_basic, "profile": v1_profile, "personalstats": v1_personalstats,
    "battlestats": v1_battlestats, "bars": v1_bars, "cooldowns": v1_cooldowns, "travel": v1_travel,
    "icons": v1_icons, "stocks": v1_stocks, "events": v1_events, "messages": v1_messages,
    "notifications": v1_notifications,
}
OWN_ONLY = {"battlestats", "bars", "cooldowns", "travel", "icons", "stocks", "events", "messages", "notifications"}


# ---- v1 faction / torn ----------------------------------------------------------------------------

def _v1_ranked_war(world: World, war: RankedWar) -> dict:
    return {"factions": {str(fid): {"name": world.faction_name(fid), "score": war.scores[fid],
                                    "chain": world.chain_current(fid) if war.end == 0 and fid in world.factions else 0}
                         for fid in war.factions},
            "war": {"start": war.start, "end": war.end, "target": war.target, "winner": war.winner or 0}}


def _v1_territory(world: World, terr: Territory, with_neighbors: bool) -> dict:
    out: dict[str, Any] = {"sector": terr.sector, "size": terr.size, "density": terr.density, "slots": terr.slots,
                           "daily_respect": terr.respect, "faction": terr.owner or 0,
                           "coordinate_x": _v1_coord(terr, terr.x), "coordinate_y": _v1_coord(terr, terr.y)}
    if with_neighbors:
        out["neighbors"] = list(terr.neighbors)
    if terr.racket is not None:
        out["racket"] = _v1_racket(terr.racket)
    if with_neighbors and terr.war_id is not None:
        out["war"] = _v1_war_brief(world.territory_wars[terr.war_id])
    return out


def _v1_war_brief(w: TerritoryWar) -> dict:
    """The short war block v1 puts inside a territory or racket that is under assault."""
    return {"assaulting_faction": w.assaulting, "defending_faction": w.defending, "started": w.start, "ends": w.end}


def _v1_racket(r: Racket) -> dict:
    return {"name": r.name, "level": r.level, "reward": r.reward_text, "created": r.created, "changed": r.changed}


def _v1_territory_war(w: TerritoryWar) -> dict:
    return {"territory_war_id": w.id, "assaulting_faction": w.assaulting, "defending_faction": w.defending,
            "score": w.score, "required_score": w.required, "started": w.start, "ends": w.end,
            "assaulters": list(w.assaulters), "defenders": list(w.defenders)}


def v1_faction_basic(ctx: Ctx, f: Faction) -> dict:
    world, t = ctx.world, ctx.now
    war = world.current_ranked_war(f.id)
    members = {}
    players = world.players
    for pid in f.members:  # the hot loop of the demo's polls: one sync per member, plain dicts
        p = players[pid]
        la = p.last_action(t)
        s = p.status(t)
        members[str(pid)] = {
            "name": p.name, "level": p.level, "days_in_faction": (t - p.faction_joined) // DAY,
            "last_action": {"status": la.status, "timestamp": la.timestamp, "relative": la.relative},
            "status": {"description": s.description, "details": s.details or "", "state": s.state,
                       "color": s.color, "until": s.until if s.until is not None else 0},
            "position": p.position}
    tws = [{"territory": w.territory, "assaulting_faction": w.assaulting, "defending_faction": w.defending,
            "score": w.score, "required_score": w.required, "start_time": w.start, "end_time": w.end}
           for w in world.active_territory_wars(f.id)]
    return {
        "ID": f.id, "name": f.name, "tag": f.tag, "tag_image": f.tag_image, "leader": f.leader,
        "co-leader": f.co_leader or 0, "respect": f.respect, "age": (t - f.created) // DAY,
        "capacity": f.capacity, "best_chain": f.best_chain, "rank": world.faction_rank(f.id),
        "ranked_wars": {str(war.id): _v1_ranked_war(world, war)} if war else [],
        "members": members or [], "peace": [], "territory_wars": tws, "raid_wars": [],
    }


def v1_faction_chain(ctx: Ctx, f: Faction) -> dict:
    c = _chain_numbers(ctx.world, f.id, ctx.now)
    return {"chain": {"current": c["current"], "max": c["max"], "timeout": c["timeout"],
                      "modifier": c["modifier"] if c["current"] else 1, "cooldown": c["cooldown"],
                      "start": c["start"], "end": c["end"]}}


def v1_faction_territory(ctx: Ctx, f: Faction) -> dict:
    owned = {t.code: _v1_territory(ctx.world, t, with_neighbors=False) for t in ctx.world.territories_of(f.id)}
    return {"territory": owned or []}


def v1_faction_rankedwars(ctx: Ctx, f: Faction) -> dict:
    """The faction's last 100 ranked wars, keyed by war id."""
    wars = ctx.world.ranked_wars_of(f.id)[:100]
    return {"rankedwars": {str(w.id): _v1_ranked_war(ctx.world, w) for w in wars} or []}


V1_FACTION: dict[str, Callable[[Ctx, Faction], dict]] = {
    "basic": v1_faction_basic, "chain": v1_faction_chain, "territory": v1_faction_territory,
    "rankedwars": v1_faction_rankedwars,
}


def _finished_war(ctx: Ctx, ident: str | None) -> RankedWar:
    """A ranked war that has a report: it must exist and be over (error 6 otherwise)."""
    war = ctx.world.ranked_wars.get(int(ident)) if ident and ident.isdigit() else None
    if war is None or not war.end or war.winner is None:
        raise TornError(6, "Incorrect ID (no finished ranked war with this id)")
    return war


def v1_rankedwarreport(ctx: Ctx, ident: str) -> dict:
    war = _finished_war(ctx, ident)
    factions = {}
    for f in extras.war_report(ctx.world, war):
        factions[str(f.id)] = {
            "name": f.name, "score": f.score, "attacks": f.attacks, "rank_before": f.rank_before,
            "rank_after": f.rank_after,
            "rewards": {"respect": f.respect, "points": f.points,
                        "items": {str(i): {"name": n, "quantity": q} for i, n, q in f.items} or []},
            "members": {str(m.id): {"name": m.name, "faction_id": f.id, "level": m.level, "attacks": m.attacks,
                                    "score": m.score} for m in f.members} or []}
    return {"rankedwarreport": {"factions": factions,
                                "war": {"start": war.start, "end": war.end, "winner": war.winner, "forfeit": 0}}}


def v1_torn(ctx: Ctx, ident: str, selections: list[str]) -> dict:
    world = ctx.world
    out: dict = {}
    for sel in selections:
        if sel == "territory":
            if ident:
                codes = [c.strip().upper() for c in ident.split(",") if c.strip()]
                found = [world.territories[c] for c in codes if c in world.territories]
                if not found:
                    raise TornError(6)
            else:
                found = list(world.territories.values())
            out["territory"] = {t.code: _v1_territory(world, t, with_neighbors=True) for t in found}
        elif sel == "rackets":
            rackets = {}
            for t in world.territories.values():
                if t.racket is not None:
                    rackets[t.code] = {**_v1_racket(t.racket), "faction": t.owner or 0}
                    if t.war_id is not None:
                        rackets[t.code]["war"] = _v1_war_brief(world.territory_wars[t.war_id])
            out["rackets"] = rackets or []
        elif sel == "rankedwars":
            out["rankedwars"] = {str(w.id): _v1_ranked_war(world, w) for w in world.live_ranked_wars()} or []
        elif sel == "territorywars":
            wars = {w.territory: _v1_territory_war(w) for w in world.active_territory_wars()}
            out["territorywars"] = wars or None
        elif sel == "rankedwarreport":
            out.update(v1_rankedwarreport(ctx, ident))
        else:
            raise TornError(4)
    return out


# ---- v2 -------------------------------------------------------------------------------------------

def v2_user_basic(ctx: Ctx, p: Player) -> dict:
    return {"profile": {"id": p.id, "name": p.name, "level": p.level, "gender": p.gender,
                        "status": _status(p, ctx.now, 2)}}


def v2_user_profile(ctx: Ctx, p: Player) -> dict:
    t = ctx.now
    s = p.status(t)
    spouse = ({"id": p.spouse[0], "name": p.spouse[1], "status": "Married", "days_married": (t - p.spouse[2]) // DAY}
              if p.spouse else None)
    return {"profile": {
        "id": p.id, "name": p.name, "level": p.level, "rank": p.rank_name(), "title": p.title,
        "age": (t - p.signup) // DAY, "signed_up": p.signup, "faction_id": p.faction_id, "honor_id": p.honor_id,
        "property": {"id": p.property_id, "name": p.property_name}, "image": p.image, "gender": p.gender,
        "revivable": s.state == "Hospital" and p.revive_setting != "No one", "role": p.role,
        "status": _status(p, t, 2), "spouse": spouse, "awards": p.counter("awards", t),
        "friends": p.counter("friends", t), "enemies": p.counter("enemies", t),
        "forum_posts": p.counter("forum_posts", t), "karma": p.counter("karma", t),
        "last_action": _last_action(p, t), "life": {"current": p.life_current(t), "maximum": p.life_maximum},
        "donator_status": "Subscriber" if p.donator else None,
    }}


def v2_user_battlestats(ctx: Ctx, p: Player) -> dict:
    mods = _modifiers(p)
    out: dict = {}
    for name in ("strength", "defense", "speed", "dexterity"):
        out[name] = {"value": p.stats[name], "modifier": sum(m[1] for m in mods[name]),
                     "modifiers": [{"effect": e, "value": v, "type": k} for e, v, k in mods[name]]}
    out["total"] = p.total_stats
    return {"battlestats": out}


def v2_user_bars(ctx: Ctx, p: Player) -> dict:
    bars = _bars(ctx.world, p, ctx.now, 2)
    faction = ctx.world.factions.get(p.faction_id) if p.faction_id else None
    bars["chain"] = _chain_numbers(ctx.world, p.faction_id, ctx.now) if faction and faction.chain else None
    return {"bars": bars}


def v2_user_personalstats(ctx: Ctx, p: Player) -> dict:
    """cat=all (UserPersonalStatsFull for the key's owner, FullPublic for others), cat=popular, cat=<category>
    (that subtree of FullPublic), or stat=a,b (a list of {name, value, timestamp})."""
    cat, stat = ctx.query.get("cat"), ctx.query.get("stat")
    if cat and stat:
        raise TornError(26)
    world, t, own = ctx.world, ctx.now, p.id == ctx.owner
    if stat:
        names = [s.strip() for s in stat.split(",") if s.strip()]
        if any(name not in ps.STAT_NAMES for name in names):
            raise TornError(25)
        if not own and any(name in ps.OWN_STATS for name in names):
            raise TornError(7)  # battle stats, networth parts, ...: the key owner's only
        return {"personalstats": [{"name": name, "value": ps.value(world, p, name, t), "timestamp": t}
                                  for name in dict.fromkeys(names)]}
    if cat == "all":
        shape = ps.FULL if own else ps.PUBLIC
    elif cat == "popular":
        shape = ps.POPULAR
    elif cat in ps.CATEGORIES:
        shape = tuple(path for path in ps.PUBLIC if path.split(".", 1)[0] == cat)
    else:
        # also battle_stats, investments and itemmarket*: in PersonalStatsCategoryEnum, but the spec gives
        # no answer schema for them (UserPersonalStatsCategory lacks them), so they are not served
        raise TornError(21)
    return {"personalstats": ps.nested(world, p, shape, t)}


def v2_user_cooldowns(ctx: Ctx, p: Player) -> dict:
    return {"cooldowns": _cooldowns(ctx.world, p.id, ctx.now)}


def v2_user_travel(ctx: Ctx, p: Player) -> dict:
    trip = extras.travel(p, ctx.now)
    return {"travel": {"destination": trip.destination, "method": trip.method, "departed_at": trip.departed,
                       "arrival_at": trip.arrival, "time_left": trip.time_left}}


def v2_user_icons(ctx: Ctx, p: Player) -> dict:
    """UserIconPrivate (with `until`) for the key's owner, UserIconPublic for others: v1's "Title - text"
    icons split in two. The spec requires `description` of UserIconPublic without declaring it."""
    own, until = p.id == ctx.owner, p.status(ctx.now).until
    icons = []
    for name, text in _icons(ctx, p).items():
        title, _, description = text.partition(" - ")
        icon = {"id": int(name.removeprefix("icon")), "title": title, "description": description}
        if own:
            icon["until"] = until if name in ("icon15", "icon16") else None  # hospital, jail
        icons.append(icon)
    return {"icons": icons}


def v2_user_stocks(ctx: Ctx, p: Player) -> dict:
    return {"stocks": [{"id": h.stock_id, "shares": h.shares,
                        "bonus": {"available": h.ready, "increment": h.increment, "progress": h.progress,
                                  "frequency": h.frequency},
                        "transactions": [{"id": tr.id, "shares": tr.shares, "price": tr.price, "timestamp": tr.when}
                                         for tr in h.trades]}
                       for h in extras.holdings(ctx.world, p, ctx.now)]}


def _time_links(ctx: Ctx, shown: list, more: bool, limit: int) -> dict:
    """_metadata.links of a list paged by time: next asks for what is older than the last item shown."""
    keep = [(k, v) for k, v in ctx.query.items() if k.lower() not in ("key", "limit", "to", "from")]

    def link(**bounds: int) -> str:
        return f"{ctx.base_url}{ctx.path}?{urlencode(keep + [('limit', limit), *bounds.items()], safe=',')}"

    nxt = link(to=shown[-1].timestamp - 1) if more and shown else None
    prev = link(**{"from": shown[0].timestamp + 1}) if shown and ctx.query.get("to") else None
    return {"links": {"next": nxt, "prev": prev}}


def v2_user_events(ctx: Ctx, p: Player) -> dict:
    since, until, limit = _time_window(ctx.query, 20)
    found = _in_window(extras.events(ctx.world, p, ctx.now), since, until, limit)
    shown = found[:limit]
    return {"events": [{"id": e.id, "timestamp": e.timestamp, "event": e.text} for e in shown],
            "_metadata": _time_links(ctx, shown, len(found) > limit, limit)}


def v2_user_messages(ctx: Ctx, p: Player) -> dict:
    since, until, limit = _time_window(ctx.query, 20)
    found = _in_window(extras.messages(ctx.world, p, ctx.now), since, until, limit)
    shown = found[:limit]
    return {"messages": [{"id": m.id, "sender": {"id": m.sender_id, "name": m.sender_name},
                          "timestamp": m.timestamp, "topic": m.topic, "type": m.kind, "seen": m.seen,
                          "read": m.read} for m in shown],
            "_metadata": _time_links(ctx, shown, len(found) > limit, limit)}


def v2_user_notifications(ctx: Ctx, p: Player) -> dict:
    return {"notifications": extras.notifications(ctx.world, p, ctx.now)}


def v2_user_faction(ctx: Ctx, p: Player) -> dict:
    f = ctx.world.factions.get(p.faction_id) if p.faction_id else None
    if f is None:
        return {"faction": None}
    return {"faction": {"id": f.id, "name": f.name, "tag": f.tag, "tag_image": f.tag_image, "position": p.position,
                        "days_in_faction": (ctx.now - p.faction_joined) // DAY}}


def _v2_ranked_factions(world: World, war: RankedWar) -> list[dict]:
    return [{"id": fid, "name": world.faction_name(fid), "score": war.scores[fid],
             "chain": world.chain_current(fid) if war.end == 0 and fid in world.factions else 0}
            for fid in war.factions]


def _v2_racket(r: Racket | None) -> dict | None:
    if r is None:
        return None
    kind, qty, item_id, _ = r.reward
    return {"name": r.name, "level": r.level, "description": f"Produces {r.reward_text}",
            "reward": {"type": kind, "quantity": qty, "id": item_id}, "created_at": r.created, "changed_at": r.changed}


def v2_faction_basic(ctx: Ctx, f: Faction) -> dict:
    own = ctx.owner_faction == f.id
    return {"basic": {
        "id": f.id, "name": f.name, "tag": f.tag, "tag_image": f.tag_image, "banner_image": f.banner_image,
        "leader_id": f.leader, "co_leader_id": f.co_leader or 0, "respect": f.respect,  # the spec: never null
        "days_old": (ctx.now - f.created) // DAY, "capacity": f.capacity, "members": len(f.members),
        "is_enlisted": f.is_enlisted if own else None, "rank": ctx.world.faction_rank(f.id),
        "best_chain": f.best_chain,
    }}


def v2_faction_members(ctx: Ctx, f: Faction) -> dict:
    world, t = ctx.world, ctx.now
    own = ctx.owner_faction == f.id
    on_wall = {pid for w in world.active_territory_wars(f.id) for pid in (*w.assaulters, *w.defenders)}
    members = []
    for pid in f.members:
        p = world.player(pid)
        assert p is not None  # a faction's members are players of the world
        s = p.status(t)
        members.append({
            "id": p.id, "name": p.name, "position": p.position, "level": p.level,
            "days_in_faction": (t - p.faction_joined) // DAY,
            "is_revivable": s.state == "Hospital" and p.revive_setting != "No one",
            "is_on_wall": pid in on_wall,
            "is_in_oc": own and _h01(world.seed, "oc", pid, t // DAY) < 0.3,
            "has_early_discharge": s.state == "Hospital" and _h01(world.seed, "ed", pid) < 0.2,
            "last_action": _last_action(p, t), "status": _status(p, t, 2),
            "revive_setting": p.revive_setting if own else "Unknown",
        })
    return {"members": members}


def _v2_territory_war(world: World, w: TerritoryWar) -> dict:
    return {"war_id": w.id, "territory": w.territory, "start": w.start, "end": w.end, "target": w.required,
            "winner": w.winner,
            "factions": [{"id": fid, "name": world.faction_name(fid), "score": w.score if fid == w.assaulting else 0,
                          "chain": world.chain_current(fid) if fid in world.factions else 0,
                          "is_aggressor": fid == w.assaulting, "playerIds": list(seats)}
                         for fid, seats in ((w.assaulting, w.assaulters), (w.defending, w.defenders))]}


def v2_faction_wars(ctx: Ctx, f: Faction) -> dict:
    world = ctx.world
    war = world.current_ranked_war(f.id)
    ranked = None
    if war is not None:
        ranked = {"war_id": war.id, "start": war.start, "end": war.end or None, "target": war.target,
                  "winner": war.winner, "factions": _v2_ranked_factions(world, war)}
    territory = [_v2_territory_war(world, w) for w in world.active_territory_wars(f.id)]
    return {"pacts": [], "wars": {"ranked": ranked, "raids": [], "territory": territory}}


def v2_faction_rankedwars(ctx: Ctx, f: Faction) -> dict:
    world = ctx.world
    wars = [{"id": w.id, "start": w.start, "end": w.end, "target": w.target, "winner": w.winner,
             "factions": _v2_ranked_factions(world, w)} for w in world.ranked_wars_of(f.id)]
    chunk, meta = _page(ctx, wars, 20, 100)
    return {"rankedwars": chunk, "_metadata": meta}


def v2_faction_territory(ctx: Ctx, f: Faction) -> dict:
    return {"territory": [{"id": t.code, "acquired_at": t.acquired_at, "sector": t.sector, "size": t.size,
                           "density": t.density, "slots": t.slots, "respect": t.respect,
                           "coordinates": {"x": float(t.x), "y": float(t.y)}, "racket": _v2_racket(t.racket)}
                          for t in ctx.world.territories_of(f.id)]}


def v2_faction_chain(ctx: Ctx, f: Faction) -> dict:
    c = _chain_numbers(ctx.world, f.id, ctx.now)
    return {"chain": c}


def v2_territoryownership(ctx: Ctx, _ident: str | None = None) -> dict:
    """Paged by offset and limit (at most 500), but without `_metadata`: FactionTerritoriesOwnershipResponse
    has none, so a client asks offset by offset until a page comes back short."""
    offset = _int_arg(ctx.query, "offset", 0, 10**9)
    limit = _int_arg(ctx.query, "limit", 20, 500)
    page = list(ctx.world.territories.values())[offset:offset + limit]
    return {"territoryOwnership": [{"id": t.code, "owned_by": t.owner, "acquired_at": t.acquired_at,
                                    "irradiated": t.irradiated} for t in page]}


def v2_rackets(ctx: Ctx, _ident: str | None = None) -> dict:
    return {"rackets": [_v2_racket(t.racket) for t in ctx.world.territories.values() if t.racket is not None]}


def v2_rankedwarreport(ctx: Ctx, ident: str | None) -> dict:
    war = _finished_war(ctx, ident)
    factions = [{"id": f.id, "name": f.name, "score": f.score, "attacks": f.attacks,
                 "rank": {"before": f.rank_before, "after": f.rank_after},
                 "rewards": {"respect": f.respect, "points": f.points,
                             "items": [{"id": i, "name": n, "quantity": q} for i, n, q in f.items]},
                 "members": [{"id": m.id, "name": m.name, "level": m.level, "attacks": m.attacks, "score": m.score}
                             for m in f.members]}
                for f in extras.war_report(ctx.world, war)]
    return {"rankedwarreport": {"id": war.id, "start": war.start, "end": war.end, "winner": war.winner,
                                "forfeit": False, "factions": factions}}


def v2_torn_territory(ctx: Ctx, _ident: str | None = None) -> dict:
    world = ctx.world
    ids = ctx.query.get("ids") or ctx.query.get("id") or ""  # /torn/territory?ids=, /torn?selections=...&id=
    if ids:
        codes = [c.strip().upper() for c in ids.split(",") if c.strip()]
        if any(c not in world.territories for c in codes):
            raise TornError(6)
        found = [world.territories[c] for c in dict.fromkeys(codes)]
    else:
        found = list(world.territories.values())
    rows = [{"id": t.code, "sector": t.sector, "size": t.size, "density": t.density, "slots": t.slots,
             "respect": t.respect, "coordinates": {"x": float(t.x), "y": float(t.y)}, "neighbors": list(t.neighbors)}
            for t in found]
    chunk, meta = _page(ctx, rows, 20, 250)
    return {"territory": chunk, "_metadata": meta}


# ---- routing --------------------------------------------------------------------------------------

def _split(raw: str | None) -> list[str]:
    return [s.strip().lower() for s in (raw or "").split(",") if s.strip()]


def _user(ctx: Ctx, ident: str | None) -> Player:
    if ident in (None, "", "0"):
        pid = ctx.owner
    elif ident.isdigit():
        pid = int(ident)
    else:
        raise TornError(6)
    player = ctx.world.player(pid)
    if player is None:
        raise TornError(6)
    return player


def _faction(ctx: Ctx, ident: str | None) -> Faction:
    if ident in (None, "", "0"):
        fid = ctx.owner_faction
    elif ident.isdigit():
        fid = int(ident)
    else:
        raise TornError(6)
    faction = ctx.world.factions.get(fid) if fid is not None else None
    if faction is None:
        raise TornError(6)
    return faction


def render(ctx: Ctx, version: int, segments: list[str]) -> dict:
    """The body for one API request (segments: the path after the host and any 'v2' prefix)."""
    return _render_v1(ctx, segments) if version == 1 else _render_v2(ctx, segments)


def _render_v1(ctx: Ctx, segments: list[str]) -> dict:
    if not segments or len(segments) > 2:
        raise TornError(3)
    section, ident = segments[0].lower(), segments[1] if len(segments) > 1 else ""
    selections = _split(ctx.query.get("selections"))
    out: dict = {}
    if section == "user":
        player = _user(ctx, ident)
        for sel in selections or ["basic"]:
            if sel not in V1_USER:
                raise TornError(4)
            if sel in OWN_ONLY and player.id != ctx.owner:
                raise TornError(7)
            out.update(V1_USER[sel](ctx, player))
    elif section == "faction":
        faction = None
        for sel in selections or ["basic"]:
            if sel not in V1_FACTION:
                raise TornError(4)
            faction = faction or _faction(ctx, ident)
            out.update(V1_FACTION[sel](ctx, faction))
    elif section == "torn":
        if not selections:
            raise TornError(4)
        out = v1_torn(ctx, ident, selections)
    else:
        raise TornError(3)
    return out


def v2_key_info(ctx: Ctx, _ident: str | None = None) -> dict:
    """KeyInfoResponse: the key's owner, and the selections this simulator serves (as a limited key)."""
    p = _user(ctx, None)
    served: dict[str, list[str]] = {}
    for path in V2_ROUTES:
        section, *rest = path.strip("/").split("/")
        if rest:
            served.setdefault(section, [])
            if rest[-1] not in served[section]:
                served[section].append(rest[-1])
    selections = {section: sorted(served.get(section, [])) for section in
                  ("company", "faction", "market", "property", "torn", "user", "racing", "forum", "key")}
    return {"info": {
        "selections": selections,
        "access": {"level": 3, "type": "Limited Access", "faction": False, "company": False,
                   "log": {"custom_permissions": False, "available": []}},
        "user": {"id": p.id, "faction_id": p.faction_id, "company_id": p.job[2] or None},
    }}


# ---- v2 routing: the spec's paths ------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    """One path of the v2 spec that the simulator answers.

    scope: "entity" - about a user or faction, given by the {id} in the path or, without one, the key's
    owner (or the owner's faction); "own" - the key owner's only (the spec has no {id} form); "global" -
    the same for every key; "war" - a ranked war given by its id. `queries`: the query strings the path
    understands besides paging; tests/test_simulator_spec.py asks each and checks the answer.
    """

    answer: Callable[[Ctx, str | None], dict]
    scope: str = "entity"
    queries: tuple[Mapping[str, str], ...] = ({},)


def _of_user(render: Callable[[Ctx, Player], dict], scope: str = "entity",
             queries: tuple[Mapping[str, str], ...] = ({},)) -> Route:
    return Route(lambda ctx, ident: render(ctx, _user(ctx, ident)), scope, queries)


def _of_faction(render: Callable[[Ctx, Faction], dict]) -> Route:
    return Route(lambda ctx, ident: render(ctx, _faction(ctx, ident)))


def _combined(section: str) -> Route:
    return Route(lambda ctx, _ident: _render_combined(ctx, section), "global")


_PERSONALSTATS_QUERIES = ({"cat": "all"}, {"cat": "popular"}, *({"cat": c} for c in ps.CATEGORIES),
                          {"stat": "networth,attackswon,xantaken,elo"})
_USER = {
    "basic": _of_user(v2_user_basic), "profile": _of_user(v2_user_profile),
    "personalstats": _of_user(v2_user_personalstats, queries=_PERSONALSTATS_QUERIES),
    "icons": _of_user(v2_user_icons), "faction": _of_user(v2_user_faction),
}
_OWN = {
    "battlestats": _of_user(v2_user_battlestats, "own"), "bars": _of_user(v2_user_bars, "own"),
    "cooldowns": _of_user(v2_user_cooldowns, "own"), "stocks": _of_user(v2_user_stocks, "own"),
    "travel": _of_user(v2_user_travel, "own"), "notifications": _of_user(v2_user_notifications, "own"),
    "events": _of_user(v2_user_events, "own", ({}, {"limit": "3"})),
    "messages": _of_user(v2_user_messages, "own", ({}, {"limit": "2"})),
}
_FACTION = {
    "basic": _of_faction(v2_faction_basic), "members": _of_faction(v2_faction_members),
    "wars": _of_faction(v2_faction_wars), "rankedwars": _of_faction(v2_faction_rankedwars),
    "territory": _of_faction(v2_faction_territory), "chain": _of_faction(v2_faction_chain),
}
# Path (as the spec writes it) -> Route. Every path here must be in the spec: tests/test_simulator_spec.py.
V2_ROUTES: dict[str, Route] = {
    **{f"/user/{name}": route for name, route in (_USER | _OWN).items()},
    **{f"/user/{{id}}/{name}": route for name, route in _USER.items()},
    "/user": _combined("user"),
    **{f"/faction/{name}": route for name, route in _FACTION.items()},
    **{f"/faction/{{id}}/{name}": route for name, route in _FACTION.items()},
    "/faction/territoryownership": Route(v2_territoryownership, "global", ({}, {"limit": "7", "offset": "3"})),
    "/faction/rackets": Route(v2_rackets, "global"),
    "/faction/{rankedWarId}/rankedwarreport": Route(v2_rankedwarreport, "war"),
    "/faction": _combined("faction"),
    "/torn/territory": Route(v2_torn_territory, "global", ({}, {"ids": "AAC,CAA"}, {"limit": "5", "offset": "2"})),
    "/torn": _combined("torn"),
    "/key/info": Route(v2_key_info, "own"),
    "/key": _combined("key"),
}
# "/faction/{}/rankedwarreport" -> its Route: how a request path finds its route, whatever the id is called
_ROUTE_OF = {re.sub(r"\{\w+\}", "{}", path): route for path, route in V2_ROUTES.items()}
_DEFAULT_SELECTION = {"user": "basic", "faction": "basic", "key": "info"}
_ONLY_V1 = {"torn": ("rankedwars", "territorywars", "rankedwarreport", "rackets")}


def _render_v2(ctx: Ctx, segments: list[str]) -> dict:
    """/v2/<section>[/<id>][/<selection>], answered only where the spec has that path (else error 4)."""
    if not segments:
        raise TornError(3)
    section, rest = segments[0].lower(), segments[1:]
    if f"/{section}" not in _ROUTE_OF:
        raise TornError(3)
    ident = None
    if rest and rest[0].isdigit():
        ident, rest = rest[0], rest[1:]
    if len(rest) > 1:
        raise TornError(4)
    selection = rest[0].lower() if rest else None
    route = _ROUTE_OF.get(f"/{section}" + ("/{}" if ident is not None else "") + (f"/{selection}" if rest else ""))
    if route is None:
        if selection in _ONLY_V1.get(section, ()):
            raise TornError(22)
        raise TornError(4, f"Wrong fields: /{section}{'/{id}' if ident else ''}/{selection or ''} is not a v2 path")
    return route.answer(ctx, ident)


def _render_combined(ctx: Ctx, section: str) -> dict:
    """/v2/user?selections=a,b[&id=N] (and /faction, /torn, /key): each selection answered as its own path
    would answer it, merged. With an id, a selection that the spec has only without one is the key owner's:
    asked for someone else it is error 7; a global one ignores the id."""
    ident = ctx.query.get("id") or None
    selections = _split(ctx.query.get("selections")) or [_DEFAULT_SELECTION.get(section, "")]
    out: dict = {}
    for selection in selections:
        route = _ROUTE_OF.get(f"/{section}/{{}}/{selection}") if ident else None
        if route is not None:
            out.update(route.answer(ctx, ident))
            continue
        route = _ROUTE_OF.get(f"/{section}/{selection}")
        if route is None:
            raise TornError(22 if selection in _ONLY_V1.get(section, ()) else 4)
        if ident and route.scope == "own" and ident not in (str(ctx.owner), "0"):
            raise TornError(7)
        out.update(route.answer(ctx, None))
    return out

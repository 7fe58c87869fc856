"""player_stats_history: a row when any tracked value of a player changes.

Tracked: strength, defense, speed, dexterity, total_stats, level, life_maximum, networth.
Sources (user:<id>:<view>):
  * battle stats: v1.battlestats (top-level strength/defense/speed/dexterity/total), v2.battlestats
    (`battlestats.<stat>.value`, `battlestats.total`), and the own-key battle stats of personal stats
    (v1 `personalstats.strength` ... `totalstats`; v2 `personalstats.battle_stats.*`) when present;
    total_stats is the sum of the four when a payload gives the four but no total;
  * level: v1/v2 profile, basic, member;
  * life_maximum: v1/v2 profile (`life.maximum`) and bars;
  * networth: personal stats (v1 `personalstats.networth`, v2 `personalstats.networth.total`; a v2 historic
    list counts only for a `networth` item stamped within a day of the poll, older values are history
    the poll did not observe).
A payload gives only some values; the others are carried forward from the row in force at the event's
time (see common.History), or, when there is none, from the player's latest retained events. Events of one
observation fold into one row. No row before Context.horizon.

The player row must exist (foreign key): battle stats and personal stats carry no name, so a missing player
gets a stub 'Player <id>' that the players handler fills from the next profile, basic or member event.
"""
from __future__ import annotations

from typing import Any

from tornstore.eventstore.records import Event

from ..models import (V1BattleStats, V1PersonalStats, V2BattleStats, V2PersonalStats, V2PersonalStatsBody,
                      decode, opt_int)
from .base import ProjectionError, check_int64
from .common import History, stub_player
from .history_fold import HistoryFold
from .players import memo_player_update, player_update
from .workset import WorkSet

FIELDS = ("strength", "defense", "speed", "dexterity", "total_stats", "level", "life_maximum", "networth")
HISTORY = History("player_stats_history", "player_id", "timestamp", FIELDS)
VIEWS = frozenset({"v1.profile", "v2.profile", "v1.basic", "v2.basic", "v1.member", "v2.member",
                   "v1.bars", "v2.bars", "v1.battlestats", "v2.battlestats", "v1.personalstats",
                   "v2.personalstats"})
_STATS = ("strength", "defense", "speed", "dexterity")
_DAY = 86400


def _battle(strength, defense, speed, dexterity, total) -> dict[str, Any]:
    out = {name: opt_int(v, name) for name, v in zip(_STATS, (strength, defense, speed, dexterity), strict=True)}
    out["total_stats"] = opt_int(total, "total")
    known = [v for s in _STATS if (v := out[s]) is not None]
    if out["total_stats"] is None and len(known) == len(_STATS):
        out["total_stats"] = sum(known)
    return out


def stats_values(view: str, payload: Any, observed_at: int, ws: WorkSet | None = None,
                 event: Event | None = None) -> dict[str, Any]:
    """The tracked values a payload of `view` carries (None values left out). With a working set and the
    event, a player payload is decoded once for the players and player_stats folds."""
    out: dict[str, Any] = {}
    if view == "v1.battlestats":
        b = decode(payload, V1BattleStats)
        out = _battle(b.strength, b.defense, b.speed, b.dexterity, b.total)
    elif view == "v2.battlestats":
        body = decode(payload, V2BattleStats).battlestats
        if body is not None:
            value = lambda d: d.value if d is not None else None  # noqa: E731
            out = _battle(value(body.strength), value(body.defense), value(body.speed), value(body.dexterity),
                          body.total)
    elif view == "v1.personalstats":
        ps = decode(payload, V1PersonalStats).personalstats
        if ps is not None:
            out = _battle(ps.strength, ps.defense, ps.speed, ps.dexterity, ps.totalstats)
            out["networth"] = opt_int(ps.networth, "networth")
    elif view == "v2.personalstats":
        ps2 = decode(payload, V2PersonalStats).personalstats
        if isinstance(ps2, V2PersonalStatsBody):
            if ps2.battle_stats is not None:
                b2 = ps2.battle_stats
                out = _battle(b2.strength, b2.defense, b2.speed, b2.dexterity, b2.total)
            if ps2.networth is not None:
                out["networth"] = opt_int(ps2.networth.total, "networth.total")
        elif isinstance(ps2, list):
            for item in ps2:
                stamp = opt_int(item.timestamp)
                if item.name == "networth" and (stamp is None or stamp >= observed_at - _DAY):
                    out["networth"] = opt_int(item.value, "networth")
    else:
        update = memo_player_update(ws, event) if ws is not None and event is not None else None
        values = (update or player_update(view, payload)).values
        out = {k: values.get(k) for k in ("level", "life_maximum")}
    return {k: v for k, v in out.items() if v is not None}


class PlayerStatsHandler(HistoryFold):
    name = "player_stats"
    views = VIEWS
    history_tables = ("player_stats_history",)
    state_tables = ()
    entity_type = "user"
    id_name = "player"
    history = HISTORY

    def values_of(self, view: str, payload: Any, observed_at: int, ws: WorkSet | None = None,
                  event: Event | None = None) -> dict[str, Any]:
        return stats_values(view, payload, observed_at, ws, event)

    def check(self, key: int, view: str, values: dict[str, Any]) -> None:
        check_int64(values, "user", key, view)
        for name, value in values.items():
            low = 1 if name in ("level", "life_maximum") else 0
            if name != "networth" and value < low:
                field = "life.maximum" if name == "life_maximum" else name
                raise ProjectionError(f"user {key} ({view}): {field} {value} is below {low}")

    def stub(self, ws: WorkSet, key: int, observed_at: int) -> None:
        stub_player(ws, key, observed_at)

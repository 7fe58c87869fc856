"""players: current state of each player (upsert).

Sources (user:<id>:<view>):
  * v1.profile: name, level, rank, faction (`faction.faction_id`, 0 -> NULL), status, life, last_action;
  * v2.profile: name, level, rank (+ title, see below), faction_id (null -> NULL), status, life, last_action;
  * v1.basic / v2.basic: name, level, status;
  * v1.member / v2.member (a faction's member list): name, level, status, last_action, and the faction
    whose list it came from (`_faction_id`); the member's faction position has no column and is not kept;
  * v1.bars / v2.bars (own key): life current and maximum.
A player who leaves a faction: when the faction's member list (faction:<id>:v1.faction `member_ids`,
faction:<id>:v2.members) no longer holds them, their faction_id becomes NULL if it still points at that
faction and the list is not older than their row (last_updated).

rank: v1 sends rank and title in one string ("Elite Medalist"); v2 splits them (rank "Legendary", title
"Outcast"), so the v2 value is stored as "<rank> <title>" to keep one form across API versions.
Names are HTML-unescaped. A player's faction gets a stub row in `factions` if it is not known yet (with
the name and tag a v1 profile gives).

Forward only: a row is rewritten only by an event observed at or after its last_updated (a stub made by
player_stats has last_updated 0); an older event only fills what the row does not know yet (a placeholder
name 'Player <id>', a NULL level, rank or life_maximum). created_at is the earliest observation. A row
reset for replay (last_updated 0) is not touched by member lists until an event has rewritten it.

Live columns, refreshed from heartbeats (polls that found the stream unchanged) of v1/v2 profile, basic,
member and bars views: status_description, life_current, last_action_status, last_action_at. Change
detection ignores them (countdown texts, regenerating life, activity), so events alone would leave them
stale; a heartbeat never moves last_updated and never touches a row updated after it.
"""
from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from tornstore.eventstore.records import Event, Heartbeat

from ..models import (MemberIds, V1Bars, V1Basic, V1Faction, V1Member, V1Profile, V2Bars, V2Basic, V2Member,
                      V2Profile, decode, is_set, opt_id, opt_int, opt_text)
from .base import Context, FoldHandler, ProjectionError, check_int64
from .common import placeholder_player_name, stub_faction
from .workset import PLAYER_COLUMNS, WorkSet

PLAYER_VIEWS = frozenset({"v1.profile", "v2.profile", "v1.basic", "v2.basic", "v1.member", "v2.member",
                          "v1.bars", "v2.bars"})
LIVE_COLUMNS = ("status_description", "life_current", "last_action_status", "last_action_at")

_MISSING = object()


class PlayerUpdate:
    """What one payload says about a player: `values` (column -> value, only what it carries) and the
    faction it names, if any (`faction` is _MISSING when the payload says nothing about membership)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.faction: Any = _MISSING
        self.faction_name: str | None = None
        self.faction_tag: str | None = None

    def status(self, status) -> None:
        if status is not None:
            self.values["status_state"] = status.state
            self.values["status_description"] = status.description

    def last_action(self, last_action) -> None:
        if last_action is not None:
            self.values["last_action_status"] = last_action.status
            self.values["last_action_at"] = opt_int(last_action.timestamp)

    def life(self, life) -> None:
        if life is not None:
            if life.current is not None:
                self.values["life_current"] = opt_int(life.current, "life.current")
            if life.maximum is not None:
                self.values["life_maximum"] = opt_int(life.maximum, "life.maximum")

    def basics(self, name, level) -> None:
        if opt_text(name):
            self.values["name"] = opt_text(name)
        if level is not None:
            self.values["level"] = opt_int(level, "level")


def player_update(view: str, payload: Any) -> PlayerUpdate:
    u = PlayerUpdate()
    if view == "v1.profile":
        p = decode(payload, V1Profile)
        u.basics(p.name, p.level)
        if p.rank:
            u.values["rank"] = p.rank
        u.status(p.status)
        u.life(p.life)
        u.last_action(p.last_action)
        if p.faction is not None:
            u.faction = opt_id(p.faction.faction_id)
            if u.faction is not None:
                u.faction_name = opt_text(p.faction.faction_name)
                u.faction_tag = opt_text(p.faction.faction_tag)
    elif view == "v2.profile":
        p2 = decode(payload, V2Profile)
        u.basics(p2.name, p2.level)
        if p2.rank:
            u.values["rank"] = f"{p2.rank} {p2.title}" if p2.title else p2.rank
        u.status(p2.status)
        u.life(p2.life)
        u.last_action(p2.last_action)
        u.faction = opt_id(p2.faction_id)
    elif view in ("v1.basic", "v2.basic"):
        b = decode(payload, V1Basic) if view == "v1.basic" else decode(payload, V2Basic)
        u.basics(b.name, b.level)
        u.status(b.status)
    elif view in ("v1.member", "v2.member"):
        m = decode(payload, V1Member) if view == "v1.member" else decode(payload, V2Member)
        u.basics(m.name, m.level)
        u.status(m.status)
        u.last_action(m.last_action)
        u.faction = opt_id(m.faction_id)
    elif view == "v1.bars":
        u.life(decode(payload, V1Bars).life)
    elif view == "v2.bars":
        bars = decode(payload, V2Bars).bars
        u.life(bars.life if bars is not None else None)
    return u


_LIFE_VIEWS = frozenset({"v1.profile", "v2.profile", "v1.bars", "v2.bars"})
_ACTION_VIEWS = frozenset({"v1.profile", "v2.profile", "v1.member", "v2.member"})


def live_fields(view: str, payload: Any) -> dict[str, Any]:
    """The live columns a payload carries, as player_update would give them."""
    src = payload.get("bars") if view == "v2.bars" and isinstance(payload, dict) else payload
    if not isinstance(src, dict):
        return {}
    values: dict[str, Any] = {}
    if view not in ("v1.bars", "v2.bars"):
        status = src.get("status")
        if isinstance(status, dict) and isinstance(status.get("description"), str):
            values["status_description"] = status["description"]
    if view in _ACTION_VIEWS:
        action = src.get("last_action")
        if isinstance(action, dict):
            if isinstance(action.get("status"), str):
                values["last_action_status"] = action["status"]
            with contextlib.suppress(TypeError, ValueError):
                values["last_action_at"] = opt_int(action.get("timestamp"))
    if view in _LIFE_VIEWS:
        life = src.get("life")
        if isinstance(life, dict) and life.get("current") is not None:
            try:
                current = opt_int(life["current"])
            except (TypeError, ValueError):
                current = None
            if current is not None and current >= 0:
                values["life_current"] = current
    return values


def check_player_values(player_id: int, view: str, values: dict[str, Any]) -> None:
    """Refuse values the schema's CHECKs would refuse, with a message naming the player and field."""
    check_int64(values, "user", player_id, view)
    level = values.get("level")
    if level is not None and level < 1:
        raise ProjectionError(f"user {player_id} ({view}): level {level} is below 1")
    maximum = values.get("life_maximum")
    if maximum is not None and maximum <= 0:
        raise ProjectionError(f"user {player_id} ({view}): life.maximum {maximum} is not positive")
    current = values.get("life_current")
    if current is not None and current < 0:
        raise ProjectionError(f"user {player_id} ({view}): life.current {current} is negative")


_EMPTY_PLAYER = dict.fromkeys(PLAYER_COLUMNS)
_STATUS = ("status_state", "status_description")
_ACTION = ("last_action_status", "last_action_at")
_LIFE = ("life_current", "life_maximum")
# Which views may carry each column (player_update): a late event's value for a column stands unless one of
# these views has a newer observation of the player.
_CARRIED_BY = {
    "v1.profile": ("name", "level", "rank", *_STATUS, *_LIFE, *_ACTION, "faction_id"),
    "v2.profile": ("name", "level", "rank", *_STATUS, *_LIFE, *_ACTION, "faction_id"),
    "v1.basic": ("name", "level", *_STATUS), "v2.basic": ("name", "level", *_STATUS),
    "v1.member": ("name", "level", *_STATUS, *_ACTION, "faction_id"),
    "v2.member": ("name", "level", *_STATUS, *_ACTION, "faction_id"),
    "v1.bars": _LIFE, "v2.bars": _LIFE,
}
CARRIERS = {column: tuple(v for v, cols in _CARRIED_BY.items() if column in cols)
            for column in {c for cols in _CARRIED_BY.values() for c in cols}}


def memo_player_update(ws: WorkSet, event: Event) -> PlayerUpdate:
    """player_update of an event, decoded once for every fold it goes through."""
    found = ws.memo.get("player_update")
    if found is None:
        found = ws.memo["player_update"] = player_update(event.stream.view, event.payload)
    return found


class PlayersHandler(FoldHandler):
    name = "players"
    views = PLAYER_VIEWS | {"v1.faction", "v2.members"}
    live_views = PLAYER_VIEWS
    history_tables = ()
    state_tables = ("players",)

    def fold(self, ws: WorkSet, event: Event, ctx: Context) -> None:
        key = event.stream
        if key.entity_type == "faction":
            self._members_left(ws, event)
            return
        if key.entity_type != "user" or key.view not in PLAYER_VIEWS:
            return
        player_id = opt_id(key.entity_id)
        if player_id is None:
            raise ProjectionError(f"user {key.entity_id!r}: not a player id")
        update = memo_player_update(ws, event)
        values = update.values
        check_player_values(player_id, key.view, values)
        t = event.observed_at
        row = ws.players.get(player_id)
        if row is not None and t < row["last_updated"]:
            self._late(ws, player_id, row, update, event)
            return
        new = dict(row) if row is not None else dict(_EMPTY_PLAYER, name=placeholder_player_name(player_id),
                                                     created_at=t)
        new.update(values)
        if update.faction is not _MISSING:
            new["faction_id"] = stub_faction(ws, update.faction, update.faction_name, t, update.faction_tag)
        new["last_updated"] = t
        new["created_at"] = t if new["created_at"] is None else min(new["created_at"], t)
        if new != row:
            ws.players.put(player_id, new)

    def _late(self, ws: WorkSet, player_id: int, row: dict[str, Any], update: PlayerUpdate, event: Event) -> None:
        """An event older than the row: each column it carries takes its value only if no newer observation
        of the player could have carried that column (as if the events had come in time order); what the
        row does not know yet is filled in anyway."""
        t = event.observed_at
        newest = ws.players.newest_by_view(player_id, event.position)
        late = dict(row, created_at=min(row["created_at"], t))
        carried = dict(update.values)
        if update.faction is not _MISSING:
            carried["faction_id"] = update.faction
        for column, value in carried.items():
            unknown = late[column] is None or (column == "name" and late[column] == placeholder_player_name(player_id))
            if unknown or all(newest.get(view, t) <= t for view in CARRIERS[column]):
                late[column] = value
        if late.get("faction_id") is not None and late["faction_id"] != row["faction_id"]:
            late["faction_id"] = stub_faction(ws, late["faction_id"], update.faction_name, t, update.faction_tag)
        if late != row:
            ws.players.put(player_id, late)

    def _members_left(self, ws: WorkSet, event: Event) -> None:
        view = event.stream.view
        faction_id = opt_id(event.stream.entity_id)
        if faction_id is None:
            return
        if view == "v1.faction":
            ids = decode(event.payload, V1Faction).member_ids
            if not is_set(ids) or ids is None:
                return  # a v1 faction payload without its members says nothing about membership
        elif view == "v2.members":
            ids = decode(event.payload, MemberIds).member_ids
        else:
            return
        t = event.observed_at
        still = {opt_id(i) for i in ids}
        for player_id in ws.players.of_faction(faction_id):
            row = ws.players.rows[player_id]
            if row is not None and 1 <= row["last_updated"] <= t and player_id not in still:
                ws.players.put(player_id, dict(row, faction_id=None, last_updated=t))

    def live_values(self, heartbeat: Heartbeat) -> tuple[int, dict] | None:
        """(player id, live column values) from an unchanged poll, or None when it has nothing.

        Read straight from the payload (no model decode): this runs for every unchanged player of every
        poll, and only four plain fields are wanted."""
        key = heartbeat.stream
        if key.entity_type != "user" or key.view not in PLAYER_VIEWS:
            return None
        player_id = opt_id(key.entity_id)
        if player_id is None:
            return None
        values = live_fields(key.view, heartbeat.payload)
        return (player_id, values) if values else None

    def live(self, conn: sqlite3.Connection, heartbeat: Heartbeat) -> None:
        self.live_batch(conn, [heartbeat])

    def live_batch(self, conn: sqlite3.Connection, heartbeats: list[Heartbeat]) -> None:
        """One executemany per column set; rows whose live values did not change are not rewritten."""
        groups: dict[tuple[str, ...], list[tuple]] = {}
        for heartbeat in heartbeats:
            found = self.live_values(heartbeat)
            if found is None:
                continue
            player_id, values = found
            columns = tuple(values)
            groups.setdefault(columns, []).append(
                (*values.values(), player_id, heartbeat.observed_at, *values.values()))
        for columns, rows in groups.items():
            conn.executemany(
                f"UPDATE players SET {', '.join(f'{c} = ?' for c in columns)} "
                f"WHERE player_id = ? AND last_updated <= ? AND ({' OR '.join(f'{c} IS NOT ?' for c in columns)})",
                rows)

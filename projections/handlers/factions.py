"""factions: current state of each faction (upsert).

Sources:
  * faction:<id>:v1.faction: name, tag, leader (`leader`), co-leader (`co-leader`, 0 -> NULL), respect, age,
    best_chain, member_count = len(member_ids) when the payload came with members;
  * faction:<id>:v2.faction: name, tag, leader_id, co_leader_id, respect, days_old -> age, best_chain,
    members -> member_count;
  * faction:<id>:v2.members: member_count = len(member_ids).
Only the fields a payload carries are written (v1 faction streams also hold other selections). Leader and
co-leader are plain ids, not foreign keys (the player may never be fetched). Names are HTML-unescaped.

Forward only: a row is rewritten by an event observed at or after its last_updated; a stub row (is_stub=1,
made by another handler for a faction named by a player, war or territory) is always filled by the
faction's own data, which clears is_stub.

Live column: `age` (days; it grows every day without any change of state, so change detection ignores it)
is refreshed from heartbeats of v1.faction / v2.faction polls.
"""
from __future__ import annotations

import sqlite3
from typing import Any

from tornstore.eventstore.records import Event, Heartbeat

from ..models import MemberIds, V1Faction, V2Faction, decode, is_set, opt_id, opt_int, opt_text
from .base import Context, FoldHandler, ProjectionError, check_int64
from .common import placeholder_faction_name
from .workset import WorkSet

_COLUMNS = ("name", "tag", "leader_id", "co_leader_id", "respect", "age", "best_chain", "member_count")


def _v1_values(p: V1Faction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if is_set(p.name) and opt_text(p.name):
        out["name"] = opt_text(p.name)
    if is_set(p.tag):
        out["tag"] = opt_text(p.tag)
    if is_set(p.leader):
        out["leader_id"] = opt_id(p.leader)
    if is_set(p.co_leader):
        out["co_leader_id"] = opt_id(p.co_leader)
    for src, col in (("respect", "respect"), ("age", "age"), ("best_chain", "best_chain")):
        value = getattr(p, src)
        if is_set(value):
            out[col] = opt_int(value, col)
    if is_set(p.member_ids) and p.member_ids is not None:
        out["member_count"] = len(p.member_ids)
    return out


def _v2_values(p: V2Faction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if is_set(p.name) and opt_text(p.name):
        out["name"] = opt_text(p.name)
    if is_set(p.tag):
        out["tag"] = opt_text(p.tag)
    for src, col in (("leader_id", "leader_id"), ("co_leader_id", "co_leader_id")):
        value = getattr(p, src)
        if is_set(value):
            out[col] = opt_id(value)
    for src, col in (("respect", "respect"), ("days_old", "age"), ("best_chain", "best_chain"),
                     ("members", "member_count")):
        value = getattr(p, src)
        if is_set(value):
            out[col] = opt_int(value, col)
    return out


def faction_values(view: str, payload: Any) -> dict[str, Any]:
    """The factions columns a payload of `view` carries (shared with faction_history)."""
    if view == "v1.faction":
        return _v1_values(decode(payload, V1Faction))
    if view == "v2.faction":
        return _v2_values(decode(payload, V2Faction))
    if view == "v2.members":
        return {"member_count": len(decode(payload, MemberIds).member_ids)}
    return {}


class FactionsHandler(FoldHandler):
    name = "factions"
    views = frozenset({"v1.faction", "v2.faction", "v2.members"})
    live_views = frozenset({"v1.faction", "v2.faction"})   # age
    history_tables = ()
    state_tables = ("factions",)

    def fold(self, ws: WorkSet, event: Event, ctx: Context) -> None:
        if event.stream.entity_type != "faction":
            return
        faction_id = opt_id(event.stream.entity_id)
        if faction_id is None:
            raise ProjectionError(f"faction {event.stream.entity_id!r}: not a faction id")
        values = memo_faction_values(ws, event)
        check_int64(values, "faction", faction_id, event.stream.view)
        for col in ("respect", "age", "best_chain", "member_count"):
            if values.get(col) is not None and values[col] < 0:
                raise ProjectionError(f"faction {faction_id}: {col} {values[col]} is negative")
        upsert_faction(ws, faction_id, values, event.observed_at)

    def live(self, conn: sqlite3.Connection, heartbeat: Heartbeat) -> None:
        if heartbeat.stream.entity_type != "faction" or heartbeat.stream.view not in ("v1.faction", "v2.faction"):
            return
        faction_id = opt_id(heartbeat.stream.entity_id)
        try:
            values = faction_values(heartbeat.stream.view, heartbeat.payload)
        except (ValueError, TypeError):
            return  # the same payload was already projected (or refused) as an event
        age = values.get("age")
        if faction_id is None or age is None or age < 0:
            return
        conn.execute("UPDATE factions SET age = ? WHERE faction_id = ? AND is_stub = 0 AND last_updated <= ?",
                     (age, faction_id, heartbeat.observed_at))


def memo_faction_values(ws: WorkSet, event: Event) -> dict[str, Any]:
    """faction_values of an event, decoded once for the factions and faction_history folds."""
    found = ws.memo.get("faction_values")
    if found is None:
        found = ws.memo["faction_values"] = faction_values(event.stream.view, event.payload)
    return found


def upsert_faction(ws: WorkSet, faction_id: int, values: dict[str, Any], observed_at: int) -> None:
    row = ws.factions.get(faction_id)
    has_name = values.get("name") is not None
    if row is None:
        new = {c: values.get(c) for c in _COLUMNS}
        if not has_name:
            new["name"] = placeholder_faction_name(faction_id)
        new.update(is_stub=0 if has_name else 1, created_at=observed_at, last_updated=observed_at)
        ws.factions.put(faction_id, new)
        return
    is_stub, last_updated = row["is_stub"], row["last_updated"]
    new = dict(row, created_at=min(row["created_at"], observed_at))
    if is_stub or observed_at >= last_updated:
        new.update(values)
        if has_name:
            new["is_stub"] = 0
        # A stub that stays a stub (no name in this payload) keeps its newest time; otherwise the event's time.
        new["last_updated"] = max(observed_at, last_updated) if is_stub and not has_name else observed_at
    # (else a late event: current state does not move back)
    if new != row:
        ws.factions.put(faction_id, new)

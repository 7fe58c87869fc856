"""faction_history: a row when a faction's respect, member_count or best_chain changes.

Sources: faction:<id>:v1.faction (respect, best_chain, member_count = len(member_ids)), v2.faction
(respect, best_chain, members) and v2.members (member_count = len(member_ids)). Values a payload does not
carry are carried forward from the row in force at the event's time, or, when there is none, from the
faction's latest retained events. Events of one observation fold into one row; no row before
Context.horizon. The faction row exists (the factions handler runs first); a stub is made otherwise.
"""
from __future__ import annotations

from typing import Any

from tornstore.eventstore.records import Event

from ..models import opt_id
from .base import Context, FoldHandler, ProjectionError, check_int64
from .common import History, latest_events, stub_faction
from .factions import faction_values, memo_faction_values
from .workset import WorkSet

FIELDS = ("respect", "member_count", "best_chain")
HISTORY = History("faction_history", "faction_id", "timestamp", FIELDS)
VIEWS = frozenset({"v1.faction", "v2.faction", "v2.members"})


def history_values(view: str, payload: Any) -> dict[str, Any]:
    values = faction_values(view, payload)
    return {k: values[k] for k in FIELDS if values.get(k) is not None}


class FactionHistoryHandler(FoldHandler):
    name = "faction_history"
    views = VIEWS
    history_tables = ("faction_history",)
    state_tables = ()

    def fold(self, ws: WorkSet, event: Event, ctx: Context) -> None:
        key = event.stream
        if key.entity_type != "faction":
            return
        faction_id = opt_id(key.entity_id)
        if faction_id is None:
            raise ProjectionError(f"faction {key.entity_id!r}: not a faction id")
        every = memo_faction_values(ws, event)
        values = {k: every[k] for k in FIELDS if every.get(k) is not None}
        if not values:
            return
        check_int64(f"faction {faction_id} ({key.view})", values)
        for name, value in values.items():
            if value < 0:
                raise ProjectionError(f"faction {faction_id} ({key.view}): {name} {value} is negative")
        stub_faction(ws, faction_id, None, event.observed_at)

        def seed() -> dict[str, Any]:
            merged: dict[str, Any] = {}
            for view, _, payload in latest_events(ws.conn, "faction", key.entity_id, VIEWS, event.position,
                                                  event.observed_at):
                try:
                    merged.update(history_values(view, payload))
                except (ValueError, TypeError):
                    continue
            return merged

        HISTORY.fold(ws, faction_id, values, event, ctx, seed=seed)

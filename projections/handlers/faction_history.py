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

from .base import ProjectionError, check_int64
from .common import History, stub_faction
from .history_fold import HistoryFold
from .factions import faction_values, memo_faction_values
from .workset import WorkSet

FIELDS = ("respect", "member_count", "best_chain")
HISTORY = History("faction_history", "faction_id", "timestamp", FIELDS)
VIEWS = frozenset({"v1.faction", "v2.faction", "v2.members"})


def history_values(view: str, payload: Any) -> dict[str, Any]:
    values = faction_values(view, payload)
    return {k: values[k] for k in FIELDS if values.get(k) is not None}


class FactionHistoryHandler(HistoryFold):
    name = "faction_history"
    views = VIEWS
    history_tables = ("faction_history",)
    state_tables = ()
    entity_type = "faction"
    id_name = "faction"
    history = HISTORY

    def values_of(self, view: str, payload: Any, observed_at: int, ws: WorkSet | None = None,
                  event: Event | None = None) -> dict[str, Any]:
        if ws is not None and event is not None:
            every = memo_faction_values(ws, event)
        else:
            every = faction_values(view, payload)
        return {k: every[k] for k in FIELDS if every.get(k) is not None}

    def check(self, key: int, view: str, values: dict[str, Any]) -> None:
        check_int64(values, "faction", key, view)
        for name, value in values.items():
            if value < 0:
                raise ProjectionError(f"faction {key} ({view}): {name} {value} is negative")

    def stub(self, ws: WorkSet, key: int, observed_at: int) -> None:
        stub_faction(ws, key, None, observed_at)

"""The handler interface, and the helpers every handler shares."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from typing import TYPE_CHECKING

from tornstore.eventstore.records import Event, Heartbeat

if TYPE_CHECKING:
    from .warstate import WarState
    from .workset import WorkSet


class ProjectionError(ValueError):
    """An event this handler cannot project: the message says which entity and which field."""


_INT64 = 1 << 63


def check_int64(values: dict, entity: str, key: object, view: str) -> None:
    """SQLite stores 64-bit integers: a bigger one is refused here, naming the entity, view and field, before
    a fold keeps it in memory (it would fail the whole batch when written)."""
    for name, value in values.items():
        if type(value) is int and (value >= _INT64 or value < -_INT64):
            raise ProjectionError(f"{entity} {key} ({view}): {name} {value} does not fit in 64 bits")


@dataclass
class Context:
    """What a handler may know beyond the event: nothing from the wall clock.

    `horizon`: history rows observed before this time are not written (their month was folded and
    pruned; a replay must not bring back detail the compactor deleted). Current state is still updated.

    `kept`: the compactor kept the state at the horizon (`*_at_horizon` tables, migration 0004). A history row
    in force before the horizon is then read there, not from the history table, whose rows before the
    horizon are gone or on their way out: inline projection and replay read the same rows (common.History).

    `wars`: what the wars and territories projections would otherwise scan for, in memory (warstate.py).
    """
    horizon: int = 0
    kept: bool = False
    # The wars and territories state the runner keeps for the SQL handlers (handlers/warstate.py); None: they
    # ask the tables.
    wars: WarState | None = None


class Handler:
    """A projection: consumes events of some views, owns some tables, keeps a checkpoint.

    `history_tables` are deleted and rebuilt on replay; `state_tables` are upserted over (rows are
    referenced by summaries, which replay never touches, so they are never deleted).
    """
    name: str = ""
    views: frozenset[str] = frozenset()
    live_views: frozenset[str] = frozenset()   # views whose unchanged polls (heartbeats) refresh live columns
    history_tables: tuple[str, ...] = ()
    state_tables: tuple[str, ...] = ()

    def apply(self, conn: sqlite3.Connection, event: Event, ctx: Context) -> None:
        raise NotImplementedError

    def live(self, conn: sqlite3.Connection, heartbeat: Heartbeat) -> None:
        """Refresh live columns from an unchanged poll (default: nothing)."""

    def live_batch(self, conn: sqlite3.Connection, heartbeats: list[Heartbeat]) -> None:
        """All of a batch's heartbeats for this handler's views; override to write them in one go."""
        for heartbeat in heartbeats:
            self.live(conn, heartbeat)

    def restore_from(self, conn: sqlite3.Connection, t: int, ctx: Context) -> None:
        """Bring the tables back to what they were before time `t`, so the events from `t` on can be applied
        again in time order (an observation older than what the projection holds arrived)."""
        raise NotImplementedError(f"{self.name} cannot fold again from a time")


class FoldHandler(Handler):
    """A projection written as a fold: `fold(ws, event, ctx)` reads the rows in force from the working set
    (handlers/workset.py) and puts the new ones there; it runs no SQL. It must check everything that can
    fail before it puts anything, so an event that fails leaves the working set as it was."""

    def fold(self, ws: WorkSet, event: Event, ctx: Context) -> None:
        raise NotImplementedError

    def apply(self, conn: sqlite3.Connection, event: Event, ctx: Context) -> None:
        raise TypeError(f"{self.name} is a fold: the runner gives it a working set, not a connection")

"""Helpers every handler shares: stub rows for foreign keys, change-only history rows, seeds from the log.

Rules they implement, for all handlers:
  * every value comes from an event (its payload and `observed_at`), never the wall clock;
  * current state only moves forward: a row is rewritten only by an event observed at or after its
    `last_updated` (a row with last_updated 0, after a replay reset or a player stub, takes any event);
    `created_at` is the earliest observation;
  * a history row is written only when a tracked value changed compared with the row in force at the
    event's time, never before `Context.horizon`; several events of one observation (same observed_at)
    fold into one row;
  * the row in force is the latest row at or before the event's time: in the history table from the
    horizon on, else (once the compactor kept the state at the horizon, `Context.kept`) the entity's row
    in force at the horizon, in `<table>_at_horizon`;
  * when no history row is in force (first sight), the values to carry forward are seeded from the
    latest retained events of the entity, up to this event's position, so inline projection and replay
    agree.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from tornstore.eventstore.records import Event

from .base import Context
from .workset import PLAYER_COLUMNS, HistorySQL, PastRow, WorkSet

_decode_json = msgspec.json.Decoder().decode


# ------------------------------------------------------------------------------------------ stubs
def placeholder_faction_name(faction_id: int) -> str:
    return f"Faction {faction_id}"


def placeholder_player_name(player_id: int) -> str:
    return f"Player {player_id}"


def ensure_faction(conn: sqlite3.Connection, faction_id: int | None, name: str | None, observed_at: int,
                   tag: str | None = None) -> int | None:
    """Make sure `factions` has a row for `faction_id` (for foreign keys); returns the id (None stays None).

    A missing faction becomes a stub (is_stub=1) named `name`, or 'Faction <id>' when the name is not known.
    A stub takes a newer name (or its first real name) when one is seen; a fetched faction is left alone
    apart from created_at, which is the earliest observation of the faction.
    """
    if faction_id is None:
        return None
    row = conn.execute("SELECT name, is_stub, last_updated, created_at FROM factions WHERE faction_id = ?",
                       (faction_id,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO factions (faction_id, name, tag, is_stub, created_at, last_updated) VALUES (?, ?, ?, 1, ?, ?)",
            (faction_id, name or placeholder_faction_name(faction_id), tag, observed_at, observed_at))
        return faction_id
    current, is_stub, last_updated, created_at = row
    if is_stub:
        # A stub's last_updated is the latest observation that named it; it takes the name seen then.
        newer = observed_at >= last_updated
        rename = name and name != current and (newer or current == placeholder_faction_name(faction_id))
        if rename:
            conn.execute("UPDATE factions SET name = ?, tag = COALESCE(?, tag) WHERE faction_id = ?",
                         (name, tag, faction_id))
        if observed_at > last_updated:
            conn.execute("UPDATE factions SET last_updated = ? WHERE faction_id = ?", (observed_at, faction_id))
    if observed_at < created_at:
        conn.execute("UPDATE factions SET created_at = ? WHERE faction_id = ?", (observed_at, faction_id))
    return faction_id


def stub_faction(ws: WorkSet, faction_id: int | None, name: str | None, observed_at: int,
                 tag: str | None = None) -> int | None:
    """ensure_faction on the working set of the fold projections (the same rules, no SQL)."""
    if faction_id is None:
        return None
    row = ws.factions.get(faction_id)
    if row is None:
        ws.factions.put(faction_id, {
            "name": name or placeholder_faction_name(faction_id), "tag": tag, "leader_id": None,
            "co_leader_id": None, "respect": None, "age": None, "best_chain": None, "member_count": None,
            "is_stub": 1, "created_at": observed_at, "last_updated": observed_at})
        return faction_id
    changed = None
    if row["is_stub"]:
        current, last_updated = row["name"], row["last_updated"]
        newer = observed_at >= last_updated
        if name and name != current and (newer or current == placeholder_faction_name(faction_id)):
            changed = dict(row, name=name, tag=tag if tag is not None else row["tag"])
        if observed_at > last_updated:
            changed = dict(changed or row, last_updated=observed_at)
    if observed_at < row["created_at"]:
        changed = dict(changed or row, created_at=observed_at)
    if changed is not None:
        ws.factions.put(faction_id, changed)
    return faction_id


def stub_player(ws: WorkSet, player_id: int, observed_at: int) -> None:
    """ensure_player on the working set of the fold projections."""
    row = ws.players.get(player_id)
    if row is None:
        ws.players.put(player_id, dict(_EMPTY_PLAYER, name=placeholder_player_name(player_id),
                                       created_at=observed_at, last_updated=0))
    elif observed_at < row["created_at"]:
        ws.players.put(player_id, dict(row, created_at=observed_at))


_EMPTY_PLAYER = dict.fromkeys(PLAYER_COLUMNS)


def ensure_player(conn: sqlite3.Connection, player_id: int, observed_at: int) -> None:
    """Make sure `players` has a row for `player_id`: a stub 'Player <id>' with last_updated 0, so the first
    real profile, basic or member event fills it whatever its time."""
    conn.execute(
        "INSERT INTO players (player_id, name, created_at, last_updated) VALUES (?, ?, ?, 0) "
        "ON CONFLICT (player_id) DO UPDATE SET created_at = MIN(players.created_at, excluded.created_at)",
        (player_id, placeholder_player_name(player_id), observed_at))


# ------------------------------------------------------------------------------------------ history
class History(HistorySQL):
    """An append-only history table: key column, time column, tracked value columns, event_position."""

    def __init__(self, table: str, key: str, time: str, fields: Sequence[str]):
        super().__init__(table, key, time, fields)
        cols = ", ".join(self.fields)
        self._insert_sql = (f"INSERT INTO {table} ({key}, {time}, {cols}, event_position) "
                            f"VALUES (?, ?, {', '.join('?' * len(self.fields))}, ?)")
        self._update_sql = (f"UPDATE {table} SET {', '.join(f + ' = ?' for f in self.fields)}, "
                            f"event_position = ? WHERE id = ?")

    def latest(self, conn: sqlite3.Connection, key: Any, at: int, ctx: Context | None = None) -> PastRow | None:
        """The row in force at time `at` (the latest with time <= at): from the horizon on in this table,
        before it in the state kept at the horizon (when `ctx.kept`)."""
        if ctx is None:
            return self.row_at(conn, key, at)
        return self.row_at(conn, key, at, ctx.horizon, ctx.kept)

    def write(self, conn: sqlite3.Connection, key: Any, values: dict[str, Any], event: Event,
              prev: PastRow | None) -> None:
        """Record `values` (all fields) at the event's time; fold into `prev` if it has the same time."""
        ordered = [values.get(f) for f in self.fields]
        if prev is not None and prev.time == event.observed_at:
            conn.execute(self._update_sql, (*ordered, event.position, prev.row_id))
        else:
            conn.execute(self._insert_sql, (key, event.observed_at, *ordered, event.position))

    def record(self, conn: sqlite3.Connection, key: Any, partial: dict[str, Any], event: Event, ctx: Context,
               seed: Callable[[], dict[str, Any]] | None = None,
               finish: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Merge `partial` into the row in force at the event's time (or the seed) and write a row if any
        tracked value changed. `finish(merged)` may derive fields from the merged values. True if written."""
        if event.observed_at < ctx.horizon:
            return False
        prev = self.latest(conn, key, event.observed_at, ctx)
        base = prev.values if prev is not None else (seed() if seed else {})
        merged = {f: base.get(f) for f in self.fields}
        merged.update({k: v for k, v in partial.items() if k in merged})
        if finish is not None:
            finish(merged)
        if prev is not None and merged == prev.values:
            return False
        self.write(conn, key, merged, event, prev)
        return True

    def fold(self, ws: WorkSet, key: Any, partial: dict[str, Any], event: Event, ctx: Context,
             seed: Callable[[], dict[str, Any]] | None = None) -> bool:
        """`record` on the working set: the row in force comes from memory (or, for a late event, the table),
        the row written waits there until the working set is flushed."""
        t = event.observed_at
        if t < ctx.horizon:
            return False
        latest = ws.history[self.table]
        prev = latest.at(key, t)
        if prev is not None:
            values = prev.values
            if all(values.get(k, v) == v for k, v in partial.items()):
                return False   # nothing tracked changed (most events): no row, nothing to merge
        base = prev.values if prev is not None else (seed() if seed else {})
        merged = {f: base.get(f) for f in self.fields}
        for k, v in partial.items():
            if k in merged:
                merged[k] = v
        if prev is not None and merged == prev.values:
            return False
        latest.write(key, merged, t, event.position, prev)
        return True


# ------------------------------------------------------------------------------------------ log reads
def latest_events(conn: sqlite3.Connection, entity_type: str, entity_id: str, views: Iterable[str],
                  before_position: int, at_or_before: int) -> list[tuple[str, int, Any]]:
    """For each stream of the entity in `views`: its latest event with position < before_position and
    observed_at <= at_or_before, as (view, observed_at, payload), oldest first."""
    wanted = set(views)
    found = []
    streams = conn.execute("SELECT stream_id, view FROM streams WHERE entity_type = ? AND entity_id = ?",
                           (entity_type, entity_id)).fetchall()
    for stream_id, view in streams:
        if view not in wanted:
            continue
        row = conn.execute(
            "SELECT position, observed_at, payload FROM events WHERE stream_id = ? AND position < ? "
            "AND observed_at <= ? ORDER BY observed_at DESC, position DESC LIMIT 1",
            (stream_id, before_position, at_or_before)).fetchone()
        if row is not None:
            found.append((row[1], row[0], view, row[2]))
    found.sort()
    return [(view, observed_at, _decode_json(payload)) for observed_at, _, view, payload in found]


def json_ids(values: Iterable[Any]) -> str:
    """A JSON array for `IN (SELECT value FROM json_each(?))`."""
    return msgspec.json.encode(list(values)).decode()

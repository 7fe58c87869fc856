"""A history projection as a fold of each entity's events in time order, whatever order they arrived in.

player_stats and faction_history follow one pattern: an event of an entity gives some tracked values;
merged into the row in force at its time (or a seed from the entity's latest events), they make a new
history row when something changed. The rows of an entity must be a function of its events in
`observed_at` order. Events arrive out of that order when writers overlap (two collectors, a capture
ingested after live polls, a writer ahead of another), so:

* the working set keeps, per entity, the time of the newest event folded (`Latest.mark`; inline, read
  from the log for the batch's entities);
* an event older than that is *late*: the entity's rows from its time on are deleted and the entity's
  events from that time on (those already in the log up to this event) are folded again in time order.

Replay, which reads the log in position order, and inline projection, whatever the arrival order, so
give the rows one ingest in time order gives. Late events are rare in steady polling, so the re-fold's
reads of the log cost nothing measurable there.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from tornstore.eventstore.records import Event, StreamKey

from ..models import opt_id
from .base import Context, FoldHandler, ProjectionError
from .common import History, latest_events
from .workset import WorkSet

_decode_json = msgspec.json.Decoder().decode


class HistoryFold(FoldHandler):
    """A fold projection of one history table (`history`), keyed by the id of an `entity_type` entity."""
    entity_type: str = ""
    id_name: str = ""     # what the entity's id is, for errors ("player": "user '7x': not a player id")
    history: History

    def values_of(self, view: str, payload: Any, observed_at: int, ws: WorkSet | None = None,
                  event: Event | None = None) -> dict[str, Any]:
        """The tracked values a payload carries (None values left out)."""
        raise NotImplementedError

    def check(self, key: int, view: str, values: dict[str, Any]) -> None:
        """Raise ProjectionError for a value the table's CHECKs would refuse."""

    def stub(self, ws: WorkSet, key: int, observed_at: int) -> None:
        """Make the row the history row refers to (foreign key)."""

    def fold(self, ws: WorkSet, event: Event, ctx: Context) -> None:
        stream = event.stream
        if stream.entity_type != self.entity_type:
            return
        key = opt_id(stream.entity_id)
        if key is None:
            raise ProjectionError(f"{self.entity_type} {stream.entity_id!r}: not a {self.id_name} id")
        values = self.values_of(stream.view, event.payload, event.observed_at, ws, event)
        if not values:
            return
        self.check(key, stream.view, values)
        self.stub(ws, key, event.observed_at)
        t = event.observed_at
        if t < ctx.horizon:
            return
        latest = ws.history[self.history.table]
        mark = latest.mark(key, event.position)
        if mark is not None and t < mark:
            self.refold(ws, key, stream.entity_id, event, ctx)
            return
        latest.marks[key] = t if mark is None else max(mark, t)
        prev = latest.newest.get(key)
        if prev is not None and prev.time <= t:   # (most events: in time order, and nothing tracked changed)
            known = prev.values
            for name, value in values.items():
                if known.get(name, value) != value:
                    break
            else:
                return
        self.history.fold(ws, key, values, event, ctx, seed=self._seed_for(ws, stream.entity_id, event))

    def _seed_for(self, ws: WorkSet, entity_id: str, event: Event) -> Callable[[], dict[str, Any]]:
        return lambda: self.seed(ws, entity_id, event)

    def seed(self, ws: WorkSet, entity_id: str, event: Event) -> dict[str, Any]:
        """The values to start from when no row is in force: the entity's latest events before this one."""
        merged: dict[str, Any] = {}
        for view, observed_at, payload in latest_events(ws.conn, self.entity_type, entity_id, self.views,
                                                        event.position, event.observed_at):
            try:
                merged.update(self.values_of(view, payload, observed_at))
            except (ValueError, TypeError):
                continue  # an event that could not be projected carries nothing forward
        return merged

    def refold(self, ws: WorkSet, key: int, entity_id: str, event: Event, ctx: Context) -> None:
        """Fold the entity's events from this late event's time on again, in time order."""
        latest = ws.history[self.history.table]
        start = max(event.observed_at, ctx.horizon)
        latest.drop_from(key, start)
        newest = start
        for later in self._events_from(ws, entity_id, start, event.position):
            try:
                values = self.values_of(later.stream.view, later.payload, later.observed_at)
                if not values:
                    continue
                self.check(key, later.stream.view, values)
            except ProjectionError:
                continue   # recorded when it was first projected
            except (ValueError, TypeError, msgspec.ValidationError):
                continue
            self.history.fold(ws, key, values, later, ctx, seed=self._seed_for(ws, entity_id, later))
            newest = max(newest, later.observed_at)
        latest.marks[key] = max(newest, latest.marks.get(key) or newest)

    def _events_from(self, ws: WorkSet, entity_id: str, start: int, upto: int) -> Iterator[Event]:
        views = sorted(self.views)
        rows = ws.conn.execute(
            "SELECT e.position, s.view, e.version, e.observed_at, e.payload, e.source_url FROM streams s "
            "JOIN events e ON e.stream_id = s.stream_id WHERE s.entity_type = ? AND s.entity_id = ? "
            f"AND s.view IN ({', '.join('?' * len(views))}) AND e.observed_at >= ? AND e.position <= ? "
            "ORDER BY e.observed_at, e.position",
            (self.entity_type, entity_id, *views, start, upto)).fetchall()
        for position, view, version, observed_at, payload, url in rows:
            yield Event(position, StreamKey(self.entity_type, entity_id, view), version, observed_at,
                        _decode_json(payload), url)

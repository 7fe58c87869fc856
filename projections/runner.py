"""Running the handlers: inline with ingest, catching up from a checkpoint, and replaying from the log.

Each handler keeps a checkpoint (the last event position it has applied) in `projection_checkpoints`,
written in the same transaction as its rows, and it only moves forward: a batch fed twice (a crash
between commit and acknowledgement) is skipped, and a handler that is behind (a new one) first catches
up from the log.

Two kinds of handler. The entity projections (factions, players, player_stats, faction_history) are
folds on a WorkSet (handlers/workset.py): the rows they read are loaded once per batch (once per replay),
an event goes through each of them in turn, and what changed is written back with one executemany per
table. Wars and territories run SQL per event on the tables, after the folds' rows are written, with the
wars they would otherwise scan for held in memory (handlers/warstate.py).

An event a handler cannot project (a CHECK fails, the model refuses the shape) is recorded in
`projection_errors` with the reason and the handler moves on: a fold checks before it changes anything;
an SQL handler's event is rolled back to a savepoint taken before it. A later replay retries it.

Arrival order: the tables are those of the events in time order. A fold that meets an event older than
the newest it folded for the entity folds the entity again from that time (handlers/history_fold.py);
wars and territories, when a batch holds an observation older than the newest they folded (kept beside
their checkpoints), restore their tables to before its time and apply every event from there in time
order (`_apply_handlers`).

Replay after pruning. The compactor keeps the projections' state at the prune horizon (migration 0004:
`projection_snapshots` and the `*_at_horizon` tables, written by compactor/snapshot.py): every current-state
row and each entity's history rows in force at the horizon, as the projection of a prefix of the log
(positions 1..prefix, all observed before the horizon). Handlers read a row in force before the horizon
there (Context.kept), inline and in replay alike. Replay starts from that state's current-state rows and
applies the events after the prefix in position order, each with the horizon inline projection gave it
(the one in force when it was appended), so it makes the rows inline projection made: replay = snapshot
+ retained events. With no snapshot (nothing pruned yet) the state is empty and the prefix 0.

Replay is atomic for readers: it rebuilds into a `Shadow` (TEMP tables of the same names, which only this
connection sees, so the handlers run unchanged) while the live tables stay as they are, then catches up
with what writers appended meanwhile and swaps the result in, all in one write transaction. Readers see
the old tables or the new ones, never a half-built state; a killed replay leaves the live tables as they
were. The live columns (refreshed by heartbeats, which replay cannot see) keep their live values.
"""
from __future__ import annotations

import bisect
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import msgspec

from tornstore.eventstore.db import is_postgres, sequence_value, set_sequence, table_names
from tornstore.eventstore.postgres import partitions
from tornstore.eventstore.records import Event, Heartbeat, StreamKey

from .handlers.base import Context, FoldHandler, Handler, ProjectionError
from .handlers.workset import WorkSet

_decode = msgspec.json.Decoder().decode

# Failures that belong to one event. Anything else (disk I/O, a locked database) aborts the batch.
EVENT_FAILURES = (ProjectionError, sqlite3.IntegrityError, msgspec.ValidationError, ValueError, TypeError,
                  KeyError, AttributeError, OverflowError, IndexError)

# Current-state tables (key column), in the order their rows may refer to each other.
STATE_TABLES = {"factions": "faction_id", "players": "player_id", "territories": "territory_id"}
# History tables: (time column, the columns of the rows a handler looks up as "the row in force": the
# snapshot keeps, per value of these, the latest row before the horizon).
HISTORY_TABLES = {
    "player_stats_history": ("timestamp", ("player_id",)),
    "faction_history": ("timestamp", ("faction_id",)),
    "war_status_history": ("recorded_at", ("war_id", "war_type", "territory_id", "started_at")),
    "territory_ownership_history": ("recorded_at", ("territory_id",)),
    "stat_history": ("recorded_at", ("entity_type", "entity_id", "stat")),
}
PROJECTED_TABLES = (*STATE_TABLES, *HISTORY_TABLES)
# Columns refreshed on every poll, from unchanged polls too (heartbeats): replay cannot see those polls, so
# a rebuilt row keeps the live table's values, and comparisons leave them out.
LIVE_COLUMNS = {
    "players": ("status_description", "life_current", "last_action_status", "last_action_at"),
    "factions": ("age",),
}


_HANDLERS: list[Handler] | None = None


def handlers() -> list[Handler]:
    global _HANDLERS
    if _HANDLERS is None:
        from .handlers.registry import HANDLERS
        _HANDLERS = HANDLERS
    return _HANDLERS


def runnable(conn: sqlite3.Connection) -> list[Handler]:
    """The handlers whose tables this database has. Databases are migrated when opened, so that is all of
    them, except where a test stands in for an older release: there a handler added with a later migration
    does not run, and keeps no checkpoint, as the code of then had none."""
    present = table_names(conn)
    return [h for h in handlers() if all(t in present for t in (*h.history_tables, *h.state_tables))]


def handler_named(name: str) -> Handler:
    for handler in handlers():
        if handler.name == name:
            return handler
    known = ", ".join(h.name for h in handlers())
    raise KeyError(f"no projection named {name!r} (known: {known})")


def load_checkpoints(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))


def _save_checkpoint(conn: sqlite3.Connection, name: str, position: int) -> None:
    conn.execute(
        "INSERT INTO projection_checkpoints (projection, position) VALUES (?, ?) "
        "ON CONFLICT (projection) DO UPDATE SET position = MAX(projection_checkpoints.position, excluded.position)",
        (name, position),
    )


# ------------------------------------------------------------------------------------------ horizons
def prune_horizon(conn: sqlite3.Connection) -> int:
    """store_meta's prune_horizon: months before it are folded and their detail deleted."""
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'prune_horizon'").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@dataclass(frozen=True)
class SnapshotMeta:
    """The newest snapshot of the projections' state (horizon 0, prefix 0: none, the empty state), and
    every horizon move: (sealed_position, horizon), oldest first."""
    horizon: int = 0
    prefix: int = 0
    made_at: int | None = None
    moves: tuple[tuple[int, int], ...] = ()

    def horizon_at(self, position: int) -> int:
        """The horizon inline projection gave the event at `position`: the newest one sealed before it."""
        found = bisect.bisect_left(self.moves, (position, -1))
        return max((h for _, h in self.moves[:found]), default=0)

    @property
    def legacy(self) -> bool:
        """Pruned with no state kept at the horizon (before migration 0004)."""
        return self.made_at is None and any(h for _, h in self.moves)


def snapshot_meta(conn: sqlite3.Connection) -> SnapshotMeta:
    """The newest snapshot and the horizon moves. A prune horizon later than every snapshot (set by a
    compactor older than 0004, or by hand) was in force for every event, as far as anyone can tell."""
    try:
        rows = conn.execute("SELECT horizon, prefix_position, sealed_position, made_at FROM projection_snapshots "
                            "ORDER BY horizon").fetchall()
    except sqlite3.OperationalError:   # a schema before 0004 (a test of an old database): nothing kept
        rows = []
    moves = sorted((sealed, h) for h, _, sealed, _ in rows)
    horizon, prefix, made_at = (rows[-1][0], rows[-1][1], rows[-1][3]) if rows else (0, 0, None)
    pruned = prune_horizon(conn)
    if pruned > horizon:
        moves.insert(0, (0, pruned))
    return SnapshotMeta(horizon, prefix, made_at, tuple(moves))


def projection_horizon(conn: sqlite3.Connection) -> int:
    """The horizon inline projection uses now: no history row is written before it. The newest snapshot's
    horizon (taken just before its months are pruned) or the prune horizon, whichever is later."""
    return projection_context(conn).horizon


def projection_context(conn: sqlite3.Connection) -> Context:
    """What inline projection gives the handlers now: the horizon, and whether the state at it is kept."""
    meta = snapshot_meta(conn)
    return Context(horizon=max(prune_horizon(conn), meta.horizon), kept=meta.made_at is not None)


# ------------------------------------------------------------------------------------------ applying
# A projection error recorded again for the same event replaces the one before.
_ERROR_UPSERT = ("ON CONFLICT (projection, position) DO UPDATE SET stream = excluded.stream, "
                 "reason = excluded.reason, observed_at = excluded.observed_at")


def _record_error(conn: sqlite3.Connection, handler: Handler, event: Event, exc: BaseException) -> None:
    conn.execute(
        "INSERT INTO projection_errors (projection, position, stream, reason, observed_at) "
        f"VALUES (?, ?, ?, ?, ?) {_ERROR_UPSERT}",
        (handler.name, event.position, str(event.stream), f"{type(exc).__name__}: {exc}"[:2000], event.observed_at),
    )


def _apply(conn: sqlite3.Connection, handler: Handler, event: Event, ctx: Context) -> bool:
    """Apply one event under a savepoint; on failure record it and go on. True when it projected."""
    conn.execute("SAVEPOINT event")
    try:
        handler.apply(conn, event, ctx)
    except EVENT_FAILURES as exc:
        conn.execute("ROLLBACK TO event")
        conn.execute("RELEASE event")
        if ctx.wars is not None:
            ctx.wars.invalidate()   # it may have seen writes now undone
        _record_error(conn, handler, event, exc)
        return False
    conn.execute("RELEASE event")
    return True


def _apply_many(conn: sqlite3.Connection, handler: Handler, events: list[Event], ctx: Context) -> None:
    """Apply events under one savepoint; if any fails, undo them all and apply each under its own, so the
    failing ones are recorded and the rest land (the same result as `_apply` per event, with two
    statements per batch instead of per event: handlers keep no state outside the database)."""
    if not events:
        return
    conn.execute("SAVEPOINT events")
    try:
        for event in events:
            handler.apply(conn, event, ctx)
    except EVENT_FAILURES:
        conn.execute("ROLLBACK TO events")
        conn.execute("RELEASE events")
        if ctx.wars is not None:
            ctx.wars.invalidate()
        for event in events:
            _apply(conn, handler, event, ctx)
        return
    conn.execute("RELEASE events")


def _apply_handlers(conn: sqlite3.Connection, ws: WorkSet, chosen: Iterable[Handler], events: list[Event],
                    ctx: Context, done: dict[str, int]) -> None:
    """Apply `events` (those after each handler's `done` position, of its views) with the `chosen` handlers.

    The folds go first, event by event through each of them (an event is decoded once for all), on the
    working set; a fold that fails leaves the working set as it was and its event is recorded as an error.
    The SQL handlers (wars, territories) then run on the tables, after the working set is written back,
    each over the whole batch."""
    folds: list[FoldHandler] = []
    tables: list[Handler] = []
    for handler in chosen:
        if isinstance(handler, FoldHandler):
            folds.append(handler)
        else:
            tables.append(handler)
    if folds:
        ws.set_horizon(ctx.horizon)
        # Per view, the folds that take it (with the position each has done), looked up once per view.
        by_view: dict[str, list[tuple[FoldHandler, int]]] = {}
        memo = ws.memo
        for event in events:
            position, view = event.position, event.stream.view
            takers = by_view.get(view)
            if takers is None:
                takers = by_view[view] = [(h, done.get(h.name, 0)) for h in folds if view in h.views]
            memo.clear()   # what the folds decoded of the event before
            for handler, after in takers:
                if position > after:
                    try:
                        handler.fold(ws, event, ctx)
                    except EVENT_FAILURES as exc:
                        _record_error(conn, handler, event, exc)
        memo.clear()
    mine = {h: [e for e in events if e.position > done.get(h.name, 0) and e.stream.view in h.views] for h in tables}
    if not any(mine.values()):
        return
    ws.flush()
    late_from = _late_from(conn, ws, mine, ctx)
    ctx = replace(ctx, wars=ws.wars)
    if late_from is None:
        for handler, chosen_events in mine.items():
            _apply_many(conn, handler, chosen_events, ctx)
    else:
        # An observation older than what these projections have folded: fold again from its time (or the
        # batch's oldest, none of which is applied yet), in time order, every event of theirs in the log up to
        # this batch's last.
        late_from = min(late_from, *(e.observed_at for chosen_events in mine.values() for e in chosen_events))
        upto = max(e.position for chosen_events in mine.values() for e in chosen_events)
        for handler in tables:
            handler.restore_from(conn, late_from, ctx)
        ws.wars.invalidate()
        for handler in tables:
            for chunk in _events_in_time_order(conn, handler.views, late_from, upto):
                _apply_many(conn, handler, chunk, ctx)
    ws.refresh_factions()   # wars and territories make stubs of the factions they name


def _late_from(conn: sqlite3.Connection, ws: WorkSet, mine: dict[Handler, list[Event]], ctx: Context) -> int | None:
    """The time of the oldest event of the batch observed before what its projection had folded already (from
    the horizon on; None when every event is in time order), and the projections' newest times, updated."""
    late = None
    kept = _marks_kept(conn)
    for handler, chosen in mine.items():
        if not chosen:
            continue
        if handler.name in ws.sql_marks:
            newest = ws.sql_marks[handler.name]
        else:
            newest = None if ws.players.complete else _newest_observed(conn, handler, chosen[0].position, kept)
        for event in chosen:
            t = event.observed_at
            if newest is not None and t < newest and t >= ctx.horizon:
                late = t if late is None else min(late, t)
            newest = t if newest is None else max(newest, t)
        ws.sql_marks[handler.name] = newest
        if kept:
            conn.execute("INSERT INTO projection_checkpoints (projection, position, newest_observed_at) "
                         "VALUES (?, 0, ?) ON CONFLICT (projection) DO UPDATE SET "
                         "newest_observed_at = excluded.newest_observed_at", (handler.name, newest))
    return late


def _marks_kept(conn: sqlite3.Connection) -> bool:
    """Whether the schema keeps each projection's newest observation (migration 0006)."""
    return any(r[1] == "newest_observed_at" for r in conn.execute("PRAGMA table_info(projection_checkpoints)"))


def _newest_observed(conn: sqlite3.Connection, handler: Handler, before: int, kept: bool) -> int | None:
    """A projection's newest observation folded: kept beside its checkpoint; read from the log the first
    time (a database made before migration 0006, or a new projection)."""
    row = conn.execute("SELECT newest_observed_at FROM projection_checkpoints WHERE projection = ?",
                       (handler.name,)).fetchone() if kept else None
    if row is not None and row[0] is not None:
        return row[0]
    views = sorted(handler.views)
    return conn.execute(
        "SELECT MAX((SELECT e.observed_at FROM events e WHERE e.stream_id = s.stream_id AND e.position < ? "
        f"ORDER BY e.observed_at DESC LIMIT 1)) FROM streams s WHERE s.view IN ({', '.join('?' * len(views))})",
        (before, *views)).fetchone()[0]


def _events_in_time_order(conn: sqlite3.Connection, views: Iterable[str], since: int, upto: int,
                          batch: int = 5000) -> Iterator[list[Event]]:
    """Events of `views` observed at or after `since`, up to position `upto`, in time order (position breaks
    ties), in lists of at most `batch`."""
    listed = sorted(views)
    cursor = conn.execute(
        "SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.payload, e.source_url "
        "FROM events e JOIN streams s USING (stream_id) WHERE e.observed_at >= ? AND e.position <= ? "
        f"AND s.view IN ({', '.join('?' * len(listed))}) ORDER BY e.observed_at, e.position",
        (since, upto, *listed))
    while rows := cursor.fetchmany(batch):
        yield [Event(r[0], StreamKey(r[1], r[2], r[3]), r[4], r[5], _decode(r[6]), r[7]) for r in rows]


def fold_only_views() -> frozenset[str]:
    """Views only folds read: replay hands their payloads over as JSON text (bytes), which the folds decode
    straight into their models (models.decode)."""
    folds: set[str] = set()
    tables: set[str] = set()
    for handler in handlers():
        (folds if isinstance(handler, FoldHandler) else tables).update(handler.views)
    return frozenset(folds - tables)


def read_events(conn: sqlite3.Connection, after: int, upto: int | None = None,
                views: Iterable[str] | None = None, batch: int = 5000,
                raw: frozenset[str] = frozenset()) -> Iterator[list[Event]]:
    """Events after `after` (up to `upto`), in position order, in lists of at most `batch`. Payloads are
    decoded, except those of the `raw` views: they stay JSON text, as bytes."""
    view_list = sorted(views) if views is not None else None
    while True:
        sql = ("SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.observed_at, "
               "CAST(e.payload AS BLOB), e.source_url FROM events e JOIN streams s USING (stream_id) "
               "WHERE e.position > ?")
        args: list = [after]
        if upto is not None:
            sql += " AND e.position <= ?"
            args.append(upto)
        if view_list is not None:
            sql += f" AND s.view IN ({','.join('?' * len(view_list))})"
            args += view_list
        sql += " ORDER BY e.position LIMIT ?"
        args.append(batch)
        rows = conn.execute(sql, args).fetchall()
        if not rows:
            return
        yield [Event(r[0], StreamKey(r[1], r[2], r[3]), r[4], r[5], r[6] if r[3] in raw else _decode(r[6]), r[7])
               for r in rows]
        after = rows[-1][0]


def _catch_up(conn: sqlite3.Connection, handler: Handler, after: int, upto: int, ctx: Context) -> None:
    ws = WorkSet(conn, ctx.horizon, ctx.kept)
    for chunk in read_events(conn, after, upto, handler.views):
        _apply_handlers(conn, ws, [handler], chunk, ctx, {})
    ws.flush()


def project_inline(conn: sqlite3.Connection, events: list[Event], heartbeats: list[Heartbeat]) -> None:
    """The Projector given to ingest: runs inside the ingest transaction, so reads see their own writes."""
    ctx = projection_context(conn)
    checkpoints = load_checkpoints(conn)
    if events:
        first, last = events[0].position, events[-1].position
        due = [h for h in runnable(conn) if checkpoints.get(h.name, 0) < last]   # (a batch fed twice is skipped)
        for handler in due:
            done = checkpoints.get(handler.name, 0)
            if done < first - 1:
                _catch_up(conn, handler, done, first - 1, ctx)
                checkpoints[handler.name] = first - 1
        ws = WorkSet(conn, ctx.horizon, ctx.kept)
        ws.prefetch(events, first)
        _apply_handlers(conn, ws, due, events, ctx, checkpoints)
        ws.flush()
        for handler in due:
            _save_checkpoint(conn, handler.name, last)
    if heartbeats:
        # Live columns are current state: only each stream's newest heartbeat in the batch can matter.
        newest: dict = {}
        for heartbeat in heartbeats:
            seen = newest.get(heartbeat.stream)
            if seen is None or heartbeat.observed_at >= seen.observed_at:
                newest[heartbeat.stream] = heartbeat
        by_view: dict[str, list[Heartbeat]] = {}
        for heartbeat in newest.values():
            by_view.setdefault(heartbeat.stream.view, []).append(heartbeat)
        for handler in handlers():
            mine = [hb for view, hbs in by_view.items() if view in handler.views for hb in hbs]
            if mine:
                conn.execute("SAVEPOINT live")
                try:
                    handler.live_batch(conn, mine)
                    conn.execute("RELEASE live")
                except EVENT_FAILURES:
                    # live columns are a courtesy: a bad poll never blocks the batch
                    conn.execute("ROLLBACK TO live")
                    conn.execute("RELEASE live")


def _live_views() -> frozenset[str]:
    return frozenset().union(*(h.live_views for h in handlers()))


# Ingest builds heartbeats only for the views whose unchanged polls refresh a live column (ingest.py).
project_inline.live_views = _live_views()  # type: ignore[attr-defined]


def catch_up(conn: sqlite3.Connection, batch: int = 5000,
             progress: Callable[[int], None] | None = None) -> int:
    """Bring every handler up to the end of the log, one transaction per batch. Returns events applied."""
    total = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            checkpoints = load_checkpoints(conn)
            chosen = runnable(conn)
            names = [h.name for h in chosen]
            low = min((checkpoints.get(n, 0) for n in names), default=0)
            chunk = next(read_events(conn, low, batch=batch), [])
            if not chunk:
                conn.execute("COMMIT")
                return total
            ctx = projection_context(conn)
            ws = WorkSet(conn, ctx.horizon, ctx.kept)
            _apply_handlers(conn, ws, chosen, chunk, ctx, checkpoints)
            ws.flush()
            for handler in chosen:
                _save_checkpoint(conn, handler.name, max(checkpoints.get(handler.name, 0), chunk[-1].position))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        total += len(chunk)
        if progress:
            progress(len(chunk))


# ------------------------------------------------------------------------------------------ the shadow
# Tables rebuilt in a shadow: the projected ones and the projections' bookkeeping.
SHADOWED = (*PROJECTED_TABLES, "projection_checkpoints", "projection_errors")
_CREATE_TABLE = re.compile(r"^CREATE TABLE ", re.IGNORECASE)
_CREATE_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ", re.IGNORECASE)


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({table})")]


class Shadow:
    """The projections rebuilt beside the live tables.

    TEMP tables named like the projected tables (and checkpoints, errors) shadow main's on this connection
    only: SQLite looks names up in `temp` first, so the handlers run unchanged against the shadow, while
    other connections, and `main.<table>` here, still see the live tables. The events are read from main.
    Use as a context manager: the shadow is dropped on the way out, so the connection projects into its
    live tables again.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.exists = False
        self.ws: WorkSet | None = None
        # The history tables this database has (one made before migration 0007 has no stat_history).
        present = table_names(conn)
        self.history = {t: v for t, v in HISTORY_TABLES.items() if t in present}
        self.tables = tuple(t for t in SHADOWED if t in present)

    def __enter__(self) -> Shadow:
        self.create()
        return self

    def __exit__(self, *exc) -> None:
        self.drop()

    def create(self) -> None:
        conn = self.conn
        if conn.in_transaction:
            raise RuntimeError("a shadow is made outside any transaction")
        self.drop()
        self.exists = True
        for table in reversed(SHADOWED):   # whatever a shadow killed on this connection left behind
            conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
        if is_postgres(conn):
            # (LIKE ... INCLUDING ALL: columns, defaults, identity with a sequence of its own, checks, indexes;
            # a plain table even where main's is partitioned by month, whose id the shadow numbers itself)
            for table in self.tables:
                conn.execute(f"CREATE TEMP TABLE {table} (LIKE main.{table} INCLUDING ALL)")
                if table in self.history and partitions.is_partitioned(conn, table):
                    conn.execute(f"ALTER TABLE temp.{table} ALTER COLUMN id DROP DEFAULT")
                    conn.execute(f"ALTER TABLE temp.{table} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
            return
        for table in self.tables:
            sql = conn.execute("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?",
                               (table,)).fetchone()[0]
            conn.execute(_CREATE_TABLE.sub("CREATE TEMP TABLE ", sql, count=1))
            for (index_sql,) in conn.execute(
                    "SELECT sql FROM main.sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                    (table,)).fetchall():
                conn.execute(_CREATE_INDEX.sub(lambda m: f"CREATE {m[1] or ''}INDEX temp.{m[2]} ", index_sql,
                                               count=1))

    def drop(self) -> None:
        if not self.exists:
            return
        conn = self.conn
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        for table in reversed(SHADOWED):
            conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
        self.exists = False
        self.ws = None

    def load(self, meta: SnapshotMeta) -> None:
        """Start from the snapshot: its current-state rows, and each history table's id sequence at its
        prefix. Its history rows stay where they are: handlers read the rows in force at the horizon in
        `<table>_at_horizon` (Context.kept), inline projection and replay alike."""
        if meta.made_at is None:
            return   # no snapshot (or a database pruned before 0004): the empty state
        conn = self.conn
        for table in STATE_TABLES:
            cols = ", ".join(_columns(conn, "main", table))
            conn.execute(f"INSERT INTO temp.{table} ({cols}) SELECT {cols} FROM main.{table}_at_horizon ORDER BY 1")
        for name, seq in conn.execute("SELECT table_name, seq FROM main.sequences_at_horizon").fetchall():
            set_sequence(conn, name, seq, "temp")

    def apply(self, meta: SnapshotMeta, after: int, upto: int, batch: int = 5000,
              progress: Callable[[int], None] | None = None) -> int:
        """Apply the events after `after` up to `upto` as inline projection did: in position order, every
        handler, each event with the horizon in force when it was appended. Returns events applied."""
        conn = self.conn
        applied = 0
        kept = meta.made_at is not None
        if self.ws is None:   # every row in memory, kept from the rebuild to the catch-up under the lock
            self.ws = WorkSet(conn, meta.horizon_at(after + 1), kept, complete=True)
        ws = self.ws
        chosen = runnable(conn)
        for chunk in read_events(conn, after, upto, batch=batch, raw=fold_only_views()):
            start = 0
            if meta.horizon_at(chunk[0].position) == meta.horizon_at(chunk[-1].position):
                start = len(chunk)   # (one horizon for the whole read: no look-up per event)
                horizon = meta.horizon_at(chunk[0].position)
                _apply_handlers(conn, ws, chosen, chunk, Context(horizon=horizon, kept=kept), {})
            while start < len(chunk):
                horizon = meta.horizon_at(chunk[start].position)
                end = start + 1
                while end < len(chunk) and meta.horizon_at(chunk[end].position) == horizon:
                    end += 1
                _apply_handlers(conn, ws, chosen, chunk[start:end], Context(horizon=horizon, kept=kept), {})
                start = end
            ws.flush()   # (a bounded memory: the history rows go out after each read of the log)
            applied += len(chunk)
            if progress:
                progress(len(chunk))
        ws.flush()
        for handler in chosen:
            _save_checkpoint(conn, handler.name, upto)
        return applied

    def trim(self, horizon: int) -> None:
        """Delete the shadow's history rows observed before `horizon` (the snapshot's in-force rows, and rows
        of months being pruned): live history holds none there."""
        for table, (time, _) in self.history.items():
            self.conn.execute(f"DELETE FROM temp.{table} WHERE {time} < ?", (horizon,))

    def save(self, horizon: int, prefix: int, now: int) -> None:
        """Inside the caller's write transaction: make the shadow (the projection of events 1..prefix) the
        snapshot at `horizon`, replacing the one before."""
        conn = self.conn
        for table, (time, keys) in self.history.items():
            # Per entity, the latest row before the horizon: one written since the last snapshot, else its row.
            cols = ", ".join(_columns(conn, "main", table))
            conn.execute(f"DROP TABLE IF EXISTS temp._kept_{table}")
            conn.execute(
                f"CREATE TEMP TABLE _kept_{table} AS SELECT {cols} FROM ("
                f"SELECT *, ROW_NUMBER() OVER (PARTITION BY {', '.join(keys)} ORDER BY {time} DESC, id DESC) AS rn "
                f"FROM (SELECT {cols} FROM temp.{table} WHERE {time} < ? UNION ALL "
                f"SELECT {cols} FROM main.{table}_at_horizon)) WHERE rn = 1", (horizon,))
        for table in (*STATE_TABLES, *self.history):
            conn.execute(f"DELETE FROM main.{table}_at_horizon")
        for table in STATE_TABLES:
            cols = ", ".join(_columns(conn, "main", table))
            conn.execute(f"INSERT INTO main.{table}_at_horizon ({cols}) SELECT {cols} FROM temp.{table} ORDER BY 1")
        for table in self.history:
            cols = ", ".join(_columns(conn, "main", table))
            conn.execute(f"INSERT INTO main.{table}_at_horizon ({cols}) SELECT {cols} FROM temp._kept_{table} "
                         "ORDER BY id")
            conn.execute(f"DROP TABLE temp._kept_{table}")
        conn.execute("DELETE FROM main.sequences_at_horizon")
        conn.executemany("INSERT INTO main.sequences_at_horizon (table_name, seq) VALUES (?, ?)",
                         [(t, seq) for t in sorted(self.history) if (seq := sequence_value(conn, t, "temp")) > 0])
        conn.execute("INSERT INTO main.projection_snapshots (horizon, prefix_position, sealed_position, made_at) "
                     "VALUES (?, ?, (SELECT COALESCE(MAX(position), 0) FROM main.events), ?)", (horizon, prefix, now))

    def swap(self, names: list[str], end: int, prefix: int, since: int) -> None:
        """Inside the caller's write transaction: make the live tables of the projections `names` what the
        shadow holds. Rows that did not change are not written; live columns keep their live values; a
        current-state row the rebuild does not know (possible only in a database pruned before 0004) is
        left as it is, and of another projection's current-state table only the rows it lacks are added
        (stubs the rebuilt rows refer to); history rows observed before `since` (detail of months being
        pruned, which replay cannot rebuild) are left to the compactor. Errors of events inside the
        snapshot's prefix stay as recorded."""
        conn = self.conn
        chosen = [handler_named(n) for n in names]
        state = [t for t in STATE_TABLES if any(t in h.state_tables for h in chosen)]
        history = [t for t in self.history if any(t in h.history_tables for h in chosen)]
        for table, key in STATE_TABLES.items():
            cols = _columns(conn, "main", table)
            if table not in state:
                # Another projection's table: only the rows the rebuilt ones refer to and it lacks (stubs).
                listed = ", ".join(cols)
                conn.execute(f"INSERT INTO main.{table} ({listed}) SELECT {listed} FROM temp.{table} "
                             f"WHERE {key} NOT IN (SELECT {key} FROM main.{table}) ORDER BY {key}")
                continue
            rebuilt = [c for c in cols if c != key and c not in LIVE_COLUMNS.get(table, ())]
            # created_at is the earliest observation: one only pruned events made (before 0004) stays known.
            value = {c: f"MIN(cur.{c}, excluded.{c})" if c == "created_at" else f"excluded.{c}" for c in rebuilt}
            conn.execute(
                f"INSERT INTO main.{table} AS cur ({', '.join(cols)}) SELECT {', '.join(cols)} FROM temp.{table} "
                f"WHERE true ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET "
                + ", ".join(f"{c} = {value[c]}" for c in rebuilt)
                + " WHERE " + " OR ".join(f"cur.{c} IS NOT {value[c]}" for c in rebuilt))
        for table in history:
            listed, time = ", ".join(_columns(conn, "main", table)), HISTORY_TABLES[table][0]
            conn.execute(f"DELETE FROM main.{table} WHERE id IN (SELECT id FROM (SELECT {listed} FROM main.{table} "
                         f"WHERE {time} >= ? EXCEPT SELECT {listed} FROM temp.{table}))", (since,))
            missing = f"SELECT {listed} FROM temp.{table} EXCEPT SELECT {listed} FROM main.{table}"
            if conn.execute(f"SELECT EXISTS ({missing})").fetchone()[0]:
                # (only then: an INSERT of no rows still starts the table's AUTOINCREMENT sequence)
                # A live row with one of these ids but other values (observed before `since`) is replaced. (By
                # id, not ON CONFLICT (id): on PostgreSQL the key of a history table is (id, time).)
                conn.execute(f"DELETE FROM main.{table} WHERE id IN (SELECT id FROM ({missing}) AS m)")
                conn.execute(f"INSERT INTO main.{table} ({listed}) SELECT {listed} FROM ({missing}) AS m "
                             "ORDER BY 1")
            seq = sequence_value(conn, table, "temp")
            if seq and seq != sequence_value(conn, table, "main"):
                # the ids inline projection gave: the next row gets the id it would get there
                set_sequence(conn, table, seq, "main")
        marks = ", ".join("?" * len(names))
        same = ("t.projection = m.projection AND t.position = m.position AND t.stream = m.stream "
                "AND t.reason = m.reason AND t.observed_at = m.observed_at")
        conn.execute(f"DELETE FROM main.projection_errors WHERE id IN (SELECT m.id FROM main.projection_errors AS m "
                     f"WHERE m.projection IN ({marks}) AND m.position > ? "
                     f"AND NOT EXISTS (SELECT 1 FROM temp.projection_errors AS t WHERE {same}))", (*names, prefix))
        new = (f"FROM temp.projection_errors AS t WHERE t.projection IN ({marks}) "
               f"AND NOT EXISTS (SELECT 1 FROM main.projection_errors AS m WHERE {same})")
        if conn.execute(f"SELECT EXISTS (SELECT 1 {new})", tuple(names)).fetchone()[0]:
            conn.execute("INSERT INTO main.projection_errors (projection, position, stream, reason, "
                         f"observed_at) SELECT projection, position, stream, reason, observed_at {new} "
                         f"ORDER BY t.position, t.projection {_ERROR_UPSERT}", tuple(names))
        conn.executemany("INSERT INTO main.projection_checkpoints (projection, position) VALUES (?, ?) "
                         "ON CONFLICT (projection) DO UPDATE SET position = excluded.position "
                         "WHERE main.projection_checkpoints.position IS NOT excluded.position",
                         [(n, end) for n in names])


# ------------------------------------------------------------------------------------------ replay
class ReplayConflict(RuntimeError):
    """The compactor took a new snapshot while replay was rebuilding from the old one, every time."""


def log_end(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(position) FROM events").fetchone()
    return row[0] or 0


def replay_event_count(conn: sqlite3.Connection) -> int:
    """The events a replay applies: those after the snapshot's prefix."""
    return conn.execute("SELECT COUNT(*) FROM events WHERE position > ?", (snapshot_meta(conn).prefix,)).fetchone()[0]


def replay(conn: sqlite3.Connection, projection: str | None = None, batch: int = 5000,
           progress: Callable[[int], None] | None = None, attempts: int = 3) -> int:
    """Rebuild one projection (or all) from the snapshot at the horizon and the retained log, atomically.
    Never touches summary tables. Returns the events applied.

    Every projection is rebuilt in a shadow (a projection reads the others' rows); only `projection`'s
    tables are swapped in. The rebuild reads one consistent view of the log (writers keep appending); the
    swap takes the write lock, applies what was appended meanwhile and replaces the live rows in one
    transaction. Killed at any point, the live tables are untouched: run it again.
    """
    if batch < 1:
        raise ValueError("replay batch must be at least 1 event")
    if conn.in_transaction:
        raise RuntimeError("replay needs a connection outside any transaction")
    names = [handler_named(projection).name] if projection else [h.name for h in runnable(conn)]
    for _ in range(attempts):
        with Shadow(conn) as shadow:
            conn.execute("BEGIN")   # a read transaction: one view of the log, writers go on
            meta = snapshot_meta(conn)
            shadow.load(meta)
            built = log_end(conn)
            applied = shadow.apply(meta, meta.prefix, built, batch, progress)
            conn.execute("COMMIT")  # only the shadow (temp) was written
            conn.execute("BEGIN IMMEDIATE")
            try:
                if snapshot_meta(conn) != meta:
                    conn.execute("ROLLBACK")
                    continue   # the compactor moved the horizon meanwhile: rebuild from its new snapshot
                end = log_end(conn)
                applied += shadow.apply(meta, built, end, batch, progress)
                since = projection_horizon(conn)
                shadow.trim(since)
                shadow.swap(names, end, meta.prefix, since)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return applied
    raise ReplayConflict(f"the snapshot changed during each of {attempts} replays: run it again")


def lag(conn: sqlite3.Connection) -> dict[str, int]:
    """Events each handler has still to apply."""
    end = log_end(conn)
    checkpoints = load_checkpoints(conn)
    return {h.name: max(0, end - checkpoints.get(h.name, 0)) for h in runnable(conn)}

"""Running the handlers: inline with ingest, catching up from a checkpoint, and replaying from the log.

Each handler keeps a checkpoint (the last event position it has applied) in `projection_checkpoints`,
written in the same transaction as its rows, and it only moves forward: a batch fed twice (a crash
between commit and acknowledgement) is skipped, and a handler that is behind (new, or after `replay`
was interrupted) first catches up from the log.

An event a handler cannot project (a CHECK fails, the model refuses the shape) is rolled back to a
savepoint taken before it, recorded in `projection_errors` with the reason, and the handler moves on.
A later replay retries it.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator

import msgspec

from tornstore.eventstore.records import Event, Heartbeat, StreamKey

from .handlers.base import Context, Handler, ProjectionError

_decode = msgspec.json.Decoder().decode

# Failures that belong to one event. Anything else (disk I/O, a locked database) aborts the batch.
EVENT_FAILURES = (ProjectionError, sqlite3.IntegrityError, msgspec.ValidationError, ValueError, TypeError,
                  KeyError, AttributeError, OverflowError, IndexError)


_HANDLERS: list[Handler] | None = None


def handlers() -> list[Handler]:
    global _HANDLERS
    if _HANDLERS is None:
        from .handlers.registry import HANDLERS
        _HANDLERS = HANDLERS
    return _HANDLERS


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
        "ON CONFLICT (projection) DO UPDATE SET position = MAX(position, excluded.position)",
        (name, position),
    )


def prune_horizon(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM store_meta WHERE key = 'prune_horizon'").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _apply(conn: sqlite3.Connection, handler: Handler, event: Event, ctx: Context) -> bool:
    """Apply one event under a savepoint; on failure record it and go on. True when it projected."""
    conn.execute("SAVEPOINT event")
    try:
        handler.apply(conn, event, ctx)
    except EVENT_FAILURES as exc:
        conn.execute("ROLLBACK TO event")
        conn.execute("RELEASE event")
        conn.execute(
            "INSERT OR REPLACE INTO projection_errors (projection, position, stream, reason, observed_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (handler.name, event.position, str(event.stream), f"{type(exc).__name__}: {exc}"[:2000],
             event.observed_at),
        )
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
        for event in events:
            _apply(conn, handler, event, ctx)
        return
    conn.execute("RELEASE events")


def read_events(conn: sqlite3.Connection, after: int, upto: int | None = None,
                views: Iterable[str] | None = None, batch: int = 5000) -> Iterator[list[Event]]:
    """Events after `after` (up to `upto`), in position order, in lists of at most `batch`."""
    view_list = sorted(views) if views is not None else None
    while True:
        sql = ("SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.payload, "
               "e.source_url FROM events e JOIN streams s USING (stream_id) WHERE e.position > ?")
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
        yield [Event(r[0], StreamKey(r[1], r[2], r[3]), r[4], r[5], _decode(r[6]), r[7]) for r in rows]
        after = rows[-1][0]


def _catch_up(conn: sqlite3.Connection, handler: Handler, after: int, upto: int, ctx: Context) -> None:
    for chunk in read_events(conn, after, upto, handler.views):
        _apply_many(conn, handler, chunk, ctx)


def project_inline(conn: sqlite3.Connection, events: list[Event], heartbeats: list[Heartbeat]) -> None:
    """The Projector given to ingest: runs inside the ingest transaction, so reads see their own writes."""
    ctx = Context(horizon=prune_horizon(conn))
    checkpoints = load_checkpoints(conn)
    if events:
        first, last = events[0].position, events[-1].position
        for handler in handlers():
            done = checkpoints.get(handler.name, 0)
            if done >= last:
                continue  # already applied (fed twice)
            if done < first - 1:
                _catch_up(conn, handler, done, first - 1, ctx)
            views = handler.views
            _apply_many(conn, handler, [e for e in events if e.position > done and e.stream.view in views], ctx)
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


def catch_up(conn: sqlite3.Connection, batch: int = 5000,
             progress: Callable[[int], None] | None = None) -> int:
    """Bring every handler up to the end of the log, one transaction per batch. Returns events applied."""
    total = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            checkpoints = load_checkpoints(conn)
            names = [h.name for h in handlers()]
            low = min((checkpoints.get(n, 0) for n in names), default=0)
            chunk = next(read_events(conn, low, batch=batch), [])
            if not chunk:
                conn.execute("COMMIT")
                return total
            ctx = Context(horizon=prune_horizon(conn))
            for handler in handlers():
                done = checkpoints.get(handler.name, 0)
                _apply_many(conn, handler, [e for e in chunk if e.position > done and e.stream.view in handler.views],
                            ctx)
                _save_checkpoint(conn, handler.name, max(done, chunk[-1].position))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        total += len(chunk)
        if progress:
            progress(len(chunk))


def reset(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    """Prepare handlers for a rebuild, in one transaction: history cleared (ids restart), current state
    opened for rewriting, checkpoints and recorded errors dropped."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name in names:
            handler = handler_named(name)
            handler.reset(conn)
            for table in handler.history_tables:
                conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
            for table in handler.state_tables:
                # Rows stay (summaries refer to them); last_updated 0 lets every event rewrite them.
                conn.execute(f"UPDATE {table} SET last_updated = 0")
            conn.execute("DELETE FROM projection_errors WHERE projection = ?", (name,))
            conn.execute("DELETE FROM projection_checkpoints WHERE projection = ?", (name,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def replay(conn: sqlite3.Connection, projection: str | None = None, batch: int = 5000,
           progress: Callable[[int], None] | None = None) -> int:
    """Rebuild one projection (or all) from the retained log. Never touches summary tables.

    Interrupted, it can simply be run again: it starts over from a reset.
    """
    if batch < 1:
        raise ValueError("replay batch must be at least 1 event")
    names = [projection] if projection else [h.name for h in handlers()]
    reset(conn, names)
    return catch_up(conn, batch=batch, progress=progress)


def log_end(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(position) FROM events").fetchone()
    return row[0] or 0


def lag(conn: sqlite3.Connection) -> dict[str, int]:
    """Events each handler has still to apply."""
    end = log_end(conn)
    checkpoints = load_checkpoints(conn)
    return {h.name: max(0, end - checkpoints.get(h.name, 0)) for h in handlers()}

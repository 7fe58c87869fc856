"""The change feed across hosts: `follow(url, after)`, every event after a position, then each new one
moments after its commit, wherever the writer runs.

A transaction of `eventstore.ingest.ingest_batch` that appends events runs `pg_notify('tornstore_events',
<its last position>)` just before COMMIT. PostgreSQL delivers a notification only when its transaction
commits (a rollback drops it), to every session LISTENing on that channel in the same database, on any
host, in commit order. Writers commit one at a time under the store's write lock (`BEGIN IMMEDIATE`, see
`connection.py`), so the committed positions are a prefix at every instant and `position > mark` never
skips an event committed late.

A follower keeps two connections of its own (never pooled ones): a psycopg `AsyncConnection` in autocommit
that sits in LISTEN, and a `PgConnection` that reads the log with the projections' own query
(`projections.runner.read_events`, so the events are the very `Event`s the SQLite code reads). It loops:
read everything after its mark, then wait for a notification, and read again. The notification is only a
wake-up, the log is the truth: a notification lost or merged (a connection that broke and came back,
several commits folded into one wake-up) costs nothing but latency, and the wait also ends every
`poll_interval` seconds to read anyway. A payload at or below the mark (a commit already read) wakes
nobody. A broken connection (server restart, network, `pg_terminate_backend`) is opened again, LISTEN
first and then the read, so nothing committed in between is missed. Both connections carry the
application_name `tornstore follow` unless the URL names one.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..ingest import NOTIFY_CHANNEL
from ..records import Event
from .connection import PgConnection, connect_sync

__all__ = ["APPLICATION_NAME", "follow"]

APPLICATION_NAME = "tornstore follow"   # how a follower's sessions show in pg_stat_activity


class _Idle(Exception):
    """`follow`'s idle_timeout has passed."""


def _conninfo(url: str) -> str:
    """The follower's connection string: `url`, named `tornstore follow` unless it names itself."""
    if "application_name" in conninfo_to_dict(url):
        return url
    return make_conninfo(url, application_name=APPLICATION_NAME)


def _read(conn: PgConnection, mark: int, batch: int) -> list[Event]:
    """Up to `batch` events after `mark`, in position order (the projections' read, one chunk)."""
    from ...projections.runner import read_events   # the projections' query, not a second copy of it
    # PgConnection has the sqlite3.Connection surface read_events uses (connection.py)
    return next(read_events(cast(sqlite3.Connection, conn), mark, batch=batch), [])


def _broken(conn: PgConnection | None, exc: BaseException) -> bool:
    """Whether `exc` from the read connection means the connection broke (not a fault of the query)."""
    if isinstance(exc, psycopg.OperationalError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return conn is None or conn.raw.closed or conn.raw.broken
    return False


async def follow(url: str, after: int, *, batch: int = 500, idle_timeout: float | None = None,
                 poll_interval: float = 5.0) -> AsyncGenerator[Event, None]:
    """Every event after position `after`, in position order: first the backlog, then each new one moments
    after its commit on any host, forever (see the module docstring).

    Opens its connections at the first step and closes them with the iterator: use
    `async with contextlib.aclosing(follow(url, p)) as events:` or call `aclose()`. `batch`: events read
    per query. `idle_timeout`: end the iteration once no event has come for that many seconds (None:
    never). `poll_interval`: read the log at least this often, notification or not. A database that
    cannot be reached at the first step raises; once connected, a broken connection is opened again."""
    if batch < 1 or poll_interval <= 0:
        raise ValueError("follow needs batch >= 1 and poll_interval > 0")
    conninfo = _conninfo(url)
    mark = after
    listener: AsyncConnection[Any] | None = None
    reader: PgConnection | None = None
    connected = False               # a first connection that fails (a wrong URL) raises
    idle_since = time.monotonic()
    retry = 0.1
    try:
        while True:
            try:
                if listener is None or listener.closed or reader is None or reader.raw.closed:
                    await _close(listener, reader)
                    listener = reader = None
                    listener = await AsyncConnection.connect(conninfo, autocommit=True)
                    await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")   # before the read: no commit between
                    reader = await asyncio.to_thread(connect_sync, conninfo, read_only=True)
                    connected, retry = True, 0.1
                events = await asyncio.to_thread(_read, reader, mark, batch)
                if events:
                    for event in events:
                        mark = event.position
                        yield event
                    idle_since = time.monotonic()
                    if len(events) == batch:
                        continue            # more may be there: read on before waiting
                await _wait(listener, mark, idle_since, idle_timeout, poll_interval)
            except (psycopg.OperationalError, sqlite3.OperationalError) as exc:
                # The connection broke (server restart, network): open it again and read from the mark.
                if not connected or not _broken(reader, exc):
                    raise
                await _close(listener, reader)
                listener = reader = None
                if idle_timeout is not None and time.monotonic() - idle_since >= idle_timeout:
                    return
                await asyncio.sleep(retry)
                retry = min(retry * 2, poll_interval)
    except _Idle:
        return
    finally:
        await _close(listener, reader)


async def _close(listener: AsyncConnection[Any] | None, reader: PgConnection | None) -> None:
    if listener is not None:
        await listener.close()
    if reader is not None:
        await asyncio.to_thread(reader.close)


async def _wait(conn: AsyncConnection[Any], mark: int, idle_since: float, idle_timeout: float | None,
                poll_interval: float) -> None:
    """Return when a notification names a position after `mark`, or after `poll_interval` seconds;
    raise _Idle once `idle_timeout` seconds have passed since `idle_since` with no event."""
    deadline = time.monotonic() + poll_interval
    while True:
        now = time.monotonic()
        wait = deadline - now
        if idle_timeout is not None:
            left = idle_since + idle_timeout - now
            if left <= 0:
                raise _Idle
            wait = min(wait, left)
        if wait <= 0:
            return                      # the periodic read
        # aclosing: leaving notifies() early must give the connection's lock back at once.
        async with aclosing(conn.notifies(timeout=wait)) as notifies:
            async for notify in notifies:
                try:
                    newer = int(notify.payload) > mark
                except ValueError:
                    newer = True        # not ours to judge: read
                if newer:
                    return
        # timed out, or only stale notifications: loop to check the deadlines

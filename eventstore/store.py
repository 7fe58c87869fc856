"""The async face of the log: open a database, ingest batches, close. Safe inside a bot's event loop.

Every call is one aiosqlite round trip; the work itself runs in aiosqlite's worker thread. Writes go
through one connection, reads through others (`read`, a small pool: readers.py), so a query never queues
behind an ingest that waits for another process's write lock, nor behind another query.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Iterable
from contextlib import aclosing
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import aiosqlite
import msgspec

from . import db
from .ingest import IngestReport, Projector, ingest_batch, retry_waiting
from .migrate import migrate
from .owners import key_fingerprint
from .readers import Readers
from .records import Event, Owner, Response

T = TypeVar("T")
L = TypeVar("L", bound="EventLog")


class Opening(Generic[L]):
    """What `open` returns: `await` it for an open log, or use it in `async with` to close it on exit.

        log = await EventLog.open("torn.db")            # close it yourself: await log.close()
        async with EventLog.open("torn.db") as log:     # closed when the block ends
            ...
    """

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, L]]):
        self._opener = opener
        self._log: L | None = None

    def __await__(self) -> Generator[Any, None, L]:
        return self._opener().__await__()

    async def __aenter__(self) -> L:
        self._log = await self._opener()
        return self._log

    async def __aexit__(self, *exc: object) -> None:
        if self._log is not None:
            await self._log.close()


class EventLog:
    """The event log of one SQLite file. `async with EventLog.open(path) as log: await log.ingest(...)`."""

    default_projector: ClassVar[Projector | None] = None  # what `open` uses when given no projector

    def __init__(self, conn: aiosqlite.Connection, path: str, projector: Projector | None = None,
                 readers: int | None = None):
        self.conn = conn
        self.path = path
        self.projector = projector
        self.readers = Readers(path, readers)

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, projector: Projector | None = None,
             readers: int | None = None) -> Opening[Self]:
        """Open the database at `path` (a file, or a `postgresql://` URL), applying pending migrations.

        A missing file is an error (a mistyped path must not become a new, empty database) unless
        `create=True`. `readers`: how many queries may run at once, each on its own read connection
        (default 4 on PostgreSQL, 1 on SQLite).
        """
        if readers is not None and readers < 1:
            raise ValueError("readers must be 1 or more")

        async def opener() -> Self:
            return await cls._open(str(path), create=create, projector=projector, readers=readers)
        return Opening(opener)

    @classmethod
    async def _open(cls, path: str, *, create: bool, projector: Projector | None,
                    readers: int | None = None) -> Self:
        if db.is_url(path):
            if not create and not await asyncio.to_thread(db.exists, path):
                raise FileNotFoundError(f"no tornstore database at {db.describe(path)} (run `tornstore --db URL "
                                        f"init` first, or open it with create=True)")
        elif not create and not Path(path).exists():  # noqa: ASYNC240  # one stat() before connecting
            raise FileNotFoundError(f"no database at {path} (run `tornstore --db {path} init` first, "
                                    f"or open it with create=True)")
        conn = await db.connect(path)
        try:
            await db.run_in_connection(conn, migrate)
        except BaseException:
            await db.close(conn)
            raise
        return cls(conn, path, projector if projector is not None else cls.default_projector, readers)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.readers.close()
        await db.close(self.conn)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(sqlite3_connection, *args)` in the writer's worker thread (one round trip)."""
        return await db.run_in_connection(self.conn, fn, *args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read-only `fn(sqlite3_connection, *args)` on a read connection (opened on first use; up
        to `readers` queries at once).

        WAL lets it read the last committed state while a write is under way or waiting for its lock.
        """
        return await self.readers.run(fn, *args)

    async def ingest(self, url: str, body: Any, observed_at: int, *, owner: Owner | dict | None = None,
                     key: str | None = None) -> IngestReport:
        """Ingest one response (the hook for a bot that has its own API client).

        For own-key URLs that name no entity (`/v2/user/bars`, `/v2/faction/members`), say whose key
        made the request: `owner=Owner(player_id=..., faction_id=...)` (or a dict), and/or `key`, the key
        or its fingerprint (only the fingerprint is kept), whose owner the store learns from
        `/v2/key/info` or an own profile made with it.
        """
        if isinstance(owner, dict):
            owner = msgspec.convert(owner, Owner)
        return await self.ingest_many([Response(url=url, observed_at=observed_at, body=body, owner=owner,
                                                key=key_fingerprint(key))])

    async def retry_quarantined(self) -> IngestReport:
        """Route again every quarantined body that waited for its key's owner, now that it is known."""
        return await self.run(retry_waiting, self.projector)

    async def ingest_many(self, responses: Iterable[Response]) -> IngestReport:
        """Ingest a batch of responses in one transaction and one round trip."""
        return await self.run(ingest_batch, list(responses), self.projector)

    async def follow(self, after: int = 0, *, batch: int = 500, idle_timeout: float | None = None,
                     poll_interval: float = 5.0) -> AsyncGenerator[Event, None]:
        """Every event after position `after`, in position order: the backlog, then each new one as it is
        committed, forever (`idle_timeout`: end once no event has come for that many seconds).

            async with contextlib.aclosing(log.follow(last_seen)) as events:
                async for event in events: ...

        On PostgreSQL the feed of `eventstore.postgres.follow` (its own connections; a commit on any host
        wakes it at once through LISTEN/NOTIFY, and it reads at least every `poll_interval` seconds). On
        SQLite the read connection is polled every `poll_interval` seconds. `batch`: events read per query.
        """
        if batch < 1 or poll_interval <= 0:
            raise ValueError("follow needs batch >= 1 and poll_interval > 0")
        if db.is_url(self.path):
            from .postgres.follow import follow
            async with aclosing(follow(self.path, after, batch=batch, idle_timeout=idle_timeout,
                                       poll_interval=poll_interval)) as feed:
                async for event in feed:
                    yield event
            return
        mark, idle_since = after, time.monotonic()
        while True:
            events = await self.read(_read_events_after, mark, batch)
            for event in events:
                mark = event.position
                yield event
            if events:
                idle_since = time.monotonic()
                if len(events) == batch:
                    continue                    # more may be there: read on before sleeping
            wait = poll_interval
            if idle_timeout is not None:
                left = idle_since + idle_timeout - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            await asyncio.sleep(wait)


def _read_events_after(conn: Any, after: int, batch: int) -> list[Event]:
    """Up to `batch` events after `after`, in position order (the projections' read, one chunk)."""
    from ..projections.runner import read_events
    return next(read_events(conn, after, batch=batch), [])

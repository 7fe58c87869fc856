"""The async face of the log: open a database, ingest batches, close. Safe inside a bot's event loop.

Every call is one aiosqlite round trip; the work itself runs in aiosqlite's worker thread.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import aiosqlite

from . import db
from .ingest import IngestReport, Projector, ingest_batch
from .migrate import migrate
from .records import Response


class EventLog:
    """The event log of one SQLite file. `async with EventLog.open(path) as log: await log.ingest(...)`."""

    def __init__(self, conn: aiosqlite.Connection, path: str, projector: Projector | None = None):
        self.conn = conn
        self.path = path
        self.projector = projector

    @classmethod
    async def open(cls, path: str | Path, *, projector: Projector | None = None,
                   create: bool = True) -> "EventLog":
        path = str(path)
        if not create and not Path(path).exists():
            raise FileNotFoundError(f"no database at {path} (run `tornstore --db {path} init` first)")
        conn = await db.connect(path)
        try:
            await db.run_in_connection(conn, migrate)
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, projector)

    async def __aenter__(self) -> "EventLog":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await db.close(self.conn)

    async def run(self, fn, *args: Any):
        """Run `fn(sqlite3_connection, *args)` in the worker thread (one round trip)."""
        return await db.run_in_connection(self.conn, fn, *args)

    async def ingest(self, url: str, body: Any, observed_at: int) -> IngestReport:
        """Ingest one response (the hook for a bot that has its own API client)."""
        return await self.ingest_many([Response(url=url, observed_at=observed_at, body=body)])

    async def ingest_many(self, responses: Iterable[Response]) -> IngestReport:
        """Ingest a batch of responses in one transaction and one round trip."""
        return await self.run(ingest_batch, list(responses), self.projector)

"""The read connections of a store: a small pool, so concurrent queries of a bot or dashboard run side by side.

Each read takes one idle connection (opening a new one while fewer than `size` are open), runs in that
connection's worker thread and gives it back. Reads are one snapshot each, so which connection serves one does
not matter. On PostgreSQL every connection is a server session of its own (the default pool holds 4); on
SQLite, WAL lets several readers share the file, and one reader is the default (a bot's queries are short).
"""
from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from . import db

T = TypeVar("T")

DEFAULT_SQLITE = 1
DEFAULT_POSTGRES = 4


def default_size(path: str) -> int:
    return DEFAULT_POSTGRES if db.is_url(path) else DEFAULT_SQLITE


class Readers:
    """Up to `size` read-only connections to `path`, opened on first need."""

    def __init__(self, path: str, size: int | None = None):
        if size is not None and size < 1:
            raise ValueError("readers must be 1 or more")
        self.path = path
        self.size = size if size is not None else default_size(path)
        self._idle: list[Any] = []
        self._opened = 0
        self._slots = asyncio.Semaphore(self.size)

    @property
    def opened(self) -> int:
        """Connections open now (idle or serving a read)."""
        return self._opened

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the read-only `fn(connection, *args)` on a free read connection (one round trip)."""
        async with self._slots:
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = await db.connect(self.path, read_only=True)
                self._opened += 1
            keep = True
            try:
                return await db.run_in_connection(conn, fn, *args)
            except sqlite3.DatabaseError:
                # The database failed, not the question (a server restart, a killed session, a file gone): this
                # connection may be broken, so it goes; the next read opens a new one.
                keep = False
                self._opened -= 1
                with contextlib.suppress(Exception):
                    await db.close(conn)
                raise
            finally:
                if keep:
                    self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            self._opened -= 1
            await db.close(conn)

"""Opening the SQLite file: the plan's PRAGMAs, and running a whole batch in aiosqlite's worker thread.

Each await on aiosqlite costs about 100 µs. The store therefore does its work as plain synchronous
functions over the underlying `sqlite3.Connection` and hands a whole batch to the worker thread in one
round trip (`run_in_connection`), instead of awaiting per row.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA cache_size = -64000",       # 64 MB page cache
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 268435456",     # 256 MB memory-mapped I/O
)
# Wait this long for another writer instead of failing at once; TORNSTORE_BUSY_TIMEOUT_MS changes it (a
# collector that should spool sooner, a test).
BUSY_TIMEOUT_MS = 30000


class StoreConnection(sqlite3.Connection):
    """A sqlite3 connection that can carry ingest's cache of stream states (see ingest._StreamCache)."""
    stream_cache = None


def table_names(conn: sqlite3.Connection) -> set[str]:
    """The tables of the main database (code that runs on a schema older than its own asks what is there)."""
    return {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}


def apply_pragmas(conn: sqlite3.Connection) -> None:
    """Set the per-connection PRAGMAs; a new, empty file also gets incremental auto-vacuum."""
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    if page_count == 0:
        # Only takes effect before the first table exists; lets the compactor give pages back to the OS.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")


def busy_timeout_ms() -> int:
    """BUSY_TIMEOUT_MS, or TORNSTORE_BUSY_TIMEOUT_MS when set to a whole number of milliseconds."""
    text = os.environ.get("TORNSTORE_BUSY_TIMEOUT_MS", "")
    return int(text) if text.isdigit() else BUSY_TIMEOUT_MS


def connect_sync(path: str | Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the store's settings, in autocommit mode (we issue BEGIN ourselves)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, factory=StoreConnection)
    try:
        apply_pragmas(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def close_sync(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA optimize")
    conn.close()


async def connect(path: str | Path, *, read_only: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection with the store's settings, in autocommit mode.

    `read_only`: for queries; `PRAGMA query_only` makes any write on it an error.
    """
    if not Path(path).parent.is_dir():
        raise sqlite3.OperationalError(f"unable to open database file: the folder {Path(path).parent} does not exist")
    conn = aiosqlite.connect(str(path), isolation_level=None, factory=StoreConnection)
    try:
        await conn
    except BaseException:
        # aiosqlite stops its worker thread when the file cannot be opened, but does not wait for it: wait
        # here, or the thread reports to an event loop that is closed by then (a traceback at exit).
        thread = getattr(conn, "_thread", None)
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, 5)
        raise
    try:
        await run_in_connection(conn, apply_pragmas)
        if read_only:
            await run_in_connection(conn, lambda c: c.execute("PRAGMA query_only = ON"))
    except BaseException:
        await conn.close()  # else its worker thread keeps the process alive after the error
        raise
    return conn


async def close(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        await conn.execute("PRAGMA optimize")
    await conn.close()


async def run_in_connection(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` in the connection's worker thread: one round trip.

    aiosqlite has no public call for this; `_execute` is the method its own cursor calls use, and
    `_conn` the raw connection. Keeping both uses here means a change in aiosqlite touches one place;
    pyproject pins the versions where they exist, and tests/test_store_open.py checks them.
    """
    return await conn._execute(fn, conn._conn, *args)  # noqa: SLF001


class joined_transaction:
    """Like Transaction, but joins the caller's transaction when one is open (then the caller commits)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.owns = False

    def __enter__(self) -> sqlite3.Connection:
        self.owns = not self.conn.in_transaction
        if self.owns:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.owns:
            self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


class Transaction:
    """`with Transaction(conn):` runs the block in BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error.

    IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of failing
    with a deadlock when both upgrade from a read.
    """

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")

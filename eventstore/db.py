"""Opening the database: the SQLite file with the plan's PRAGMAs (or a PostgreSQL database, named by a
`postgresql://` URL), and running a whole batch in the connection's worker thread.

Each await on aiosqlite costs about 100 µs. The store therefore does its work as plain synchronous
functions over the underlying `sqlite3.Connection` and hands a whole batch to the worker thread in one
round trip (`run_in_connection`), instead of awaiting per row.

PostgreSQL takes the same road: `eventstore.postgres.connection.PgConnection` gives those functions the
surface of a sqlite3 connection over psycopg, and `PgWorker` is its worker thread. Everything below takes
a path or a URL; `is_postgres(conn)` is the branch for the few things only one backend has.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
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


def is_url(target: object) -> bool:
    """Whether `target` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def is_postgres(conn: object) -> bool:
    """Whether `conn` (sync or async) is a PostgreSQL connection."""
    return getattr(conn, "dialect", "sqlite") == "postgresql"


def table_names(conn: sqlite3.Connection) -> set[str]:
    """The tables of the main database (code that runs on a schema older than its own asks what is there)."""
    if is_postgres(conn):
        # (a partitioned history table's monthly partitions are part of it, not tables of their own)
        return {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")}
    return {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}


def _qualified(table: str, schema: str | None) -> str:
    """`schema.table`, or the bare name, which finds a connection's TEMP table (replay's shadow) first."""
    return f"{schema}.{table}" if schema else table


def _identity_sequence(conn: sqlite3.Connection, table: str, schema: str | None) -> str | None:
    """PostgreSQL: the sequence that numbers `table`'s rows (what AUTOINCREMENT's row in sqlite_sequence is):
    its identity's, or, for a partitioned history table, the sequence its id column owns."""
    qualified = {"temp": f"pg_temp.{table}", "main": f"public.{table}"}.get(schema or "", table)
    row = conn.execute(
        "SELECT s FROM (SELECT pg_get_serial_sequence(?, a.attname) AS s, a.attnum FROM pg_attribute a "
        "WHERE a.attrelid = CAST(? AS regclass) AND a.attnum > 0 AND NOT a.attisdropped) AS c "
        "WHERE s IS NOT NULL ORDER BY attnum LIMIT 1", (qualified, qualified)).fetchone()
    return row[0] if row else None


def sequence_value(conn: sqlite3.Connection, table: str, schema: str | None = None) -> int:
    """The highest id `table`'s AUTOINCREMENT has handed out (0 if none): ids are never reused, even after the
    rows that had them are pruned. On PostgreSQL, the table's identity sequence."""
    if is_postgres(conn):
        seq = _identity_sequence(conn, table, schema)
        if seq is None:
            return 0
        value, called = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
        return value if called else 0
    row = conn.execute(f"SELECT MAX(seq) FROM {_qualified('sqlite_sequence', schema)} WHERE name = ?",
                       (table,)).fetchone()
    return row[0] or 0 if row else 0


def set_sequence(conn: sqlite3.Connection, table: str, value: int, schema: str | None = None) -> None:
    """Make `value` the highest id `table` has handed out (the next row gets value + 1)."""
    if is_postgres(conn):
        seq = _identity_sequence(conn, table, schema)
        if seq is not None:
            conn.execute("SELECT setval(CAST(? AS regclass), ?, ?)", (seq, max(value, 1), value > 0))
        return
    conn.execute(f"DELETE FROM {_qualified('sqlite_sequence', schema)} WHERE name = ?", (table,))
    conn.execute(f"INSERT INTO {_qualified('sqlite_sequence', schema)} (name, seq) VALUES (?, ?)", (table, value))


def ids_written(conn: sqlite3.Connection, table: str, top: int, schema: str | None = None) -> None:
    """After rows were inserted with ids the code chose (up to `top`): on PostgreSQL, move the identity
    sequence past them, as SQLite's AUTOINCREMENT moves by itself; nothing to do on SQLite."""
    if is_postgres(conn) and top > sequence_value(conn, table, schema):
        set_sequence(conn, table, top, schema)


def describe(target: str | Path) -> str:
    """The database for a message: the path, or the URL without its password."""
    if is_url(target):
        from .postgres.connection import redact
        return redact(str(target))
    return str(target)


def exists(target: str | Path) -> bool:
    """Whether a database is there: a file, or a PostgreSQL database holding tables. (An empty PostgreSQL
    database is what a missing file is: `init`, or create=True, makes the store there. One holding another
    program's tables is what someone else's file is: a store at schema version 0.)"""
    if not is_url(target):
        return Path(target).exists()
    conn = connect_sync(str(target))
    try:
        return bool(table_names(conn))
    finally:
        conn.close()


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


def connect_sync(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A plain sqlite3 connection with the store's settings, in autocommit mode (we issue BEGIN ourselves);
    for a `postgresql://` URL, a PgConnection that the same code can use."""
    if is_url(path):
        from .postgres.connection import connect_sync as pg_connect
        return pg_connect(str(path), read_only=read_only)  # type: ignore[return-value]
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, factory=StoreConnection)
    try:
        apply_pragmas(conn)
        if read_only:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def close_sync(conn: sqlite3.Connection) -> None:
    if is_postgres(conn):
        conn.close()
        return
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA optimize")
    conn.close()


async def connect(path: str | Path, *, read_only: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection with the store's settings, in autocommit mode.

    `read_only`: for queries; `PRAGMA query_only` makes any write on it an error. A `postgresql://` URL
    gives a PgWorker (a PgConnection in its own worker thread), which `run_in_connection` takes alike.
    """
    if is_url(path):
        return await PgWorker.open(str(path), read_only=read_only)  # type: ignore[return-value]
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
    if isinstance(conn, PgWorker):
        await conn.close()
        return
    with contextlib.suppress(sqlite3.Error):
        await conn.execute("PRAGMA optimize")
    await conn.close()


async def run_in_connection(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` in the connection's worker thread: one round trip.

    aiosqlite has no public call for this; `_execute` is the method its own cursor calls use, and
    `_conn` the raw connection. Keeping both uses here means a change in aiosqlite touches one place;
    pyproject pins the versions where they exist, and tests/test_store_open.py checks them.
    """
    if isinstance(conn, PgWorker):
        return await conn.run(fn, *args)
    return await conn._execute(fn, conn._conn, *args)  # noqa: SLF001


class PgWorker:
    """A PostgreSQL connection and the one thread that uses it: aiosqlite's shape for the other backend."""

    dialect = "postgresql"

    def __init__(self, conn: Any):
        self.conn = conn
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tornstore-pg")

    @classmethod
    async def open(cls, url: str, *, read_only: bool = False) -> PgWorker:
        worker = cls(None)
        try:
            worker.conn = await worker.run_plain(connect_sync, url, read_only=read_only)
        except BaseException:
            worker._thread.shutdown(wait=False)
            raise
        return worker

    async def run_plain(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(connection, *args)` in the worker thread: one round trip from the event loop."""
        return await self.run_plain(fn, self.conn, *args)

    async def close(self) -> None:
        if self.conn is not None:
            await self.run_plain(self.conn.close)
        self._thread.shutdown(wait=True)


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

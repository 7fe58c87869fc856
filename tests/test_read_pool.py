"""A store's read connections are a small pool (eventstore/readers.py): queries run side by side, up to
`readers` at once, on both backends. No clock is read: two queries prove they overlap by waiting for each
other, which a single read connection could never let them do."""
from __future__ import annotations

import asyncio
import threading

import pytest

from tornstore import Store
from tornstore.eventstore.readers import DEFAULT_POSTGRES, DEFAULT_SQLITE

def meet(here: threading.Event, there: threading.Event):
    """A read that says it started, then waits (at most 10 s) for the other read to start too."""
    def read(conn) -> bool:
        conn.execute("SELECT COUNT(*) FROM events").fetchone()
        here.set()
        return there.wait(10)
    return read


def test_two_queries_run_at_once(db_path):
    async def main():
        store = await Store.open(db_path, create=True, readers=2)
        try:
            a, b = threading.Event(), threading.Event()
            both = await asyncio.gather(store.read(meet(a, b)), store.read(meet(b, a)))
            assert both == [True, True]          # each saw the other start while it was still running
            assert store.readers.opened == 2
            # The connections are kept and used again: two more reads open nothing new.
            await asyncio.gather(store.read(meet(a, b)), store.read(meet(b, a)))
            assert store.readers.opened == 2
        finally:
            await store.close()
        assert store.readers.opened == 0
    asyncio.run(main())


def test_never_more_reads_at_once_than_readers(db_path):
    async def main():
        store = await Store.open(db_path, create=True, readers=2)
        inside, most, lock = [0], [0], threading.Lock()

        def read(conn) -> int:
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            conn.execute("SELECT COUNT(*) FROM events").fetchone()
            threading.Event().wait(0.05)
            with lock:
                inside[0] -= 1
            return 1
        try:
            assert sum(await asyncio.gather(*(store.read(read) for _ in range(8)))) == 8
            assert most[0] == 2 and store.readers.opened == 2
        finally:
            await store.close()
    asyncio.run(main())


def test_defaults_and_a_bad_size(db_path):
    async def main():
        store = await Store.open(db_path, create=True)
        try:
            want = DEFAULT_POSTGRES if str(db_path).startswith("postgresql://") else DEFAULT_SQLITE
            assert store.readers.size == want
        finally:
            await store.close()
        with pytest.raises(ValueError, match="readers must be 1 or more"):
            Store.open(db_path, readers=0)
    asyncio.run(main())


def test_a_failed_query_keeps_its_connection_a_failed_database_does_not(db_path):
    from tornstore.projections.queries import QueryError

    async def main():
        store = await Store.open(db_path, create=True, readers=1)
        try:
            with pytest.raises(QueryError):
                await store.changes_since(0, limit=0)            # a bad question: the connection stays
            assert store.readers.opened == 1
            with pytest.raises(Exception, match="no_such_table"):
                await store.read(lambda conn: conn.execute("SELECT * FROM no_such_table").fetchall())
            assert store.readers.opened == 0                     # a database error: the connection goes
            assert await store.head_position() == 0              # and the next read opens a new one
            assert store.readers.opened == 1
        finally:
            await store.close()
    asyncio.run(main())

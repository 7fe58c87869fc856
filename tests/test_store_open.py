"""Opening the store as Python developers expect: both idioms, no accidental databases, reads never wait. On a
SQLite file and on a PostgreSQL database (db_path); a missing database on PostgreSQL is in
test_postgres_errors.py."""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import aiosqlite
import pytest

from tornstore import Store
from tornstore.eventstore.db import close_sync, connect_sync, is_url
from tornstore.eventstore.store import EventLog

from .conftest import OBSERVED_AT, fixture_body

PROFILE_URL = "https://api.torn.com/user/1879891?selections=profile"


async def test_async_with_open_and_await_open_both_work(db_path):
    db = db_path
    async with Store.open(db, create=True) as store:
        assert type(store) is Store
        await store.ingest(PROFILE_URL, fixture_body("v1/user_profile.json"), observed_at=OBSERVED_AT)
    if is_url(db):
        assert store.conn.conn.raw.closed            # closed when the block ended (psycopg's own flag)
    else:
        assert store.conn._connection is None      # closed when the block ended (aiosqlite's own flag)

    store = await Store.open(db)
    try:
        player = await store.player(1879891)
        assert player is not None and player.player_id == 1879891
    finally:
        await store.close()

    async with await Store.open(db) as again:     # the older idiom still works
        assert await again.player(1879891) is not None


@pytest.mark.sqlite_only("a path that names no file (PostgreSQL: tests/test_postgres_errors.py)")
async def test_a_missing_file_is_an_error_unless_asked_to_create(tmp_path, db_path):
    missing = tmp_path / "typo.db"
    with pytest.raises(FileNotFoundError, match="typo.db"):
        async with Store.open(missing):
            pass
    with pytest.raises(FileNotFoundError):
        await EventLog.open(missing)
    assert not missing.exists()


async def test_the_read_connection_refuses_writes(db_path):
    async with Store.open(db_path, create=True) as store:
        with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
            await store.read(lambda c: c.execute("DELETE FROM events"))
        assert await store.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]) == 0


async def test_a_query_does_not_queue_behind_an_ingest_that_waits_for_the_lock(db_path):
    db = db_path
    async with Store.open(db, create=True) as store:
        await store.ingest(PROFILE_URL, fixture_body("v1/user_profile.json"), observed_at=OBSERVED_AT)

        # Another process's writer holds the write lock until we let it go (on PostgreSQL the store's
        # advisory lock, which BEGIN IMMEDIATE takes there).
        other = connect_sync(db)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Event()
        holder = threading.Thread(target=lambda: (release.wait(30), other.execute("COMMIT"), close_sync(other)))
        holder.start()
        try:
            body = fixture_body("v1/user_profile.json") | {"level": 99}
            waiting = asyncio.create_task(store.ingest(PROFILE_URL, body, observed_at=OBSERVED_AT + 60))
            await asyncio.sleep(0.2)
            assert not waiting.done()                      # the ingest waits for the lock...
            player = await store.player(1879891)           # ...and the query answers meanwhile
            assert player is not None and player.level != 99
            assert not waiting.done()
        finally:
            release.set()
            holder.join()
        await waiting
        assert (await store.player(1879891)).level == 99


def test_the_private_aiosqlite_calls_we_use_exist():
    # db.run_in_connection uses these; pyproject pins aiosqlite to the releases that have them.
    assert callable(getattr(aiosqlite.Connection, "_execute", None))
    assert isinstance(getattr(aiosqlite.Connection, "_conn", None), property)

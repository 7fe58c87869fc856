"""Nothing lost when the database fails: responses wait in a spool file and are stored when it works again."""
from __future__ import annotations

import logging
import sqlite3

import msgspec

from tornstore import Store
from tornstore.eventstore.records import Owner, Response
from tornstore.eventstore.spool import Spool, SpoolingSink, spool_path_for

from .conftest import OBSERVED_AT

KEY = "SpOoLkEy12345678"


def _profile(pid: int, level: int) -> dict:
    return {"player_id": pid, "name": f"p{pid}", "level": level, "status": {"state": "Okay", "description": "Okay"}}


def _batch(start: int, n: int, at: int, raw: bool = False) -> list[Response]:
    out = []
    for pid in range(start, start + n):
        body = _profile(pid, 5)
        out.append(Response(url=f"https://api.torn.com/user/{pid}?selections=profile&key={KEY}", observed_at=at,
                            body=msgspec.Raw(msgspec.json.encode(body)) if raw else body,
                            owner=Owner(player_id=1), key="k:0123abcd"))
    return out


def _players(db) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {pid for (pid,) in conn.execute("SELECT player_id FROM players")}
    finally:
        conn.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_full_database_spools_and_the_spool_is_stored_first_when_it_takes_data_again(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "tornstore.collector.spool")
    db = tmp_path / "torn.db"
    clock = Clock()
    async with Store.open(db, create=True) as store:
        sink = SpoolingSink(store.ingest_many, spool_path_for(db), clock=clock)
        assert (await sink(_batch(1, 5, OBSERVED_AT))).appended == 5
        pages = await store.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))   # the disk is "full"
        assert await sink(_batch(100, 300, OBSERVED_AT + 60)) is None
        assert await sink(_batch(400, 5, OBSERVED_AT + 120, raw=True)) is None    # backing off: straight in
        assert sink.spool.waiting() and len(sink.spool.read()) == 305

        await store.run(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))  # space again
        assert await sink(_batch(500, 5, OBSERVED_AT + 180)) is None             # still inside the backoff
        clock.now += 5.1
        report = await sink(_batch(600, 5, OBSERVED_AT + 240))
        assert report is not None and report.appended == 315
    assert not spool_path_for(db).exists()
    assert _players(db) == set(range(1, 6)) | set(range(100, 405)) | set(range(500, 505)) | set(range(600, 605))
    incident = [r.getMessage() for r in caplog.records]
    assert len(incident) == 3    # one line when it starts, one when the spool is stored, one when it ends
    assert "spooling them to" in incident[0] and "full" in incident[0]
    assert "stores responses again" in incident[-1]


async def test_a_database_locked_by_another_process_spools_and_nothing_is_lost(tmp_path):
    db = tmp_path / "torn.db"
    clock = Clock()
    async with Store.open(db, create=True) as store:
        await store.run(lambda c: c.execute("PRAGMA busy_timeout = 100"))
        sink = SpoolingSink(store.ingest_many, spool_path_for(db), clock=clock)
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")                  # holds the write lock
        assert await sink(_batch(1, 10, OBSERVED_AT)) is None
        other.execute("COMMIT")
        other.close()
        clock.now += 60
        assert (await sink([])).appended == 10          # an empty flush stores the spool too
    assert _players(db) == set(range(1, 11))


async def test_the_spool_keeps_owner_and_fingerprint_and_no_key(tmp_path):
    spool = Spool(tmp_path / "x.spool.ndjson")
    spool.append(_batch(1, 2, OBSERVED_AT) + _batch(3, 1, OBSERVED_AT, raw=True))
    text = spool.path.read_bytes()
    assert KEY.encode() not in text and b"k:0123abcd" in text
    back = spool.read()
    assert [r.owner for r in back] == [Owner(player_id=1)] * 3
    assert back[2].body == _profile(3, 5)


async def test_if_even_the_spool_cannot_be_written_responses_are_held_in_memory(tmp_path):
    db = tmp_path / "torn.db"
    missing_dir = tmp_path / "gone" / "torn.db.spool.ndjson"   # its folder does not exist: append fails
    clock = Clock()
    async with Store.open(db, create=True) as store:
        sink = SpoolingSink(store.ingest_many, missing_dir, clock=clock)
        pages = await store.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await store.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
        assert await sink(_batch(1, 50, OBSERVED_AT)) is None
        assert len(sink.held) == 50
        await store.run(lambda c: c.execute("PRAGMA max_page_count = 1073741823"))
        clock.now += 10
        assert (await sink(_batch(100, 1, OBSERVED_AT + 60))).appended == 51
        assert sink.held == []
    assert len(_players(db)) == 51


"""Ingest in a child process (projections.ingest_process) and bodies handed on undecoded (raw_bodies).

The demo runs this way: the collector keeps JSON bodies as msgspec.Raw and a child process decodes,
hashes, appends and projects them. It must store exactly what in-thread ingest of decoded bodies stores.
"""
from __future__ import annotations

import asyncio
import sqlite3

import msgspec
import pytest

from tornstore.eventstore.db import connect_sync

from tornstore.eventstore.collector import Collector, parse_config
from tornstore.eventstore.collector.client import TornClient
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.records import Response
from tornstore.eventstore.simulator import World, start_simulator
from tornstore.projections.ingest_process import IngestProcess, IngestProcessError
from tornstore.projections.store import Store

KEY = "RAWrawRAWrawRAW1"
URL = "https://api.torn.com/faction/9?selections=basic"


def rows(path, sql):
    conn = connect_sync(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


EVENTS = ("SELECT s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.hash, e.payload, e.source_url "
          "FROM events e JOIN streams s USING (stream_id) ORDER BY s.entity_type, s.entity_id, s.view, e.version")
TABLES = ("players", "factions", "player_stats_history", "faction_history", "war_status_history",
          "territory_ownership_history")


def config(url, fids):
    return parse_config({
        "api_base": url, "interval": "4m", "jitter": 0, "batch": 500, "flush_every": "1h",
        "keys": [{"key": KEY, "owner": "1", "access": "limited", "budget": 100}],
        "factions": [{"id": fid, "fetch": ["v1:basic", "v1:territory"], "members": True,
                      "member_fetch": ["v1:profile"]} for fid in fids],
        "wars": {"ranked": True, "territory": True},
    }, env={})


async def test_raw_bodies_through_the_ingest_process_store_what_in_thread_ingest_stores(tmp_path):
    world = World(seed=7, factions=2, members_per_faction=(3, 5), territories=300)
    handle = await start_simulator(world, rate_limit=None)
    clock = lambda: float(world.now)  # noqa: E731

    async def advance(seconds):
        await asyncio.sleep(0)

    fids = sorted(world.factions)
    raw_db, plain_db = tmp_path / "raw.db", tmp_path / "plain.db"
    try:
        async with await Store.open(raw_db, create=True) as raw_store, await Store.open(plain_db, create=True) as plain_store:
            async with IngestProcess(raw_db) as writer:
                raw = Collector(config(handle.url, fids), writer.ingest, run=raw_store.run, clock=clock,
                                sleep=advance, raw_bodies=True)
                plain = Collector(config(handle.url, fids), plain_store.ingest_many, run=plain_store.run,
                                  clock=clock, sleep=advance)
                async with raw, plain:
                    for _ in range(30):  # two hours of 4-minute polls; each round asks both at one time
                        await raw.run_once()
                        await plain.run_once()
                        handle.set_clock(world.now + 240)
    finally:
        await handle.close()
    assert raw.report.requests == plain.report.requests > 60
    assert raw.report.appended == plain.report.appended > 0
    assert rows(raw_db, EVENTS) == rows(plain_db, EVENTS)
    for table in TABLES:
        sql = f"SELECT * FROM {table} ORDER BY 1, 2, 3"
        assert rows(raw_db, sql) == rows(plain_db, sql), table
    assert all(rows(raw_db, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES[:4])
    # the members learned from undecoded faction bodies were polled too
    assert rows(raw_db, "SELECT count(*) FROM streams WHERE view = 'v1.profile'")[0][0] >= 6


async def test_a_batch_the_child_cannot_read_fails_alone_and_the_next_one_lands(db_path):
    async with await Store.open(db_path, create=True):
        pass
    body = {"ID": 9, "name": "Nine", "respect": 10, "members": {}}
    async with IngestProcess(db_path) as writer:
        with pytest.raises(IngestProcessError, match="ingest failed: ValidationError.*observed_at"):
            await writer.ingest([{"url": URL}])  # not a Response: the child says why
        report = await writer.ingest([Response(url=URL, observed_at=1_700_000_000, body=body)])
        queued = await writer.submit([Response(url=URL, observed_at=1_700_000_300, body={**body, "respect": 11})])
        total = await writer.drain()
    assert queued.done() and report.appended >= 1 and total.appended >= 1
    assert rows(db_path, "SELECT respect FROM faction_history ORDER BY timestamp") == [(10,), (11,)]


async def test_a_child_that_dies_fails_what_waits_and_what_comes_after(db_path):
    async with await Store.open(db_path, create=True):
        pass
    writer = await IngestProcess(db_path).start()
    try:
        writer._process.kill()
        with pytest.raises(IngestProcessError, match="ingest process exited"):
            await writer.ingest([Response(url=URL, observed_at=1_700_000_000, body={"ID": 9})])
        with pytest.raises(IngestProcessError, match="ingest process exited"):
            await writer.submit([])
    finally:
        await writer.close()


async def test_no_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no database"):
        await IngestProcess(tmp_path / "missing.db").start()


@pytest.mark.parametrize("data, kind", [
    (b'{"ID": 9, "name": "Nine"}', msgspec.Raw),                       # an ordinary answer: not decoded
    (b'{"error": {"code": 2, "error": "Incorrect key"}}', dict),        # an error: the collector acts on it
    (b'{"members": [], "_metadata": {"links": {"next": null}}}', dict),  # v2 paging: links are followed
    (b'[1, 2]', list),                                                  # not an object: decoded, as before
    (b'<html>maintenance</html>', str),                                 # not JSON: text, quarantined later
    (b'"a string"', str),
])
def test_raw_bodies_decode_only_what_the_collector_reads(data, kind):
    body = TornClient("http://127.0.0.1:1", raw_bodies=True)._body(data)
    assert type(body) is kind
    assert type(TornClient("http://127.0.0.1:1")._body(data)) is (dict if kind is msgspec.Raw else kind)


def test_ingest_decodes_raw_bodies_and_quarantines_raw_text(conn):
    good = Response(url=URL, observed_at=1_700_000_000, body=msgspec.Raw(b'{"ID": 9, "name": "Nine"}'))
    bad = Response(url=URL, observed_at=1_700_000_060, body=msgspec.Raw(b'{"ID": 9, "name": '))
    report = ingest_batch(conn, [good, bad])
    assert report.appended == 1 and [r.reason for r in report.rejected] == [f"{URL}: body is not valid JSON"]
    assert conn.execute("SELECT body FROM quarantine").fetchone()[0] == '{"ID": 9, "name": '


def test_fewer_collections_restores_the_collector_settings():
    import gc

    from tornstore.eventstore.gctuning import fewer_collections

    before = gc.get_threshold()
    with fewer_collections(threshold=12_345):
        assert gc.get_threshold()[0] == 12_345 and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


async def test_a_database_without_the_schema_stops_the_child_with_a_clear_message(tmp_path, capfd):
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()  # a SQLite file, but tornstore never opened it
    async with IngestProcess(path) as writer:
        with pytest.raises(IngestProcessError, match=r"exited \(code 1\)"):
            await writer.ingest([Response(url=URL, observed_at=1_700_000_000, body={"ID": 9})])
    assert "the schema is not current" in capfd.readouterr().err

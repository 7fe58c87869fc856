"""The PostgreSQL event log (issue 18, first slice): SQLite's outcomes, and concurrency done right.

Against the real server at 127.0.0.1:5432 (or TORNSTORE_TEST_POSTGRES): each test makes its own database,
tornstore_test_<pid>_<random>, and drops it afterwards. Where no server is reachable the tests skip and say so.
Writers are real processes; nothing of ours is mocked. One bound on time, the issue's done-when: a follower
has each event within a second of its commit (the change feed); nothing else asserts on timing.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import random
import secrets
import subprocess
import sys
import time

import pytest

# CI sets TORNSTORE_REQUIRE_POSTGRES=1 when a server answers on its port: then these tests must run, and a
# missing driver or a refused connection fails them instead of skipping them.
REQUIRED = os.environ.get("TORNSTORE_REQUIRE_POSTGRES") == "1"
if REQUIRED:
    import psycopg
else:
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install 'tornstore[postgresql]')")

from psycopg.conninfo import make_conninfo  # noqa: E402

from tornstore.eventstore.capture import read_capture  # noqa: E402
from tornstore.eventstore.ingest import ingest_batch  # noqa: E402
from tornstore.eventstore.migrate import MigrationError  # noqa: E402
from tornstore.eventstore.postgres import PgEventLog, available_migrations, check, migrate  # noqa: E402
from tornstore.eventstore.records import Response  # noqa: E402

from .conftest import FIXTURE_URLS, OBSERVED_AT, fixture_body  # noqa: E402

PG_BASE = os.environ.get("TORNSTORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
T = OBSERVED_AT
NOW = T + 10_000           # the ingesting machine's clock in these tests
PLANTED = "PLANTEDKEY123456"  # a key that must never reach the database


@pytest.fixture
def pg_url():
    """A new, empty database on the server; dropped after the test."""
    try:
        admin = psycopg.connect(PG_BASE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if REQUIRED:
            pytest.fail(f"TORNSTORE_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {PG_BASE}: "
                        f"{str(exc).strip()}")
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE}: {str(exc).strip()}")
    name = f"tornstore_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(PG_BASE, dbname=name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# ------------------------------------------------------------------------------------------ migrations

async def test_migrations_are_recorded_checked_and_safe_to_race(pg_url):
    conns = [await psycopg.AsyncConnection.connect(pg_url, autocommit=True) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))  # three sessions open a new database at once
        assert sorted(v for done in applied for v in done) == [m.version for m in available_migrations()]
        cur = await conns[0].execute("SELECT version, checksum FROM schema_version ORDER BY version")
        rows = await cur.fetchall()
        assert rows == [(m.version, m.checksum) for m in available_migrations()]
        assert await migrate(conns[0]) == [] and await check(conns[1]) == []
        await conns[0].execute("UPDATE schema_version SET checksum = 'x' WHERE version = 1")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await check(conns[0])
        await conns[0].execute("UPDATE schema_version SET checksum = %s WHERE version = 1",
                               (available_migrations()[0].checksum,))
        await conns[0].execute("INSERT INTO schema_version (version, checksum) VALUES (999, 'y')")
        with pytest.raises(MigrationError, match="newer than this tornstore"):
            await migrate(conns[0])
    finally:
        for c in conns:
            await c.close()


# ------------------------------------------------------------------------------------------ same outcomes

def _capture(t: int, changed: bool = False) -> list[Response]:
    """Every fixture polled at `t`; with `changed`, a few tracked fields differ (and a planted paging key)."""
    lines = []
    for name, url in sorted(FIXTURE_URLS.items()):
        body = fixture_body(name)
        if changed and name == "v1/user_profile.json":
            body["level"] += 1
        if changed and name == "v2/faction_members.json":
            body["members"][0]["level"] += 1
            body["_metadata"] = {"links": {"next": f"https://api.torn.com/v2/faction/123456/members?key={PLANTED}"}}
        if changed and name == "v2/faction_basic.json":
            body["basic"]["respect"] += 5
        lines.append(json.dumps({"url": url, "observed_at": t, "body": body}))
    return list(read_capture(lines))


def _bad(t: int) -> list[Response]:
    good = _capture(t)[0]
    return [
        Response(url="https://api.torn.com/v2/user/100/profile", observed_at="soon", body={}),
        Response(url="https://api.torn.com/v2/user/100/profile", observed_at=t, body="<html>oops\x00</html>"),
        Response(url=f"https://api.torn.com/user/5?selections=profile&key={PLANTED}", observed_at=t,
                 body=f"<html>?key={PLANTED}</html>"),
        Response(url="https://api.torn.com/v2/user/100/profile", observed_at=NOW + 3600, body=good.body),
        Response(url="https://api.torn.com/v2/nowhere/5/thing", observed_at=t, body=[1, 2]),
        Response(url="https://api.torn.com/v2/user/bars", observed_at=t, key="k:0123abcd",
                 body=fixture_body("v1/user_bars_cooldowns_sanitized_capture.json")),
        Response(url="https://api.torn.com/v2/user/100/profile", observed_at=t, body={}, fault="line 7 is cut short"),
        Response(url="https://api.torn.com/v2/user/100/profile", observed_at=t,
                 body={"error": {"code": 5, "error": f"Too many requests key={PLANTED}"}}),
    ]


MY_KEY_FP = "k:0badf00d"
BARS = {"bars": {"energy": {"current": 100, "maximum": 150, "increment": 5, "interval": 600, "tick_time": 60,
                            "full_time": 600}}}
KEY_INFO = {"info": {"selections": {}, "access": {"level": 3, "type": "Limited", "faction": True},
                     "user": {"id": 2001, "faction_id": 39894, "company_id": None}}}


def _own_key(t: int, url: str, body: dict) -> Response:
    return Response(url=f"https://api.torn.com{url}", observed_at=t, body=body, key=MY_KEY_FP)


def _batches() -> list[list[Response]]:
    return [
        _capture(T),
        _capture(T + 60, changed=True),
        _capture(T + 120),                                     # back as it was: events again
        _capture(T + 30, changed=True) + _capture(T + 90),     # late: compared with the state in force then
        _capture(T + 200),                                     # confirms the head at T+200
        _capture(T + 180, changed=True),                       # seen before that confirmation: head re-appended
        _bad(T + 210),
        _capture(T + 200),                                     # the same capture twice: nothing
        _bad(T + 210),                                         # the same bad bodies: quarantined once
        [_own_key(T + 300, "/v2/user/bars", BARS)],            # whose bars? waits for its key's owner
        [_own_key(T + 310, "/v2/key/info", KEY_INFO)],         # the owner: the bars are routed at last
        [_own_key(T + 320, "/v2/user/bars", BARS)],            # now known: unchanged
    ]


def _text(value):
    return value.replace("\x00", "\\u0000") if isinstance(value, str) else value


def _sqlite_outcome(conn) -> dict:
    return {
        "events": conn.execute(
            "SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.hash, e.rules, e.observed_at, "
            "e.source_url, e.payload FROM events e JOIN streams s USING (stream_id) ORDER BY e.position").fetchall(),
        "streams": conn.execute(
            "SELECT entity_type, entity_id, view, version, hash, rules, head_observed_at, first_seen, last_changed, "
            "last_checked FROM streams ORDER BY entity_type, entity_id, view").fetchall(),
        "gaps": conn.execute(
            "SELECT observed_at, source_url, target, error_code, reason FROM gaps ORDER BY id").fetchall(),
        "quarantine": sorted(
            (tuple(_text(v) for v in row) for row in conn.execute(
                "SELECT observed_at, source_url, reason, body, body_hash, key_fp, needs_owner FROM quarantine")),
            key=repr),
        "key_owners": conn.execute("SELECT * FROM key_owners ORDER BY key_fp").fetchall(),
    }


async def _pg_outcome(conn) -> dict:
    async def rows(sql):
        return [tuple(r) for r in await (await conn.execute(sql)).fetchall()]
    return {
        "events": await rows(
            "SELECT e.position, s.entity_type, s.entity_id, s.view, e.version, e.hash, e.rules, e.observed_at, "
            "e.source_url, e.payload FROM events e JOIN streams s USING (stream_id) ORDER BY e.position"),
        "streams": await rows(
            "SELECT entity_type, entity_id, view, version, hash, rules, head_observed_at, first_seen, last_changed, "
            "last_checked FROM streams "
            "ORDER BY entity_type COLLATE \"C\", entity_id COLLATE \"C\", view COLLATE \"C\""),
        "gaps": await rows("SELECT observed_at, source_url, target, error_code, reason FROM gaps ORDER BY id"),
        "quarantine": sorted(await rows(
            "SELECT observed_at, source_url, reason, body, body_hash, key_fp, needs_owner FROM quarantine"), key=repr),
        "key_owners": await rows("SELECT * FROM key_owners ORDER BY key_fp"),
    }


def _report(report) -> tuple:
    return (report.as_dict(), report.first_position, report.last_position, report.errors, report.rejected,
            report.retried)


async def test_same_outcomes_as_the_sqlite_ingest(pg_url, conn):
    log = await PgEventLog.open(pg_url)
    try:
        for batch in _batches():
            expected = ingest_batch(conn, batch, now=NOW)
            got = await log.append(batch, now=NOW)
            assert _report(got) == _report(expected)
        async with await psycopg.AsyncConnection.connect(pg_url) as pg:
            outcome = await _pg_outcome(pg)
            everything = "\n".join(str(row) for rows in outcome.values() for row in rows)
        assert outcome == _sqlite_outcome(conn)
        # what the batches were meant to exercise did happen
        assert outcome["quarantine"] and outcome["gaps"] and outcome["key_owners"] == [
            (MY_KEY_FP, 2001, 39894, T + 310, "https://api.torn.com/v2/key/info")]
        assert ("user", "2001", "v2.bars") in {r[1:4] for r in outcome["events"]}   # routed once the owner was known
        assert any(r[-1] == 1 for r in outcome["quarantine"])                      # bars of a key nobody knows
        assert any(r[7] == T + 200 and r[4] > 2 for r in outcome["events"])           # a re-appended head
        assert any(r[7] == T + 30 for r in outcome["events"])                        # a late change
        assert any("\\u0000" in r[3] for r in outcome["quarantine"])                 # NUL kept as an escape
        assert PLANTED not in everything and "ABCDEFGHIJKLMNOP" not in everything    # keys never stored
        # the follower reads the log in position order, payloads as stored
        events = await log.read_after(0, limit=10_000)
        assert [e.position for e in events] == [r[0] for r in outcome["events"]]
        assert [json.dumps(e.payload, separators=(",", ":")) for e in events][:3] == \
            [json.dumps(json.loads(r[9]), separators=(",", ":")) for r in outcome["events"][:3]]
        assert await log.head_position() == len(events)
        assert [e.position for e in await log.read_after(events[-5].position)] == [e.position for e in events[-4:]]
    finally:
        await log.close()


# ------------------------------------------------------------------------------------------ concurrency

FACTIONS = [101, 102, 103, 104, 105, 106]
TIMES = [T + 60 * k for k in range(10)]
MEMBERS = 8


def _poll(faction: int, k: int) -> list[dict]:
    """The polls of one faction at TIMES[k] (members and basic), a pure function of (faction, k): two
    writers polling the same faction at the same time get the same bodies, as from the same Torn."""
    template = fixture_body("v2/faction_members.json")["members"][0]
    members = []
    for j in range(MEMBERS):
        member = copy.deepcopy(template)
        member.update(id=faction * 100 + j, name=f"P{faction}-{j}", level=10 + ((k + j + faction) // 3) % 4)
        member["status"]["state"] = "Hospital" if (k * (j + 1) + faction) % 5 == 0 else "Okay"
        member["last_action"]["timestamp"] = TIMES[k] - j  # noise: moves at every poll
        members.append(member)
    basic = fixture_body("v2/faction_basic.json")
    basic["basic"].update(id=faction, respect=1000 + faction + (k // 2) * 10)
    return [
        {"url": f"https://api.torn.com/v2/faction/{faction}/members?key={PLANTED}", "observed_at": TIMES[k],
         "body": {"members": members}},
        {"url": f"https://api.torn.com/v2/faction/{faction}/basic", "observed_at": TIMES[k], "body": basic},
    ]


def _writer_batches(w: int) -> list[list[dict]]:
    """Writer w polls three factions (each faction is polled by two writers), in its own order of time."""
    factions = [FACTIONS[(w + i) % len(FACTIONS)] for i in range(3)]
    times = list(range(len(TIMES)))
    if w == 1:
        times.reverse()
    elif w == 2:
        random.Random(w).shuffle(times)
    batches = [[line for f in factions for line in _poll(f, k)] for k in times]
    if w == 3:  # bigger batches, two times each
        batches = [batches[i] + batches[i + 1] for i in range(0, len(batches), 2)]
    return batches


WRITER = r"""
import asyncio, json, os, sys, time
import psycopg
from tornstore.eventstore.capture import read_capture
from tornstore.eventstore.postgres import PgEventLog

conninfo, batches_path, start_path, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
batches = [list(read_capture([json.dumps(line) for line in batch])) for batch in json.load(open(batches_path))]

async def main():
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    log = PgEventLog(conn)
    while not os.path.exists(start_path):   # all writers start together
        time.sleep(0.005)
    appended = 0
    for batch in batches:
        if hold:
            # Commit late on purpose: the positions are taken, then the transaction sleeps before COMMIT.
            async with conn.transaction():
                report = await log.append_in(conn, batch, now=NOW)
                await asyncio.sleep(hold)
        else:
            report = await log.append(batch, now=NOW)
        assert not report.rejected and not report.errors, report
        appended += report.appended
    await conn.close()
    print(json.dumps({"appended": appended}))

asyncio.run(main())
""".replace("NOW", str(NOW))


def _fold(rows) -> list[tuple[int, str]]:
    """A stream's changes in time: (observed_at, hash) in (observed_at, version) order, repeats dropped."""
    out: list[tuple[int, str]] = []
    for at, _, digest in sorted(rows):
        if not out or out[-1][1] != digest:
            out.append((at, digest))
    return out


async def test_four_writer_processes_and_a_follower(pg_url, conn, tmp_path):
    log = await PgEventLog.open(pg_url)   # migrated here, before the writers start
    start = tmp_path / "go"
    procs = []
    try:
        for w in range(4):
            path = tmp_path / f"writer{w}.json"
            path.write_text(json.dumps(_writer_batches(w)))
            hold = "0.15" if w == 0 else "0"
            argv = [sys.executable, "-c", WRITER, pg_url, str(path), str(start), hold]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,  # noqa: ASYNC220
                                          text=True))
        start.write_text("go")
        # The follower: reads after the last position it saw, while the writers run, then to the end.
        seen: list[int] = []
        mark = 0
        deadline = time.monotonic() + 300
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            events = await log.read_after(mark, limit=7)
            seen += [e.position for e in events]
            mark = events[-1].position if events else mark
            if not events:
                await asyncio.sleep(0.002)
        outputs = [p.communicate(timeout=60) for p in procs]
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
        while events := await log.read_after(mark, limit=7):
            seen += [e.position for e in events]
            mark = events[-1].position

        async with await psycopg.AsyncConnection.connect(pg_url) as pg:
            cur = await pg.execute("SELECT position FROM events ORDER BY position")
            positions = [r[0] for r in await cur.fetchall()]
            rows = await (await pg.execute(
                "SELECT s.entity_type, s.entity_id, s.view, s.version, s.hash, s.last_checked, "
                "e.version, e.observed_at, e.hash, e.source_url FROM streams s JOIN events e USING (stream_id)"
            )).fetchall()
        # Positions: gapless, and the follower saw each exactly once, in order, none skipped.
        assert positions == list(range(1, len(positions) + 1))
        assert seen == positions
        assert sum(json.loads(out)["appended"] for out, _ in outputs) == len(positions)
        assert all(PLANTED not in r[9] for r in rows)

        pg_streams: dict[tuple, dict] = {}
        for t, i, v, head_version, head_hash, last_checked, version, at, digest, _ in rows:
            s = pg_streams.setdefault((t, i, v), {"head": (head_version, head_hash, last_checked), "events": []})
            s["events"].append((at, version, digest))
        for key, s in pg_streams.items():
            versions = sorted(version for _, version, _ in s["events"])
            assert versions == list(range(1, s["head"][0] + 1)), key          # gapless and unique per stream
            points = [(at, digest) for at, _, digest in s["events"]]
            assert len(points) == len(set(points)), key                       # no change stored twice

        # Every distinct change present: the same changes, in time, as one writer storing all polls in order.
        for k in range(len(TIMES)):
            ingest_batch(conn, list(read_capture([json.dumps(line) for f in FACTIONS for line in _poll(f, k)])),
                         now=NOW)
        truth: dict[tuple, list] = {}
        for t, i, v, version, at, digest in conn.execute(
                "SELECT s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.hash "
                "FROM events e JOIN streams s USING (stream_id)"):
            truth.setdefault((t, i, v), []).append((at, version, digest))
        assert set(pg_streams) == set(truth)
        for key, events in truth.items():
            assert _fold(pg_streams[key]["events"]) == _fold(events), key
        heads = {(t, i, v): (h, c) for t, i, v, h, c in conn.execute(
            "SELECT entity_type, entity_id, view, hash, last_checked FROM streams")}
        assert {key: (s["head"][1], s["head"][2]) for key, s in pg_streams.items()} == heads
        assert len(truth) == len(FACTIONS) * (MEMBERS + 2)
        assert sum(len(_fold(e)) for e in truth.values()) > 3 * len(truth)  # the workload does change things
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        await log.close()


# ------------------------------------------------------------------------------------------ the locks, one by one

async def _until_waiting(pg_url: str, pid: int) -> None:
    """Return once session `pid` waits for a lock (a guard against a hang, not a timing assert)."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as watcher:
        for _ in range(6000):
            cur = await watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
            row = await cur.fetchone()
            if row is not None and row[0] == "Lock":
                return
            await asyncio.sleep(0.005)
    raise AssertionError(f"session {pid} never waited for a lock")


async def test_two_writers_with_the_same_change_store_it_once(pg_url):
    log = await PgEventLog.open(pg_url)
    a = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    b = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        batch = _capture(T)
        async with a.transaction():
            first = await PgEventLog(a).append_in(a, batch, now=NOW)  # streams created, not committed
            second = asyncio.create_task(PgEventLog(b).append(batch, now=NOW))
            await _until_waiting(pg_url, b.info.backend_pid)        # b queues on a's new stream rows
            assert not second.done()
        report = await second
        assert first.appended > 0 and report.appended == 0 and report.unchanged == first.appended
        changed = _capture(T + 60, changed=True)
        async with a.transaction():
            first = await PgEventLog(a).append_in(a, changed, now=NOW)  # existing streams, locked FOR UPDATE
            second = asyncio.create_task(PgEventLog(b).append(changed, now=NOW))
            await _until_waiting(pg_url, b.info.backend_pid)
        report = await second
        assert first.appended == 3 and report.appended == 0
        versions = await log.stream_versions()
        assert all([v for v, _ in history] == list(range(1, len(history) + 1)) for history in versions.values())
        assert sum(len(h) for h in versions.values()) == await log.head_position()
    finally:
        await a.close()
        await b.close()
        await log.close()


async def test_a_follower_never_skips_an_event_committed_late(pg_url):
    log = await PgEventLog.open(pg_url)
    a = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    b = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        async with a.transaction():
            early = await PgEventLog(a).append_in(a, _capture(T), now=NOW)   # takes positions 1..n, commits last
            other = [Response(url=line["url"], observed_at=line["observed_at"], body=line["body"])
                     for line in _poll(101, 0)]                                 # other streams: no row lock shared
            late = asyncio.create_task(PgEventLog(b).append(other, now=NOW))
            await _until_waiting(pg_url, b.info.backend_pid)                    # b waits for the position row
            assert await log.read_after(0) == []                                # nothing is committed yet
        report = await late
        assert early.first_position == 1 and report.first_position == early.last_position + 1
        seen = [e.position for e in await log.read_after(0, limit=10_000)]
        assert seen == list(range(1, report.last_position + 1))
    finally:
        await a.close()
        await b.close()
        await log.close()


async def test_the_problem_a_plain_sequence_has(pg_url):
    """Why positions are not a bigserial: a follower of one skips an event whose transaction commits late."""
    a = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    b = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        await a.execute("CREATE TABLE naive (position bigserial PRIMARY KEY, what text)")
        async with a.transaction():
            await a.execute("INSERT INTO naive (what) VALUES ('early')")   # takes 1
            await b.execute("INSERT INTO naive (what) VALUES ('late')")    # takes 2, commits first
            cur = await b.execute("SELECT position FROM naive WHERE position > 0 ORDER BY position")
            seen = [r[0] for r in await cur.fetchall()]
        mark = seen[-1]
        cur = await b.execute("SELECT position FROM naive WHERE position > %s ORDER BY position", (mark,))
        seen += [r[0] for r in await cur.fetchall()]
        assert seen == [2]   # 1 committed after the follower passed it: skipped for good
    finally:
        await a.close()
        await b.close()


async def test_retry_waiting_routes_what_waited_for_an_owner_known_since(pg_url, conn):
    from tornstore.eventstore.ingest import retry_waiting

    log = await PgEventLog.open(pg_url)
    try:
        batch = [_own_key(T, "/v2/user/bars", BARS)]
        assert _report(await log.append(batch, now=NOW)) == _report(ingest_batch(conn, batch, now=NOW))
        owner = (MY_KEY_FP, 2001, 39894, T + 5, "set by hand")
        conn.execute("INSERT INTO key_owners VALUES (?, ?, ?, ?, ?)", owner)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
            await pg.execute("INSERT INTO key_owners VALUES (%s, %s, %s, %s, %s)", owner)
            got = await log.retry_waiting()
            assert _report(got) == _report(retry_waiting(conn)) and got.retried == 1 and got.appended == 1
            assert await _pg_outcome(pg) == _sqlite_outcome(conn)
    finally:
        await log.close()


# ------------------------------------------------------------------------------------------ the change feed (follow)

FEED_WRITER = r"""
import asyncio, json, os, sys, time
from tornstore.eventstore.capture import read_capture
from tornstore.eventstore.postgres import PgEventLog

conninfo, batches_path, start_path, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
batches = [list(read_capture([json.dumps(line) for line in batch])) for batch in json.load(open(batches_path))]

async def main():
    log = await PgEventLog.open(conninfo)
    while not os.path.exists(start_path):
        await asyncio.sleep(0.005)
    commits = []
    for batch in batches:
        report = await log.append(batch, now=NOW)
        committed = time.time()   # append returns after COMMIT
        assert not report.rejected, report
        if report.appended:
            commits.append([report.first_position, report.last_position, committed])
        await asyncio.sleep(pause)
    await log.close()
    print(json.dumps(commits))

asyncio.run(main())
""".replace("NOW", str(NOW))


def _lines(batch: list[Response]) -> list[dict]:
    return [{"url": r.url, "observed_at": r.observed_at, "body": r.body} for r in batch]


async def _follow_into(log: PgEventLog, got: list, after: int = 0, **kwargs) -> None:
    """Consume log.follow into `got` as (event, wall-clock time received) until cancelled or idle."""
    async with contextlib.aclosing(log.follow(after, **kwargs)) as events:
        async for event in events:
            got.append((event, time.time()))


async def _until(predicate, seconds: float = 30.0) -> None:
    """Return once predicate() holds (a guard against a hang, not a timing assert)."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting")
        await asyncio.sleep(0.005)


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_follower_gets_the_backlog_then_each_commit_of_another_process_within_a_second(pg_url, tmp_path):
    """Issue 18's done-when: a follower elsewhere has each event within a second of the writer's COMMIT. The
    periodic re-read is set to 30 s here, so only the notification can be that quick. A bound, not a benchmark."""
    log = await PgEventLog.open(pg_url)
    backlog = await log.append(_capture(T), now=NOW)
    got: list = []
    follower = asyncio.create_task(_follow_into(log, got, batch=7, poll_interval=30))
    start = tmp_path / "go"
    path = tmp_path / "batches.json"
    path.write_text(json.dumps([_lines(_capture(T + 60 * k, changed=k % 2 == 1)) for k in range(1, 7)]))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FEED_WRITER, pg_url, str(path), str(start),
                                                "0.2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        await _until(lambda: len(got) >= backlog.appended)   # the backlog first, in batches of 7
        assert [e.position for e, _ in got] == list(range(1, backlog.last_position + 1))
        start.write_text("go")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        commits = json.loads(out)
        assert len(commits) == 6 and all(last - first == 2 for first, last, _ in commits)
        last = commits[-1][1]
        await _until(lambda: bool(got) and got[-1][0].position >= last)
        # Each once, in order, none skipped; and each within a second of its commit.
        assert [e.position for e, _ in got] == list(range(1, last + 1))
        assert got[-1][0].position == await log.head_position()
        received = {e.position: at for e, at in got}
        delays = [received[p] - committed for first, last_p, committed in commits for p in range(first, last_p + 1)]
        assert max(delays) < 1.0, delays
        assert [e for e, _ in got] == await log.read_after(0, limit=10_000)   # the same events read_after gives
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await _stop(follower)
        await log.close()


async def test_a_follower_sees_every_position_once_while_writer_processes_race(pg_url, tmp_path):
    log = await PgEventLog.open(pg_url)
    start = tmp_path / "go"
    procs = []
    got: list = []
    follower = asyncio.create_task(_follow_into(log, got, batch=5))
    try:
        for w in range(3):
            path = tmp_path / f"writer{w}.json"
            path.write_text(json.dumps(_writer_batches(w)))
            hold = "0.1" if w == 0 else "0"   # writer 0 commits late on purpose
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-c", WRITER, pg_url, str(path), str(start), hold,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        start.write_text("go")
        outputs = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
        for p, (_, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err.decode()
        head = await log.head_position()
        assert head == sum(json.loads(out)["appended"] for out, _ in outputs) > 0
        await _until(lambda: bool(got) and got[-1][0].position >= head)
        assert [e.position for e, _ in got] == list(range(1, head + 1))
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await _stop(follower)
        await log.close()


async def _sessions(pg_url: str, like: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as pg:
        cur = await pg.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND pid <> pg_backend_pid() AND query LIKE %s", (like,))
        return [pid for (pid,) in await cur.fetchall()]


async def test_notify_on_commit_only_a_broken_follower_reconnects_and_idle_ends_it(pg_url):
    log = await PgEventLog.open(pg_url)
    listener = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        await listener.execute("LISTEN tornstore_events")
        first = await log.append(_capture(T), now=NOW)
        payloads = [n.payload async for n in listener.notifies(timeout=5, stop_after=1)]
        assert payloads == [str(first.last_position)]                      # the new last position
        assert (await log.append(_capture(T + 30), now=NOW)).appended == 0
        assert [n async for n in listener.notifies(timeout=0.3)] == []     # heartbeats only: no wake-up

        got: list = []
        one = PgEventLog(listener)   # over one connection: follow opens its own from that one's parameters
        follower = asyncio.create_task(_follow_into(one, got, idle_timeout=2.0, poll_interval=0.5))
        await _until(lambda: len(got) >= first.appended)
        reading = "SELECT e.position%"
        [pid] = await _sessions(pg_url, reading)                          # the follower's own connection
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        more = await log.append(_capture(T + 60, changed=True), now=NOW)    # while it has no connection
        assert more.appended == 3
        await _until(lambda: len(got) >= more.last_position)
        assert (await _sessions(pg_url, reading)) not in ([], [pid])          # a new connection read them
        await asyncio.wait_for(follower, 30)                                # ends: 2 s without an event
        assert [e.position for e, _ in got] == list(range(1, more.last_position + 1))
        for _ in range(200):                                                # its connection is closed
            if not await _sessions(pg_url, reading):
                break
            await asyncio.sleep(0.01)
        assert await _sessions(pg_url, reading) == []
    finally:
        await listener.close()
        await log.close()

"""Alerts across processes (issue 18, item 4): `Store.watch_changes` wakes a bot's change feed when another
process commits, so a join, a leave or a war start is posted seconds after the collector stored it.

On both backends (conftest's `db_path`): the watcher is a Store in this process; the writer is another OS
process ingesting capture files through `ingest_files` (what `tornstore ingest` runs), which prints the time
each transaction returned from COMMIT. Nothing of ours is mocked. The bound on time: on PostgreSQL an alert
within 1 s of its commit; the periodic re-read is 5 s there by default, so only NOTIFY can be that quick. On
SQLite the watcher polls the file every second (watch_changes' default there), so the bound is that interval
plus 0.5 s for the read and the scheduling of two processes on a busy machine.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

from tornstore.projections.store import Store, ingest_files

from .conftest import is_postgres_target

WRITER = r"""
import json, sys, time
from tornstore.projections.store import ingest_files

target, pause, files = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
for name in files:
    time.sleep(pause)
    ingest_files(target, [name], on_commit=lambda report: print(   # called once COMMIT has returned
        json.dumps([report.first_position, report.last_position, time.time()]), flush=True))
"""

FACTION = 9420
MEMBERS = f"https://api.torn.com/v2/faction/{FACTION}/members"


def _members(ids: list[int]) -> dict:
    return {"members": [{"id": i, "name": f"P{i}", "level": 10} for i in ids]}


def _capture(path: Path, lines: list[tuple[str, int, dict]]) -> str:
    path.write_text("".join(json.dumps({"url": url, "observed_at": at, "body": body}) + "\n"
                            for url, at, body in lines))
    return str(path)


def _world(db_path, tmp_path: Path, t0: int) -> None:
    """Faction Alpha with members 1 and 2, no war; Beta, its future enemy."""
    ingest_files(str(db_path), [_capture(tmp_path / "baseline.ndjson", [
        (f"https://api.torn.com/v2/faction/{FACTION}/basic", t0, {"basic": {"id": FACTION, "name": "Alpha"}}),
        ("https://api.torn.com/v2/faction/100/basic", t0, {"basic": {"id": 100, "name": "Beta"}}),
        (MEMBERS, t0, _members([1, 2])),
        (f"https://api.torn.com/v2/faction/{FACTION}/wars", t0,
         {"pacts": [], "wars": {"ranked": None, "raids": [], "territory": []}}),
        ("https://api.torn.com/v2/user/1/profile", t0, {"profile": {"id": 1, "name": "P1", "level": 10}}),
    ])])


def _key(change) -> tuple:
    return (change.kind, change.entity, change.before, change.after, change.text)


async def test_an_alert_reaches_a_watcher_within_a_second_of_another_process_committing(db_path, tmp_path):
    t0 = int(time.time()) - 3600
    _world(db_path, tmp_path, t0)
    commits = [  # one transaction each, in this order; the first stores an event that is no alert
        [("https://api.torn.com/v2/user/1/profile", t0 + 60,
          {"profile": {"id": 1, "name": "P1", "level": 10, "rank": "Hero"}})],
        [(MEMBERS, t0 + 120, _members([1, 2, 3]))],
        [(MEMBERS, t0 + 180, _members([1, 3]))],
        [(f"https://api.torn.com/v2/faction/{FACTION}/wars", t0 + 240, {"pacts": [], "wars": {
            "ranked": {"war_id": 77, "start": t0 + 200, "end": 0, "target": 5000, "winner": None,
                       "factions": [{"id": FACTION, "name": "Alpha", "score": 0, "chain": 0},
                                    {"id": 100, "name": "Beta", "score": 0, "chain": 0}]},
            "raids": [], "territory": []}})],
    ]
    files = [_capture(tmp_path / f"commit-{k}.ndjson", lines) for k, lines in enumerate(commits)]
    expected = [("member_joined", "faction:9420", None, 3, "P3 [3] joined Alpha [9420]"),
                ("member_left", "faction:9420", 2, None, "P2 [2] left Alpha [9420]"),
                ("war_started", "rankedwar:77", None, "ongoing", "Ranked war 77 started: Beta [100] vs Alpha [9420]")]
    bound = 1.0 if is_postgres_target(db_path) else 1.0 + 0.5

    got: list[tuple] = []           # (change, when this process had it)
    pages: list[tuple[int, int]] = []
    all_in = asyncio.Event()

    async def watch(store: Store) -> None:
        async with contextlib.aclosing(store.watch_changes()) as feeds:   # from now on: not the baseline
            async for feed in feeds:
                now = time.time()
                got.extend((change, now) for change in feed.changes)
                pages.append((feed.changes[0].position, feed.next_position))
                if len(got) >= len(expected):
                    all_in.set()

    async with Store.open(db_path) as store:
        watcher = asyncio.create_task(watch(store))
        await asyncio.sleep(0.3)    # let it reach its wait (it starts at the head: the baseline is no news)
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(db_path), "0.6", *files,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(writer.communicate(), 120)
        assert writer.returncode == 0, err.decode()
        committed = [json.loads(line) for line in out.decode().splitlines()]
        assert len(committed) == len(commits)
        with contextlib.suppress(TimeoutError):     # the asserts below say what is missing
            await asyncio.wait_for(all_in.wait(), 30)
        await asyncio.sleep(bound + 1.0)    # longer than a poll: anything reported twice would come now
        assert not watcher.done(), watcher.exception()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    # Each alert once, none missed, in order; each from the commit that stored it (none from the quiet one).
    assert [_key(change) for change, _ in got] == expected
    origin = [next(k for k, (first, last, _) in enumerate(committed) if first <= change.position <= last)
              for change, _ in got]
    assert origin == [1, 2, 3]
    assert all(later[0] > earlier[1] for earlier, later in zip(pages, pages[1:], strict=False))  # feeds move on
    delays = [received - committed[k][2] for k, (_, received) in zip(origin, got, strict=True)]
    print(f"alert delays after COMMIT, s: {[round(d, 3) for d in delays]}")
    assert all(0 <= d < bound for d in delays), delays


async def test_pages_come_whole_in_order_and_resume_where_they_ended(db_path, tmp_path):
    """More than one page pending (limit 1, a scan window of 2 events), a commit while pages are still waiting,
    a resumed watch and one from now on: every change exactly once, in changes_since's order."""
    t0 = int(time.time()) - 3600
    _world(db_path, tmp_path, t0)
    lists = [[1, 2, 3, 4], [1, 3], [1, 3, 5], [3, 5, 6, 7], [3]]   # two moves in most events
    async with Store.open(db_path) as store:
        for k, ids in enumerate(lists[:4], start=1):
            await store.ingest(MEMBERS, _members(ids), observed_at=t0 + 60 * k)
        truth = (await store.changes_since(0, limit=1000)).changes
        assert len(truth) == 8 and len({c.position for c in truth}) == 4

        feeds = []
        async with contextlib.aclosing(store.watch_changes(0, limit=1, scan=2, idle_timeout=0.5)) as watching:
            async for feed in watching:
                feeds.append(feed)
                if len(feeds) == 1:     # committed while three pages still wait to be read
                    await store.ingest(MEMBERS, _members(lists[4]), observed_at=t0 + 60 * 5)
        everything = (await store.changes_since(0, limit=1000)).changes
        assert len(everything) == len(truth) + 3
        assert [_key(c) for feed in feeds for c in feed.changes] == [_key(c) for c in everything]
        # limit 1, yet one event's changes are never split: a page per event, each starting after the last.
        assert [{c.position for c in feed.changes} for feed in feeds] == [{p} for p in sorted({c.position for c in
                                                                                                everything})]
        assert all(later.changes[0].position > earlier.next_position
                   for earlier, later in zip(feeds, feeds[1:], strict=False))

        resumed = []
        async with contextlib.aclosing(store.watch_changes(feeds[1].next_position, idle_timeout=0.3)) as watching:
            async for feed in watching:
                resumed += feed.changes
        assert [_key(c) for c in resumed] == [_key(c) for feed in feeds[2:] for c in feed.changes]

        async with contextlib.aclosing(store.watch_changes(idle_timeout=0.3)) as watching:
            assert [feed async for feed in watching] == []      # from now on: the backlog is no news

"""A backup taken while a writer commits is a whole, consistent database: restored elsewhere it passes
`tornstore verify` (integrity, stored hashes, replay equals the projected tables), answers `status`, and
ingesting the same capture into it again ends where the uninterrupted writer ended.

Rotation of the dated backups beside the database keeps exactly the newest `keep`, whether there are fewer,
as many or more of them, and touches no other file."""
from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tornstore.eventstore.backup import (backup_database, dated_backup_path, forget_backups, list_backups,
                                         rotate_backups)
from tornstore.eventstore.collector import Collector, parse_config
from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.simulator import World, start_simulator
from tornstore.projections.store import Store

from .crashkit import cli, invariants, log_rows, projected_rows, start_cli, wait_for, write_capture
from .loadkit import DrivenClock


def _events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def _restore_and_check(backup: Path, where: Path) -> dict:
    """Restore = copy the backup file to a new place; it must verify OK and answer status."""
    restored = where / "restored.db"
    shutil.copy(backup, restored)
    assert not Path(f"{restored}-wal").exists()
    facts = invariants(restored)           # checkpoints at the end of the log, versions gapless
    verify = cli(restored, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "Traceback" not in verify.stderr
    verdict = [line for line in verify.stdout.splitlines() if line.startswith("verdict")]
    assert verdict and verdict[0].split()[-1] == "OK", verify.stdout
    status = cli(restored, "status")
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert f"{facts['events']:,}" in status.stdout
    info = json.loads(cli(restored, "status", "--json").stdout)
    assert info["rows"]["events"] == facts["events"]
    assert set(info["projection_lag"].values()) <= {0}
    return {"path": restored, **facts}


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("backup") / "capture.ndjson"
    write_capture(path, seed=6, days=2.5)
    return path


def test_backup_taken_while_ingest_writes_restores_and_verifies(tmp_path, capture):
    db = tmp_path / "live.db"
    assert cli(db, "init").returncode == 0
    writer = start_cli(db, "ingest", str(capture), "--batch", "20")
    backups = []
    try:
        for i in range(2):
            # Wait until the writer has committed more since the last backup, then copy while it runs.
            floor = max([b[1] for b in backups], default=0)
            assert wait_for(lambda floor=floor: _events(db) > floor + 50, timeout=60), "the writer committed nothing"
            assert writer.poll() is None, "the writer finished before the backup: make the capture longer"
            target = tmp_path / f"backup-{i}.db"
            done = cli(db, "backup", "-o", str(target))
            assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
            backups.append((target, _events(target)))
        out, err = writer.communicate(timeout=180)
        assert writer.returncode == 0, err
    finally:
        if writer.poll() is None:
            writer.kill()
    final = _events(db)
    assert 0 < backups[0][1] < backups[1][1] < final, (backups, final)

    for i, (backup, count) in enumerate(backups):
        where = tmp_path / f"restore-{i}"
        where.mkdir()
        restored = _restore_and_check(backup, where)
        assert restored["events"] == count
    # A restored backup takes the rest of the capture and ends where the live database ended.
    again = cli(restored["path"], "ingest", str(capture), "--batch", "200")
    assert again.returncode == 0, again.stderr
    assert log_rows(restored["path"]) == log_rows(db)
    assert projected_rows(restored["path"]) == projected_rows(db)


# ------------------------------------------------------------------------------------------ the collector
KEYS = {"TB_K1": "BaCkUpRestore001", "TB_K2": "BaCkUpRestore002"}


async def _collect_and_back_up(tmp_path: Path, seconds: float, backups: int) -> tuple[Path, list[tuple[Path, int]]]:
    db = tmp_path / "collected.db"
    world = World(seed=13, factions=3, members_per_faction=(5, 8), territories=150)
    factions = list(world.factions.values())
    own = {KEYS["TB_K1"]: factions[0].members[0], KEYS["TB_K2"]: factions[1].members[0]}
    handle = await start_simulator(world, keys=list(own), own_ids=own, rate_clock="sim")
    cfg = parse_config({
        "api_base": handle.url, "interval": "1m", "jitter": 0, "batch": 40,
        "keys": [{"key": "env:TB_K1", "owner": str(own[KEYS["TB_K1"]]), "access": "limited"},
                 {"key": "env:TB_K2", "owner": str(own[KEYS["TB_K2"]]), "access": "public"}],
        "factions": [{"id": f.id, "fetch": ["basic", "members", "wars"], "members": True,
                      "member_interval": "5m"} for f in factions],
        "territories": [{"all": True, "api": "v1"}],
        "wars": {"ranked": True, "territory": True},
    }, env=KEYS)
    store = await Store.open(db, create=True)
    taken: list[tuple[Path, int]] = []
    try:
        clock = DrivenClock(handle)
        collector = Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep)

        async def committed_past(count: int) -> None:
            """Wait (without blocking the collector) until it has committed events beyond `count`."""
            for _ in range(1200):
                if _events(db) > count:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"the collector committed nothing past {count} events in 60 s")

        async def back_up_while_running() -> None:
            for i in range(backups):
                await asyncio.sleep(seconds / (backups + 1))
                await committed_past(taken[-1][1] if taken else 0)   # a backup of something new
                target = tmp_path / f"collector-backup-{i}.db"
                done = await asyncio.to_thread(cli, db, "backup", "-o", str(target))
                assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
                taken.append((target, _events(target)))
            await committed_past(taken[-1][1])   # and the collector wrote on after the last one
            collector.stop()

        async with collector:
            run = asyncio.create_task(collector.run_forever())
            await back_up_while_running()
            report = await asyncio.wait_for(run, timeout=120)
        assert report.polls_failed == 0 and report.appended > 0
    finally:
        await store.close()
        await handle.close()
    return db, taken


@pytest.mark.parametrize("seconds, backups", [
    pytest.param(4, 2, id="4s"),
    pytest.param(20, 6, id="20s", marks=pytest.mark.slow),
])
async def test_backup_taken_while_the_collector_writes_restores_and_verifies(tmp_path, seconds, backups):
    db, taken = await _collect_and_back_up(tmp_path, seconds, backups)
    final = _events(db)
    counts = [count for _, count in taken]
    assert counts == sorted(counts) and counts[0] > 0 and counts[-1] < final, (counts, final)
    for i, (backup, count) in enumerate(taken):
        where = tmp_path / f"restore-{i}"
        where.mkdir()
        assert _restore_and_check(backup, where)["events"] == count


# ------------------------------------------------------------------------------------------ rotation
DAY = 86400
FEB_2027 = 1_801_440_000  # 2027-02-01T00:00:00Z
JAN_2020 = 1_577_836_800  # 2020-01-01T00:00:00Z: older than any backup the CLI makes today


def _migrated(db: Path) -> sqlite3.Connection:
    conn = connect_sync(db)
    migrate(conn)
    return conn


def _dated_backups(conn: sqlite3.Connection, db: Path, count: int, start: int = FEB_2027) -> list[str]:
    """`count` real backups, one a day from `start`, named as the module names them; oldest first."""
    made = []
    for day in range(count):
        when = start + day * DAY
        made.append(backup_database(conn, dated_backup_path(db, when), created_at=when, reason="test").path)
    return made


def _recorded(conn: sqlite3.Connection) -> list[str]:
    return [path for (path,) in conn.execute("SELECT path FROM backups ORDER BY created_at")]


@pytest.mark.parametrize("keep, count, kept", [
    (0, 0, 0), (0, 2, 0),                   # keep=0: every dated backup goes
    (1, 0, 0), (1, 1, 1), (1, 4, 1),        # none, equal, more
    (3, 1, 1), (3, 2, 2), (3, 3, 3), (3, 5, 3),   # fewer (the old negative slice), equal, more
])
def test_rotation_keeps_exactly_the_newest(tmp_path, keep, count, kept):
    db = tmp_path / "torn.db"
    conn = _migrated(db)
    try:
        made = _dated_backups(conn, db, count)
        removed = rotate_backups(db, keep)
        forget_backups(conn, removed)
        survivors = made[count - kept:]
        assert removed == made[:count - kept]                 # the oldest ones, oldest first
        assert [str(p) for p in list_backups(db)] == survivors
        assert not any(Path(p).exists() for p in removed)
        assert _recorded(conn) == survivors                   # the `backups` rows follow the files
        assert rotate_backups(db, keep) == []                 # a second rotation has nothing left to do
    finally:
        close_sync(conn)


def test_backup_then_rotate_five_times_leaves_the_newest_three(tmp_path):
    db = tmp_path / "torn.db"
    conn = _migrated(db)
    made = []
    try:
        for day in range(5):
            when = FEB_2027 + day * DAY
            made.append(backup_database(conn, dated_backup_path(db, when), created_at=when).path)
            forget_backups(conn, rotate_backups(db, 3))
            assert [str(p) for p in list_backups(db)] == made[-3:], f"after backup {day + 1}"
    finally:
        close_sync(conn)
    assert [p.name for p in list_backups(db)] == ["torn.db.backup-20270203T000000Z",
                                                   "torn.db.backup-20270204T000000Z",
                                                   "torn.db.backup-20270205T000000Z"]


def test_rotation_touches_only_this_databases_dated_backups(tmp_path):
    db = tmp_path / "torn.db"
    conn = _migrated(db)
    try:
        _dated_backups(conn, db, 2)
        others = [tmp_path / "torn.db.backup-20270201T000000Z.partial",   # a backup that died half-way
                  tmp_path / "torn.db.backup-before-upgrade",             # named by hand
                  tmp_path / "other.db.backup-20200101T000000Z"]          # another database's
        for path in others:
            path.write_bytes(b"not ours to delete")
        assert len(rotate_backups(db, 0)) == 2
    finally:
        close_sync(conn)
    assert list_backups(db) == [] and all(path.exists() for path in others) and db.exists()
    with pytest.raises(ValueError, match="0 or more"):
        rotate_backups(db, -1)


def test_backup_command_keeps_the_newest_it_is_told_to(tmp_path):
    from tornstore.cli.main import cli as tornstore

    db = tmp_path / "torn.db"
    conn = _migrated(db)
    try:
        old = _dated_backups(conn, db, 1, start=JAN_2020)
    finally:
        close_sync(conn)
    # One old backup and a new one, keep 3: both stay (the negative slice used to delete the old one).
    first = CliRunner().invoke(tornstore, ["--db", str(db), "backup", "--keep", "3", "--json"])
    assert first.exit_code == 0, first.output
    written = json.loads(first.stdout)
    assert written["removed"] == []
    assert [str(p) for p in list_backups(db)] == [*old, written["path"]]

    conn = _migrated(db)
    try:
        older = _dated_backups(conn, db, 2, start=JAN_2020 + DAY)   # now three dated backups, then one more
    finally:
        close_sync(conn)
    # The CLI's timestamp has one-second resolution: wait so the second backup gets its own name.
    while dated_backup_path(db, int(time.time())) == Path(written["path"]):
        time.sleep(0.1)
    second = CliRunner().invoke(tornstore, ["--db", str(db), "backup", "--keep", "3"])
    assert second.exit_code == 0, second.output
    newest = list_backups(db)[-1]
    assert [str(p) for p in list_backups(db)] == [*older[1:], written["path"], str(newest)]
    assert f"removed old backup: {old[0]}" in second.output and f"removed old backup: {older[0]}" in second.output
    conn = sqlite3.connect(db)
    try:
        assert _recorded(conn) == [str(p) for p in list_backups(db)]
    finally:
        conn.close()

"""A backup taken while a writer commits is a whole, consistent database: restored elsewhere it passes
`tornstore verify` (integrity, stored hashes, replay equals the projected tables), answers `status`, and
ingesting the same capture into it again ends where the uninterrupted writer ended."""
from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tornstore.eventstore.collector import Collector, parse_config
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
            assert wait_for(lambda: _events(db) > floor + 50, timeout=60), "the writer committed nothing"
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
    assert counts == sorted(counts) and 0 < counts[0] and counts[-1] < final, (counts, final)
    for i, (backup, count) in enumerate(taken):
        where = tmp_path / f"restore-{i}"
        where.mkdir()
        assert _restore_and_check(backup, where)["events"] == count

"""kill -9 at random points of an ingest and a replay: the database stays whole, what was acknowledged
is there, nothing is half-applied, and running the same work again ends where an uninterrupted run ends.
(The compactor's kills are in test_compactor.py.)"""
from __future__ import annotations

import random
import shutil
import time

import pytest

from .crashkit import cli, invariants, kill_after, log_rows, projected_rows, start_cli, write_capture

KILLS = 20


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "capture.ndjson"
    write_capture(path, days=1.5)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, capture):
    db = tmp_path_factory.mktemp("ref") / "ref.db"
    started = time.monotonic()
    done = cli(db, "ingest", "--init", str(capture), "--batch", "40")
    assert done.returncode == 0, done.stderr
    return db, time.monotonic() - started


def test_kill_during_ingest(tmp_path, capture, reference):
    ref_db, duration = reference
    db = tmp_path / "crash.db"
    rng = random.Random(20261126)
    acknowledged = 0
    for _ in range(KILLS):
        proc = start_cli(db, "ingest", "--init", str(capture), "--batch", "40", "--ack")
        out, _ = kill_after(proc, rng.uniform(0.3, max(0.6, duration)))
        acks = [line.split() for line in out.splitlines() if line.startswith("ack ")]
        if acks:
            acknowledged = max(acknowledged, int(acks[-1][2]))
        facts = invariants(db)
        # Every acknowledged batch is there (positions are never reused, so the top only grows).
        assert facts["top"] >= acknowledged
    finished = cli(db, "ingest", "--init", str(capture), "--batch", "40")
    assert finished.returncode == 0, finished.stderr
    invariants(db)
    assert log_rows(db) == log_rows(ref_db)
    assert projected_rows(db) == projected_rows(ref_db)


def test_kill_during_replay(tmp_path, reference):
    ref_db, _ = reference
    db = tmp_path / "replay.db"
    shutil.copy(ref_db, db)
    started = time.monotonic()
    assert cli(db, "replay", "--batch", "300").returncode == 0
    duration = time.monotonic() - started
    expected = projected_rows(db)
    assert expected == projected_rows(ref_db)  # replay equals inline projection
    rng = random.Random(7)
    for _ in range(KILLS):
        proc = start_cli(db, "replay", "--batch", "300")
        kill_after(proc, rng.uniform(0.3, max(0.5, duration)))
        conn_facts = _replay_invariants(db)
        assert conn_facts
    assert cli(db, "replay", "--batch", "300").returncode == 0
    assert projected_rows(db) == expected


def _replay_invariants(db) -> bool:
    """After a killed replay: the file is whole and no checkpoint is ahead of the log."""
    import sqlite3
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        from tornstore.projections.runner import handlers
        top = conn.execute("SELECT MAX(position) FROM events").fetchone()[0]
        checkpoints = dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))
        for handler in handlers():
            done = checkpoints.get(handler.name, 0)
            assert done <= top, handler.name
            # no row ahead of its checkpoint: rows and checkpoint were committed together
            for table in handler.history_tables:
                ahead = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE event_position > ?", (done,)).fetchone()[0]
                assert ahead == 0, (table, done)
        return True
    finally:
        conn.close()

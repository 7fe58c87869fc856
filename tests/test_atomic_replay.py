"""Atomic replay (invariant 3: readers never see a replay half done), with a writer ingesting meanwhile.

`replay` rebuilds beside the live tables and swaps the result in with one write transaction, so every
read transaction sees the tables before or after it: never events without their checkpoint, an emptied
history table or players reset to last_updated 0 (what a reader saw while the old replay deleted and
rebuilt in place). A writer keeps ingesting through every replay; what it writes is neither lost nor
projected twice: the end state is the state of a store that ingested the same and never replayed.

Real processes: reader processes from loadkit (plain SQL, `status`, the Store library), a watcher thread
with stricter checks, a writer process ingesting through the library, and `tornstore replay`; on a SQLite
file and on a PostgreSQL database (where loadkit's plain-sqlite3 reader has nothing to open).
"""
# ruff: noqa: F811 (test functions take the fixtures imported from test_compactor by name)
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tornstore.eventstore.db import close_sync, connect_sync, is_url
from tornstore.projections import runner

from .crashkit import ROOT, cli, invariants, wait_for, write_capture
from .loadkit import assert_reader_clean, capture_span, split_capture, start_reader
from .test_compactor import backend, module_stores, stores  # noqa: F401 (fixtures)
from .test_replay_after_prune import every_table

DAY = 86400
READERS = ("sql", "status", "store")


@pytest.fixture(scope="module")
def parts(module_stores, tmp_path_factory) -> dict:
    """Three days of polls of a small world: the first two ingested (`base`), the third for the writer;
    `reference` ingested all three and never replayed."""
    base = tmp_path_factory.mktemp("atomic")
    whole = base / "whole.ndjson"
    write_capture(whole, seed=21, days=3, factions=2, territories=150)
    cut = capture_span(whole)[0] + 2 * DAY
    first, second = base / "first.ndjson", base / "second.ndjson"
    split_capture(whole, first, second, cut, cut)
    db = module_stores.new(base / "base.db")
    done = cli(db, "ingest", "--init", str(first))
    assert done.returncode == 0, done.stderr
    reference = module_stores.copy(db, base / "reference.db")
    done = cli(reference, "ingest", str(second), "--batch", "20")
    assert done.returncode == 0, done.stderr
    return {"db": db, "reference": reference, "second": second}


class Watcher(threading.Thread):
    """Reads in one transaction at a time and keeps what it saw: a read that shows less than an earlier
    one (a checkpoint behind the log, a history row gone, a player's last_updated moving back) is a
    finding."""

    def __init__(self, db: Path | str):
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.reads = 0
        self.findings: list[str] = []
        self.tops: set[int] = set()

    def run(self) -> None:
        conn = connect_sync(self.db)   # autocommit, a 30 s busy timeout; on PostgreSQL a BEGIN is one snapshot
        seen_rows: set[tuple] = set()
        last_updated: dict[int, int] = {}
        names = [h.name for h in runner.handlers()]
        try:
            while not self.stop.is_set():
                conn.execute("BEGIN")
                try:
                    top = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
                    checkpoints = dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))
                    rows = set(conn.execute("SELECT player_id, timestamp, level, total_stats, event_position "
                                            "FROM player_stats_history"))
                    players = conn.execute("SELECT player_id, last_updated FROM players").fetchall()
                finally:
                    conn.execute("COMMIT")
                self.reads += 1
                self.tops.add(top)
                if any(checkpoints.get(n) != top for n in names):
                    self.findings.append(f"log ends at {top}, checkpoints {checkpoints}")
                if not seen_rows <= rows:
                    self.findings.append(f"{len(seen_rows - rows)} player_stats_history rows gone (of {len(rows)})")
                seen_rows |= rows
                for player_id, updated in players:
                    if updated < last_updated.get(player_id, 0):
                        self.findings.append(f"player {player_id} last_updated {last_updated[player_id]} -> {updated}")
                    last_updated[player_id] = max(updated, last_updated.get(player_id, 0))
                time.sleep(0.002)
        finally:
            close_sync(conn)


# The writer: ingest through the library in a process of its own, 10 responses a transaction, paced like a
# collector (a short pause after each commit) so that it keeps writing through several replays.
_WRITER = ("import sys, time; from tornstore.projections.store import ingest_files; "
           "ingest_files(sys.argv[1], [sys.argv[2]], batch=10, on_commit=lambda report: time.sleep(0.02))")


def _top(db: Path | str) -> int:
    conn = connect_sync(db)
    try:
        return conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    finally:
        close_sync(conn)


def test_readers_see_the_old_tables_or_the_new_while_replays_run_beside_a_writer(parts, tmp_path, stores):
    db = stores.copy(parts["db"], tmp_path / "torn.db")
    stop = tmp_path / "stop"
    kinds = [kind for kind in READERS if not (kind == "sql" and is_url(db))]   # "sql": sqlite3 on the file
    outs = [tmp_path / f"reader-{kind}.json" for kind in kinds]
    readers = [start_reader(db, stop, kind, out) for kind, out in zip(kinds, outs, strict=True)]
    watcher = Watcher(db)
    writer = None
    try:
        assert wait_for(lambda: all(Path(str(o) + ".ready").exists() for o in outs), 30), "readers did not start"
        watcher.start()
        start = _top(db)
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(parts["second"])], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: _top(db) > start, 30), "the writer appended nothing"
        # In this process, once: a replay whose build is slowed down so the writer appends meanwhile. What
        # it appended is projected by the swap's catch-up (more events applied than the log held at the start).
        conn = connect_sync(db)
        try:
            at_start = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            applied = runner.replay(conn, batch=50, progress=lambda n: time.sleep(0.1))
        finally:
            close_sync(conn)
        assert applied > at_start, (applied, at_start)
        # Then the CLI, again and again while the writer runs.
        overlapped = 0
        while writer.poll() is None:
            before = _top(db)
            done = cli(db, "replay", "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["projection_errors"] == 0
            overlapped += _top(db) > before
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert overlapped >= 1, "no CLI replay ran while the writer appended"
        done = cli(db, "replay")
        assert done.returncode == 0, done.stderr
    finally:
        watcher.stop.set()
        stop.write_text("stop")
        if writer is not None and writer.poll() is None:
            writer.kill()
        results = []
        for proc, out in zip(readers, outs, strict=True):
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            results.append(json.loads(out.read_text()))
        watcher.join(timeout=30)
    for r in results:
        assert_reader_clean(r)
        assert r["reads"] >= 20 and r["distinct_tops"] >= 3, r
    assert watcher.findings == [], watcher.findings[:5]
    assert watcher.reads >= 50 and len(watcher.tops) >= 3
    # Nothing the writer wrote was lost or projected twice.
    invariants(db)
    assert every_table(db) == every_table(parts["reference"])


@pytest.mark.sqlite_only("measures the file's write-ahead log")
def test_a_replay_that_finds_nothing_to_change_writes_nothing(parts, tmp_path, stores):
    """Rows that did not change are not rewritten: a replay of a healthy store adds not one page to the
    write-ahead log (it costs readers and checkpoints nothing)."""
    db = stores.copy(parts["reference"], tmp_path / "torn.db")
    wal = Path(str(db) + "-wal")
    before = every_table(db)
    conn = connect_sync(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert wal.stat().st_size == 0
        assert runner.replay(conn) > 0
        assert wal.stat().st_size == 0
        conn.execute("UPDATE players SET level = level + 1 WHERE player_id = (SELECT MIN(player_id) FROM players)")
        runner.replay(conn)   # and a row that did change is put back
    finally:
        close_sync(conn)
    assert every_table(db) == before

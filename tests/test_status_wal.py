"""`status` warns when the write-ahead log has grown because a reader holds a long transaction."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate
from tornstore.projections.health import wal_warning

ROOT = Path(__file__).resolve().parents[1]


def _status(db: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_DB"}
    proc = subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), "status", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_a_long_read_transaction_makes_status_warn(tmp_path):
    db = tmp_path / "torn.db"
    writer = connect_sync(db)
    migrate(writer)
    reader = sqlite3.connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM events").fetchone()        # holds its snapshot from here on
    writer.execute("CREATE TABLE filler (blob BLOB)")
    for _ in range(40):                                              # 40 transactions of 256 KB each
        writer.execute("BEGIN")
        writer.executemany("INSERT INTO filler VALUES (?)", [(os.urandom(1024),) for _ in range(256)])
        writer.execute("COMMIT")
    assert os.path.getsize(str(db) + "-wal") > 8 * 2**20              # checkpoints could not fold it back

    info = json.loads(_status(db, "--json", "--wal-warn-mb", "8").stdout)
    assert info["wal_bytes"] > 8 * 2**20
    assert len(info["warnings"]) == 1 and "long transaction" in info["warnings"][0]
    assert "Warning: the write-ahead log is" in _status(db, "--wal-warn-mb", "8").stderr

    reader.rollback()
    reader.close()
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    close_sync(writer)
    assert json.loads(_status(db, "--json", "--wal-warn-mb", "8").stdout)["warnings"] == []


def test_the_warning_names_the_size_and_the_cure():
    assert wal_warning(10 * 2**20, 256 * 2**20) is None
    text = wal_warning(300 * 2**20)
    assert text is not None and "300 MB" in text and "over 256 MB" in text and "close" in text

"""Helpers for tests that kill real processes: captures from the simulated world, CLI subprocesses,
and the invariants a database must keep after any kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tornstore.eventstore.db import close_sync, connect_sync, table_names
from tornstore.eventstore.simulator import World
from tornstore.eventstore.simulator.workload import PollPlan, poll_rounds

ROOT = Path(__file__).resolve().parents[1]


def write_capture(path: Path, *, seed: int = 3, days: float = 2, factions: int = 2, territories: int = 150,
                  start: int | None = None, personalstats_every: int = 0) -> int:
    """A capture of `days` of 4-minute polls of a small simulated world (members' personal stats every
    `personalstats_every` rounds, if any); returns the number of lines."""
    world = World(seed=seed, factions=factions, territories=territories)
    fids = tuple(sorted(world.factions))[:factions]
    plan = PollPlan(factions=fids, member_profiles_every=15, territory_map_every=30,
                    personalstats_every=personalstats_every)
    begin = start or world.now
    lines = 0
    with open(path, "w") as out:
        for responses in poll_rounds(world, plan, begin, begin + int(days * 86400)):
            for r in responses:
                out.write(json.dumps({"url": r.url, "observed_at": r.observed_at, "body": r.body}) + "\n")
                lines += 1
    return lines


def cli(db: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), *args], cwd=ROOT,
                          capture_output=True, text=True, **kw)


def start_cli(db: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tornstore", "--db", str(db), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def kill_after(proc: subprocess.Popen, seconds: float) -> tuple[str, str]:
    """SIGKILL the process after `seconds` (if it still runs); return its output."""
    try:
        out, err = proc.communicate(timeout=seconds)
        return out, err
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        return out, err


def invariants(db: Path) -> dict:
    """Check what must hold after any kill; return facts for further checks."""
    conn = connect_sync(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        count, top = conn.execute("SELECT COUNT(*), COALESCE(MAX(position), 0) FROM events").fetchone()
        checkpoints = dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))
        # Projections run in the ingest transaction: every checkpoint is exactly the end of the log.
        if top:
            assert checkpoints and set(checkpoints.values()) == {top}, (checkpoints, top)
        # Every stream's version count matches its events: versions are gapless.
        bad = conn.execute(
            "SELECT s.stream_id FROM streams s LEFT JOIN events e USING (stream_id) GROUP BY s.stream_id "
            "HAVING COUNT(e.position) != MAX(s.version) OR MAX(COALESCE(e.version, 0)) != MAX(s.version)"
        ).fetchall()
        assert bad == [], f"streams with version gaps: {bad[:5]}"
        return {"events": count, "top": top}
    finally:
        conn.close()


def log_rows(db: Path) -> list[tuple]:
    conn = connect_sync(db)
    try:
        return conn.execute(
            "SELECT s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.hash, e.payload "
            "FROM events e JOIN streams s USING (stream_id) ORDER BY 1, 2, 3, 4").fetchall()
    finally:
        conn.close()


def projected_rows(db: Path) -> dict[str, list[tuple]]:
    from tornstore.projections.health import COMPARED_TABLES, table_rows
    conn = connect_sync(db)
    try:
        return {table: table_rows(conn, table) for table in COMPARED_TABLES}
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def table_bytes(url: str, must_have: tuple[str, ...] = ("events",)) -> bytes:
    """Every value of every row of every table of a store (a PostgreSQL one has no file to read), as bytes: a
    bytea value as it is, any other as its text."""
    conn = connect_sync(url)
    try:
        parts = []
        tables = sorted(table_names(conn))
        assert set(must_have) <= set(tables), tables
        for table in tables:
            parts.append(table.encode())
            for row in conn.execute(f"SELECT * FROM {table}").fetchall():
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        parts.append(bytes(value))
                    else:
                        parts.append(str(value).encode("utf-8", "backslashreplace"))
        return b"\n".join(parts)
    finally:
        close_sync(conn)

"""Helpers for tests that load the store from several sides at once: the collector driven by the simulator's
clock, reader processes that check every snapshot they read, and captures split into overlapping parts.

A reader runs as its own process: `python -m tests.loadkit reader DB STOPFILE KIND OUT`. It reads until
STOPFILE exists, then writes a JSON report to OUT (see `reader_main`).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Tables whose row counts only grow while the store ingests (no compactor runs in these tests).
GROWING = ("events", "streams", "players", "factions", "territories", "player_stats_history", "faction_history",
           "war_status_history", "territory_ownership_history", "gaps", "quarantine", "projection_errors")

_PLAYER_VIEWS = "('v1.profile', 'v2.profile', 'v1.member', 'v2.member', 'v1.basic', 'v2.basic')"
_FACTION_VIEWS = "('v1.faction', 'v2.faction', 'v2.members')"


class DrivenClock:
    """The simulated world's clock as the collector's clock: sleeping moves the world forward at once, so
    minutes of polling take milliseconds of wall time."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self) -> float:
        return float(self.handle.world.now)

    async def sleep(self, seconds: float) -> None:
        target = math.ceil(self.handle.world.now + max(0.0, seconds))
        await asyncio.sleep(0)
        if self.handle.world.now < target:
            self.handle.set_clock(target)


# ------------------------------------------------------------------------------------------ snapshots
def snapshot(conn: sqlite3.Connection, handler_names: list[str]) -> dict:
    """What one read transaction sees, and what is wrong with it (a torn read). Call inside BEGIN."""
    top = conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0]
    checkpoints = dict(conn.execute("SELECT projection, position FROM projection_checkpoints"))
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in GROWING}
    torn = []
    if top:
        behind = {name: checkpoints.get(name) for name in handler_names if checkpoints.get(name) != top}
        if behind:
            torn.append(f"log ends at {top} but checkpoints are {behind}")
    # An event without its projection: a player or faction stream with events but no row (and no recorded
    # projection error that would explain it).
    for table, key, etype, views in (("players", "player_id", "user", _PLAYER_VIEWS),
                                     ("factions", "faction_id", "faction", _FACTION_VIEWS)):
        missing = conn.execute(
            f"SELECT s.entity_id, s.view FROM streams s WHERE s.entity_type = ? AND s.view IN {views} "
            f"AND s.version > 0 AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{key} = CAST(s.entity_id AS INTEGER)) "
            "AND NOT EXISTS (SELECT 1 FROM projection_errors pe "
            "                WHERE pe.stream = s.entity_type || ':' || s.entity_id || ':' || s.view) LIMIT 3",
            (etype,)).fetchall()
        if missing:
            torn.append(f"{etype} streams with events but no {table} row: {missing}")
    players = [r[0] for r in conn.execute("SELECT player_id FROM players ORDER BY player_id LIMIT 200")]
    factions = [r[0] for r in conn.execute("SELECT faction_id FROM factions WHERE is_stub = 0 LIMIT 50")]
    return {"top": top, "counts": counts, "torn": torn, "players": players, "factions": factions}


def _in_read_transaction(conn: sqlite3.Connection, fn, *args):
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        conn.execute("COMMIT")


class _Tally:
    def __init__(self, kind: str):
        self.kind = kind
        self.reads = 0
        self.errors: list[str] = []
        self.torn: list[str] = []
        self.decreases: list[str] = []
        self.vanished: list[str] = []
        self.tops: set[int] = set()
        self.last: dict[str, int] | None = None
        self.queries = 0

    def seen(self, snap: dict) -> None:
        self.reads += 1
        self.tops.add(snap["top"])
        self.torn += snap["torn"][:3]
        if self.last is not None:
            for table, count in snap["counts"].items():
                if count < self.last[table]:
                    self.decreases.append(f"{table}: {self.last[table]} -> {count}")
        self.last = snap["counts"]

    def error(self, exc: BaseException) -> None:
        if len(self.errors) < 20:
            self.errors.append("".join(traceback.format_exception_only(type(exc), exc)).strip())

    def report(self) -> dict:
        return {"kind": self.kind, "reads": self.reads, "queries": self.queries, "errors": self.errors,
                "torn": self.torn[:20], "decreases": self.decreases[:20], "vanished": self.vanished[:20],
                "distinct_tops": len(self.tops), "max_top": max(self.tops, default=0)}


def _sql_reader(db: str, stop: Path, tally: _Tally, names: list[str], rng: random.Random) -> None:
    """Plain sqlite3, as Datasette or a bot's own SQL would read the file."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    try:
        while not stop.exists():
            try:
                def read(c):
                    snap = snapshot(c, names)
                    if snap["players"]:
                        pid = rng.choice(snap["players"])
                        c.execute("SELECT * FROM players WHERE player_id = ?", (pid,)).fetchall()
                        c.execute("SELECT timestamp, level, total_stats FROM player_stats_history WHERE player_id = ? "
                                  "ORDER BY timestamp", (pid,)).fetchall()
                    if snap["factions"]:
                        fid = rng.choice(snap["factions"])
                        c.execute("SELECT * FROM faction_history WHERE faction_id = ? ORDER BY timestamp",
                                  (fid,)).fetchall()
                        c.execute("SELECT COUNT(*) FROM players WHERE faction_id = ?", (fid,)).fetchone()
                    tally.queries += 4
                    return snap
                tally.seen(_in_read_transaction(conn, read))
            except Exception as exc:  # noqa: BLE001 - every error is a finding
                tally.error(exc)
            time.sleep(0.003)
    finally:
        conn.close()


def _status_reader(db: str, stop: Path, tally: _Tally, names: list[str], rng: random.Random) -> None:
    """What `tornstore status` reads, through the library connection, in one read transaction."""
    from tornstore.eventstore.db import connect_sync
    from tornstore.projections import health

    conn = connect_sync(db)
    try:
        while not stop.exists():
            try:
                def read(c):
                    snap = snapshot(c, names)
                    info = health.status(c, db)
                    for table in ("events", "streams", "players", "factions"):
                        if info["rows"][table] != snap["counts"][table]:
                            snap["torn"].append(f"status says {table} {info['rows'][table]}, same snapshot "
                                                f"counts {snap['counts'][table]}")
                    tally.queries += 1
                    return snap
                tally.seen(_in_read_transaction(conn, read))
                # As `tornstore status` runs it: statement by statement, no enclosing transaction. Its
                # projection lag must still read 0 while a writer commits (log end is read before checkpoints).
                info = health.status(conn, db)
                lagging = {k: v for k, v in info["projection_lag"].items() if v}
                if lagging:
                    tally.torn.append(f"status (autocommit) reports projection lag {lagging}")
                tally.queries += 1
            except Exception as exc:  # noqa: BLE001
                tally.error(exc)
            time.sleep(0.003)
    finally:
        conn.close()


async def _store_reader(db: str, stop: Path, tally: _Tally, names: list[str], rng: random.Random) -> None:
    """The library a bot embeds: Store queries (player, faction, history, change feed)."""
    from tornstore.projections.store import Store

    store = await Store.open(db, create=False)
    known_players: set[int] = set()
    try:
        while not stop.exists():
            try:
                snap = await store.run(_in_read_transaction, snapshot, names)
                tally.seen(snap)
                if snap["players"]:
                    pid = rng.choice(sorted(known_players | set(snap["players"])))
                    view = await store.player(pid)
                    if view is None:
                        tally.vanished.append(f"player {pid} was seen before and is gone")
                    await store.history("player", pid, "level")
                    known_players.update(snap["players"][:20])
                    tally.queries += 2
                if snap["factions"]:
                    fid = rng.choice(snap["factions"])
                    await store.faction(fid)
                    await store.history("faction", fid, "respect")
                    tally.queries += 2
                await store.changes_since(max(0, snap["top"] - 50), limit=20)
                tally.queries += 1
            except Exception as exc:  # noqa: BLE001
                tally.error(exc)
            await asyncio.sleep(0.003)
    finally:
        await store.close()


def reader_main(db: str, stop_file: str, kind: str, out: str) -> None:
    from tornstore.projections.runner import handlers

    names = [h.name for h in handlers()]
    tally = _Tally(kind)
    stop = Path(stop_file)
    rng = random.Random(hash((kind, out)) & 0xFFFF)
    Path(out + ".ready").write_text("ready")
    try:
        if kind == "sql":
            _sql_reader(db, stop, tally, names, rng)
        elif kind == "status":
            _status_reader(db, stop, tally, names, rng)
        elif kind == "store":
            asyncio.run(_store_reader(db, stop, tally, names, rng))
        else:
            raise ValueError(f"unknown reader kind {kind!r}")
    except Exception as exc:  # noqa: BLE001 - a reader that cannot even start is a finding too
        tally.error(exc)
    Path(out).write_text(json.dumps(tally.report()))


def start_reader(db: Path, stop: Path, kind: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.loadkit", "reader", str(db), str(stop), kind, str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


# ------------------------------------------------------------------------------------------ captures
def split_capture(source: Path, first: Path, second: Path, first_until: int, second_from: int) -> tuple[int, int]:
    """Two captures cut from one: lines observed before `first_until`, and lines from `second_from` on.
    With second_from < first_until they overlap in time (and so in entities)."""
    a = b = 0
    with open(source) as src, open(first, "w") as fa, open(second, "w") as fb:
        for line in src:
            observed_at = json.loads(line)["observed_at"]
            if observed_at < first_until:
                fa.write(line)
                a += 1
            if observed_at >= second_from:
                fb.write(line)
                b += 1
    return a, b


def capture_span(path: Path) -> tuple[int, int]:
    first = last = None
    with open(path) as src:
        for line in src:
            t = json.loads(line)["observed_at"]
            first = t if first is None else min(first, t)
            last = t if last is None else max(last, t)
    return first, last


def merge_captures(out: Path, *sources: Path) -> int:
    """The union of captures in time order (what one writer ingesting everything would read)."""
    lines = []
    for source in sources:
        with open(source) as src:
            lines += [(json.loads(line)["observed_at"], i, line) for i, line in enumerate(src)]
    lines.sort(key=lambda x: (x[0], x[1]))
    seen = set()
    with open(out, "w") as dst:
        for _, _, line in lines:
            if line not in seen:
                seen.add(line)
                dst.write(line)
    return len(seen)


def stream_observations(db: Path) -> dict[str, list[tuple[int, str]]]:
    """Per stream: its events as (observed_at, hash), in time order (position breaks ties)."""
    conn = sqlite3.connect(db)
    try:
        out: dict[str, list[tuple[int, str]]] = {}
        for name, observed_at, digest in conn.execute(
                "SELECT s.entity_type || ':' || s.entity_id || ':' || s.view, e.observed_at, e.hash "
                "FROM events e JOIN streams s USING (stream_id) ORDER BY 1, e.observed_at, e.position"):
            out.setdefault(name, []).append((observed_at, digest))
        return out
    finally:
        conn.close()


def state_changes(observations: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The stream's states in time order with repeats dropped: when each state began, as the log tells it.
    An event that repeats the state in force before it (a redundant event) does not show here; a lost
    change does."""
    out: list[tuple[int, str]] = []
    for observed_at, digest in observations:
        if not out or out[-1][1] != digest:
            out.append((observed_at, digest))
    return out


def assert_reader_clean(result: dict) -> None:
    """A reader process's findings (see `reader`): no errors, no torn reads, no count going down, nothing
    vanishing."""
    label = f"reader {result['kind']}"
    assert result["errors"] == [], f"{label} got errors: {result['errors'][:3]}"
    assert result["torn"] == [], f"{label} saw torn reads: {result['torn'][:3]}"
    assert result["decreases"] == [], f"{label} saw row counts go down: {result['decreases'][:3]}"
    assert result["vanished"] == [], f"{label}: {result['vanished'][:3]}"


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "reader":
        reader_main(*sys.argv[2:])
    else:
        sys.exit("usage: python -m tests.loadkit reader DB STOPFILE KIND OUT")


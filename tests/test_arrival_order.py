"""The projected tables are a function of the observations in time order, whatever order they arrived in.

One capture of a simulated day (factions with members, profiles, the territory map, territory wars) is
ingested three ways and each result is compared with one writer ingesting it in time order:

* shuffled in one process: neighbouring blocks swapped (a writer ahead of another), or every line shuffled;
* by four `tornstore ingest` processes at once, each with its own share of the polls and a quarter of its
  neighbour's share too (overlapping collectors).

Compared: every current-state row and, per entity, the sequence of history states (values and times).
Left out, as documented in the README: the live columns and `last_updated` (the time a state was last
confirmed: a writer that saw the same state later than another stores that re-confirmation), row ids and
event positions (the order of arrival).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.ingest import ingest_batch
from tornstore.eventstore.migrate import migrate
from tornstore.eventstore.records import Response
from tornstore.projections.health import verify
from tornstore.projections.runner import project_inline

from .crashkit import cli, invariants, start_cli, write_capture

HISTORY = {"player_stats_history": ("player_id", "timestamp"), "faction_history": ("faction_id", "timestamp"),
           "war_status_history": ("war_id", "recorded_at"),
           "territory_ownership_history": ("territory_id", "recorded_at"),
           "stat_history": ("entity_type, entity_id, stat", "recorded_at")}
STATE = {"players": "player_id", "factions": "faction_id", "territories": "territory_id"}
NOT_COMPARED = {"players": {"status_description", "life_current", "last_action_status", "last_action_at",
                            "last_updated"},
                "factions": {"age", "last_updated"}, "territories": {"last_updated"}}


def projected_states(db: Path) -> dict:
    """Current-state rows, and per entity its history states in time order."""
    conn = connect_sync(db)
    try:
        out: dict = {}
        for table, key in STATE.items():
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] not in NOT_COMPARED[table]]
            out[table] = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {key}").fetchall()
        for table, (key, time) in HISTORY.items():
            keys = key.split(", ")
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")
                    if r[1] not in ("id", "event_position", *keys)]
            states: dict = {}
            for row in conn.execute(f"SELECT {key}, {', '.join(cols)} FROM {table} ORDER BY {key}, {time}, id"):
                states.setdefault(row[:len(keys)], []).append(row[len(keys):])
            out[table] = states
        return out
    finally:
        conn.close()


def assert_same_states(got: dict, want: dict) -> None:
    for table in (*STATE, *HISTORY):
        if table in STATE:
            lost, extra = set(want[table]) - set(got[table]), set(got[table]) - set(want[table])
            assert not lost and not extra, f"{table}: expected rows {sorted(lost)[:2]}, got {sorted(extra)[:2]}"
        else:
            wrong = sorted(k for k in set(want[table]) | set(got[table]) if want[table].get(k) != got[table].get(k))
            assert not wrong, (f"{table}: {len(wrong)} entities have another history, e.g. {wrong[0]}: "
                               f"expected {want[table].get(wrong[0])}, got {got[table].get(wrong[0])}")
        assert want[table], f"the capture gave no {table} rows: the comparison would be empty"


def _ingest_lines(db: Path, lines: list[dict], batch: int = 20) -> None:
    conn = connect_sync(db)
    try:
        migrate(conn)
        for i in range(0, len(lines), batch):
            responses = [Response(url=r["url"], observed_at=r["observed_at"], body=r["body"])
                         for r in lines[i:i + batch]]
            ingest_batch(conn, responses, project_inline)
    finally:
        close_sync(conn)


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """The capture's lines in time order and the tables one writer makes of them."""
    root = tmp_path_factory.mktemp("arrival")
    capture = root / "day.ndjson"
    write_capture(capture, seed=4, days=1.0, personalstats_every=15)   # (hourly: stat_history too)
    lines = sorted((json.loads(line) for line in capture.read_text().splitlines()), key=lambda r: r["observed_at"])
    reference = root / "reference.db"
    _ingest_lines(reference, lines)
    return {"root": root, "lines": lines, "want": projected_states(reference)}


def _swap_neighbouring_blocks(lines: list[dict], rng: random.Random, size: int = 60) -> list[dict]:
    blocks = [lines[i:i + size] for i in range(0, len(lines), size)]
    out: list[dict] = []
    for i in range(0, len(blocks), 2):
        pair = blocks[i:i + 2]
        rng.shuffle(pair)
        for block in pair:
            out += block
    return out


@pytest.mark.parametrize("how", ["blocks-1", "blocks-2", "every-line"])
def test_shuffled_arrival_gives_the_tables_of_time_order(day, how):
    rng = random.Random(how)
    lines = list(day["lines"])
    if how == "every-line":
        rng.shuffle(lines)
    else:
        lines = _swap_neighbouring_blocks(lines, rng)
    assert lines != day["lines"]
    db = day["root"] / f"{how}.db"
    _ingest_lines(db, lines)
    assert_same_states(projected_states(db), day["want"])
    # Replay reads the log in arrival (position) order and must fold to the same tables.
    conn = connect_sync(db)
    try:
        report = verify(conn)
    finally:
        close_sync(conn)
    assert report["ok"], report["replay"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_overlapping_writers_give_the_tables_of_one_writer(day, backend, request):
    """Four processes at once, each ingesting its share of the polls and a quarter of its neighbour's: on a
    SQLite file, and on one PostgreSQL database (writers serialise on its write lock as on the file's)."""
    root, lines = day["root"], day["lines"]
    shares: list[list[dict]] = [[] for _ in range(4)]
    rng = random.Random(4)
    for line in lines:
        owner = rng.randrange(4)
        shares[owner].append(line)
        if rng.random() < 0.25:
            shares[(owner + 1) % 4].append(line)
    db = root / "four.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    assert cli(db, "init").returncode == 0
    procs = []
    for n, share in enumerate(shares):
        path = root / f"share{n}.ndjson"
        path.write_text("".join(json.dumps(line) + "\n" for line in share))
        procs.append(start_cli(db, "ingest", str(path), "--batch", "20"))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    invariants(db)
    assert_same_states(projected_states(db), day["want"])
    conn = connect_sync(db)
    try:
        report = verify(conn)
    finally:
        close_sync(conn)
    assert report["ok"], report

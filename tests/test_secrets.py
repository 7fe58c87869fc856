"""Keys stay secret (invariant 5): after runs with three keys of two owners and every kind of trouble
(key disabled by code 2, rate limit 5, key paused by 13, HTTP 502, cut JSON, HTML pages, bodies too large,
timeouts, a dead server), no key string appears in any byte tornstore wrote or printed: the database and its
-wal and -shm files, capture files, backups (manual and the compactor's), logs at DEBUG, CLI output, the
texts of exceptions, and `status` (text and JSON). Keys are named by fingerprint only. On a SQLite file and on
a PostgreSQL database: there, every row of every table is read back as well as every file the test wrote (a
PostgreSQL store's backup is a SQLite copy, and `compact` takes no file backup).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

import pytest

from tornstore.eventstore.backup import backup_database
from tornstore.eventstore.capture import export_events
from tornstore.eventstore.collector import Collector, ConfigError, parse_config
from tornstore.eventstore.db import close_sync, connect_sync, is_url
from tornstore.eventstore.secrets import fingerprint
from tornstore.eventstore.simulator import World, start_simulator
from tornstore.projections.copy import copy_store
from tornstore.projections.store import Store

from .crashkit import table_bytes
from .loadkit import DrivenClock

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"TS_A1": "SeCrEtAaAaAaAa01", "TS_A2": "SeCrEtAaAaAaAa02", "TS_B": "SeCrEtBbBbBbBb03"}
KEY_A1, KEY_A2, KEY_B = KEYS["TS_A1"], KEYS["TS_A2"], KEYS["TS_B"]
SECRETS = tuple(KEYS.values())


def _world() -> World:
    return World(seed=21, factions=2, members_per_faction=(3, 4), territories=60)


def _owners(world: World) -> dict[str, int]:
    first, second = (world.factions[f] for f in sorted(world.factions))
    return {KEY_A1: first.members[0], KEY_A2: first.members[0], KEY_B: second.members[0]}


def _config_data(api_base: str, world: World) -> dict:
    owners = _owners(world)
    f0, f1 = sorted(world.factions)
    return {
        "api_base": api_base, "interval": "1m", "jitter": 0, "timeout": 1, "max_body": "64KB", "max_tries": 3,
        "keys": [
            {"key": "env:TS_A1", "owner": str(owners[KEY_A1]), "access": "limited"},
            {"key": "env:TS_A2", "owner": str(owners[KEY_A2]), "access": "public"},
            {"key": "env:TS_B", "owner": str(owners[KEY_B]), "access": "limited"},
        ],
        "factions": [{"id": f0, "fetch": ["basic", "members", "v1:basic"], "members": True},
                     {"id": f1, "fetch": ["basic", "wars", "v1:basic"]}],
        "players": [{"id": owners[KEY_A1], "fetch": ["profile", "battlestats", "v1:profile", "v1:bars"]},
                    {"id": owners[KEY_B], "fetch": ["profile", "battlestats", "v1:profile"]}],
        "territories": [{"all": True, "api": "v1"}],
        "wars": {"ranked": True, "territory": True},
    }


# Every fault the brief names, most of them more than once; keyed ones hit one key only.
FAULTS = [
    {"kind": "error", "code": 2, "count": 1, "key": KEY_A2},
    {"kind": "error", "code": 13, "count": 1, "key": KEY_B},
    {"kind": "error", "code": 5, "count": 2},
    {"kind": "http", "status": 502, "count": 2},
    {"kind": "malformed", "count": 2},
    {"kind": "slow", "delay": 1.5, "count": 2},
    {"kind": "html", "count": 1},
    {"kind": "huge", "size": 100_000, "count": 1},
    {"kind": "error", "code": 2, "count": 1, "path": "/user/"},    # v1: the key travels in the query
]
# Through the CLI the collector runs on the wall clock: a code 5 would pause an owner for a real minute.
CLI_FAULTS = [f for f in FAULTS if f.get("code") != 5]


def assert_no_key(where: str, blob: bytes | str) -> None:
    data = blob.encode("utf-8", "backslashreplace") if isinstance(blob, str) else blob
    for key in SECRETS:
        assert key.encode() not in data, f"key {fingerprint(key)} leaked into {where}"
        assert key.encode("utf-16-le") not in data, f"key {fingerprint(key)} leaked into {where} (UTF-16)"
    # Nor any other key-shaped value of a key= parameter (the schema's comments say "key=" in passing).
    leaked = re.search(rb"key=[A-Za-z0-9]{16}", data, re.IGNORECASE)
    assert leaked is None, f"a key= parameter with a value reached {where}"


def _files(db: Path | str) -> dict[str, bytes]:
    """A SQLite store's file and its -wal and -shm; a PostgreSQL store's every row of every table."""
    if is_url(db):
        return {"tables": _table_rows(db)}
    out = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            out[path.name] = path.read_bytes()
    return out


def _table_rows(url: str) -> bytes:
    return table_bytes(url, must_have=("events", "api_keys"))


class _ManualClock:
    """A clock for a collector with no simulator behind it: sleeping moves it."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)
        self.t += max(0.0, seconds)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------ in process
async def test_keys_never_reach_the_database_files_logs_or_exceptions(db_path, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    db = db_path
    world = _world()
    handle = await start_simulator(world, keys=list(SECRETS), own_ids=_owners(world), rate_clock="sim")
    blobs: dict[str, bytes | str] = {}
    raised: list[str] = []
    try:
        for fault in FAULTS:
            handle.inject_fault(**fault)
        cfg = parse_config(_config_data(handle.url, world), env=KEYS)
        blobs["repr(config)"] = repr(cfg)
        clock = DrivenClock(handle)
        store = await Store.open(db, create=True)
        try:
            reports = []
            for round_ in range(2):                    # a restart a day later reloads key states
                collector = Collector(cfg, store.ingest_many, run=store.run, clock=clock, sleep=clock.sleep)
                try:
                    async with collector:
                        reports.append((await collector.run_once()).as_dict())
                except Exception as exc:  # noqa: BLE001 - recorded, then the texts are checked
                    raised.append("".join(traceback.format_exception(exc)))
                blobs[f"round {round_}: gaps"] = "\n".join(g.reason + " " + g.source_url for g in collector.gaps)
                blobs[f"round {round_}: repr(pool)"] = repr(collector.pool.keys) + repr(collector.pool.summary())
                handle.advance(86400)
            # A server that is gone: connection errors, whose aiohttp texts carry the v1 URL (and its key).
            dead = parse_config(_config_data(f"http://127.0.0.1:{_free_port()}", world), env=KEYS)
            manual = _ManualClock(float(world.now))
            gone = Collector(dead, store.ingest_many, run=store.run, clock=manual, sleep=manual.sleep)
            try:
                async with gone:
                    reports.append((await gone.run_once()).as_dict())
            except Exception as exc:  # noqa: BLE001
                raised.append("".join(traceback.format_exception(exc)))
            blobs["dead server: gaps"] = "\n".join(g.reason + " " + g.source_url for g in gone.gaps)
            blobs["reports"] = json.dumps(reports)
            # While the store is open: the WAL holds the latest pages.
            for name, data in _files(db).items():
                blobs[f"{name} (open)"] = data
            # A backup and an export taken from the library (a PostgreSQL store's backup is a SQLite copy).
            conn = connect_sync(db)
            try:
                if is_url(db):
                    target = connect_sync(tmp_path / "copy.db")
                    try:
                        assert copy_store(conn, target)["ok"]
                    finally:
                        close_sync(target)
                else:
                    backup_database(conn, tmp_path / "copy.db", created_at=world.now, reason="test")
                with open(tmp_path / "export.ndjson", "wb") as out:  # noqa: ASYNC230 - a test, one small file
                    exported = export_events(conn, out)
            finally:
                close_sync(conn)
        finally:
            await store.close()
    finally:
        await handle.close()
    for name, data in _files(db).items():
        blobs[f"{name} (closed)"] = data
    blobs["backup"] = (tmp_path / "copy.db").read_bytes()
    blobs["export"] = (tmp_path / "export.ndjson").read_bytes()
    captured = capsys.readouterr()
    blobs["stdout"], blobs["stderr"] = captured.out, captured.err
    blobs["log (DEBUG)"] = caplog.text
    blobs["log records"] = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    blobs["exceptions"] = "\n".join(raised)

    # The run really met the trouble it was meant to meet.
    assert exported > 0
    stats = handle.stats()
    assert stats["faults_fired"] >= 10, stats
    gaps_text = "\n".join(str(blobs[k]) for k in blobs if "gaps" in k)
    for expected in ("HTTP 502", "timeout", "not JSON", "Torn API error 5", "Torn API error 13",
                     "Torn API error 2", "connection error"):
        assert expected in gaps_text, f"no gap for {expected!r}: the fault was not met"
    conn = connect_sync(db)
    try:
        states = dict(conn.execute("SELECT fingerprint, state FROM api_keys").fetchall())
    finally:
        close_sync(conn)
    assert states[fingerprint(KEY_A2)] == "disabled" and set(states) == {fingerprint(k) for k in SECRETS}
    assert fingerprint(KEY_A2) in caplog.text              # keys are named by fingerprint

    for where, blob in blobs.items():
        assert_no_key(where, blob)


def test_config_errors_never_echo_a_key(tmp_path):
    world = _world()
    data = _config_data("http://127.0.0.1:9", world)
    cases = {
        "literal key too short": {**data, "keys": [{"key": KEY_A1[:-1], "owner": "1"}]},
        "literal key with a bad character": {**data, "keys": [{"key": KEY_A1[:-1] + "!", "owner": "1"}]},
        "same key twice": {**data, "keys": [{"key": KEY_A1, "owner": "1"}, {"key": KEY_A1, "owner": "2"}]},
        "key in api_base": {**data, "api_base": f"http://127.0.0.1:9/?key={KEY_A1}"},
        "key in a fetch item": {**data, "players": [{"id": 1, "fetch": [f"profile:key={KEY_A1}"]}]},
        "key without owner": {**data, "keys": [{"key": KEY_B}]},
        "bad access": {**data, "keys": [{"key": KEY_B, "owner": "1", "access": KEY_A2}]},
    }
    for name, bad in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(bad, env=KEYS)
        text = str(info.value) + repr(info.value) + "".join(traceback.format_exception(info.value))
        for key in (KEY_A1, KEY_A1[:-1], KEY_A1[:-1] + "!", KEY_B):
            assert key not in text.replace(KEY_A2, ""), f"{name}: the message shows a key: {info.value}"


# ------------------------------------------------------------------------------------------ the CLI
class _ThreadedSimulator:
    """The simulator on its own event loop thread, for CLI subprocesses; faults go in over HTTP."""

    def __init__(self, world: World):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.world = world
        self.handle = asyncio.run_coroutine_threadsafe(
            start_simulator(world, keys=list(SECRETS), own_ids=_owners(world)), self.loop).result(timeout=30)

    def control(self, what: str, payload: dict) -> dict:
        request = urllib.request.Request(f"{self.handle.url}/__sim/{what}", method="POST",
                                         data=json.dumps(payload).encode())
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.handle.close(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def _cli(db: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("TORNSTORE_DB", None)
    return subprocess.run([sys.executable, "-m", "tornstore", "--db", str(db), *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=180)


def _toml(data: dict) -> str:
    lines = []
    for key, value in data.items():
        if not isinstance(value, (list, dict)):
            lines.append(f"{key} = {json.dumps(value)}")
    for table in ("keys", "factions", "players", "territories"):
        for item in data[table]:
            lines.append(f"[[{table}]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
    lines.append("[wars]")
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["wars"].items()]
    return "\n".join(lines) + "\n"


def test_keys_never_reach_cli_output_captures_backups_or_status(db_path, tmp_path):
    world = _world()
    sim = _ThreadedSimulator(world)
    db = db_path
    outputs: dict[str, str] = {}
    try:
        for fault in CLI_FAULTS:
            sim.control("fault", fault)
        config = tmp_path / "collect.toml"
        config.write_text(_toml(_config_data("http://127.0.0.1:9", world)))
        collect = _cli(db, "collect", "-c", str(config), "--api-base", sim.handle.url, "--once", "-vv", env=KEYS)
        outputs["collect"] = collect.stdout + collect.stderr
        # The injected faults fail some polls: --once says so with exit code 1 and one Error: line.
        assert collect.returncode == 1 and "Error:" in collect.stderr, collect.stderr[-3000:]
        assert "Traceback" not in collect.stderr
        collect_json = _cli(db, "collect", "-c", str(config), "--api-base", sim.handle.url, "--once", "--json",
                            env=KEYS)
        outputs["collect --json"] = collect_json.stdout + collect_json.stderr
        assert collect_json.returncode == 1 and "Traceback" not in collect_json.stderr, collect_json.stderr[-3000:]
    finally:
        sim.close()
    conn = connect_sync(db)
    try:
        reasons = "\n".join(r for (r,) in conn.execute("SELECT reason FROM gaps").fetchall())
    finally:
        close_sync(conn)
    for expected in ("HTTP 502", "timeout", "not JSON", "Torn API error 13", "Torn API error 2", "body too large"):
        assert expected in reasons, f"the CLI run met no {expected!r}"
    # A config naming a key that is not in the environment, and one with a literal key of the wrong size.
    missing = _cli(db, "collect", "-c", str(config), "--once")
    outputs["collect without keys"] = missing.stdout + missing.stderr
    assert missing.returncode != 0
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text().replace('"env:TS_A1"', json.dumps(KEY_A1[:-1])))
    bad = _cli(db, "collect", "-c", str(broken), "--once", env=KEYS)
    outputs["collect with a bad literal key"] = bad.stdout + bad.stderr
    assert bad.returncode != 0 and KEY_A1[:-1] not in bad.stdout + bad.stderr

    export = tmp_path / "events.ndjson"
    # The collector stamps observed_at with the wall clock: compact as of four months from now, so this
    # month is closed, folded, backed up and pruned.
    later = int(time.time()) + 120 * 86400
    runs = {}
    for name, args in {
        "export-events": ("export-events", "-o", str(export)),
        "export-events to stdout": ("export-events",),
        "backup": ("backup", "-o", str(tmp_path / "manual-backup.db")),
        "status": ("status",),
        "status --json": ("status", "--json"),
        "compact": ("compact", "--now", str(later), "--json"),
        "status after compact": ("status", "--json"),
        "verify": ("verify",),
    }.items():
        done = runs[name] = _cli(db, *args)
        outputs[name] = done.stdout + done.stderr
        assert done.returncode == 0, (name, done.stderr[-3000:])
        assert "Traceback" not in done.stderr, (name, done.stderr[-3000:])

    status = json.loads(runs["status --json"].stdout)
    assert {k["fingerprint"] for k in status["keys"]} == {fingerprint(k) for k in SECRETS}
    assert any(k["state"] == "disabled" for k in status["keys"])
    assert fingerprint(KEY_B) in runs["status"].stdout
    compacted = json.loads(runs["compact"].stdout)
    assert compacted["pruned"], runs["compact"].stdout[-2000:]
    if is_url(db):
        # No file backup on PostgreSQL (README: use pg_dump or the server's backups).
        assert not compacted["backup"], runs["compact"].stdout[-2000:]
    else:
        assert compacted["backup"], runs["compact"].stdout[-2000:]
        dated = sorted(p for p in tmp_path.iterdir() if p.name.startswith(db.name + ".backup-"))
        assert dated, "the compactor took no backup beside the database"

    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()
             if p.is_file() and p.suffix != ".toml"}
    assert export.name in files and "manual-backup.db" in files
    if is_url(db):
        files["tables"] = _table_rows(db)
    for where, blob in {**outputs, **files}.items():
        assert_no_key(where, blob)

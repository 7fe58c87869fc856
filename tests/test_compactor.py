"""The compactor on real SQLite files and PostgreSQL databases: a generated world is ingested through the
real pipeline (capture -> ingest -> inline projections), then compacted. Every summary row is checked
against an independent computation from the generator's own values; pruning, replay, idempotence, dry
runs, late data, real SIGKILLs and the CLI are checked on copies of the same database. What only a file
has (its backups, its size, its bytes, a SQLite trigger) is checked on the file only."""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner

from tornstore.eventstore.backup import backup_database, dated_backup_path, list_backups, rotate_backups
from tornstore.eventstore.db import connect_sync, is_url, table_names
from tornstore.projections.compactor import CompactionError, compact, months_to_fold, plan
from tornstore.projections.compactor.periods import Period, months_between, parse_time, retention_start
from tornstore.projections.runner import replay
from tornstore.projections.store import ingest_files

from .conftest import PG_BASE, pg_admin

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the world
# A small deterministic Torn world: players, factions, wars and territories whose values change over five
# months, as capture lines, plus the values the generator put in (`Truth`: what the expected summaries are
# computed from, independently of the database).
DAY = 86400
START = parse_time("2026-09-12T06:00:00Z")
END = parse_time("2027-01-31T23:00:00Z")
NOW = parse_time("2027-02-01T00:00:00Z")       # four closed months + September before them; February current

PLAYER_FIELDS = ("strength", "defense", "speed", "dexterity", "total_stats", "level", "life_maximum", "networth")
FACTION_FIELDS = ("respect", "member_count", "best_chain")


@dataclass
class Truth:
    """What the generator observed, per entity: [(observed_at, values)] in time order. For wars the
    values are the war's snapshot at that poll (after the status the poll implies)."""
    players: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)
    factions: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)
    wars: dict[tuple[str, int], list[tuple[int, dict]]] = field(default_factory=dict)
    territories: dict[str, list[tuple[int, tuple[int | None, str]]]] = field(default_factory=dict)  # (owner, war_status)


def _line(url: str, t: int, body: dict) -> dict:
    return {"url": url, "observed_at": t, "body": body}


def player_body(pid: int, v: dict, faction_id: int) -> dict:
    return {
        "player_id": pid, "name": f"Player{pid}", "level": v["level"], "rank": "Average Punchbag",
        "life": {"current": v["life_maximum"], "maximum": v["life_maximum"]},
        "status": {"description": "Okay", "details": "", "state": "Okay", "color": "green", "until": 0},
        "faction": {"faction_id": faction_id, "faction_name": f"Faction{faction_id}", "faction_tag": "F",
                    "position": "Member"},
        "personalstats": {"networth": v["networth"], "strength": v["strength"], "defense": v["defense"],
                          "speed": v["speed"], "dexterity": v["dexterity"], "totalstats": v["total_stats"]},
    }


def personalstats_body(v: dict) -> dict:
    return {"personalstats": {"networth": v["networth"], "strength": v["strength"], "defense": v["defense"],
                              "speed": v["speed"], "dexterity": v["dexterity"], "totalstats": v["total_stats"]}}


def generate(seed: int = 7) -> tuple[list[dict], Truth]:
    rnd = random.Random(seed)
    truth = Truth()
    lines: list[dict] = []
    factions = {101: "Alpha", 202: "Beta", 303: "Gamma"}
    fstate = {fid: {"respect": 10000 * i, "member_count": 20 + i, "best_chain": 100 * i}
              for i, fid in enumerate(sorted(factions), start=1)}
    # player id -> (first day, last day polled, faction)
    players = {1: (0, 999, 101), 2: (0, 999, 101), 3: (0, 999, 202), 4: (0, 45, 202),   # 4 stops in late October
               5: (85, 999, 303), 6: (0, 999, 303)}                                       # 5 first seen in December
    pstate = {}
    for pid in players:
        s = [rnd.randint(1000, 5000) for _ in range(4)]
        pstate[pid] = {"strength": s[0], "defense": s[1], "speed": s[2], "dexterity": s[3], "total_stats": sum(s),
                       "level": rnd.randint(5, 20), "life_maximum": 1000 + 50 * pid, "networth": 10_000_000 * pid}
    # Territories: owners over time (day -> owner; 0 = unowned). DAC first seen in December.
    owners = {
        "AAC": [(0, 101), (38, 202), (70, 101)],      # changes hands in October and November
        "BAC": [(0, 303)],                            # same owner all along
        "CAC": [(0, 0), (59, 303), (61, 0), (63, 303)],  # unowned, then taken (with a flap) in November
        "DAC": [(85, 202), (130, 0)],                 # first seen in December, lost in January
    }
    # Ranked wars: id -> (a, b, start day, end day, winner, polled by faction)
    ranked = {
        5001: (101, 202, 40, 55, 202),      # crosses October -> November
        5002: (202, 303, 75, 120, 303),     # November -> January, not polled for most of December
        5003: (101, 303, 135, 999, None),   # still running at the end of January
    }
    day_count = (END - START) // DAY + 1
    for day in range(day_count):
        t0 = START + day * DAY
        # -------- factions: every 2 days
        if day % 2 == 0:
            for fid, name in sorted(factions.items()):
                st = fstate[fid]
                if rnd.random() < 0.6:
                    st["respect"] += rnd.randint(1, 500)
                if rnd.random() < 0.15:
                    st["member_count"] = max(1, st["member_count"] + rnd.choice((-1, 1)))
                if rnd.random() < 0.1:
                    st["best_chain"] += rnd.randint(1, 50)
                t = t0 + 60
                body = {"basic": {"id": fid, "name": name, "tag": name[:3].upper(), "leader_id": fid * 10,
                                  "co_leader_id": 0, "respect": st["respect"], "days_old": 1000 + day,
                                  "capacity": 100, "members": st["member_count"], "best_chain": st["best_chain"],
                                  "is_enlisted": True}}
                lines.append(_line(f"https://api.torn.com/v2/faction/{fid}/basic", t, body))
                truth.factions.setdefault(fid, []).append((t, dict(st)))
        # -------- players: every 3 days, December gap for player 6 (carry within a polled life)
        if day % 3 == 0:
            for pid, (first, last, fid) in sorted(players.items()):
                if not first <= day <= last:
                    continue
                if pid == 6 and 80 <= day < 115:
                    continue
                st = pstate[pid]
                if rnd.random() < 0.7:
                    for k in ("strength", "defense", "speed", "dexterity"):
                        st[k] += rnd.randint(0, 40)
                    st["total_stats"] = st["strength"] + st["defense"] + st["speed"] + st["dexterity"]
                if rnd.random() < 0.1:
                    st["level"] += 1
                if rnd.random() < 0.1:
                    st["life_maximum"] += 25
                if rnd.random() < 0.5:
                    st["networth"] += rnd.randint(-50_000, 200_000)
                t = t0 + 600 + pid
                lines.append(_line(f"https://api.torn.com/user/{pid}?selections=profile,personalstats", t,
                                   player_body(pid, st, fid)))
                truth.players.setdefault(pid, []).append((t, dict(st)))
        # -------- territories: every 2 days (odd days), the owners in force that day
        if day % 2 == 1:
            t = t0 + 1200
            body = {"territory": {}}
            for code, timeline in sorted(owners.items()):
                if day < timeline[0][0]:
                    continue
                owner = [o for d, o in timeline if d <= day][-1]
                body["territory"][code] = {"sector": 3, "size": 2, "density": 1, "slots": 10, "daily_respect": 50,
                                           "faction": owner, "coordinate_x": "100.5", "coordinate_y": "200.25",
                                           "neighbors": []}
                truth.territories.setdefault(code, []).append((t, (owner or None, "none")))
            codes = ",".join(sorted(body["territory"]))
            lines.append(_line(f"https://api.torn.com/torn/{codes}?selections=territory", t, body))
        # -------- ranked wars: the war's faction polls its rankedwars list daily while the war is on
        for war_id, (a, b, d0, d1, winner) in sorted(ranked.items()):
            if not d0 <= day <= d1 + 1:
                continue
            if war_id == 5002 and 80 <= day < 112:
                continue  # no poll for a month: December gets a carried row
            t = t0 + 1800
            start = START + d0 * DAY
            over = day > d1
            prev = truth.wars.get(("ranked", war_id))
            score_a = (prev[-1][1]["score_a"] if prev else 0) + (0 if over else rnd.randint(0, 30))
            score_b = (prev[-1][1]["score_b"] if prev else 0) + (0 if over else rnd.randint(0, 30))
            end = START + d1 * DAY + 3600 if over else 0
            body = {"rankedwars": [{"id": war_id, "start": start, "end": end, "target": 5000,
                                    "winner": winner if over else None,
                                    "factions": [{"id": a, "name": factions[a], "score": score_a, "chain": 0},
                                                 {"id": b, "name": factions[b], "score": score_b, "chain": 0}]}]}
            lines.append(_line(f"https://api.torn.com/v2/faction/{a}/rankedwars", t, body))
            truth.wars.setdefault(("ranked", war_id), []).append((t, {
                "attacking": min(a, b), "defending": max(a, b),
                "score_a": score_a, "score_b": score_b,
                "attacking_score": score_a if a < b else score_b, "defending_score": score_b if a < b else score_a,
                "started_at": start, "ends_at": end or None, "winner": winner if over else None,
                "over": over}))
        # -------- one territory war on EAC (a territory nobody polls), Nov 29 -> Dec 2: the full list of
        # territory wars is polled daily; the war is gone from the first poll after its scheduled end
        t = t0 + 2400
        war_start, war_end = START + 78 * DAY + 7200, START + 81 * DAY + 7200
        listed = {}
        if war_start <= t < war_end:
            score = 1000 * (day - 77)
            listed["EAC"] = {"territory_war_id": 7001, "assaulting_faction": 303, "defending_faction": 101,
                             "score": score, "required_score": 100000, "started": war_start, "ends": war_end,
                             "assaulters": [], "defenders": []}
            snap = {"attacking": 303, "defending": 101, "attacking_score": score, "defending_score": None,
                    "started_at": war_start, "ends_at": war_end, "winner": None, "over": False}
            truth.wars.setdefault(("territory", 7001), []).append((t, snap))
            # The territory's war status is tracked too: a row for EAC, owner unknown (NULL).
            truth.territories.setdefault("EAC", []).append((t, (None, "under_attack")))
        elif t >= war_end and ("territory", 7001) in truth.wars and not truth.wars[("territory", 7001)][-1][1]["over"]:
            truth.wars[("territory", 7001)].append((t, dict(truth.wars[("territory", 7001)][-1][1], over=True)))
            truth.territories["EAC"].append((t, (None, "none")))
        if 70 <= day <= 90:
            lines.append(_line("https://api.torn.com/torn/?selections=territorywars", t, {"territorywars": listed}))
    lines.sort(key=lambda line: line["observed_at"])
    return lines, truth


def write_capture(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path

SUMMARIES = ("player_stats_summary", "faction_summary", "war_summary", "territory_ownership_summary")
KEPT = ("sequences_at_horizon", "players_at_horizon", "factions_at_horizon", "territories_at_horizon",
        "player_stats_history_at_horizon", "faction_history_at_horizon", "war_status_history_at_horizon",
        "territory_ownership_history_at_horizon")
HISTORY = {"player_stats_history": "timestamp", "faction_history": "timestamp",
           "war_status_history": "recorded_at", "territory_ownership_history": "recorded_at"}
MONTHS = list(months_between(Period.containing(START), Period.containing(END)))   # 2026-09 .. 2027-01
WINDOW = retention_start(NOW, 2)                                                    # 2026-12-01


# ---------------------------------------------------------------------------------------------- helpers
def copy_db(src: Path, dest: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        if Path(str(src) + suffix).exists():
            shutil.copyfile(str(src) + suffix, str(dest) + suffix)
    return dest


# ---------------------------------------------------------------------------------------------- backends
# A world is built once per module and per backend, then copied for each test that changes it. A module
# fixture cannot take conftest's function-scoped `db_path`, so the worlds take `backend` instead (the same
# two runs, the same test ids); a test without a world takes `db_path`.
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


class Stores:
    """New stores on one backend: on SQLite the file path the test names, on PostgreSQL a new database of
    conftest's server for each (a copy is CREATE DATABASE ... TEMPLATE), dropped by close()."""

    def __init__(self, backend: str):
        self.backend = backend
        self.admin = pg_admin() if backend == "postgresql" else None
        self.made: list[str] = []

    def _database(self, template: str | None = None) -> str:
        assert self.admin is not None
        name = f"tornstore_test_{os.getpid()}_{secrets.token_hex(4)}"
        self.admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.made.append(name)
        return urlunsplit(urlsplit(PG_BASE)._replace(path=f"/{name}"))

    def new(self, path: Path) -> Path | str:
        """`path` (its folder made) on SQLite; a new empty database on PostgreSQL."""
        if self.admin is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path
        return self._database()

    def copy(self, src: Path | str, path: Path) -> Path | str:
        """A copy of the store `src` (no connection may be open on it): at `path`, or a new database."""
        if not is_url(src):
            path.parent.mkdir(parents=True, exist_ok=True)
            return copy_db(Path(src), path)
        return self._database(template=urlsplit(str(src)).path.lstrip("/"))

    def close(self) -> None:
        if self.admin is not None:
            for name in self.made:
                self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.admin.close()


@pytest.fixture(scope="module")
def module_stores(backend):
    """Where a module's worlds live (dropped after the module)."""
    made = Stores(backend)
    yield made
    made.close()


@pytest.fixture
def stores(backend, request):
    """Where a test's copies of a world live (dropped after the test); a test marked sqlite_only skips its
    PostgreSQL run, as with `db_path`."""
    only = request.node.get_closest_marker("sqlite_only")
    if backend == "postgresql" and only is not None:
        pytest.skip(f"SQLite only: {only.args[0] if only.args else 'a property of the file'}")
    made = Stores(backend)
    yield made
    made.close()


@pytest.fixture
def db_stores(db_path):
    """`stores` for a test that takes conftest's `db_path` (and no world): on db_path's backend."""
    made = Stores("postgresql" if is_url(db_path) else "sqlite")
    yield made
    made.close()


def rows(conn: sqlite3.Connection, sql: str, args=()) -> list[tuple]:
    return conn.execute(sql, args).fetchall()


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def dump(conn: sqlite3.Connection, table: str, drop: tuple[str, ...] = ()) -> list[tuple]:
    cols = [c for c in columns(conn, table) if c not in drop]
    return sorted(conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall(), key=repr)


def state_dump(path: Path | str) -> dict:
    """Everything a compaction may change, for comparing two end states (and a file's backups beside it)."""
    conn = connect_sync(path)
    try:
        out = {t: dump(conn, t) for t in SUMMARIES + tuple(HISTORY)}
        out["events"] = rows(conn, "SELECT position, stream_id, version, observed_at, hash FROM events ORDER BY position")
        out["ledger"] = dump(conn, "compaction_ledger")
        out["store_meta"] = dump(conn, "store_meta")
        # The state kept at the horizon (migration 0004): which snapshot, and its rows.
        out["snapshots"] = dump(conn, "projection_snapshots")
        for table in KEPT:
            out[table] = dump(conn, table)
        out["backups"] = sorted((Path(p).name, c, r) for p, c, r in conn.execute(
            "SELECT path, created_at, reason FROM backups"))
        out["files"] = None if is_url(path) else sorted(
            p.name for p in path.parent.iterdir()
            if p.name.startswith(path.name) and not p.name.endswith(("-wal", "-shm")))
        return out
    finally:
        conn.close()


def all_tables_dump(path: Path | str) -> dict:
    conn = connect_sync(path)
    try:
        return {n: dump(conn, n) for n in sorted(table_names(conn))}
    finally:
        conn.close()


def latest_per_stream(conn: sqlite3.Connection) -> dict[int, int]:
    out = {}
    for stream_id, position, observed_at, version in conn.execute(
            "SELECT stream_id, position, observed_at, version FROM events"):
        best = out.get(stream_id)
        if best is None or (observed_at, version) > best[1:]:
            out[stream_id] = (position, observed_at, version)
    return {s: v[0] for s, v in out.items()}


def run_compact(path: Path | str, now: int = NOW, **kw):
    conn = connect_sync(path)
    try:
        return compact(conn, now, **kw)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- expected
def change_rows(observations: list[tuple[int, object]]) -> list[tuple[int, object]]:
    """History rows the projections write: an observation whose tracked values differ from the last one."""
    out, last = [], object()
    for t, values in observations:
        if values != last:
            out.append((t, values))
            last = values
    return out


def split(history: list[tuple[int, object]], month: Period):
    before = [r for r in history if r[0] < month.start]
    inside = [r for r in history if month.start <= r[0] <= month.end]
    return before, inside


def expected_numeric(truth: dict, fields: tuple[str, ...], no_change=frozenset(), extra=None) -> dict:
    out = {}
    for key, observations in truth.items():
        history = change_rows([(t, {f: v[f] for f in fields}) for t, v in observations])
        history = sorted(history + (extra or {}).get(key, []), key=lambda r: r[0])
        for month in MONTHS:
            before, inside = split(history, month)
            if not before and not inside:
                continue
            start = before[-1][1] if before else inside[0][1]
            end = inside[-1][1] if inside else start
            row = {"record_count": len(inside)}
            for f in fields:
                row[f + "_start"], row[f + "_end"] = start[f], end[f]
                if f not in no_change:
                    row[f + "_change"] = end[f] - start[f]
            out[(key, month.start)] = row
    return out


def expected_wars(truth: dict) -> dict:
    out = {}
    tracked = ("attacking", "defending", "attacking_score", "defending_score", "started_at", "ends_at", "winner",
               "over")
    for (war_type, war_id), observations in truth.items():
        history = change_rows([(t, {f: v[f] for f in tracked}) for t, v in observations])
        for month in MONTHS:
            before, inside = split(history, month)
            prior = before[-1][1] if before else None
            if not inside and not (prior and not prior["over"]):
                continue  # not active: no record in the month and not running when it began
            t_end, end = inside[-1] if inside else before[-1]
            out[(war_id, month.start)] = {
                "war_type": war_type, "attacking_faction_id": end["attacking"],
                "defending_faction_id": end["defending"], "final_attacking_score": end["attacking_score"],
                "final_defending_score": end["defending_score"], "winner_faction_id": end["winner"],
                "duration_seconds": (end["ends_at"] - end["started_at"]) if end["over"] else None,
                "record_count": len(inside)}
    return out


def expected_territories(truth: dict) -> dict:
    out = {}
    for code, observations in truth.items():
        history = change_rows(observations)
        for month in MONTHS:
            before, inside = split(history, month)
            if not before and not inside:
                continue
            known = bool(before)
            owner = before[-1][1][0] if known else inside[0][1][0]
            start = owner
            changes, since = 0, (month.start if known else inside[0][0])
            for i, (t, (o, _)) in enumerate(inside):
                if (i > 0 or known) and o != owner:
                    changes += 1
                    since = t
                owner = o
            out[(code, month.start)] = {
                "faction_id_start": start, "faction_id_end": owner, "ownership_changes": changes,
                "days_owned": None if owner is None else (month.end + 1 - max(since, month.start)) // 86400,
                "record_count": len(inside)}
    return out


def actual(conn: sqlite3.Connection, table: str, key: str, wanted: list[str]) -> dict:
    out = {}
    for row in conn.execute(f"SELECT {key}, period_start, period_end, period_type, {', '.join(wanted)} FROM {table}"):
        k, start, end, kind, *values = row
        month = Period.containing(start)
        assert (start, end, kind) == (month.start, month.end, "monthly")
        out[(k, start)] = dict(zip(wanted, values))
    return out


def check_summaries(conn: sqlite3.Connection, truth, extra_players=None) -> None:
    exp = expected_numeric(truth.players, PLAYER_FIELDS, frozenset({"life_maximum"}), extra_players)
    got = actual(conn, "player_stats_summary", "player_id", list(next(iter(exp.values()))))
    assert got == exp
    exp = expected_numeric(truth.factions, FACTION_FIELDS)
    assert actual(conn, "faction_summary", "faction_id", list(next(iter(exp.values())))) == exp
    exp = expected_wars(truth.wars)
    assert actual(conn, "war_summary", "war_id", list(next(iter(exp.values())))) == exp
    exp = expected_territories(truth.territories)
    assert actual(conn, "territory_ownership_summary", "territory_id", list(next(iter(exp.values())))) == exp


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world():
    return generate()


@pytest.fixture(scope="module")
def ingested(world, module_stores, tmp_path_factory) -> Path | str:
    """The generated world ingested through the real pipeline; never compacted (tests copy it)."""
    base = tmp_path_factory.mktemp("world")
    capture = write_capture(base / "world.ndjson", world[0])
    db = module_stores.new(base / "torn.db")
    report = ingest_files(str(db), [str(capture)], now=NOW)
    assert report.rejected == [] and report.errors == []
    conn = connect_sync(db)
    assert rows(conn, "SELECT COUNT(*) FROM projection_errors") == [(0,)]
    conn.close()
    return db


@pytest.fixture(scope="module")
def compacted(ingested, module_stores, tmp_path_factory):
    """A copy compacted once at NOW (catching up five months), with what it looked like before."""
    db = module_stores.copy(ingested, tmp_path_factory.mktemp("compacted") / "torn.db")
    conn = connect_sync(db)
    before = {
        "latest": latest_per_stream(conn),
        "events_in_window": rows(conn, "SELECT * FROM events WHERE observed_at >= ? ORDER BY position", (WINDOW,)),
        "history_in_window": {t: rows(conn, f"SELECT * FROM {t} WHERE {c} >= ? ORDER BY id", (WINDOW,))
                              for t, c in HISTORY.items()},
        "events": rows(conn, "SELECT COUNT(*) FROM events")[0][0],
        "state": {t: dump(conn, t) for t in ("players", "factions", "territories")},
        "size": None if is_url(db) else db.stat().st_size,
    }
    conn.close()
    report = run_compact(db)
    return db, report, before


# ---------------------------------------------------------------------------------------------- folds
def test_every_summary_row_matches_the_generated_world(compacted, world):
    db, report, _ = compacted
    conn = connect_sync(db)
    try:
        check_summaries(conn, world[1])
    finally:
        conn.close()
    assert [f.month for f in report.folded] == [m.label for m in MONTHS]
    assert {f.reason for f in report.folded} == {"new"}


def test_rules_are_exercised_by_the_world(compacted):
    """The generated world covers every rule: carried players, a first sighting mid-history, a war
    carried through a month without records, an unresolved war, ownership changes and flaps."""
    db, _, _ = compacted
    conn = connect_sync(db)
    try:
        dec, jan = Period(2026, 12).start, Period(2027, 1).start
        assert rows(conn, "SELECT record_count, strength_change FROM player_stats_summary "
                          "WHERE player_id = 4 AND period_start = ?", (jan,)) == [(0, 0)]
        assert rows(conn, "SELECT MIN(period_start) FROM player_stats_summary WHERE player_id = 5") == [(dec,)]
        assert rows(conn, "SELECT record_count, winner_faction_id, duration_seconds FROM war_summary "
                          "WHERE war_id = 5002 AND period_start = ?", (dec,)) == [(0, None, None)]
        assert rows(conn, "SELECT winner_faction_id, duration_seconds FROM war_summary WHERE war_id = 5003 "
                          "AND period_start = ?", (jan,)) == [(None, None)]
        assert rows(conn, "SELECT ownership_changes FROM territory_ownership_summary WHERE territory_id = 'CAC' "
                          "AND period_start = ?", (Period(2026, 11).start,)) == [(3,)]
        assert rows(conn, "SELECT days_owned FROM territory_ownership_summary WHERE territory_id = 'BAC' "
                          "AND period_start = ?", (dec,)) == [(31,)]
        assert rows(conn, "SELECT record_count, level_change FROM player_stats_summary WHERE player_id = 6 "
                          "AND period_start = ?", (dec,)) == [(0, 0)]
        assert rows(conn, "SELECT period_start, war_type, territory_id, record_count, duration_seconds "
                          "FROM war_summary WHERE war_id = 7001 ORDER BY period_start") == [
            (Period(2026, 11).start, "territory", "EAC", 1, None), (dec, "territory", "EAC", 3, 3 * 86400)]
    finally:
        conn.close()


def test_summary_rows_snapshot(compacted, snapshot):
    db, _, _ = compacted
    conn = connect_sync(db)
    try:
        picked = {
            "player_stats_summary": "player_id = 1 AND period_start IN (1793491200, 1796083200)",
            "faction_summary": "faction_id = 202 AND period_start = 1796083200",
            "war_summary": "war_id = 5001",
            "territory_ownership_summary": "territory_id = 'AAC'",
        }
        got = {t: [dict(zip(columns(conn, t), r, strict=True))
                   for r in conn.execute(f"SELECT * FROM {t} WHERE {w} ORDER BY period_start")]
               for t, w in picked.items()}
    finally:
        conn.close()
    assert got == snapshot


def test_monthly_runs_give_the_same_rows_as_one_catch_up(ingested, compacted, tmp_path, stores):
    """Compacting on the first of every month (pruning as it goes, so later months start from summary
    rows) ends with the same summaries as one catch-up run after five months of downtime."""
    db = stores.copy(ingested, tmp_path / "torn.db")
    for month in MONTHS[1:] + [Period.containing(NOW)]:
        run_compact(db, month.start, backup=False)
    ours = connect_sync(db)
    theirs = connect_sync(compacted[0])
    try:
        for table in SUMMARIES:
            assert dump(ours, table, ("id", "created_at")) == dump(theirs, table, ("id", "created_at")), table
        assert dump(ours, "store_meta") == dump(theirs, "store_meta")
    finally:
        ours.close()
        theirs.close()


# ---------------------------------------------------------------------------------------------- retention
def test_prune_keeps_the_window_and_every_streams_latest_event(compacted):
    db, report, before = compacted
    conn = connect_sync(db)
    try:
        assert [p.month for p in report.pruned] == ["2026-09", "2026-10", "2026-11"]
        # Detail inside the window is untouched.
        assert rows(conn, "SELECT * FROM events WHERE observed_at >= ? ORDER BY position", (WINDOW,)) \
            == before["events_in_window"]
        for table, col in HISTORY.items():
            assert rows(conn, f"SELECT * FROM {table} WHERE {col} >= ? ORDER BY id", (WINDOW,)) \
                == before["history_in_window"][table]
            assert rows(conn, f"SELECT COUNT(*) FROM {table} WHERE {col} < ?", (WINDOW,)) == [(0,)]
        # Older events: only each stream's latest one is left, and every latest one is there.
        kept = {r[0] for r in rows(conn, "SELECT position FROM events WHERE observed_at < ?", (WINDOW,))}
        assert kept and kept <= set(before["latest"].values())
        present = {r[0] for r in rows(conn, "SELECT position FROM events")}
        assert set(before["latest"].values()) <= present
        assert report.events_pruned > 0 and report.history_rows_pruned > 0
        # Bookkeeping.
        assert rows(conn, "SELECT value FROM store_meta WHERE key = 'prune_horizon'") == [(WINDOW,)]
        ledger = rows(conn, "SELECT period_start, state, pruned_at FROM compaction_ledger ORDER BY period_start")
        assert ledger == [(m.start, "pruned" if m.start < WINDOW else "folded", NOW if m.start < WINDOW else None)
                          for m in MONTHS]
        if is_url(db):   # the rest is about the file: its dated backup, and its size
            return
        assert rows(conn, "SELECT path, created_at, reason FROM backups") == [
            (str(dated_backup_path(db, NOW)), NOW, "compact")]
        assert dated_backup_path(db, NOW).name == "torn.db.backup-20270201T000000Z"
    finally:
        conn.close()
    # The backup is the database as it was before the prune: every event is still in it.
    backup = sqlite3.connect(dated_backup_path(db, NOW))
    try:
        assert rows(backup, "SELECT COUNT(*) FROM events")[0][0] == before["events"]
        assert rows(backup, "SELECT COUNT(*) FROM compaction_ledger WHERE state = 'pruned'") == [(0,)]
    finally:
        backup.close()
    # The space came back: the file shrank.
    assert report.reclaimed["pages_freed"] > 0
    assert db.stat().st_size < before["size"]


LIVE = {"players": ("status_description", "life_current", "last_action_status", "last_action_at"),
        "factions": ("age",), "territories": ()}   # refreshed by heartbeats, which replay cannot see


def _replayed_state(db: Path | str) -> dict:
    conn = connect_sync(db)
    try:
        replay(conn)
        for table, col in HISTORY.items():   # replay writes no history behind the horizon
            horizon = rows(conn, "SELECT COALESCE(MAX(value), 0) FROM store_meta WHERE key = 'prune_horizon'")[0][0]
            assert rows(conn, f"SELECT COUNT(*) FROM {table} WHERE {col} < ?", (horizon,)) == [(0,)]
        return {t: dump(conn, t) for t in LIVE}
    finally:
        conn.close()


def test_replay_after_prune_rebuilds_the_same_current_state(ingested, compacted, tmp_path, stores):
    db = stores.copy(compacted[0], tmp_path / "pruned" / "torn.db")
    conn = connect_sync(db)
    try:
        assert {t: dump(conn, t) for t in LIVE} == compacted[2]["state"]  # compaction never touches state
    finally:
        conn.close()
    after_prune = _replayed_state(db)
    # Identical to what replay rebuilds from the whole log, and to the state projected inline (apart from
    # the live columns, which only heartbeats refresh, pruned or not).
    assert after_prune == _replayed_state(stores.copy(ingested, tmp_path / "full" / "torn.db"))
    conn = connect_sync(db)
    try:
        for table, live in LIVE.items():
            assert after_prune[table] and dump(conn, table, live) == sorted(
                [tuple(v for c, v in zip(columns(conn, table), r) if c not in live) for r in
                 compacted[2]["state"][table]], key=repr)
    finally:
        conn.close()
    # And the next compaction leaves the sealed months alone.
    again = run_compact(db, backup=False)
    assert again.folded == [] and again.pruned == []


def test_retention_months_is_configurable(ingested, tmp_path, stores):
    db = stores.copy(ingested, tmp_path / "torn.db")
    seen = []
    report = run_compact(db, retention_months=0, backup=False, progress=lambda *a: seen.append(a))
    assert [p.month for p in report.pruned] == [m.label for m in MONTHS]
    stages = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert stages == ["fold", "keep state"] + [f"prune {m.label}" for m in MONTHS] + ["vacuum"]
    assert ("fold", len(MONTHS), len(MONTHS)) in seen
    conn = connect_sync(db)
    try:
        assert rows(conn, "SELECT value FROM store_meta WHERE key = 'prune_horizon'") == [(NOW,)]
        for table, col in HISTORY.items():
            assert rows(conn, f"SELECT COUNT(*) FROM {table}") == [(0,)]
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- idempotence
def test_running_again_changes_nothing(compacted, tmp_path, stores):
    db = stores.copy(compacted[0], tmp_path / "torn.db")
    before = all_tables_dump(db)
    for _ in range(3):
        report = run_compact(db)
        assert report.folded == [] and report.pruned == [] and report.backup is None
    assert all_tables_dump(db) == before


def test_refolding_a_month_after_its_predecessor_was_pruned_gives_the_same_rows(compacted, tmp_path, stores):
    db = stores.copy(compacted[0], tmp_path / "torn.db")
    before = state_dump(db)
    report = run_compact(db, month="2026-12")
    assert [(f.month, f.reason) for f in report.folded] == [("2026-12", "requested"), ("2027-01", "cascade")]
    after = state_dump(db)
    for table in SUMMARIES:
        assert after[table] == before[table], table


def test_sealed_and_open_months_cannot_be_requested(ingested, compacted):
    conn = connect_sync(compacted[0])
    try:
        with pytest.raises(CompactionError, match="pruned"):
            compact(conn, NOW, month="2026-10")
        with pytest.raises(CompactionError, match="not closed"):
            compact(conn, NOW, month="2027-02")
        with pytest.raises(CompactionError, match="behind the prune horizon"):
            compact(conn, NOW, month="2020-01")
    finally:
        conn.close()
    conn = connect_sync(ingested)
    try:
        with pytest.raises(CompactionError, match="no detail to fold"):
            compact(conn, NOW, month="2020-01", dry_run=True)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- dry run
def test_dry_run_changes_nothing_and_reports_the_run(ingested, compacted, tmp_path, stores):
    db = stores.copy(ingested, tmp_path / "torn.db")
    raw = None if is_url(db) else db.read_bytes()   # (the file's own bytes: SQLite only)
    before = all_tables_dump(db)
    conn = connect_sync(db)
    try:
        assert months_to_fold(conn, NOW) == MONTHS
        report = compact(conn, NOW, dry_run=True)
    finally:
        conn.close()
    assert all_tables_dump(db) == before
    if not is_url(db):
        assert db.read_bytes() == raw
        assert list_backups(db) == []
    real = compacted[1]
    assert report.dry_run and report.backup is None
    assert [(f.month, f.reason, f.summary_rows) for f in report.folded] == \
        [(f.month, f.reason, f.summary_rows) for f in real.folded]
    assert [(p.month, p.events, p.history_rows) for p in report.pruned] == \
        [(p.month, p.events, p.history_rows) for p in real.pruned]
    assert report.horizon_after == real.horizon_after == WINDOW
    assert report.late_behind_horizon == 0 and report.notes == [
        "dry run: nothing was changed; the counts are what a run would delete"]


# ---------------------------------------------------------------------------------------------- late data
def _late_lines(world) -> tuple[list[dict], dict]:
    truth = world[1]
    # (a) Player 1, 2026-12-31 23:30: networth after the last December poll (a folded, unpruned month).
    t_dec = parse_time("2026-12-31T23:30:00Z")
    last_dec = [v for t, v in truth.players[1] if t < t_dec][-1]
    late_dec = dict(last_dec, networth=123_456_789)
    # (b) Player 2, 2026-10-15: behind the prune horizon.
    t_oct = parse_time("2026-10-15T12:00:00Z")
    late_oct = dict([v for t, v in truth.players[2] if t < t_oct][-1], networth=987_654_321)
    lines = [{"url": "https://api.torn.com/user/1?selections=personalstats", "observed_at": t_dec,
              "body": personalstats_body(late_dec)},
             {"url": "https://api.torn.com/user/2?selections=personalstats", "observed_at": t_oct,
              "body": personalstats_body(late_oct)}]
    extra = {1: [(t_dec, {f: late_dec[f] for f in PLAYER_FIELDS})]}
    return lines, extra


def test_late_data_refolds_its_month_or_is_kept_and_reported(compacted, world, tmp_path, stores):
    db = stores.copy(compacted[0], tmp_path / "torn.db")
    sealed_before = state_dump(db)
    lines, extra = _late_lines(world)
    ingest_files(str(db), [str(write_capture(tmp_path / "late.ndjson", lines))], now=NOW)
    conn = connect_sync(db)
    try:
        assert [(p.period.label, p.reason) for p in plan(conn, NOW)] == [("2026-12", "late"), ("2027-01", "cascade")]
        preview = compact(conn, NOW, dry_run=True)
        assert [(f.month, f.reason) for f in preview.folded] == [("2026-12", "late"), ("2027-01", "cascade")]
        assert preview.late_behind_horizon == 1
        report = compact(conn, NOW)
        assert [(f.month, f.reason) for f in report.folded] == [("2026-12", "late"), ("2027-01", "cascade")]
        assert report.late_behind_horizon == 1
        assert report.late_behind_horizon_by_month == {"2026-10": 1}
        assert any("prune horizon" in note for note in report.notes)
        # The refolded months now include the late row; the sealed months are as they were.
        check_summaries(conn, world[1], extra_players=extra)
        after = state_dump(db)
        for table in SUMMARIES:
            old = [r for r in sealed_before[table] if r[columns(conn, table).index("period_start")] < WINDOW]
            new = [r for r in after[table] if r[columns(conn, table).index("period_start")] < WINDOW]
            assert new == old, table
        # The event behind the horizon is kept in the log, with no history row, and stays through more runs.
        t_oct = parse_time("2026-10-15T12:00:00Z")
        assert len(rows(conn, "SELECT position FROM events WHERE observed_at = ?", (t_oct,))) == 1
        assert rows(conn, "SELECT COUNT(*) FROM player_stats_history WHERE timestamp = ?", (t_oct,)) == [(0,)]
        again = compact(conn, NOW)
        assert again.folded == [] and again.late_behind_horizon == 1
        assert len(rows(conn, "SELECT position FROM events WHERE observed_at = ?", (t_oct,))) == 1
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- crashes
_CHILD = ("import sys; from tornstore.eventstore.db import connect_sync; from tornstore.projections.compactor import compact; "
          "conn = connect_sync(sys.argv[1]); compact(conn, int(sys.argv[2]), batch=int(sys.argv[3])); conn.close()")


def _child(db: Path | str, crash_at: str | None, batch: int = 40) -> subprocess.Popen:
    """`compact` in a real process. Small prune batches (40 rows) make many batches to die between; the
    runs after a crash use the default batch size, which must not change the outcome."""
    env = {k: v for k, v in os.environ.items() if k != "TORNSTORE_CRASH_AT"}
    if crash_at:
        env["TORNSTORE_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(db), str(NOW), str(batch)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _integrity(db: Path | str) -> None:
    conn = connect_sync(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


@pytest.fixture(scope="module")
def uninterrupted(ingested, module_stores, tmp_path_factory) -> dict:
    db = module_stores.copy(ingested, tmp_path_factory.mktemp("reference") / "torn.db")
    proc = _child(db, None, batch=20000)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return state_dump(db)


CRASH_POINTS = ["plan:marked", "fold:2026-09:computed", "fold:2026-10:before-commit", "fold:2026-11:committed",
                "fold:2027-01:committed", "backup:before", "backup:copied", "backup:rotated", "snapshot:built",
                "snapshot:before-commit", "snapshot:committed",
                "prune:batch:1:before-commit", "prune:batch:1", "prune:batch:7", "prune:batch:15:before-commit",
                "prune:batch:19", "prune:2026-10:before-seal",
                "prune:2026-10:sealed", "prune:2026-11:sealed", "compact:done"]


def test_killed_at_any_step_then_rerun_ends_like_an_uninterrupted_run(ingested, uninterrupted, tmp_path, stores):
    # On PostgreSQL a fold killed before its commit has used up identity values (a sequence does not roll back,
    # SQLite's AUTOINCREMENT does): the rerun's summary rows are the same rows under later ids there.
    same = _without_summary_ids if is_url(ingested) else (lambda state: state)
    # PostgreSQL takes no file backup before the prune: the backup steps do not exist there.
    points = [p for p in CRASH_POINTS if not (is_url(ingested) and p.startswith("backup:"))]
    events_before = None
    for n, point in enumerate(points):
        db = stores.copy(ingested, tmp_path / f"c{n}" / "torn.db")
        if events_before is None:
            conn = connect_sync(db)
            events_before = rows(conn, "SELECT COUNT(*) FROM events")[0][0]
            conn.close()
        proc = _child(db, point)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 86, f"{point}: {err}"
        _integrity(db)
        if point.startswith(("plan", "fold", "backup", "snapshot")):
            conn = connect_sync(db)   # no delete before every fold is complete and the state is kept
            assert rows(conn, "SELECT COUNT(*) FROM events")[0][0] == events_before, point
            conn.close()
        run_compact(db)
        assert same(state_dump(db)) == same(uninterrupted), point


def _without_summary_ids(state: dict) -> dict:
    out = dict(state)
    for table in SUMMARIES:
        out[table] = sorted((row[1:] for row in state[table]), key=repr)   # (dump's first column is id)
    return out


@pytest.mark.sqlite_only("SIGKILL at random moments of writing the file")
def test_sigkill_at_random_moments_then_rerun_ends_like_an_uninterrupted_run(ingested, uninterrupted, tmp_path,
                                                                            stores):
    rnd = random.Random(11)
    for n in range(4):
        db = stores.copy(ingested, tmp_path / f"k{n}" / "torn.db")
        proc = _child(db, None)
        time.sleep(rnd.uniform(0.2, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        _integrity(db)
        run_compact(db)
        assert state_dump(db) == uninterrupted, n


def test_killed_during_a_refold_cascade_still_refolds_the_later_months(compacted, world, tmp_path, stores):
    lines, extra = _late_lines(world)
    base = stores.copy(compacted[0], tmp_path / "base" / "torn.db")
    ingest_files(str(base), [str(write_capture(tmp_path / "late.ndjson", lines))], now=NOW)
    reference = stores.copy(base, tmp_path / "ref" / "torn.db")
    run_compact(reference)
    crashed = stores.copy(base, tmp_path / "crash" / "torn.db")
    proc = _child(crashed, "fold:2026-12:committed")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 86, err
    conn = connect_sync(crashed)
    try:
        assert [(p.period.label, p.reason) for p in plan(conn, NOW)] == [("2027-01", "stale")]
    finally:
        conn.close()
    run_compact(crashed)
    ref, got = state_dump(reference), state_dump(crashed)
    for key in ref:
        if key not in ("files", "backups"):
            assert got[key] == ref[key], key
    conn = connect_sync(crashed)
    try:
        check_summaries(conn, world[1], extra_players=extra)
    finally:
        conn.close()


def test_late_data_into_a_half_pruned_month_is_kept_not_folded(ingested, uninterrupted, world, tmp_path, stores):
    """Killed in the middle of pruning October, then a late October event arrives: October is never
    folded again (part of its detail is gone); the next run finishes the prune and reports the event."""
    db = stores.copy(ingested, tmp_path / "torn.db")
    proc = _child(db, "prune:2026-10:batch:3")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 86, err
    conn = connect_sync(db)
    assert rows(conn, "SELECT state, pruned_events + pruned_history_rows > 0 FROM compaction_ledger "
                      "WHERE period_start = ?", (Period(2026, 10).start,)) == [("folded", 1)]
    conn.close()
    t = parse_time("2026-10-20T12:00:00Z")
    late = dict([v for s_, v in world[1].players[3] if s_ < t][-1], networth=5)
    ingest_files(str(db), [str(write_capture(tmp_path / "late.ndjson", [
        {"url": "https://api.torn.com/user/3?selections=personalstats", "observed_at": t,
         "body": personalstats_body(late)}]))])
    report = run_compact(db)
    assert report.folded == [] and [p.month for p in report.pruned] == ["2026-10", "2026-11"]
    assert report.late_behind_horizon_by_month == {"2026-10": 1}
    got = state_dump(db)
    for table in SUMMARIES + tuple(HISTORY) + ("store_meta",):
        assert got[table] == uninterrupted[table], table   # no history row is left behind the horizon
    # The state at the horizon was kept before the first delete, which sealed October: inline projection
    # wrote no history row for the late event, so the ledger counts what an uninterrupted run counts.
    assert got["ledger"] == uninterrupted["ledger"]
    conn = connect_sync(db)
    assert len(rows(conn, "SELECT position FROM events WHERE observed_at = ?", (t,))) == 1   # the event stays
    conn.close()


# ---------------------------------------------------------------------------------------------- ledger rules
@pytest.mark.sqlite_only("a SQLite trigger makes the failing write")
def test_a_month_without_a_completed_fold_is_never_pruned(ingested, tmp_path, stores):
    """A fold that fails part-way (here: a failing write in the middle of November's fold) leaves no
    ledger row for that month, and nothing at all is deleted."""
    db = stores.copy(ingested, tmp_path / "torn.db")
    conn = connect_sync(db)
    events = rows(conn, "SELECT COUNT(*) FROM events")[0][0]
    conn.execute(f"CREATE TRIGGER no_november BEFORE INSERT ON faction_summary WHEN NEW.period_start = "
                 f"{Period(2026, 11).start} BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="disk full"):
            compact(conn, NOW)
        assert rows(conn, "SELECT period_start, state FROM compaction_ledger ORDER BY 1") == [
            (Period(2026, 9).start, "folded"), (Period(2026, 10).start, "folded")]
        assert rows(conn, "SELECT COUNT(*) FROM events")[0][0] == events
        assert rows(conn, "SELECT COUNT(*) FROM player_stats_summary WHERE period_start = ?",
                    (Period(2026, 11).start,)) == [(0,)]
        conn.execute("DROP TRIGGER no_november")
        report = compact(conn, NOW, backup=False)
        assert [f.month for f in report.folded] == ["2026-11", "2026-12", "2027-01"]
        assert [p.month for p in report.pruned] == ["2026-09", "2026-10", "2026-11"]
    finally:
        conn.close()


def test_an_empty_database_has_nothing_to_do(conn):
    assert months_to_fold(conn, NOW) == []
    report = compact(conn, NOW)
    assert report.folded == [] and report.pruned == [] and report.backup is None


def _hand_rows(conn, sql_rows: list[tuple[str, tuple]]) -> None:
    conn.execute("BEGIN")
    conn.execute("INSERT INTO factions (faction_id, name, created_at, last_updated) VALUES (1, 'A', 0, 0), "
                 "(2, 'B', 0, 0)")
    conn.execute("INSERT INTO players (player_id, name, created_at, last_updated) VALUES (7, 'P', 0, 0)")
    for sql, args in sql_rows:
        conn.execute(sql, args)
    conn.execute("COMMIT")


def test_a_stat_missing_from_a_record_keeps_its_last_known_value(conn):
    """NULL in a history row means "not observed in that record": end is the last non-NULL value."""
    oct_, nov = Period(2026, 10), Period(2026, 11)
    ins = "INSERT INTO player_stats_history (player_id, timestamp, strength, networth) VALUES (7, ?, ?, ?)"
    _hand_rows(conn, [(ins, (oct_.start + 10, 100, None)), (ins, (oct_.start + 20, None, 50)),
                      (ins, (nov.start + 5, None, 70))])
    compact(conn, Period(2026, 12).start, backup=False)
    got = rows(conn, "SELECT period_start, strength_start, strength_end, strength_change, networth_start, "
                     "networth_end, networth_change, record_count FROM player_stats_summary ORDER BY 1")
    assert got == [(oct_.start, 100, 100, 0, 50, 50, 0, 2), (nov.start, 100, 100, 0, 50, 70, 20, 1)]


def test_a_war_id_shared_by_a_ranked_and_a_territory_war_keeps_both(conn):
    month = Period(2026, 10)
    ins = ("INSERT INTO war_status_history (war_id, war_type, territory_id, attacking_faction_id, "
           "defending_faction_id, status, recorded_at) VALUES (9, ?, ?, 1, 2, 'ongoing', ?)")
    _hand_rows(conn, [(ins, ("ranked", None, month.start + 5)), (ins, ("territory", "AAC", month.start + 6))])
    report = compact(conn, month.next.start, backup=False)
    assert rows(conn, "SELECT war_id, war_type FROM war_summary ORDER BY war_type") == [(9, "ranked"), (9, "territory")]
    assert report.folded[0].summary_rows["war_summary"] == 2


# ---------------------------------------------------------------------------------------------- backups
def test_backup_rotation_keeps_the_newest(tmp_path):
    db = tmp_path / "torn.db"
    conn = connect_sync(db)
    conn.execute("CREATE TABLE t (x)")
    try:
        for day in range(5):
            backup_database(conn, dated_backup_path(db, NOW + day * 86400), created_at=NOW + day * 86400,
                            record=False)
        (tmp_path / "torn.db.backup-20270201T000000Z.partial").write_bytes(b"junk")
        removed = rotate_backups(db, 3)
    finally:
        conn.close()
    assert [Path(p).name for p in removed] == ["torn.db.backup-20270201T000000Z", "torn.db.backup-20270202T000000Z"]
    assert [p.name for p in list_backups(db)] == ["torn.db.backup-20270203T000000Z",
                                                   "torn.db.backup-20270204T000000Z",
                                                   "torn.db.backup-20270205T000000Z"]
    with pytest.raises(FileExistsError):
        conn = connect_sync(db)
        try:
            backup_database(conn, dated_backup_path(db, NOW + 4 * 86400))
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------- CLI
def _scrub(report: dict) -> dict:
    report = dict(report)
    if report.get("backup"):
        report["backup"] = Path(report["backup"]).name
    if report.get("reclaimed"):
        report["reclaimed"] = {k: (v if k == "method" else "<bytes>") for k, v in report["reclaimed"].items()}
    return report


@pytest.mark.sqlite_only("the report names the file's dated backup and how its space came back")
def test_cli_compact_json(ingested, tmp_path, snapshot, stores):
    from tornstore.cli.main import cli

    db = stores.copy(ingested, tmp_path / "torn.db")
    runner = CliRunner()
    dry = runner.invoke(cli, ["--db", str(db), "compact", "--now", "2027-02-01T00:00:00Z", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would fold 5 month(s)" in dry.output and "would delete" in dry.output
    result = runner.invoke(cli, ["--db", str(db), "compact", "--now", "2027-02-01T00:00:00Z", "--json"])
    assert result.exit_code == 0, result.output
    assert _scrub(json.loads(result.stdout)) == snapshot
    again = runner.invoke(cli, ["--db", str(db), "compact", "--now", str(NOW)])
    assert again.exit_code == 0 and "no month to fold" in again.output and "no detail to prune" in again.output
    bad = runner.invoke(cli, ["--db", str(db), "compact", "--now", "yesterday"])
    assert bad.exit_code == 1 and "--now" in bad.output
    sealed = runner.invoke(cli, ["--db", str(db), "compact", "--now", str(NOW), "--month", "2026-10"])
    assert sealed.exit_code == 1 and "sealed" in sealed.output


@pytest.mark.sqlite_only("dated backups beside the file")
def test_cli_backup(ingested, tmp_path, stores):
    from tornstore.cli.main import cli

    db = stores.copy(ingested, tmp_path / "torn.db")
    out = tmp_path / "elsewhere.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "backup", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(out)
    assert all_tables_dump(out)["events"] == all_tables_dump(db)["events"]
    again = CliRunner().invoke(cli, ["--db", str(db), "backup", "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output
    dated = CliRunner().invoke(cli, ["--db", str(db), "backup"])
    assert dated.exit_code == 0, dated.output
    assert len(list_backups(db)) == 1


# ---------------------------------------------------------------------------------------------- periods
def test_month_arithmetic_and_clock_parsing():
    assert Period.parse("2027-01").previous == Period(2026, 12)
    assert Period(2026, 12).next == Period(2027, 1)
    assert Period(2024, 2).end - Period(2024, 2).start + 1 == 29 * 86400
    assert Period.containing(parse_time("2027-01-31T23:59:59Z")) == Period(2027, 1)
    assert Period(2027, 1).end == parse_time("2027-01-31T23:59:59Z")
    assert parse_time("2027-02-01T00:00:00Z") == parse_time("1801440000") == parse_time("2027-02-01") == NOW
    assert parse_time("2027-02-01T02:00:00+02:00") == NOW
    assert retention_start(NOW + 5, 2) == Period(2026, 12).start
    for bad in ("2027-13", "27-01", "x"):
        with pytest.raises(ValueError):
            Period.parse(bad)
    with pytest.raises(ValueError):
        parse_time("soon")

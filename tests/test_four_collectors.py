"""Four collectors in four processes, polling overlapping factions of one simulated Torn for a week, store no
duplicate and lose no change; `verify` passes and `replay` changes nothing. On a SQLite file and on a
PostgreSQL database.

One simulator server (a process of its own) serves a world of four factions. Four collector processes
(tests/collectorkit.py: the real aiohttp Collector, its key pool and scheduler) each poll two of the
factions, so every faction is polled by two of them (0-1, 1-2, 2-3, 3-0), three players each
(every player by two), and, every two simulated hours, the members of their factions, the players'
personal stats, the territory map (two of them) or a few territories by id (the other two), and the war
lists (three of them). A fifth process, the reference, is one collector polling the union of the four
configs into a SQLite file of its own.

Simulated time runs a week in 20-minute rounds. Each round the parent moves the simulator's clock, and all
five processes poll that moment at once and commit; the next round starts when all have committed. So
the four writers race on the same streams with the same observations (the case where a duplicate or a
lost change would show), and the reference sees exactly what the four saw together, which the test
checks first from their captures, before it compares the stores.

Not in scope here: a writer whose older observations arrive after another's newer ones (late data), with
its documented limit in the log (README, "Readers and writers"); tests/test_arrival_order.py covers it.
"""
from __future__ import annotations

import collections
import hashlib
import json
import time
from pathlib import Path

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.simulator import World
from tornstore.eventstore.simulator.process import SimulatorProcess

from .collectorkit import CollectorProcess
from .crashkit import cli, invariants

SEED = 7
WORLD = {"seed": SEED, "factions": 4, "members_per_faction": [6, 10], "territories": 300}
DAYS = 7
STEP = 20 * 60              # simulated seconds between rounds
SLOW_EVERY = 6              # rounds: members, personal stats, territories and wars every 2 simulated hours
WRITERS = 4

# Every projected table, compared whole except the row id and event_position (the order of arrival,
# which differs between the four writers' store and the reference's).
TABLES = {"players": "player_id", "factions": "faction_id", "territories": "territory_id",
          "player_stats_history": "player_id, timestamp", "faction_history": "faction_id, timestamp",
          "war_status_history": "war_id, recorded_at", "territory_ownership_history": "territory_id, recorded_at",
          "stat_history": "entity_type, entity_id, stat, recorded_at"}


# ------------------------------------------------------------------------------------------ the configs
def _configs(url: str, key: str, owner: str, *, factions: list[int], players: list[int], map_all: bool,
             territory_ids: list[str], wars: bool) -> dict[str, dict]:
    """parse_config data for the two kinds of round: 'fast' (every round) and 'slow' (every SLOW_EVERY)."""
    base = {"api_base": url, "interval": "20m", "jitter": 0, "batch": 1000, "concurrency": 4,
            "keys": [{"key": key, "owner": owner, "access": "public", "budget": 100}]}
    fast = {**base,
            "factions": [{"id": f, "fetch": ["basic", "members", "wars"]} for f in factions],
            "players": [{"id": p, "fetch": ["profile"]} for p in players]}
    territories = ([{"all": True, "api": "v2"}] if map_all else []) + \
                  ([{"ids": territory_ids}] if territory_ids else [])
    slow = {**base,
            "factions": [{"id": f, "fetch": ["basic", "members", "wars"], "members": True,
                          "member_fetch": ["profile"]} for f in factions],
            "players": [{"id": p, "fetch": ["profile", "personalstats"]} for p in players]}
    if territories:
        slow["territories"] = territories
    if wars:
        slow["wars"] = {"ranked": True, "territory": True}
    return {"fast": fast, "slow": slow}


def _keys_of_one_owner(world: World, prefixes: list[str]) -> list[str]:
    """A 16-character key per prefix, all of which the simulator gives the same owner."""
    owner = world.owner_for_key(prefixes[0] + "000000")
    keys = []
    for prefix in prefixes:
        key = next(k for k in (f"{prefix}{n:06d}" for n in range(1_000_000)) if world.owner_for_key(k) == owner)
        keys.append(key)
    return keys


def _plan(url: str, faction_ids: list[int]) -> tuple[list[dict], dict]:
    """The four writers' configs (overlapping pairwise) and the reference's (their union)."""
    world = World(**{**WORLD, "members_per_faction": tuple(WORLD["members_per_faction"])})
    assert sorted(world.factions) == faction_ids
    # A member of each faction (also polled as a member in slow rounds) and two players in no faction.
    members = [sorted(world.factions[f].members)[0] for f in faction_ids]
    loners = sorted(set(world.players) - set(world.initial_members))[:2]
    codes = sorted(world.territories)[:6]
    # Torn shows a faction's own members more (revive settings, OC, enlistment): a key's owner changes what
    # it sees. Five keys of one owner, so that what one process sees another would see at the same moment.
    keys = _keys_of_one_owner(world, ["WRITER0KEY", "WRITER1KEY", "WRITER2KEY", "WRITER3KEY", "REFERENCEK"])
    owner = str(world.owner_for_key(keys[0]))
    writers = []
    for i in range(WRITERS):
        writers.append(_configs(
            url, keys[i], owner,
            factions=[faction_ids[i], faction_ids[(i + 1) % WRITERS]],
            players=[members[i], members[(i + 1) % WRITERS], loners[i % 2]],
            map_all=i % 2 == 0, territory_ids=codes if i % 2 else [], wars=i != 0))
    reference = _configs(url, keys[WRITERS], owner, factions=faction_ids,
                         players=sorted(set(members) | set(loners)), map_all=True, territory_ids=codes, wars=True)
    return writers, reference


# ------------------------------------------------------------------------------------------ the run
def _run_week(db: str | Path, root: Path) -> dict:
    """Start the simulator and five collector processes, drive a week of rounds; their final reports and
    capture paths."""
    assert cli(db, "init").returncode == 0
    reference_db = root / "reference.db"
    assert cli(reference_db, "init").returncode == 0
    procs: list[CollectorProcess] = []
    with SimulatorProcess(rate_limit=None, **WORLD) as sim:
        writers, reference = _plan(sim.url, sim.faction_ids)
        try:
            for i, configs in enumerate(writers):
                procs.append(CollectorProcess(f"writer{i}", {"db": str(db), "capture": str(root / f"writer{i}.ndjson"),
                                                             "configs": configs}, root))
            procs.append(CollectorProcess("reference", {"db": str(reference_db),
                                                        "capture": str(root / "reference.ndjson"),
                                                        "configs": reference}, root))
            rounds = DAYS * 86400 // STEP
            started = time.perf_counter()
            for r in range(rounds + 1):
                t = sim.start + r * STEP
                sim.set_clock(t)
                kind = "fast" if r % SLOW_EVERY else "slow"
                for proc in procs:
                    proc.send(f"{t} {kind}")
                for proc in procs:
                    proc.receive(f"the {kind} round at {t} (round {r})")
            finals = {proc.name: proc.stop() for proc in procs}
            seconds = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.close()
    return {"finals": finals, "seconds": seconds, "rounds": rounds + 1, "reference": reference_db,
            "start": sim.start, "end": sim.start + rounds * STEP}


def _observations(path: Path) -> collections.Counter:
    """(url, observed_at, body digest) of every response a process stored, counted."""
    seen: collections.Counter = collections.Counter()
    with open(path, "rb") as fh:
        for line in fh:
            row = json.loads(line)
            body = json.dumps(row["body"], sort_keys=True, separators=(",", ":")).encode()
            seen[(row["url"], row["observed_at"], hashlib.blake2b(body, digest_size=16).hexdigest())] += 1
    return seen


# ------------------------------------------------------------------------------------------ reading a store
def _query(db, sql: str, *args) -> list[tuple]:
    conn = connect_sync(db)
    try:
        return [tuple(row) for row in conn.execute(sql, args).fetchall()]
    finally:
        close_sync(conn)


def _log(db) -> dict[tuple, list[tuple]]:
    """Per stream (type, id, view): its events (version, observed_at, hash, payload) in version order."""
    out: dict[tuple, list[tuple]] = {}
    for etype, eid, view, version, observed, digest, payload in _query(
            db, "SELECT s.entity_type, s.entity_id, s.view, e.version, e.observed_at, e.hash, e.payload "
                "FROM events e JOIN streams s USING (stream_id) ORDER BY s.entity_type, s.entity_id, s.view, "
                "e.version"):
        out.setdefault((etype, eid, view), []).append((int(version), int(observed), digest, payload))
    return out


def _streams(db) -> dict[tuple, tuple]:
    return {(r[0], r[1], r[2]): tuple(int(v) for v in r[3:]) for r in _query(
        db, "SELECT entity_type, entity_id, view, version, first_seen, head_observed_at, last_checked "
            "FROM streams")}


def _tables(db) -> dict[str, list[tuple]]:
    conn = connect_sync(db)
    try:
        out = {}
        for table, order in TABLES.items():
            cursor = conn.execute(f"SELECT * FROM {table} LIMIT 0")
            cols = [d[0] for d in cursor.description if d[0] not in ("id", "event_position")]
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {order}").fetchall()
            out[table] = sorted((tuple(row) for row in rows), key=repr)  # (the backends sort NULL apart)
        return out
    finally:
        close_sync(conn)


def _tables_with_positions(db) -> dict[str, list[tuple]]:
    from tornstore.projections.health import COMPARED_TABLES, table_rows
    conn = connect_sync(db)
    try:
        return {table: table_rows(conn, table) for table in COMPARED_TABLES}
    finally:
        close_sync(conn)


# ------------------------------------------------------------------------------------------ the test
def test_four_collectors_for_a_simulated_week_store_no_duplicate_and_lose_no_change(db_path, tmp_path):
    began = time.perf_counter()
    run = _run_week(db_path, tmp_path)
    finals = run["finals"]

    # 1. Every poll answered; no process waited inside a round (so all saw the same moments); none deferred.
    for name, kinds in finals.items():
        for kind, report in kinds.items():
            assert report["polls_failed"] == 0 and report["gaps"] == 0 and report["deferred"] == 0, (name, report)
            assert not report["errors"] and not report["failures"], (name, report)
            assert report["waits"] == 0, (name, report)
            assert report["responses"] > 0, (name, kind, report)

    # 2. The premise: the four saw together exactly what the reference saw (same URLs, times and bodies),
    # and they overlapped: observations made by two or more writers at the same moment.
    union: collections.Counter = collections.Counter()
    for i in range(WRITERS):
        union += _observations(tmp_path / f"writer{i}.ndjson")
    reference_seen = _observations(tmp_path / "reference.ndjson")
    assert set(reference_seen.values()) == {1}, "the reference polled something twice in one round"
    missing, extra = set(reference_seen) - set(union), set(union) - set(reference_seen)
    assert not missing and not extra, (f"the four writers saw {len(missing)} responses fewer and {len(extra)} "
                                       f"more than the reference, e.g. {sorted(missing)[:1]} {sorted(extra)[:1]}")
    shared = sum(1 for n in union.values() if n >= 2)
    assert shared > len(union) / 3, f"too little overlap: {shared} of {len(union)} responses seen twice or more"
    times = {t for _, t, _ in union}
    assert max(times) - min(times) == DAYS * 86400 and len(times) == run["rounds"]

    # 3. The store after four writers: whole, checkpoints at the end of the log, versions gapless.
    facts = invariants(db_path)
    log, want_log = _log(db_path), _log(run["reference"])
    assert facts["events"] == sum(len(events) for events in log.values())
    # No duplicate: each stream's events change its state at every version and run forward in time, and no
    # state observed at one moment is stored twice.
    for stream, events in log.items():
        assert [e[0] for e in events] == list(range(1, len(events) + 1)), stream
        for before, after in zip(events, events[1:], strict=False):
            assert before[2] != after[2], f"{stream}: versions {before[0]} and {after[0]} have the same state"
            assert before[1] < after[1], f"{stream}: version {after[0]} is not later than {before[0]}"
    twice = _query(db_path, "SELECT stream_id, hash, observed_at FROM events GROUP BY stream_id, hash, observed_at "
                            "HAVING COUNT(*) > 1")
    assert not twice, f"states stored twice at one moment (stream, hash, observed_at): {twice[:3]}"
    # Lose no change: every stream the reference has, with the same events (times, states, payloads).
    lost = sorted(set(want_log) - set(log))
    assert not lost, f"{len(lost)} streams missing, e.g. {lost[:3]}"
    assert set(log) == set(want_log)
    different = sorted(s for s in want_log if log[s] != want_log[s])
    assert not different, (f"{len(different)} streams differ from the reference, e.g. {different[0]}: "
                           f"{[e[:3] for e in log[different[0]]]} vs {[e[:3] for e in want_log[different[0]]]}")
    assert _streams(db_path) == _streams(run["reference"])
    changes = sum(len(events) for events in want_log.values())
    assert changes > 3 * len(want_log), "the week changed too little to tell a lost change"
    # Every change of the factions polled twice stored once: the writers' appended counts add up to the log.
    appended = sum(report["appended"] for i in range(WRITERS) for report in finals[f"writer{i}"].values())
    assert appended == facts["events"]

    # 4. The projected tables equal the reference's, row for row (live columns and times of last check too).
    tables, want_tables = _tables(db_path), _tables(run["reference"])
    for table in TABLES:
        assert want_tables[table], f"the week gave no {table} rows: the comparison would be empty"
        got, want = set(tables[table]), set(want_tables[table])
        assert tables[table] == want_tables[table], (
            f"{table}: {len(want - got)} reference rows missing, {len(got - want)} others, e.g. "
            f"{sorted(want - got, key=repr)[:1]} / {sorted(got - want, key=repr)[:1]}")

    # 5. verify passes, and replay changes nothing.
    done = cli(db_path, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    before = _tables_with_positions(db_path)
    done = cli(db_path, "replay")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _tables_with_positions(db_path) == before
    assert _log(db_path) == log

    backend = "postgresql" if str(db_path).startswith("postgresql://") else "sqlite"
    print(f"\n{backend}: {run['rounds']} rounds, {changes} events in {len(want_log)} streams, "
          f"{sum(union.values())} responses by the four ({shared} seen by two or more), "
          f"collect {run['seconds']:.1f} s, whole test {time.perf_counter() - began:.1f} s")

"""Shared pieces of the benchmark: sizes, timing, memory, scratch directories and the simulated workloads.

Every workload comes from the simulator's world model (`eventstore.simulator`), so shapes and change rates
are the ones tests see: most 4-minute polls change nothing that is tracked.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

from tornstore.eventstore.records import Response
from tornstore.eventstore.simulator.workload import PollPlan, answer, round_urls
from tornstore.eventstore.simulator.world import DAY, DEFAULT_START, World

SEED = 20260101


# ------------------------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one run. `quick` is the CI variant (about a minute in all)."""
    quick: bool
    # ingest: a realistic mix (v1 and v2 factions with members, hourly profiles, hourly territory map)
    ingest_factions: int
    ingest_hours: float
    ingest_batch: int               # responses per ingest transaction (the collector's default batch)
    naive_responses: int            # subset the naive pattern runs on (rounded up to whole hourly cycles)
    # replay
    replay_events: int
    replay_budget_s: float          # the replay stops here (reported as incomplete) to keep the run bounded
    # compact
    compact_rows: int
    # storage: 4-minute polls of factions and their members
    storage_factions: int
    storage_days: int
    # query
    query_calls: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(quick=True, ingest_factions=3, ingest_hours=4, ingest_batch=50, naive_responses=500,
                       replay_events=50_000, replay_budget_s=60, compact_rows=50_000,
                       storage_factions=3, storage_days=3, query_calls=500)
        return cls(quick=False, ingest_factions=10, ingest_hours=36, ingest_batch=50, naive_responses=2_000,
                   replay_events=1_000_000, replay_budget_s=150, compact_rows=1_000_000,
                   storage_factions=10, storage_days=30, query_calls=1_000)


# ------------------------------------------------------------------------------------------------ timing
class Stopwatch:
    """Accumulates the time spent inside `with sw:` blocks (only what is measured, nothing between)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds += time.perf_counter() - self._t0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def summary_ms(samples_s: list[float]) -> dict:
    return {"p50_ms": round(percentile(samples_s, 50) * 1000, 4),
            "p99_ms": round(percentile(samples_s, 99) * 1000, 4),
            "mean_ms": round(statistics.fmean(samples_s) * 1000, 4)}


def rnd(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


# ------------------------------------------------------------------------------------------------ memory
def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ files
@contextmanager
def scratch_dir(prefix: str = "tornstore-bench-") -> Iterator[Path]:
    """A temporary directory (TORNSTORE_BENCH_DIR or the system temp dir), removed afterwards."""
    base = os.environ.get("TORNSTORE_BENCH_DIR") or None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def checkpointed_size(path: Path) -> int:
    """Bytes of a database file after folding its WAL back in (PRAGMA wal_checkpoint(TRUNCATE))."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    size = path.stat().st_size
    for suffix in ("-wal", "-shm"):
        extra = Path(str(path) + suffix)
        if suffix == "-wal" and extra.exists():
            size += extra.stat().st_size  # 0 after TRUNCATE; counted in case a reader kept it open
    return size


def copy_database(src: Path, dst: Path) -> None:
    """A consistent copy of a database (sqlite3 backup API), WAL folded in."""
    s = sqlite3.connect(str(src))
    d = sqlite3.connect(str(dst))
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()


# ------------------------------------------------------------------------------------------------ readiness
def missing(*modules: str) -> str | None:
    """The reason a section cannot run yet (a module still being written), else None."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return f"{name} is not importable yet ({exc})"
    return None


# ------------------------------------------------------------------------------------------------ workloads
@dataclass
class Workload:
    """A world and the poll plans run against it, round by round."""
    world: World
    plans: list[PollPlan]
    start: int
    end: int
    interval: int = 240
    description: str = ""

    def rounds(self) -> Iterator[list[Response]]:
        """Advance the world and yield each round's responses (every plan polled in the same round)."""
        t = self.start
        number = 0
        while t < self.end:
            self.world.advance_to(t)
            urls: list[str] = []
            seen: set[str] = set()
            for plan in self.plans:
                for url in round_urls(self.world, plan, number):
                    if url not in seen:
                        seen.add(url)
                        urls.append(url)
            yield [Response(url=url, observed_at=t, body=answer(self.world, url)) for url in urls]
            number += 1
            t += self.interval

    def responses(self) -> Iterator[Response]:
        for batch in self.rounds():
            yield from batch


def mixed_workload(factions: int, hours: float, seed: int = SEED) -> Workload:
    """The ingest mix: half the factions polled through v2 (basic, members, wars every round), half
    through v1 (faction basic with its member list); every member's profile hourly (v2 or v1 like its
    faction); the full territory map (v1 torn territory, every territory) hourly; v1 ranked/territory
    wars hourly. 4-minute rounds."""
    world = World(seed=seed, factions=factions)
    ids = sorted(world.factions)
    v2 = PollPlan(factions=tuple(ids[0::2]), api="v2", member_profiles_every=15, wars_every=1,
                  territory_map_every=15)
    plans = [v2]
    if ids[1::2]:
        plans.append(PollPlan(factions=tuple(ids[1::2]), api="v1", member_profiles_every=15, wars_every=15))
    members = sum(len(f.members) for f in world.factions.values())
    desc = (f"{factions} factions ({members} members at start; half v2 basic+members+wars each round, half v1 "
            f"faction basic with members), member profiles hourly, full territory map "
            f"({len(world.territories)} territories) hourly, v1 wars hourly; 4-minute rounds over {hours:g} h")
    return Workload(world, plans, DEFAULT_START, DEFAULT_START + int(hours * 3600), description=desc)


def faction_workload(factions: int, days: float, seed: int = SEED) -> Workload:
    """The storage workload: 4-minute polls of N factions through v2 (basic, members, wars) and every
    member's v2 profile every 15 rounds (hourly). No territory map."""
    world = World(seed=seed, factions=factions)
    ids = tuple(sorted(world.factions))
    plan = PollPlan(factions=ids, api="v2", member_profiles_every=15, wars_every=1, territory_map_every=0)
    members = sum(len(f.members) for f in world.factions.values())
    desc = (f"PollPlan(factions={factions}, api='v2', member_profiles_every=15, wars_every=1): v2 faction "
            f"basic+members+wars every 4 minutes, {members} members' profiles hourly, over {days:g} days")
    return Workload(world, [plan], DEFAULT_START, DEFAULT_START + int(days * DAY), description=desc)


def ingest_workload_into(path: Path, workload: Workload, batch: int = 50,
                         on_batch: Callable[[list[Response]], None] | None = None, inline: bool = True) -> dict:
    """Ingest a whole workload through the real pipeline, `batch` responses per transaction. Untimed helper
    for sections that need a realistic database to start from.

    `inline=True`: projections run inline in every batch (what a bot does). `inline=False`: the log is
    written without a projector and the projections catch up from it at the end (`runner.catch_up`): the
    same events, streams and projected rows, several times faster on a month of polls; only the live
    columns of `players` (refreshed by unchanged polls) keep their last event's values."""
    from tornstore.eventstore.db import close_sync, connect_sync
    from tornstore.eventstore.ingest import IngestReport, ingest_batch
    from tornstore.eventstore.migrate import migrate
    from tornstore.projections.runner import catch_up, project_inline

    projector = project_inline if inline else None
    conn = connect_sync(path)
    total = IngestReport()
    try:
        migrate(conn)
        pending: list[Response] = []
        for response in workload.responses():
            pending.append(response)
            if len(pending) >= batch:
                if on_batch:
                    on_batch(pending)
                total.merge(ingest_batch(conn, pending, projector))
                pending = []
        if pending:
            if on_batch:
                on_batch(pending)
            total.merge(ingest_batch(conn, pending, projector))
        if not inline:
            catch_up(conn)
    finally:
        close_sync(conn)
    return total.as_dict()


# ------------------------------------------------------------------------------------------------ backends
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Databases:
    """Where a section's databases live: SQLite files in the scratch directory (the default), or fresh
    PostgreSQL databases (`--backend postgresql`): CREATE DATABASE tornstore_bench_<pid>_<hex> through the
    maintenance database, each dropped WITH (FORCE) by `drop_all` (called in a `finally`)."""

    def __init__(self, backend: str, workdir: Path, maintenance_url: str = DEFAULT_POSTGRES_URL):
        self.backend = backend
        self.workdir = workdir
        self.maintenance_url = maintenance_url
        self.created: list[str] = []

    @property
    def postgres(self) -> bool:
        return self.backend == "postgresql"

    def _admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(self.maintenance_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def _url_of(self, name: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        params = conninfo_to_dict(self.maintenance_url)
        params["dbname"] = name
        user = params.get("user") or "postgres"
        host = params.get("host") or "127.0.0.1"
        port = params.get("port") or "5432"
        password = f":{params['password']}" if params.get("password") else ""
        if set(params) - {"dbname", "user", "host", "port", "password"}:
            return make_conninfo(**params)  # unusual options: fall back to a conninfo string
        return f"postgresql://{user}{password}@{host}:{port}/{name}"

    def new(self, name: str, template: str | Path | None = None) -> str | Path:
        """A new empty database (or a copy of `template`, a database this object made): a path or a URL."""
        if not self.postgres:
            path = self.workdir / f"{name}.db"
            if template is not None:
                copy_database(Path(template), path)
            return path
        import secrets
        db = f"tornstore_bench_{os.getpid()}_{secrets.token_hex(4)}"
        source = f" TEMPLATE {str(template).rsplit('/', 1)[-1]}" if template is not None else ""
        self._admin(f"CREATE DATABASE {db}{source}")
        self.created.append(db)
        return self._url_of(db)

    def drop(self, target: str | Path) -> None:
        if not self.postgres:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            return
        db = str(target).rsplit("/", 1)[-1]
        self._admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        if db in self.created:
            self.created.remove(db)

    def drop_all(self) -> None:
        for db in list(self.created):
            try:
                self.drop(db)
            except Exception as exc:  # report, keep dropping the others
                import sys
                print(f"[bench] could not drop database {db}: {exc}", file=sys.stderr)


def databases(ctx: dict) -> Databases:
    """The section's Databases (SQLite files in ctx['workdir'] unless the run set one up)."""
    dbs = ctx.get("databases")
    if dbs is None:
        dbs = ctx["databases"] = Databases("sqlite", ctx["workdir"])
    return dbs

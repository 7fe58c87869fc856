"""`python -m tests.bench [--quick] [--json] [--only SECTION ...] [--backend sqlite|postgresql]`: the benchmark.

Not part of the default pytest run (tests/test_bench_smoke.py only checks that it runs and what it prints).
Every figure is printed beside its baseline, measured in the same run on the same machine, because the
absolute numbers depend on the machine and on what else it is doing; the ratios are the goals.

Sections (each names its workload size in `workload`):

ingest   responses/s through route + canonical hash + dedup + append + inline projections, for a realistic
         mix (v1/v2 factions with members, hourly profiles, the full territory map hourly), from decoded
         bodies. `limit`: every routed part of the same responses as event rows (stream id, version,
         observed_at, hash, rules, url, payload JSON), prepared beforehand, one executemany into a bare table
         of the same columns in one transaction (insert + commit timed), as responses / time. `naive`: the
         plan's pattern on the first whole hourly cycles (>= 2,000 responses): json.loads, then per part one
         awaited aiosqlite INSERT and one awaited commit. Goal: >= 0.5 x limit and >= 10 x naive.
replay   events/s of projections.runner.replay(conn) over >= 1,000,000 events (50,000 with --quick): the
         steady-state events of an ingested mix, replicated with SQL (INSERT ... SELECT, observed_at,
         version shifted per copy), replayed in a child process whose peak own memory (RssAnon) is reported.
         `limit`: a full scan of the same events (events JOIN streams, position order) plus one executemany
         of the rows the replay ends up with (history and current-state tables) into bare tables.
         Goal: >= 0.4 x limit, last tenth >= 0.85 x first tenth, peak own memory < 300 MB.
compact  seconds of projections.compactor.compact for one closed month holding >= 1,000,000 history rows
         (SQL-generated, realistic value shapes), fold + prune, backup off. `limit`: one
         GROUP BY (id, COUNT, MIN, MAX of time) scan per history table over the same rows. Goal: <= 3 x limit.
storage  bytes of the database after 30 simulated days of 4-minute polls of 10 factions and their members
         (3 days, 3 factions with --quick), checkpointed, against a table holding every poll's JSON text.
         Goal: >= 10 x smaller.
query    p50/p99 of Store.player(id) and Store.history('player', id, 'level', since, until) over 60 days,
         against the same SQL statements (recorded from the query functions) through a bare aiosqlite
         connection (execute_fetchall). Goal: p99 <= 1.5 x baseline.

`--backend postgresql` runs ingest, replay and compact on fresh PostgreSQL databases (created through
`--postgres-url`, the maintenance database, as tornstore_bench_<pid>_<hex> and dropped WITH (FORCE) at the
end, also on error) with the same workloads; every result gains "backend". SQLite-only figures (the naive
aiosqlite pattern, file sizes, bytes reclaimed by VACUUM) are null there, with a note; storage and query
are SQLite-only and report skipped. `--ingest-factions`, `--ingest-hours`, `--replay-events` and
`--compact-rows` override the sizes (both backends), to run the same smaller workload on each.

A section whose code is not there yet reports {"skipped": reason}; one that fails reports {"error": ...}.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sqlite3
import sys
import time
import traceback

from .common import DEFAULT_POSTGRES_URL, Databases, Sizes, scratch_dir

SECTIONS = ("ingest", "replay", "compact", "storage", "query")
POSTGRES_SECTIONS = ("ingest", "replay", "compact")


def _section(name: str):
    if name == "ingest":
        from . import ingest as mod
    elif name == "replay":
        from . import replay as mod
    elif name == "compact":
        from . import compact as mod
    elif name == "storage":
        from . import storage as mod
    else:
        from . import query as mod
    return mod


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workloads (CI, about a minute)")
    parser.add_argument("--json", action="store_true", help="write one JSON object to stdout")
    parser.add_argument("--only", action="append", choices=SECTIONS, metavar="SECTION",
                        help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                        help="where ingest, replay and compact run (default sqlite)")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL,
                        help=f"maintenance database for --backend postgresql (default {DEFAULT_POSTGRES_URL})")
    for name in ("ingest-factions", "ingest-hours", "replay-events", "compact-rows"):
        parser.add_argument(f"--{name}", type=float if name == "ingest-hours" else int, default=None,
                            help=f"override the {name.replace('-', '_')} size")
    args = parser.parse_args(argv)
    wanted = args.only or list(SECTIONS if args.backend == "sqlite" else POSTGRES_SECTIONS)
    sizes = Sizes.for_run(args.quick)
    overrides = {k: getattr(args, k) for k in ("ingest_factions", "ingest_hours", "replay_events", "compact_rows")
                 if getattr(args, k) is not None}
    if overrides:
        sizes = dataclasses.replace(sizes, **overrides)

    started = time.perf_counter()
    results: dict = {}
    with scratch_dir() as workdir:
        dbs = Databases(args.backend, workdir, args.postgres_url)
        ctx = {"workdir": workdir, "fixtures": {}, "sizes": sizes, "databases": dbs}
        try:
            _run_sections(wanted, sizes, ctx, results, args.backend)
        finally:
            dbs.drop_all()
    results["meta"] = {
        "quick": args.quick,
        "backend": args.backend,
        "sizes": dataclasses.asdict(sizes),
        "sections": wanted,
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
    }
    if args.backend == "postgresql":
        results["meta"]["postgres_url"] = args.postgres_url
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(results))
    return 0


def _run_sections(wanted: list[str], sizes: Sizes, ctx: dict, results: dict, backend: str) -> None:
    for name in SECTIONS:
        if name not in wanted:
            results[name] = {"skipped": "not selected (--only)"}
            continue
        if backend != "sqlite" and name not in POSTGRES_SECTIONS:
            results[name] = {"skipped": f"{name} is SQLite-only (measures the file / bare aiosqlite)",
                             "backend": backend}
            continue
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            results[name] = _section(name).run(sizes, ctx)
        except Exception as exc:  # a broken section must not hide the others
            traceback.print_exc(file=sys.stderr)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name].setdefault("backend", backend)
        results[name]["section_wall_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name} done in {results[name]['section_wall_seconds']} s", file=sys.stderr, flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


# (section, figure, baseline, label, how the goal reads)
_ROWS = (
    ("ingest", "per_s", "limit_per_s", "responses/s vs raw executemany", "ratio >= 0.5"),
    ("ingest", "per_s", "naive_per_s", "responses/s vs naive per-row commit", "ratio >= 10"),
    ("replay", "per_s", "limit_per_s", "events/s vs scan + executemany", "ratio >= 0.4"),
    ("replay", "peak_rss_mb", None, "peak own memory MB (anonymous pages)", "< 300"),
    ("replay", "last_tenth_per_s", "first_tenth_per_s", "last tenth events/s vs first tenth", "ratio >= 0.85"),
    ("compact", "seconds", "limit_seconds", "seconds vs GROUP BY scan", "ratio <= 3"),
    ("storage", "bytes", "naive_bytes", "bytes vs every poll's JSON", "naive/bytes >= 10"),
    ("query", "player_p99_ms", "player_baseline_p99_ms", "player() p99 ms vs bare aiosqlite", "ratio <= 1.5"),
    ("query", "history_p99_ms", "history_baseline_p99_ms", "history() p99 ms vs bare aiosqlite", "ratio <= 1.5"),
)


def render(results: dict) -> str:
    lines = [f"{'section':8} {'figure':40} {'value':>14} {'baseline':>14} {'ratio':>8}  goal"]
    for section, key, base, label, goal in _ROWS:
        res = results.get(section, {})
        if "skipped" in res or "error" in res:
            lines.append(f"{section:8} {label:40} {res.get('skipped') or res.get('error')}")
            continue
        value = res.get(key)
        baseline = res.get(base) if base else None
        ratio = ""
        if isinstance(value, (int, float)) and isinstance(baseline, (int, float)) and baseline:
            ratio = f"{(baseline / value if section == 'storage' else value / baseline):.2f}"
        shown = _fmt(baseline) if base else ""
        lines.append(f"{section:8} {label:40} {_fmt(value):>14} {shown:>14} {ratio:>8}  {goal}")
    lines.append("")
    for section in SECTIONS:
        res = results.get(section, {})
        if "workload" in res:
            lines.append(f"{section}: {res['workload']}")
    lines.append(f"total {results['meta']['total_wall_seconds']} s (quick={results['meta']['quick']}, "
                 f"backend={results['meta']['backend']})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Commands that talk to the Torn API (or its simulator): collect, simulate-api."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time

import click

from .common import UserError, db_option, db_path, emit_json

log = logging.getLogger("tornstore.collector")


class _MonthlyCompaction:
    """The collector's on_tick hook: run the compactor once each time a UTC month boundary has passed. (On
    PostgreSQL the first tick also makes this month's and next month's history partitions, so rows land in
    their own month from the start.)"""

    def __init__(self, store):
        self.store = store
        self.month: tuple[int, int] | None = None
        self.runs = 0

    async def __call__(self, now: float) -> None:
        tm = time.gmtime(int(now))
        month = (tm.tm_year, tm.tm_mon)
        if self.month is None:
            self.month = month
            from tornstore.projections.compactor.retention import prepare_chunks
            await self.store.run(prepare_chunks, int(now))
            return
        if month == self.month:
            return
        self.month = month
        try:
            from tornstore.projections.compactor import compact
        except ImportError:  # pragma: no cover - the compactor ships with tornstore
            log.warning("month boundary passed but projections.compactor is not available")
            return
        log.info("a UTC month ended: running the compactor")
        report = await self.store.run(compact, int(now))
        self.runs += 1
        log.info("compactor done: %d month(s) folded, %d summary rows, %d events pruned",
                 len(report.folded), report.summary_rows, report.events_pruned)


@contextlib.contextmanager
def _logging_to_stderr(verbose: int, quiet: bool):
    """Collector log lines on stderr for the command's duration (keys never appear in them)."""
    level = logging.WARNING if quiet else (logging.INFO if verbose == 0 else logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    handler.setLevel(level)
    collector_log = logging.getLogger("tornstore.collector")
    old_level = collector_log.level
    collector_log.addHandler(handler)
    collector_log.setLevel(min(level, old_level) if old_level else level)
    try:
        yield
    finally:
        collector_log.removeHandler(handler)
        collector_log.setLevel(old_level)


async def _open_store(path: str):
    """The store, or one clear line saying why it cannot be opened (then nothing has been polled)."""
    from tornstore.eventstore.spool import STORE_FAILURES
    from tornstore.eventstore.db import describe
    from tornstore.projections.store import Store

    try:
        return await Store.open(path, create=True)
    except STORE_FAILURES as exc:
        raise UserError(f"cannot open the database {describe(path)} ({type(exc).__name__}: {exc}); "
                        "nothing was polled") from None


async def _collect(path: str, config, once: bool, compact: bool):
    from tornstore.eventstore.collector import Collector
    from tornstore.eventstore.spool import STORE_FAILURES, SpoolingSink, spool_path_for

    store = await _open_store(path)
    # Responses the database cannot take (locked for long, disk full) wait in a spool beside it.
    sink = SpoolingSink(store.ingest_many, spool_path_for(path))
    try:
        with contextlib.suppress(*STORE_FAILURES):   # if it fails, it stays spooled; the sink retries
            await sink.drain()                        # what an earlier run left in the spool comes first
        hook = _MonthlyCompaction(store) if compact else None
        collector = Collector(config, sink, run=store.run, on_tick=hook)
        loop = asyncio.get_running_loop()
        signals = []

        def on_signal(signame: str) -> None:
            if not collector.stopping:
                print(f"\n{signame}: stopping (finishing requests in flight, committing the batch in hand)",
                      file=sys.stderr)
            collector.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, sig.name)
                signals.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
                pass
        try:
            async with collector:
                report = await (collector.run_once() if once else collector.run_forever())
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        with contextlib.suppress(*STORE_FAILURES):
            await sink.drain()
        if sink.spool.waiting() or sink.held:
            print(f"Warning: {len(sink.spool.read()) + len(sink.held)} responses wait in {sink.spool.path}: the "
                  f"next collect stores them first (or: tornstore --db {path} ingest {sink.spool.path})",
                  file=sys.stderr)
        return report, collector.stopping
    finally:
        await store.close()


def _print_report(report, interrupted: bool) -> None:
    data = report.as_dict()
    head = "stopped" if interrupted else "done"
    click.echo(f"{head}: {data['polls']} polls ({data['polls_ok']} ok, {data['polls_failed']} failed, "
               f"{data['deferred']} deferred), {data['requests']} requests, {data['retries']} retries")
    click.echo(f"responses {data['responses']}, events appended {data['appended']}, "
               f"unchanged {data['unchanged']}, rejected {data['rejected']}, gaps {data['gaps']}")
    if data["errors_by_code"]:
        click.echo("Torn errors by code: " + ", ".join(f"{code}: {n}" for code, n in data["errors_by_code"].items()))
    if data["failures"]:
        click.echo("other failures: " + ", ".join(f"{what}: {n}" for what, n in data["failures"].items()))
    for key in data["keys"]:
        extra = f" ({key['reason']})" if key["reason"] else ""
        waits = f", waits {key['waits']} s" if key["waits"] else ""
        click.echo(f"key {key['key']} owner {key['owner']} {key['access']}: {key['state']}{waits}, "
                   f"{key['requests']} requests in total{extra}")


@click.command()
@click.option("-c", "--config", "config_file", required=True, type=click.Path(dir_okay=False),
              help="TOML file naming the keys and what to poll (see examples/collect.toml).")
@click.option("--once", is_flag=True,
              help="Poll every target once (members included), then exit; exit code 1 if any poll failed.")
@click.option("--api-base", metavar="URL", help="API base URL, e.g. the simulator's (overrides the config).")
@click.option("--no-compact", is_flag=True, help="Do not run the compactor when a UTC month ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-v: every request).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@db_option
@click.pass_context
def collect(ctx: click.Context, config_file: str, once: bool, api_base: str | None, no_compact: bool,
            as_json: bool, verbose: int, quiet: bool) -> None:
    """Poll the Torn API on schedule and store what changed (Ctrl-C stops cleanly).

    Keys come from the config, preferably as "env:NAME" so no key sits in the file. The collector keeps
    every key's limits (100 requests a minute per owner, each key's own budget), acts on every Torn
    error code (pauses, disables, backs off), and records each poll that brought no data as a gap. Keys
    never reach the database or the log: they are named by fingerprint (k:1a2b3c4d). On Ctrl-C or
    SIGTERM the requests in flight finish, the batch in hand is committed, and a summary is printed.
    When a UTC month ends while it runs, the compactor folds the closed month (unless --no-compact).
    With --once the exit code is 1 when any poll failed (after the report, with an Error: line saying
    how many and why); a run stopped by Ctrl-C exits 0.

    \b
    Examples:
      export TORN_KEY_1=...   # 16 characters, referenced as key = "env:TORN_KEY_1"
      tornstore --db torn.db collect --config collect.toml
      tornstore --db torn.db collect --config collect.toml --once --json
      tornstore simulate-api --port 8080 &      # no real key needed:
      tornstore --db demo.db collect -c collect.toml --api-base http://127.0.0.1:8080 --once
    """
    from tornstore.eventstore.collector import ConfigError, load_config

    path = db_path(ctx)
    try:
        config = load_config(config_file, api_base=api_base)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if config.stats is not None:   # which stats stat_history keeps, here and in an ingest child process
        from tornstore.projections.handlers import stat_history
        stat_history.configure(include=config.stats.include, exclude=config.stats.exclude, export=True)
    try:
        with _logging_to_stderr(verbose, quiet or (as_json and verbose == 0)):
            report, interrupted = asyncio.run(_collect(path, config, once, not no_compact))
    except KeyboardInterrupt:  # a second Ctrl-C before the handler was installed
        raise UserError("interrupted") from None
    except OSError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        data = report.as_dict()
        data["interrupted"] = bool(interrupted)
        emit_json(data)
    else:
        _print_report(report, bool(interrupted))
    if once and report.polls_failed:
        raise UserError(_failed_polls(report.as_dict()))


def _failed_polls(data: dict) -> str:
    """--once with failed polls: how many, and why, from what the run report holds."""
    why = []
    if data["errors_by_code"]:
        why.append("Torn errors by code: " + ", ".join(f"{c}: {n}" for c, n in data["errors_by_code"].items()))
    if data["failures"]:
        why.append("other failures: " + ", ".join(f"{what}: {n}" for what, n in data["failures"].items()))
    keys = [f"{k['key']} {k['state']}" for k in data["keys"] if k["state"] != "active"]
    if keys:
        why.append("keys: " + ", ".join(keys))
    return (f"{data['polls_failed']} of {data['polls']} polls failed"
            + (f" ({'; '.join(why)})" if why else "") + "; each is recorded as a gap")


@click.command("simulate-api")
@click.option("--port", default=8080, show_default=True, help="Port to listen on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--seed", default=1, show_default=True, help="Seed of the simulated world (same seed, same world).")
@click.option("--keys", metavar="K1,K2", help="Accept only these keys (16 letters/digits each); "
              "default: any well-formed key.")
@click.option("--speed", default=1.0, show_default=True,
              help="Simulated seconds per wall second (0 freezes the clock; move it with POST /__sim/clock).")
@click.option("--factions", default=5, show_default=True, help="Factions in the world.")
@click.option("--territories", default=4100, show_default=True, help="Territories on the map.")
@click.option("--json", "as_json", is_flag=True,
              help="Once listening, print one line of JSON (url, host, port, seed) and nothing else on stdout.")
def simulate_api(port: int, host: str, seed: int, keys: str | None, speed: float, factions: int,
                 territories: int, as_json: bool) -> None:
    """Serve a simulated Torn API (v1 and v2) until Ctrl-C: for demos and tests without a real key.

    Errors come back as the real API sends them (HTTP 200 with {"error": {...}}), with the 100 requests
    a minute per key owner limit and v2 paging. Control endpoints: POST /__sim/clock {"advance": 3600},
    POST /__sim/fault {"kind": "error", "code": 5, "count": 3}, GET /__sim/stats, GET /__sim/world.

    \b
    Examples:
      tornstore simulate-api --port 8080 --seed 7
      curl 'http://127.0.0.1:8080/v2/faction/1234/members' -H 'Authorization: ApiKey AAAAAAAAAAAAAAAA'
      curl -X POST http://127.0.0.1:8080/__sim/fault -d '{"kind": "http", "status": 503, "count": 2}'
      tornstore simulate-api --port 0 --json | head -1 | jq -r .url     # a free port, for scripts
    """
    from tornstore.eventstore.simulator import run_simulator

    key_list = None
    if keys:
        key_list = [k.strip() for k in keys.split(",") if k.strip()]
        bad = [i for i, k in enumerate(key_list, 1) if not (len(k) == 16 and k.isalnum())]
        if bad:
            raise UserError(f"--keys: key number {', '.join(map(str, bad))} is not 16 letters and digits")

    def announce(*_args, **_kw) -> None:
        shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        if as_json:  # one line: a script reads it while the server keeps running
            click.echo(json.dumps({"url": f"http://{shown}:{port}", "host": host, "port": port, "seed": seed},
                                  sort_keys=True))
            sys.stdout.flush()
            return
        click.echo(f"Torn API simulator (seed {seed}) listening on http://{shown}:{port}")
        click.echo(f"  v1: http://{shown}:{port}/user/<id>?selections=profile&key=<key>")
        click.echo(f"  v2: http://{shown}:{port}/v2/faction/<id>/members  (header Authorization: ApiKey <key>)")
        click.echo(f"  world: GET http://{shown}:{port}/__sim/world   Ctrl-C stops")
        sys.stdout.flush()

    if port == 0:
        import socket
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    try:
        run_simulator(port=port, seed=seed, host=host, speed=speed, factions=factions, territories=territories,
                      keys=key_list, print_fn=announce)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc}") from None
    except KeyboardInterrupt:
        pass
    click.echo("simulator stopped", err=as_json)


def register(group: click.Group) -> None:
    for command in (collect, simulate_api):
        group.add_command(command)

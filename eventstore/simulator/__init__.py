"""An offline Torn API, because the real one cannot be reached from here.

- world.py: a seeded world (factions, players, territories, wars, rackets) that changes as its clock moves.
- bodies.py: that world as v1 and v2 response bodies, with each version's quirks. v2 answers only the
  paths of the official spec (bodies.V2_ROUTES; tests/test_simulator_spec.py validates every one).
- extras.py, personalstats.py: pages drawn from the seed (travel, stocks, events, messages, war reports)
  and personal stats; territory_codes.py and personalstats_shapes.py are generated from the spec.
- server.py: HTTP around the bodies: keys, the per-user rate limit, fault injection, clock control.
- process.py: the server in a child process on a clock shared through a mapped file (the demo uses it,
  so the client and the server do not share one core).
- workload.py: polls of the world without HTTP, for tests and benchmarks.

    handle = await start_simulator(World(seed=1), rate_limit=None)
    ... GET f"{handle.url}/v2/faction/{fid}/members?key=<16 alphanumerics>" ...
    handle.advance(240); handle.inject_fault("http", status=502); await handle.close()

Control endpoints (no key): GET/POST /__sim/clock {"now": t} | {"advance": s};
GET/POST/DELETE /__sim/fault {"kind": error|http|slow|malformed|html|huge, "code", "status", "delay",
"count" (-1 = until cleared), "rate", "key_fingerprint", "path"}; GET/DELETE /__sim/stats;
DELETE /__sim/ratelimit; GET /__sim/world (ids) and POST /__sim/world {"action": ..., "args": {...}}.
"""
from .bodies import Ctx, TornError, error_body, render
from .server import SIMULATOR, Fault, Simulator, SimulatorHandle, make_app, run_simulator, start_simulator
from .world import DEFAULT_START, Rates, World

__all__ = [
    "Ctx", "DEFAULT_START", "Fault", "Rates", "SIMULATOR", "Simulator", "SimulatorHandle", "TornError", "World",
    "error_body", "make_app", "render", "run_simulator", "start_simulator",
]

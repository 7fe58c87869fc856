"""The simulator over HTTP: auth, rate limit, fault injection and clock control around bodies.render.

Why: tornstore's collector must be tested against something that behaves like api.torn.com (errors
with HTTP 200, a per-user rolling rate limit, paging links, outages) without touching the real API.

Keys are secrets even here: they are never logged (the aiohttp access log is off) and every report
names a key by its fingerprint only.
"""
from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from ..secrets import fingerprint
from .bodies import Ctx, TornError, error_body, render
from .world import World

FAULT_KINDS = ("error", "http", "slow", "malformed", "html", "huge")
RATE_CLOCKS = ("wall", "sim")
_KEY_RE = re.compile(r"^[A-Za-z0-9]{16}$")
_ID_RE = re.compile(r"/(\d+|[A-Z]{3}(?:,[A-Z]{3})*)(?=/|$)")
_WORLD_ACTIONS = ("start_ranked_war", "end_ranked_war", "start_territory_war", "transfer_territory",
                  "set_level", "set_status", "join_faction", "leave_faction", "add_respect", "set_racket")

_HTTP_PAGE = ("<!DOCTYPE html><html><head><title>{status} {reason}</title></head><body><center>"
              "<h1>{status} {reason}</h1></center><hr><center>cloudflare</center></body></html>")
_MAINTENANCE_PAGE = ("<!DOCTYPE html><html><head><title>TORN</title></head><body><h1>Torn is currently "
                     "undergoing maintenance</h1><p>Please check back in a few minutes.</p></body></html>")


@dataclass
class Fault:
    """One injected fault. count -1 means until cleared; rate makes it fire at random (seeded)."""

    id: int
    kind: str
    count: int = 1
    rate: float | None = None
    code: int = 17
    status: int = 502
    delay: float = 2.0
    size: int = 10 * 1024 * 1024
    key_fingerprint: str | None = None
    path: str | None = None  # fire only when the request path contains this text
    fired: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def exhausted(self) -> bool:
        return self.count >= 0 and self.fired >= self.count

    def wants(self, key: str | None, path: str) -> bool:
        if self.exhausted():
            return False
        if self.key_fingerprint and (not key or fingerprint(key) != self.key_fingerprint):
            return False
        if self.path and self.path not in path:
            return False
        return self.rate is None or self.rng.random() < self.rate

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "count": self.count, "fired": self.fired,
                               "rate": self.rate, "key_fingerprint": self.key_fingerprint, "path": self.path}
        extra: dict[str, dict[str, Any]] = {"error": {"code": self.code}, "http": {"status": self.status},
                                            "slow": {"delay": self.delay}, "huge": {"size": self.size}}
        out.update(extra.get(self.kind, {}))
        return out


class Simulator:
    """State around the world that belongs to the server: keys, owners, faults, limits, counters."""

    def __init__(self, world: World, *, keys: list[str] | None = None, own_ids: dict[str, int] | None = None,
                 rate_limit: int | None = 100, rate_window: float = 60.0, rate_clock: str = "wall",
                 speed: float = 0.0):
        if rate_clock not in RATE_CLOCKS:
            raise ValueError(f"rate_clock must be one of {RATE_CLOCKS}")
        self.world = world
        self.own_ids = dict(own_ids or {})
        self.keys = None if keys is None else set(keys) | set(self.own_ids)
        self.rate_limit = rate_limit  # None or 0 disables the limit
        self.rate_window = rate_window
        self.rate_clock = rate_clock
        self.speed = speed  # > 0: the simulated clock follows the wall clock at this speed
        # Or the clock follows a value another process sets (process.SimulatorProcess):
        self.clock_source: Callable[[], int] | None = None
        self._anchor = (time.monotonic(), world.now)
        self.faults: list[Fault] = []
        self._fault_ids = 0
        self._windows: dict[int, deque[float]] = {}
        self.requests = 0
        self._by_key: Counter[str] = Counter()  # raw key -> count; never printed
        self.by_path: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()
        self.faults_fired = 0
        self.rate_limited = 0

    # ---- keys --------------------------------------------------------------------------------
    def key_ok(self, key: str) -> bool:
        if self.keys is not None:
            return key in self.keys
        return bool(_KEY_RE.match(key))

    def owner_of(self, key: str) -> int:
        return self.own_ids.get(key) or self.world.owner_for_key(key)

    def requests_for(self, key: str) -> int:
        return self._by_key[key]

    # ---- clock ---------------------------------------------------------------------------------
    def sync_clock(self) -> None:
        if self.clock_source is not None:
            target = int(self.clock_source())
            if target > self.world.now:
                self.world.advance_to(target)
        elif self.speed > 0:
            wall0, sim0 = self._anchor
            target = sim0 + int((time.monotonic() - wall0) * self.speed)
            if target > self.world.now:
                self.world.advance_to(target)

    def set_clock(self, now: int) -> int:
        self.world.advance_to(int(now))
        self._anchor = (time.monotonic(), self.world.now)
        return self.world.now

    def advance(self, seconds: int) -> int:
        return self.set_clock(self.world.now + int(seconds))

    # ---- faults --------------------------------------------------------------------------------
    def inject_fault(self, kind: str, *, count: int | None = None, rate: float | None = None,
                     code: int = 17, status: int = 502, delay: float = 2.0, size: int = 10 * 1024 * 1024,
                     key: str | None = None, key_fingerprint: str | None = None, path: str | None = None) -> Fault:
        """Queue a fault for the next matching API requests (see Fault)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        if rate is not None and not 0 <= rate <= 1:
            raise ValueError("rate must be within 0..1")
        self._fault_ids += 1
        fault = Fault(self._fault_ids, kind, count=(-1 if rate is not None else 1) if count is None else int(count),
                      rate=rate, code=int(code), status=int(status), delay=float(delay), size=int(size),
                      key_fingerprint=fingerprint(key) if key else key_fingerprint, path=path,
                      rng=random.Random(f"{self.world.seed}/fault/{self._fault_ids}"))
        self.faults.append(fault)
        return fault

    def clear_faults(self, fault_id: int | None = None) -> int:
        before = len(self.faults)
        self.faults = [f for f in self.faults if fault_id is not None and f.id != fault_id]
        return before - len(self.faults)

    def _pick_fault(self, key: str | None, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.wants(key, path):
                fault.fired += 1
                self.faults_fired += 1
                return fault
        self.faults = [f for f in self.faults if not f.exhausted()]
        return None

    # ---- rate limit --------------------------------------------------------------------------------
    def _allow(self, owner: int) -> bool:
        if not self.rate_limit:
            return True
        now = time.monotonic() if self.rate_clock == "wall" else float(self.world.now)
        window = self._windows.setdefault(owner, deque())
        while window and window[0] <= now - self.rate_window:
            window.popleft()
        if len(window) >= self.rate_limit:
            return False
        window.append(now)
        return True

    def reset_rate_limits(self) -> None:
        self._windows.clear()

    # ---- stats -------------------------------------------------------------------------------------
    def stats(self) -> dict:
        by_key: Counter[str] = Counter()
        for key, n in self._by_key.items():
            by_key[fingerprint(key)] += n
        return {"requests": self.requests, "by_key": dict(by_key), "by_path": dict(self.by_path),
                "errors": {str(k): v for k, v in sorted(self.errors.items())}, "faults_fired": self.faults_fired,
                "rate_limited": self.rate_limited, "now": self.world.now}

    def reset_stats(self) -> None:
        self.requests, self.faults_fired, self.rate_limited = 0, 0, 0
        self._by_key.clear()
        self.by_path.clear()
        self.errors.clear()

    # ---- the API ----------------------------------------------------------------------------------
    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Every request: /__sim/<what> is the control API, any other path the Torn API (GET only)."""
        path = request.path
        if path.startswith("/__sim/"):
            return await self.handle_control(request, path[len("/__sim/"):])
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET"])
        return await self.handle_api(request)

    async def handle_api(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        segments = [s for s in path.split("/") if s]
        version = 2 if segments and segments[0].lower() == "v2" else 1
        if version == 2:
            segments = segments[1:]
        query = {k: v for k, v in request.query.items()}
        key = request.query.get("key") or None
        if key is None and version == 2:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "apikey ":
                key = auth[7:].strip() or None
        self.requests += 1
        if key:
            self._by_key[key] += 1
        self.by_path[("/v2" if version == 2 else "") + _ID_RE.sub("/{id}", "/" + "/".join(segments))] += 1
        self.sync_clock()

        fault = self._pick_fault(key, path)
        if fault is not None and fault.kind != "slow":
            return self._fault_response(fault, lambda: self._body(request, version, segments, query, key))
        if fault is not None:
            await asyncio.sleep(fault.delay)
        return self._json(self._body(request, version, segments, query, key))

    def _body(self, request: web.BaseRequest, version: int, segments: list[str], query: dict, key: str | None) -> dict:
        if not key:
            return self._error(1)
        if not self.key_ok(key):
            return self._error(2)
        owner = self.owner_of(key)
        if not self._allow(owner):
            self.rate_limited += 1
            return self._error(5)
        ctx = Ctx(self.world, owner, query, f"{request.scheme}://{request.host}", request.path)
        try:
            return render(ctx, version, segments)
        except TornError as exc:
            return self._error(exc.code, exc.text)

    def _error(self, code: int, text: str | None = None) -> dict:
        self.errors[code] += 1
        return error_body(code, text)

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json")

    def _fault_response(self, fault: Fault, body: Callable[[], dict]) -> web.Response:
        if fault.kind == "error":
            return self._json(self._error(fault.code))
        if fault.kind == "http":
            reason = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                      504: "Gateway Timeout"}.get(fault.status, "Error")
            return web.Response(text=_HTTP_PAGE.format(status=fault.status, reason=reason), status=fault.status,
                                content_type="text/html")
        if fault.kind == "html":
            return web.Response(text=_MAINTENANCE_PAGE, status=200, content_type="text/html")
        if fault.kind == "malformed":
            raw = msgspec.json.encode(body())
            return web.Response(body=raw[: max(1, len(raw) // 2)], status=200, content_type="application/json")
        # huge: valid JSON of about `size` bytes, for clients that must cap what they read
        filler = max(0, fault.size - 14)
        return web.Response(body=b'{"padding":"' + b"x" * filler + b'"}', status=200, content_type="application/json")

    # ---- control endpoints (/__sim/...) ------------------------------------------------------------
    async def handle_control(self, request: web.BaseRequest, what: str) -> web.Response:
        method = request.method
        self.sync_clock()
        try:
            payload = await request.json() if method == "POST" and request.can_read_body else {}
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            if what == "clock":
                if method == "POST":
                    if "now" in payload:
                        self.set_clock(int(payload["now"]))
                    elif "advance" in payload:
                        self.advance(int(payload["advance"]))
                    else:
                        raise ValueError("give 'now' or 'advance'")
                return self._json({"now": self.world.now,
                                   "iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.world.now))})
            if what == "fault":
                if method == "POST":
                    args = {k: payload[k] for k in ("count", "rate", "code", "status", "delay", "size", "key",
                                                    "key_fingerprint", "path") if k in payload}
                    return self._json({"fault": self.inject_fault(str(payload.get("kind", "")), **args).describe()})
                if method == "DELETE":
                    fid = request.query.get("id")
                    return self._json({"cleared": self.clear_faults(int(fid) if fid else None)})
                return self._json({"faults": [f.describe() for f in self.faults]})
            if what == "stats":
                if method == "DELETE":
                    self.reset_stats()
                return self._json(self.stats())
            if what == "ratelimit" and method == "DELETE":
                self.reset_rate_limits()
                return self._json({"ok": True})
            if what == "world":
                if method == "POST":
                    action = payload.get("action")
                    if action not in _WORLD_ACTIONS:
                        raise ValueError(f"action must be one of {_WORLD_ACTIONS}")
                    result = getattr(self.world, action)(**payload.get("args", {}))
                    return self._json({"ok": True, "result": getattr(result, "id", None)})
                return self._json(self.world.summary())
        except (ValueError, TypeError, KeyError) as exc:
            return self._json({"error": str(exc)}, status=400)
        return self._json({"error": f"unknown control endpoint {method} /__sim/{what}"}, status=404)


SIMULATOR = web.AppKey("simulator", Simulator)


def make_app(world: World, *, keys: list[str] | None = None, own_ids: dict[str, int] | None = None,
             **options: Any) -> web.Application:
    """The aiohttp app. options: rate_limit (100, None disables), rate_window, rate_clock ('wall'|'sim'), speed."""
    sim = Simulator(world, keys=keys, own_ids=own_ids, **options)
    app = web.Application()
    app[SIMULATOR] = sim
    app.router.add_route("*", "/{tail:.*}", sim.handle)
    return app


@dataclass
class SimulatorHandle:
    """A running simulator: its base URL, counters, and the Python side of the control endpoints."""

    url: str
    sim: Simulator
    runner: web.BaseRunner

    @property
    def world(self) -> World:
        return self.sim.world

    @property
    def requests(self) -> int:
        return self.sim.requests

    def requests_for(self, key: str) -> int:
        return self.sim.requests_for(key)

    def stats(self) -> dict:
        return self.sim.stats()

    def inject_fault(self, kind: str, **kw: Any) -> Fault:
        return self.sim.inject_fault(kind, **kw)

    def clear_faults(self, fault_id: int | None = None) -> int:
        return self.sim.clear_faults(fault_id)

    def set_clock(self, now: int) -> int:
        return self.sim.set_clock(now)

    def advance(self, seconds: int) -> int:
        return self.sim.advance(seconds)

    async def close(self) -> None:
        await self.runner.cleanup()

    async def __aenter__(self) -> SimulatorHandle:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def start_simulator(world: World, host: str = "127.0.0.1", port: int = 0, **kw: Any) -> SimulatorHandle:
    """Serve the world on host:port (0 picks a free port); close the handle when done.

    aiohttp's low-level server, without an application's router and middleware chain: the simulator
    dispatches by itself, and the demo's tens of thousands of requests cost less of the second core."""
    sim = Simulator(world, **kw)
    runner = web.ServerRunner(web.Server(sim.handle, access_log=None))  # the access log would print ?key=
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return SimulatorHandle(f"http://{bound_host}:{bound_port}", sim, runner)


def run_simulator(port: int = 8080, seed: int = 1, host: str = "127.0.0.1", *, speed: float = 1.0,
                  start: int | None = None, factions: int = 5, members_per_faction: tuple[int, int] = (10, 25),
                  territories: int = 4100, print_fn: Callable[..., None] | None = print, **kw: Any) -> None:
    """Block serving a fresh world; by default its clock runs with the wall clock (speed 1.0)."""
    world_kw: dict[str, Any] = {"seed": seed, "factions": factions, "members_per_faction": members_per_faction,
                                "territories": territories}
    if start is not None:
        world_kw["start"] = start
    world = World(**world_kw)
    app = make_app(world, speed=speed, **kw)

    def listening(*_args: Any) -> None:
        # aiohttp calls this once its sites listen: a script that reads the line can connect at once.
        if print_fn:
            print_fn(f"Torn API simulator (seed {seed}) on http://{host}:{port} - control under /__sim/")

    web.run_app(app, host=host, port=port, print=listening, access_log=None)

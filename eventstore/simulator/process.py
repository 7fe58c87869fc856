"""The simulator in a process of its own, on a clock the caller moves without a request per step.

Why: a client and the server it talks to in one Python process share one core (the GIL). The demo makes
tens of thousands of requests; serving them from a second process lets both cores work. The simulated
clock is eight bytes in a small shared file: the caller writes it, and the server moves its world up to
it before each answer, so a step of simulated time costs no control request.

    with SimulatorProcess(seed=1, factions=2, territories=400) as sim:
        sim.set_clock(sim.start + 240)                 # the world is there at the next request
        ... GET f"{sim.url}/faction/{sim.faction_ids[0]}?selections=basic&key=<16 alphanumerics>" ...

The child is `python -m tornstore.eventstore.simulator.process`: it prints one JSON line (url, start, faction ids)
and serves until its standard input closes, so it never outlives the caller.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import threading
from typing import Any

from ..gctuning import fewer_collections

_CLOCK = struct.Struct("<q")


class SharedClock:
    """A 64-bit Unix time in a file both processes map. One writer; readers retry a torn read."""

    def __init__(self, path: str, create: bool = False):
        self.path = path
        if create:
            with open(path, "wb") as fh:
                fh.write(_CLOCK.pack(0))
        self._file = open(path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), _CLOCK.size)

    def read(self) -> int:
        while True:
            first = _CLOCK.unpack_from(self._map, 0)[0]
            if _CLOCK.unpack_from(self._map, 0)[0] == first:
                return first

    def write(self, value: int) -> None:
        _CLOCK.pack_into(self._map, 0, int(value))

    def close(self) -> None:
        self._map.close()
        self._file.close()


class SimulatorProcess:
    """Start with `with` (or start_process()/close()); then `url`, `start` (the world's first second) and
    `faction_ids` say what it serves. Keyword arguments go to World (seed, factions, territories, ...)."""

    def __init__(self, *, rate_limit: int | None = None, start_timeout: float = 60.0, **world_kw: Any):
        self._world_kw = world_kw
        self._rate_limit = rate_limit
        self._start_timeout = start_timeout
        self._dir = tempfile.mkdtemp(prefix="tornstore-sim-")
        self._clock = SharedClock(os.path.join(self._dir, "clock"), create=True)
        self._process: subprocess.Popen | None = None
        self._now = 0  # our copy of what we last wrote (we are the only writer)
        self.url = ""
        self.start = 0
        self.faction_ids: list[int] = []

    def start_process(self) -> "SimulatorProcess":
        spec = json.dumps({"world": self._world_kw, "rate_limit": self._rate_limit, "clock": self._clock.path})
        self._process = subprocess.Popen([sys.executable, "-m", "tornstore.eventstore.simulator.process", spec],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = _read_line(self._process, self._start_timeout)
        try:
            hello = json.loads(line)
            self.url, self.start, self.faction_ids = hello["url"], hello["start"], hello["faction_ids"]
            self._now = self._clock.read()  # the child wrote the world's start
        except (ValueError, KeyError, TypeError):
            code = self._process.poll()
            self.close()
            raise RuntimeError(f"the simulator process did not start (exit code {code}; it said {line!r})") from None
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def now(self) -> int:
        return self._now

    def clock(self) -> float:
        """The simulated time, for a collector's `clock=`."""
        return float(self._now)

    def set_clock(self, now: int) -> int:
        """Move simulated time forward (never back); the server catches up at its next request."""
        if now > self._now:
            self._now = int(now)
            self._clock.write(self._now)
        return self._now

    def close(self) -> None:
        if self._process is not None:
            try:
                self._process.stdin.close()  # the child's signal to stop
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            finally:
                self._process.stdout.close()
            self._process = None
        if self._clock is not None:
            self._clock.close()
            self._clock = None
            for name in os.listdir(self._dir):
                os.remove(os.path.join(self._dir, name))
            os.rmdir(self._dir)

    def __enter__(self) -> "SimulatorProcess":
        return self.start_process()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """The child's first line, or '' when it says nothing within `timeout` seconds (a thread reads it:
    select() on a pipe does not work everywhere)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0].strip() if line else ""


async def _serve(spec: dict) -> None:
    from .server import start_simulator
    from .world import World

    world = World(**spec["world"])
    clock = SharedClock(spec["clock"])
    clock.write(world.now)
    handle = await start_simulator(world, rate_limit=spec["rate_limit"])
    handle.sim.clock_source = clock.read
    print(json.dumps({"url": handle.url, "start": world.now, "faction_ids": sorted(world.factions)}), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    finally:
        await handle.close()
        clock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The Torn API simulator as a child process (see the module).")
    parser.add_argument("spec", help="JSON: {world: {...}, rate_limit, clock: path}")
    spec = json.loads(parser.parse_args(argv).spec)
    with fewer_collections():  # a server of short-lived dicts around one long-lived world
        asyncio.run(_serve(spec))


if __name__ == "__main__":
    main()

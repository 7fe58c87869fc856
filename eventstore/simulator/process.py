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
from typing import IO, Any

from ..gctuning import fewer_collections

_CLOCK = struct.Struct("<q")


class SharedClock:
    """A 64-bit Unix time in a file both processes map. One writer; readers retry a torn read."""

    def __init__(self, path: str, create: bool = False):
        self.path = path
        if create:
            with open(path, "wb") as fh:
                fh.write(_CLOCK.pack(0))
        self._file = open(path, "r+b")  # noqa: SIM115  # open as long as the map: close() closes both
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
        self._clock: SharedClock | None = SharedClock(os.path.join(self._dir, "clock"), create=True)
        self._process: subprocess.Popen[str] | None = None
        self._now = 0  # our copy of what we last wrote (we are the only writer)
        self.url = ""
        self.start = 0
        self.faction_ids: list[int] = []

    def start_process(self) -> SimulatorProcess:
        clock = self._live_clock()
        spec = json.dumps({"world": self._world_kw, "rate_limit": self._rate_limit, "clock": clock.path})
        process = subprocess.Popen([sys.executable, "-P", "-m", "tornstore.eventstore.simulator.process", spec],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._process = process
        assert process.stdout is not None  # stdout=PIPE
        line = _read_line(process.stdout, self._start_timeout)
        try:
            hello = json.loads(line)
            self.url, self.start, self.faction_ids = hello["url"], hello["start"], hello["faction_ids"]
            self._now = clock.read()  # the child wrote the world's start
        except (ValueError, KeyError, TypeError):
            code = process.poll()
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
            self._live_clock().write(self._now)
        return self._now

    def _live_clock(self) -> SharedClock:
        if self._clock is None:
            raise RuntimeError("the simulator process is closed")
        return self._clock

    def close(self) -> None:
        process = self._process
        if process is not None:
            try:
                if process.stdin is not None:
                    process.stdin.close()  # the child's signal to stop
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            finally:
                if process.stdout is not None:
                    process.stdout.close()
            self._process = None
        if self._clock is not None:
            self._clock.close()
            self._clock = None
            for name in os.listdir(self._dir):
                os.remove(os.path.join(self._dir, name))
            os.rmdir(self._dir)

    def __enter__(self) -> SimulatorProcess:
        return self.start_process()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_line(stdout: IO[str], timeout: float) -> str:
    """The child's first line, or '' when it says nothing within `timeout` seconds (a thread reads it:
    select() on a pipe does not work everywhere)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0].strip() if line else ""


async def _serve(spec: dict[str, Any]) -> None:
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

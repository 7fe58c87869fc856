"""A real Collector in a process of its own, driven round by round on a simulated clock.

For tests/test_four_collectors.py: several of these poll one simulator server and write into one store.
The parent moves the simulator's clock, then tells every collector process the round's time; each polls
every target of that round's config once (`Collector.run_once`), commits what it got and answers. So the
processes poll the same world at the same simulated moment, concurrently, and their transactions race on
the store, and no process starts a round before all have committed the last one.

    python -m tests.collectorkit SPEC      SPEC: JSON {"db", "capture", "configs": {kind: parse_config data}}

stdin: `<unix time> <kind>` per round, `stop` at the end. stdout: one JSON line per round (the collector's
report so far), and one with the final reports after `stop`. Every response handed to the sink is also
written to `capture` (NDJSON capture lines) before it is stored, for the test to compare what was seen.
"""
from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
ROUND_TIMEOUT = 120.0  # wall seconds a process may take for one round before the test calls it stuck


def _report(collector: Any, waits: list[float]) -> dict:
    r = collector.report
    return {"polls": r.polls, "polls_failed": r.polls_failed, "requests": r.requests, "retries": r.retries,
            "responses": r.responses, "appended": r.appended, "unchanged": r.unchanged, "gaps": r.gaps,
            "deferred": r.deferred, "errors": {str(k): v for k, v in r.errors.items()},
            "failures": dict(r.failures), "waits": len(waits)}


async def _serve(spec: dict, capture: IO[bytes]) -> None:
    import msgspec

    from tornstore.eventstore.collector import Collector, parse_config
    from tornstore.projections.store import Store

    now = [0.0]
    waits: list[float] = []

    def clock() -> float:
        return now[0]

    async def sleep(seconds: float) -> None:
        # Within a round the world stands still: a collector that has to wait (a key's window, a retry)
        # would break the premise that every process sees the same moment. Count it (the test requires
        # none) and let the collector's own clock move so it cannot wait forever.
        waits.append(seconds)
        now[0] += max(0.0, seconds)
        await asyncio.sleep(0)

    encode = msgspec.json.encode
    loop = asyncio.get_running_loop()
    store = await Store.open(spec["db"])
    try:
        async def sink(batch: list) -> Any:
            for r in batch:
                capture.write(encode({"url": r.url, "observed_at": r.observed_at, "body": r.body}) + b"\n")
            capture.flush()
            return await store.ingest_many(batch)

        collectors = {kind: Collector(parse_config(data, env={}), sink, run=store.run, clock=clock,
                                      sleep=sleep, usage_every=86400.0)
                      for kind, data in spec["configs"].items()}
        try:
            while True:
                line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
                if not line or line[0] == "stop":
                    break
                now[0] = float(int(line[0]))
                collector = collectors[line[1]]
                await collector.run_once()
                print(json.dumps(_report(collector, waits)), flush=True)
        finally:
            for collector in collectors.values():
                await collector.close()
        print(json.dumps({kind: _report(c, waits) for kind, c in collectors.items()}), flush=True)
    finally:
        await store.close()


class CollectorProcess:
    """The parent's handle on one collector process (see the module docstring)."""

    def __init__(self, name: str, spec: dict, workdir: Path):
        self.name = name
        self.stderr_path = workdir / f"{name}.stderr"
        self._stderr: IO[bytes] = open(self.stderr_path, "wb")  # noqa: SIM115  # closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.collectorkit", json.dumps(spec)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise AssertionError(f"{self.name} exited early:\n{self.stderr()}") from None

    def receive(self, what: str, timeout: float = ROUND_TIMEOUT) -> dict:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"{self.name} did not finish {what} within {timeout:.0f} s (stuck: a lock "
                                 f"never released?):\n{self.stderr()}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"{self.name} exited (code {self.proc.returncode}) during {what}:\n"
                                 f"{self.stderr()}")
        return json.loads(line)

    def stop(self) -> dict:
        self.send("stop")
        final = self.receive("its last flush")
        assert self.proc.wait(60) == 0, f"{self.name} exit code {self.proc.returncode}:\n{self.stderr()}"
        return final

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()


def main() -> None:
    from tornstore.eventstore.gctuning import fewer_collections

    spec = json.loads(sys.argv[1])
    with fewer_collections(), open(spec["capture"], "wb") as capture:
        asyncio.run(_serve(spec, capture))


if __name__ == "__main__":
    main()

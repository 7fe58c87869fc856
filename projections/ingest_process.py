"""Ingest in a process of its own, so a busy collector gets a second core for it.

Why: routing, canonical hashing and the projections are Python work that holds the GIL, and so does the
collector's HTTP client. In one process they take turns on one core; here the parent polls while the
child stores. The child owns one SQLite connection and runs `ingest_batch` with the inline projections,
exactly as `Store.ingest_many` does, one transaction per batch, in the order the batches were sent.

    async with IngestProcess("torn.db") as writer:
        report = await writer.ingest(batch)          # wait for this batch
        await writer.submit(batch)                   # or queue it and go on ...
        total = await writer.drain()                 # ... and collect the reports later

Bodies may be decoded JSON or `msgspec.Raw` (undecoded JSON, as a collector with `raw_bodies` hands them
on): the child decodes them, so the parent never pays for it. On the pipes, each frame is a 4-byte length
and then JSON (a batch of Responses, parent to child) or a pickle (the child's report or error).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import struct
import sys
from pathlib import Path

import msgspec

from tornstore.eventstore.db import is_url
from tornstore.eventstore.ingest import IngestReport
from tornstore.eventstore.records import Response

_LENGTH = struct.Struct(">I")
_encode = msgspec.json.Encoder().encode


class IngestProcessError(RuntimeError):
    """A batch the child could not store, or a child that is gone (the text says which)."""


URL_VARIABLE = "TORNSTORE_INGEST_DB"   # a PostgreSQL URL handed to the child (argument "-")


class IngestProcess:
    """A child process that ingests batches into the database at `path` (which must exist: open it with
    `Store.open` first, which also migrates it)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._queued: list[asyncio.Future] = []
        self._gone: str | None = None

    async def start(self) -> IngestProcess:
        env = None
        if is_url(self.path):
            # (through the environment: a URL may carry a password, and a command line is public on the host)
            env, target = {**os.environ, URL_VARIABLE: self.path}, "-"
        elif not Path(self.path).exists():  # noqa: ASYNC240  # one stat() before starting the child
            raise FileNotFoundError(f"no database at {self.path}")
        else:
            target = self.path
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", "-m", "tornstore.projections.ingest_process", target,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        self._reader = asyncio.create_task(self._read_replies(self._process))
        return self

    async def __aenter__(self) -> IngestProcess:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def submit(self, batch: list[Response]) -> asyncio.Future:
        """Send a batch and return the future of its report; waits only while the pipe is full."""
        if self._process is None or self._gone:
            raise IngestProcessError(self._gone or "the ingest process is not running (use `async with`)")
        frame = _encode(batch)
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._queued.append(future)
        stdin = self._process.stdin
        assert stdin is not None  # stdin=PIPE
        stdin.write(_LENGTH.pack(len(frame)) + frame)
        # A child that is gone: the reader task reports the exit to every waiting future.
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            await stdin.drain()
        return future

    async def ingest(self, batch: list[Response]) -> IngestReport:
        """Store one batch and return its report (raises IngestProcessError when it could not)."""
        future = await self.submit(batch)
        self._queued.remove(future)
        return await future

    __call__ = ingest  # a collector sink

    async def drain(self) -> IngestReport:
        """Wait for every batch submitted since the last drain; their reports merged. Raises the first
        error after all of them have finished."""
        queued, self._queued = self._queued, []
        total = IngestReport()
        failures = []
        for result in await asyncio.gather(*queued, return_exceptions=True):
            if isinstance(result, BaseException):
                failures.append(result)
            else:
                total.merge(result)
        if failures:
            raise failures[0]
        return total

    async def close(self) -> None:
        """Let the child finish what it was sent, then stop it."""
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.stdin is not None and not process.stdin.is_closing():
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), timeout=60)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader

    async def _read_replies(self, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        try:
            assert stdout is not None  # stdout=PIPE
            while True:
                try:
                    size = _LENGTH.unpack(await stdout.readexactly(_LENGTH.size))[0]
                    status, value = pickle.loads(await stdout.readexactly(size))
                except asyncio.IncompleteReadError:
                    break  # the child closed its end: it is exiting
                future = self._waiting.popleft()
                if future.done():
                    continue
                if status == "ok":
                    future.set_result(value)
                else:
                    future.set_exception(IngestProcessError(value))
        finally:
            code: int | None
            try:
                code = await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                code = None
            self._gone = f"the ingest process exited (code {code}); its message, if any, is above"
            while self._waiting:
                future = self._waiting.popleft()
                if not future.done():
                    future.set_exception(IngestProcessError(f"{self._gone}; a batch was not stored"))


# ---------------------------------------------------------------------------------------- the child
def _read_frame(stream) -> bytes | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    size = _LENGTH.unpack(head)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return data


def main(argv: list[str] | None = None) -> None:
    """Serve batches from stdin until it closes; one reply per batch on stdout."""
    from tornstore.eventstore.db import close_sync, connect_sync, describe
    from tornstore.eventstore.gctuning import fewer_collections
    from tornstore.eventstore.ingest import ingest_batch
    from tornstore.eventstore.migrate import MigrationError, check

    from .runner import project_inline

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tornstore.projections.ingest_process DATABASE")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by mistake goes to stderr, not into the replies
    decode = msgspec.json.Decoder(list[Response]).decode
    target = os.environ.get(URL_VARIABLE, "") if args[0] == "-" else args[0]
    conn = connect_sync(target)
    try:
        try:
            pending = check(conn)
        except MigrationError as exc:
            sys.exit(f"{describe(target)}: {exc}")
        if pending:
            sys.exit(f"{describe(target)}: the schema is not current ({len(pending)} migration(s) to apply); "
                     "open it with the store first")
        requests = sys.stdin.buffer
        with fewer_collections():
            while (frame := _read_frame(requests)) is not None:
                reply: tuple[str, IngestReport | str]
                try:
                    reply = ("ok", ingest_batch(conn, decode(frame), project_inline))
                except Exception as exc:  # the parent raises it for this batch; the next one may work
                    reply = ("error", f"ingest failed: {type(exc).__name__}: {exc}")
                data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
                replies.write(_LENGTH.pack(len(data)) + data)
                replies.flush()
    finally:
        close_sync(conn)


if __name__ == "__main__":
    main()

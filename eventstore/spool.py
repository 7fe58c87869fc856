"""Nothing lost when the database fails: responses it cannot take right now wait in a spool file.

A collector's sink is the database. When it is locked by another process for longer than the busy
timeout, the disk is full, or the file went away, the responses in hand are appended to a spool beside
the database (`torn.db.spool.ndjson`: capture lines, keys stripped, owner and key fingerprint kept), and
stored, in order, at the next batch the database takes. Retries back off (5 s doubling to 5 minutes), and
each incident is one log line when it starts and one when it ends, never a traceback.

    sink = SpoolingSink(store.ingest_many, spool_path_for("torn.db"))
    collector = Collector(config, sink, run=store.run)

A crash between storing the spool and emptying it only means the spool is read again: ingest stores a
response it already has as unchanged.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import msgspec

from .capture import parse_line
from .db import is_url
from .ingest import IngestReport
from .migrate import MigrationError
from .records import Response
from .secrets import scrub, strip_key

log = logging.getLogger("tornstore.collector.spool")  # shown where the collector logs

# What "the database cannot take it right now" looks like: locked, full, gone, not a database, a newer
# schema, an I/O error. Anything else is a bug and is raised.
STORE_FAILURES: tuple[type[BaseException], ...] = (sqlite3.OperationalError, sqlite3.DatabaseError, MigrationError,
                                                   OSError)

_encode = msgspec.json.Encoder().encode


def spool_path_for(db_path: str | Path) -> Path:
    """The spool of a database: beside it, `<name>.spool.ndjson`; for a PostgreSQL database, which has no
    folder here, `tornstore-<host>-<database>.spool.ndjson` in the current folder (no user, no password)."""
    text = str(db_path)
    if is_url(text):
        from urllib.parse import urlsplit
        parts = urlsplit(text)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{parts.hostname or 'local'}-{parts.path.strip('/') or 'db'}")
        return Path(f"tornstore-{name}.spool.ndjson")
    return Path(text + ".spool.ndjson")


def _line(response: Response) -> bytes:
    """One capture line; an undecoded body (msgspec.Raw) is spliced in as the bytes it is."""
    head: dict = {"url": scrub(strip_key(response.url)), "observed_at": response.observed_at}
    if response.owner is not None:
        head["owner"] = response.owner
    if response.key:
        head["key"] = response.key
    body = response.body
    raw = bytes(body) if isinstance(body, msgspec.Raw) else _encode(body)
    return _encode(head)[:-1] + b',"body":' + raw + b"}\n"


class Spool:
    """An append-only capture file of responses waiting for the database."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, responses: Iterable[Response]) -> int:
        """Append and fsync: once this returns, the responses survive a crash. Returns how many."""
        lines = [_line(r) for r in responses]
        with open(self.path, "ab") as out:
            out.write(b"".join(lines))
            out.flush()
            os.fsync(out.fileno())
        return len(lines)

    def waiting(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def read(self) -> list[Response]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as src:
            parsed = (parse_line(line, f"{self.path.name}:{n}") for n, line in enumerate(src, start=1))
            return [r for r in parsed if r is not None]

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


Sink = Callable[[list[Response]], Awaitable[IngestReport | None]]


class SpoolingSink:
    """A sink that spools what the database cannot take, and stores the spool first when it can again.

    `clock` is monotonic time (injectable for tests); the backoff never depends on the wall clock."""

    FIRST_BACKOFF = 5.0
    MAX_BACKOFF = 300.0

    def __init__(self, sink: Sink, spool: Spool | str | Path, *, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self.spool = spool if isinstance(spool, Spool) else Spool(spool)
        self.clock = clock
        self.backoff = 0.0
        self.retry_at = float("-inf")
        self.incident: str | None = None    # the failure being lived through, for its one log line
        self.spooled = 0                     # responses spooled during this incident
        self.held: list[Response] = []       # what neither the database nor the spool could take
        self.holding = False

    async def __call__(self, batch: list[Response]) -> IngestReport | None:
        if (self.incident or self.held or self.spool.waiting()) and self.clock() < self.retry_at:
            self._spool(batch)
            return None
        try:
            report = await self._drain() if self.spool.waiting() else None
            pending = self.held + batch       # held: what the spool could not take either (disk full)
            stored = await self.sink(pending) if pending else None
        except STORE_FAILURES as exc:
            self._failed(exc)
            self._spool(batch)
            return None
        self.held, self.holding = [], False
        self._recovered()
        if report is not None and stored is not None:
            report.merge(stored)
            return report
        return stored if report is None else report

    async def drain(self) -> IngestReport | None:
        """Store the spool now (at start-up, or when the collector stops); raises if the database fails."""
        if not self.spool.waiting():
            return None
        report = await self._drain()
        self._recovered()
        return report

    async def _drain(self) -> IngestReport:
        waiting = self.spool.read()
        report = IngestReport()
        for i in range(0, len(waiting), 500):
            result = await self.sink(waiting[i:i + 500])
            if result is not None:
                report.merge(result)
        self.spool.clear()
        log.warning("stored %d spooled responses from %s", len(waiting), self.spool.path)
        return report

    def _spool(self, batch: list[Response]) -> None:
        """Append to the spool; if even that fails (the disk is full), hold them here until it works."""
        self.held += batch
        if not self.held:
            return
        try:
            self.spooled += self.spool.append(self.held)
        except OSError as exc:
            if not self.holding:
                log.warning("cannot write the spool %s either (%s): holding %d responses in memory",
                            self.spool.path, scrub(f"{type(exc).__name__}: {exc}"), len(self.held))
            self.holding = True
            return
        self.held, self.holding = [], False

    def _failed(self, exc: BaseException) -> None:
        reason = scrub(f"{type(exc).__name__}: {exc}")
        if self.incident is None:
            log.warning("the database cannot store responses (%s): spooling them to %s and retrying",
                        reason, self.spool.path)
        self.incident = reason
        self.backoff = min(self.MAX_BACKOFF, self.backoff * 2 if self.backoff else self.FIRST_BACKOFF)
        self.retry_at = self.clock() + self.backoff

    def _recovered(self) -> None:
        if self.incident is not None:
            log.warning("the database stores responses again (after %s); %d were spooled meanwhile",
                        self.incident, self.spooled)
        self.incident, self.backoff, self.retry_at, self.spooled = None, 0.0, float("-inf"), 0

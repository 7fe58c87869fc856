"""What the collector keeps in the database besides events: gaps, key state, target problems.

All functions take a plain `sqlite3.Connection` (run them through `EventLog.run`, one round trip):

  * `gaps`: one row per poll that brought no data (Torn error code, HTTP status, timeout, too large,
    no usable key), so "no data between" can be told from "unchanged since" (streams.last_checked);
  * `api_keys`: each key's state by fingerprint (never the key), loaded at start, saved as it changes;
    its request count grows by each writer's increment, so collectors sharing a key count together;
  * `target_problems`: targets the API said do not exist (6) or are not visible to our keys (7, 16), one
    row per (target, code) with a count.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from ..db import Transaction


class Gap(NamedTuple):
    observed_at: int
    source_url: str           # without key=
    target: str | None
    error_code: int | None    # Torn error code; None for HTTP errors, timeouts and the like
    reason: str


class TargetProblem(NamedTuple):
    target: str
    error_code: int
    observed_at: int


def persist(conn: sqlite3.Connection, gaps: Iterable[Gap] = (), key_rows: Iterable[tuple] = (),
            problems: Iterable[TargetProblem] = ()) -> None:
    """Write gaps, key state rows (KeyPool.dirty_rows) and target problems in one transaction."""
    gaps, key_rows, problems = list(gaps), list(key_rows), list(problems)
    if not (gaps or key_rows or problems):
        return
    with Transaction(conn):
        if gaps:
            conn.executemany(
                "INSERT INTO gaps (observed_at, source_url, target, error_code, reason) VALUES (?, ?, ?, ?, ?)",
                gaps)
        if key_rows:
            conn.executemany(
                "INSERT INTO api_keys (fingerprint, owner, state, paused_until, recheck_at, last_error_code, "
                "last_error_at, last_used_at, requests, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (fingerprint) DO UPDATE SET owner = excluded.owner, state = excluded.state, "
                "paused_until = excluded.paused_until, recheck_at = excluded.recheck_at, "
                "last_error_code = excluded.last_error_code, last_error_at = excluded.last_error_at, "
                "last_used_at = max(COALESCE(last_used_at, excluded.last_used_at), "
                "COALESCE(excluded.last_used_at, last_used_at)), "
                "requests = requests + excluded.requests, reason = excluded.reason",
                key_rows)
        if problems:
            conn.executemany(
                "INSERT INTO target_problems (target, error_code, first_seen, last_seen, count) "
                "VALUES (?, ?, ?, ?, 1) ON CONFLICT (target, error_code) DO UPDATE SET "
                "last_seen = max(last_seen, excluded.last_seen), count = count + 1",
                [(p.target, p.error_code, p.observed_at, p.observed_at) for p in problems])


def load_keys(conn: sqlite3.Connection, fingerprints: Iterable[str]) -> list[tuple]:
    """Saved state of these keys: (fingerprint, state, paused_until, recheck_at, last_error_code,
    last_error_at, last_used_at, requests, reason)."""
    fps = list(fingerprints)
    if not fps:
        return []
    return conn.execute(
        "SELECT fingerprint, state, paused_until, recheck_at, last_error_code, last_error_at, last_used_at, "
        f"requests, reason FROM api_keys WHERE fingerprint IN ({','.join('?' for _ in fps)})", fps).fetchall()


def load_target_problems(conn: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
    """(target, error_code, last_seen, count) of every recorded target problem."""
    return conn.execute("SELECT target, error_code, last_seen, count FROM target_problems").fetchall()


def load_state(conn: sqlite3.Connection, fingerprints: Iterable[str]) -> tuple[list[tuple], list[tuple]]:
    """Key rows and target problems in one round trip."""
    return load_keys(conn, fingerprints), load_target_problems(conn)


def gaps_between(conn: sqlite3.Connection, target: str, start: int, end: int) -> list[Gap]:
    """The gaps recorded for a target in [start, end): the times a poll brought no data."""
    rows = conn.execute(
        "SELECT observed_at, source_url, target, error_code, reason FROM gaps "
        "WHERE target = ? AND observed_at >= ? AND observed_at < ? ORDER BY observed_at, id",
        (target, start, end)).fetchall()
    return [Gap(*row) for row in rows]


def key_states(conn: sqlite3.Connection) -> list[dict]:
    """Every saved key state (by fingerprint), for status displays."""
    cur = conn.execute(
        "SELECT fingerprint, owner, state, paused_until, recheck_at, last_error_code, last_error_at, "
        "last_used_at, requests, reason FROM api_keys ORDER BY owner, fingerprint")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

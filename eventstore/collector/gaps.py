"""What the collector keeps in the database besides events: gaps, key state, target problems.

All functions take a plain `sqlite3.Connection` (run them through `EventLog.run`, one round trip):

  * `gaps`: one row per poll that brought no data (Torn error code, HTTP status, timeout, too large,
    no usable key), so "no data between" can be told from "unchanged since" (streams.last_checked);
  * `api_keys`: each key's state by fingerprint (never the key), loaded at start, saved as it changes;
    its request count grows by each writer's increment, so collectors sharing a key count together;
  * `owner_requests`: per key owner, the Unix times of the requests sent in the last 60 s (by key
    fingerprint), saved with the key state and loaded with it, so the 100 requests a minute per owner
    hold across a restart; each writer adds its own new times, so collectors sharing an owner count together;
  * `target_problems`: targets the API said do not exist (6) or are not visible to our keys (7, 16), one
    row per (target, code) with a count.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from ..db import Transaction
from .keypool import COUNTED, OwnerRequests


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
            problems: Iterable[TargetProblem] = (), owner_rows: Iterable[OwnerRequests] = ()) -> None:
    """Write gaps, key state rows (KeyPool.dirty_rows), target problems and owners' request times
    (KeyPool.owner_rows) in one transaction."""
    gaps, key_rows, problems, owner_rows = list(gaps), list(key_rows), list(problems), list(owner_rows)
    if not (gaps or key_rows or problems or owner_rows):
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
                "last_used_at = max(COALESCE(api_keys.last_used_at, excluded.last_used_at), "
                "COALESCE(excluded.last_used_at, api_keys.last_used_at)), "
                "requests = api_keys.requests + excluded.requests, reason = excluded.reason",
                key_rows)
        if problems:
            conn.executemany(
                "INSERT INTO target_problems (target, error_code, first_seen, last_seen, count) "
                "VALUES (?, ?, ?, ?, 1) ON CONFLICT (target, error_code) DO UPDATE SET "
                "last_seen = max(target_problems.last_seen, excluded.last_seen), count = target_problems.count + 1",
                [(p.target, p.error_code, p.observed_at, p.observed_at) for p in problems])
        for row in owner_rows:
            _add_requests(conn, row)


def _add_requests(conn: sqlite3.Connection, row: OwnerRequests) -> None:
    """Add an owner's new request times to the saved ones; keep those of the last COUNTED seconds. A saved
    time ahead of `saved_at` (the clock was set back) becomes `saved_at`: "just now", not the future."""
    found = conn.execute("SELECT sent FROM owner_requests WHERE owner = ?", (row.owner,)).fetchone()
    sent = _decode_sent(found[0]) if found else {}
    now = float(row.saved_at)
    kept: dict[str, list[float]] = {}
    for fp in sorted(set(sent) | set(row.sent)):
        times = sorted(min(t, now) for t in sent.get(fp, []) + list(row.sent.get(fp, ())) if t > now - COUNTED)
        if times:
            kept[fp] = [round(t, 3) for t in times]
    conn.execute(
        "INSERT INTO owner_requests (owner, sent, saved_at) VALUES (?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
        "sent = excluded.sent, saved_at = excluded.saved_at",
        (row.owner, json.dumps(kept, separators=(",", ":")), int(now)))


def _decode_sent(text: str | None) -> dict[str, list[float]]:
    """The `sent` column as {fingerprint: [times]}; anything else in it is ignored."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(fp): [float(t) for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)]
            for fp, times in value.items() if isinstance(times, list)}


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


def load_owner_requests(conn: sqlite3.Connection, owners: Iterable[str],
                        fingerprints: Iterable[str] = ()) -> list[tuple[str, dict[str, list[float]]]]:
    """Saved request times (owner, {fingerprint: [Unix times]}) of these owners, and of the owners the
    saved key rows name for these fingerprints (a key whose owner the API corrected)."""
    names = set(owners)
    fps = list(fingerprints)
    if fps:
        names |= {owner for (owner,) in conn.execute(
            f"SELECT owner FROM api_keys WHERE fingerprint IN ({','.join('?' for _ in fps)})", fps)}
    if not names:
        return []
    ordered = sorted(names)
    rows = conn.execute(f"SELECT owner, sent FROM owner_requests WHERE owner IN ({','.join('?' for _ in ordered)}) "
                        "ORDER BY owner", ordered).fetchall()
    return [(owner, _decode_sent(sent)) for owner, sent in rows]


def load_state(conn: sqlite3.Connection, fingerprints: Iterable[str], owners: Iterable[str] = ()
               ) -> tuple[list[tuple], list[tuple], list[tuple[str, dict[str, list[float]]]]]:
    """Key rows, target problems and owners' recent request times in one round trip."""
    fps = list(fingerprints)
    return load_keys(conn, fps), load_target_problems(conn), load_owner_requests(conn, owners, fps)


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

"""Capture files: NDJSON, one API response per line: {"url": ..., "observed_at": <unix s>, "body": <JSON>}.

Optional fields: "owner": {"player_id": N, "faction_id": N} (whose key made the request; either may be
absent) and "key": "k:xxxxxxxx" (the key's fingerprint; a key written there by mistake is fingerprinted
on reading and never kept).

Reading never fails on a bad line: a line that is not JSON, or not a capture object, becomes a Response
whose body is the raw text, so ingest quarantines it with the reason and the file's other lines still land.
"""
from __future__ import annotations

import sqlite3
from typing import Protocol
from collections.abc import Iterable, Iterator

import msgspec

from .owners import key_fingerprint
from .records import Owner, Response
from .routing import stream_name
from .secrets import strip_key

class _Writer(Protocol):
    """Where export_events writes: a binary file, or anything with its write()."""

    def write(self, data: bytes, /) -> int: ...


_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def parse_line(line: str | bytes, where: str = "capture") -> Response | None:
    """One capture line as a Response; None for a blank line."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    if not line.strip():
        return None
    try:
        obj = _decoder.decode(line)
    except (msgspec.DecodeError, RecursionError) as exc:
        return _unreadable(line, where, f"not JSON ({exc})")
    if not isinstance(obj, dict) or "url" not in obj or "body" not in obj:
        return _unreadable(line, where, "not a capture object with url, observed_at and body")
    observed_at = obj.get("observed_at")
    try:
        owner = msgspec.convert(obj["owner"], Owner) if obj.get("owner") is not None else None
    except msgspec.ValidationError as exc:
        return _unreadable(line, where, f"'owner' is not {{\"player_id\": N, \"faction_id\": N}} ({exc})")
    key = obj.get("key")
    return Response(url=strip_key(str(obj["url"])), observed_at=observed_at, body=obj["body"],
                    stream=obj.get("stream") if isinstance(obj.get("stream"), str) else None,
                    owner=owner, key=key_fingerprint(key) if isinstance(key, str) else None)


def _unreadable(line: str, where: str, why: str) -> Response:
    return Response(url=where, observed_at=None, body=line.rstrip("\n"), fault=f"{where}: {why}")


def read_capture(lines: Iterable[str | bytes], name: str = "capture") -> Iterator[Response]:
    for number, line in enumerate(lines, start=1):
        response = parse_line(line, f"{name}:{number}")
        if response is not None:
            yield response


def capture_line(url: str, observed_at: int, body, stream: str | None = None, owner: Owner | None = None,
                 key: str | None = None) -> bytes:
    obj = {"url": strip_key(url), "observed_at": observed_at, "body": body}
    if stream:
        obj["stream"] = stream
    if owner is not None:
        obj["owner"] = owner
    if key:
        obj["key"] = key_fingerprint(key)
    return _encoder.encode(obj) + b"\n"


def export_events(conn: sqlite3.Connection, out: _Writer, after: int = 0, batch: int = 5000) -> int:
    """Write every event after `after` in position order as capture lines naming their stream."""
    count = 0
    position = after
    while True:
        rows = conn.execute(
            "SELECT e.position, e.source_url, e.observed_at, e.payload, s.entity_type, s.entity_id, s.view "
            "FROM events e JOIN streams s USING (stream_id) WHERE e.position > ? ORDER BY e.position LIMIT ?",
            (position, batch),
        ).fetchall()
        if not rows:
            return count
        for pos, url, observed_at, payload, etype, eid, view in rows:
            # The payload is stored JSON already: splice it in without decoding it.
            head = _encoder.encode({"url": url, "observed_at": observed_at,
                                    "stream": stream_name(etype, eid, view)})
            out.write(head[:-1] + b',"body":' + payload.encode() + b"}\n")
            position = pos
            count += 1

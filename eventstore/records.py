"""The values that cross the boundary of the log: responses in, events and heartbeats out."""
from __future__ import annotations

from typing import Any, NamedTuple

import msgspec


class Owner(msgspec.Struct, frozen=True, omit_defaults=True):
    """Whose key made a request: a response under an own-key URL (`/v2/user/bars`, v1 `user/`) names its
    entity only through it. Either id may be unknown."""
    player_id: int | None = None
    faction_id: int | None = None


class Response(msgspec.Struct, kw_only=True):
    """One API response, as a capture line carries it.

    `body` is the decoded JSON, or a `str` holding the raw text when it could not be decoded (ingest then
    quarantines it). `stream` is set only by export-events: it names the stream the body is the payload of,
    so a re-import files it under the same stream without routing. `fault` is set by a reader that could
    not make sense of its input (an unreadable capture line): ingest quarantines the body with that reason.
    `owner` and `key` resolve the entity of an own-key URL: the owner given, else the owner learned for
    the key (from `/v2/key/info` or an own profile made with it).
    """
    url: str
    observed_at: Any
    body: Any
    stream: str | None = None
    fault: str | None = None
    owner: Owner | None = None   # the key's owner, when the caller knows it
    key: str | None = None       # the key's fingerprint ("k:" + 8 hex digits), never the key


class StreamKey(NamedTuple):
    entity_type: str
    entity_id: str
    view: str

    def __str__(self) -> str:
        return f"{self.entity_type}:{self.entity_id}:{self.view}"


class Event(NamedTuple):
    """An appended event, handed to projections in the same transaction (payload already decoded)."""
    position: int
    stream: StreamKey
    version: int
    observed_at: int
    payload: Any
    source_url: str


class Heartbeat(NamedTuple):
    """A poll that found a stream unchanged: live columns may still take its fresh payload."""
    stream: StreamKey
    observed_at: int
    payload: Any


class TornError(NamedTuple):
    """A Torn API error body ({"error": {"code": N, "error": text}}); never stored as data."""
    url: str
    observed_at: int
    code: int
    message: str


class Rejected(NamedTuple):
    """A response that could not be stored as events; its body is in the quarantine table."""
    url: str
    observed_at: int | None
    reason: str

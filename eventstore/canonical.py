"""The canonical form of a payload and its hash: what change detection compares.

The canonical form is the payload with its noise fields removed and its keys sorted, encoded as compact
JSON, hashed with 128-bit BLAKE2b. Noise fields are text or counters that only restate the clock
(`last_action.relative`, countdowns, tick timers, `days_in_faction`: fact 4 of the Torn API notes); they
change on every poll without any change of state, so hashing them would store every poll.

The rule set has a tag (RULES). A stream remembers the tag its hash was made with; when the rules change,
ingest re-hashes the stream's head event under the new rules before comparing, so a rule change never
makes every stream look new.
"""
from __future__ import annotations

import hashlib
from typing import Any

import msgspec

RULES = "r1"

# Per view (see routing.py): dotted paths removed before hashing. '*' matches any key or list item.
_PLAYER = (
    "last_action",                      # relative text, timestamp and Online/Idle flip with activity
    "status.description",               # "In hospital for 3 mins": a countdown (state is kept)
    "status.details",
    "status.until",
    "life.current", "life.ticktime", "life.fulltime", "life.tick_time", "life.full_time",
    "age",                              # account age in days
    "days_in_faction", "faction.days_in_faction",
    "basicicons",                       # icon texts carry countdowns
    "states",                           # hospital/jail release timestamps
    "revivable", "is_revivable", "is_on_wall", "is_in_oc", "has_early_discharge",
    "married.duration", "spouse.days_married",
    "competition",                      # event-only, sub-fields vary by event
    "server_time",
)
_BAR = ("current", "ticktime", "fulltime", "tick_time", "full_time")
NOISE: dict[str, tuple[str, ...]] = {
    "v1.profile": _PLAYER,
    "v1.basic": _PLAYER,
    "v1.member": _PLAYER,
    "v2.profile": _PLAYER,
    "v2.basic": _PLAYER,
    "v2.member": _PLAYER,
    "v1.bars": tuple(f"{bar}.{f}" for bar in ("life", "energy", "nerve", "happy") for f in _BAR)
    + ("chain.current", "chain.timeout", "chain.cooldown", "server_time"),
    "v2.bars": tuple(f"bars.{bar}.{f}" for bar in ("life", "energy", "nerve", "happy") for f in _BAR)
    + ("bars.chain.current", "bars.chain.timeout", "bars.chain.cooldown"),
    "v1.cooldowns": ("cooldowns",),
    "v2.cooldowns": ("cooldowns",),
    "v1.personalstats": ("personalstats.useractivity", "personalstats.activestreak"),
    "v2.personalstats": ("other.activity",),
    "v1.faction": ("age",),
    "v2.faction": ("days_old",),
    "v1.chain": ("chain.timeout", "chain.cooldown"),
    "v2.chain": ("timeout", "cooldown"),
}
# Removed from every view: paging links restate the request, not the entity.
_ALWAYS = ("_metadata",)


def _drop(obj: Any, path: list[str]) -> None:
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        targets = list(obj) if head == "*" else ([head] if head in obj else [])
        for key in targets:
            if rest:
                _drop(obj[key], rest)
            else:
                del obj[key]
    elif isinstance(obj, list) and head == "*" and rest:
        for item in obj:
            _drop(item, rest)


def _copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def canonical_bytes(view: str, payload: Any) -> bytes:
    """Sorted-key compact JSON of `payload` without the view's noise fields."""
    noise = NOISE.get(view, ())
    if isinstance(payload, dict) and (noise or any(k in payload for k in _ALWAYS)):
        # Only the first level needs a fresh dict when no nested path is removed.
        payload = _copy(payload) if any("." in p for p in noise) else dict(payload)
        for key in _ALWAYS:
            payload.pop(key, None)
        for path in noise:
            _drop(payload, path.split("."))
    return msgspec.json.encode(payload, order="sorted")


def canonical_hash(view: str, payload: Any) -> str:
    """Hex of the 128-bit BLAKE2b of the canonical form."""
    return hashlib.blake2b(canonical_bytes(view, payload), digest_size=16).hexdigest()

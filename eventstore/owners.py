"""Who owns each key: what own-key URLs (`/v2/user/bars`, v1 `user/?selections=personalstats`) are about.

A key is known here only by its fingerprint. Its owner is learned from responses made with it that say
who the owner is (`/v2/key/info`, an own profile; see `routing.owner_taught`) and kept in `key_owners`,
newest observation winning, so a player who changes faction is followed. Bodies that waited in
quarantine for an owner are handed back to ingest once their key's owner is known.
"""
from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable

import msgspec

from .records import Owner, Response
from .secrets import fingerprint

_FINGERPRINT = re.compile(r"k:[0-9a-f]{8}")
_decode = msgspec.json.Decoder().decode


def key_fingerprint(key: str | None) -> str | None:
    """The fingerprint of what a caller gave as `key`: kept when it is one, made when it is a key."""
    if not key:
        return None
    return key if _FINGERPRINT.fullmatch(key) else fingerprint(key)


class KeyOwners:
    """The owners of a batch's keys: those on record, and what the batch teaches (saved with it)."""

    def __init__(self, known: dict[str, tuple[Owner, int]]):
        self.known = known                       # fingerprint -> (owner, learned_at)
        self.taught: dict[str, tuple[Owner, int, str]] = {}   # fingerprint -> (owner, observed_at, url)

    @classmethod
    def load(cls, conn: sqlite3.Connection, fingerprints: Iterable[str]) -> KeyOwners:
        wanted = sorted(set(fingerprints))
        known: dict[str, tuple[Owner, int]] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            for fp, player, faction, at in conn.execute(
                    "SELECT key_fp, player_id, faction_id, learned_at FROM key_owners "
                    f"WHERE key_fp IN ({','.join('?' * len(chunk))})", chunk):
                known[fp] = (Owner(player_id=player, faction_id=faction), at)
        return cls(known)

    def get(self, fp: str | None) -> Owner | None:
        if fp is None or fp not in self.known:
            return None
        owner = self.known[fp][0]
        # 0 is "in no faction": known, but no faction to file a faction's data under.
        return owner if owner.faction_id != 0 else Owner(player_id=owner.player_id)

    def learn(self, fp: str, observed_at: int, url: str, owner: Owner | None) -> None:
        """Take what a response made with key `fp` says of its owner; an older observation never wins."""
        if owner is None:
            return
        current = self.known.get(fp)
        if current is not None and observed_at < current[1]:
            return
        if owner.faction_id is None and current is not None and current[0].player_id == owner.player_id:
            owner = Owner(player_id=owner.player_id, faction_id=current[0].faction_id)  # basic says no faction
        self.known[fp] = (owner, observed_at)
        self.taught[fp] = (owner, observed_at, url)

    def save(self, conn: sqlite3.Connection) -> None:
        """Write what the batch taught (inside the batch's transaction)."""
        if not self.taught:
            return
        conn.executemany(
            "INSERT INTO key_owners (key_fp, player_id, faction_id, learned_at, source_url) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (key_fp) DO UPDATE SET player_id = excluded.player_id, "
            "faction_id = COALESCE(excluded.faction_id, key_owners.faction_id), "
            "learned_at = excluded.learned_at, source_url = excluded.source_url "
            "WHERE excluded.learned_at >= key_owners.learned_at",
            [(fp, o.player_id, o.faction_id, at, url) for fp, (o, at, url) in self.taught.items()])


def waiting_for_owner(conn: sqlite3.Connection, fingerprints: Iterable[str]) -> list[tuple[int, Response]]:
    """Quarantined bodies that only lacked the owner of one of these keys, as responses to route again."""
    wanted = sorted(set(fingerprints))
    out: list[tuple[int, Response]] = []
    for i in range(0, len(wanted), 500):
        chunk = wanted[i:i + 500]
        for qid, url, observed_at, body, fp in conn.execute(
                "SELECT id, source_url, observed_at, body, key_fp FROM quarantine WHERE needs_owner = 1 "
                f"AND key_fp IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk):
            try:
                decoded = _decode(body)
            except msgspec.DecodeError:
                continue
            out.append((qid, Response(url=url, observed_at=observed_at, body=decoded, key=fp)))
    return out


def keys_waiting(conn: sqlite3.Connection) -> list[str]:
    """Fingerprints of keys whose owner is now known and for which quarantined bodies wait."""
    return [fp for (fp,) in conn.execute(
        "SELECT DISTINCT q.key_fp FROM quarantine q JOIN key_owners k ON k.key_fp = q.key_fp "
        "WHERE q.needs_owner = 1 ORDER BY q.key_fp")]

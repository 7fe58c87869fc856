"""Online backups of the database file: a consistent copy taken while the store stays open.

`backup_database(conn, dest)` writes the copy with `VACUUM INTO` (a consistent snapshot that includes
committed WAL content, compacted) to `dest.partial`, syncs it, then renames it into place, so `dest`
either does not exist or is a complete database: a crash in the middle leaves only a `.partial` file,
which the next backup to the same name replaces. A row in `backups` records it.

Dated backups sit beside the database: `torn.db.backup-20270201T000000Z`. `rotate_backups(db_path, keep)`
keeps the newest `keep` of them.
"""
from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .db import joined_transaction

_STAMP = "%Y%m%dT%H%M%SZ"
_DATED = re.compile(r"\.backup-(\d{8}T\d{6}Z)$")


@dataclass
class BackupResult:
    path: str
    bytes: int
    created_at: int


def dated_backup_path(db_path: str | Path, when: int) -> Path:
    """The backup file for a run at `when` (Unix seconds): beside the database, named by UTC time."""
    db = Path(db_path)
    stamp = datetime.fromtimestamp(int(when), tz=UTC).strftime(_STAMP)
    return db.with_name(f"{db.name}.backup-{stamp}")


def database_path(conn: sqlite3.Connection) -> str | None:
    """The file behind the connection's main database (None for an in-memory one)."""
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return path or None
    return None


def backup_database(conn: sqlite3.Connection, dest_path: str | Path, *, created_at: int | None = None,
                    reason: str | None = None, record: bool = True) -> BackupResult:
    """Copy the database to `dest_path` (which must not exist) and record it in `backups`.

    `created_at` is the caller's clock (Unix seconds); the wall clock only when not given. Must be called
    outside a transaction (VACUUM INTO cannot run inside one).
    """
    if conn.in_transaction:
        raise RuntimeError("backup_database must run outside a transaction")
    dest = Path(dest_path)
    if dest.exists():
        raise FileExistsError(f"backup target {dest} already exists")
    if not dest.parent.is_dir():
        raise FileNotFoundError(f"backup directory {dest.parent} does not exist")
    source = database_path(conn)
    if source and Path(source).resolve() == dest.resolve():
        raise ValueError("backup target is the database itself")
    partial = dest.with_name(dest.name + ".partial")
    if partial.exists():
        partial.unlink()  # left by a backup that died half-way
    conn.execute("VACUUM INTO ?", (str(partial),))
    _fsync(partial)
    os.replace(partial, dest)
    _fsync_dir(dest.parent)
    size = dest.stat().st_size
    when = int(created_at) if created_at is not None else int(datetime.now(UTC).timestamp())
    if record:
        record_backup(conn, dest, when, size, reason)
    return BackupResult(str(dest), size, when)


def record_backup(conn: sqlite3.Connection, dest: str | Path, created_at: int, size: int,
                  reason: str | None) -> None:
    """A row in `backups` for a backup file (one row per path: recording it again updates the row)."""
    path = str(dest)
    with joined_transaction(conn):
        conn.execute("DELETE FROM backups WHERE path = ?", (path,))
        conn.execute("INSERT INTO backups (path, created_at, bytes, reason) VALUES (?, ?, ?, ?)",
                     (path, created_at, size, reason))


def list_backups(db_path: str | Path) -> list[Path]:
    """Dated backups of the database, oldest first."""
    db = Path(db_path)
    if not db.parent.is_dir():
        return []
    found = [p for p in db.parent.iterdir()
             if p.name.startswith(db.name + ".backup-") and _DATED.search(p.name) and p.is_file()]
    return sorted(found, key=lambda p: _stamp_of(p.name))


def _stamp_of(name: str) -> str:
    match = _DATED.search(name)
    return match.group(1) if match else ""


def rotate_backups(db_path: str | Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` dated backups of the database; returns the paths deleted.
    Backups written elsewhere (`tornstore backup -o PATH`) are never touched."""
    if keep < 0:
        raise ValueError("keep must be 0 or more")
    backups = list_backups(db_path)
    # Clamp at 0: with fewer than `keep` backups a negative slice end would count from the end and
    # delete backups that should stay (two backups with keep=3 would lose the older one).
    doomed = backups[:max(len(backups) - keep, 0)]
    removed = []
    for path in doomed:
        path.unlink(missing_ok=True)
        removed.append(str(path))
    return removed


def forget_backups(conn: sqlite3.Connection, paths: list[str]) -> None:
    """Drop the `backups` rows of files that rotation deleted."""
    if not paths:
        return
    with joined_transaction(conn):
        conn.executemany("DELETE FROM backups WHERE path = ?", [(p,) for p in paths])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

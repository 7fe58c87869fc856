"""The migration runner: `migrations/NNNN_description.sql`, applied in order, each in one transaction.

Each applied file is recorded in `schema_version` with a sha256 checksum. A database newer than the code,
or an applied migration whose file has changed since, is refused with a message that says which.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

from . import db

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


class MigrationError(RuntimeError):
    """The database and the code disagree about the schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations(package: str = "tornstore.migrations") -> list[Migration]:
    """Every migration file shipped in `package` (SQLite's; eventstore.postgres keeps its own), in version
    order."""
    found = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2].replace("_", " "), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration files skip from {expected - 1} to {migration.version}")
    return found


POSTGRES_PACKAGE = "tornstore.eventstore.postgres"


def migrations_for(conn: sqlite3.Connection) -> list[Migration]:
    """The migration files of the connection's dialect: the same versions and names on both backends."""
    return available_migrations(POSTGRES_PACKAGE) if db.is_postgres(conn) else available_migrations()


def applied_versions(conn: sqlite3.Connection) -> dict[int, str]:
    """version -> checksum of what is applied; empty for a new database."""
    if "schema_version" not in db.table_names(conn):
        return {}
    return {version: checksum for version, checksum in conn.execute("SELECT version, checksum FROM schema_version")}


def check(conn: sqlite3.Connection) -> list[Migration]:
    """Refuse a database the code cannot work with; return the migrations still to apply."""
    migrations = migrations_for(conn)
    applied = applied_versions(conn)
    known = {m.version: m for m in migrations}
    newest_code = migrations[-1].version if migrations else 0
    for version, checksum in sorted(applied.items()):
        if version not in known:
            raise MigrationError(
                f"database schema is at version {max(applied)}, newer than this tornstore "
                f"(knows up to {newest_code}): upgrade tornstore before opening it"
            )
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d} ({known[version].description}) was changed after it was applied "
                f"to this database: restore the original file or start a new database"
            )
    return [m for m in migrations if m.version not in applied]


def migrate(conn: sqlite3.Connection, now: int | None = None) -> list[int]:
    """Apply every pending migration, each in its own transaction; return the versions applied."""
    done = []
    for migration in check(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if migration.version in applied_versions(conn):   # another process applied it while we waited
                conn.execute("COMMIT")
                continue
            if db.is_postgres(conn):
                conn.raw.execute(migration.sql)  # type: ignore[attr-defined]  # the file as written, whole
            else:
                # executescript would COMMIT on its own; run the statements one by one inside our transaction.
                for statement in _statements(migration.sql):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at, description, checksum) VALUES (?, ?, ?, ?)",
                (migration.version, int(now if now is not None else time.time()), migration.description,
                 migration.checksum),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        done.append(migration.version)
    return done


def current_version(conn: sqlite3.Connection) -> int:
    applied = applied_versions(conn)
    return max(applied) if applied else 0


def _statements(sql: str) -> list[str]:
    """Split a migration file into complete statements (sqlite3.complete_statement knows the grammar)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buffer.splitlines()):
        raise MigrationError(f"migration ends with an incomplete statement: {buffer.strip()[:80]!r}")
    return statements

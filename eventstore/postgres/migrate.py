"""The migration runner for PostgreSQL: `eventstore/postgres/NNNN_description.sql`, applied in order.

The same contract as the SQLite runner (eventstore/migrate.py, whose `Migration`, file-name pattern and
`MigrationError` it shares, and which it leaves as it is): each file runs in one transaction and is recorded
in `schema_version` with its sha256; a database newer than the code, or an applied file changed since, is
refused with a message that says which. One thing SQLite does not need: several processes may open a new
database at once, so each migration's transaction first takes a transaction-level advisory lock and reads
`schema_version` again under it; the second process finds the work done.

Part of issue 18 (PostgreSQL), in progress: for now these files hold only the event log; the projection
tables and the shared version numbering with the SQLite migrations come with the backend seam.
"""
from __future__ import annotations

import time

from psycopg import AsyncConnection

from ..migrate import Migration, MigrationError
from ..migrate import available_migrations as _available

PACKAGE = "tornstore.eventstore.postgres"
MIGRATION_LOCK = (0x746F726E, 1)  # advisory lock (key1, key2): "torn", 1 for migrations


def available_migrations() -> list[Migration]:
    """Every PostgreSQL migration file shipped with the package, in version order."""
    return _available(PACKAGE)


async def applied_versions(conn: AsyncConnection) -> dict[int, str]:
    """version -> checksum of what is applied; empty for a new database."""
    # pg_class read with the statement's snapshot, not to_regclass: a session's catalog cache may still hold
    # "no such table" from before it waited for the migration lock, while another session created it.
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'schema_version' AND n.nspname = current_schema())")
    row = await cur.fetchone()
    if not row or not row[0]:
        return {}
    cur = await conn.execute("SELECT version, checksum FROM schema_version")
    return {version: checksum for version, checksum in await cur.fetchall()}


def pending(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """Refuse what the code cannot work with; the migrations still to apply."""
    known = {m.version: m for m in migrations}
    newest_code = migrations[-1].version if migrations else 0
    for version, checksum in sorted(applied.items()):
        if version not in known:
            raise MigrationError(
                f"database schema is at version {max(applied)}, newer than this tornstore "
                f"(knows up to {newest_code}): upgrade tornstore before opening it")
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d} ({known[version].description}) was changed after it was applied "
                f"to this database: restore the original file or start a new database")
    return [m for m in migrations if m.version not in applied]


async def check(conn: AsyncConnection) -> list[Migration]:
    """Refuse a database the code cannot work with; return the migrations still to apply."""
    return pending(available_migrations(), await applied_versions(conn))


async def migrate(conn: AsyncConnection, now: int | None = None) -> list[int]:
    """Apply every pending migration, each in its own transaction; return the versions this call applied.

    `conn` must not be inside a transaction. Safe to run from several processes at once."""
    migrations = available_migrations()
    done = []
    for migration in pending(migrations, await applied_versions(conn)):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
            if migration not in pending(migrations, await applied_versions(conn)):
                continue  # another process applied it while we waited for the lock
            await conn.execute(migration.sql.encode())  # no parameters: the file's statements run as one script
            await conn.execute(
                "INSERT INTO schema_version (version, applied_at, description, checksum) VALUES (%s, %s, %s, %s)",
                (migration.version, int(now if now is not None else time.time()), migration.description,
                 migration.checksum))
        done.append(migration.version)
    return done


async def current_version(conn: AsyncConnection) -> int:
    applied = await applied_versions(conn)
    return max(applied) if applied else 0

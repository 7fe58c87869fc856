"""The event log on PostgreSQL (issue 18, in progress): `PgEventLog` and its migration runner.

A library module for now, not wired into the CLI or `Store`: the backend seam, projections on PostgreSQL,
partitions and `tornstore copy` come in later sessions. `PgEventLog.follow` is the change feed across hosts
(LISTEN/NOTIFY as a wake-up, the log as the truth). Needs the `postgresql` extra
(`pip install 'tornstore[postgresql]'`, psycopg 3); nothing else in tornstore imports this package.
"""
from __future__ import annotations

from .log import CHANNEL, PgEventLog
from .migrate import available_migrations, check, current_version, migrate

__all__ = ["CHANNEL", "PgEventLog", "available_migrations", "check", "current_version", "migrate"]

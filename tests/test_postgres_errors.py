"""A PostgreSQL store that is not there: what a mistyped path is on SQLite (test_store_open.py, test_cli_log.py).

An empty database holds no store: opening it is an error unless asked to create, as a missing file is. A
database that does not exist and a server that does not answer are clear errors naming the URL with its
password hidden, from the library and from the CLI (one `Error:` line, no traceback).
"""
from __future__ import annotations

import secrets
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tornstore import Store
from tornstore.eventstore.db import close_sync, connect_sync, table_names
from tornstore.eventstore.store import EventLog

from .conftest import PG_BASE, pg_admin

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "s3cr3tPaSsWoRd"


def _with(url: str, *, password: str = PASSWORD, port: int | None = None, database: str | None = None) -> str:
    """`url` with this password (and port, database): trust auth ignores it; messages must hide it."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = f"{parts.hostname}:{port or parts.port or 5432}"
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", path=path))


def _redacted(url: str) -> str:
    return url.replace(f":{PASSWORD}@", ":***@")


def _missing_database() -> str:
    pg_admin().close()      # skip (or fail, when PostgreSQL is required) if no server answers
    return _with(PG_BASE, database=f"tornstore_missing_{secrets.token_hex(4)}")


def _unreachable_server() -> str:
    pytest.importorskip("psycopg")
    with socket.socket() as sock:          # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return _with("postgresql://postgres@127.0.0.1/torn", port=port)


def _tables(url: str) -> set[str]:
    conn = connect_sync(url)
    try:
        return table_names(conn)
    finally:
        close_sync(conn)


async def test_an_empty_database_is_no_store_unless_asked_to_create(postgres_url):
    url = _with(postgres_url)
    with pytest.raises(FileNotFoundError) as info:
        async with Store.open(url):
            pass
    assert _redacted(url) in str(info.value) and PASSWORD not in str(info.value)
    with pytest.raises(FileNotFoundError):
        await EventLog.open(url)
    assert _tables(postgres_url) == set()           # nothing was made
    async with Store.open(url, create=True) as store:
        assert await store.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0]) == 0
    assert "schema_version" in _tables(postgres_url)


@pytest.mark.parametrize("where", ["missing database", "unreachable server"])
@pytest.mark.parametrize("create", [False, True])
async def test_a_database_not_there_is_a_clear_error_with_the_password_hidden(where, create):
    url = _missing_database() if where == "missing database" else _unreachable_server()
    with pytest.raises(sqlite3.OperationalError) as info:
        async with Store.open(url, create=create):
            pass
    text = str(info.value)
    assert text.startswith(f"cannot connect to PostgreSQL at {_redacted(url)}"), text
    assert PASSWORD not in text
    if where == "missing database":
        assert "does not exist" in text, text


@pytest.mark.parametrize("where", ["missing database", "unreachable server"])
@pytest.mark.parametrize("args", [("status",), ("init",), ("ingest", "--init", "-"), ("verify",)],
                         ids=lambda a: " ".join(a))
def test_the_cli_says_so_in_one_line(where, args):
    url = _missing_database() if where == "missing database" else _unreachable_server()
    done = subprocess.run([sys.executable, "-m", "tornstore", "--db", url, *args], cwd=ROOT, input="",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.stdout[-500:], done.stderr[-500:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: "), done.stderr
    assert f"cannot connect to PostgreSQL at {_redacted(url)}" in errors[0], errors[0]

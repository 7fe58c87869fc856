"""Shared fixtures: real SQLite files on disk (and the same tests again on a real PostgreSQL database), the
Torn API fixtures as capture lines."""
from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from syrupy.extensions.amber import AmberSnapshotExtension

from tornstore.eventstore.db import close_sync, connect_sync
from tornstore.eventstore.migrate import migrate

# The Torn API's own facts, kept in the repository: the official v2 spec, the error notes, and response
# fixtures with their provenance (fixtures/PROVENANCE.md). A clean clone needs nothing beside it.
TORN_API = Path(__file__).resolve().parent / "fixtures" / "torn-api"
FIXTURES = TORN_API / "fixtures"
OPENAPI_SPEC = TORN_API / "openapi-v2-6.6.1.json"

# Each fixture with a plausible URL it could have come from.
FIXTURE_URLS = {
    "v1/user_profile.json": "https://api.torn.com/user/1879891?selections=profile",
    "v1/user_basic.json": "https://api.torn.com/user/2491575?selections=basic",
    "v1/user_personalstats_sanitized_capture.json": "https://api.torn.com/user/100?selections=personalstats",
    "v1/user_bars_cooldowns_sanitized_capture.json": "https://api.torn.com/user/100?selections=bars,cooldowns",
    "v1/faction_basic_with_members.json": "https://api.torn.com/faction/39894?selections=basic",
    "v1/faction_chain.json": "https://api.torn.com/faction/39894?selections=chain",
    "v1/torn_rackets.json": "https://api.torn.com/torn/?selections=rackets",
    "v1/torn_rankedwars.json": "https://api.torn.com/torn/?selections=rankedwars",
    "v1/torn_territory_by_ids.json": "https://api.torn.com/torn/AAC,CAA?selections=territory",
    "v1/torn_territorywars.json": "https://api.torn.com/torn/?selections=territorywars",
    "v1/error_incorrect_key.json": "https://api.torn.com/user/?selections=basic&key=ABCDEFGHIJKLMNOP",
    "v2/user_profile_sanitized_capture.json": "https://api.torn.com/v2/user/100/profile",
    "v2/user_basic_swagger_example.json": "https://api.torn.com/v2/user/123/basic",
    "v2/faction_members.json": "https://api.torn.com/v2/faction/123456/members",
    "v2/faction_basic.json": "https://api.torn.com/v2/faction/123456/basic",
    "v2/faction_wars_active_ranked.json": "https://api.torn.com/v2/faction/1/wars",
    "v2/faction_wars_no_war.json": "https://api.torn.com/v2/faction/2/wars",
    "v2/faction_rankedwars_captured_excerpt.json": "https://api.torn.com/v2/faction/11559/rankedwars",
    "v2/faction_chain_sanitized_capture.json": "https://api.torn.com/v2/faction/100/chain",
    "v2/error_incorrect_key.json": "https://api.torn.com/v2/user/100/profile",
    "v2/error_too_many_requests.json": "https://api.torn.com/v2/faction/123456/members",
}

OBSERVED_AT = 1764100000  # 2025-11-25T19:46:40Z


def fixture_body(name: str):
    return json.loads((FIXTURES / name).read_text())


def fixture_capture_lines(observed_at: int = OBSERVED_AT) -> list[str]:
    return [json.dumps({"url": url, "observed_at": observed_at, "body": fixture_body(name)})
            for name, url in sorted(FIXTURE_URLS.items())]


# ------------------------------------------------------------------------------------------ backends
# Every test that takes `db_path` (or `conn`) runs twice: on a SQLite file, and on a new database of the
# PostgreSQL server at TORNSTORE_TEST_POSTGRES (default: the local one). Where no server answers the
# PostgreSQL runs skip and say why, unless TORNSTORE_REQUIRE_POSTGRES=1 (CI sets it when the port answers):
# then they fail. A test of something only a file has (its WAL, VACUUM INTO, a path) is marked
# `@pytest.mark.sqlite_only("why")`.
PG_BASE = os.environ.get("TORNSTORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_REQUIRED = os.environ.get("TORNSTORE_REQUIRE_POSTGRES") == "1"


def pg_admin():
    """A connection to the server's maintenance database, or skip (fail when PostgreSQL is required)."""
    try:
        import psycopg
    except ImportError:
        if PG_REQUIRED:
            pytest.fail("TORNSTORE_REQUIRE_POSTGRES=1 but psycopg is not installed")
        pytest.skip("psycopg 3 is not installed (pip install 'tornstore[postgresql]')")
    try:
        return psycopg.connect(PG_BASE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if PG_REQUIRED:
            pytest.fail(f"TORNSTORE_REQUIRE_POSTGRES=1 but PostgreSQL is not reachable at {PG_BASE}: "
                        f"{str(exc).strip()}")
        pytest.skip(f"PostgreSQL not reachable at {PG_BASE}: {str(exc).strip()}")


@pytest.fixture
def postgres_url():
    """The URL of a new, empty database on the server; dropped after the test."""
    admin = pg_admin()
    name = f"tornstore_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(PG_BASE)._replace(path=f"/{name}"))
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_path(request, tmp_path: Path):
    """Where the test's store lives: a SQLite file, or (second run) a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "torn.db"
    only = request.node.get_closest_marker("sqlite_only")
    if only is not None:
        pytest.skip(f"SQLite only: {only.args[0] if only.args else 'a property of the file'}")
    return request.getfixturevalue("postgres_url")


_BACKEND_ID = re.compile(r"(?<=\[)(sqlite|postgresql)-|-(sqlite|postgresql)(?=[\]-])|\[(sqlite|postgresql)\]")


class BothBackendsOneSnapshot(AmberSnapshotExtension):
    """A test that runs on both backends compares both runs with one snapshot, named as before the
    backends existed: what people read must not depend on where the store lives."""

    @classmethod
    def get_snapshot_name(cls, *, test_location, index=0) -> str:
        return _BACKEND_ID.sub("", super().get_snapshot_name(test_location=test_location, index=index))


@pytest.fixture
def snapshot(snapshot):
    return snapshot.use_extension(BothBackendsOneSnapshot)


def is_postgres_target(target) -> bool:
    return isinstance(target, str) and target.startswith("postgresql://")


@pytest.fixture
def conn(db_path: Path):
    connection = connect_sync(db_path)
    migrate(connection)
    yield connection
    close_sync(connection)


@pytest.fixture
def capture_file(tmp_path: Path) -> Path:
    path = tmp_path / "fixtures.ndjson"
    path.write_text("\n".join(fixture_capture_lines()) + "\n")
    return path


# ------------------------------------------------------------------------------------------ --runslow
def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only(why): the test is about the SQLite file itself; "
                                       "its PostgreSQL run is skipped with that reason")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the heavier variants marked @pytest.mark.slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow variant: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)

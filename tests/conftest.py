"""Shared fixtures: real SQLite files on disk, the Torn API fixtures as capture lines."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "torn.db"


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

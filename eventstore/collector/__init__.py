"""The Torn API collector: an aiohttp client, a key pool that honours every rate limit and error code,
a scheduler of polls, and the loop that hands responses to a sink (in practice `Store.ingest_many`).

    from tornstore.eventstore.collector import Collector, load_config

    config = load_config("collect.toml")            # format: see eventstore.collector.config
    async with Collector(config, store.ingest_many, run=store.run) as collector:
        report = await collector.run_once()

URLs are built as the official v2 spec defines them (`endpoints`: which selections have an `{id}` path,
which exist only for the key owner, which combine into one `?selections=a,b` request). Every response
handed to the sink says whose key made it (`Response.owner`, `Response.key`, a fingerprint).

Keys never reach the database, a capture, a log line or an exception message: they are named by
fingerprint. This package does not import `projections` or `cli`.
"""
from . import endpoints
from .client import ApiRequest, FetchResult, TornClient
from .config import (CollectConfig, ConfigError, FactionConfig, FetchSpec, KeyConfig, PlayerConfig,
                     TerritoryConfig, WarsConfig, load_config, parse_config, parse_duration)
from .gaps import Gap, TargetProblem, gaps_between, key_states
from .keypool import ACCESS_LEVELS, ApiKey, KeyPool, KeysBusy, NoUsableKey, policy
from .run import CollectReport, Collector
from .scheduler import Job, Scheduler, build_jobs

__all__ = [
    "ACCESS_LEVELS", "ApiKey", "ApiRequest", "CollectConfig", "CollectReport", "Collector", "ConfigError",
    "FactionConfig", "FetchResult", "FetchSpec", "Gap", "Job", "KeyConfig", "KeyPool", "KeysBusy",
    "NoUsableKey", "PlayerConfig", "Scheduler", "TargetProblem", "TerritoryConfig", "TornClient",
    "WarsConfig", "build_jobs", "endpoints", "gaps_between", "key_states", "load_config", "parse_config",
    "parse_duration", "policy",
]

"""Several months of generated polls projected inline, then `tornstore replay`: every projected table is
identical (live columns aside, as documented). On a SQLite file and on a PostgreSQL database."""
from __future__ import annotations

import json

from tornstore.eventstore.simulator import World
from tornstore.eventstore.simulator.workload import PollPlan, poll_rounds

from .crashkit import cli, invariants, projected_rows
from .test_replay_after_prune import every_table


def test_replay_rebuilds_months_of_projections_identically(db_path, tmp_path):
    world = World(seed=11, factions=3, territories=300)
    plan = PollPlan(factions=tuple(sorted(world.factions)), interval=3600, api="v1",
                    member_profiles_every=6, territory_map_every=24)
    capture = tmp_path / "months.ndjson"
    with open(capture, "w") as out:
        for responses in poll_rounds(world, plan, world.now, world.now + 75 * 86400):
            for r in responses:
                out.write(json.dumps({"url": r.url, "observed_at": r.observed_at, "body": r.body}) + "\n")
    db = db_path
    assert cli(db, "ingest", "--init", str(capture)).returncode == 0
    inline = projected_rows(db)
    everything = every_table(db)
    # the workload really covers every table, with change over time
    assert len(inline["player_stats_history"]) > 100 and len(inline["faction_history"]) > 30
    assert len(inline["war_status_history"]) > 10 and len(inline["territory_ownership_history"]) >= 300
    replayed = cli(db, "replay")
    assert replayed.returncode == 0, replayed.stderr
    invariants(db)
    assert projected_rows(db) == inline
    # Byte for byte, every table a user can query (ids and sequences included), live columns aside.
    assert every_table(db) == everything

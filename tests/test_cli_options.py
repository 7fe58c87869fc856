"""Options every command shares: --db before or after the command name, --json on every command, --help with
examples, and click.Choice for closed sets (typos get click's usage error listing the choices)."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tornstore.cli.main import cli

from .test_queries import build_world

# Commands that never open a database (the demo writes its own file, the simulator keeps none).
NO_DATABASE = {"demo", "simulate-api"}


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env={"TORNSTORE_DB": None, **(env or {})})


def leaf_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


@pytest.fixture
def two_dbs(tmp_path: Path) -> tuple[str, str]:
    """Two databases told apart by content: `world` has player 1, `empty` has nothing."""
    world, empty = tmp_path / "world.db", tmp_path / "empty.db"
    build_world(world)
    assert run("--db", str(empty), "init").exit_code == 0
    return str(world), str(empty)


# ------------------------------------------------------------------------------------------------ --db
@pytest.mark.parametrize("args", [
    ("--db", "{world}", "status", "--json"),
    ("status", "--db", "{world}", "--json"),
    ("status", "--json", "--db", "{world}"),
], ids=["before", "after", "last"])
def test_db_before_or_after_the_command(two_dbs, args):
    world, _ = two_dbs
    result = run(*(a.format(world=world) for a in args))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["database"] == world and data["rows"]["players"] == 4


def test_the_commands_db_wins_over_the_groups_and_the_environment(two_dbs):
    world, empty = two_dbs
    both = run("--db", empty, "player", "1", "--db", world, "--json")
    assert both.exit_code == 0, both.output
    assert json.loads(both.stdout)["name"] == "Alice"
    env_and_option = run("player", "1", "--db", world, "--json", env={"TORNSTORE_DB": empty})
    assert env_and_option.exit_code == 0 and json.loads(env_and_option.stdout)["name"] == "Alice"
    # TORNSTORE_DB alone is still read, and a --db before the command still beats it.
    from_env = run("player", "1", env={"TORNSTORE_DB": empty})
    assert from_env.exit_code == 1 and from_env.stderr == "Error: no player 1 in the database\n"
    group_over_env = run("--db", world, "player", "1", "--json", env={"TORNSTORE_DB": empty})
    assert group_over_env.exit_code == 0 and json.loads(group_over_env.stdout)["player_id"] == 1


def test_db_after_a_nested_command(two_dbs, tmp_path):
    world, _ = two_dbs
    out = tmp_path / "rows.csv"
    result = run("export", "wars", "--csv", "-o", str(out), "--db", world)
    assert result.exit_code == 0, result.output
    assert out.read_text().count("\n") == 1 + 5  # header and the five war_status_history rows


def test_every_database_command_takes_db_after_its_name():
    names = {" ".join(path) for path, _ in leaf_commands()}
    assert {"status", "plot player", "export history", "collect"} <= names
    missing = [name for name, command in ((" ".join(p), c) for p, c in leaf_commands())
               if name not in NO_DATABASE and "--db" not in {o for p in command.params for o in p.opts}]
    assert missing == []


def test_no_database_given_is_one_line():
    result = run("status")
    assert result.exit_code == 1
    assert result.stderr == "Error: no database given: use --db PATH or set TORNSTORE_DB\n"


# ------------------------------------------------------------------------------------------------ choices
@pytest.mark.parametrize("args, option, listed", [
    (("history", "player", "1", "--stat", "strenght"), "--stat", ("'strength'", "'respect'", "'best_chain'")),
    (("plot", "faction", "9420", "--stat", "respekt", "-o", "x.png"), "--stat", ("'respect'", "'member_count'")),
    (("replay", "--projection", "player-stats"), "--projection",
     ("'factions'", "'players'", "'player_stats'", "'faction_history'", "'wars'", "'territories'")),
], ids=["history-stat", "plot-stat", "replay-projection"])
def test_a_typo_in_a_closed_set_is_a_usage_error_listing_the_choices(two_dbs, args, option, listed):
    world, _ = two_dbs
    result = run("--db", world, *args)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.stderr
    assert all(choice in result.stderr for choice in listed), result.stderr
    assert result.stdout == ""


def test_the_choices_are_the_librarys_own():
    from tornstore.projections import queries
    from tornstore.projections.handlers.registry import HANDLERS

    history = dict(leaf_commands())[("history",)]
    stat = next(p for p in history.params if p.name == "stat")
    assert set(stat.type.choices) == set(queries.PLAYER_STATS) | set(queries.FACTION_STATS)
    replay = dict(leaf_commands())[("replay",)]
    projection = next(p for p in replay.params if p.name == "name")
    assert list(projection.type.choices) == [h.name for h in HANDLERS]


def test_replay_of_one_projection_by_its_name(two_dbs):
    world, _ = two_dbs
    result = run("--db", world, "replay", "--projection", "player_stats")
    assert result.exit_code == 0, result.output
    assert "into player_stats" in result.stdout


# ------------------------------------------------------------------------------------------------ every command
def test_every_command_has_json():
    missing = [" ".join(path) for path, command in leaf_commands()
               if "--json" not in {o for p in command.params for o in p.opts}]
    assert missing == []


@pytest.mark.parametrize("path", [path for path, _ in leaf_commands()] + [("plot",), ("export",)],
                         ids=lambda p: " ".join(p))
def test_every_help_has_examples(path):
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout
    assert " ".join(path) in result.stdout.split("Example", 1)[1]
